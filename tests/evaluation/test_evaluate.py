"""The evaluate stage end to end on a tiny synthetic run directory (micro model, CPU)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from colorfilter.config import Config
from colorfilter.errors import BadDataError, ConfigError, DamagedDataError
from colorfilter.evaluation.config import EvaluateConfig
from colorfilter.evaluation.curve import data_multiplier
from colorfilter.evaluation.records import read_record
from colorfilter.evaluation.report import summary
from colorfilter.io.atomic import write_parquet_atomic
from colorfilter.io.token_shards import TOKEN_SCHEMA, make_seq_ids
from colorfilter.pipeline.evaluate import run_evaluate
from colorfilter.scoring.shard import SCORE_SCHEMA
from tests.conftest import mark_finished

VOCAB = 32
SEQ_LEN = 16


def _tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    eos = "<|endoftext|>"
    vocab = {eos: 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token=eos))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=eos, bos_token=eos, pad_token=eos, unk_token=eos
    ).save_pretrained(directory)


def _chunk(rng: np.random.Generator, book: bool, length: int) -> np.ndarray:
    """Books cycle through a fixed phrase; web text is uniform noise over the vocab."""
    if book:
        start = int(rng.integers(8))
        return (np.arange(start, start + length) % 8 + 1).astype(np.int32)
    return rng.integers(1, VOCAB, size=length).astype(np.int32)


def _shard(path: Path, file_index: int, books: np.ndarray, rng, short_last: bool) -> None:
    n = len(books)
    lengths = [SEQ_LEN] * n
    if short_last:
        lengths[-1] = SEQ_LEN // 2  # a file's short tail chunk: never trained on
    chunks = [_chunk(rng, bool(b), n_tok) for b, n_tok in zip(books, lengths, strict=True)]
    table = pa.table(
        {
            "seq_id": make_seq_ids(file_index, 0, n),
            "input_ids": pa.array(chunks, pa.list_(pa.int32())),
            "n_tokens": pa.array(lengths, pa.int32()),
            "source_file": [f"f{file_index}"] * n,
            "doc_first": pa.array(np.zeros(n, np.int64)),
            "doc_last": pa.array(np.zeros(n, np.int64)),
            "doc_offset": pa.array(np.zeros(n, np.int32)),
            "source": ["book:x" if b else "web" for b in books],
        },
        schema=TOKEN_SCHEMA,
    )
    write_parquet_atomic(path, table)


def _scores(path: Path, file_index: int, books: np.ndarray, rng) -> None:
    n = len(books)
    prior = rng.uniform(2.0, 3.0, n).astype(np.float32)
    cond = (prior - np.where(books, 1.0, 0.0) - rng.uniform(0, 0.3, n)).astype(np.float32)
    write_parquet_atomic(
        path,
        pa.table(
            {
                "seq_id": make_seq_ids(file_index, 0, n),
                "prior_loss": prior,
                "cond_loss": cond,
                "score": prior - cond,
                "n_tokens": pa.array([SEQ_LEN] * n, pa.int32()),
            },
            schema=SCORE_SCHEMA,
        ),
    )


def _run_dir(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("pool", "downstream_eval"):
        (root / "tokens" / split).mkdir(parents=True)
    (root / "scores" / "pool").mkdir(parents=True)
    for file_index in range(2):
        books = rng.random(120) < 0.2
        name = f"{file_index:05d}-00000.parquet"
        _shard(root / "tokens" / "pool" / name, file_index, books, rng, short_last=True)
        _scores(root / "scores" / "pool" / name, file_index, books, rng)
    _shard(
        root / "tokens" / "downstream_eval" / "00000.parquet",
        9,
        np.ones(24, bool),
        rng,
        short_last=False,
    )
    _tokenizer(root / "tokenizer")
    mark_finished(root, "prepare", "score")
    return root


def _config(root: Path) -> Config:
    # in-process runs (executor local); the tests of side-by-side runs switch to a real local Ray
    config = Config(output_dir=str(root), seq_len=SEQ_LEN, seed=0, device="cpu", executor="local")
    config.evaluate = EvaluateConfig(
        methods=["color", "random", "conditional_only", "prior_only"],
        taus=[2, 4],
        seeds=[0],
        preset="micro",
        random_multiples=[1, 2, 4],
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        torch_threads=1,
        target_source=["book:"],
        eval_batch_size=16,
    )
    return config


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> tuple[Path, Config, dict]:
    root = _run_dir(tmp_path_factory.mktemp("run"))
    config = _config(root)
    return root, config, run_evaluate(config)


def _copy_config(
    root: Path, tmp_path: Path, methods: list[str], taus: list[float], random_multiples: list[float]
) -> Config:
    """The fixture's run directory copied without its eval/, configured for a smaller evaluation."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("eval"))
    config = _config(copy)
    config.evaluate.methods, config.evaluate.taus = methods, taus
    config.evaluate.random_multiples = random_multiples
    return config


