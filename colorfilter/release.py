"""Upload a finished selection folder to the Hugging Face Hub as a dataset repo.

Only a folder whose manifest marks it complete, and whose files still match the manifest's
sha256, is uploaded; exactly the files the manifest lists (plus the manifest) are sent, so
stray files in the folder never leak. `HF_ENDPOINT` and the token (HF_TOKEN, or the saved
`hf auth login`) are read by `huggingface_hub` as usual; `huggingface_hub` is imported lazily.

A folder on a bucket (s3://, gs://, hf://) is checked against its manifest's sizes from one
listing, then only the files the manifest lists are downloaded into a temporary folder on local
disk, verified by sha256 and uploaded from there (credentials stay in the environment of each
client: nothing but the listed files reaches the hub). A rerun downloads again.

Resumability: with `hf_xet` installed (the default), `huggingface_hub>=1` `upload_folder` is a
streamed multi-commit pipeline that skips files already committed when rerun; on older
clients without that pipeline, folders over LARGE_FOLDER_BYTES use `upload_large_folder`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from colorfilter.dataset.manifest import (
    MANIFEST_NAME,
    list_files,
    read_manifest,
    verify_files,
)
from colorfilter.errors import EXIT_USAGE, ColorFilterError
from colorfilter.io import storage
from colorfilter.io.cache import cache_root
from colorfilter.io.faults import service_failure
from colorfilter.io.location import Location
from colorfilter.io.preflight import check_readable
from colorfilter.io.storage import filesystem

LARGE_FOLDER_BYTES = 2 * 1024**3  # switch to upload_large_folder on clients without pipelining
LARGE_FOLDER_FILES = 200
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class ReleaseError(ColorFilterError):
    """The folder cannot be released as it is (incomplete, modified, or bad repo id)."""

    exit_code = EXIT_USAGE


def plan_release(folder: str | Path) -> dict[str, Any]:
    """Check the folder against its manifest; return the files to upload (no network)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReleaseError(f"{folder} is not a directory")
    manifest = read_manifest(folder)
    if manifest is None:
        raise ReleaseError(
            f"{folder} has no complete {MANIFEST_NAME}: the selection was not finished; "
            "rerun the select stage"
        )
    problems = verify_files(folder, manifest)
    if problems:
        raise ReleaseError(
            f"{folder} no longer matches its manifest ({len(problems)} problems: "
            + "; ".join(problems[:5])
            + "): rerun the select stage"
        )
    listed = sorted([*manifest["files"], MANIFEST_NAME])
    sizes = {rel: (folder / rel).stat().st_size for rel in listed}
    return {
        "folder": str(folder.resolve()),
        "config_hash": manifest.get("config_hash"),
        "files": [{"path": rel, "size": sizes[rel]} for rel in listed],
        "total_bytes": sum(sizes.values()),
        "not_uploaded": [rel for rel in list_files(folder) if rel not in sizes],
    }


