"""Unit commits: data objects first, a completion record last; only complete units are trusted."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from colorfilter.io import storage
from colorfilter.io.commit import (
    RECORD_FORMAT,
    commit_unit,
    committed,
    discard_unit,
    is_committed,
    read_unit,
    write_unit,
)
from colorfilter.io.storage import Location


@pytest.fixture(params=["local", "s3"])
def unit_dir(request, tmp_path) -> Location:
    if request.param == "local":
        return Location.parse(tmp_path / "shards")
    return request.getfixturevalue("s3_bucket").join("out", "shards")


def test_committed_unit_is_trusted_with_sizes(unit_dir):
    record = unit_dir.join("shard-00000.done.json")
    payload = write_unit(record, {"shard-00000.parquet": b"p" * 100, "extra/idx.npy": b"i" * 7},
                         meta={"rows": 3})
    assert payload["format"] == RECORD_FORMAT
    assert payload["objects"] == {
        "shard-00000.parquet": {"size": 100}, "extra/idx.npy": {"size": 7}}
    trusted = is_committed(record)
    assert trusted is not None and trusted.meta == {"rows": 3}
    assert [o.relative_to(unit_dir) for o in trusted.locations()] == [
        "extra/idx.npy", "shard-00000.parquet"]


def test_objects_without_record_are_not_trusted(unit_dir):
    storage.write_bytes(unit_dir.join("shard-00001.parquet"), b"data")
    assert is_committed(unit_dir.join("shard-00001.done.json")) is None


def test_size_mismatch_missing_object_or_torn_record_is_not_trusted(unit_dir):
    record = unit_dir.join("u.done.json")
    write_unit(record, {"a.bin": b"aaaa", "b.bin": b"bb"})
    storage.write_bytes(unit_dir.join("a.bin"), b"aaa")  # replaced by a shorter (torn) object
    assert is_committed(record) is None
    write_unit(record, {"a.bin": b"aaaa", "b.bin": b"bb"})
    storage.remove(unit_dir.join("b.bin"))
    assert is_committed(record) is None
    storage.write_bytes(record, b'{"format": "colorfilter.unit/1", "objects": {"a.bin": {"si')
    assert is_committed(record) is None and read_unit(record) is None
    storage.write_json(record, {"format": "other/9", "objects": {}})
    assert is_committed(record) is None


def test_sha256_catches_same_size_changes_only_when_asked(unit_dir):
    record = unit_dir.join("u.done.json")
    write_unit(record, {"a.bin": b"abcd"}, sha256=True)
    assert is_committed(record, verify_sha256=True) is not None
    storage.write_bytes(unit_dir.join("a.bin"), b"abce")
    assert is_committed(record) is not None  # sizes alone cannot see this
    assert is_committed(record, verify_sha256=True) is None


def test_commit_refuses_unwritten_objects_and_discard_undoes(unit_dir):
    record = unit_dir.join("u.done.json")
    with pytest.raises(FileNotFoundError):
        commit_unit(record, [unit_dir.join("never-written.bin")])
    assert not storage.exists(record)
    write_unit(record, {"a.bin": b"a", "b.bin": b"b"})
    assert set(committed([record, unit_dir.join("other.done.json")])) == {record.url}
    discard_unit(record)
    assert not storage.exists(record) and storage.glob(unit_dir.join("*")) == []


def test_batch_check_over_many_units_in_one_folder(unit_dir):
    records = [unit_dir.join(f"shard-{i:05d}.done.json") for i in range(12)]
    for i, record in enumerate(records):
        write_unit(record, {f"shard-{i:05d}.parquet": b"r" * (100 + i)}, meta={"i": i})
    storage.write_bytes(unit_dir.join("shard-00003.parquet"), b"torn")  # size no longer matches
    storage.remove(unit_dir.join("shard-00007.parquet"))
    storage.write_bytes(records[9], b"{not json")
    trusted = committed(records + [unit_dir.join("shard-99999.done.json")])
    assert sorted(trusted) == [r.url for i, r in enumerate(records) if i not in (3, 7, 9)]
    assert trusted[records[11].url].meta == {"i": 11}


def test_record_meta_is_redacted(unit_dir):
    signed = "https://bkt.s3.amazonaws.com/x?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE&X-Amz-Signature=ab12"
    write_unit(unit_dir.join("u.done.json"), {"a": b"a"}, meta={"source": signed})
    text = storage.read_text(unit_dir.join("u.done.json"))
    assert "AKIAIOSFODNN7EXAMPLE" not in text and "ab12" not in text and "REDACTED" in text


def _write_objects_then_hang(unit_url: str, written) -> None:
    unit = Location.parse(unit_url)
    storage.write_bytes(unit.join("part-0.parquet"), b"x" * 5000)
    storage.write_bytes(unit.join("part-1.parquet"), b"y" * 5000)
    written.set()
    time.sleep(60)  # killed here: after the data objects, before the completion record
    commit_unit(unit.join("part.done.json"), [unit.join("part-0.parquet")])


def test_kill_between_objects_and_record_leaves_nothing_trusted(s3_bucket):
    unit = s3_bucket.join("out", "prepare", "part-0")
    ctx = multiprocessing.get_context("fork")
    written = ctx.Event()
    proc = ctx.Process(target=_write_objects_then_hang, args=(unit.url, written))
    proc.start()
    try:
        assert written.wait(timeout=60)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    assert [f.location.name for f in storage.find(unit)] == ["part-0.parquet", "part-1.parquet"]
    assert is_committed(unit.join("part.done.json")) is None
    # the rerun redoes the unit and commits it; now it is trusted
    write_unit(unit.join("part.done.json"), {"part-0.parquet": b"x" * 5000})
    assert is_committed(unit.join("part.done.json")) is not None
