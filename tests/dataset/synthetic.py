"""Tiny synthetic inputs for the dataset writer: a BPE tokenizer trained here, token shards in
the shared format, and score shards whose rows are in a different order from their token shard.
Also used by tests/release."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from colorfilter.io.token_shards import TOKEN_SCHEMA, make_seq_ids
from tests.conftest import mark_finished

EOS = "<|endoftext|>"
WORDS = (
    "the river ran past old mills and quiet farms while a heron waited in reeds "
    "naïve café déjà vu 東京 München über résumé zürich fjord smörgåsbord "
    "kernel package library install configure daemon socket buffer parser module"
).split()


@dataclass
class Pool:
    """Paths of a synthetic prepared run, and what the test needs to check the output."""

    tokenizer_dir: Path
    token_dir: Path
    score_dir: Path
    seq_len: int
    n_rows: int
    unscored: list[int]  # seq_ids with no score row
    non_finite: list[int]  # seq_ids whose score is NaN

    def scores(self) -> dict[int, tuple[float, float, float]]:
        """seq_id -> (score, prior_loss, cond_loss) over all score shards."""
        out = {}
        for path in sorted(self.score_dir.glob("*.parquet")):
            table = pq.read_table(path).to_pydict()
            for i, sid in enumerate(table["seq_id"]):
                out[sid] = (table["score"][i], table["prior_loss"][i], table["cond_loss"][i])
        return out

    def top_k(self, tau: int) -> np.ndarray:
        """The ids a global top-k selection at `tau` keeps (finite scores only)."""
        scores = self.scores()
        finite = sorted(
            ((s[0], sid) for sid, s in scores.items() if math.isfinite(s[0])), reverse=True
        )
        k = self.n_rows // tau
        return np.array([sid for _, sid in finite[:k]], dtype=np.uint64)


def build_tokenizer(directory: Path) -> Path:
    """Train a byte-level BPE (vocab 300) and save it as a HF tokenizer folder.

    Written with `tokenizers` alone (tokenizer.json + tokenizer_config.json), so building it does
    not import transformers/torch; `AutoTokenizer.from_pretrained` loads it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    rng = np.random.default_rng(0)
    tok.train_from_iterator([" ".join(rng.choice(WORDS, size=40)) for _ in range(200)], trainer)
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS,
        "bos_token": EOS,
        "pad_token": EOS,
        "model_max_length": 1024,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def build_pool(
    root: Path,
    *,
    n_files: int = 3,
    docs_per_file: int = 12,
    seq_len: int = 24,
    seed: int = 0,
) -> Pool:
    """Tokenize random documents into chunks (shared token-shard format) and score them."""
    from tokenizers import Tokenizer

    tokenizer_dir = build_tokenizer(root / "tokenizer")
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    eos_id = tokenizer.token_to_id(EOS)
    rng = np.random.default_rng(seed)
    token_dir, score_dir = root / "tokens" / "pool", root / "scores" / "pool"
    token_dir.mkdir(parents=True)
    score_dir.mkdir(parents=True)
    n_rows, unscored, non_finite = 0, [], []
    for file_index in range(n_files):
        docs = [" ".join(rng.choice(WORDS, size=rng.integers(5, 40))) for _ in range(docs_per_file)]
        stream: list[int] = []
        for doc in docs:
            stream += tokenizer.encode(doc).ids + [eos_id]
        chunks = [stream[i : i + seq_len] for i in range(0, len(stream), seq_len)]
        ids = make_seq_ids(file_index, 0, len(chunks))
        name = f"pool-{file_index:05d}.parquet"
        _write_token_shard(token_dir / name, ids, chunks, file_index)
        skip_score = {int(ids[1])} if file_index == 0 else set()
        nan_score = {int(ids[2])} if file_index == 1 else set()
        _write_score_shard(score_dir / name, ids, chunks, rng, skip_score, nan_score)
        unscored += sorted(skip_score)
        non_finite += sorted(nan_score)
        n_rows += len(chunks)
    mark_finished(root, "prepare", "score")
    return Pool(tokenizer_dir, token_dir, score_dir, seq_len, n_rows, unscored, non_finite)


def _write_token_shard(path: Path, ids: np.ndarray, chunks: list, file_index: int) -> None:
    n = len(chunks)
    table = pa.table(
        {
            "seq_id": pa.array(ids, pa.uint64()),
            "input_ids": pa.array(chunks, pa.list_(pa.int32())),
            "n_tokens": pa.array([len(c) for c in chunks], pa.int32()),
            "source_file": pa.array([f"input-{file_index}.jsonl"] * n),
            "doc_first": pa.array(np.arange(n) // 2, pa.int64()),
            "doc_last": pa.array(np.arange(n) // 2 + 1, pa.int64()),
            "doc_offset": pa.array(np.arange(n) % 7, pa.int32()),
            "source": pa.array(["books" if i % 5 == 0 else "web" for i in range(n)]),
        },
        schema=TOKEN_SCHEMA,
    )
    pq.write_table(table, path, row_group_size=5)


def _write_score_shard(
    path: Path, ids: np.ndarray, chunks: list, rng: np.random.Generator, skip: set, nan: set
) -> None:
    """Scores in a shuffled row order (the writer must join by seq_id, not by position)."""
    prior = rng.uniform(3.0, 6.0, size=len(ids)).astype(np.float32)
    cond = (prior - rng.normal(0.0, 0.5, size=len(ids))).astype(np.float32)
    score = prior - cond
    for i, sid in enumerate(ids):
        if int(sid) in nan:
            score[i] = np.nan
    keep = np.array([int(s) not in skip for s in ids])
    order = rng.permutation(np.flatnonzero(keep))
    table = pa.table(
        {
            "seq_id": pa.array(ids[order], pa.uint64()),
            "prior_loss": pa.array(prior[order], pa.float32()),
            "cond_loss": pa.array(cond[order], pa.float32()),
            "score": pa.array(score[order], pa.float32()),
            "n_tokens": pa.array([len(chunks[i]) for i in order], pa.int32()),
        }
    )
    pq.write_table(table, path)


def write_one(seq_ids, token_dir, score_dir, tokenizer_dir, out_dir, **fields) -> dict:
    """The selection writer for one folder, in this process, as the tests call it: the fields
    of SelectionJob and of PoolInputs by name."""
    from dataclasses import fields as dataclass_fields

    from colorfilter.dataset.writer import PoolInputs, SelectionJob, write_selection
    from colorfilter.io.location import as_location
    from colorfilter.pipeline.execution import Execution

    job_names = {f.name for f in dataclass_fields(SelectionJob)}
    execution = fields.pop("execution", None) or Execution()
    job = SelectionJob(seq_ids, as_location(out_dir),
                       **{k: v for k, v in fields.items() if k in job_names})  # fmt: skip
    inputs = PoolInputs(token_dir, score_dir, tokenizer_dir,
                        **{k: v for k, v in fields.items() if k not in job_names})  # fmt: skip
    return write_selection(job, inputs, execution)
