"""Checkpoints as commit units: verified by sha256 before a resume, never overwritten in place.

Each case damages what a killed run left (the checkpoint's bytes at the same size, its size,
its record) or kills the run between a new checkpoint and its record, and checks that the rerun
resumes from the newest intact checkpoint (or from scratch), says so in one line, and ends with
the weights of an uninterrupted run. Run folders of earlier versions (one `checkpoint/state.pt`
with a size-only record) still resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import colorfilter.models.resume as resume
from colorfilter.io.commit import commit_unit, read_unit
from colorfilter.io.storage import file_sha256
from colorfilter.models.resume import CHECKPOINT_FILE, RECORD_NAME, candidates
from colorfilter.models.stages import train_prior

from .synthetic import Killed, alter, die_before_checkpoint_record, job, micro_prior_config
from .test_stages import _kill_at

CFG = micro_prior_config(checkpoint_every=2, keep_checkpoint=True)  # 8 steps
SEED = 5


@pytest.fixture(scope="module")
def whole(corpus, tmp_path_factory) -> dict[str, torch.Tensor]:
    """The weights of the run that was never interrupted."""
    out = tmp_path_factory.mktemp("whole") / "prior"
    resume_job = job(corpus.pool, out, corpus.tokenizer, seed=SEED)
    train_prior(resume_job, CFG)
    return load_file(out / "model.safetensors")


def killed_run(corpus, out: Path, at: int, keep_older: bool, monkeypatch) -> Path:
    """Train until step `at`, then die; `keep_older`: every checkpoint stays committed (as when
    a newer one is damaged after its older ones were kept). Returns the checkpoint folder."""
    if keep_older:
        monkeypatch.setattr(resume, "prune_checkpoints", lambda folder, keep: None)
    with pytest.raises(Killed):
        train_prior(job(corpus.pool, out, corpus.tokenizer, seed=SEED, on_step=_kill_at(at)), CFG)
    monkeypatch.undo()
    return out / "checkpoint"


def rerun(corpus, out: Path, caplog) -> tuple[dict, list[str]]:
    """(stats, the checkpoint lines logged) of the rerun."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="colorfilter.models.resume"):
        stats = train_prior(job(corpus.pool, out, corpus.tokenizer, seed=SEED), CFG)
    return stats, [r.getMessage() for r in caplog.records if r.name == resume.log.name]


def assert_same_weights(out: Path, whole: dict[str, torch.Tensor]) -> None:
    resumed = load_file(out / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in resumed.values())
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 100])


def cut_record(path: Path) -> None:
    path.write_text(path.read_text()[:40])


DAMAGE = {  # what is damaged -> (how, the reason the line gives)
    "bytes": (lambda unit: alter(unit / CHECKPOINT_FILE), "is damaged (state.pt: sha256"),
    "size": (lambda unit: truncate(unit / CHECKPOINT_FILE), "its record says"),
    "record": (lambda unit: cut_record(unit / RECORD_NAME), "its record does not parse"),
}


def test_each_checkpoint_is_its_own_unit_with_a_sha256_and_older_ones_go(corpus, tmp_path,
                                                                          monkeypatch):  # fmt: skip
    folder = killed_run(corpus, tmp_path / "prior", 5, keep_older=False, monkeypatch=monkeypatch)
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000004"]
    unit = read_unit(folder / "step-00000004" / RECORD_NAME)
    assert unit.meta["step"] == 4 and set(unit.objects) == {CHECKPOINT_FILE}
    written = unit.objects[CHECKPOINT_FILE]
    assert written["size"] == (folder / "step-00000004" / CHECKPOINT_FILE).stat().st_size
    digest = hashlib.sha256((folder / "step-00000004" / CHECKPOINT_FILE).read_bytes()).hexdigest()
    assert written["sha256"] == digest  # hashed as written, equal to the bytes on disk


@pytest.mark.parametrize("what", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_skipped_for_the_older_intact_one(
    corpus, tmp_path, monkeypatch, caplog, whole, what
):
    out = tmp_path / "prior"
    folder = killed_run(corpus, out, 5, keep_older=True, monkeypatch=monkeypatch)
    assert [c.step for c in candidates(folder)] == [4, 2]
    damage, reason = DAMAGE[what]
    damage(folder / "step-00000004")
    stats, lines = rerun(corpus, out, caplog)
    assert stats["resumed_from_steps"] == [2]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"checkpoint step 4 in {folder / 'step-00000004'} ")
    assert reason in lines[0] and lines[0].endswith(": resuming from step 2")
    assert_same_weights(out, whole)
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000008"]  # the damaged one gone


def test_the_only_checkpoint_damaged_trains_from_scratch(corpus, tmp_path, monkeypatch, caplog,
                                                         whole):  # fmt: skip
    out = tmp_path / "prior"
    folder = killed_run(corpus, out, 5, keep_older=False, monkeypatch=monkeypatch)
    alter(folder / "step-00000004" / CHECKPOINT_FILE)
    stats, lines = rerun(corpus, out, caplog)
    assert stats["resumed_from_steps"] == []  # never loaded: no NaN weights
    assert len(lines) == 1 and "is damaged (state.pt: sha256" in lines[0]
    assert lines[0].endswith(": training from scratch")
    assert_same_weights(out, whole)


