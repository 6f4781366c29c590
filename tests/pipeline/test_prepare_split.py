"""One big input file prepared as several parts gives the same shards as one task, and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from colorfilter.io.token_shards import list_shards
from colorfilter.pipeline import prepare as prepare_module
from colorfilter.pipeline.stages import run_stage
from tests.conftest import sample_documents, write_jsonl
from tests.pipeline.test_prepare import make_config, shard_digests


@pytest.fixture
def big_inputs(tmp_path) -> dict:
    """A plain JSON lines pool file with bad lines here and there, and a parquet one."""
    docs = sample_documents(120, seed=3)
    records = [{"text": t, "source": "web" if i % 3 else "book"} for i, t in enumerate(docs)]
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in records[:80]]
    lines[7], lines[41] = "{not json\n", "\n"  # bad records: indices must stay file-global
    plain = tmp_path / "pool" / "big.jsonl"
    plain.parent.mkdir(parents=True)
    plain.write_text("".join(lines), encoding="utf-8")
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[100:]).encode()
    frames = tmp_path / "pool" / "frames.jsonl.zst"  # frames cut mid-line, every 700 bytes
    compressor = zstandard.ZstdCompressor()
    frames.write_bytes(
        b"".join(compressor.compress(data[i : i + 700]) for i in range(0, len(data), 700))
    )
    table = pa.Table.from_pylist(records[80:100])
    parquet = tmp_path / "pool" / "big.parquet"
    pq.write_table(table, parquet, row_group_size=5)
    return {
        "pool": [plain, parquet, frames],
        "downstream_train": [write_jsonl(tmp_path / "t" / "train.jsonl", records[:5])],
        "downstream_eval": [write_jsonl(tmp_path / "t" / "eval.jsonl", records[5:10])],
    }


def done_stats(split_dir: Path) -> list[dict]:
    out = []
    for path in sorted(split_dir.glob("*.done.json")):
        record = json.loads(path.read_text())
        record["meta"]["stats"].pop("seconds")
        out.append(record)
    return out


def test_split_file_gives_the_same_shards_as_whole(
    tmp_path, tokenizer_dir, big_inputs, monkeypatch
):
    whole = make_config(
        tmp_path,
        tokenizer_dir,
        big_inputs,
        out="whole",
        **{"prepare.split_bytes": 0, "data.max_bad_fraction": 0.5},
    )
    split = make_config(
        tmp_path,
        tokenizer_dir,
        big_inputs,
        out="split",
        **{"prepare.split_bytes": 3000, "data.max_bad_fraction": 0.5},
    )
    calls = []
    original = prepare_module.prepare_part
    monkeypatch.setattr(
        prepare_module, "prepare_part", lambda *a: calls.append(a[0]) or original(*a)
    )
    stats_whole = run_stage("prepare", whole)["pool"]
    stats_split = run_stage("prepare", split)["pool"]
    assert {task.file_index for task in calls} == {0, 1, 2}  # each file cut into parts
    assert len(calls) > 15
    pool = "tokens/pool"
    assert shard_digests(whole.output_path / pool) == shard_digests(split.output_path / pool)
    assert done_stats(whole.output_path / pool) == done_stats(split.output_path / pool)
    assert stats_whole == stats_split and stats_split["skipped"] == {
        "malformed_json": 1,
        "empty_line": 1,
    }
    assert any(":8: malformed_json" in s for s in stats_split["bad_samples"])
    assert not list((split.output_path / pool / "_parts").glob("*"))  # dropped once assembled


def test_retried_split_file_keeps_its_finished_parts(
    tmp_path, tokenizer_dir, big_inputs, monkeypatch
):
    inputs = dict(big_inputs, pool=big_inputs["pool"][:1])
    config = make_config(
        tmp_path,
        tokenizer_dir,
        inputs,
        **{"prepare.split_bytes": 4000, "data.max_bad_fraction": 0.5},
    )

    def crash(task, settings):
        raise RuntimeError("killed before assembling")

    monkeypatch.setattr(prepare_module, "assemble_file", crash)
    with pytest.raises(Exception, match="killed before assembling"):
        run_stage("prepare", config)
    parts_dir = config.output_path / "tokens" / "pool" / "_parts"
    parts = sorted(parts_dir.glob("*.parquet"))
    assert len(parts) > 3 and not list_shards(config.output_path / "tokens" / "pool")
    parts[1].write_bytes(parts[1].read_bytes()[:100])  # one part cut short: only it is redone
    monkeypatch.undo()
    calls = []
    original = prepare_module.prepare_part
    monkeypatch.setattr(
        prepare_module, "prepare_part", lambda *a: calls.append(a[0].part) or original(*a)
    )
    run_stage("prepare", config)
    assert calls == [1]
    whole = make_config(
        tmp_path,
        tokenizer_dir,
        inputs,
        out="whole",
        **{"prepare.split_bytes": 0, "data.max_bad_fraction": 0.5},
    )
    run_stage("prepare", whole)
    pool = "tokens/pool"
    assert shard_digests(whole.output_path / pool) == shard_digests(config.output_path / pool)