def test_report_schema_and_equal_budgets(evaluated) -> None:
    root, config, returned = evaluated
    report = json.loads((root / "eval" / "report.json").read_text())
    assert report == returned
    assert set(report) == {"results", "random_curve", "data_multiplier"}
    cells = {(r["method"], r["tau"]) for r in report["results"]}
    assert cells == {(m, t) for m in config.evaluate.methods for t in (2, 4)}
    for row in report["results"]:
        assert set(row) == {"method", "tau", "train_tokens", "heldout_loss"}
        assert np.isfinite(row["heldout_loss"]) and row["train_tokens"] % (8 * SEQ_LEN) == 0
    for tau in (2, 4):
        tokens = {r["train_tokens"] for r in report["results"] if r["tau"] == tau}
        assert len(tokens) == 1  # every method at a tau trains on the same tokens
    # the budget at tau 4 is the smallest selection's full chunks: 240 rows / 4 = 60 selected,
    # minus any short tail chunk, rounded down to batches of 8 -> 56 chunks
    assert {r["train_tokens"] for r in report["results"] if r["tau"] == 4} == {56 * SEQ_LEN}
    for point in report["random_curve"]:
        assert set(point) == {"train_tokens", "heldout_loss"}
    curve_tokens = [p["train_tokens"] for p in report["random_curve"]]
    assert curve_tokens == sorted(set(curve_tokens)) and len(curve_tokens) >= 3
    assert max(curve_tokens) <= 238 * SEQ_LEN  # capped by the pool's full chunks
    assert set(report["data_multiplier"]) == {"2", "4"}
    assert all(v is not None and v > 0 for v in report["data_multiplier"].values())


def test_runs_record_exact_tokens_and_outputs_exist(evaluated) -> None:
    root, _, _ = evaluated
    runs = [read_record(p) for p in (root / "eval" / "runs").glob("*.json")]
    assert runs and all(r["train_tokens"] == r["n_chunks"] * SEQ_LEN for r in runs)
    # random-curve runs draw from the whole pool: one pass over distinct chunks, never repeated
    curve = [r for r in runs if r["method"] == "random" and r["tau"] == 1.0]
    assert len(curve) >= 2 and all(r["epochs"] <= 1.0 for r in curve)
    for name in (
        "report.md",
        "details.json",
        "loss_vs_tau.png",
        "random_curve.png",
        "scores_by_source.png",
    ):
        assert (root / "eval" / name).stat().st_size > 0
    details = json.loads((root / "eval" / "details.json").read_text())
    color = details["composition"]["color-tau4"]
    random = details["composition"]["random-tau4"]
    # the scores favour books (~20% of the pool): CoLoR at tau 4 takes nearly all of them
    assert color["precision"] > 0.7 > 0.4 > random["precision"]
    assert color["recall"] > 0.9 > 0.5 > random["recall"]
    assert sum(color["tokens_by_source"].values()) == color["tokens"]
    report_md = (root / "eval" / "report.md").read_text()
    assert "| color |" in report_md and "one seed: spread not measured" in report_md
    overlap = details["overlap_with_color"]
    assert set(overlap) == {"2", "4"}
    assert set(overlap["4"]) == {"random", "conditional_only", "prior_only"}
    assert overlap["4"]["random"] < 0.5 and "## Overlap with CoLoR" in report_md


