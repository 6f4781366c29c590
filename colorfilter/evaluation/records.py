"""Evaluation run records: each finished run is a colorfilter.io.commit unit.

A run's record, OUTPUT/eval/runs/<name>.json, is a completion record with no data objects whose
`meta` is the run's result (its spec, run hash, data digest, losses, timings), written by the
driver after the run finished (temp-then-rename on disk, one PUT on a bucket). A rerun reads
them through `io.commit.committed` and trusts a record only when it parses as a unit and carries
the same run hash; a torn or foreign record means "train again".

Earlier versions wrote the result itself as plain JSON at the same name. Such a record is read
once here (`_earlier_records`): when its run hash matches, the run is reused and its record is
rewritten as a unit, so later reruns find units only. Reused rather than trained again because a
target run can be hours of accelerator time, and its run hash already says it is the same run.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from colorfilter.evaluation.plan import PlannedRun
from colorfilter.io import storage
from colorfilter.io.commit import committed, read_unit, write_unit
from colorfilter.io.location import Location, as_location

log = logging.getLogger(__name__)


def record_location(name: str, runs_dir: Location) -> Location:
    """Where the run named `name` keeps its record."""
    return runs_dir.join(f"{name}.json")


def read_record(location: str | Location) -> dict[str, Any] | None:
    """A run's result as its record holds it (None: missing, cut short, not a record)."""
    unit = read_unit(location)
    return dict(unit.meta) if unit is not None else None


def finished_records(runs: Sequence[PlannedRun], runs_dir: Location) -> dict[str, dict]:
    """{name: record} of the runs whose record is whole and carries the same run hash (read in
    one batch: concurrent requests on a bucket)."""
    where = {run.spec.name: record_location(run.spec.name, runs_dir) for run in runs}
    units = committed(where.values())
    records, others = {}, []
    for run in runs:
        unit = units.get(where[run.spec.name].url)
        if unit is None:
            others.append(run)
        elif unit.meta.get("run_hash") == run.run_hash:
            records[run.spec.name] = dict(unit.meta)
    records.update(_earlier_records(others, where))
    return records


def _earlier_records(runs: list[PlannedRun], where: dict[str, Location]) -> dict[str, dict]:
    """Plain-JSON records of earlier versions with the same run hash, rewritten as units."""
    present = storage.stat_many(where[run.spec.name] for run in runs)
    runs = [run for run in runs if present[where[run.spec.name].url] is not None]
    data = storage.read_many([where[run.spec.name] for run in runs])
    records = {}
    for run in runs:
        location = where[run.spec.name]
        try:
            record = json.loads(data[location.url] or b"null")
        except ValueError:  # cut short: trained again
            continue
        if isinstance(record, dict) and record.get("run_hash") == run.run_hash:
            log.info("evaluate: %s has an earlier version's record; rewriting it", run.spec.name)
            write_unit(location, {}, record)
            records[run.spec.name] = read_record(location)
    return records


def write_record(run: PlannedRun, result: dict[str, Any], runs_dir: Location) -> dict[str, Any]:
    """Commit a finished run's record; return it as a rerun will read it."""
    record = {
        "name": run.spec.name,
        **asdict(run.spec),
        "run_hash": run.run_hash,
        "selection_digest": run.selection_digest,
        "selected_full_chunks": run.selected_full_chunks,
        "epochs": run.spec.n_chunks / max(run.selected_full_chunks, 1),
        **result,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    location = record_location(run.spec.name, as_location(runs_dir))
    write_unit(location, {}, record)
    return read_record(location)
