"""The cascade's candidates: the top keep_ratio x N / tau_min chunks by cheap score.

Exact and streamed: one global top-k over the cheap score shards (colorfilter.selection.topk,
ties by smaller seq_id), whose answer is written as a sorted uint64 array
`scores/cheap/candidates.npy` (whole or not at all) for the score tasks to slice. With the
sample (scored by the LM pair in `distill` whatever its cheap score) they are the chunks the LM
pair scores; every other chunk is "prefiltered". Memory: the answer, 8 bytes per candidate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from colorfilter.dataset.runfiles import load_array, save_array
from colorfilter.distill.fidelity import recall_estimate, top_threshold
from colorfilter.distill.sample import SampleSpec
from colorfilter.distill.train import HOLDOUT_FILE
from colorfilter.io.commit import committed
from colorfilter.io.location import Location
from colorfilter.io.token_shards import shard_locations
from colorfilter.io.transfer import read_parquet
from colorfilter.layout import RunLayout
from colorfilter.scoring.shard import done_record_path
from colorfilter.selection.methods import CHEAP_SCORE
from colorfilter.selection.sources import ParquetSource
from colorfilter.selection.topk import topk


def plan_candidates(
    run: RunLayout,
    cheap_shards: Sequence[Location],
    sample: SampleSpec,
    keep_ratio: float,
    tau_min: float,
) -> dict:
    """Choose and write the candidates; return the plan (counts and its digest)."""
    source = ParquetSource(cheap_shards)
    pool = source.num_rows()
    k = min(pool, math.ceil(keep_ratio * pool / tau_min))
    ids = topk(source, [k], key=CHEAP_SCORE, direction="max").seq_ids[k]
    save_array(run.candidates, ids)
    in_sample = int(sample.in_sample(ids).sum())
    sample_rows = _sample_rows(run, cheap_shards)
    lm_rows = k + sample_rows - in_sample
    return {
        "tau_min": tau_min,
        "keep_ratio": keep_ratio,
        "sample": sample.as_dict(),
        "digest": hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest()[:16],
        "pool_chunks": pool,
        "candidate_chunks": k,
        "sample_chunks": sample_rows,
        "lm_chunks": lm_rows,
        "lm_share_chunks": round(lm_rows / pool, 6) if pool else None,
    }


def _sample_rows(run: RunLayout, cheap_shards: Sequence[Location]) -> int:
    """Rows of the sample's score shards (one per token shard), from their records."""
    records = [done_record_path(run.sample_scores.join(s.name)) for s in cheap_shards]
    return sum(int(r.meta["rows"]) for r in committed(records).values())


def planned_recall(run: RunLayout, plan: dict, taus: Sequence[float],
                   thresholds: dict[float, float] | None = None) -> dict[str, dict]:  # fmt: skip
    """The estimated recall of each tau's true top chunks (tau >= the planned tau_min).

    `thresholds`: the exact-score threshold per tau (the selection's lowest selected score, once
    the candidates are scored); by default the sample's own (1 - 1/tau) quantile.
    """
    held = read_parquet(run.cheap_model.join(HOLDOUT_FILE), columns=["seq_id", "score"])
    held_ids = held.column("seq_id").to_numpy()
    exact = held.column("score").to_numpy().astype(np.float64)
    candidates = load_array(run.candidates)
    is_candidate = np.isin(held_ids, candidates, assume_unique=True)
    share = plan["sample_chunks"] / plan["pool_chunks"] if plan["pool_chunks"] else 0.0
    sample_scores = None
    out = {}
    for tau in sorted(set(taus)):
        if tau < plan["tau_min"]:
            continue
        if thresholds is not None and tau in thresholds:
            threshold = thresholds[tau]
        else:
            if sample_scores is None:
                sample_scores = _sample_scores(run)
            threshold = top_threshold(sample_scores, tau)
        out[f"{tau:g}"] = recall_estimate(exact, is_candidate, threshold, share)
    return out


def _sample_scores(run: RunLayout) -> np.ndarray:
    parts = [read_parquet(s, columns=["score"]).column("score").to_numpy()
             for s in shard_locations(run.sample_scores)]  # fmt: skip
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


@dataclass(frozen=True)
class CascadeReport:
    """What a selection folder's manifest and card say about the cascade behind its scores."""

    run: RunLayout
    accounting: dict  # the score stage's: pool, LM-scored, prefiltered chunks, planned tau
    plan: dict  # distill's candidate plan

    def for_selection(self, method: str, tau: float, threshold: float | None) -> dict:
        """Accounting, and for `color` the estimated recall of the pool's true top 1/tau
        judged at the selection's own threshold (its lowest selected score)."""
        report: dict = {**self.accounting, "sample": self.plan["sample"]}
        if method == "color" and threshold is not None and math.isfinite(threshold):
            estimate = planned_recall(self.run, self.plan, [tau], {float(tau): threshold})
            report["recall_estimate"] = estimate.get(f"{tau:g}")
        return report
