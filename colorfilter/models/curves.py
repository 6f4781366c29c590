"""The loss curve of a training run, as CSV (for tools) and PNG (for people)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from colorfilter.io.atomic import atomic_path, write_text_atomic

CURVE_COLUMNS = (
    "step",
    "tokens_seen",
    "lr",
    "train_loss",
    "z_loss",
    "grad_norm",
    "elapsed_s",
    "eval_loss",
)


def write_loss_curve_csv(history: Sequence[dict[str, float]], path: str | Path) -> None:
    """One row per optimizer step; `eval_loss` is blank where no evaluation ran."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for record in history:
        writer.writerow({column: record.get(column, "") for column in CURVE_COLUMNS})
    write_text_atomic(path, buffer.getvalue())


def write_loss_curve_png(
    history: Sequence[dict[str, float]], path: str | Path, title: str = ""
) -> None:
    """Train loss against tokens seen, with held-out evaluations as points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    tokens = [r["tokens_seen"] for r in history]
    axes.plot(tokens, [r["train_loss"] for r in history], label="train loss", linewidth=1)
    evals = [
        (r["tokens_seen"], r["eval_loss"])
        for r in history
        if not math.isnan(r.get("eval_loss", math.nan))
    ]
    if evals:
        axes.plot(*zip(*evals, strict=True), "o-", label="held-out loss", markersize=4)
    axes.set_xlabel("tokens seen")
    axes.set_ylabel("loss (nats/token)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
