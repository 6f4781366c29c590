"""Helpers for node-fault tests: a real multi-node Ray on loopback, and slowed real workers.

The workers are the real prepare/score workers with a pause per task and a mark file saying
which node started and finished which task, so a test can kill a node while it holds a task.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from colorfilter.dataset.runs import MapWorker
from colorfilter.dataset.work import SelectWorker
from colorfilter.pipeline.prepare import PrepareWorker
from colorfilter.pipeline.score import ScoreWorker

TASK_PAUSE_S = 0.8
# a dead node is noticed after ~5 s of missed health checks (Ray's default: ~15 s)
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 5}
HEAD_ARGS = {"num_cpus": 0, "object_store_memory": 100 << 20, "include_dashboard": False,
             "_system_config": HEALTH_CHECKS}  # fmt: skip
WORKER_NODE = {"num_cpus": 1, "num_gpus": 1, "object_store_memory": 80 << 20}


def _mark(marks: Path, event: str, name: str) -> None:
    import ray

    marks.mkdir(parents=True, exist_ok=True)
    node = ray.get_runtime_context().get_node_id()
    (marks / f"{event}~{name}~{node}~{os.getpid()}").touch()


class SlowPrepareWorker(PrepareWorker):
    """The real prepare worker, TASK_PAUSE_S slower per file; marks in OUTPUT/../marks."""

    def __call__(self, task):
        marks = Path(task.split_dir).parents[2] / "marks"
        name = f"{task.split}-{task.file_index}"
        _mark(marks, "start", name)
        time.sleep(TASK_PAUSE_S)
        result = super().__call__(task)
        _mark(marks, "done", name)
        return result


class SlowScoreWorker(ScoreWorker):
    """The real score worker, TASK_PAUSE_S slower per shard; marks in OUTPUT/../marks."""

    def __call__(self, task):
        marks = Path(task.score_path).parents[3] / "marks"
        name = Path(task.score_path).stem
        _mark(marks, "start", name)
        time.sleep(TASK_PAUSE_S)
        result = super().__call__(task)
        _mark(marks, "done", name)
        return result


class SlowMapWorker(MapWorker):
    """The real select map worker, TASK_PAUSE_S slower per shard; marks in OUTPUT/../marks."""

    def __call__(self, task):
        marks = Path(task.score_path).parents[3] / "marks"
        name = f"map-{task.index}"
        _mark(marks, "start", name)
        time.sleep(TASK_PAUSE_S)
        result = super().__call__(task)
        _mark(marks, "done", name)
        return result


class SlowSelectWorker(SelectWorker):
    """select's worker with the slowed map above (actors unpickle this class, not a patch)."""

    def __init__(self, settings):
        super().__init__(settings)
        self.map = SlowMapWorker(settings)


def marks(root: Path, event: str) -> list[tuple[str, str]]:
    """(task, node id) of every `event` ("start"/"done") mark under root/marks."""
    folder = root / "marks"
    found = folder.glob(f"{event}~*") if folder.exists() else []
    return [tuple(p.name.split("~")[1:3]) for p in found]


