"""The two stages end to end on CPU: learning, checkpoints, resume, skip, adopting a checkpoint."""

from __future__ import annotations

import csv
import dataclasses
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from colorfilter.errors import ConfigError
from colorfilter.models.checkpoints import stage_hash
from colorfilter.models.losses import evaluate_loss
from colorfilter.models.presets import build_model
from colorfilter.models.stages import train_conditional, train_prior

from .synthetic import (
    SEQ_LEN,
    VOCAB,
    Killed,
    build_tokenizer,
    job,
    micro_conditional_config,
    micro_prior_config,
)


def _kill_at(step_to_die: int):
    def hook(step: int) -> None:
        if step == step_to_die:
            raise Killed(step)

    return hook


def _curve(path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(handle)]


def test_prior_training_lowers_held_out_loss(trained_prior, corpus):
    prior_dir, stats = trained_prior
    untrained = build_model("micro", VOCAB, SEQ_LEN, seed=0)
    before = evaluate_loss(untrained, corpus.pool_eval, SEQ_LEN, pad_id=0, device="cpu")
    assert stats["eval_loss"] < before - 0.5
    rows = _curve(prior_dir / "loss_curve.csv")
    assert len(rows) == stats["steps"] == 8
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]) - 0.5
    budget, batch = micro_prior_config().token_budget, micro_prior_config().batch_size
    assert stats["tokens_seen"] == int(rows[-1]["tokens_seen"])
    assert budget - batch * SEQ_LEN < stats["tokens_seen"] <= budget  # whole batches only
    assert (prior_dir / "loss_curve.png").stat().st_size > 1000


def test_saved_prior_reloads_as_a_standard_checkpoint(trained_prior, corpus):
    prior_dir, stats = trained_prior
    model = AutoModelForCausalLM.from_pretrained(prior_dir)
    tokenizer = AutoTokenizer.from_pretrained(prior_dir)
    assert type(model).__name__ == "LlamaForCausalLM" and len(tokenizer) == VOCAB
    assert tokenizer.pad_token_id == model.config.pad_token_id == 0
    reloaded = evaluate_loss(model, corpus.pool_eval, SEQ_LEN, pad_id=0, device="cpu")
    assert reloaded == pytest.approx(stats["eval_loss"], rel=1e-6)


def test_conditional_predicts_downstream_better_than_prior(trained_prior, corpus, tmp_path):
    prior_dir, _ = trained_prior
    stats = train_conditional(
        job(corpus.train, tmp_path / "conditional", corpus.tokenizer, eval_data=corpus.eval),
        micro_conditional_config(),
        prior_dir,
    )
    assert stats["eval_loss"] < stats["prior_eval_loss"] - 0.3
    assert stats["steps"] == 2 * 32 // 8  # two epochs of 32 chunks, batch 8
    # eos doubles as pad but is a real token: its embedding row must train, not stay frozen.
    name = "model.embed_tokens.weight"
    prior_eos = load_file(prior_dir / "model.safetensors")[name][0]
    conditional_eos = load_file(tmp_path / "conditional" / "model.safetensors")[name][0]
    assert prior_eos.abs().sum() > 0 and not torch.equal(prior_eos, conditional_eos)


def test_resume_after_kill_gives_the_uninterrupted_weights(corpus, tmp_path):
    cfg = micro_prior_config(checkpoint_every=2, keep_checkpoint=True)
    train_prior(job(corpus.pool, tmp_path / "whole", corpus.tokenizer, seed=5), cfg)
    killed = job(corpus.pool, tmp_path / "killed", corpus.tokenizer, seed=5)
    with pytest.raises(Killed):
        train_prior(dataclasses.replace(killed, on_step=_kill_at(5)), cfg)
    assert not (tmp_path / "killed" / "train_stats.json").exists()
    stats = train_prior(killed, cfg)
    assert stats["resumed_from_steps"] == [4]
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    resumed = load_file(tmp_path / "killed" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    timeless = ("elapsed_s",)
    assert _curve(tmp_path / "whole" / "loss_curve.csv", timeless) == _curve(
        tmp_path / "killed" / "loss_curve.csv", timeless
    )
    # The kept final checkpoint and the saved model give the same logits.
    state = torch.load(tmp_path / "whole" / "checkpoint" / "step-00000008" / "state.pt",
                       weights_only=False)
    from_state = build_model("micro", VOCAB, SEQ_LEN)
    from_state.load_state_dict(state["model"])
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "whole")
    ids = torch.randint(1, VOCAB, (2, SEQ_LEN), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(from_state(input_ids=ids).logits, reloaded(input_ids=ids).logits)


def test_finished_stage_is_skipped_and_runtime_fields_do_not_retrain(trained_prior, corpus):
    prior_dir, stats = trained_prior
    again = train_prior(job(corpus.pool, prior_dir, corpus.tokenizer, on_step=_kill_at(1)),
                        micro_prior_config())  # fmt: skip
    assert again == stats

    def hash_of(cfg, seed=0):
        return stage_hash("prior", cfg, SEQ_LEN, seed, {"pool": corpus.pool})

    base = hash_of(micro_prior_config())
    assert hash_of(micro_prior_config(progress=True, eval_batch_size=3)) == base
    assert hash_of(micro_prior_config(lr=2e-3)) != base
    assert hash_of(micro_prior_config(), seed=1) != base


def test_prior_can_be_adopted_from_a_checkpoint(trained_prior, corpus, tmp_path):
    prior_dir, stats = trained_prior
    adopted = train_prior(
        job(corpus.pool, tmp_path / "adopted", corpus.tokenizer, eval_data=corpus.pool_eval),
        micro_prior_config(init_from=str(prior_dir)),
    )
    assert adopted["steps"] == 0 and adopted["init_from"] == str(prior_dir)
    assert adopted["eval_loss"] == pytest.approx(stats["eval_loss"], rel=1e-6)
    original = load_file(prior_dir / "model.safetensors")
    copied = load_file(tmp_path / "adopted" / "model.safetensors")
    assert all(torch.equal(original[name], copied[name]) for name in original)


def test_checkpoint_with_another_tokenizer_is_refused(trained_prior, corpus, tmp_path):
    prior_dir, _ = trained_prior
    other = tmp_path / "other"
    shutil.copytree(prior_dir, other)
    build_tokenizer(other, vocab_size=VOCAB - 8)
    with pytest.raises(ConfigError, match="tokenizer"):
        train_prior(job(corpus.pool, tmp_path / "adopted", corpus.tokenizer),
                    micro_prior_config(init_from=str(other)))  # fmt: skip


def test_too_little_data_for_one_batch_is_a_config_error(corpus, tmp_path):
    with pytest.raises(ConfigError, match="batch_size"):
        train_prior(job(corpus.pool, tmp_path / "prior", corpus.tokenizer),
                    micro_prior_config(token_budget=SEQ_LEN * 3))  # fmt: skip
