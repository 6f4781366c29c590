"""A streamed histogram of pool scores, and its PNG for the dataset card.

Bin edges are fixed from a first pass (min/max), so counts add up shard by shard without
ever holding all scores in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ScoreHistogram:
    """Counts of pool and selected scores over shared bins; non-finite scores counted apart."""

    edges: np.ndarray
    pool: np.ndarray = field(init=False)
    selected: np.ndarray = field(init=False)
    non_finite: int = 0

    def __post_init__(self) -> None:
        self.pool = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.selected = np.zeros(len(self.edges) - 1, dtype=np.int64)

    @classmethod
    def from_range(cls, low: float, high: float, bins: int) -> ScoreHistogram:
        """Bins spanning [low, high] (widened when the range is empty)."""
        if not np.isfinite(low) or not np.isfinite(high):
            low, high = 0.0, 1.0
        if high <= low:
            low, high = low - 0.5, high + 0.5
        return cls(edges=np.linspace(low, high, bins + 1))

    def add_pool(self, scores: np.ndarray) -> None:
        finite = np.isfinite(scores)
        self.non_finite += int((~finite).sum())
        self.pool += np.histogram(scores[finite], bins=self.edges)[0]

    def add_selected(self, scores: np.ndarray) -> None:
        self.selected += np.histogram(scores[np.isfinite(scores)], bins=self.edges)[0]


def finite_range(scores: np.ndarray) -> tuple[float, float]:
    """(min, max) of the finite values, or (inf, -inf) when there are none."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return float("inf"), float("-inf")
    return float(finite.min()), float(finite.max())


def plot_histogram(
    path: str | Path, hist: ScoreHistogram, threshold: float | None, title: str
) -> None:
    """Save the pool and selected histograms with the threshold line as a PNG (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # one filled step patch per series (`bar` draws a patch per bin: ~10x slower to save)
    ax.stairs(hist.pool, hist.edges, fill=True, color="#9bb7d4", label="pool")
    ax.stairs(hist.selected, hist.edges, fill=True, color="#d9534f", alpha=0.8, label="selected")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("score = prior_loss - cond_loss (nats/token; higher is kept)")
    ax.set_ylabel("sequences")
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.13, top=0.92)  # tight_layout: slow
    fig.savefig(path, format="png", metadata={"Software": None})


def histogram_summary(hist: ScoreHistogram) -> dict[str, Any]:
    """Bin edges and counts for the manifest (small: one number per bin)."""
    return {
        "edges": [float(e) for e in hist.edges],
        "pool": hist.pool.tolist(),
        "selected": hist.selected.tolist(),
        "non_finite": hist.non_finite,
    }