class LoopbackCluster:
    """A head with no CPUs (the driver's node) and worker nodes of 1 CPU + 1 GPU-like slot,
    in its own Ray temp dir, so no other Ray on the machine sees it (nor its address file)."""

    def __init__(self, runtime_env: dict | None = None) -> None:
        import ray
        from ray.cluster_utils import Cluster

        self.temp_dir = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: socket paths
        self.saved_tmpdir = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = self.temp_dir  # Ray's temp root: RAY_TMPDIR/ray
        ray_dir = os.path.join(self.temp_dir, "ray")
        os.makedirs(ray_dir)
        self.cluster = Cluster(
            initialize_head=True, head_node_args={**HEAD_ARGS, "temp_dir": ray_dir}
        )
        ray.init(address=self.cluster.address, log_to_driver=False, runtime_env=runtime_env)

    def add_worker(self):
        return self.cluster.add_node(**WORKER_NODE)

    def kill(self, node) -> float:
        """Kill a worker node at once (no graceful shutdown); return the time of the kill."""
        self.cluster.remove_node(node, allow_graceful=False)
        return time.monotonic()

    def node_ids(self) -> set[str]:
        return {node.node_id for node in self.cluster.worker_nodes}

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()
        if self.saved_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = self.saved_tmpdir
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@contextlib.contextmanager
def instead_of_session_ray(runtime_env: dict | None = None):
    """A LoopbackCluster while the session's local Ray (if any) is stopped; it is started
    again afterwards, as tests/conftest.py starts it."""
    import ray

    had_ray = ray.is_initialized()
    ray.shutdown()
    loopback = LoopbackCluster(runtime_env)
    try:
        yield loopback
    finally:
        loopback.shutdown()
        if had_ray:
            ray.init(address="local", num_cpus=2, object_store_memory=300 * 1024 * 1024,
                     include_dashboard=False, log_to_driver=False)  # fmt: skip


def run_killing_node(
    cluster, root: Path, node, stage, add_node: bool, min_done: int = 0, timeout_s: float = 180.0
) -> dict:
    """Run `stage()` in a thread and, from this one (Ray adds nodes from the main thread only),
    kill `node` while it runs a task once `min_done` tasks are done, then maybe add a fresh
    node. Returns the kill time, the task it interrupted, the new node, the stage's end time and
    its result or exception."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = stage()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc
        outcome["ended_at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while thread.is_alive() and time.monotonic() < deadline and "killed_at" not in outcome:
        done = {task for task, _node in marks(root, "done")}
        started = {task for task, node_id in marks(root, "start") if node_id == node.node_id}
        if len(done) >= min_done and started - done:
            outcome["killed_at"] = cluster.kill(node)
            outcome["task"] = sorted(started - done)[0]
            if add_node:
                outcome["added"] = cluster.add_worker()
        time.sleep(0.05)
    thread.join(timeout_s)
    assert "killed_at" in outcome, f"no node was killed: {outcome}"
    return outcome


def slow_cli_main() -> None:
    """`python -m colorfilter` with the slowed workers: a driver to stop mid-stage."""
    import sys

    from colorfilter.pipeline import prepare, score

    prepare.PrepareWorker, score.ScoreWorker = SlowPrepareWorker, SlowScoreWorker
    sys.argv = ["colorfilter", *sys.argv[1:]]
    from colorfilter.cli import main

    main()


def prepare_scoring_run(tmp_path: Path, tokenizer_dir: Path, inputs: dict, **extra):
    """A prepared run (in-process) with two small random models saved as prior and conditional."""
    from colorfilter.pipeline.stages import run_stage
    from tests.conftest import save_random_models
    from tests.pipeline.test_prepare import make_config

    config = make_config(tmp_path, tokenizer_dir, inputs, **{
        "prepare.rows_per_shard": 96, "score.batch_size": 8, "score.torch_threads": 1,
        "score.worker_cpus": 1, "score.num_workers": 2, **extra,
    })  # fmt: skip
    run_stage("prepare", config)
    save_random_models(config)
    return config


NODE_ROOT_ENV = "COLORFILTER_TEST_NODE_ROOT"


def isolate_worker() -> None:
    """Ray worker setup hook: every worker process runs in its own empty working directory and
    uses its node's own cache ($COLORFILTER_TEST_NODE_ROOT/<node>/cache), so a stray relative
    path fails and a fetch made on one node is not seen by another (as without a shared disk)."""
    import ray

    root = os.environ.get(NODE_ROOT_ENV)
    if not root:
        return
    node = ray.get_runtime_context().get_node_id()[:12]
    cwd = Path(root) / node / f"cwd-{os.getpid()}"
    cwd.mkdir(parents=True, exist_ok=True)
    os.chdir(cwd)
    os.environ["COLORFILTER_CACHE"] = str(Path(root) / node / "cache")
