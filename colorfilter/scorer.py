"""A run's trained pair, loaded for scoring outside the pipeline (`colorfilter.load_scorer`).

`Scorer.score_ids` scores chunks of token ids exactly as the score stage does: batches of
`score.batch_size` rows, right-padded to `seq_len` with the run's pad id, both models through the
configured backend, device and precision (`colorfilter.scoring`). For each chunk:
`prior_loss` and `cond_loss` are the mean next-token NLL over its `n_tokens - 1` predicted
positions (NaN below 2 tokens), `score = prior_loss - cond_loss` (higher: more target-like).

`Scorer.score_texts` scores whole texts, each chunked on its own: prepare joins the documents of
a file with EOS and cuts the stream without regard to document boundaries, but a text scored
alone must not borrow tokens from its neighbours, so each text is tokenized as prepare tokenizes a
document (the run's tokenizer, special-token strings kept as text, EOS appended) and cut into
`seq_len` windows, a final piece under 2 tokens dropped (`colorfilter.chunking.document_chunks`:
what prepare's chunker emits for a file holding only that text). A text's losses are the
token-weighted mean of its chunks' losses, weights `n_tokens - 1`: the mean NLL over every
predicted position of the text, each chunk's first token being unpredicted (context restarts at
each chunk, as in the score stage); prior and conditional separately, `score = prior_loss -
cond_loss`. A text of one chunk gets exactly that chunk's numbers. Only the empty text (EOS
alone, 1 token) has no chunk: NaN losses and score, `n_chunks` 0.

For speed, the chunks of all the texts of one call are sorted by length and scored in batches
as wide as their longest chunk holding as many tokens as the stage's batches (`batch_size` x
`seq_len`: more rows when the chunks are shorter). Causal models and right padding: neither the
width nor the batch changes a chunk's loss beyond float rounding. Results come back in the
texts' order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from colorfilter.chunking import DocumentTokenizer, document_chunks
from colorfilter.config import Config, check_cuda_device, load_config
from colorfilter.configtools import to_dict
from colorfilter.errors import ConfigError
from colorfilter.io import storage
from colorfilter.io.cache import local_copy
from colorfilter.io.config import StorageConfig
from colorfilter.io.location import Location
from colorfilter.layout import MODEL_CHECKPOINT, RunLayout
from colorfilter.models.checkpoints import verified_model
from colorfilter.names import DEVICE_PATTERN, DEVICES
from colorfilter.pipeline.score import check_vocabularies
from colorfilter.scoring.base import build_scorer, resolve_device
from colorfilter.scoring.config import ScoreConfig
from colorfilter.scoring.precision import resolve_precision

MAX_ROWS_FACTOR = 8  # score_texts: short chunks go in batches of up to 8x batch_size rows


@dataclass(frozen=True)
class ScorerSettings:
    """What a Scorer is built from: small and picklable, so Ray actors and datatrove workers
    receive it and load the models themselves (`Scorer(settings)`)."""

    prior: Location
    conditional: Location
    tokenizer: Location
    seq_len: int
    pad_id: int
    score: ScoreConfig  # backend, batch_size, precision, compile, torch_threads...
    device: str  # cpu | cuda | cuda:N (resolved, never auto)
    max_segment_chars: int = 1_000_000  # prepare's: huge texts are tokenized piecewise

    @classmethod
    def from_run(
        cls,
        run: str | Location,
        *,
        device: str | None = None,
        precision: str | None = None,
        batch_size: int | None = None,
        torch_threads: int | None = None,
        storage_cfg: StorageConfig | None = None,
    ) -> ScorerSettings:
        """The settings of a run folder (local or URL): seq_len, tokenizer and the score section
        from its saved `config.yaml`; device, precision, batch size and threads overridable."""
        config = saved_config(run, storage_cfg)
        layout = RunLayout.of(config)
        layout.require("train-prior")
        layout.require("train-conditional")
        layout.check_tokenizer()  # the one the models were trained on
        verified_model(layout.model("prior"), "train-prior")  # sha256: before any worker loads
        verified_model(layout.model("conditional"), "train-conditional")
        device = device or config.device
        if not DEVICE_PATTERN.match(device):
            raise ConfigError(f"device must be {DEVICES}, got {device!r}")
        if device.startswith("cuda"):
            check_cuda_device(device)  # a clear error when the GPU is not there
        score = _score_overrides(config.score, precision, batch_size, torch_threads)
        device = resolve_device(device)
        resolve_precision(score.precision, device, score.backend)  # a bad name fails here
        prior, cond = layout.model("prior"), layout.model("conditional")
        return cls(
            prior, cond, layout.tokenizer, config.seq_len,
            check_vocabularies(layout.tokenizer, prior, cond), score, device,
            config.prepare.max_segment_chars,
        )  # fmt: skip


def saved_config(run: str | Location, storage_cfg: StorageConfig | None = None) -> Config:
    """A run folder's resolved config (`config.yaml`), with `output_dir` set to where the folder
    is now (a copied or moved run still finds its own models)."""
    import yaml

    root = RunLayout.at(run, storage_cfg)
    if not storage.exists(root.config_file):
        raise ConfigError(
            f"{root.config_file.url} not found: not a colorfilter run folder (every stage saves "
            "its resolved config there)"
        )
    raw = yaml.safe_load(storage.read_text(root.config_file)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{root.config_file.url}: not a colorfilter config (not a mapping)")
    raw["output_dir"] = root.root.url
    if storage_cfg is not None:  # the caller's storage options win over the saved ones

        raw["storage"] = to_dict(storage_cfg)
    return load_config(raw)


def _score_overrides(
    cfg: ScoreConfig, precision: str | None, batch_size: int | None, torch_threads: int | None
) -> ScoreConfig:
    changes = {
        name: value
        for name, value in (
            ("precision", precision), ("batch_size", batch_size), ("torch_threads", torch_threads)
        )
        if value is not None
    }  # fmt: skip
    score = replace(cfg, **changes)
    problems = score.validate("score")
    if problems:
        raise ConfigError("; ".join(problems))
    return score


@dataclass
class ChunkScores:
    """Per chunk: float32 losses (NaN below 2 tokens), score = prior_loss - cond_loss."""

    prior_loss: np.ndarray
    cond_loss: np.ndarray
    score: np.ndarray
    n_tokens: np.ndarray  # int32: real tokens in the chunk


@dataclass
class TextScores:
    """Per text (the token-weighted mean over its chunks, see the module doc), and per chunk."""

    prior_loss: np.ndarray  # float32 [texts]
    cond_loss: np.ndarray  # float32 [texts]
    score: np.ndarray  # float32 [texts]; NaN for a text with no chunk (the empty text)
    n_tokens: np.ndarray  # int64 [texts]: tokens scored (the text and its EOS)
    n_chunks: np.ndarray  # int32 [texts]
    chunks: ChunkScores  # every chunk, text by text, in order
    chunk_text: np.ndarray  # int64 [chunks]: the text each chunk belongs to


class Scorer:
    """Both trained models and the run's tokenizer, loaded once; scores chunks and texts.

    Build it with `colorfilter.load_scorer(run_folder)` (or `Scorer(ScorerSettings...)`).
    """

    def __init__(self, settings: ScorerSettings):
        self.settings = settings
        cfg = settings.score
        prior, cond = (local_copy(d, skip=(MODEL_CHECKPOINT,))
                       for d in (settings.prior, settings.conditional))  # fmt: skip
        self._backend = build_scorer(
            cfg.backend, prior, cond, cfg, device=settings.device, seq_len=settings.seq_len
        )
        tokenizer_dir = local_copy(settings.tokenizer)
        self._tokenizer = DocumentTokenizer(str(tokenizer_dir), settings.max_segment_chars)
        models = getattr(self._backend, "models", None)
        self._vocab = int(models[0].get_output_embeddings().weight.shape[0]) if models else None

    @property
    def seq_len(self) -> int:
        return self.settings.seq_len

    @property
    def batch_size(self) -> int:
        return self.settings.score.batch_size

    @property
    def precision(self) -> Any:
        """What runs (`colorfilter.scoring.precision.Precision`: weights, autocast, device)."""
        return self._backend.precision

    @property
    def eos_id(self) -> int:
        return self._tokenizer.eos_id

    def score_ids(
        self, input_ids: np.ndarray | Sequence[Sequence[int]], n_tokens: np.ndarray | None = None
    ) -> ChunkScores:
        """Score chunks given as an int [N, L] matrix (L <= seq_len), right-padded, with
        `n_tokens` [N] real tokens per row (None: every row is L tokens), or as a list of N
        chunks of any lengths up to seq_len (lists or 1-D arrays; n_tokens from their lengths).

        Batches of `score.batch_size` rows in the given order, padded to seq_len with the run's
        pad id: the score stage's own shapes, so the numbers equal its score shards'.
        """
        ids, lengths = self._check_ids(input_ids, n_tokens)
        prior, cond = [], []
        pad, positions = self.settings.pad_id, np.arange(self.seq_len)[None, :]
        for start in range(0, len(lengths), self.batch_size):
            rows = ids[start : start + self.batch_size]
            n = lengths[start : start + self.batch_size]
            batch = np.full((len(rows), self.seq_len), pad, dtype=np.int64)
            batch[:, : rows.shape[1]] = rows
            batch[positions >= n[:, None]] = pad  # as pad_input_ids leaves them
            p, c = self._backend.score_prepared(self._backend.prepare(batch, n))
            prior.append(p)
            cond.append(c)
        return _chunk_scores(prior, cond, lengths)

    def _check_ids(
        self, input_ids: np.ndarray, n_tokens: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if not (isinstance(input_ids, np.ndarray) and input_ids.ndim == 2):
            if n_tokens is not None:
                raise ValueError("n_tokens goes with an [N, L] matrix; a list of chunks "
                                 "carries its own lengths")  # fmt: skip
            input_ids, n_tokens = _pad_ragged(input_ids, self.settings.pad_id)
        ids = np.asarray(input_ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"input_ids must be an integer [N, L] array, got {ids.dtype} "
                             f"of shape {ids.shape}")  # fmt: skip
        if ids.shape[1] > self.seq_len:
            raise ValueError(
                f"input_ids has {ids.shape[1]} columns, more than the run's seq_len="
                f"{self.seq_len}; cut longer sequences into chunks (score_texts does that)"
            )
        width = ids.shape[1]
        lengths = np.full(len(ids), width) if n_tokens is None else np.asarray(n_tokens)
        if lengths.shape != (len(ids),) or (lengths.size and (
            lengths.min() < 0 or lengths.max() > width
        )):  # fmt: skip
            raise ValueError(f"n_tokens must be [N] = [{len(ids)}] counts within 0..{width}")
        real = ids[np.arange(width)[None, :] < lengths[:, None]]
        if real.size and (real.min() < 0 or (self._vocab and real.max() >= self._vocab)):
            raise ValueError(
                f"input_ids holds id {real.min() if real.min() < 0 else real.max()}, outside "
                f"the models' vocabulary (0..{self._vocab - 1 if self._vocab else '?'})"
            )
        return ids.astype(np.int64, copy=False), lengths.astype(np.int32)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's token ids as prepare tokenizes a document (EOS appended), int32."""
        return self._tokenizer.encode_documents(list(texts))

    def score_texts(self, texts: Sequence[str]) -> TextScores:
        """Score texts, each chunked on its own (see the module doc for the aggregation rule)."""
        if isinstance(texts, str):
            raise TypeError("score_texts takes a sequence of texts, not one str")
        tokens = self.encode(texts)
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        doc, start, end = document_chunks(lengths, self.seq_len)
        flat = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int32)
        first = np.cumsum(lengths) - lengths
        chunks = self._score_sorted(flat, first[doc] + start, (end - start).astype(np.int32))
        return _aggregate(chunks, doc, len(tokens))

    def _score_sorted(self, flat: np.ndarray, starts: np.ndarray, n: np.ndarray) -> ChunkScores:
        """Chunks flat[start:start + n], longest first, in batches as wide as their longest
        chunk and holding the stage's tokens per batch (batch_size x seq_len, so more rows of
        shorter chunks); with compile, the stage's static [batch_size, seq_len] shapes.
        Results come back in the given order."""
        order = np.argsort(-n, kind="stable")
        prior = np.empty(len(n), dtype=np.float32)
        cond = np.empty(len(n), dtype=np.float32)
        at = 0
        while at < len(order):
            width = self.seq_len if self.settings.score.compile else max(2, int(n[order[at]]))
            rows = order[at : at + self._rows_for(width)]
            at += len(rows)
            lengths = n[rows]
            ids = np.full((len(rows), width), self.settings.pad_id, dtype=np.int64)
            row = np.repeat(np.arange(len(rows)), lengths)
            col = np.arange(row.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            ids[row, col] = flat[np.repeat(starts[rows], lengths) + col]
            prior[rows], cond[rows] = self._backend.score_prepared(
                self._backend.prepare(ids, lengths)
            )
        return _chunk_scores([prior], [cond], n)

    def _rows_for(self, width: int) -> int:
        """Rows per batch of `width`-token chunks: the stage's tokens per batch, at most
        MAX_ROWS_FACTOR times its rows (bounded per-batch memory either way)."""
        if self.settings.score.compile:
            return self.batch_size
        rows = self.batch_size * self.seq_len // width
        return max(self.batch_size, min(rows, MAX_ROWS_FACTOR * self.batch_size))

    def close(self) -> None:
        """Release the models (the scorer is unusable afterwards)."""
        self._backend.close()


def _pad_ragged(chunks: Any, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A list of chunks as a right-padded matrix and their lengths."""
    rows = [np.asarray(chunk) for chunk in chunks]
    if any(row.ndim != 1 for row in rows):
        raise ValueError("input_ids must be an [N, L] array or a list of 1-D chunks")
    lengths = np.array([len(row) for row in rows], dtype=np.int64)
    ids = np.full((len(rows), int(lengths.max(initial=0))), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return ids, lengths


def _chunk_scores(prior: list, cond: list, n_tokens: np.ndarray) -> ChunkScores:
    p = np.concatenate(prior).astype(np.float32) if prior else np.zeros(0, np.float32)
    c = np.concatenate(cond).astype(np.float32) if cond else np.zeros(0, np.float32)
    return ChunkScores(p, c, (p - c).astype(np.float32), np.asarray(n_tokens, dtype=np.int32))


def _aggregate(chunks: ChunkScores, doc: np.ndarray, n_texts: int) -> TextScores:
    """Per text: the mean NLL over all its predicted positions (weights n_tokens - 1)."""
    weight = chunks.n_tokens.astype(np.float64) - 1.0
    predicted = np.bincount(doc, weights=weight, minlength=n_texts)

    def mean(loss: np.ndarray) -> np.ndarray:
        total = np.bincount(doc, weights=loss.astype(np.float64) * weight, minlength=n_texts)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(predicted > 0, total / predicted, np.nan)

    prior, cond = mean(chunks.prior_loss), mean(chunks.cond_loss)
    return TextScores(
        prior_loss=prior.astype(np.float32),
        cond_loss=cond.astype(np.float32),
        score=(prior - cond).astype(np.float32),
        n_tokens=np.bincount(doc, weights=chunks.n_tokens, minlength=n_texts).astype(np.int64),
        n_chunks=np.bincount(doc, minlength=n_texts).astype(np.int32),
        chunks=chunks,
        chunk_text=doc,
    )
