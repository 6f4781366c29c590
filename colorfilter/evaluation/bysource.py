"""Per-source numbers of the report from per-label accumulators, never per-row masks.

The pool's passes (colorfilter.evaluation.pool, .survey) sum what the report needs per label
code, shard by shard: chunks, tokens, score moments, score histograms. A source group of the
report (the largest sources, "other", the target-like part) is then a set of codes, and its
numbers are the merged numbers of its codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_SOURCES = 8  # sources shown one by one (table, plot); the rest are pooled as "other"


class Moments:
    """Count, mean and sum of squared deviations per label code, merged shard by shard (Chan
    et al.'s parallel update), so means and spreads per source need no per-row array."""

    def __init__(self) -> None:
        self.n = np.zeros(0, np.int64)
        self.mean = np.zeros(0, np.float64)
        self.m2 = np.zeros(0, np.float64)

    def add(self, codes: np.ndarray, values: np.ndarray) -> None:
        """Fold in `values` (any float dtype), one label code each."""
        values = np.asarray(values, dtype=np.float64)
        size = max(len(self.n), int(codes.max()) + 1 if len(codes) else 0)
        self._grow(size)
        count = np.bincount(codes, minlength=size)
        total = np.bincount(codes, weights=values, minlength=size)
        mean = np.divide(total, count, out=np.zeros(size), where=count > 0)
        m2 = np.bincount(codes, weights=(values - mean[codes]) ** 2, minlength=size)
        self._merge(count, mean, m2)

    def _grow(self, size: int) -> None:
        extra = size - len(self.n)
        if extra > 0:
            grown = (np.pad(a, (0, extra)) for a in (self.n, self.mean, self.m2))
            self.n, self.mean, self.m2 = grown

    def _merge(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        both = self.n + count
        share = np.divide(count, both, out=np.zeros(len(both)), where=both > 0)
        delta = mean - self.mean
        self.mean = self.mean + delta * share
        self.m2 = self.m2 + m2 + delta**2 * self.n * share
        self.n = both

    def of(self, codes: np.ndarray) -> tuple[int, float, float]:
        """(count, mean, population variance) of the rows of these codes together."""
        merged = Moments()
        merged._grow(1)
        for code in codes:
            if code < len(self.n) and self.n[code]:
                merged._merge(self.n[code : code + 1], self.mean[code : code + 1],
                              self.m2[code : code + 1])  # fmt: skip
        if not merged.n[0]:
            return 0, float("nan"), float("nan")
        return int(merged.n[0]), float(merged.mean[0]), float(merged.m2[0] / merged.n[0])


@dataclass(frozen=True)
class SourceGroups:
    """The report's source groups as label codes: the largest sources (MAX_SOURCES) and the
    rest as "other"; and, where the config names target-like prefixes, the target-like part."""

    sources: dict[str, np.ndarray]
    target: np.ndarray | None
    every: np.ndarray  # every code that holds a row


def source_groups(names: np.ndarray, chunks_by_code: np.ndarray,
                  target: np.ndarray | None) -> SourceGroups:  # fmt: skip
    """Groups by label (`names`: one str per code; codes reading the same share a group),
    largest by pool chunks first; `target`: per code, whether it is target-like (or None)."""
    present = np.flatnonzero(chunks_by_code[: len(names)] > 0)
    by_name: dict[str, list[int]] = {}
    for code in present:
        by_name.setdefault(str(names[code]), []).append(int(code))
    ordered = sorted(by_name)  # ties keep label order
    counts = [int(chunks_by_code[by_name[name]].sum()) for name in ordered]
    shown = [ordered[i] for i in np.argsort(-np.array(counts, np.int64), kind="stable")]
    shown = shown[:MAX_SOURCES]
    groups = {name: np.array(by_name[name], np.int64) for name in sorted(shown)}
    rest = [code for name in ordered if name not in shown for code in by_name[name]]
    if rest:
        groups["other"] = np.array(rest, np.int64)
    target_codes = None if target is None else present[target[present]]
    return SourceGroups(groups, target_codes, present)


def scores_by_source(groups: SourceGroups, moments: dict[str, Moments]) -> dict[str, dict]:
    """Mean prior_loss, cond_loss and score per source, plus the whole pool ("all") and its
    target-like and other parts.

    Why: `cond_loss - prior_loss` on the non-target part is how far fine-tuning moved the
    conditional away from the prior on the pool. When that drift dwarfs the spread of prior_loss,
    cond_loss ranks by target-likeness alone and conditional_only selects much as CoLoR does.
    Only LM-scored chunks with a finite score count (under the cascade: its sample and
    candidates).
    """
    sets = dict(groups.sources)
    sets["all"] = groups.every
    if groups.target is not None:
        sets["target-like"] = groups.target
        sets["not target-like"] = np.setdiff1d(groups.every, groups.target)
    out = {}
    for name, codes in sets.items():
        count, _, _ = moments["score"].of(codes)
        if not count:
            continue
        row: dict = {"chunks": count}
        for column in ("prior_loss", "cond_loss", "score"):
            row[column] = moments[column].of(codes)[1]
        row["prior_loss_std"] = float(np.sqrt(moments["prior_loss"].of(codes)[2]))
        out[name] = row
    return out


def composition(names: np.ndarray, selected: tuple[np.ndarray, np.ndarray],
                pool_tokens: np.ndarray, target: np.ndarray | None) -> dict:  # fmt: skip
    """Selected tokens by source, and precision/recall of target-like tokens.

    `names`: each code's label (None read as ""); `selected`: (chunks, tokens) per code of the
    selection; `pool_tokens`: tokens per code of the pool; `target`: per code, target-like.
    """
    size = len(names)
    chunks, tokens, pool = (_padded(a, size) for a in (*selected, pool_tokens))
    by_label: dict[str, int] = {}
    for code in np.flatnonzero(chunks):  # None and "" both read ""
        by_label[str(names[code])] = by_label.get(str(names[code]), 0) + int(tokens[code])
    total = int(tokens.sum())
    result: dict = {"tokens": total, "tokens_by_source": dict(sorted(by_label.items()))}
    if target is not None:
        hits, pool_hits = int(tokens[target].sum()), int(pool[target].sum())
        result["precision"] = hits / total if total else None
        result["recall"] = hits / pool_hits if pool_hits else None
    return result


def _padded(counts: np.ndarray, size: int) -> np.ndarray:
    return np.pad(counts, (0, max(size - len(counts), 0)))[:size]


def histograms(groups: SourceGroups, counts_by_code: np.ndarray) -> dict[str, np.ndarray]:
    """Each shown group's score histogram: the sum of its codes' histograms."""
    return {name: counts_by_code[codes].sum(axis=0) for name, codes in groups.sources.items()}
