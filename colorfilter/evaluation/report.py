"""The evaluation report: report.json (fixed schema), details.json, report.md and two plots."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.curve import data_multiplier
from colorfilter.evaluation.oracle import LABEL_ORACLE
from colorfilter.evaluation.plan import EvaluationPlan
from colorfilter.evaluation.plots import plot_loss_vs_tau, plot_random_curve, plot_scores_by_source
from colorfilter.io import storage
from colorfilter.io.location import Location, as_location

ORACLE_NOTE = (
    f"`{LABEL_ORACLE}` is a reference, not a selector: it reads the pool's source labels "
    "(every chunk of a source starting with {prefixes} first, the rest in CoLoR's order), which "
    "no method may. Its loss is what perfect recall of the target-like sources gives this target "
    "model: where CoLoR and a baseline both sit within the seed spread of it, better recall of "
    "those sources cannot separate them."
)

DOCUMENTS_NOTE = (
    "Every selection is widened to the whole source documents of its chunks "
    "(`selection.documents`), as `colorfilter select` writes it; the budgets follow the "
    "smallest widened selection."
)


def _tau_value(tau: float) -> int | float:
    return int(tau) if float(tau).is_integer() else float(tau)


def _spread(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def write_reports(eval_dir: Path | Location, plan: EvaluationPlan, records: dict,
                  elapsed_s: float) -> dict[str, Any]:  # fmt: skip
    """Aggregate the run records over seeds and write every report file (into a folder or a
    bucket prefix, through the storage layer); return report.json.

    The plan's numbers about the pool (composition, overlap, scores and histograms by source,
    where the pool records a source) come from its passes over the pool (stage.plan_evaluation).
    """
    cfg = plan.cfg
    cells = _method_cells(cfg, plan.method_specs, records)
    curve = _random_curve(plan.curve_specs, records)
    points = [(c["train_tokens"], c["heldout_loss"]) for c in curve]
    multipliers = {}
    for tau in cfg.taus:
        cell = cells.get(("color", float(tau)))
        if cell is not None:
            multipliers[f"{tau:g}"] = data_multiplier(points, cell["mean"], cell["train_tokens"])
    report = {
        "results": [
            {
                "method": m,
                "tau": _tau_value(t),
                "train_tokens": c["train_tokens"],
                "heldout_loss": c["mean"],
            }
            for (m, t), c in cells.items()
        ],
        "random_curve": [
            {"train_tokens": c["train_tokens"], "heldout_loss": c["heldout_loss"]} for c in curve
        ],
        "data_multiplier": {tau: m["value"] for tau, m in multipliers.items()},
    }
    details = {
        "config": dataclasses.asdict(cfg),
        "seq_len": plan.seq_len,
        "documents": plan.documents,
        "budget_tokens": {f"{t:g}": n * plan.seq_len for t, n in plan.budgets.items()},
        "cells": [{"method": m, "tau": _tau_value(t), **c} for (m, t), c in cells.items()],
        "random_curve": curve,
        "data_multiplier": multipliers,
        "composition": plan.composition,
        "overlap_with_color": plan.overlap,
        "scores_by_source": plan.scores_by_source,
        "runs": records,
        "elapsed_s": elapsed_s,
        "train_time_s": sum(r.get("wall_time_s", 0.0) for r in records.values()),
    }
    eval_dir = as_location(eval_dir)
    storage.makedirs(eval_dir)
    storage.write_json(eval_dir.join("details.json"), details)
    storage.write_text(
        eval_dir.join("report.md"), _markdown(cfg, cells, curve, multipliers, details)
    )
    plot_loss_vs_tau(cfg, cells, eval_dir.join("loss_vs_tau.png"))
    plot_random_curve(cfg, cells, curve, eval_dir.join("random_curve.png"))
    if plan.histograms is not None:
        plot_scores_by_source(plan.histograms, eval_dir.join("scores_by_source.png"))
    # last: the stage's marker (colorfilter.layout) lists these files, so an evaluation
    # killed while writing the other files does not look finished
    storage.write_json(eval_dir.join("report.json"), report)
    return report


def summary(eval_dir: Path | Location) -> str:
    """What `colorfilter evaluate` prints at the end: where the report is (a path or URL), and
    its headline table (held-out loss per method and tau, the train tokens)."""
    report_md = as_location(eval_dir).join("report.md")
    markdown = storage.read_text(report_md)
    table, started = [], False
    for line in markdown.splitlines():
        started = started or line.startswith("| method |")
        if started and not line.startswith("|"):
            break
        if started:
            table.append(line)
    return "\n".join([f"report: {report_md} (and report.json, plots)", "", *table])


def _overlap_lines(cfg: EvaluateConfig, overlap: dict) -> list[str]:
    if not overlap:
        return []
    others = [m for m in cfg.methods if m != "color"]
    lines = ["", "## Overlap with CoLoR's selection (share of its chunks also selected)", ""]
    lines += ["| τ | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
    for tau, shares in overlap.items():
        lines.append(f"| {tau} | " + " | ".join(_percent(shares[m]) for m in others) + " |")
    lines += [
        "",
        "A method that shares most of CoLoR's chunks trains on nearly the same data, so its "
        "held-out loss can only tie CoLoR's.",
    ]
    return lines


def _method_cells(cfg: EvaluateConfig, specs: list, records: dict) -> dict:
    """Per (method, tau): held-out losses over seeds, their mean and spread, the budget."""
    grouped: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for spec in specs:
        grouped[(spec.method, spec.tau)].append(records[spec.name])
    cells = {}
    for key, runs in grouped.items():
        losses = [r["heldout_loss"] for r in runs]
        cells[key] = {
            "train_tokens": runs[0]["train_tokens"],
            "mean": float(np.mean(losses)),
            "spread": _spread(losses),
            "losses": losses,
            "seeds": [r["seed"] for r in runs],
            "epochs": float(np.mean([r["epochs"] for r in runs])),
        }
        for metric in ("mc_accuracy", "mc_accuracy_norm"):
            values = [r[metric] for r in runs if metric in r]
            if len(values) == len(runs):
                cells[key][metric] = {"mean": float(np.mean(values)), "spread": _spread(values)}
    return cells


def _random_curve(specs: list, records: dict) -> list[dict]:
    """Random-data held-out loss per token count, averaged over seeds."""
    grouped: dict[int, list[float]] = defaultdict(list)
    for spec in specs:
        record = records[spec.name]
        grouped[record["train_tokens"]].append(record["heldout_loss"])
    return [
        {
            "train_tokens": tokens,
            "heldout_loss": float(np.mean(losses)),
            "spread": _spread(losses),
            "n_seeds": len(losses),
        }
        for tokens, losses in sorted(grouped.items())
    ]


def _markdown(cfg, cells, curve, multipliers, details) -> str:
    taus = [float(t) for t in cfg.taus]
    lines = [
        "# CoLoR-Filter evaluation",
        "",
        f"Target model `{cfg.preset}`, seeds {cfg.seeds}; every method at a tau trains on "
        "the same tokens (below), cosine-annealed to the end of its run. Held-out loss in "
        "nats/token on `downstream_eval` (mean ± std over seeds; lower is better).",
        *(["", DOCUMENTS_NOTE] if details["documents"] else []),
        "",
        *_method_table(cfg, cells, _cell_text),
    ]
    budget = details["budget_tokens"]
    lines.append("| *train tokens* | " + " | ".join(f"{budget[f'{t:g}']:,}" for t in taus) + " |")
    if LABEL_ORACLE in cfg.methods:
        lines += ["", ORACLE_NOTE.format(prefixes=cfg.target_source)]
    lines += _verdict_lines(cfg, cells)
    lines += _accuracy_lines(cfg, cells, details["runs"])
    lines += [
        "",
        "## Random-data curve and data multiplier",
        "",
        "| train tokens | held-out loss |",
        "|---|---|",
    ]
    lines += [f"| {c['train_tokens']:,} | {c['heldout_loss']:.4f} |" for c in curve]
    lines += [
        "",
        "| τ | CoLoR tokens | random tokens for the same loss | multiplier |",
        "|---|---|---|---|",
    ]
    for tau, m in multipliers.items():
        value = "n/a" if m["value"] is None else f"{m['value']:.2f}"
        mark = {"lower": "≥ ", "upper": "≤ "}.get(m["bound"] or "", "")
        tokens = "n/a" if m["random_tokens"] is None else f"{m['random_tokens']:,.0f}"
        lines.append(f"| {tau} | {budget[tau]:,} | {tokens} | {mark}{value} |")
    lines += ["", "(≥ / ≤: CoLoR's loss is outside the random curve; clamped to its end.)"]
    lines += _composition_lines(cfg, details["composition"])
    lines += _overlap_lines(cfg, details["overlap_with_color"])
    lines += _scores_by_source_lines(details["scores_by_source"])
    lines += [
        "",
        f"{len(details['runs'])} runs; their training and held-out evaluation took "
        f"{details['train_time_s']:.0f} s in all (this invocation: "
        f"{details['elapsed_s']:.0f} s, finished runs are reused).",
        "",
    ]
    return "\n".join(lines)


def _verdict_lines(cfg: EvaluateConfig, cells: dict) -> list[str]:
    """CoLoR against each other method at each tau: the difference of means, whether it exceeds
    the seed-to-seed spread (the larger of the two cells' standard deviations), and the paired
    difference (same seed = same initialisation and data order) with its spread over seeds."""
    if "color" not in cfg.methods or len(cfg.methods) < 2:
        return []
    lines = [
        "",
        "## CoLoR against each method",
        "",
        "Difference = method's loss - CoLoR's (positive: CoLoR is lower). Clear: larger than "
        "the seed-to-seed spread of the losses. Paired: the same difference seed by seed "
        "(mean ± std), which cancels what a seed does to every method alike.",
        "",
        "| τ | method | difference | spread | paired | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for tau in (float(t) for t in cfg.taus):
        color = cells.get(("color", tau))
        for method in (m for m in cfg.methods if m != "color"):
            other = cells.get((method, tau))
            if color is not None and other is not None:
                lines.append(f"| {tau:g} | {method} | " + _verdict_row(method, color, other) + " |")
    return lines


def _verdict_row(method: str, color: dict, other: dict) -> str:
    difference = other["mean"] - color["mean"]
    if min(len(color["losses"]), len(other["losses"])) < 2:
        return f"{difference:+.4f} | n/a | n/a | one seed: spread not measured"
    spread = max(color["spread"], other["spread"])
    color_by_seed = dict(zip(color.get("seeds", []), color["losses"], strict=False))
    paired = [
        loss - color_by_seed[seed]
        for seed, loss in zip(other.get("seeds", []), other["losses"], strict=False)
        if seed in color_by_seed
    ]
    paired_text = (
        f"{np.mean(paired):+.4f} ± {np.std(paired, ddof=1):.4f}" if len(paired) > 1 else "n/a"
    )
    side = "CoLoR lower" if difference > 0 else f"{method} lower"
    verdict = f"{side}, {'clear' if abs(difference) > spread else 'within spread'}"
    return f"{difference:+.4f} | {spread:.4f} | {paired_text} | {verdict}"


def _method_table(cfg: EvaluateConfig, cells: dict, text: Any) -> list[str]:
    """A method x tau Markdown table; `text(cell or None)` renders each cell."""
    taus = [float(t) for t in cfg.taus]
    lines = [
        "| method | " + " | ".join(f"τ={t:g}" for t in taus) + " |",
        "|---|" + "---|" * len(taus),
    ]
    for method in cfg.methods:
        row = [text(cells.get((method, t))) for t in taus]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return lines


def _accuracy_lines(cfg: EvaluateConfig, cells: dict, runs: dict) -> list[str]:
    """Multiple-choice accuracy per method and tau, where every run of a cell measured it."""
    if not any("mc_accuracy" in cell for cell in cells.values()):
        return []
    n_items = next(r["mc_items"] for r in runs.values() if "mc_items" in r)
    return [
        "",
        f"## Multiple-choice accuracy ({n_items:,} items, rank classification)",
        "",
        "acc / acc_norm (log-likelihood per character of the choice), mean ± std over seeds; "
        "higher is better.",
        "",
        *_method_table(cfg, cells, _accuracy_text),
    ]


def _accuracy_text(cell: dict | None) -> str:
    if cell is None or "mc_accuracy" not in cell:
        return "—"
    parts = []
    for metric in ("mc_accuracy", "mc_accuracy_norm"):
        value = cell[metric]
        spread = f" ± {100 * value['spread']:.1f}" if len(cell["losses"]) > 1 else ""
        parts.append(f"{100 * value['mean']:.1f}{spread}%")
    return " / ".join(parts)


def _cell_text(cell: dict | None) -> str:
    if cell is None:
        return "—"
    text = f"{cell['mean']:.4f}"
    return text + (f" ± {cell['spread']:.4f}" if len(cell["losses"]) > 1 else "")


def _composition_lines(cfg: EvaluateConfig, compositions: dict) -> list[str]:
    present = {name: c for name, c in compositions.items() if c is not None}
    if not present:
        return []
    sources = sorted({s for c in present.values() for s in c["tokens_by_source"]})
    lines = ["", "## Composition of the selections (share of selected tokens by source)", ""]
    extra = " precision | recall |" if cfg.target_source else ""
    lines += [
        "| selection | " + " | ".join(s or "(none)" for s in sources) + " |" + extra,
        "|---|" + "---|" * len(sources) + ("---|---|" if cfg.target_source else ""),
    ]
    for name, c in present.items():
        shares = [c["tokens_by_source"].get(s, 0) / max(c["tokens"], 1) for s in sources]
        row = f"| {name} | " + " | ".join(f"{100 * x:.1f}%" for x in shares) + " |"
        if cfg.target_source:
            row += f" {_percent(c.get('precision'))} | {_percent(c.get('recall'))} |"
        lines.append(row)
    if cfg.target_source:
        lines += [
            "",
            f"Target-like sources: prefixes {cfg.target_source}. Precision: share of "
            "selected tokens that are target-like; recall: share of the pool's target-like "
            "tokens selected.",
        ]
    return lines


def _scores_by_source_lines(rows: dict[str, dict[str, float]] | None) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "## Pool scores by source (mean nats/token)",
        "",
        "| source | chunks | prior_loss (std) | cond_loss | score |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        label = f"*{name}*" if name in ("all", "target-like", "not target-like") else name
        lines.append(
            f"| {label} | {row['chunks']:,} | {row['prior_loss']:.3f} "
            f"({row['prior_loss_std']:.3f}) | {row['cond_loss']:.3f} | {row['score']:+.3f} |"
        )
    lines += [
        "",
        "On the part of the pool that is not target-like, cond_loss - prior_loss (minus the score) "
        "is how far fine-tuning moved the conditional away from the prior. When that drift dwarfs "
        "the spread of prior_loss, cond_loss ranks by target-likeness alone and conditional_only "
        "selects much as CoLoR does.",
    ]
    return lines


def _percent(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"
