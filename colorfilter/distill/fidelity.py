"""How well the cheap scorer stands in for the LM pair, measured on the held-out sample only.

Two things a user reads before paying for the LM pass, and after it:
- *fidelity*: Spearman and Pearson correlation of cheap and exact scores on held-out chunks, and
  per tau the precision and recall of the cheap top 1/tau against the exact top 1/tau (within the
  held-out part: both sets hold 1/tau of it, so precision = recall up to rounding);
- *the cascade's recall*: the share of the pool's true top 1/tau that the LM pair will score.
  A top chunk is scored when it is in the sample (a seeded hash: probability s, the sample's
  share of the pool, independent of its score) or a candidate. Held-out chunks are a random
  sample of the pool that never trained the cheap scorer, so among the held-out chunks in the
  top 1/tau the share that are candidates estimates P(candidate | top, not sampled); the
  estimate is s + (1 - s) * that share, with an exact (Clopper-Pearson) 95% interval mapped the
  same way. "Top 1/tau" is judged against a threshold on the exact score: the sample's own
  (1 - 1/tau) quantile before the LM pass, the selection's lowest selected score after it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

CONFIDENCE = 0.95


def clopper_pearson(hits: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact binomial interval for hits / trials ((0, 1) when there are no trials)."""
    from scipy.stats import beta

    if trials == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if hits == 0 else float(beta.ppf(tail, hits, trials - hits + 1))
    high = 1.0 if hits == trials else float(beta.ppf(1 - tail, hits + 1, trials - hits))
    return low, high


def top_threshold(scores: np.ndarray, tau: float) -> float:
    """The smallest score among the top ceil(n / tau) (the sample's estimate of the pool's
    top-1/tau threshold)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])[::-1]
    if scores.size == 0:
        return math.inf
    return float(scores[max(1, math.ceil(scores.size / tau)) - 1])


def recall_estimate(
    exact: np.ndarray, candidate: np.ndarray, threshold: float, sample_share: float
) -> dict[str, Any]:
    """The cascade's estimated recall of the top chunks (exact >= threshold) from held-out rows
    (their exact scores, and whether each is a candidate); see the module docstring."""
    top = np.isfinite(exact) & (exact >= threshold)
    trials, hits = int(top.sum()), int((top & candidate).sum())
    low, high = clopper_pearson(hits, trials)
    share = hits / trials if trials else float("nan")
    lift = lambda p: sample_share + (1 - sample_share) * p  # noqa: E731 - one line, used thrice
    return {
        "estimate": round(lift(share), 6) if trials else None,
        "ci95": [round(lift(low), 6), round(lift(high), 6)],
        "held_out_top_chunks": trials,
        "held_out_top_candidates": hits,
        "threshold": threshold,
        "sample_share": round(sample_share, 6),
        "method": "s + (1 - s) * hits / held-out top chunks; Clopper-Pearson 95% interval",
    }


def fidelity(cheap: np.ndarray, exact: np.ndarray, taus: list[float]) -> dict[str, Any]:
    """Held-out agreement of cheap and exact scores (see the module docstring)."""
    from scipy.stats import pearsonr, spearmanr

    keep = np.isfinite(exact) & np.isfinite(cheap)
    cheap, exact = cheap[keep], exact[keep]
    report: dict[str, Any] = {"held_out_chunks": int(cheap.size)}
    if cheap.size < 3:
        report["note"] = "fewer than 3 held-out chunks: raise cascade.sample_fraction"
        return report
    report["spearman"] = round(float(spearmanr(cheap, exact).statistic), 4)
    report["pearson"] = round(float(pearsonr(cheap, exact).statistic), 4)
    per_tau = {}
    for tau in sorted(set(taus)):
        k = max(1, math.ceil(cheap.size / tau))
        truly = set(np.argsort(-exact, kind="stable")[:k].tolist())
        picked = set(np.argsort(-cheap, kind="stable")[:k].tolist())
        both = len(truly & picked)
        per_tau[f"{tau:g}"] = {
            "top_chunks": k,
            "precision": round(both / len(picked), 4),
            "recall": round(both / len(truly), 4),
        }
    report["top"] = per_tau
    return report


def plot_fidelity(path_or_buffer: Any, cheap: np.ndarray, exact: np.ndarray,
                  held_out: np.ndarray, title: str) -> None:  # fmt: skip
    """Scatter of cheap vs exact score: held-out chunks, and the training chunks fainter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(exact[~held_out], cheap[~held_out], s=4, alpha=0.25, color="tab:gray",
               label=f"trained on ({int((~held_out).sum())})")  # fmt: skip
    ax.scatter(exact[held_out], cheap[held_out], s=6, alpha=0.8, color="tab:blue",
               label=f"held out ({int(held_out.sum())})")  # fmt: skip
    ax.set_xlabel("exact score (prior_loss - cond_loss)")
    ax.set_ylabel("cheap score")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path_or_buffer, format="png", dpi=110)
    plt.close(fig)
