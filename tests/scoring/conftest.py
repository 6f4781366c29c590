"""Tiny saved prior/conditional checkpoints and token shards, built here (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from colorfilter.io.atomic import write_parquet_atomic
from colorfilter.io.token_shards import TOKEN_SCHEMA, make_seq_ids

VOCAB = 101  # odd, so no block size divides it evenly by accident
SEQ_LEN = 24
PAD_ID = 0


def save_pair(root: Path, preset: str = "micro", vocab: int = VOCAB, **overrides) -> tuple:
    """A prior and a conditional with different random weights, saved as HF checkpoints."""
    from colorfilter.models.presets import build_model

    dirs = []
    for name, seed in (("prior", 0), ("conditional", 1)):
        model = build_model(preset, vocab, SEQ_LEN, seed=seed, **overrides)
        model.save_pretrained(root / name)
        dirs.append(root / name)
    return tuple(dirs)


@pytest.fixture(scope="session")
def model_pair(tmp_path_factory) -> tuple[Path, Path]:
    return save_pair(tmp_path_factory.mktemp("models"))


def random_chunks(rows: int, seed: int = 0, short_every: int = 5) -> list[list[int]]:
    """Mostly full chunks, with every `short_every`-th one shorter (down to 0 and 1 tokens)."""
    rng = np.random.default_rng(seed)
    short_lengths = [1, int(rng.integers(2, SEQ_LEN)), 0, 2]
    chunks = []
    for i in range(rows):
        length = SEQ_LEN if i % short_every else short_lengths[(i // short_every) % 4]
        chunks.append(rng.integers(1, VOCAB, length).tolist())
    return chunks


def write_token_shard(path: Path, chunks: list[list[int]], file_index: int = 0, **kw) -> Path:
    """A token shard in the shared format (provenance columns filled with placeholders)."""
    rows = len(chunks)
    table = pa.table(
        {
            "seq_id": make_seq_ids(file_index, 0, rows),
            "input_ids": pa.array(chunks, type=pa.list_(pa.int32())),
            "n_tokens": pa.array([len(c) for c in chunks], type=pa.int32()),
            "source_file": ["pool.jsonl"] * rows,
            "doc_first": pa.array(range(rows), type=pa.int64()),
            "doc_last": pa.array(range(rows), type=pa.int64()),
            "doc_offset": pa.array([0] * rows, type=pa.int32()),
            "source": ["web"] * rows,
        },
        schema=TOKEN_SCHEMA,
    )
    if kw.get("row_group_size"):
        import pyarrow.parquet as pq

        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=kw["row_group_size"])
    else:
        write_parquet_atomic(path, table)
    return path


def padded(chunks: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(chunks), SEQ_LEN), PAD_ID, dtype=np.int64)
    for i, chunk in enumerate(chunks):
        ids[i, : len(chunk)] = chunk
    return ids, np.array([len(c) for c in chunks], dtype=np.int32)


def reference_losses(model_dir: Path, chunks: list[list[int]]) -> np.ndarray:
    """HF's own loss, one unpadded sequence at a time: what the scorer must reproduce."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    losses = []
    with torch.inference_mode():
        for chunk in chunks:
            if len(chunk) < 2:
                losses.append(np.nan)
                continue
            ids = torch.tensor([chunk])
            losses.append(model(input_ids=ids, labels=ids).loss.item())
    return np.array(losses, dtype=np.float64)
