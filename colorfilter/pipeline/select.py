"""The select stage: rank the scored pool with each configured method and write one dataset
folder per (method, tau) under OUTPUT/selected/.

Selection itself is colorfilter.selection (pure functions over score arrays, streamed from the
score shards); writing is colorfilter.dataset. This module only connects the run's paths.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from colorfilter.config import Config
from colorfilter.configtools import to_dict
from colorfilter.errors import ConfigError
from colorfilter.io.atomic import read_json, write_parquet_atomic
from colorfilter.io.token_shards import list_shards, prepared_shards


def run_select(config: Config, overwrite: bool = False) -> dict:
    """Write every configured selection; return a summary per folder."""
    from colorfilter.dataset.writer import selection_dir_name, write_selection
    from colorfilter.selection import METHODS, ParquetSource, select_many
    from colorfilter.selection.documents import expand_to_documents

    out = config.output_path
    score_dir, token_dir = out / "scores" / "pool", out / "tokens" / "pool"
    token_paths, score_paths = prepared_shards(token_dir), list_shards(score_dir)
    if not score_paths or len(score_paths) != len(token_paths):
        raise ConfigError(
            f"{score_dir} has {len(score_paths)} score shards for {len(token_paths)} token "
            "shards: run (or finish) `colorfilter score` first"
        )
    unknown = [m for m in config.selection.methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"selection.methods: unknown {unknown}; choose from {list(METHODS)}")
    check_pool_size(count_rows(token_paths), config.selection.tau, config.selection.min_chunks)
    summaries = {}
    for method in config.selection.methods:
        paths = score_paths if method != "dsir" else dsir_weight_shards(config)
        chosen = select_many(
            method, ParquetSource(paths), config.selection.tau, seed=config.seed,
            temperature=config.selection.temperature, block_n=config.selection.block_n,
        )  # fmt: skip
        for tau, seq_ids in chosen.items():
            name = selection_dir_name(method, tau)
            top_k = method in ("color", "dsir")
            if config.selection.documents:
                seq_ids, name = expand_to_documents(seq_ids, token_paths), f"{name}-docs"
            summaries[name] = write_selection(
                seq_ids, token_dir, score_dir, out / "tokenizer", out / "selected" / name,
                method=method, tau=tau, params=_params(config, method),
                rows_per_shard=config.selection.output.rows_per_shard, seed=config.seed,
                config=to_dict(config), model_dirs=_model_dirs(out),
                threshold="min_selected" if top_k and not config.selection.documents else None,
                checksum_inputs=config.selection.output.checksum_inputs,
                histogram_bins=config.selection.output.histogram_bins,
                manifest_extra={"documents": _document_accounting(out)},
                command=f"colorfilter select <config> (method={method}, tau={tau:g})",
                repo_id=config.release.repo_id,
            )  # fmt: skip
    return summaries


def count_rows(paths: list[Path]) -> int:
    """Rows (chunks) of parquet shards, from their footers."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def check_pool_size(
    n_chunks: int, taus: list[float], min_chunks: int, key: str = "selection.tau"
) -> None:
    """Refuse every tau that keeps fewer than `selection.min_chunks` of the pool (floor(N/tau)),
    e.g. a tau larger than the pool, before any selection is written."""
    small = [tau for tau in taus if math.floor(n_chunks / tau) < min_chunks]
    if small:
        raise ConfigError(
            f"{key}=[{', '.join(f'{t:g}' for t in small)}] keeps fewer than selection.min_chunks="
            f"{min_chunks} of the pool's {n_chunks} chunks (floor(pool / tau)); use a tau <= "
            f"{n_chunks / min_chunks:g}, a larger pool, or a smaller selection.min_chunks"
        )


def _params(config: Config, method: str) -> dict:
    params: dict = {"seed": config.seed, "seq_len": config.seq_len}
    if method == "color_softmax":
        params["temperature"] = config.selection.temperature
    if method == "color_batchwise":
        params["block_n"] = config.selection.block_n
    if config.selection.documents:
        params["documents"] = "selected chunks widened to their whole source documents"
    return params


def _model_dirs(out: Path) -> dict[str, Path]:
    dirs = {"prior": out / "models" / "prior", "conditional": out / "models" / "conditional"}
    return {name: path for name, path in dirs.items() if path.is_dir()}


def _document_accounting(out: Path) -> dict:
    """Input records -> documents + skipped (by reason), from the prepare stage's stats."""
    stats_path = out / "tokens" / "pool" / "stats.json"
    if not stats_path.exists():
        return {}
    stats = read_json(stats_path)
    keys = ("files", "records", "documents", "tokens", "chunks", "tail_tokens_dropped", "skipped")
    return {key: stats.get(key) for key in keys}


def dsir_weight_shards(config: Config) -> list[Path]:
    """DSIR log importance weights of every pool chunk (target = downstream train), cached.

    Written to OUTPUT/scores/dsir/ with the token shards' names; reused when present.
    """
    from colorfilter.selection import dsir

    out = config.output_path
    token_paths = list_shards(out / "tokens" / "pool")
    target_paths = list_shards(out / "tokens" / "downstream_train")
    if not target_paths:
        raise ConfigError(
            "method 'dsir' needs the downstream train split: set data.downstream_train"
        )
    weight_dir = out / "scores" / "dsir"
    wanted = [weight_dir / p.name for p in token_paths]
    if all(p.exists() for p in wanted):
        return wanted
    decode = _chunk_decoder(out / "tokenizer")
    model = dsir.fit(_texts(target_paths, decode), _texts(token_paths, decode))
    for token_path, weight_path in zip(token_paths, wanted):
        _write_weights(token_path, weight_path, model, decode)
    return wanted


def _write_weights(token_path: Path, weight_path: Path, model, decode) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from colorfilter.selection import DSIR_WEIGHT, dsir

    table = pq.read_table(token_path, columns=["seq_id", "input_ids"])
    weights = dsir.log_importance(model, decode(table.column("input_ids")))
    write_parquet_atomic(
        weight_path,
        pa.table({"seq_id": table.column("seq_id"), DSIR_WEIGHT: pa.array(weights, pa.float32())}),
    )


def _texts(paths: list[Path], decode):
    import pyarrow.parquet as pq

    for path in paths:
        yield from decode(pq.read_table(path, columns=["input_ids"]).column("input_ids"))


def _chunk_decoder(tokenizer_dir: Path):
    """Batch-decode a list<int32> column to texts with the run's tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))

    def decode(column) -> list[str]:
        rows = [
            np.asarray(r, dtype=np.int64).tolist() for r in column.to_numpy(zero_copy_only=False)
        ]
        return tokenizer.decode_batch(rows, skip_special_tokens=False)

    return decode