def test_scores_by_source_match_the_score_shards(evaluated) -> None:
    import pyarrow.parquet as pq

    root, _, _ = evaluated
    tokens = pq.read_table(sorted((root / "tokens" / "pool").glob("*.parquet")))
    scores = pq.read_table(sorted((root / "scores" / "pool").glob("*.parquet")))
    assert tokens.column("seq_id").equals(scores.column("seq_id"))
    book = np.array([s.startswith("book:") for s in tokens.column("source").to_pylist()])
    prior, cond = (
        scores.column(c).to_numpy().astype(np.float64) for c in ("prior_loss", "cond_loss")
    )
    rows = json.loads((root / "eval" / "details.json").read_text())["scores_by_source"]
    assert set(rows) == {"book:x", "web", "all", "target-like", "not target-like"}
    for name, mask in (("book:x", book), ("web", ~book), ("all", book | ~book)):
        assert rows[name]["chunks"] == int(mask.sum())
        assert rows[name]["prior_loss"] == pytest.approx(prior[mask].mean(), abs=1e-6)
        assert rows[name]["cond_loss"] == pytest.approx(cond[mask].mean(), abs=1e-6)
        assert rows[name]["prior_loss_std"] == pytest.approx(prior[mask].std(), abs=1e-6)
    assert rows["target-like"] == rows["book:x"] and rows["not target-like"] == rows["web"]
    # the fixture's conditional gains 1 nat on books and up to 0.3 elsewhere
    assert rows["book:x"]["score"] > 1.0 > 0.3 > rows["web"]["score"] > 0.0
    report_md = (root / "eval" / "report.md").read_text()
    assert "## Pool scores by source" in report_md and "| *target-like* |" in report_md


def test_multiple_choice_accuracy_per_run_and_in_the_report(evaluated, tmp_path) -> None:
    config = _copy_config(evaluated[0], tmp_path, ["color", "random"], [4], [1])
    copy = config.output_path
    items = [
        {"context": "w1 w2 w3", "choices": [" w4 w5", " w20 w9"], "label": 0},
        {"context": "w5 w6", "choices": [" w30", " w7", " w2"], "label": 1},
    ]
    mc_path = tmp_path / "mc.jsonl"
    mc_path.write_text("".join(json.dumps(item) + "\n" for item in items))
    config.evaluate.multiple_choice = [str(mc_path)]
    run_evaluate(config)
    runs = [read_record(p) for p in (copy / "eval" / "runs").glob("*.json")]
    assert runs and all(r["mc_items"] == 2 and 0 <= r["mc_accuracy"] <= 1 for r in runs)
    cells = json.loads((copy / "eval" / "details.json").read_text())["cells"]
    assert all("mc_accuracy" in c and "mc_accuracy_norm" in c for c in cells)
    report_md = (copy / "eval" / "report.md").read_text()
    assert "## Multiple-choice accuracy (2 items, rank classification)" in report_md
    config.evaluate.multiple_choice = [str(tmp_path / "missing.jsonl")]
    with pytest.raises(ConfigError, match="missing.jsonl"):
        run_evaluate(config)


def test_label_oracle_takes_every_target_like_chunk_first(evaluated, tmp_path) -> None:
    config = _copy_config(evaluated[0], tmp_path, ["color", "label_oracle"], [4, 8], [1])
    copy = config.output_path
    report = run_evaluate(config)
    assert {(r["method"], r["tau"]) for r in report["results"]} == {
        (m, t) for m in ("color", "label_oracle") for t in (4, 8)
    }
    details = json.loads((copy / "eval" / "details.json").read_text())
    oracle = details["composition"]["label_oracle-tau8"]
    color = details["composition"]["color-tau8"]
    # 240 chunks, ~20% books: 30 selected at tau 8, all of them books, so precision is 1
    assert oracle["precision"] == 1.0 >= color["precision"]
    # at tau 4 (60 chunks) every book fits: recall is 1 and the rest follow CoLoR's order
    assert details["composition"]["label_oracle-tau4"]["recall"] == 1.0
    report_md = (copy / "eval" / "report.md").read_text()
    assert "`label_oracle` is a reference, not a selector" in report_md
    assert "| label_oracle |" in report_md
    config.evaluate.target_source = []
    with pytest.raises(ConfigError, match="label_oracle needs evaluate.target_source"):
        run_evaluate(config)


