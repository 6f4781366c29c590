"""One small real run folder for the API and integration tests, built once per session with
`colorfilter.run` (prepare, both trainings on micro models, score, select), in-process."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_c4_inputs
from tests.pipeline.test_prepare import make_config

STAGES = "prepare,train-prior,train-conditional,score,select"
SETTINGS = {
    "seq_len": 64,
    "prepare.rows_per_shard": 48,  # a few token shards
    "prior.preset": "micro",
    "prior.token_budget": 64 * 64,
    "prior.batch_size": 8,
    "prior.lr": 0.01,
    "prior.warmup_steps": 2,
    "prior.checkpoint_every": 0,
    "prior.progress": "false",
    "prior.torch_threads": 1,
    "conditional.batch_size": 4,
    "conditional.max_steps": 4,
    "conditional.lr": 0.01,
    "conditional.warmup_steps": 1,
    "conditional.checkpoint_every": 0,
    "conditional.progress": "false",
    "conditional.torch_threads": 1,
    "score.batch_size": 16,
    "score.torch_threads": 1,
    "selection.tau": "[4]",
    "selection.output.rows_per_shard": 16,
}
_BUILT: dict[str, Path] = {}


def run_config(root: Path, tokenizer_dir: Path, inputs: dict, out: str = "run"):
    return make_config(root, tokenizer_dir, inputs, out=out, **SETTINGS)


def shared_run(tmp_path_factory, tokenizer_dir: Path) -> Path:
    """The run folder (built on first use in this session)."""
    if "run" not in _BUILT:
        import colorfilter as cf

        root = tmp_path_factory.mktemp("api-run")
        config = run_config(root, tokenizer_dir, write_c4_inputs(root))
        cf.run(config, STAGES)
        _BUILT["run"] = config.output_path
    return _BUILT["run"]
