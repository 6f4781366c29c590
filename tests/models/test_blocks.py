"""Block streaming of the prior's slice: seeded whole row groups, disjoint per rank, bounded
memory, exact steps and tokens, resumable; and the settings that choose it."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from colorfilter.config import load_config
from colorfilter.errors import ConfigError
from colorfilter.io.atomic import write_parquet_atomic
from colorfilter.io.token_shards import list_shards, pad_input_ids
from colorfilter.models import blocks as blocks_module
from colorfilter.models.blocks import BlockBatches, choose_blocks, list_blocks
from colorfilter.models.checkpoints import stage_hash
from colorfilter.models.data import select_token_budget
from colorfilter.models.stages import train_prior
from colorfilter.pipeline.stages import config_conflicts

from .synthetic import SEQ_LEN, job, micro_prior_config
from .test_ddp import REPO_ROOT, TIMEOUT_S
from .test_stages import Killed, _curve, _kill_at

GROUP_ROWS = 5  # the corpus pool: 3 shards of 24 chunks -> 5 + 5 + 5 + 5 + 4 rows each


@pytest.fixture(scope="module")
def blocked_pool(corpus, tmp_path_factory) -> Path:
    """The session corpus' pool, rewritten in row groups of GROUP_ROWS (same rows)."""
    directory = tmp_path_factory.mktemp("blocked") / "pool"
    for path in list_shards(corpus.pool):
        write_parquet_atomic(directory / path.name, pq.read_table(path), row_group_size=GROUP_ROWS)
    return directory


def _source_rows(pool: Path) -> dict[int, np.ndarray]:
    table = pq.read_table(list_shards(pool), columns=["seq_id", "input_ids"])
    ids, lengths = pad_input_ids(table.column("input_ids"), SEQ_LEN, 0)
    return {int(s): row for s, row in zip(table.column("seq_id").to_numpy(), ids, strict=True)}


def _blocks_cfg(**changes):
    return micro_prior_config(data_sampling="blocks", block_buffer_rows=10, **changes)


def test_choice_is_seeded_and_ignores_listing_order(blocked_pool, tmp_path):
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for number, path in enumerate(reversed(list_shards(blocked_pool))):
        shutil.copy(path, renamed / f"z-{number}.parquet")
    assert len(list_blocks(list_shards(blocked_pool))) == 15
    budget = 30 * SEQ_LEN
    for world in (1, 2):
        first = choose_blocks(list_shards(blocked_pool), budget, seed=7, world_size=world)
        second = choose_blocks(list_shards(renamed), budget, seed=7, world_size=world)
        assert [b.first_seq_id for b in first.blocks] == [b.first_seq_id for b in second.blocks]
        assert np.array_equal(first.owner, second.owner)
        tokens = np.zeros(world)
        np.add.at(tokens, first.owner, [b.n_tokens for b in first.blocks])
        assert tokens.min() >= budget / world  # every rank holds its share of the budget
        assert tokens.sum() - first.blocks[-1].n_tokens < budget  # and no block more
    other = choose_blocks(list_shards(blocked_pool), budget, seed=8)
    assert {b.first_seq_id for b in other.blocks} != {b.first_seq_id for b in first.blocks}
    # Tokens per block, from the footers, are exact (the short tail chunks included).
    for block in list_blocks(list_shards(blocked_pool)):
        group = pq.ParquetFile(block.path).read_row_group(block.row_group, columns=["n_tokens"])
        assert block.n_tokens == int(np.sum(group.column("n_tokens").to_numpy()))


def test_ranks_read_only_their_disjoint_blocks_and_stream_every_row(blocked_pool, monkeypatch):
    world = 3
    chosen = choose_blocks(list_shards(blocked_pool), 40 * SEQ_LEN, 1, world, buffer_rows=10)
    read: dict[int, list[tuple[str, int]]] = {}
    plain_read = blocks_module._read_window
    rank_of_read = {"rank": -1}

    def recording_read(window, columns):
        read.setdefault(rank_of_read["rank"], []).extend((b.path.name, b.row_group) for b in window)
        return plain_read(window, columns)

    monkeypatch.setattr(blocks_module, "_read_window", recording_read)
    source = _source_rows(blocked_pool)
    streamed: dict[int, list[bytes]] = {}
    for rank in range(world):
        rank_of_read["rank"] = rank
        own = chosen.rank_blocks(rank)
        rows = sum(b.num_rows for b in own)
        stream = BlockBatches(chosen, rank, batch_size=world, num_steps=rows)  # local batch 1
        streamed[rank] = [stream.local_batch(s, SEQ_LEN, 0)[0][0].tobytes() for s in range(rows)]
        assert sorted(read[rank]) == sorted((b.path.name, b.row_group) for b in own)
        assert len(read[rank]) == len(set(read[rank]))  # each block read once
        expected = [
            source[int(s)].tobytes()
            for b in own
            for s in pq.ParquetFile(b.path).read_row_group(b.row_group)["seq_id"].to_numpy()
        ]
        assert sorted(streamed[rank]) == sorted(expected)  # every row of its blocks, once
        assert streamed[rank] != expected  # in seeded, not file, order
    everything = [row for rows in streamed.values() for row in rows]
    assert len(everything) == len(set(everything)) == chosen.n_chunks  # disjoint, covering