def test_no_random_curve_without_multiples(evaluated, tmp_path, capsys) -> None:
    config = _copy_config(evaluated[0], tmp_path, ["color", "random"], [4], [])
    copy = config.output_path
    capsys.readouterr()
    report = run_evaluate(config)
    # a live line per finished run: runs done/total, ETA, the last run's held-out loss
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[evaluate]")]
    assert lines and lines[-1].startswith("[evaluate] 2/2 done, 112 chunks")
    assert re.search(r"last: \S+-tau4-n56-seed0 held-out \d+\.\d{4}", "\n".join(lines))
    # what the CLI prints at the end: the report's path and its headline table
    text = summary(copy / "eval").splitlines()
    assert text[0].startswith(f"report: {copy / 'eval' / 'report.md'}")
    assert text[2:4] == ["| method | τ=4 |", "|---|---|"]
    assert [row.split(" | ")[0] for row in text[4:]] == ["| color", "| random", "| *train tokens*"]
    # the random method's own run is the curve's only point
    assert [p["train_tokens"] for p in report["random_curve"]] == [56 * SEQ_LEN]
    assert sorted(p.name for p in (copy / "eval" / "runs").glob("*.json")) == [
        "color-tau4-n56-seed0.json",
        "random-tau4-n56-seed0.json",
    ]


def test_workers_train_the_same_runs_as_one_process(evaluated, tmp_path, ray_session) -> None:
    root, _, _ = evaluated
    config = _copy_config(root, tmp_path, ["color", "random"], [4], [1, 4])
    config.executor = "ray"  # Ray actors, two side by side, one torch thread each, as the fixture
    config.evaluate.workers, config.evaluate.torch_threads = 2, 0
    run_evaluate(config)
    runs = sorted((config.output_path / "eval" / "runs").glob("*.json"))
    assert [p.name for p in runs] == [
        "color-tau4-n56-seed0.json",
        "random-tau1-n224-seed0.json",  # the curve's 4x point
        "random-tau4-n56-seed0.json",
    ]
    for path in runs:
        parallel = read_record(path)
        alone = read_record(root / "eval" / "runs" / path.name)
        assert parallel["run_hash"] == alone["run_hash"]
        assert parallel["train_tokens"] == alone["train_tokens"]
        assert parallel["heldout_loss"] == pytest.approx(alone["heldout_loss"], rel=1e-6)
        assert parallel["torch_threads"] == alone["torch_threads"] == 1


def test_a_lone_run_trains_with_a_workers_threads(evaluated, tmp_path) -> None:
    from colorfilter.pipeline.evaluate_runs import threads_per_worker

    config = _copy_config(evaluated[0], tmp_path, ["random"], [4], [])
    config.evaluate.workers, config.evaluate.torch_threads = 2, 0
    run_evaluate(config)
    [path] = (config.output_path / "eval" / "runs").glob("*.json")
    # trained in this process, with the threads it would have had in a worker (numerics match)
    assert read_record(path)["torch_threads"] == threads_per_worker(config.evaluate)


def test_a_failed_run_in_a_worker_is_raised_and_not_recorded(
    evaluated, tmp_path, ray_session
) -> None:
    import shutil

    config = _copy_config(evaluated[0], tmp_path, ["color", "random"], [4], [])
    config.executor, config.evaluate.workers = "ray", 2
    shutil.rmtree(config.output_path / "tokens" / "downstream_eval")
    (config.output_path / "tokens" / "downstream_eval").mkdir()
    eval_shard = evaluated[0] / "tokens" / "downstream_eval" / "00000.parquet"
    (config.output_path / "tokens" / "downstream_eval" / "00000.parquet").write_bytes(
        eval_shard.read_bytes()[:-100]  # the workers read a truncated held-out shard
    )
    # the actors' setup checks the held-out shards: the stage stops before any run trains, with
    # the worker's one-line message naming the file (not a remote stack trace)
    with pytest.raises(BadDataError, match=r"held-out shard .*00000\.parquet.*(?i:parquet)"):
        run_evaluate(config)
    assert not list((config.output_path / "eval" / "runs").glob("*.json"))


