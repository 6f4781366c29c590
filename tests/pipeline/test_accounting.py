"""Accounting over a whole run: every input record, chunk and score is counted once, under one
reason, and the counts of prepare's and score's stats.json and the selection's manifest.json add
up to numbers this test computes independently (its own tokenization, its own bad lines)."""

from __future__ import annotations

import json
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from colorfilter.config import Config
from colorfilter.io.atomic import read_json
from colorfilter.io.token_shards import list_shards
from colorfilter.pipeline.stages import run_stage
from tests.conftest import sample_documents, save_random_models, write_jsonl
from tests.pipeline.test_prepare import decode_documents, make_config

SEQ_LEN = 64
MIN_TAIL_TOKENS = 2  # a file's last chunk is kept when it has at least this many tokens
RUN_SETTINGS = {
    "executor": "ray", "prepare.num_workers": 1, "prepare.worker_cpus": 0.5,
    "prepare.rows_per_shard": 48, "data.max_bad_fraction": 0.1,
    "score.num_workers": 1, "score.worker_cpus": 0.5, "score.torch_threads": 1,
    "score.batch_size": 16, "selection.methods": "[color,random]", "selection.tau": "[4]",
    "selection.output.rows_per_shard": 64,
}  # fmt: skip
# (line, reason it is skipped or None): the bad file of the accounting run, written as given
BAD_FILE_LINES = [
    (b'{"text": "A first good document in the file with the bad lines."}', None),
    (b'{"text": "cut off', "malformed_json"),
    (b'\xff\xfe{"text": "bytes that are not UTF-8"}', "invalid_utf8"),
    (b'{"url": "https://example.org/a-record-without-text"}', "missing_text_field"),
    (b'{"text": ""}', "empty_text"),
    (b'{"text": "A second good document."}', None),
    (b'{"text": "   \\n  "}', "empty_text"),
    (b'{"oops": ', "malformed_json"),
    (b'{"text": "The last good document, after the bad ones."}', None),
]


def expected_chunking(texts: list[str], tokenizer_dir: Path) -> dict[str, int]:
    """Tokens, chunks and dropped tail tokens of one input file, computed without colorfilter:
    each document's tokens (special-token text encoded literally) plus EOS, cut every SEQ_LEN."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tokenizer.encode_special_tokens = True
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    tokens = sum(len(e.ids) + 1 for e in encodings)
    full, tail = divmod(tokens, SEQ_LEN)
    kept_tail = tail >= MIN_TAIL_TOKENS
    return {
        "tokens": tokens,
        "chunks": full + int(kept_tail),
        "tail_tokens_dropped": 0 if kept_tail else tail,
        "bytes_text": sum(len(t.encode("utf-8")) for t in texts),
    }


def complete_lines_before_cut(path: Path) -> int:
    """Lines a tolerant decompressor recovers whole from a truncated .gz or (multi-frame) .zst."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return zlib.decompressobj(wbits=31).decompress(data).count(b"\n")
    import zstandard

    out = b""
    while data:
        frame = zstandard.ZstdDecompressor().decompressobj()
        out += frame.decompress(data)
        data = frame.unused_data if frame.eof else b""
    return out.count(b"\n")


