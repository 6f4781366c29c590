"""The prepare stage end to end on real files: determinism, round-trip, resume, accounting."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

from colorfilter.config import load_config
from colorfilter.errors import BadDataError, ConfigError
from colorfilter.io.token_shards import list_shards, split_seq_ids
from colorfilter.pipeline.stages import run_stage


def make_config(tmp_path: Path, tokenizer_dir: Path, inputs: dict, out: str = "out", **extra):
    overrides = {
        "output_dir": str(tmp_path / out),
        "seq_len": 64,
        "tokenizer": str(tokenizer_dir),
        "data.pool": "[" + ",".join(str(p) for p in inputs["pool"]) + "]",
        "data.downstream_train": str(inputs["downstream_train"][0]),
        "data.downstream_eval": str(inputs["downstream_eval"][0]),
        "data.source_field": "source",
        "prepare.rows_per_shard": 16,
        "executor": "local",
        **extra,
    }
    return load_config(None, [f"{k}={v}" for k, v in overrides.items()])


def shard_digests(split_dir: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(pq.read_table(p).to_string().encode()).hexdigest()
        for p in list_shards(split_dir)
    }


def decode_documents(split_dir: Path, tokenizer_dir: Path) -> dict[str, list[str]]:
    """Rebuild each source file's documents from its chunks (seq_id order, split on EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    table = pq.read_table(list_shards(split_dir)).sort_by("seq_id")
    docs: dict[str, list[str]] = {}
    for source_file in sorted(set(table.column("source_file").to_pylist())):
        rows = table.filter(pc.equal(table.column("source_file"), source_file))
        stream = np.concatenate([np.asarray(x) for x in rows.column("input_ids").to_pylist()])
        cuts = np.flatnonzero(stream == tokenizer.eos_token_id)
        pieces = np.split(stream, cuts + 1)[: len(cuts)]
        docs[source_file] = [tokenizer.decode(p[:-1]) for p in pieces]
    return docs


def test_prepare_round_trips_documents(tmp_path, tokenizer_dir, c4_inputs):
    config = make_config(tmp_path, tokenizer_dir, c4_inputs)
    stats = run_stage("prepare", config)
    pool_dir = config.output_path / "tokens" / "pool"
    decoded = decode_documents(pool_dir, tokenizer_dir)
    texts = [r["text"] for r in c4_inputs["records"]]
    assert decoded[str(c4_inputs["pool"][0].resolve())] == texts[:30]
    assert decoded[str(c4_inputs["pool"][1].resolve())] == texts[30:60]
    assert decoded[str(c4_inputs["pool"][2].resolve())] == texts[60:80]
    assert stats["pool"]["documents"] == 80 and stats["pool"]["skipped"] == {}
    assert (config.output_path / "config.yaml").exists()


def test_chunks_are_full_and_provenance_points_at_documents(tmp_path, tokenizer_dir, c4_inputs):
    config = make_config(tmp_path, tokenizer_dir, c4_inputs)
    run_stage("prepare", config)
    table = pq.read_table(list_shards(config.output_path / "tokens" / "pool")).sort_by("seq_id")
    seq_ids = table.column("seq_id").to_numpy()
    assert len(np.unique(seq_ids)) == len(seq_ids)
    n_tokens = table.column("n_tokens").to_numpy()
    files, chunks = split_seq_ids(seq_ids)
    last_of_file = np.append(files[1:] != files[:-1], True)
    assert (n_tokens[~last_of_file] == 64).all()  # only a file's last chunk may be short
    lengths = np.array([len(x) for x in table.column("input_ids").to_pylist()])
    assert (lengths == n_tokens).all()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    records = c4_inputs["records"]
    for row in table.slice(0, 20).to_pylist():  # file 0 holds records[0:30]
        first_doc = records[row["doc_first"]]["text"]
        doc_tokens = tokenizer(first_doc, add_special_tokens=False)["input_ids"]
        expected = (doc_tokens + [tokenizer.eos_token_id])[row["doc_offset"] :][: row["n_tokens"]]
        assert row["input_ids"][: len(expected)] == expected
        assert row["source"] == records[row["doc_first"]]["source"]


