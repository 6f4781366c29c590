"""The evaluation report's plots: loss vs tau, the random curve, score histograms by source."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.plan import ScoreHistograms
from colorfilter.io import storage
from colorfilter.io.location import Location


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _save(figure: Any, path: Location) -> None:
    """The PNG rendered in memory, then written whole (to disk or a bucket)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    storage.write_bytes(path, buffer.getvalue())


def plot_loss_vs_tau(cfg: EvaluateConfig, cells: dict, path: Location) -> None:
    figure, axes = _figure()
    for method in cfg.methods:
        taus = [float(t) for t in cfg.taus if (method, float(t)) in cells]
        means = [cells[(method, t)]["mean"] for t in taus]
        spreads = [cells[(method, t)]["spread"] for t in taus]
        axes.errorbar(taus, means, yerr=spreads, marker="o", capsize=3, label=method)
    axes.set_xscale("log", base=2)
    axes.set_xticks([float(t) for t in cfg.taus], [f"{t:g}" for t in cfg.taus])
    axes.minorticks_off()
    axes.set_xlabel("selection ratio τ (keep 1 in τ; every method trains on the same tokens)")
    axes.set_ylabel("held-out loss (nats/token)")
    axes.set_title(f"Held-out target loss by method ({cfg.preset})")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    _save(figure, path)


def plot_random_curve(cfg: EvaluateConfig, cells: dict, curve: list, path: Location) -> None:
    figure, axes = _figure()
    axes.plot(
        [c["train_tokens"] for c in curve],
        [c["heldout_loss"] for c in curve],
        "o-",
        color="gray",
        label="random",
    )
    for tau in cfg.taus:
        cell = cells.get(("color", float(tau)))
        if cell is not None:
            axes.plot(
                cell["train_tokens"], cell["mean"], "*", markersize=12, label=f"CoLoR τ={tau:g}"
            )
    axes.set_xscale("log")
    axes.set_xlabel("train tokens")
    axes.set_ylabel("held-out loss (nats/token)")
    axes.set_title("Random data: held-out loss vs tokens, with CoLoR")
    axes.grid(alpha=0.3)
    axes.legend()
    _save(figure, path)


def plot_scores_by_source(histograms: ScoreHistograms, path: Location) -> None:
    """Score (prior_loss - cond_loss) histograms per source, each normalised to its own count
    (counted shard by shard over the pool: colorfilter.evaluation.survey)."""
    bins = histograms.bins
    widths = np.diff(bins)
    figure, axes = _figure()
    for name, counts in histograms.counts.items():
        total = int(counts.sum())
        density = counts / (total * widths) if total else np.zeros(len(widths))
        axes.stairs(density, bins, linewidth=1.5, label=f"{name} ({total:,})")
    axes.set_xlabel("score = prior_loss - cond_loss (nats/token)")
    axes.set_ylabel("density (each source normalised)")
    axes.set_title("Pool score distributions by source")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    _save(figure, path)
