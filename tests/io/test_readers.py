"""Readers: every supported format, bad records with reasons, truncation, flat memory."""

from __future__ import annotations

import gzip
import json
import random
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colorfilter.errors import ConfigError
from colorfilter.io.files import InputFile, detect_format, resolve_inputs
from colorfilter.io.readers import BadRecord, Document, TruncatedFileError, iter_records
from tests.conftest import write_jsonl

RECORDS = [{"text": f"document number {i} ünïcode", "source": "s" + str(i % 2)} for i in range(50)]


def read_all(path, fmt=None, **kwargs):
    item = InputFile(str(path), fmt or detect_format(str(path)), path.stat().st_size)
    return list(iter_records(item, **kwargs))


@pytest.mark.parametrize(
    "name", ["a.jsonl", "c4-train.00000-of-01024.json.gz", "a.jsonl.zst", "a.json"]
)
def test_jsonl_variants(tmp_path, name):
    path = write_jsonl(tmp_path / name, RECORDS)
    docs = read_all(path, source_field="source")
    assert [d.text for d in docs] == [r["text"] for r in RECORDS]
    assert [d.index for d in docs] == list(range(50)) and docs[3].source == "s1"


def test_parquet_and_saved_hf_dataset(tmp_path):
    from datasets import Dataset

    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path, row_group_size=7)
    assert [d.text for d in read_all(path)] == [r["text"] for r in RECORDS]
    Dataset.from_list(RECORDS).save_to_disk(tmp_path / "saved")
    (saved,) = resolve_inputs([str(tmp_path / "saved")], "data.pool")
    assert saved.format == "hf_disk"
    assert [d.text for d in iter_records(saved)] == [r["text"] for r in RECORDS]


def test_bad_records_have_reasons_and_line_indices(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(
        b'{"text": "ok"}\n[1, 2]\n{"text": null}\n\n{"text": "\\ud800"}\n'
        b'{"text": "\xc3\x28"}\n{"text": "end"}'
    )
    records = read_all(path)
    reasons = [r.reason if isinstance(r, BadRecord) else "ok" for r in records]
    assert reasons == [
        "ok",
        "not_an_object",
        "non_string_text",
        "empty_line",
        "invalid_utf8",
        "invalid_utf8",
        "ok",
    ]
    assert isinstance(records[-1], Document) and records[-1].index == 6


@pytest.mark.parametrize("suffix", [".json.gz", ".json.zst"])
def test_truncated_compressed_file_raises_after_valid_records(tmp_path, suffix):
    rng = random.Random(0)
    noisy = [{"text": " ".join(f"{rng.getrandbits(40):x}" for _ in range(50))} for _ in range(2000)]
    full = write_jsonl(tmp_path / f"full{suffix}", noisy)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    seen = []
    with pytest.raises(TruncatedFileError, match="truncated or corrupt"):
        for record in iter_records(InputFile(str(cut), "jsonl", 0)):
            seen.append(record)
    assert 0 < len(seen) < len(noisy)


def test_streaming_memory_is_flat(tmp_path):
    path = tmp_path / "big.json.gz"
    line = json.dumps({"text": "x" * 2000}).encode() + b"\n"
    with gzip.open(path, "wb", compresslevel=1) as handle:
        for _ in range(8000):  # 16 MB of text
            handle.write(line)
    tracemalloc.start()
    count = sum(1 for _ in iter_records(InputFile(str(path), "jsonl", 0)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 8000 and peak < 4 * 1024 * 1024


def test_resolve_inputs_sorts_and_checks(tmp_path):
    for name in ["b.jsonl", "a.jsonl", "c.parquet"]:
        (tmp_path / name).write_text("")
    items = resolve_inputs([str(tmp_path / "b.jsonl"), str(tmp_path / "*.jsonl")], "data.pool")
    assert [i.uri.rsplit("/", 1)[1] for i in items] == ["a.jsonl", "b.jsonl"]
    with pytest.raises(ConfigError, match="matches no files"):
        resolve_inputs([str(tmp_path / "*.gz")], "data.pool")
    with pytest.raises(ConfigError, match="no such file"):
        resolve_inputs([str(tmp_path / "missing.jsonl")], "data.pool")
    with pytest.raises(ConfigError, match="unknown file type"):
        (tmp_path / "x.csv").write_text("")
        resolve_inputs([str(tmp_path / "x.csv")], "data.pool")


def test_hub_dataset_names_and_hub_file_urls_are_told_apart():
    from colorfilter.io.files import is_hf_dataset_name

    assert is_hf_dataset_name("hf://allenai/c4")
    assert is_hf_dataset_name("hf://allenai/c4:en")
    assert is_hf_dataset_name("hf://allenai/c4:en#00001-of-00008")
    assert not is_hf_dataset_name("hf://datasets/allenai/c4/en/c4-train.00000-of-01024.json.gz")
    assert not is_hf_dataset_name("hf://org/model/data.parquet")
    assert not is_hf_dataset_name("hf://org/repo/*.jsonl")
    assert not is_hf_dataset_name("s3://bucket/c4")
    assert is_hf_dataset_name("hf://datasets/org/name", configured="hf")
