"""A `colorfilter export` killed with kill -9 reruns to byte-identical files.

The killed exports are real CLI subprocesses. To kill them at a chosen point rather than at a
lucky moment, the subprocess (`child_main`) freezes either inside the write of its Nth output
file (the bytes half sent, the file not yet whole) or just before its Nth shard record (the
shard's files all written); the test then sends SIGKILL, which leaves exactly what a kill -9 at
that instant leaves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.export.test_export import export, file_bytes

REPO = Path(__file__).resolve().parents[2]
FREEZE_ENV = "COLORFILTER_TEST_EXPORT_FREEZE"
CHILD_BOOT = "from tests.export.test_export_kill import child_main; child_main()"


def child_main() -> None:
    """The CLI, frozen at the point $FREEZE_ENV names ("write|N|MARKER" or "record|N|MARKER")."""
    from colorfilter.export import driver
    from colorfilter.io import storage

    point, count, marker = os.environ[FREEZE_ENV].split("|")
    seen: list[str] = []

    def freeze(where: str) -> None:
        Path(marker).write_text(where)
        while True:  # until the test's SIGKILL
            time.sleep(60)

    write, commit = driver.write_file, driver.commit_unit

    def write_or_freeze(loc, output):
        seen.append(loc.url)
        if point == "write" and len(seen) == int(count):
            with storage.open_write(loc) as handle:
                handle.write(b"half of a file")
                freeze(loc.url)
        return write(loc, output)

    def commit_or_freeze(record, objects, meta=None, sha256=False):
        if point == "record" and len(seen) >= int(count):
            freeze(str(record))
        return commit(record, objects, meta, sha256)

    driver.write_file, driver.commit_unit = write_or_freeze, commit_or_freeze
    sys.argv = ["colorfilter", *sys.argv[1:]]
    from colorfilter.cli import main

    main()


def kill_when_frozen(args: list[str], spec: str, work: Path) -> str:
    marker, log = work / "frozen.txt", work / "export.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), FREEZE_ENV: f"{spec}|{marker}"}
    with open(log, "wb") as out:
        child = subprocess.Popen([sys.executable, "-c", CHILD_BOOT, *args], env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while not marker.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)  # kill -9: no cleanup code runs
        child.wait()
    assert marker.exists(), f"the export never reached {spec}:\n{log.read_text()[-3000:]}"
    return marker.read_text()


def comparable(out: Path) -> dict[str, bytes]:
    """The files of an export, less export.json (its creation time) and the paths file with
    OUT itself taken out of it."""
    files = file_bytes(out)
    files.pop("export.json")
    files["data_paths.txt"] = files["data_paths.txt"].replace(str(out).encode(), b"OUT")
    return files


@pytest.mark.parametrize(("fmt", "spec"), [("olmo", "write|4"), ("megatron", "record|5")])
def test_kill_9_then_rerun_gives_the_same_bytes(selection, tmp_path, fmt, spec):
    reference = tmp_path / "reference"
    export(selection, reference, fmt)
    out = tmp_path / "out"
    where = kill_when_frozen(["export", str(selection), str(out), "--format", fmt], spec, tmp_path)
    assert not (out / "export.json").exists()
    if spec.startswith("write"):
        assert [p.name for p in out.glob(".tmp-*")] and not Path(where).exists()
    else:
        assert not Path(where).exists() and len(list(out.glob("*.done.json"))) == 2
    summary = export(selection, out, fmt)
    assert 0 < summary["shards_reused"] < summary["shards"]
    assert comparable(out) == comparable(reference)
    assert not list(out.glob(".tmp-*"))
    assert json.loads((out / "export.json").read_text())["counts"] == json.loads(
        (reference / "export.json").read_text())["counts"]