def write_zstd_frames(path: Path, records: list[dict], per_frame: int) -> Path:
    """JSON lines as a multi-frame .zst (as pzstd and seekable zstd write them)."""
    import zstandard

    frames = []
    for start in range(0, len(records), per_frame):
        lines = "".join(json.dumps(r) + "\n" for r in records[start : start + per_frame])
        frames.append(zstandard.ZstdCompressor().compress(lines.encode()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(frames))
    return path


def cut_short(full: Path, target: Path, keep: float = 0.75) -> Path:
    """A copy of `full` cut after `keep` of its bytes, as an interrupted download leaves it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(full.read_bytes()[: int(full.stat().st_size * keep)])
    return target


def token_table(config: Config, split: str = "pool") -> pa.Table:
    paths = list_shards(config.output_path / "tokens" / split)
    return pq.read_table(paths, columns=["seq_id", "n_tokens", "source_file"]).sort_by("seq_id")


def test_truncated_compressed_files_are_counted_and_their_whole_records_kept(
    tmp_path, tokenizer_dir, c4_inputs
):
    records = [{"text": t} for t in sample_documents(60, seed=5)]
    texts = [r["text"] for r in records]
    full_gz = write_jsonl(tmp_path / "full" / "c4-train.00003-of-01024.json.gz", records)
    full_zst = write_zstd_frames(tmp_path / "full" / "c4-train.00004-of-01024.json.zst", records, 8)
    cut_gz = cut_short(full_gz, tmp_path / "cut" / full_gz.name)
    cut_zst = cut_short(full_zst, tmp_path / "cut" / full_zst.name)
    kept = {cut_gz: complete_lines_before_cut(cut_gz), cut_zst: complete_lines_before_cut(cut_zst)}
    assert all(0 < n < len(records) for n in kept.values())
    inputs = dict(c4_inputs, pool=[*c4_inputs["pool"], cut_gz, cut_zst])
    config = make_config(tmp_path, tokenizer_dir, inputs, **{"data.max_bad_fraction": 0.05})

    stats = run_stage("prepare", config)["pool"]
    assert stats["skipped"] == {"truncated_file": 2}  # one per file, not per lost record
    assert stats["files"] == 5
    assert stats["records"] == stats["documents"] == 80 + sum(kept.values())
    for path, n in kept.items():  # the sample names the file and the first line not read
        (sample,) = [s for s in stats["bad_samples"] if s.startswith(f"{path.resolve()}:")]
        assert sample.startswith(f"{path.resolve()}:{n + 1}: truncated_file: ")
        assert "truncated or corrupt" in sample
    assert read_json(config.output_path / "tokens" / "pool" / "stats.json") == stats
    # the policy: the whole records before the break are kept, in order; the rest is lost
    decoded = decode_documents(config.output_path / "tokens" / "pool", tokenizer_dir)
    for path, n in kept.items():
        assert decoded[str(path.resolve())] == texts[:n]
    c4_texts = [r["text"] for r in c4_inputs["records"]]
    assert decoded[str(c4_inputs["pool"][1].resolve())] == c4_texts[30:60]
    assert token_table(config).num_rows == stats["chunks"]


@pytest.fixture
def accounting_run(tmp_path, tokenizer_dir, c4_inputs, ray_session) -> tuple[Config, dict]:
    """Prepare and score on Ray (random micro models) over the C4 files plus a file of bad lines;
    then select in-process. Returns the config and the pool files' good texts."""

    bad = tmp_path / "pool" / "zz-bad-lines.jsonl"
    bad.write_bytes(b"".join(line + b"\n" for line, _ in BAD_FILE_LINES))
    texts = [r["text"] for r in c4_inputs["records"]]
    slices = ((0, 30), (30, 60), (60, 80))  # of the records, in c4_inputs' pool files
    files = {str(p.resolve()): texts[lo:hi] for p, (lo, hi) in zip(c4_inputs["pool"], slices)}
    files[str(bad.resolve())] = [json.loads(ln)["text"] for ln, why in BAD_FILE_LINES if not why]
    inputs = dict(c4_inputs, pool=[*c4_inputs["pool"], bad])
    config = make_config(tmp_path, tokenizer_dir, inputs, **RUN_SETTINGS)
    run_stage("prepare", config)
    save_random_models(config, seq_len=SEQ_LEN)
    run_stage("score", config)
    run_stage("select", config)
    return config, files


def test_counts_add_up_across_prepare_score_and_select(accounting_run, tokenizer_dir):
    config, files = accounting_run
    out = config.output_path
    per_file = {path: expected_chunking(texts, tokenizer_dir) for path, texts in files.items()}
    total = {key: sum(f[key] for f in per_file.values()) for key in next(iter(per_file.values()))}
    bad_reasons = Counter(reason for _, reason in BAD_FILE_LINES if reason)
    bad_path = next(p for p in files if p.endswith("zz-bad-lines.jsonl"))

    # prepare: records = documents + skipped by reason; tokens and chunks as computed here
    prepared = read_json(out / "tokens" / "pool" / "stats.json")
    assert prepared["files"] == 4
    assert prepared["records"] == 80 + len(BAD_FILE_LINES)
    assert prepared["documents"] == 80 + len(files[bad_path]) == sum(map(len, files.values()))
    assert prepared["skipped"] == dict(bad_reasons)
    assert prepared["records"] == prepared["documents"] + sum(prepared["skipped"].values())
    for key in ("tokens", "chunks", "tail_tokens_dropped", "bytes_text"):
        assert prepared[key] == total[key], key
    for line_no, (_, reason) in enumerate(BAD_FILE_LINES, start=1):
        if reason:
            assert any(
                s.startswith(f"{bad_path}:{line_no}: {reason}") for s in prepared["bad_samples"]
            ), (line_no, reason)
    # ... and the token shards hold exactly those chunks, file by file
    tokens = token_table(config)
    seq_ids = tokens.column("seq_id").to_numpy()
    assert np.unique(seq_ids).size == seq_ids.size == prepared["chunks"]
    n_tokens = tokens.column("n_tokens").to_numpy()
    assert int(n_tokens.sum()) == prepared["tokens"] - prepared["tail_tokens_dropped"]
    for path, expected in per_file.items():
        rows = tokens.filter(pc.equal(tokens.column("source_file"), path))
        assert rows.num_rows == expected["chunks"], path
    for split, (lo, hi) in {"downstream_train": (80, 86), "downstream_eval": (86, 90)}.items():
        target = read_json(out / "tokens" / split / "stats.json")
        assert target["records"] == target["documents"] == hi - lo and target["skipped"] == {}
        assert token_table(config, split).num_rows == target["chunks"]

    # score: one score row per prepared chunk, shard by shard
    scored = read_json(out / "scores" / "pool" / "stats.json")
    token_shards = [p.name for p in list_shards(out / "tokens" / "pool")]
    assert scored["shards"] == scored["shards_scored_now"] == len(token_shards)
    assert scored["shards_skipped"] == 0
    assert scored["rows"] == sum(s["rows"] for s in scored["per_shard"]) == prepared["chunks"]
    assert scored["tokens_scored_now"] == int(n_tokens.sum())
    assert [s["shard"] for s in scored["per_shard"]] == token_shards
    scores = pq.read_table(list_shards(out / "scores" / "pool")).sort_by("seq_id")
    assert np.array_equal(scores.column("seq_id").to_numpy(), seq_ids)
    assert np.array_equal(scores.column("n_tokens").to_numpy(), n_tokens)

    # select: candidates = selected + not selected + skipped; tokens of the selected rows
    k = prepared["chunks"] // 4
    score = scores.column("score").to_numpy()
    top_k = np.sort(seq_ids[np.lexsort((seq_ids, -score))[:k]])  # best scores, ties by seq_id
    for name in ("color-tau4", "random-tau4"):
        folder = out / "selected" / name
        manifest = read_json(folder / "manifest.json")
        indices = np.load(folder / "indices.npy")
        rows = pq.read_table(sorted((folder / "data").glob("*.parquet")))
        assert np.unique(indices).size == indices.size == rows.num_rows == k
        assert np.array_equal(rows.column("seq_id").to_numpy(), indices)  # indices = row order
        chosen = np.isin(seq_ids, indices)
        assert manifest["counts"] == {
            "candidates": prepared["chunks"],
            "selected": k,
            "not_selected": prepared["chunks"] - k,
            "skipped": {},
            "skipped_total": 0,
            "selected_tokens": int(n_tokens[chosen].sum()),
        }
        counts = manifest["counts"]
        assert counts["candidates"] == counts["selected"] + counts["not_selected"] + counts[
            "skipped_total"]  # fmt: skip
        assert manifest["selection"]["num_shards"] == len(list((folder / "data").iterdir()))
        assert manifest["extra"]["documents"] == {
            "files": 4,
            "records": prepared["records"],
            "documents": prepared["documents"],
            "tokens": total["tokens"],
            "chunks": total["chunks"],
            "tail_tokens_dropped": total["tail_tokens_dropped"],
            "skipped": dict(bad_reasons),
        }
        if name.startswith("color"):
            assert np.array_equal(np.sort(indices), top_k)