def test_ids_and_shards_independent_of_order_and_workers(
    tmp_path, tokenizer_dir, c4_inputs, ray_session
):
    first = make_config(tmp_path, tokenizer_dir, c4_inputs, out="a")
    run_stage("prepare", first)
    reordered = dict(c4_inputs, pool=list(reversed(c4_inputs["pool"])))
    second = make_config(
        tmp_path,
        tokenizer_dir,
        reordered,
        out="b",
        **{"executor": "ray", "prepare.num_workers": 2, "prepare.worker_cpus": 0.5},
    )
    run_stage("prepare", second)
    for split in ("pool", "downstream_train", "downstream_eval"):
        a = shard_digests(first.output_path / "tokens" / split)
        b = shard_digests(second.output_path / "tokens" / split)
        assert a == b and a


def test_rerun_skips_finished_files_and_redoes_broken_ones(tmp_path, tokenizer_dir, c4_inputs):
    config = make_config(tmp_path, tokenizer_dir, c4_inputs)
    run_stage("prepare", config)
    pool_dir = config.output_path / "tokens" / "pool"
    before = shard_digests(pool_dir)
    mtimes = {p.name: p.stat().st_mtime_ns for p in list_shards(pool_dir)}
    (pool_dir / "00001-00000.parquet").unlink()  # a lost part: file 1 must be redone
    (pool_dir / ".tmp-00002-00000.parquet.xyz").write_bytes(b"partial")  # a killed write
    run_stage("prepare", config)
    assert shard_digests(pool_dir) == before
    after = {p.name: p.stat().st_mtime_ns for p in list_shards(pool_dir)}
    assert all(after[n] == mtimes[n] for n in after if n.startswith("00000-"))
    assert not list(pool_dir.glob(".tmp-*"))


def test_changed_settings_refused_unless_overwrite(tmp_path, tokenizer_dir, c4_inputs):
    run_stage("prepare", make_config(tmp_path, tokenizer_dir, c4_inputs))
    changed = make_config(tmp_path, tokenizer_dir, c4_inputs, seq_len=32)
    with pytest.raises(ConfigError, match="different config .seq_len: 64 -> 32"):
        run_stage("prepare", changed)
    stats = run_stage("prepare", changed, overwrite=True)
    assert stats["pool"]["chunks"] > 0


def test_bad_records_are_counted_with_locations(tmp_path, tokenizer_dir, c4_inputs):
    bad = tmp_path / "pool" / "bad.jsonl"
    bad.write_bytes(
        b'{"text": "fine document"}\n{not json\n{"text": 5}\n{"url": "x"}\n'
        b'{"text": "  "}\n\xff\xfe{"text": "bad bytes"}\n{"text": "also fine"}\n'
    )
    inputs = dict(c4_inputs, pool=c4_inputs["pool"] + [bad])
    config = make_config(tmp_path, tokenizer_dir, inputs, **{"data.max_bad_fraction": 0.5})
    stats = run_stage("prepare", config)["pool"]
    assert stats["skipped"] == {
        "malformed_json": 1,
        "non_string_text": 1,
        "missing_text_field": 1,
        "empty_text": 1,
        "invalid_utf8": 1,
    }
    assert stats["records"] == stats["documents"] + sum(stats["skipped"].values())
    assert any(f"{bad.resolve()}:2: malformed_json" in s for s in stats["bad_samples"])
    strict = make_config(tmp_path, tokenizer_dir, inputs, out="strict")
    with pytest.raises(BadDataError, match="max_bad_fraction"):
        run_stage("prepare", strict)


def test_glob_matching_nothing_is_a_config_error(tmp_path, tokenizer_dir, c4_inputs):
    inputs = dict(c4_inputs, pool=[tmp_path / "nowhere" / "*.json.gz"])
    with pytest.raises(ConfigError, match="matches no files"):
        run_stage("prepare", make_config(tmp_path, tokenizer_dir, inputs))
