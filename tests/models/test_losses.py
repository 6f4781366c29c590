"""The masked token loss, held-out evaluation, and the learning-rate schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from colorfilter.io.token_shards import iter_padded_batches, list_shards
from colorfilter.models.losses import evaluate_loss, token_losses
from colorfilter.models.presets import build_model
from colorfilter.models.training import lr_factor

from .synthetic import SEQ_LEN, VOCAB


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (4, 16), generator=generator)
    lengths = torch.tensor([16, 9, 2, 1])
    ids[torch.arange(16)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


def test_pads_carry_no_loss_and_do_not_change_real_positions():
    model = build_model("micro", VOCAB, 32, seed=0)
    ids, lengths = _batch()
    with torch.no_grad():
        nll, _, count = token_losses(model(input_ids=ids).logits, ids, lengths)
        other_pads = ids.clone()
        other_pads[torch.arange(16)[None, :] >= lengths[:, None]] = 5
        nll_other, _, _ = token_losses(model(input_ids=other_pads).logits, other_pads, lengths)
        labels = ids.clone()
        labels[torch.arange(16)[None, :] >= lengths[:, None]] = -100
        reference = model(input_ids=ids, labels=labels).loss  # HF's own masked mean
    assert int(count) == 15 + 8 + 1 + 0
    assert float(nll_other) == pytest.approx(float(nll), rel=1e-5)
    assert float(nll / count) == pytest.approx(float(reference), rel=1e-5)


def test_z_loss_term_is_log_partition_squared():
    logits = torch.zeros(1, 3, 8)
    ids = torch.zeros(1, 3, dtype=torch.long)
    nll, z_sum, count = token_losses(logits, ids, torch.tensor([3]))
    assert float(count) == 2
    assert float(nll) == pytest.approx(2 * math.log(8))
    assert float(z_sum) == pytest.approx(2 * math.log(8) ** 2)


def test_evaluate_loss_is_token_weighted_over_shards(corpus):
    model = build_model("micro", VOCAB, SEQ_LEN, seed=1)
    paths = list_shards(corpus.train)
    total, count = 0.0, 0
    with torch.no_grad():
        for _, ids, lengths in iter_padded_batches(paths, 5, SEQ_LEN, 0):
            ids_t = torch.from_numpy(ids)
            nll, _, n = token_losses(
                model(input_ids=ids_t).logits, ids_t, torch.from_numpy(lengths.astype(np.int64))
            )
            total, count = total + float(nll), count + int(n)
    loss = evaluate_loss(model, corpus.train, SEQ_LEN, pad_id=0, batch_size=7, device="cpu")
    assert loss == pytest.approx(total / count, rel=1e-5)
    first = evaluate_loss(model, paths, SEQ_LEN, 0, batch_size=3, device="cpu", max_chunks=4)
    assert first != pytest.approx(loss)


def test_schedule_warms_up_then_anneals_to_the_floor_on_the_last_step():
    total, warmup = 50, 5
    factors = [lr_factor(step, total, warmup, 0.1) for step in range(total)]
    assert factors[:warmup] == sorted(factors[:warmup]) and factors[warmup - 1] == 1.0
    assert all(a >= b for a, b in zip(factors[warmup:], factors[warmup + 1 :], strict=False))
    assert factors[-1] == pytest.approx(0.1)
    assert lr_factor(0, 1, 0, 0.1) == pytest.approx(1.0)
