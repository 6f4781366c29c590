"""DSIR (Xie et al. 2023, arXiv 2302.03169): a baseline that ranks pool documents by how much
more likely their hashed word n-grams are under the target than under the pool.

Features match the `data-selection` package (HashedNgramDSIR) so weights are comparable: text is
lowercased and split like nltk's WordPunctTokenizer (`\\w+|[^\\w\\s]+`); unigrams and bigrams
(words joined by a space) are hashed with sha256 into 10,000 buckets. A document's log importance
weight is sum over its n-grams of log(p_target / p_raw).

Smoothing differs by default: we add `pseudocount` (1, add-one) to every bucket, so n-grams unseen
in the target get a finite penalty; the package instead adds 1e-8 to each probability. Use
`pseudocount=0, prob_floor=1e-8` to reproduce the package's weights.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

DEFAULT_NUM_BUCKETS = 10_000
DEFAULT_NGRAMS = 2
_WORD_PUNCT = re.compile(r"\w+|[^\w\s]+")  # nltk.tokenize.WordPunctTokenizer's pattern


def tokenize(text: str) -> list[str]:
    """Lowercased words and punctuation runs, as the package tokenizes."""
    return _WORD_PUNCT.findall(text.lower())


@lru_cache(maxsize=1 << 20)
def ngram_bucket(ngram: str, num_buckets: int = DEFAULT_NUM_BUCKETS) -> int:
    """sha256(ngram) mod num_buckets (cached: word frequencies are Zipfian, hashing is slow)."""
    return int.from_bytes(hashlib.sha256(ngram.encode("utf-8")).digest(), "big") % num_buckets


def ngram_buckets(
    text: str, num_buckets: int = DEFAULT_NUM_BUCKETS, ngrams: int = DEFAULT_NGRAMS
) -> np.ndarray:
    """Bucket of every 1..ngrams-gram of `text` (repeats kept: a bag, not a set)."""
    words = tokenize(text)
    grams = list(words)
    for n in range(2, ngrams + 1):
        grams += [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    return np.fromiter(
        (ngram_bucket(gram, num_buckets) for gram in grams), dtype=np.int64, count=len(grams)
    )


def count_ngrams(
    texts: Iterable[str], num_buckets: int = DEFAULT_NUM_BUCKETS, ngrams: int = DEFAULT_NGRAMS
) -> np.ndarray:
    """Bucket counts over a stream of texts; counts of separate shards simply add up."""
    counts = np.zeros(num_buckets, dtype=np.int64)
    for text in texts:
        counts += np.bincount(ngram_buckets(text, num_buckets, ngrams), minlength=num_buckets)
    return counts


@dataclass(frozen=True)
class DSIRModel:
    """log(p_target / p_raw) per bucket, with the feature settings it was fitted with."""

    log_ratio: np.ndarray  # float64, one per bucket
    ngrams: int

    @property
    def num_buckets(self) -> int:
        return len(self.log_ratio)


def model_from_counts(
    target_counts: np.ndarray,
    raw_counts: np.ndarray,
    *,
    ngrams: int = DEFAULT_NGRAMS,
    pseudocount: float = 1.0,
    prob_floor: float = 0.0,
) -> DSIRModel:
    """Build the model from bucket counts (e.g. summed over shards counted in parallel)."""
    if len(target_counts) != len(raw_counts):
        raise ValueError(f"bucket counts differ: {len(target_counts)} vs {len(raw_counts)}")
    if pseudocount < 0 or prob_floor < 0 or pseudocount + prob_floor == 0:
        raise ValueError("need pseudocount > 0 or prob_floor > 0 (else unseen n-grams give inf)")
    target_prob = _probabilities(target_counts, pseudocount, "target")
    raw_prob = _probabilities(raw_counts, pseudocount, "raw")
    log_ratio = np.log(target_prob + prob_floor) - np.log(raw_prob + prob_floor)
    return DSIRModel(log_ratio=log_ratio, ngrams=ngrams)


def _probabilities(counts: np.ndarray, pseudocount: float, name: str) -> np.ndarray:
    smoothed = np.asarray(counts, dtype=np.float64) + pseudocount
    total = smoothed.sum()
    if total <= 0:
        raise ValueError(f"no n-grams in the {name} texts")
    return smoothed / total


def fit(
    target_texts: Iterable[str],
    raw_texts: Iterable[str],
    *,
    num_buckets: int = DEFAULT_NUM_BUCKETS,
    ngrams: int = DEFAULT_NGRAMS,
    pseudocount: float = 1.0,
    prob_floor: float = 0.0,
) -> DSIRModel:
    """Fit target (downstream train) and raw (pool) n-gram distributions; texts may stream."""
    target_counts = count_ngrams(target_texts, num_buckets, ngrams)
    raw_counts = count_ngrams(raw_texts, num_buckets, ngrams)
    return model_from_counts(
        target_counts, raw_counts, ngrams=ngrams, pseudocount=pseudocount, prob_floor=prob_floor
    )


def log_importance(model: DSIRModel, texts: Iterable[str]) -> np.ndarray:
    """Per-text log importance weight, float32 (higher = more target-like)."""
    weights = [
        model.log_ratio[ngram_buckets(text, model.num_buckets, model.ngrams)].sum()
        for text in texts
    ]
    return np.asarray(weights, dtype=np.float32)
