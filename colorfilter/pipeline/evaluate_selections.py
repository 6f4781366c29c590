"""The selections evaluate trains on: select's own plan, one method at a time.

Every method's selections come from `colorfilter.pipeline.select.plan_selections`, the one place
selections are computed from a config, with evaluate's methods and taus in place of select's:
so temperature, block_n, the DSIR weights, the cascade's candidates and `selection.documents`
(each selection widened to the whole documents of its chunks) are what `colorfilter select`
would write. One method at a time, each selection packed as soon as it is made (PackedIds: ~2
bytes per chunk instead of 8); the label oracle (an evaluation-only reference) is streamed from
the score shards and widened the same way in documents mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from colorfilter.config import Config
from colorfilter.errors import ConfigError
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.oracle import LABEL_ORACLE, oracle_selections
from colorfilter.evaluation.packed import PackedIds
from colorfilter.evaluation.pool import Census
from colorfilter.io.location import Location
from colorfilter.pipeline.select import ScoreSource, plan_selections
from colorfilter.selection.documents import expand_to_documents

Selections = dict[tuple[str, float], PackedIds]  # (method, tau) -> chosen seq_ids


def method_selections(config: Config, cfg: EvaluateConfig, source: ScoreSource,
                      token_paths: Sequence[Location]) -> Selections:  # fmt: skip
    """Chosen seq_ids per (method, tau) of `evaluate.methods` (but the oracle), and of random
    at every tau (the random curve's runs at each tau's budget)."""
    methods = [m for m in cfg.methods if m != LABEL_ORACLE]
    methods += [] if "random" in methods else ["random"]
    taus = [float(tau) for tau in cfg.taus]
    selections: Selections = {}
    for method in methods:
        one = replace(config, selection=replace(config.selection, methods=[method], tau=taus))
        planned = plan_selections(one, token_paths, source)
        for name, tau, folder in list(planned):  # packed as they come: ~2 bytes per chunk
            selections[(name, float(tau))] = PackedIds.pack(planned.pop((name, tau, folder)))
    return selections


def oracle(config: Config, cfg: EvaluateConfig, census: Census, source: ScoreSource
           ) -> Selections:  # fmt: skip
    """The label oracle's selections: it reads the pool's `source` labels, as no method may."""
    if census.labels is None:
        raise ConfigError(
            f"evaluate.methods: {LABEL_ORACLE} needs the pool's `source` labels; the token "
            "shards have none (set data.source_field and rerun prepare)"
        )
    target = census.labels.mask(cfg.target_source)
    chosen = oracle_selections(census, source.shards, target, cfg.taus)
    if config.selection.documents:
        chosen = {tau: expand_to_documents(ids, census.paths) for tau, ids in chosen.items()}
    return {(LABEL_ORACLE, tau): PackedIds.pack(ids) for tau, ids in chosen.items()}


def overlap_with_color(cfg: EvaluateConfig, selections: Selections) -> dict[str, dict[str, float]]:
    """Per tau: the share of CoLoR's selected chunks that each other method also selects.

    Selections at one tau have the same size, so this is also the share of the method's own.
    Near 1, the two train on nearly the same data and their held-out losses must tie.
    """
    if "color" not in cfg.methods:
        return {}
    result = {}
    for tau in cfg.taus:
        color = selections[("color", float(tau))]
        result[f"{tau:g}"] = {
            m: color.shared(selections[(m, float(tau))]) / max(len(color), 1)
            for m in cfg.methods
            if m != "color"
        }
    return result