def test_a_kill_between_the_new_checkpoint_and_its_record_keeps_the_older(
    corpus, tmp_path, monkeypatch, caplog, whole
):
    out = tmp_path / "prior"
    die_before_checkpoint_record(monkeypatch, 4)
    with pytest.raises(Killed):
            train_prior(job(corpus.pool, out, corpus.tokenizer, seed=SEED), CFG)
    monkeypatch.undo()
    folder = out / "checkpoint"
    assert (folder / "step-00000004" / CHECKPOINT_FILE).exists()  # written whole, no record
    assert (folder / "step-00000002" / RECORD_NAME).exists()  # the older one still there
    stats, lines = rerun(corpus, out, caplog)
    assert stats["resumed_from_steps"] == [2]
    assert len(lines) == 1 and "step 4" in lines[0] and "no record" in lines[0], lines
    assert_same_weights(out, whole)


def as_earlier_version(folder: Path) -> None:
    """Turn the step-4 checkpoint unit into what earlier versions wrote: checkpoint/state.pt
    beside a record of its size only."""
    unit = folder / "step-00000004"
    meta = dict(read_unit(unit / RECORD_NAME).meta)
    shutil.move(unit / CHECKPOINT_FILE, folder / CHECKPOINT_FILE)
    shutil.rmtree(unit)
    commit_unit(folder / RECORD_NAME, [folder / CHECKPOINT_FILE], meta)  # sizes only, as then


def test_an_earlier_versions_single_checkpoint_still_resumes(corpus, tmp_path, monkeypatch,
                                                             caplog, whole):  # fmt: skip
    out = tmp_path / "prior"
    folder = killed_run(corpus, out, 5, keep_older=False, monkeypatch=monkeypatch)
    as_earlier_version(folder)
    assert "sha256" not in read_unit(folder / RECORD_NAME).objects[CHECKPOINT_FILE]
    stats, lines = rerun(corpus, out, caplog)
    assert stats["resumed_from_steps"] == [4] and lines == []
    assert_same_weights(out, whole)
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000008"]  # the old one pruned


def test_an_earlier_versions_checkpoint_cut_short_is_not_loaded(corpus, tmp_path, monkeypatch,
                                                                caplog):  # fmt: skip
    out = tmp_path / "prior"
    folder = killed_run(corpus, out, 5, keep_older=False, monkeypatch=monkeypatch)
    as_earlier_version(folder)
    truncate(folder / CHECKPOINT_FILE)
    stats, lines = rerun(corpus, out, caplog)
    assert stats["resumed_from_steps"] == []
    assert len(lines) == 1 and lines[0].startswith(f"checkpoint step 4 in {folder} is damaged")


def test_a_checkpoint_of_another_config_is_not_resumed(corpus, tmp_path, monkeypatch, caplog):
    out = tmp_path / "prior"
    killed_run(corpus, out, 5, keep_older=False, monkeypatch=monkeypatch)
    other = dataclasses.replace(CFG, lr=CFG.lr / 2)
    with caplog.at_level(logging.WARNING, logger="colorfilter.models.resume"):
        stats = train_prior(job(corpus.pool, out, corpus.tokenizer, seed=SEED), other)
    assert stats["resumed_from_steps"] == []
    assert "was written for another config: training from scratch" in caplog.text


@pytest.mark.parametrize("where", ["local", "s3"])
def test_big_tensors_are_hashed_as_written_and_restored(where, tmp_path, request):
    """Tensors over the overlap size are hashed on the helper thread while they are written:
    the record's sha256 is the file's, on disk and on a bucket, and a resume restores them."""
    folder = (request.getfixturevalue("s3_bucket").join("ckpt") if where == "s3"
              else tmp_path / "ckpt")  # fmt: skip
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 768), torch.nn.Linear(768, 16))
    assert model[0].weight.numel() * 4 > resume._HashingWriter.OVERLAP_BYTES
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 1024)).sum().backward()
    optimizer.step()
    for step in (3, 6):
        record = resume.save_checkpoint(folder, model, optimizer, resume.TrainState(step), "h")
    unit = read_unit(record)
    state_file = unit.base.join(CHECKPOINT_FILE)
    assert unit.objects[CHECKPOINT_FILE]["sha256"] == file_sha256(state_file)
    assert [c.step for c in candidates(folder)] == [6]  # step 3 removed once 6 was committed
    fresh = torch.nn.Sequential(torch.nn.Linear(1024, 768), torch.nn.Linear(768, 16))
    state = resume.resume_checkpoint(folder, fresh, torch.optim.AdamW(fresh.parameters()), "h")
    assert state.step == 6
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 fresh.state_dict().values()))  # fmt: skip
