"""The torch scorer reproduces HF's per-sequence loss exactly, in bounded memory."""

from __future__ import annotations

import numpy as np
import pytest

from colorfilter.scoring.base import build_scorer, mean_nll_from_sums
from colorfilter.scoring.config import ScoreConfig
from tests.scoring.conftest import padded, random_chunks, reference_losses, save_pair


def score_in_batches(scorer, chunks, batch_size):
    ids, n_tokens = padded(chunks)
    prior, cond = [], []
    for start in range(0, len(chunks), batch_size):
        p, c = scorer.score(ids[start : start + batch_size], n_tokens[start : start + batch_size])
        assert p.dtype == np.float32 and c.dtype == np.float32
        prior.append(p)
        cond.append(c)
    return np.concatenate(prior), np.concatenate(cond)


@pytest.fixture(scope="module")
def reference(model_pair):
    chunks = random_chunks(21)
    prior_dir, cond_dir = model_pair
    return chunks, reference_losses(prior_dir, chunks), reference_losses(cond_dir, chunks)


@pytest.mark.parametrize(("batch_size", "block_tokens"), [(1, 0), (4, 7), (21, 0), (21, 7)])
def test_losses_equal_hf_loss_one_sequence_at_a_time(
    model_pair, reference, batch_size, block_tokens
):
    chunks, prior_ref, cond_ref = reference
    cfg = ScoreConfig(batch_size=batch_size, logits_block_tokens=block_tokens)
    scorer = build_scorer("torch", *model_pair, cfg, device="cpu")
    prior, cond = score_in_batches(scorer, chunks, batch_size)
    np.testing.assert_allclose(prior, prior_ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(cond, cond_ref, rtol=0, atol=1e-5)
    assert not np.allclose(prior, cond, equal_nan=True)  # two different models really ran
    short = np.array([len(c) < 2 for c in chunks])
    assert short.any() and np.isnan(prior[short]).all() and np.isfinite(prior[~short]).all()


def test_olmo2_architecture_is_exact(tmp_path):
    chunks = random_chunks(6, seed=3)
    pair = save_pair(tmp_path, architecture="olmo2")
    scorer = build_scorer("torch", *pair, ScoreConfig(logits_block_tokens=5), device="cpu")
    prior, cond = scorer.score(*padded(chunks))
    np.testing.assert_allclose(prior, reference_losses(pair[0], chunks), atol=1e-5)
    np.testing.assert_allclose(cond, reference_losses(pair[1], chunks), atol=1e-5)


def test_reruns_are_bit_identical_and_batch_size_barely_matters(model_pair):
    chunks = random_chunks(16, seed=1)
    scorer = build_scorer("torch", *model_pair, ScoreConfig(), device="cpu")
    first = score_in_batches(scorer, chunks, 16)
    again = score_in_batches(scorer, chunks, 16)
    other = score_in_batches(scorer, chunks, 3)
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, atol=1e-5)


def test_pads_after_n_tokens_do_not_change_the_loss(model_pair):
    """No attention mask is passed: right pads must be invisible to earlier positions."""
    chunks = random_chunks(4, seed=2, short_every=1)
    ids, n_tokens = padded(chunks)
    scorer = build_scorer("torch", *model_pair, ScoreConfig(), device="cpu")
    base = scorer.score(ids, n_tokens)
    garbage = ids.copy()
    after_end = np.arange(ids.shape[1])[None, :] >= n_tokens[:, None]
    garbage[after_end] = np.nonzero(after_end)[1] % 50 + 1
    assert (garbage != ids).any()
    for clean, noisy in zip(base, scorer.score(garbage, n_tokens)):
        np.testing.assert_array_equal(clean, noisy)


def test_lm_head_never_sees_more_than_a_block_of_positions(model_pair):
    """The full [B, L, V] logits tensor is never built: each head call is one block."""
    cfg = ScoreConfig(logits_block_tokens=10)
    scorer = build_scorer("torch", *model_pair, cfg, device="cpu")
    rows_seen = []
    for model in scorer.models:
        model.get_output_embeddings().register_forward_hook(
            lambda _m, inputs, _out: rows_seen.append(inputs[0].shape[0])
        )
    ids, n_tokens = padded(random_chunks(8))
    scorer.score(ids, n_tokens)
    assert max(rows_seen) == 10 and sum(rows_seen) == 2 * 8 * (ids.shape[1] - 1)


def test_auto_block_size_fits_the_memory_budget():
    from colorfilter.scoring.torch_backend import LOGITS_BLOCK_BYTES, logits_block_tokens

    block = logits_block_tokens(ScoreConfig(), 50304, "cpu")
    assert block * 50304 * 4 <= LOGITS_BLOCK_BYTES["cpu"] and block >= 64
    assert logits_block_tokens(ScoreConfig(logits_block_tokens=99), 50304, "cpu") == 99


@pytest.mark.parametrize(
    ("precision", "weights", "autocast"),
    [("bf16", "bfloat16", "none"), ("fp32-autocast-bf16", "float32", "bfloat16")],
)
def test_bf16_precisions_give_close_losses(model_pair, reference, precision, weights, autocast):
    import torch

    chunks, prior_ref, _ = reference
    scorer = build_scorer("torch", *model_pair, ScoreConfig(precision=precision), device="cpu")
    assert scorer.precision.as_dict() == {
        "name": precision, "weights": weights, "autocast": autocast, "device": "cpu"
    }
    assert {p.dtype for p in scorer.models[0].parameters()} == {getattr(torch, weights)}
    prior, _ = scorer.score(*padded(chunks))
    assert prior.dtype == np.float32
    np.testing.assert_allclose(prior, prior_ref, atol=0.05)
    assert np.nanmax(np.abs(prior - prior_ref)) > 1e-6  # really ran in bf16, not fp32


def test_models_that_transform_logits_are_refused(tmp_path):
    """Gemma-2 softcaps its logits: scoring lm_head(hidden) would silently differ from .loss."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=0.5,
    )  # fmt: skip
    torch.manual_seed(0)
    for name in ("prior", "conditional"):
        Gemma2ForCausalLM(config).save_pretrained(tmp_path / name)
    with pytest.raises(ValueError, match="transforms its logits"):
        build_scorer("torch", tmp_path / "prior", tmp_path / "conditional", ScoreConfig(), "cpu")


def test_mean_nll_from_sums_marks_unscorable_rows():
    means = mean_nll_from_sums(np.array([6.0, 0.0, 0.0]), np.array([4, 1, 0]))
    assert means[0] == np.float32(2.0) and np.isnan(means[1:]).all()
