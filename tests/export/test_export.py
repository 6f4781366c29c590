"""`colorfilter export`: the selection's tokens, exactly and in order, in each trainer's layout
(read back here by readers written against the published layouts, tests/export/layouts.py);
dtype, the export's manifest, resume, and the refusals with their exit codes."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from colorfilter.cli import app
from colorfilter.errors import EXIT_BAD_DATA, EXIT_USAGE
from colorfilter.export.driver import ExportRequest, export_selection
from tests.export.conftest import build_selection, selection_rows, selection_tokens
from tests.export.layouts import data_paths, olmo_arrays, olmo_fsl_instances, read_megatron

runner = CliRunner()
SEQ_LEN = 24


def export(selection: Path, out: Path, fmt: str, *args: str) -> dict:
    result = runner.invoke(app, ["export", str(selection), str(out), "--format", fmt, *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def refused(selection: Path, out: Path, fmt: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["export", str(selection), str(out), "--format", fmt, *args])
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[export")]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.output  # one line
    return result.exit_code, errors[0]


def file_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def olmo_export(selection, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("olmo") / "out"
    return out, export(selection, out, "olmo")


@pytest.fixture(scope="module")
def megatron_export(selection, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("megatron") / "out"
    return out, export(selection, out, "megatron")


def test_the_selection_has_short_chunks_inside_shards(selection):
    """The case the OLMo-core layout exists for: a chunk shorter than seq_len before others."""
    lengths = [len(r) for r in selection_rows(selection)]
    mid_shard = [i for i, n in enumerate(lengths) if n < SEQ_LEN and (i + 1) % 16 and
                 i + 1 < len(lengths)]
    assert mid_shard and max(lengths) == SEQ_LEN


def test_olmo_files_are_the_selection_tokens_in_order(selection, olmo_export):
    out, summary = olmo_export
    rows = selection_rows(selection)
    manifest = json.loads((out / "export.json").read_text())
    paths = data_paths(out)
    assert paths == sorted(str(p) for p in out.glob("*.npy"))  # a sorted glob is the order too
    flat = np.concatenate(olmo_arrays(paths, np.dtype(np.uint16)))
    assert np.array_equal(flat, selection_tokens(selection))
    # the fixed-length dataset's instances are exactly the full-length chunks, in order
    full = [r for r in rows if len(r) == SEQ_LEN]
    instances = olmo_fsl_instances(paths, np.dtype(np.uint16), SEQ_LEN)
    assert [i.tolist() for i in instances] == full
    short = [r for r in rows if len(r) < SEQ_LEN]
    assert manifest["olmo"]["instances"] == len(full)
    assert manifest["olmo"]["tokens_outside_instances"] == sum(map(len, short))
    assert summary["sequences"] == len(rows) and summary["tokens"] == flat.size
    assert summary["short_sequences"] == len(short) and summary["dtype"] == "uint16"
    # one file per shard, plus one per short chunk that is not the last row of its shard
    lengths = np.array([len(r) for r in rows])
    shard_ends = set(range(15, len(rows), 16)) | {len(rows) - 1}
    cuts = sum(1 for i in np.flatnonzero(lengths < SEQ_LEN) if i not in shard_ends)
    assert len(paths) == manifest["counts"]["shards"] + cuts


def test_megatron_index_and_bins_hold_one_chunk_per_sequence(selection, megatron_export):
    out, summary = megatron_export
    rows = selection_rows(selection)
    prefixes = data_paths(out)
    assert prefixes == [str(p.with_suffix("")) for p in sorted(out.glob("*.bin"))]
    sequences, seen = [], 0
    for prefix in prefixes:
        index = read_megatron(prefix)
        assert index.version == 1 and index.dtype is np.uint16
        n = len(index.sizes)
        assert index.sizes.tolist() == [len(r) for r in rows[seen:seen + n]]
        assert index.document_indices.tolist() == list(range(n + 1))  # each chunk a document
        sequences += [s.tolist() for s in index.sequences]
        seen += n
    assert sequences == rows
    assert summary["files"] == 2 * len(prefixes) and summary["sequences"] == len(rows)


def test_export_manifest_says_what_it_came_from(selection, olmo_export):
    out, _ = olmo_export
    manifest = json.loads((out / "export.json").read_text())
    selected = json.loads((selection / "manifest.json").read_text())
    source = manifest["source"]
    assert source["url"] == str(selection)
    assert source["manifest_sha256"] == hashlib.sha256(
        (selection / "manifest.json").read_bytes()).hexdigest()
    assert source["config_hash"] == selected["config_hash"]
    assert (source["method"], source["tau"]) == ("color", 1)
    assert source["selected_tokens"] == manifest["counts"]["tokens"]
    assert manifest["complete"] and manifest["trainer_format"] == "olmo"
    assert manifest["seq_len"] == SEQ_LEN and manifest["dtype"] == "uint16"
    vocab = manifest["vocab"]
    assert vocab["size"] == 300 and vocab["eos_token_id"] == vocab["pad_token_id"] == 0
    assert vocab["source"] == selected["tokenizer"]["path"]
    assert "row order" in manifest["order"] and manifest["eos"].startswith("none added")
    for name, entry in manifest["files"].items():
        data = (out / name).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(("fmt", "dtype"), [("olmo", np.uint32), ("megatron", np.int32)])
def test_a_vocabulary_over_uint16_gets_wider_ids(selection, tmp_path, fmt, dtype):
    out = tmp_path / "out"
    summary = export(selection, out, fmt, "--vocab-size", "70000")
    assert summary["dtype"] == np.dtype(dtype).name and summary["vocab_size"] == 70000
    if fmt == "olmo":
        got = np.concatenate(olmo_arrays(data_paths(out), np.dtype(dtype)))
    else:
        indexes = [read_megatron(p) for p in data_paths(out)]
        assert all(index.dtype is dtype for index in indexes)
        got = np.concatenate([s for index in indexes for s in index.sequences])
    assert np.array_equal(got, selection_tokens(selection))
    assert json.loads((out / "export.json").read_text())["vocab"]["source"] == "--vocab-size"


def test_a_token_outside_the_vocabulary_is_bad_data(selection, tmp_path):
    code, line = refused(selection, tmp_path / "out", "megatron", "--vocab-size", "100")
    assert code == EXIT_BAD_DATA and "outside the vocabulary of 100 ids" in line
    assert not (tmp_path / "out" / "export.json").exists()


def test_vocabulary_from_the_run_beside_a_moved_selection(tmp_path):
    moved = tmp_path / "moved"
    folder = build_selection(tmp_path / "run", tau=4)
    shutil.move(tmp_path / "run", moved)  # the recorded tokenizer path is gone
    selection = moved / "selected" / folder.name
    manifest = json.loads((selection / "manifest.json").read_text())
    assert not Path(manifest["tokenizer"]["path"]).exists()
    export(selection, tmp_path / "out", "olmo")
    vocab = json.loads((tmp_path / "out" / "export.json").read_text())["vocab"]
    assert vocab["source"] == str(moved / "tokenizer") and vocab["size"] == 300
    (moved / "tokenizer" / "tokenizer.json").write_text("{}")  # another tokenizer now
    code, line = refused(selection, tmp_path / "out2", "olmo")
    assert code == EXIT_USAGE and "--vocab-size" in line and str(moved / "tokenizer") in line


@pytest.mark.parametrize("fmt", ["olmo", "megatron"])
def test_resume_redoes_only_damaged_shards(selection, tmp_path, fmt):
    out = tmp_path / "out"
    export(selection, out, fmt)
    reference = file_bytes(out)
    records = sorted(out.glob("*.done.json"))
    data = sorted(p for p in out.iterdir() if p.suffix in (".npy", ".bin"))
    records[1].unlink()  # as if killed before shard 1's record
    data[-1].write_bytes(data[-1].read_bytes()[:7])  # a torn file of the last shard
    (out / "export.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in data[:1]}
    summary = export(selection, out, fmt)
    assert summary["shards_reused"] == summary["shards"] - 2 and not summary["noop"]
    assert file_bytes(out).keys() == reference.keys()
    for name, content in file_bytes(out).items():
        if name != "export.json":  # it holds a creation time
            assert content == reference[name], name
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished shards not rewritten


def test_rerun_of_a_finished_export_changes_nothing(selection, tmp_path):
    out = tmp_path / "out"
    export(selection, out, "megatron")
    before = file_bytes(out)
    summary = export(selection, out, "megatron")
    assert summary["noop"] and file_bytes(out) == before


def test_refuses_an_unfinished_or_modified_selection(selection_copy, tmp_path):
    manifest = selection_copy / "manifest.json"
    text = manifest.read_text()
    shard = sorted((selection_copy / "data").glob("*.parquet"))[1]
    original = shard.read_bytes()
    manifest.write_text(text.replace('"complete": true', '"complete": false'))
    code, line = refused(selection_copy, tmp_path / "out", "olmo")
    assert code == EXIT_USAGE and str(selection_copy) in line and "not finished" in line
    manifest.unlink()
    code, line = refused(selection_copy, tmp_path / "out", "olmo")
    assert code == EXIT_USAGE and f"{selection_copy} has no manifest.json" in line
    manifest.write_text(text)
    shard.write_bytes(original[:100])
    code, line = refused(selection_copy, tmp_path / "out", "olmo")
    assert code == EXIT_BAD_DATA and f"{shard.relative_to(selection_copy)}: size 100" in line
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF  # same size, other bytes
    shard.write_bytes(bytes(flipped))
    code, line = refused(selection_copy, tmp_path / "out", "megatron")
    assert code == EXIT_BAD_DATA and str(shard) in line and "sha256 differs" in line
    assert not (tmp_path / "out" / "export.json").exists()


def test_refuses_an_out_that_holds_something_else(selection, tmp_path):
    out = tmp_path / "out"
    export(selection, out, "olmo")
    code, line = refused(selection, out, "megatron")
    assert code == EXIT_USAGE and "holds another export" in line and "--overwrite" in line
    summary = export(selection, out, "megatron", "--overwrite")
    assert summary["shards_reused"] == 0 and not list(out.glob("*.npy"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, line = refused(selection, foreign, "olmo")
    assert code == EXIT_USAGE and "holds no colorfilter export" in line
    export(selection, foreign, "olmo", "--overwrite")
    assert (foreign / "notes.txt").read_text() == "mine"
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "export.json").write_text('{"format": "another tool"}')
    code, line = refused(selection, tmp_path / "theirs", "olmo")
    assert code == EXIT_USAGE and "e.g. export.json" in line
    code, line = refused(selection, selection / "export", "olmo")
    assert code == EXIT_USAGE and "inside the selection folder" in line
    code, line = refused(selection, tmp_path / "x", "parquet")
    assert code == EXIT_USAGE and "--format must be one of olmo, megatron" in line


def test_python_api_returns_the_summary(selection, tmp_path):
    summary = export_selection(ExportRequest(selection, tmp_path / "o", "megatron"))
    assert summary["export"] == str(tmp_path / "o" / "export.json") and summary["tokens"] > 0
