"""The released selection folder: schema, content, order, atomic reruns, manifest, load_dataset."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from colorfilter.dataset import manifest as mf
from colorfilter.dataset.order import shuffled_order
from colorfilter.dataset.writer import OUTPUT_SCHEMA
from colorfilter.errors import BadDataError, ConfigError
from colorfilter.io import storage
from tests.dataset.synthetic import write_one

TAU = 4
ROWS_PER_SHARD = 7


def write(pool, out_dir, selected=None, **overrides):
    kwargs = dict(
        method="color",
        tau=TAU,
        params={"k": "N/tau"},
        rows_per_shard=ROWS_PER_SHARD,
        seed=1,
        skipped={"empty_document": 2},
        config={"run": {"seq_len": pool.seq_len}},
        command="colorfilter select --config run.yaml",
    )
    kwargs.update(overrides)
    selected = pool.top_k(TAU) if selected is None else selected
    return write_one(
        selected, pool.token_dir, pool.score_dir, pool.tokenizer_dir, out_dir, **kwargs
    )


def read_rows(out_dir) -> pa.Table:
    shards = sorted((out_dir / "data").glob("train-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in shards])


@pytest.fixture(scope="module")
def written(pool, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("selected") / "color-tau4"
    return out_dir, write(pool, out_dir)


def test_schema_rows_and_shards(pool, written):
    out_dir, summary = written
    selected = pool.top_k(TAU)
    shards = sorted((out_dir / "data").glob("train-*.parquet"))
    n_shards = math.ceil(len(selected) / ROWS_PER_SHARD)
    assert [p.name for p in shards] == [
        f"train-{i:05d}-of-{n_shards:05d}.parquet" for i in range(n_shards)
    ]
    assert summary["num_shards"] == n_shards
    for path in shards:
        parquet = pq.ParquetFile(path)
        assert parquet.schema_arrow.equals(OUTPUT_SCHEMA)
        assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    assert [pq.ParquetFile(p).metadata.num_rows for p in shards[:-1]] == [ROWS_PER_SHARD] * (
        n_shards - 1
    )
    rows = read_rows(out_dir)
    assert rows.num_rows == len(selected)
    assert sorted(rows.column("seq_id").to_pylist()) == sorted(selected.tolist())
    assert not list(out_dir.rglob(".tmp-*"))


def test_row_content_matches_inputs(pool, written):
    from transformers import AutoTokenizer

    out_dir, _ = written
    rows = read_rows(out_dir).to_pylist()
    tokenizer = AutoTokenizer.from_pretrained(str(pool.tokenizer_dir))
    tokens = pa.concat_tables(pq.read_table(p) for p in sorted(pool.token_dir.glob("*.parquet")))
    by_id = {row["seq_id"]: row for row in tokens.to_pylist()}
    scores = pool.scores()
    for row in rows:
        source = by_id[row["seq_id"]]
        assert row["input_ids"] == source["input_ids"]
        assert row["n_tokens"] == len(source["input_ids"])
        for key in ("source_file", "doc_first", "doc_last", "doc_offset", "source"):
            assert row[key] == source[key]
        assert row["text"] == tokenizer.decode(
            row["input_ids"], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        assert (row["score"], row["prior_loss"], row["cond_loss"]) == scores[row["seq_id"]]
    assert any("<|endoftext|>" in row["text"] for row in rows)


def test_indices_npy_is_row_order(pool, written):
    out_dir, _ = written
    indices = np.load(out_dir / "indices.npy")
    assert indices.dtype == np.uint64
    assert indices.tolist() == read_rows(out_dir).column("seq_id").to_pylist()
    np.testing.assert_array_equal(indices, shuffled_order(pool.top_k(TAU), seed=1))
    assert indices.tolist() != sorted(indices.tolist())  # shuffled, not sorted


def test_manifest_counts_and_hashes(pool, written):
    out_dir, summary = written
    manifest = json.loads((out_dir / "manifest.json").read_text())
    counts = manifest["counts"]
    n_selected = len(pool.top_k(TAU))
    assert counts["selected"] == n_selected
    assert counts["candidates"] == pool.n_rows + 2
    assert counts["skipped"] == {"empty_document": 2, "non_finite_score": 1, "unscored": 1}
    assert counts["candidates"] == (
        counts["selected"] + counts["not_selected"] + sum(counts["skipped"].values())
    )
    assert counts["selected_tokens"] == int(read_rows(out_dir).column("n_tokens").to_numpy().sum())
    assert summary["counts"] == counts
    assert manifest["complete"] is True
    assert manifest["config_hash"] == mf.config_hash(manifest["config"])
    assert manifest["config"]["run"] == {"run": {"seq_len": pool.seq_len}}
    assert set(manifest["files"]) == set(mf.list_files(out_dir)) - {"manifest.json"}
    assert mf.verify_files(out_dir, manifest) == []
    assert manifest["tokenizer"]["sha256"] == storage.folder_sha256(pool.tokenizer_dir)
    assert len(manifest["inputs"]) == 6  # 3 token shards + 3 score shards
    for entry in manifest["inputs"]:
        assert entry["sha256"] == storage.file_sha256(entry["path"])
    assert manifest["packages"]["numpy"] == np.__version__
    assert manifest["selection"]["threshold"] == pytest.approx(
        float(min(pool.scores()[int(i)][0] for i in pool.top_k(TAU)))
    )
    assert sum(manifest["scores"]["histogram"]["selected"]) == n_selected
    png = (out_dir / "scores_histogram.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_card_front_matter_and_load_dataset(pool, written, tmp_path):
    import datasets
    import yaml

    out_dir, _ = written
    card = (out_dir / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    assert "2406.10670" in card and "scores_histogram.png" in card
    assert "colorfilter select --config run.yaml" in card
    datasets.disable_progress_bars()
    ds = datasets.load_dataset(str(out_dir), split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == len(pool.top_k(TAU))
    assert ds.column_names == OUTPUT_SCHEMA.names
    assert ds.features["seq_id"].dtype == "uint64"
    assert ds.features["input_ids"].feature.dtype == "int32"
    assert ds["seq_id"] == np.load(out_dir / "indices.npy").tolist()


def test_order_independent_of_listing_and_input_order(pool, written, tmp_path):
    out_dir, _ = written
    renamed = tmp_path / "renamed"
    for sub, src in (("tokens", pool.token_dir), ("scores", pool.score_dir)):
        (renamed / sub).mkdir(parents=True)
        for i, path in enumerate(sorted(src.glob("*.parquet"))):
            shutil.copy(path, renamed / sub / f"{'zyx'[i]}-{path.name}")  # reversed listing
    reversed_ids = pool.top_k(TAU)[::-1].copy()
    write_one(
        reversed_ids, renamed / "tokens", renamed / "scores", pool.tokenizer_dir, tmp_path / "b",
        method="color", tau=TAU, params={"k": "N/tau"}, rows_per_shard=ROWS_PER_SHARD, seed=1,
        skipped={"empty_document": 2}, config={"run": {"seq_len": pool.seq_len}},
    )  # fmt: skip
    assert read_rows(tmp_path / "b").equals(read_rows(out_dir))
    other_seed = write(pool, tmp_path / "c", seed=2)
    assert other_seed["config_hash"] != written[1]["config_hash"]
    assert read_rows(tmp_path / "c").column("seq_id") != read_rows(out_dir).column("seq_id")


def test_rerun_is_noop_when_complete_and_redone_when_not(pool, tmp_path):
    out_dir = tmp_path / "sel"
    first = write(pool, out_dir)
    assert first["noop"] is False
    stamps = {p: p.stat().st_mtime_ns for p in out_dir.rglob("*") if p.is_file()}
    assert write(pool, out_dir)["noop"] is True
    assert {p: p.stat().st_mtime_ns for p in out_dir.rglob("*") if p.is_file()} == stamps

    # a crash mid-run: manifest gone, a temp file and a stale shard of another layout left over
    (out_dir / "manifest.json").unlink()
    (out_dir / "data" / ".tmp-train-00000-of-00009.parquet.abc").write_bytes(b"partial")
    (out_dir / "data" / "train-00008-of-00009.parquet").write_bytes(b"stale")
    again = write(pool, out_dir)
    assert again["noop"] is False
    assert sorted(p.name for p in (out_dir / "data").iterdir()) == sorted(
        p.split("/")[1] for p in first["files"] if p.startswith("data/")
    )
    assert read_rows(out_dir).num_rows == first["counts"]["selected"]

    # different upstream counts (inputs changed) are not mistaken for done
    recounted = write(pool, out_dir, skipped={"empty_document": 3})
    assert recounted["noop"] is False and recounted["counts"]["candidates"] == pool.n_rows + 3

    # a different config on a complete folder is rewritten, not mistaken for done
    changed = write(pool, out_dir, rows_per_shard=100)
    assert changed["noop"] is False and changed["num_shards"] == 1
    assert len(list((out_dir / "data").iterdir())) == 1


def test_empty_selection_writes_one_empty_shard(pool, tmp_path):
    summary = write(pool, tmp_path / "empty", selected=np.array([], dtype=np.uint64))
    assert summary["num_shards"] == 1 and summary["counts"]["selected"] == 0
    assert summary["threshold"] is None
    assert read_rows(tmp_path / "empty").num_rows == 0
    assert np.load(tmp_path / "empty" / "indices.npy").dtype == np.uint64


def test_rejects_bad_selections_and_inputs(pool, tmp_path):
    selected = pool.top_k(TAU)
    with pytest.raises(BadDataError, match="not in the pool"):
        write(pool, tmp_path / "a", selected=np.append(selected, np.uint64(999 << 32)))
    with pytest.raises(ValueError, match="duplicates"):
        write(pool, tmp_path / "b", selected=np.append(selected, selected[:1]))
    with pytest.raises(BadDataError, match="has no score"):
        write(pool, tmp_path / "c", selected=np.array(pool.unscored, dtype=np.uint64))
    with pytest.raises(ConfigError, match="rows_per_shard"):
        write(pool, tmp_path / "d", rows_per_shard=0)
    for name, path in (("missing", None), ("extra", "extra")):
        scores = tmp_path / f"scores-{name}"
        shutil.copytree(pool.score_dir, scores)
        first = sorted(scores.glob("*.parquet"))[0]
        if path is None:
            first.unlink()
            with pytest.raises(ConfigError, match="no score shard"):
                write_one(
                    selected, pool.token_dir, scores, pool.tokenizer_dir, tmp_path / name,
                    method="color", tau=TAU,
                )  # fmt: skip
        else:
            table = pq.read_table(first)
            extra = table.slice(0, 1).set_column(0, "seq_id", pa.array([12345], pa.uint64()))
            pq.write_table(pa.concat_tables([table, extra]), first)
            with pytest.raises(BadDataError, match="not in token shard"):
                write_one(
                    selected, pool.token_dir, scores, pool.tokenizer_dir, tmp_path / name,
                    method="color", tau=TAU,
                )  # fmt: skip


def test_build_counts_must_add_up():
    counts = mf.build_counts(
        candidates=10, selected=3, not_selected=5, skipped={"b": 1, "a": 1}, selected_tokens=30
    )
    assert list(counts["skipped"]) == ["a", "b"] and counts["skipped_total"] == 2
    with pytest.raises(ValueError, match="do not add up"):
        mf.build_counts(
            candidates=11, selected=3, not_selected=5, skipped={"a": 2}, selected_tokens=30
        )
