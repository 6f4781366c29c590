"""Synthetic data for the model tests: a tiny word-level tokenizer and two token "languages".

The pool speaks one Markov language and the downstream splits another, so a model fine-tuned
on the downstream train split really does predict the downstream eval split better.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from colorfilter.io.atomic import write_parquet_atomic
from colorfilter.io.token_shards import TOKEN_SCHEMA, make_seq_ids
from colorfilter.models import resume
from colorfilter.models.config import ConditionalConfig, PriorConfig
from colorfilter.models.stages import TrainJob

VOCAB = 48
SEQ_LEN = 32


def build_tokenizer(directory: Path, vocab_size: int = VOCAB) -> Path:
    """A word-level tokenizer over "<|endoftext|>", "w1" ... (eos = bos = pad = id 0)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, vocab_size)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    eos = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=eos, bos_token=eos, pad_token=eos, unk_token=eos
    )
    tokenizer.save_pretrained(directory)
    return directory


def markov_stream(
    rng: np.random.Generator, n: int, language: str, vocab: int = VOCAB
) -> np.ndarray:
    """Documents of tokens 1..vocab-1 from one of two Markov chains, eos (0) between them."""
    span = vocab - 1
    doc_length = 13 if language == "pool" else 11
    steps = rng.choice([1, 2, 3], size=n) if language == "pool" else rng.choice([0, 7], size=n)
    tokens = np.empty(n, dtype=np.int64)
    state = int(rng.integers(span))
    for i in range(n):
        state = (state + steps[i]) % span if language == "pool" else (3 * state + steps[i]) % span
        tokens[i] = state + 1
    tokens[doc_length - 1 :: doc_length] = 0  # eos (= pad) between documents, as in real data
    return tokens


def write_shard(path: Path, chunks: list[np.ndarray], file_index: int, source: str) -> Path:
    """A token shard in the shared TOKEN_SCHEMA."""
    n = len(chunks)
    table = pa.table(
        {
            "seq_id": make_seq_ids(file_index, 0, n),
            "input_ids": pa.array([c.astype(np.int32) for c in chunks], pa.list_(pa.int32())),
            "n_tokens": pa.array([len(c) for c in chunks], pa.int32()),
            "source_file": [f"file{file_index}.jsonl"] * n,
            "doc_first": pa.array(np.zeros(n, dtype=np.int64)),
            "doc_last": pa.array(np.zeros(n, dtype=np.int64)),
            "doc_offset": pa.array(np.arange(n, dtype=np.int32) * SEQ_LEN),
            "source": [source] * n,
        },
        schema=TOKEN_SCHEMA,
    )
    write_parquet_atomic(path, table)
    return path


def write_split(
    directory: Path,
    language: str,
    n_files: int,
    chunks_per_file: int,
    seed: int,
    first_file_index: int = 0,
) -> Path:
    """Shards of one language; the last chunk of each file is short, as from a real file end."""
    rng = np.random.default_rng(seed)
    for f in range(n_files):
        tokens = markov_stream(rng, SEQ_LEN * chunks_per_file - SEQ_LEN // 2, language)
        chunks = [tokens[i : i + SEQ_LEN] for i in range(0, len(tokens), SEQ_LEN)]
        write_shard(directory / f"part-{f:05d}.parquet", chunks, first_file_index + f, language)
    return directory


def micro_prior_config(**changes) -> PriorConfig:
    base = dict(
        preset="micro",
        token_budget=64 * SEQ_LEN,
        batch_size=8,
        lr=1e-2,
        warmup_steps=2,
        checkpoint_every=0,
        eval_batch_size=16,
        progress=False,
        torch_threads=1,
    )
    return PriorConfig(**{**base, **changes})


def micro_conditional_config(**changes) -> ConditionalConfig:
    base = dict(
        epochs=2,
        batch_size=8,
        lr=1e-2,
        warmup_steps=1,
        checkpoint_every=0,
        eval_batch_size=16,
        progress=False,
        torch_threads=1,
    )
    return ConditionalConfig(**{**base, **changes})


def job(data, out, tokenizer, seed: int = 0, **changes) -> TrainJob:
    """A TrainJob on CPU at the tests' SEQ_LEN (`changes`: eval_data, force, on_step...)."""
    return TrainJob(data, out, tokenizer, SEQ_LEN, seed, **{"device": "cpu", **changes})


class Killed(Exception):
    """Stands in for a SIGKILL in the middle of training."""


def flipped_middle(data: bytes) -> bytes:
    """The same bytes with 16 in the middle inverted: the size kept, only a hash can tell."""
    out = bytearray(data)
    middle = len(out) // 2
    out[middle : middle + 16] = bytes(b ^ 0xFF for b in out[middle : middle + 16])
    return bytes(out)


def alter(path: Path) -> None:
    """Flip 16 bytes in the middle of a file, keeping its size (the issue's damage)."""
    path.write_bytes(flipped_middle(path.read_bytes()))


def die_before_checkpoint_record(monkeypatch, step: int) -> None:
    """Make the checkpoint of `step` end as a kill between its state.pt and its record would:
    the file written whole, then Killed instead of the record."""
    real_commit = resume.commit_unit

    def dies(record, objects, meta=None, sha256=False):
        if meta and meta.get("step") == step:
            raise Killed("between state.pt and its record")
        return real_commit(record, objects, meta, sha256)

    monkeypatch.setattr(resume, "commit_unit", dies)
