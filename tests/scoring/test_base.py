"""The backend registry and the config: lazy imports, clear errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from colorfilter.errors import ConfigError, MissingExtraError
from colorfilter.scoring.base import PairScorer, build_scorer
from colorfilter.scoring.config import ScoreConfig


def test_unknown_backend_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown scoring backend"):
        build_scorer("onnx", tmp_path, tmp_path, ScoreConfig())


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_missing_vllm_says_which_extra_to_install(tmp_path):
    with pytest.raises(MissingExtraError, match=r"colorfilter\[vllm\]"):
        build_scorer("vllm", tmp_path, tmp_path, ScoreConfig(backend="vllm"))


def test_config_and_registry_import_no_heavy_modules():
    code = (
        "import sys, colorfilter.scoring.config, colorfilter.scoring.base;"
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_validate_reports_bad_values():
    assert ScoreConfig().validate() == []
    problems = ScoreConfig(backend="onnx", precision="int8", batch_size=0).validate()
    assert len(problems) == 3
    problems = ScoreConfig(backend="vllm", precision="fp32-autocast-bf16").validate()
    assert problems == ["score.precision = 'fp32-autocast-bf16' needs the torch backend"]


def test_torch_scorer_satisfies_the_protocol(model_pair):
    assert isinstance(build_scorer("torch", *model_pair, ScoreConfig(), "cpu"), PairScorer)
