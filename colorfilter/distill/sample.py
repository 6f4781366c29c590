"""The cascade's sample: which pool chunks the LM pair scores to teach the cheap scorer.

Drawn by a seeded hash of `seq_id` (colorfilter.hashing), so it does not depend on input files,
listing order, shard boundaries or the number of workers, and a shard's task decides alone which
of its rows are in it. A second, independent hash puts a share of the sample in the held-out
part, which never trains the cheap scorer: its fidelity and the recall estimate come from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from colorfilter.hashing import seeded_keys

SAMPLE_STREAM = "cascade.sample"
HOLDOUT_STREAM = "cascade.holdout"


def _below(keys: np.ndarray, fraction: float) -> np.ndarray:
    """keys < fraction * 2**64 (uniform uint64 keys: a seeded Bernoulli(fraction) per row)."""
    limit = min(int(fraction * 2.0**64), (1 << 64) - 1)
    return keys < np.uint64(limit)


@dataclass(frozen=True)
class SampleSpec:
    """A seeded Bernoulli sample of the pool and its held-out part."""

    seed: int
    fraction: float
    holdout_fraction: float

    @classmethod
    def of(cls, config) -> SampleSpec:
        """The run's sample (config: the root Config)."""
        cascade = config.cascade
        return cls(config.seed, cascade.sample_fraction, cascade.holdout_fraction)

    def in_sample(self, seq_ids: np.ndarray) -> np.ndarray:
        return _below(seeded_keys(seq_ids, self.seed, SAMPLE_STREAM), self.fraction)

    def in_holdout(self, seq_ids: np.ndarray) -> np.ndarray:
        """Held-out sample rows (a subset of the sample)."""
        held = _below(seeded_keys(seq_ids, self.seed, HOLDOUT_STREAM), self.holdout_fraction)
        return held & self.in_sample(seq_ids)

    def as_dict(self) -> dict:
        return {
            "seed": self.seed,
            "fraction": self.fraction,
            "holdout_fraction": self.holdout_fraction,
            "streams": [SAMPLE_STREAM, HOLDOUT_STREAM],
        }
