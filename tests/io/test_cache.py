"""Node-local copies of remote folders: fetched once per node, even with concurrent actors."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest

from colorfilter.io import cache as cache_module
from colorfilter.io import storage
from colorfilter.io.cache import MARKER, fetch, local_copy


@pytest.fixture
def model_folder(s3_bucket):
    """A tokenizer-like folder on the bucket: a few small files, one in a subfolder."""
    folder = s3_bucket.join("models", "tokenizer")
    files = {"tokenizer.json": b'{"model": "bpe"}' * 50, "config.json": b"{}",
             "sub/vocab.txt": b"a\nb\nc\n"}
    for name, data in files.items():
        storage.write_bytes(folder.join(name), data)
    return folder, files


def _contents(path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != MARKER}


def test_local_paths_are_used_in_place(tmp_path):
    assert local_copy(str(tmp_path)) == tmp_path
    assert fetch(f"file://{tmp_path}") == (tmp_path, False)


def test_remote_folder_fetched_once_then_refetched_when_it_changes(model_folder, tmp_path):
    folder, files = model_folder
    path, fetched = fetch(folder, cache_dir=tmp_path / "cache")
    assert fetched and _contents(path) == files
    again, fetched_again = fetch(folder, cache_dir=tmp_path / "cache")
    assert again == path and not fetched_again
    storage.write_bytes(folder.join("config.json"), b'{"changed": true}')
    changed, fetched_changed = fetch(folder, cache_dir=tmp_path / "cache")
    assert fetched_changed and changed != path
    assert _contents(changed)["config.json"] == b'{"changed": true}'


def test_single_object_and_incomplete_copies(model_folder, tmp_path):
    folder, files = model_folder
    path = local_copy(folder.join("tokenizer.json"), cache_dir=tmp_path / "c")
    assert path.name == "tokenizer.json" and path.read_bytes() == files["tokenizer.json"]
    whole, _ = fetch(folder, cache_dir=tmp_path / "c")
    (whole / MARKER).unlink()  # as if killed before the copy was complete
    again, fetched = fetch(folder, cache_dir=tmp_path / "c")
    assert fetched and again == whole and _contents(again) == files
    with pytest.raises(FileNotFoundError):
        fetch(folder.join("nothing-here"), cache_dir=tmp_path / "c")


def _fetch_after_barrier(url: str, cache_dir: str, barrier, results) -> None:
    barrier.wait(timeout=30)  # both processes start fetching at the same moment
    path, fetched = fetch(url, cache_dir=cache_dir)
    results.put({"path": str(path), "fetched": fetched, "pid": os.getpid()})


def test_two_processes_on_one_node_fetch_once(model_folder, tmp_path, monkeypatch):
    """Two real processes (forked, as actors on one node) race for the same folder."""
    folder, files = model_folder
    real_download = cache_module._download

    def slow_download(*args):  # a model-sized download: without the lock both would fetch
        time.sleep(1.0)
        real_download(*args)

    monkeypatch.setattr(cache_module, "_download", slow_download)  # inherited by the forks
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    cache_dir = tmp_path / "node-cache"
    procs = [ctx.Process(target=_fetch_after_barrier,
                         args=(folder.url, str(cache_dir), barrier, results)) for _ in range(2)]
    for proc in procs:
        proc.start()
    got = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(r["fetched"] for r in got) == [False, True]
    assert got[0]["path"] == got[1]["path"]
    marker = json.loads((cache_dir / os.path.basename(got[0]["path"]) / MARKER).read_text())
    assert marker["fetched_by"]["pid"] == next(r["pid"] for r in got if r["fetched"])
    assert _contents(cache_dir / os.path.basename(got[0]["path"])) == files
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".tmp-")]


def test_skipped_subfolders_are_not_fetched(model_folder, tmp_path):
    folder, files = model_folder
    storage.write_bytes(folder.join("checkpoint", "state.pt"), b"x" * 4096)
    path = local_copy(folder, cache_dir=tmp_path / "cache", skip=("checkpoint",))
    assert _contents(path) == files  # weights and configs, not the optimizer state
    whole = local_copy(folder, cache_dir=tmp_path / "cache")
    assert whole != path and (whole / "checkpoint" / "state.pt").stat().st_size == 4096
