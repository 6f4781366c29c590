"""The data multiplier: how many random tokens buy CoLoR's held-out loss, over CoLoR's tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence


def monotone_curve(points: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """(tokens, loss) sorted by tokens, loss made non-increasing (a running minimum), so noise in
    a short random curve cannot make the inverse ambiguous."""
    ordered = sorted(points)
    curve, best = [], math.inf
    for tokens, loss in ordered:
        best = min(best, loss)
        curve.append((tokens, best))
    return curve


def data_multiplier(
    points: Sequence[tuple[int, float]], loss: float, tokens: int
) -> dict[str, float | str | None]:
    """Interpolate log(tokens) on the random curve at `loss`, divided by `tokens`.

    Outside the curve the answer is clamped to its end and marked: "lower" (CoLoR beats even the
    largest random run, so the multiplier is at least this) or "upper" (at most this).
    """
    curve = monotone_curve(points)
    if not curve or not math.isfinite(loss) or tokens <= 0:
        return {"value": None, "bound": None, "random_tokens": None}
    first = next((i for i, (_, curve_loss) in enumerate(curve) if curve_loss <= loss), None)
    bound = None
    if first is None:
        random_tokens, bound = float(curve[-1][0]), "lower"
    elif first == 0:
        random_tokens = float(curve[0][0])
        bound = "upper" if loss > curve[0][1] else None
    else:
        (t0, l0), (t1, l1) = curve[first - 1], curve[first]
        fraction = (l0 - loss) / (l0 - l1) if l0 > l1 else 1.0
        random_tokens = math.exp(math.log(t0) + fraction * (math.log(t1) - math.log(t0)))
    return {"value": random_tokens / tokens, "bound": bound, "random_tokens": random_tokens}
