"""A datatrove step: score each document's text with a colorfilter run's trained pair, then keep
the documents scoring at or above a threshold, or only annotate them.

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from colorfilter.integrations.datatrove import ColorFilterScoreFilter

    LocalPipelineExecutor(pipeline=[
        JsonlReader("data/sample/pool", glob_pattern="*.json.gz"),
        ColorFilterScoreFilter("outputs/demo", threshold=0.0),   # None: annotate only
        JsonlWriter("outputs/dt-kept"),
    ], tasks=2, workers=1, logging_dir="outputs/dt-logs").run()

Scoring is `colorfilter.Scorer.score_texts`: each document is tokenized as prepare tokenizes one
(EOS appended), chunked on its own into seq_len windows, and its losses are the token-weighted
mean of its chunks' (the mean NLL over all its predicted positions), `score = prior_loss -
cond_loss`. `docs_per_batch` documents are scored together, their chunks sorted by length into
full model batches. Every document passing through gets `metadata["colorfilter_score"]`,
`["colorfilter_prior_loss"]`, `["colorfilter_cond_loss"]` (None for an empty text, which has
no chunk) and `["colorfilter_n_tokens"]`. With `threshold=None` every document is kept
(annotate-only); with a number, a document is kept when `score >= threshold` and dropped
otherwise (reason `colorfilter_below_threshold`, or `colorfilter_unscored` for an empty text),
to the `exclusion_writer` when one is given.

The pair is loaded once per worker process, on its first batch (not when the pipeline is built
or pickled): tasks a process runs one after another reuse it. With several workers on one
machine, give each a share of the cores: `scorer_options={"torch_threads": cores // workers}`.
"""

from __future__ import annotations

import math
from typing import Any

from colorfilter import api
from colorfilter.errors import require

require("datatrove", "datatrove")

from datatrove.data import Document  # noqa: E402 - after the check that names the extra
from datatrove.pipeline.filters.base_filter import BaseFilter  # noqa: E402

PREFIX = "colorfilter_"
BELOW = "colorfilter_below_threshold"
UNSCORED = "colorfilter_unscored"
_LOADED: dict[tuple[str, str], Any] = {}  # this process's scorer: (run, options) -> Scorer


class ColorFilterScoreFilter(BaseFilter):
    """Scores documents with a run's prior and conditional; keeps `score >= threshold`, or
    (threshold None) keeps every document and only writes the scores into its metadata.

    `scorer_options` go to `colorfilter.load_scorer` (device, precision, batch_size,
    torch_threads, storage_cfg).
    """

    name = "CoLoR-Filter score"

    def __init__(
        self,
        run: str,
        threshold: float | None = None,
        *,
        docs_per_batch: int = 1024,
        scorer_options: dict[str, Any] | None = None,
        exclusion_writer: Any = None,
    ):
        super().__init__(exclusion_writer=exclusion_writer, batch_size=docs_per_batch)
        self.run_folder = str(run)
        self.threshold = threshold
        self.scorer_options = dict(scorer_options or {})

    def scorer(self) -> Any:
        """This process's scorer, loaded on first use (once per worker, not per document)."""
        key = (self.run_folder, repr(sorted(self.scorer_options.items())))
        if key not in _LOADED:
            _LOADED.clear()  # one pair per process
            _LOADED[key] = api.load_scorer(self.run_folder, **self.scorer_options)
        return _LOADED[key]

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        scores = self.scorer().score_texts([doc.text for doc in batch])
        self.stat_update("colorfilter_tokens", value=int(scores.n_tokens.sum()), unit="batch")
        results: list[bool | tuple[bool, str]] = []
        for i, doc in enumerate(batch):
            score = float(scores.score[i])
            doc.metadata.update({
                PREFIX + "score": _finite(score),
                PREFIX + "prior_loss": _finite(float(scores.prior_loss[i])),
                PREFIX + "cond_loss": _finite(float(scores.cond_loss[i])),
                PREFIX + "n_tokens": int(scores.n_tokens[i]),
            })  # fmt: skip
            results.append(self._decide(score))
        return results

    def _decide(self, score: float) -> bool | tuple[bool, str]:
        if self.threshold is None:
            return True
        if math.isnan(score):
            return False, UNSCORED
        return True if score >= self.threshold else (False, BELOW)


def _finite(value: float) -> float | None:
    """None for NaN: JSON writers have no NaN."""
    return None if math.isnan(value) else value
