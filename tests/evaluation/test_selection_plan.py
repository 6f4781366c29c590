"""One selection plan: evaluate trains on exactly the chunks `colorfilter select` writes, for
every method, with the config's non-default temperature and block_n."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq

from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.io.token_shards import list_shards, shard_locations
from colorfilter.layout import RunLayout
from colorfilter.pipeline.evaluate_selections import method_selections
from colorfilter.pipeline.select import run_select, score_source
from colorfilter.selection import DSIR_WEIGHT, dsir
from colorfilter.selection import METHODS as ALL_METHODS
from tests.evaluation.test_evaluate import _config, _run_dir

# color_distilled needs the cascade's distill stage: tests/distill covers it the same way
METHODS = [m for m in ALL_METHODS if m != "color_distilled"]


def test_evaluate_selects_what_select_writes_for_every_method(tmp_path):
    root = _run_dir(tmp_path / "run")
    tokens = root / "tokens"
    shutil.copytree(tokens / "downstream_eval", tokens / "downstream_train")  # DSIR's target
    config = _config(root)
    config.executor = "local"
    config.selection = replace(
        config.selection, methods=list(METHODS), tau=[4.0], temperature=0.25, block_n=3
    )
    config.evaluate = EvaluateConfig(methods=list(METHODS), taus=[4.0], random_multiples=[])
    run_select(config)
    run = RunLayout.of(config)
    token_paths = shard_locations(run.tokens("pool"))
    scores = score_source(config, run, token_paths, METHODS)
    evaluated = method_selections(config, config.evaluate, scores, token_paths)
    assert sorted(evaluated) == sorted((m, 4.0) for m in METHODS)
    for method in METHODS:
        written = np.load(root / "selected" / f"{method}-tau4" / "indices.npy")
        assert np.array_equal(evaluated[(method, 4.0)].ids(), np.sort(written)), method
    assert np.array_equal(dsir_weights(root), serial_dsir_weights(root))
    default = replace(config, selection=replace(config.selection, temperature=1.0, block_n=64))
    others = method_selections(default, config.evaluate, scores, token_paths)
    for method in ("color_softmax", "color_batchwise"):  # the settings reach evaluate's methods
        assert not np.array_equal(others[(method, 4.0)].ids(), evaluated[(method, 4.0)].ids())


def dsir_weights(root) -> np.ndarray:
    table = pq.read_table(list_shards(root / "scores" / "dsir"))
    return table.column(DSIR_WEIGHT).to_numpy()


def serial_dsir_weights(root) -> np.ndarray:
    """DSIR fitted in one process over the whole pool, as the executor tasks must reproduce."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(root / "tokenizer" / "tokenizer.json"))

    def texts(split):
        table = pq.read_table(list_shards(root / "tokens" / split), columns=["input_ids"])
        rows = table.column("input_ids").to_pylist()
        return tokenizer.decode_batch(rows, skip_special_tokens=False)

    model = dsir.fit(texts("downstream_train"), texts("pool"))
    return dsir.log_importance(model, texts("pool"))