def release(
    folder: str | Path | Location,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """Upload `folder` to the dataset repo `repo_id` (created if missing); return what was done.

    With `dry_run`, only checks the folder and lists the files and sizes it would upload.
    """
    if not REPO_ID.match(repo_id):
        raise ReleaseError(f"repo id must look like 'org/name', got {repo_id!r}")
    remote = _remote(folder)
    plan = plan_remote_release(remote) if remote else plan_release(_local(folder))
    result = {**plan, "repo_id": repo_id, "private": private, "revision": revision or "main"}
    if dry_run:
        return {**result, "dry_run": True}
    import huggingface_hub

    if token is None and huggingface_hub.get_token() is None:
        raise ReleaseError("no Hugging Face token: set HF_TOKEN or run `hf auth login`")
    upload = {"repo_id": repo_id, "private": private, "revision": revision, "token": token,
              "commit_message": commit_message, "endpoint": endpoint}
    if remote is None:
        return {**result, **_publish_or_explain(plan["folder"], plan, upload)}
    with staged_copy(remote, plan) as local:
        plan_release(local)  # sha256 of every downloaded file against the manifest
        return {**result, **_publish_or_explain(str(local), plan, upload)}


def _publish_or_explain(folder: str, plan: dict[str, Any], upload: dict[str, Any]) -> dict:
    """`_publish`, with a hub that refuses (bad token) or does not answer (down, 5xx) told in
    one line naming its endpoint (exit 2); the token is never printed."""
    try:
        return _publish(folder, plan, **upload)
    except ColorFilterError:
        raise
    except Exception as exc:
        service = service_failure(exc, "the Hugging Face hub")
        if service is None:
            raise
        raise service from None


def _publish(
    folder: str, plan: dict[str, Any], *, repo_id: str, private: bool, revision: str | None,
    token: str | None, commit_message: str | None, endpoint: str | None,
) -> dict[str, Any]:
    """Create the repo (and branch) and upload the planned files of the local `folder`."""
    import huggingface_hub

    api = huggingface_hub.HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    if revision not in (None, "main"):
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    message = commit_message or f"colorfilter selection {(plan['config_hash'] or '')[:12]}"
    paths = [entry["path"] for entry in plan["files"]]
    method, commit = _upload(api, folder, repo_id, paths, revision, message, plan)
    return {
        "dry_run": False,
        "endpoint": api.endpoint,
        "repo_url": str(repo_url),
        "upload_method": method,
        "commit_oid": getattr(commit, "oid", None),
        "commit_url": getattr(commit, "commit_url", None),
    }


def _remote(folder: str | Path | Location) -> Location | None:
    """The folder as a Location when it is a URL (s3://, gs://, hf://), else None."""
    text = folder.url if isinstance(folder, Location) else str(folder)
    if "://" not in text:
        return None
    loc = Location.parse(text, key="release folder")
    return None if loc.is_local else loc


def _local(folder: str | Path | Location) -> Path:
    return Path(folder.path if isinstance(folder, Location) else folder)


def plan_remote_release(loc: Location) -> dict[str, Any]:
    """plan_release for a folder on a bucket: manifest and sizes from one listing (no download).

    The sha256 check needs the bytes, so it runs on the downloaded copy before any upload.
    """
    check_readable(loc, "release folder")
    sizes = {info.location.relative_to(loc): info.size for info in storage.find(loc)}
    if not sizes:
        raise ReleaseError(f"{loc.url} is not a folder (no objects under it)")
    manifest = read_manifest(loc)
    if manifest is None:
        raise ReleaseError(
            f"{loc.url} has no complete {MANIFEST_NAME}: the selection was not finished; "
            "rerun the select stage"
        )
    listing = {loc.join(rel).url: size for rel, size in sizes.items()}
    problems = verify_files(loc, manifest, verify_sha256=False, sizes=listing)
    if problems:
        raise ReleaseError(
            f"{loc.url} no longer matches its manifest ({len(problems)} problems: "
            + "; ".join(problems[:5]) + "): rerun the select stage"
        )
    listed = sorted([*manifest["files"], MANIFEST_NAME])
    return {
        "folder": loc.url,
        "config_hash": manifest.get("config_hash"),
        "files": [{"path": rel, "size": sizes[rel]} for rel in listed],
        "total_bytes": sum(sizes[rel] for rel in listed),
        "not_uploaded": sorted(rel for rel in sizes if rel not in set(listed)),
    }


@contextlib.contextmanager
def staged_copy(loc: Location, plan: dict[str, Any]) -> Iterator[Path]:
    """The planned files of a remote folder, downloaded into a temporary local folder."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".release-", dir=root) as tmp:
        rels = [entry["path"] for entry in plan["files"]]
        for rel in rels:
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
        sources = [loc.join(rel).path for rel in rels]
        filesystem(loc).get(sources, [str(Path(tmp) / rel) for rel in rels])
        yield Path(tmp)


def uses_large_folder_upload(api: Any, total_bytes: int, n_files: int) -> bool:
    """True on clients without the resumable upload_folder pipeline, for large folders."""
    pipelined = importlib.util.find_spec("huggingface_hub._upload_pipeline") is not None
    large = total_bytes >= LARGE_FOLDER_BYTES or n_files > LARGE_FOLDER_FILES
    return not pipelined and large and hasattr(api, "upload_large_folder")


def _upload(
    api: Any,
    folder: str,
    repo_id: str,
    paths: list[str],
    revision: str | None,
    message: str,
    plan: dict[str, Any],
) -> tuple[str, Any]:
    if uses_large_folder_upload(api, plan["total_bytes"], len(paths)):
        api.upload_large_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="dataset",
            revision=revision,
            allow_patterns=paths,
        )
        return "upload_large_folder", None
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="dataset",
        revision=revision,
        allow_patterns=paths,
        commit_message=message,
    )
    return "upload_folder", commit


def format_release(result: dict[str, Any]) -> str:
    """Human-readable lines for the CLI: what was (or would be) uploaded, and where."""
    verb = "would upload" if result["dry_run"] else "uploaded"
    lines = [
        f"{verb} {len(result['files'])} files ({_human(result['total_bytes'])}) from "
        f"{result['folder']} to dataset {result['repo_id']}@{result['revision']}"
        + (" (private)" if result["private"] else "")
    ]
    lines += [f"  {entry['size']:>14,d}  {entry['path']}" for entry in result["files"]]
    if result["not_uploaded"]:
        lines.append(f"not in the manifest, not uploaded: {', '.join(result['not_uploaded'])}")
    if not result["dry_run"]:
        lines.append(f"commit: {result.get('commit_url') or result.get('repo_url')}")
    return "\n".join(lines)


def _human(n_bytes: int) -> str:
    size = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n_bytes} B"
        size /= 1024
    return f"{n_bytes} B"