def test_a_run_failing_in_an_actor_raises_its_error_and_writes_no_record(
    evaluated, tmp_path, ray_session
) -> None:
    from colorfilter.evaluation.plan import RunSpec, plan_indexed_run
    from colorfilter.io.token_shards import prepared_shards
    from colorfilter.models.data import read_chunk_index
    from colorfilter.pipeline.evaluate import target_setup
    from colorfilter.pipeline.evaluate_runs import run_all

    config = _copy_config(evaluated[0], tmp_path, ["random"], [4], [])
    setup = target_setup(config)
    paths = prepared_shards(config.output_path / "tokens" / "pool")
    index = read_chunk_index(paths)
    full = index.take(np.flatnonzero(index.n_tokens == SEQ_LEN))
    spec = RunSpec("random", 1.0, 16, 0)
    runs = [plan_indexed_run(spec, full, config.evaluate, setup)]
    for path in paths:  # planned, then the pool's token shards are truncated under the runs
        path.write_bytes(path.read_bytes()[:-100])
    runs_dir = config.output_path / "eval" / "runs"
    runs_dir.mkdir(parents=True)
    with pytest.raises(Exception, match="(?i)parquet") as raised:
        run_all(runs, config.evaluate, setup, runs_dir, False, "ray", config.ray)
    # raised in an actor's run, and told as damage: one line naming the shard and the stage
    assert isinstance(raised.value, DamagedDataError)
    assert re.search(r"token shard .*/tokens/pool/0000\d-\d+\.parquet is damaged .*rerun "
                     r"`colorfilter prepare`", str(raised.value))
    assert not list(runs_dir.glob("*.json"))


def test_workers_must_be_at_least_one(evaluated, tmp_path) -> None:
    config = _copy_config(evaluated[0], tmp_path, ["color"], [4], [])
    config.evaluate.workers = 0
    with pytest.raises(ConfigError, match="evaluate.workers must be >= 1"):
        run_evaluate(config)


def test_label_oracle_needs_source_labels(evaluated, tmp_path) -> None:
    import pyarrow.parquet as pq

    config = _copy_config(evaluated[0], tmp_path, ["color", "label_oracle"], [4], [])
    for shard in (config.output_path / "tokens" / "pool").glob("*.parquet"):
        write_parquet_atomic(shard, pq.read_table(shard).drop_columns(["source"]))
    with pytest.raises(ConfigError, match="needs the pool's `source` labels"):
        run_evaluate(config)


def test_score_shards_missing_rows_are_refused(evaluated, tmp_path) -> None:
    import shutil

    import pyarrow.parquet as pq

    root, config, _ = evaluated
    copy = tmp_path / "run"
    shutil.copytree(root, copy)
    shard = sorted((copy / "scores" / "pool").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    write_parquet_atomic(shard, table.slice(0, table.num_rows - 1))
    config = _config(copy)
    with pytest.raises(BadDataError, match="239 rows for 240 chunks"):
        run_evaluate(config)


def test_overlap_with_color_is_the_shared_share_of_each_selection() -> None:
    from colorfilter.evaluation.packed import PackedIds
    from colorfilter.pipeline.evaluate_selections import overlap_with_color

    cfg = EvaluateConfig(methods=["color", "dsir", "random"], taus=[4])
    ids = lambda *xs: PackedIds.pack(np.array(xs, dtype=np.uint64))  # noqa: E731
    selections = {
        ("color", 4.0): ids(1, 2, 3, 4),
        ("dsir", 4.0): ids(4, 3, 5, 6),
        ("random", 4.0): ids(7, 8, 9, 10),
    }
    assert overlap_with_color(cfg, selections) == {"4": {"dsir": 0.5, "random": 0.0}}
    assert overlap_with_color(EvaluateConfig(methods=["random"], taus=[4]), selections) == {}


def test_rerun_skips_finished_runs(evaluated, monkeypatch) -> None:
    root, config, first = evaluated
    import colorfilter.evaluation.train as train_module

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "train_and_evaluate", refuse)
    assert run_evaluate(config) == first
    with pytest.raises(AssertionError, match="trained again"):
        run_evaluate(config, overwrite=True)


