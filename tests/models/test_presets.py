"""Model presets: the paper's prior shape, and configs any HF tool can load."""

from __future__ import annotations

import pytest

from colorfilter.models.presets import (
    build_model,
    build_model_config,
    count_parameters,
    preset_names,
    train_flops_per_token,
)


def _meta_model(config):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def test_olmo_150m_has_the_papers_shape():
    config = build_model_config("olmo-150m", vocab_size=50280, seq_len=512)
    model = _meta_model(config)
    assert type(model).__name__ == "Olmo2ForCausalLM"
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (
        1024,
        12,
        16,
    )
    assert config.vocab_size == 50304  # padded to a multiple of 128
    assert config.max_position_embeddings == 512
    counts = count_parameters(model)
    assert 148e6 < counts["non_embedding"] < 155e6  # "150M non-embedding parameters"
    names = [name for name, _ in model.named_parameters()]
    assert not [n for n in names if n.endswith(".bias")]
    assert any("q_norm" in n for n in names) and any("k_norm" in n for n in names)
    assert model.lm_head.weight is not model.get_input_embeddings().weight


def test_overrides_and_token_ids_reach_the_config():
    config = build_model_config(
        "tiny",
        4096,
        128,
        pad_token_id=0,
        eos_token_id=0,
        intermediate_size=384,
        num_hidden_layers=2,
    )
    assert (config.intermediate_size, config.num_hidden_layers) == (384, 2)
    assert (config.vocab_size, config.pad_token_id, config.eos_token_id) == (4096, 0, 0)
    assert config.tie_word_embeddings is False


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model_config("olmo-7b", 100, 16)


def test_small_presets_build_and_count():
    assert {"micro", "tiny", "mini", "olmo-150m"} <= set(preset_names())
    micro = build_model("micro", vocab_size=1024, seq_len=64, seed=0)
    counts = count_parameters(micro)
    assert counts["total"] < 150_000 and counts["embedding"] == 2 * 1024 * 32
    same = build_model("micro", vocab_size=1024, seq_len=64, seed=0)
    import torch

    assert all(
        torch.equal(a, b) for a, b in zip(micro.parameters(), same.parameters(), strict=True)
    )


def test_flops_per_token_is_six_n_plus_attention():
    config = build_model_config("olmo-150m", 50280, 512)
    model = _meta_model(config)
    matmul_params = count_parameters(model)["total"] - config.vocab_size * config.hidden_size
    matmul_params -= sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    attention = 12 * 12 * 1024 * 512
    assert train_flops_per_token(config, 512) == pytest.approx(6 * matmul_params + attention)
