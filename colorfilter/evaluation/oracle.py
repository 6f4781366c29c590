"""`label_oracle`: an evaluation-only reference selection that reads the pool's source labels.

Every chunk whose `source` starts with one of `evaluate.target_source` comes first, the rest
follow in CoLoR's order (highest score first): CoLoR with perfect recall of the target-like
sources. No selector may read those labels, so this is not a method to select with. Its held-out
loss says how much better selection could still gain on this pool with this target model; when
it ties CoLoR and the baselines near it, no selector can beat them by more than that tie.

It is two exact top-k selections (colorfilter.selection.topk, streamed over the score shards
joined with the token shards' labels): the best target-like chunks, and when a tau keeps more
than there are, the best of the others for the rest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from colorfilter.errors import BadDataError
from colorfilter.evaluation.pool import Census, iter_shards, scored_codes
from colorfilter.io.location import Location
from colorfilter.names import LABEL_ORACLE
from colorfilter.selection import ArraySource, n_selected, topk
from colorfilter.selection.topk import Source

__all__ = ["LABEL_ORACLE", "label_oracle", "oracle_selections"]


def label_oracle(
    seq_id: np.ndarray, score: np.ndarray, target_like: np.ndarray, taus: list[float]
) -> dict[float, np.ndarray]:
    """The oracle's chosen seq_ids (sorted) per tau, each of `n_selected(len(seq_id), tau)` rows,
    from in-memory arrays.

    Order: target-like rows first, then by score descending, ties by seq_id (as CoLoR's top-k).
    """
    seq_id, score = np.asarray(seq_id, dtype=np.uint64), np.asarray(score)
    target_like = np.asarray(target_like, dtype=bool)
    if not len(seq_id) == len(score) == len(target_like):
        raise ValueError("seq_id, score and target_like must have the same length")
    if nan_count := int(np.count_nonzero(np.isnan(score))):
        raise BadDataError(f"{nan_count} of {len(score)} rows have a NaN score")
    target = ArraySource({"seq_id": seq_id[target_like], "score": score[target_like]})
    other = ArraySource({"seq_id": seq_id[~target_like], "score": score[~target_like]})
    return _oracle(target, other, len(seq_id), taus)


def oracle_selections(census: Census, score_paths: Sequence[Location], target: np.ndarray,
                      taus: Sequence[float]) -> dict[float, np.ndarray]:  # fmt: skip
    """The oracle over the pool `census` describes, streamed (`score_paths`: the LM pair's
    score shards, one row per pool chunk; `target`: per label code, target-like)."""
    chunks = census.chunks_by_code
    n_target = int(chunks[: len(target)][target[: len(chunks)]].sum())
    sources = (
        _LabelledScores(census, score_paths, target, True, n_target),
        _LabelledScores(census, score_paths, target, False, census.rows - n_target),
    )
    return _oracle(*sources, census.rows, taus)


def _oracle(target: Source, other: Source, n_rows: int, taus: Sequence[float]
            ) -> dict[float, np.ndarray]:  # fmt: skip
    n_target = target.num_rows()
    wanted = {float(tau): n_selected(n_rows, tau) for tau in taus}
    first = topk(target, {min(k, n_target) for k in wanted.values()}, key="score").seq_ids
    more = {k - n_target for k in wanted.values() if k > n_target}
    rest = topk(other, more, key="score").seq_ids if more else {}
    chosen = {}
    for tau, k in wanted.items():
        parts = [first[min(k, n_target)]] + ([rest[k - n_target]] if k > n_target else [])
        chosen[tau] = np.sort(np.concatenate(parts))
    return chosen


class _LabelledScores:
    """The pool's score rows whose label is target-like (or, `want` False, the others): a
    selection Source, read again for each pass of the top-k."""

    def __init__(self, census: Census, score_paths: Sequence[Location], target: np.ndarray,
                 want: bool, n_rows: int) -> None:  # fmt: skip
        self.census, self.score_paths, self.want, self.n_rows = census, score_paths, want, n_rows
        self.target = np.pad(target, (0, max(len(census.labels.names) - len(target), 0)))

    def num_rows(self) -> int:
        return self.n_rows

    def iter_batches(self, columns: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
        shards = iter_shards(self.census.paths, self.census.labels, self.score_paths, ("score",))
        for rows in shards:
            keep = self.target[scored_codes(rows)] == self.want
            seq_id = rows.seq_id if rows.scored is None else rows.seq_id[rows.scored]
            yield {"seq_id": seq_id[keep], "score": rows.scores["score"][keep]}
