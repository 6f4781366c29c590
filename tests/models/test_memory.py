"""The training memory model against what torch really allocates, on CPU with reduced presets."""

from __future__ import annotations

import pytest

from colorfilter.config import load_config
from colorfilter.models.config import PriorConfig
from colorfilter.models.losses import token_losses
from colorfilter.models.memory import (
    GIB,
    forward_fixed_bytes,
    model_shape,
    peak_bytes,
    plan_micro_batch,
    saved_bytes_per_token,
    static_bytes,
)
from colorfilter.models.plan import Hardware, plan_stage, warn_if_slow_on_cpu
from colorfilter.models.presets import build_model

# Shapes the coefficients were not fitted on (odd widths, 3 layers, GQA-free, padded vocab).
REDUCED = {
    "olmo-150m": dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=6,
                      intermediate_size=264),
    "tiny": dict(hidden_size=80, num_hidden_layers=3, num_attention_heads=5, intermediate_size=200),
}  # fmt: skip
VOCAB, SEQ_LEN, BATCH = 700, 48, 3


def measured_saved_bytes(model, ids, amp: bool) -> int:
    """Bytes of the distinct non-parameter storages autograd saves for backward."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = model(input_ids=ids).logits
        token_losses(logits, ids, torch.full((len(ids),), ids.shape[1]))
    return sum(saved.values())


@pytest.mark.parametrize("preset", sorted(REDUCED))
@pytest.mark.parametrize("amp", [True, False], ids=["bf16-autocast", "fp32"])
def test_saved_activations_match_the_model_within_3_percent(preset, amp):
    import torch

    torch.manual_seed(0)
    model = build_model(preset, VOCAB, SEQ_LEN, seed=0, **REDUCED[preset])
    ids = torch.randint(0, VOCAB, (BATCH, SEQ_LEN))
    measured = measured_saved_bytes(model, ids, amp)
    shape = model_shape(model.config)
    planned = BATCH * SEQ_LEN * saved_bytes_per_token(shape, amp) + forward_fixed_bytes(shape, amp)
    assert planned == pytest.approx(measured, rel=0.03)


def test_weights_grads_and_adamw_state_match_the_static_term():
    import torch

    from colorfilter.models.training import build_optimizer

    model = build_model("olmo-150m", VOCAB, SEQ_LEN, seed=0, **REDUCED["olmo-150m"])
    optimizer = build_optimizer(model, PriorConfig(), torch.device("cpu"))
    ids = torch.randint(0, VOCAB, (2, SEQ_LEN))
    nll, _, _ = token_losses(model(input_ids=ids).logits, ids, torch.full((2,), SEQ_LEN))
    nll.backward()
    optimizer.step()
    tensors = [*model.parameters(), *(p.grad for p in model.parameters())]
    tensors += [t for state in optimizer.state.values() for t in state.values() if t.dim() > 0]
    real = sum(t.numel() * t.element_size() for t in tensors)
    shape = model_shape(model.config)
    assert shape.params == sum(p.numel() for p in model.parameters())
    assert static_bytes(shape, distributed=False) == real
    assert static_bytes(shape, distributed=True) == real * 5 // 4  # + DDP's fp32 buckets


def olmo_150m_shape():
    from colorfilter.models.presets import build_model_config

    return model_shape(build_model_config("olmo-150m", 50280, 512))


@pytest.mark.parametrize("gpu_gb", [40, 80])
@pytest.mark.parametrize("world_size", [1, 8])
def test_the_150m_prior_is_split_into_micro_batches_that_fit(gpu_gb, world_size):
    shape = olmo_150m_shape()
    plan = plan_micro_batch(shape, 512, 256, world_size, True, "cuda", gpu_gb)
    assert plan.source == "planned" and plan.fits
    assert plan.micro_batch * plan.accumulation == plan.local_batch == 256 // world_size
    if plan.micro_batch < plan.local_batch:  # the next divisor up would not fit
        bigger = next(d for d in range(plan.micro_batch + 1, 257) if plan.local_batch % d == 0)
        assert peak_bytes(shape, 512, bigger, True, world_size > 1) > plan.budget_gb * GIB
    whole = peak_bytes(shape, 512, 256, True, False) / GIB
    assert whole > 150  # the point: the whole batch at once cannot fit any GPU


def test_a_configured_micro_batch_is_kept_and_cpu_keeps_the_whole_small_batch():
    shape = olmo_150m_shape()
    assert plan_micro_batch(shape, 512, 256, 1, True, "cuda", 80, configured=16).micro_batch == 16
    tiny = model_shape(build_model("tiny", 4096, 128).config)
    cpu = plan_micro_batch(tiny, 128, 32, 1, False, "cpu", 8.0)
    assert (cpu.micro_batch, cpu.accumulation, cpu.source) == (32, 1, "whole batch")
    big_on_cpu = plan_micro_batch(shape, 512, 256, 1, False, "cpu", 24.0)
    assert big_on_cpu.source == "planned" and big_on_cpu.micro_batch < 256 and big_on_cpu.fits


def test_cpu_fallback_for_a_long_run_warns_with_the_estimate(caplog):
    from colorfilter.models.presets import build_model_config

    config = build_model_config("olmo-150m", 50280, 512)
    cfg = PriorConfig()
    plan = plan_stage("prior", config, cfg, 512, 3_100_000_000 // 512, Hardware("cpu", threads=16))
    assert plan.estimated_s > 30 * 86400  # a month of 16 threads
    with caplog.at_level("WARNING"):
        assert warn_if_slow_on_cpu(plan, "auto")
    assert "no GPU found" in caplog.text and "days" in caplog.text
    assert not warn_if_slow_on_cpu(plan, "cpu")  # asked for the CPU: no warning
    gpu = plan_stage("prior", config, cfg, 512, 3_100_000_000 // 512, Hardware("cuda", 8))
    assert gpu.estimated_s < 3600 and gpu.micro.fits


def test_plan_command_prints_both_stages_of_the_150m_configs(capsys):
    from colorfilter.cli import app

    with pytest.raises(SystemExit) as done:
        app(["plan", "configs/c4_books_150m.yaml", "--vocab-size", "50280",
             "--gpu-memory-gb", "40", "--json"])  # fmt: skip
    assert done.value.code in (0, None)
    import json

    plans = json.loads(capsys.readouterr().out)
    assert [p["stage"] for p in plans] == ["prior", "conditional"]
    assert all(p["micro"]["fits"] and p["device_memory_gb"] == 40 for p in plans)
    assert plans[0]["steps"] == 3_100_000_000 // 512 // 256
    assert load_config("configs/c4_books_150m.yaml").prior.micro_batch_size == 0  # planned
