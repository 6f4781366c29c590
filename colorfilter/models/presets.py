"""Model presets built on transformers' own classes, so any HF tool (and vLLM) loads the result.

- `micro`: Llama, d32 x 2 layers (~25k non-embedding params): unit tests.
- `tiny`: Llama, d128 x 3 layers, 4 heads, MLP 512 (0.8M non-embedding params; 1.8M with a 4k
  vocab): the CPU demo.
- `mini`: Llama, d256 x 4 layers, 4 heads, MLP 1024 (4.2M non-embedding): the NOTES' CPU run;
  a better but ~3x slower demo.
- `olmo-150m`: the paper's prior, as `Olmo2ForCausalLM` (vLLM supports it): d_model 1024, 12
  layers, 16 heads, RoPE, QK-norm, no biases, untied embeddings, seq 512, ~151M non-embedding
  params. Differences from the paper's OLMo (v1) model: the MLP is SwiGLU with hidden size 2752
  (2/3 of 4096, which keeps the parameter count of the paper's GeLU MLP of 4096) instead of GeLU;
  norms are RMSNorm with weights in OLMo-2's "reordered" placement (on each block's output)
  instead of pre-norm non-parametric LayerNorm; QK-norm normalises the whole q/k projection.
  Pass `intermediate_size=4096` to get the paper's width (then ~201M non-embedding params).

The vocab size comes from the tokenizer (olmo-150m pads it to a multiple of 128 for speed; the
extra rows are never targets, so losses are unaffected).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "micro": {
        "architecture": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "tiny": {
        "architecture": "llama",
        "hidden_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "intermediate_size": 512,
    },
    "mini": {
        "architecture": "llama",
        "hidden_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "intermediate_size": 1024,
    },
    "olmo-150m": {
        "architecture": "olmo2",
        "hidden_size": 1024,
        "num_hidden_layers": 12,
        "num_attention_heads": 16,
        "intermediate_size": 2752,
        "rms_norm_eps": 1e-6,
        "vocab_multiple": 128,
    },
}

_COMMON: dict[str, Any] = {
    "attention_bias": False,
    "attention_dropout": 0.0,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
    "use_cache": False,
}


def preset_names() -> list[str]:
    """Names accepted by `build_model_config`."""
    return sorted(PRESETS)


def build_model_config(
    preset: str,
    vocab_size: int,
    seq_len: int,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
    **overrides: Any,
) -> Any:
    """A transformers config for `preset`; `overrides` set HF config fields or `vocab_multiple`."""
    from transformers import LlamaConfig, Olmo2Config

    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {preset_names()}")
    spec = {**_COMMON, **PRESETS[preset], **overrides}
    architecture = spec.pop("architecture")
    multiple = int(spec.pop("vocab_multiple", 1))
    spec["vocab_size"] = -(-vocab_size // multiple) * multiple
    spec.setdefault("max_position_embeddings", seq_len)
    spec.setdefault("num_key_value_heads", spec["num_attention_heads"])
    spec.update(pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=bos_token_id)
    if architecture == "llama":
        spec.setdefault("mlp_bias", False)
        return LlamaConfig(**spec)
    if architecture == "olmo2":
        return Olmo2Config(**spec)
    raise ValueError(f"preset {preset!r} names an unknown architecture {architecture!r}")


def build_model(
    preset: str, vocab_size: int, seq_len: int, seed: int | None = None, **config_kwargs: Any
) -> Any:
    """A freshly initialised fp32 causal LM for `preset` (seeded when `seed` is given).

    The pad id goes into the saved config only: as an embedding `padding_idx` it would zero and
    freeze that row, and here pad = eos, a real token between documents.
    """
    import torch
    from transformers import AutoModelForCausalLM

    pad_token_id = config_kwargs.pop("pad_token_id", None)
    config = build_model_config(preset, vocab_size, seq_len, **config_kwargs)
    if seed is not None:
        torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        config, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.config.pad_token_id = pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = pad_token_id
    return model


def count_parameters(model: Any) -> dict[str, int]:
    """Total, embedding (input table plus an untied output head) and non-embedding counts."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        embedding += head.weight.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def train_flops_per_token(config: Any, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (matmul params) + attention (PaLM's 12 * L * d * T)."""
    hidden = config.hidden_size
    layers = config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv_dim = config.num_key_value_heads * head_dim
    attention = hidden * (config.num_attention_heads * head_dim) * 2 + hidden * kv_dim * 2
    mlp = 3 * hidden * config.intermediate_size
    matmul_params = layers * (attention + mlp) + hidden * config.vocab_size
    return 6.0 * matmul_params + 12.0 * layers * hidden * seq_len
