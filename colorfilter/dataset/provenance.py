"""Input hashes for manifests, taken from the completion records prepare and score write.

Prepare records each input file's parts (`tokens/<split>/_done/<file>.json`: part_bytes and
part_sha256 by part name); score commits each score shard with a colorfilter.io.commit record
(`scores/<split>/<shard>.done.json`: the object's size and sha256; older runs wrote
`scores/<split>/_done/<shard>.json` with bytes and sha256). A hash is reused only when the
record names the file and its size matches; otherwise (older records, a file rewritten since)
the file is hashed again.
"""

from __future__ import annotations

from pathlib import Path

from colorfilter.io.atomic import read_json_object
from colorfilter.io.commit import read_record
from colorfilter.scoring.shard import done_record_path

DONE_DIR = "_done"


def recorded_sha256(path: str | Path) -> str | None:
    """The sha256 a stage recorded when it wrote `path`, if it still describes the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        return None
    unit = read_record(done_record_path(path))  # a score shard's colorfilter.io.commit record
    entry = unit["objects"].get(path.name) if unit else None
    if entry and entry["size"] == size and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    done = path.parent / DONE_DIR
    score = read_json_object(done / f"{path.stem}.json")
    if score is not None and score.get("bytes") == size and isinstance(score.get("sha256"), str):
        return score["sha256"]
    prepare = read_json_object(done / f"{path.stem.split('-')[0]}.json")
    if prepare is not None:
        sizes, hashes = prepare.get("part_bytes"), prepare.get("part_sha256")
        if isinstance(sizes, dict) and isinstance(hashes, dict) and sizes.get(path.name) == size:
            value = hashes.get(path.name)
            return value if isinstance(value, str) else None
    return None
