"""Fixed sets of names that a config is checked against when it loads.

Standard library only (the CLI imports the config at start-up, before numpy or torch): the
modules that implement these names keep their own registries, and tests/test_user_errors.py
checks that the two agree.
"""

from __future__ import annotations

import re

# colorfilter.selection.METHODS
SELECTION_METHODS = (
    "color",
    "color_batchwise",
    "color_softmax",
    "random",
    "conditional_only",
    "prior_only",
    "dsir",
    "color_distilled",  # colorfilter.distill: top N/tau by the cheap scorer alone
)
DISTILLED = "color_distilled"  # top N/tau by the cheap score alone
# Methods that rank no LM score: a run that never LM-scores its pool can still write them.
LM_FREE_METHODS = frozenset({DISTILLED, "random", "dsir"})
LABEL_ORACLE = "label_oracle"  # colorfilter.evaluation.oracle: an evaluation-only reference
EVALUATE_METHODS = (*SELECTION_METHODS, LABEL_ORACLE)
EXECUTORS = ("ray", "local")
DATA_SAMPLINGS = ("chunks", "blocks")  # prior.data_sampling: colorfilter.models.data / .blocks
DATA_FORMATS = ("auto", "jsonl", "parquet", "hf")
DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
DEVICES = "auto, cpu, cuda or cuda:N"
