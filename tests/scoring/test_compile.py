"""torch.compile: static shapes (short batches padded, not recompiled) and unchanged losses."""

from __future__ import annotations

import numpy as np
import pytest

from colorfilter.scoring.base import build_scorer
from colorfilter.scoring.config import ScoreConfig
from tests.scoring.conftest import padded, random_chunks


def compare_compiled_with_eager(model_pair, device: str, precision: str, atol: float) -> None:
    chunks = random_chunks(7, seed=9)
    ids, n_tokens = padded(chunks)
    eager = build_scorer("torch", *model_pair, ScoreConfig(precision=precision), device=device)
    cfg = ScoreConfig(precision=precision, batch_size=5, compile=True, logits_block_tokens=16)
    compiled = build_scorer("torch", *model_pair, cfg, device=device)
    want = eager.score(ids, n_tokens)
    got = [
        np.concatenate(parts)
        for parts in zip(
            compiled.score(ids[:5], n_tokens[:5]), compiled.score(ids[5:], n_tokens[5:])
        )
    ]
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, atol=atol)


@pytest.mark.slow  # ~50 s on 2 CPU cores: inductor compiles C++ kernels
def test_compiled_cpu_scorer_matches_eager(model_pair):
    compare_compiled_with_eager(model_pair, "cpu", "fp32", atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp32-autocast-bf16"])
def test_compiled_gpu_scorer_matches_eager(model_pair, precision):
    compare_compiled_with_eager(model_pair, "cuda", precision, atol=2e-2)