def test_data_multiplier_interpolates_and_marks_bounds() -> None:
    curve = [(100, 4.0), (400, 3.0), (1600, 2.0)]
    inside = data_multiplier(curve, 2.5, 100)
    assert inside["bound"] is None and inside["value"] == pytest.approx(8.0)
    assert data_multiplier(curve, 1.0, 100) == {
        "value": 16.0,
        "bound": "lower",
        "random_tokens": 1600.0,
    }
    assert data_multiplier(curve, 5.0, 100)["bound"] == "upper"
    # a noisy curve (a bigger run worse than a smaller one) is made monotone first
    assert data_multiplier([(100, 4.0), (200, 4.2), (400, 3.0)], 3.5, 100)["value"] > 1.0


def test_repeated_order_repeats_whole_passes_deterministically() -> None:
    from colorfilter.evaluation.plan import repeated_order
    from colorfilter.models.data import ChunkIndex

    n = 10
    index = ChunkIndex(
        [Path("x")],
        np.zeros(n, np.int32),
        np.arange(n, dtype=np.int64),
        np.arange(100, 100 + n, dtype=np.uint64),
        np.full(n, SEQ_LEN, np.int32),
    )
    order = repeated_order(index, 25, seed=3)
    assert len(order) == 25 and np.array_equal(order, repeated_order(index, 25, seed=3))
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
    assert not np.array_equal(order[:10], order[10:20])  # each pass is its own shuffle


def test_verdict_compares_color_with_each_method_against_the_spread() -> None:
    from colorfilter.evaluation.report import _verdict_lines

    cfg = EvaluateConfig(methods=["color", "random", "dsir"], taus=[8])

    def cell(losses: list[float]) -> dict:
        return {
            "mean": float(np.mean(losses)),
            "spread": float(np.std(losses, ddof=1)),
            "losses": losses,
            "seeds": [0, 1],
        }

    cells = {
        ("color", 8.0): cell([5.0, 5.1]),
        ("random", 8.0): cell([6.0, 6.2]),
        ("dsir", 8.0): cell([5.05, 5.1]),
    }
    rows = [line for line in _verdict_lines(cfg, cells) if line.startswith("| 8 |")]
    assert rows == [
        "| 8 | random | +1.0500 | 0.1414 | +1.0500 ± 0.0707 | CoLoR lower, clear |",
        "| 8 | dsir | +0.0250 | 0.0707 | +0.0250 ± 0.0354 | CoLoR lower, within spread |",
    ]


def test_training_on_one_source_at_a_time(evaluated) -> None:
    """scripts/eval_by_source.py: book-only targets beat web-only ones on the book held-out set."""
    import importlib.util

    root, config, _ = evaluated
    path = Path(__file__).resolve().parents[2] / "scripts" / "eval_by_source.py"
    spec = importlib.util.spec_from_file_location("eval_by_source", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    book, web = script.train_on_sources(config, [["book:"], ["web"]], n_chunks=48, seed=0)
    assert book["train_tokens"] == web["train_tokens"] == 48 * SEQ_LEN
    assert 0 < book["full_chunks"] < web["full_chunks"]
    assert book["heldout_loss"] < web["heldout_loss"]


def test_accuracy_cells_show_the_spread_over_seeds() -> None:
    from colorfilter.evaluation.report import _accuracy_text

    two = {
        "losses": [5.0, 5.1],
        "mc_accuracy": {"mean": 0.2, "spread": 0.01},
        "mc_accuracy_norm": {"mean": 0.3, "spread": 0.02},
    }
    assert _accuracy_text(two) == "20.0 ± 1.0% / 30.0 ± 2.0%"
    assert _accuracy_text({**two, "losses": [5.0]}) == "20.0% / 30.0%"
    assert _accuracy_text({"losses": [5.0]}) == _accuracy_text(None) == "—"
