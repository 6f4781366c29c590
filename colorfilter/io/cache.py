"""Node-local copies of remote folders (models, tokenizers): fetched once per node.

Libraries like transformers and tokenizers want a local folder. Actors on a node without a
shared disk call `local_copy(url)`: the first one downloads the folder into the node's cache,
the others (other actors, other processes, later runs) wait on a file lock and reuse it.

Layout: `$COLORFILTER_CACHE` (default `~/.cache/colorfilter`) / `<key>-<name>/`, where the key
hashes the URL and the listing (every file's path, size and ETag/blob id), so a changed remote
folder gets a fresh copy while an unchanged one is never fetched twice. A copy is downloaded into
a temp folder, gets a completion marker, and is renamed into place whole (the cache is on a
local disk, where rename is atomic), so a kill mid-download leaves nothing a later call trusts.
Local paths (and file:// URLs) are returned as they are, without copying.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from colorfilter.io.storage import FileInfo, Location, as_location, filesystem, find

MARKER = ".colorfilter-complete.json"
CACHE_ENV = "COLORFILTER_CACHE"


def cache_root() -> Path:
    """The node-local cache folder: $COLORFILTER_CACHE or ~/.cache/colorfilter."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "colorfilter")


def local_copy(value: str | Location, cache_dir: str | Path | None = None,
               skip: tuple[str, ...] = ()) -> Path:
    """A local path holding the folder (or file) at `value`; remote ones are fetched once.
    `skip`: sub-folders to leave out (e.g. a model folder's `checkpoint/`, which a scorer
    never reads and which holds several times the weights in optimizer state)."""
    return fetch(value, cache_dir, skip)[0]


def fetch(value: str | Location, cache_dir: str | Path | None = None,
          skip: tuple[str, ...] = ()) -> tuple[Path, bool]:
    """(local path, whether this call downloaded it); the same path for every caller."""
    loc = as_location(value)
    if loc.is_local:
        return Path(loc.path), False
    files = find(loc)
    prefixes = tuple(s.strip("/") + "/" for s in skip)
    files = [f for f in files if not (prefixes and f.location != loc
                                       and f.location.relative_to(loc).startswith(prefixes))]
    if not files:
        raise FileNotFoundError(f"{loc.url}: no such file or folder")
    single = len(files) == 1 and files[0].location == loc
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = _key(loc, files)
    final = root / f"{key}-{_safe(loc.name)}"
    target = final / loc.name if single else final
    if _complete(final, files, loc, single):
        return target, False
    from filelock import FileLock

    with FileLock(str(root / f"{key}.lock")):
        if _complete(final, files, loc, single):
            return target, False  # another actor fetched it while we waited
        _download(loc, files, single, root, final)
    return target, True


def _download(loc: Location, files: list[FileInfo], single: bool, root: Path, final: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        names = [_relative(f, loc, single) for f in files]
        for name in names:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        fs = filesystem(loc)
        fs.get([f.location.path for f in files], [str(tmp / n) for n in names])
        for info, name in zip(files, names):
            got = (tmp / name).stat().st_size
            if got != info.size:
                raise OSError(f"{info.location.url}: fetched {got} bytes, expected {info.size}")
        marker = {
            "url": loc.url,
            "files": {n: f.size for n, f in zip(names, files)},
            "fetched_by": {"host": socket.gethostname(), "pid": os.getpid()},
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)  # an incomplete copy from an older layout or a manual edit
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _complete(final: Path, files: list[FileInfo], loc: Location, single: bool) -> bool:
    try:
        marker = json.loads((final / MARKER).read_text())
    except (OSError, ValueError):
        return False
    expected = {_relative(f, loc, single): f.size for f in files}
    if marker.get("files") != expected:
        return False
    return all((final / n).is_file() and (final / n).stat().st_size == s
               for n, s in expected.items())


def _relative(info: FileInfo, loc: Location, single: bool) -> str:
    return loc.name if single else info.location.relative_to(loc)


def source_url(path: str | Path) -> str | None:
    """The URL a path inside a cached copy was fetched from (for messages that must name what
    the user wrote, not the cache), or None for a path outside the cache."""
    path = Path(path).absolute()
    root = cache_root().absolute()
    if root not in path.parents:
        return None
    top = root / path.relative_to(root).parts[0]
    try:
        url = json.loads((top / MARKER).read_text())["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    rest = path.relative_to(top).as_posix()
    if rest == "." or not isinstance(url, str):
        return url if isinstance(url, str) else None
    return url if url.endswith("/" + rest) else f"{url}/{rest}"


def _key(loc: Location, files: list[FileInfo]) -> str:
    listing = [[f.location.url, f.size, f.version] for f in files]
    payload = json.dumps({"url": loc.url, "files": listing}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "root"