def test_the_stream_holds_at_most_the_windows_of_one_batch(blocked_pool):
    chosen = choose_blocks(list_shards(blocked_pool), 10**9, 0, world_size=1, buffer_rows=12)
    windows = chosen.windows(0)
    assert all(sum(b.num_rows for b in w) <= 12 for w in windows) and len(windows) > 3
    stream = BlockBatches(chosen, 0, batch_size=4, num_steps=chosen.n_chunks // 4)
    for step in range(stream.num_steps):
        stream.local_batch(step, SEQ_LEN, 0)
        assert stream.max_rows_held <= 2 * 12  # a batch spans at most two windows here
    assert stream.windows_read == len(windows)  # each window read once, in turn
    assert stream.max_rows_held < chosen.n_chunks / 2  # never the slice


def test_a_step_is_read_directly_and_matches_the_recorded_seq_ids(blocked_pool):
    world, batch = 2, 4
    chosen = choose_blocks(list_shards(blocked_pool), 10**9, 4, world, buffer_rows=7)
    steps = chosen.usable_chunks(batch) // batch
    assert steps == min(chosen.rank_rows()) // (batch // world)
    trained = chosen.trained_seq_ids(steps, batch).reshape(steps, world, batch // world)
    source = _source_rows(blocked_pool)
    for rank in range(world):
        sequential = BlockBatches(chosen, rank, batch, steps)
        rows = [sequential.local_batch(s, SEQ_LEN, 0)[0] for s in range(steps)]
        for step in (steps - 1, 3, 0):  # out of order, as a resumed run starts
            fresh = BlockBatches(chosen, rank, batch, steps)
            assert np.array_equal(fresh.local_batch(step, SEQ_LEN, 0)[0], rows[step])
            assert fresh.windows_read <= 2
        for step in range(steps):
            expected = np.stack([source[int(s)] for s in trained[step, rank]])
            assert np.array_equal(rows[step], expected)


def test_training_counts_exact_steps_and_tokens_and_resumes(blocked_pool, corpus, tmp_path):
    cfg = _blocks_cfg(checkpoint_every=2, keep_checkpoint=True, token_budget=40 * SEQ_LEN)
    whole = train_prior(job(blocked_pool, tmp_path / "whole", corpus.tokenizer, seed=5), cfg)
    chosen = choose_blocks(list_shards(blocked_pool), cfg.token_budget, 5, 1, 10)
    assert whole["steps"] == chosen.usable_chunks(cfg.batch_size) // cfg.batch_size
    # as many steps as per-chunk sampling trains for the same budget
    assert (
        whole["steps"]
        == len(select_token_budget(list_shards(blocked_pool), cfg.token_budget, 5))
        // cfg.batch_size
    )
    assert whole["n_chunks"] == chosen.n_chunks
    trained = pq.read_table(tmp_path / "whole" / "train_seq_ids.parquet")["seq_id"].to_numpy()
    assert np.array_equal(trained, chosen.trained_seq_ids(whole["steps"], cfg.batch_size))
    lengths = pq.read_table(list_shards(blocked_pool), columns=["seq_id", "n_tokens"])
    n_tokens = dict(zip(lengths["seq_id"].to_numpy(), lengths["n_tokens"].to_numpy()))
    assert whole["tokens_seen"] == sum(int(n_tokens[s]) for s in trained)
    killed = job(blocked_pool, tmp_path / "killed", corpus.tokenizer, seed=5)
    with pytest.raises(Killed):
        train_prior(dataclasses.replace(killed, on_step=_kill_at(3)), cfg)
    resumed = train_prior(killed, cfg)
    assert resumed["resumed_from_steps"] == [2]
    a, b = (
        load_file(tmp_path / "whole" / "model.safetensors"),
        load_file(tmp_path / "killed" / "model.safetensors"),
    )
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert _curve(tmp_path / "whole" / "loss_curve.csv", ("elapsed_s",)) == _curve(
        tmp_path / "killed" / "loss_curve.csv", ("elapsed_s",)
    )


def test_a_rank_without_blocks_is_a_config_error(blocked_pool):
    with pytest.raises(ConfigError, match="row_group_rows"):
        choose_blocks(list_shards(blocked_pool), 10**9, 0, world_size=16)


def test_settings_are_validated_at_load():
    cases = {
        "prior.data_sampling=block": "prior.data_sampling must be one of chunks, blocks; got "
        "'block' (did you mean 'blocks'?)",
        "prior.block_buffer_rows=0": "prior.block_buffer_rows must be >= 1, got 0",
        "prepare.row_group_rows=-1": "prepare.row_group_rows must be >= 0, got -1",
        "prepare.row_group_rows=9000": "prepare.row_group_rows must be <= "
        "prepare.rows_per_shard=8192",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError) as error:
            load_config(None, [override])
        assert message in str(error.value)
    config = load_config(None, ["prior.data_sampling=blocks", "prepare.row_group_rows=4096"])
    assert config.prior.data_sampling == "blocks" and config.prepare.row_group_rows == 4096


def test_older_configs_and_chunk_runs_keep_their_identity():
    cfg = micro_prior_config()
    inputs = {"pool": "p"}
    base = stage_hash("prior", cfg, SEQ_LEN, 0, inputs)
    buffered = dataclasses.replace(cfg, block_buffer_rows=7)
    assert stage_hash("prior", buffered, SEQ_LEN, 0, inputs) == base  # unused under chunks
    blocks = dataclasses.replace(cfg, data_sampling="blocks")
    assert stage_hash("prior", blocks, SEQ_LEN, 0, inputs) != base
    assert stage_hash("prior", dataclasses.replace(blocks, block_buffer_rows=7), SEQ_LEN, 0,
                      inputs) != stage_hash("prior", blocks, SEQ_LEN, 0, inputs)  # fmt: skip
    saved = {"prepare": {"rows_per_shard": 8192}, "prior": {"lr": 0.001}}  # before the keys
    current = {
        "prepare": {"rows_per_shard": 8192, "row_group_rows": 0},
        "prior": {"lr": 0.001, "data_sampling": "chunks", "block_buffer_rows": 65536},
    }
    assert config_conflicts("train-prior", saved, current) == []
    current["prior"]["data_sampling"] = "blocks"
    current["prepare"]["row_group_rows"] = 4096
    assert config_conflicts("train-prior", saved, current) == [
        "prepare.row_group_rows: 0 -> 4096",
        "prior.data_sampling: 'chunks' -> 'blocks'",
    ]


DDP_DRIVER = r"""
import json, sys
from pathlib import Path

import torch.distributed as dist

from colorfilter.models import blocks, stages
from colorfilter.models.config import PriorConfig

spec, seen = json.loads(Path(sys.argv[1]).read_text()), []
plain = blocks.BlockBatches.local_batch


def recording(self, step, seq_len, pad_id):
    input_ids, n_tokens = plain(self, step, seq_len, pad_id)
    seen.append(input_ids.tolist())
    return input_ids, n_tokens


blocks.BlockBatches.local_batch = recording
job = stages.TrainJob(spec["pool"], spec["out_dir"], spec["tokenizer"], spec["seq_len"], seed=1,
                      device="cpu")
stats = stages.train_prior(job, PriorConfig(**spec["config"]))
rank = dist.get_rank()
Path(spec["log_dir"], f"rank{rank}.json").write_text(json.dumps({"stats": stats, "seen": seen}))
dist.destroy_process_group()
"""


def test_two_ranks_stream_disjoint_halves_and_count_global_tokens(blocked_pool, corpus, tmp_path):
    cfg = _blocks_cfg(token_budget=48 * SEQ_LEN, micro_batch_size=2)
    (tmp_path / "driver.py").write_text(DDP_DRIVER)
    spec = {
        "pool": str(blocked_pool),
        "tokenizer": str(corpus.tokenizer),
        "seq_len": SEQ_LEN,
        "out_dir": str(tmp_path / "prior"),
        "log_dir": str(tmp_path),
        "config": dataclasses.asdict(cfg),
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(tmp_path / "driver.py"), str(tmp_path / "spec.json")]
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    chosen = choose_blocks(list_shards(blocked_pool), cfg.token_budget, 1, 2, 10)
    steps = chosen.usable_chunks(cfg.batch_size) // cfg.batch_size
    assert ranks[0]["stats"] == ranks[1]["stats"] and ranks[0]["stats"]["steps"] == steps
    trained = chosen.trained_seq_ids(steps, cfg.batch_size).reshape(steps, 2, -1)
    source = _source_rows(blocked_pool)
    for rank, record in enumerate(ranks):
        assert len(record["seen"]) == steps
        for step, rows in enumerate(record["seen"]):
            assert rows == [source[int(s)].tolist() for s in trained[step, rank]]
    assert not set(trained[:, 0].ravel()) & set(trained[:, 1].ravel())
    # tokens_seen is the global batch's (each rank's counts summed), not one rank's
    lengths = pq.read_table(list_shards(blocked_pool), columns=["seq_id", "n_tokens"])
    n_tokens = dict(zip(lengths["seq_id"].to_numpy(), lengths["n_tokens"].to_numpy()))
    assert ranks[0]["stats"]["tokens_seen"] == sum(int(n_tokens[s]) for s in trained.ravel())
