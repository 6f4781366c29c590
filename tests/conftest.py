"""Shared fixtures: a real local Ray (one per session), a tiny real tokenizer, C4-shaped inputs."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from tests.s3_server import (  # noqa: F401 - fixtures for every test
    quiet_disk,
    s3_bucket,
    s3_refusing_credentials,
    s3_server,
)

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EOS = "<|endoftext|>"


def sample_documents(count: int = 60, seed: int = 0) -> list[str]:
    """Varied documents built from this repo's own prose and Python's docstrings (real text)."""
    import random
    import string
    import textwrap

    rng = random.Random(seed)
    sources = [string.__doc__, json.__doc__, textwrap.__doc__, random.__doc__, os.__doc__]
    words = " ".join(s for s in sources if s).split()
    docs = []
    for i in range(count):
        length = rng.randint(5, 400)
        start = rng.randrange(len(words))
        body = " ".join(words[(start + j) % len(words)] for j in range(length))
        extra = ["", " café naïve – “quoted” 東京 🙂", "\n\nA second paragraph.", f" {EOS} inline"]
        docs.append(f"Doc {i}: {body}{extra[i % len(extra)]}")
    return docs


def write_jsonl(path: Path, records: list[dict]) -> Path:
    """Write JSON lines, compressed by the file's suffix (.gz or .zst)."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    elif path.name.endswith(".zst"):
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A small byte-level BPE trained here, saved as a HF tokenizer dir (EOS = pad = id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(sample_documents(200, seed=1), trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, pad_token=EOS
    )
    path = tmp_path_factory.mktemp("tokenizer")
    wrapped.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def ray_session(s3_server):  # noqa: F811 - the fixture imported above
    """One real local Ray for the whole test session (2 CPUs, small object store).

    Started after the S3 test server, so its workers inherit the AWS_* variables pointing at
    it (as nodes of a real cluster carry their own credentials and endpoint).
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            object_store_memory=300 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def c4_inputs(tmp_path) -> dict[str, list[Path]]:
    """C4-shaped pool files (.json.gz and .zst) and downstream train/eval files."""
    return write_c4_inputs(tmp_path)


def write_c4_inputs(tmp_path: Path) -> dict[str, list[Path]]:
    """The files of `c4_inputs` under `tmp_path` (for fixtures of a wider scope)."""
    docs = sample_documents(90)
    records = [
        {
            "text": t,
            "timestamp": "2019-04-25T12:57:54Z",
            "url": f"https://example.org/{i}",
            "source": "web" if i % 3 else "book",
        }
        for i, t in enumerate(docs)
    ]
    pool = [
        write_jsonl(tmp_path / "pool" / "c4-train.00000-of-00003.json.gz", records[:30]),
        write_jsonl(tmp_path / "pool" / "c4-train.00001-of-00003.json.zst", records[30:60]),
        write_jsonl(tmp_path / "pool" / "c4-train.00002-of-00003.jsonl", records[60:80]),
    ]
    train = [write_jsonl(tmp_path / "target" / "train.jsonl.zst", records[80:86])]
    evaluation = [write_jsonl(tmp_path / "target" / "eval.jsonl.gz", records[86:])]
    return {
        "pool": pool,
        "downstream_train": train,
        "downstream_eval": evaluation,
        "records": records,
    }


def save_random_models(config, vocab_size: int = 400, seq_len: int = 64,
                       seeds: tuple[int, int] = (1, 2)) -> None:
    """Small random models saved as the run's prior and conditional, committed as the train
    stages commit theirs, so later stages accept them without training."""
    from colorfilter.layout import RunLayout
    from colorfilter.models.checkpoints import commit_model_files
    from colorfilter.models.presets import build_model

    run = RunLayout.of(config)
    for name, seed in zip(("prior", "conditional"), seeds):
        folder = run.model(name)
        build_model("micro", vocab_size=vocab_size, seq_len=seq_len, seed=seed).save_pretrained(
            folder.path
        )
        commit_model_files(folder)


def mark_finished(output_dir: Path, *stages: str) -> None:
    """Write the markers of stages whose outputs a test built by hand (prepare: the tokenizer
    and token shards as they are; score: its shards), as the stages themselves would."""
    from colorfilter.io import storage
    from colorfilter.layout import RunLayout

    run = RunLayout.at(str(output_dir))
    for stage in stages:
        if stage == "prepare":
            files = [info.location for info in storage.find(run.tokenizer)]
            run.finish_stage("prepare", files,
                             {"tokenizer_sha256": storage.folder_sha256(run.tokenizer)})
        elif stage == "score":
            storage.write_json(run.score_stats, {})
            run.finish_stage("score", [run.score_stats], {})
        else:
            raise ValueError(f"no hand-built marker for {stage!r}")
