"""Which rows of a token shard the LM pair scores in the cascade (colorfilter.scoring.shard's
RowPlan): the sample in `distill`, the candidates in `score`.

Both decide per shard from its own rows: the sample by a hash of seq_id, the candidates by the
slice of the sorted candidate ids that falls in the shard's seq_id range (read by ranges from
`scores/cheap/candidates.npy`, so nothing large crosses the wire).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from colorfilter.dataset.provenance import recorded_entries
from colorfilter.dataset.runfiles import sorted_slice
from colorfilter.distill.sample import SampleSpec
from colorfilter.errors import ConfigError
from colorfilter.io.location import Location
from colorfilter.io.transfer import read_parquet
from colorfilter.layout import RunLayout
from colorfilter.scoring.shard import SCORE_SCHEMA


@dataclass(frozen=True)
class SampleRows:
    """The sample's rows; their score shards keep tokens and per-position deltas."""

    sample: SampleSpec
    token_deltas: bool = True

    def choose(self, seq_ids: np.ndarray, token_path: Location) -> np.ndarray:
        return self.sample.in_sample(seq_ids)

    def merged(self, token_path: Location) -> pa.Table | None:
        return None


@dataclass(frozen=True)
class CandidateRows:
    """A shard's candidates not in the sample; the sample's rows come scored from `distill`."""

    sample: SampleSpec
    candidates: Location  # sorted uint64 seq_ids (.npy)
    sample_scores: Location  # this shard's sample score shard
    token_deltas: bool = False

    def choose(self, seq_ids: np.ndarray, token_path: Location) -> np.ndarray:
        if seq_ids.size == 0:
            return np.zeros(0, dtype=bool)
        ids, _ = sorted_slice(self.candidates, self.candidates, int(seq_ids.min()),
                              int(seq_ids.max()))  # fmt: skip
        chosen = np.isin(seq_ids, ids, assume_unique=True)
        return chosen & ~self.sample.in_sample(seq_ids)

    def merged(self, token_path: Location) -> pa.Table:
        expected = recorded_entries([self.sample_scores])[self.sample_scores.url]
        return read_parquet(self.sample_scores, SCORE_SCHEMA.names, expected)


@dataclass(frozen=True)
class CandidatePlan:
    """The candidate set `distill` planned, as the score stage uses it."""

    run: RunLayout
    sample: SampleSpec
    digest: str  # identity of the candidate set: score shards made for another are redone
    stats: dict  # distill's stats (what was planned: tau_min, keep_ratio, counts)

    def rows(self, token_path: Location) -> CandidateRows:
        return CandidateRows(self.sample, self.run.candidates,
                             self.run.sample_scores.join(token_path.name))  # fmt: skip

    def accounting(self, summary: dict) -> dict:
        """Every pool chunk accounted for: scored by the LM pair (sample or candidate), or
        skipped by the prefilter."""
        pool = int(summary["pool_rows"])
        scored = int(summary["rows"])
        planned = self.stats["candidates"]
        return {
            "pool_chunks": pool,
            "lm_scored_chunks": scored,
            "sample_chunks": planned["sample_chunks"],
            "candidate_chunks": planned["candidate_chunks"],
            "prefiltered_chunks": pool - scored,
            "lm_share_chunks": round(scored / pool, 6) if pool else None,
            "planned_tau": planned["tau_min"],
            "keep_ratio": planned["keep_ratio"],
        }


def candidate_plan(config, run: RunLayout) -> CandidatePlan:
    """The candidates `distill` planned for this config; refused when `distill` has not run
    or planned for other settings (naming them)."""
    stats = dict(run.require("distill").meta)
    planned = stats.get("candidates")
    if not planned:
        raise ConfigError(
            f"{run.distill_stats.url} plans no candidates (cascade.enabled was false when "
            "`colorfilter distill` ran): rerun `colorfilter distill` with cascade.enabled=true"
        )
    sample = SampleSpec.of(config)
    wanted = {
        "tau_min": config.cascade.planned_tau(config.selection.tau),
        "keep_ratio": config.cascade.keep_ratio,
        "sample": sample.as_dict(),
    }
    differs = [f"{key}: planned {planned.get(key)!r}, config {value!r}"
               for key, value in wanted.items() if planned.get(key) != value]  # fmt: skip
    if differs:
        raise ConfigError(
            f"the cascade's candidates in {run.cheap_scores.url} were planned for other "
            f"settings ({'; '.join(differs)}): rerun `colorfilter distill`"
        )
    return CandidatePlan(run, sample, planned["digest"], stats)
