"""`label_oracle`: an evaluation-only reference selection that reads the pool's source labels.

Every chunk whose `source` starts with one of `evaluate.target_source` comes first, the rest
follow in CoLoR's order (highest score first): CoLoR with perfect recall of the target-like
sources. No selector may read those labels, so this is not a method to select with. Its held-out
loss says how much better selection could still gain on this pool with this target model; when
it ties CoLoR and the baselines near it, no selector can beat them by more than that tie.
"""

from __future__ import annotations

import numpy as np

from colorfilter.errors import BadDataError

LABEL_ORACLE = "label_oracle"


def label_oracle(
    seq_id: np.ndarray, score: np.ndarray, target_like: np.ndarray, taus: list[float]
) -> dict[float, np.ndarray]:
    """The oracle's chosen seq_ids (sorted) per tau, each of `n_selected(len(seq_id), tau)` rows.

    Order: target-like rows first, then by score descending, ties by seq_id (as CoLoR's top-k).
    """
    from colorfilter.selection import n_selected

    seq_id, score = np.asarray(seq_id, dtype=np.uint64), np.asarray(score, dtype=np.float64)
    target_like = np.asarray(target_like, dtype=bool)
    if not len(seq_id) == len(score) == len(target_like):
        raise ValueError("seq_id, score and target_like must have the same length")
    if nan_count := int(np.count_nonzero(np.isnan(score))):
        raise BadDataError(f"{nan_count} of {len(score)} rows have a NaN score")
    order = np.lexsort((seq_id, -score, ~target_like))
    return {float(tau): np.sort(seq_id[order[: n_selected(len(seq_id), tau)]]) for tau in taus}
