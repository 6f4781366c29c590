"""Release to a fake Hub on 127.0.0.1 with the real huggingface_hub client, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from colorfilter.dataset.manifest import list_files
from colorfilter.release import (
    LARGE_FOLDER_BYTES,
    ReleaseError,
    format_release,
    release,
    uses_large_folder_upload,
)

RUN_RELEASE = """
import json, sys
from colorfilter.release import release
print(json.dumps(release(sys.argv[1], sys.argv[2], private=sys.argv[3] == "private")))
"""


def local_files(folder: Path) -> dict[str, bytes]:
    return {rel: (folder / rel).read_bytes() for rel in list_files(folder)}


def release_in_subprocess(folder: Path, hub, tmp_path: Path, *args: str, **env: str) -> dict:
    """Run release() in a fresh interpreter so HF_ENDPOINT/HF_TOKEN are read as in the CLI."""
    environ = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": "dummy",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        **env,
    }
    environ.pop("HF_HUB_OFFLINE", None)
    proc = subprocess.run(
        [sys.executable, "-c", RUN_RELEASE, str(folder), *args],
        env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_release_end_to_end_with_env_endpoint(folder, fake_hub, tmp_path):
    result = release_in_subprocess(folder, fake_hub, tmp_path, "org/selection", "private")
    assert result["endpoint"] == fake_hub.url and result["upload_method"] == "upload_folder"
    uploaded = fake_hub.files("org/selection")
    assert uploaded == local_files(folder)  # every file, byte for byte (manifest included)
    assert "manifest.json" in uploaded and any(p.startswith("data/train-") for p in uploaded)
    assert fake_hub.repo("org/selection").private is True
    commits = fake_hub.commits("org/selection")
    assert len(commits) == 1 and result["commit_oid"] == commits[0]["oid"]
    assert fake_hub.unknown == []

    # rerunning is a resume: every file is already there, so nothing is committed again
    again = release_in_subprocess(folder, fake_hub, tmp_path, "org/selection", "public")
    assert len(fake_hub.commits("org/selection")) == 1
    assert again["commit_oid"] == commits[0]["oid"]


def test_interrupted_upload_resumes_with_missing_files_only(folder, fake_hub, tmp_path):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=fake_hub.url, token="dummy")
    api.create_repo("org/selection", repo_type="dataset")
    first = ["README.md", "indices.npy", min(p for p in local_files(folder) if "train-" in p)]
    api.upload_folder(
        repo_id="org/selection", repo_type="dataset", folder_path=folder, allow_patterns=first
    )
    release_in_subprocess(folder, fake_hub, tmp_path, "org/selection", "public")
    commits = fake_hub.commits("org/selection")
    assert [c["paths"] for c in commits] == [
        sorted(first),
        sorted(set(local_files(folder)) - set(first)),
    ]
    assert fake_hub.files("org/selection") == local_files(folder)


def test_release_legacy_single_commit_path(folder, fake_hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    result = release(folder, "org/legacy", token="dummy", endpoint=fake_hub.url)
    assert fake_hub.files("org/legacy") == local_files(folder)
    assert result["commit_url"].startswith(fake_hub.url)
    text = format_release(result)
    assert text.startswith("uploaded") and result["commit_url"] in text
    assert fake_hub.repo("org/legacy").private is False


def test_release_to_a_branch(folder, fake_hub):
    release(folder, "org/selection", token="dummy", endpoint=fake_hub.url, revision="v1")
    assert fake_hub.files("org/selection", revision="v1") == local_files(folder)
    assert fake_hub.files("org/selection") == {}


def test_stray_files_are_listed_not_uploaded(folder, fake_hub):
    (folder / "notes.txt").write_text("scratch")
    result = release(folder, "org/selection", token="dummy", endpoint=fake_hub.url)
    assert result["not_uploaded"] == ["notes.txt"]
    assert "notes.txt" not in fake_hub.files("org/selection")
    assert set(fake_hub.files("org/selection")) == set(local_files(folder)) - {"notes.txt"}


def test_dry_run_lists_files_without_network(folder, fake_hub):
    result = release(folder, "org/selection", dry_run=True, endpoint=fake_hub.url)
    assert result["dry_run"] is True
    assert {e["path"]: e["size"] for e in result["files"]} == {
        rel: len(data) for rel, data in local_files(folder).items()
    }
    assert result["total_bytes"] == sum(e["size"] for e in result["files"])
    assert fake_hub.requests == []
    text = format_release(result)
    assert text.startswith("would upload") and "manifest.json" in text


def test_refuses_incomplete_or_modified_folders(folder, tmp_path):
    shard = next((folder / "data").glob("*.parquet"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match="sha256 differs"):
        release(folder, "org/selection", dry_run=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(ReleaseError, match="no complete manifest.json"):
        release(folder, "org/selection", dry_run=True)
    (folder / "manifest.json").unlink()
    with pytest.raises(ReleaseError, match="no complete manifest.json"):
        release(folder, "org/selection", dry_run=True)
    with pytest.raises(ReleaseError, match="not a directory"):
        release(tmp_path / "nowhere", "org/selection", dry_run=True)


def test_rejects_bad_repo_id_and_missing_token(folder, fake_hub, monkeypatch):
    import huggingface_hub

    with pytest.raises(ReleaseError, match="org/name"):
        release(folder, "no-namespace", dry_run=True)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ReleaseError, match="HF_TOKEN"):
        release(folder, "org/selection", endpoint=fake_hub.url)
    assert fake_hub.requests == []


def test_large_folder_upload_only_on_clients_without_pipeline(monkeypatch):
    import importlib.util

    class OldApi:
        def upload_large_folder(self, **kwargs):  # pragma: no cover - never called here
            raise AssertionError

    assert uses_large_folder_upload(OldApi(), LARGE_FOLDER_BYTES, 3) is False  # pipelined client
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert uses_large_folder_upload(OldApi(), LARGE_FOLDER_BYTES, 3) is True
    assert uses_large_folder_upload(OldApi(), 1024, 3) is False
    assert uses_large_folder_upload(object(), LARGE_FOLDER_BYTES, 3) is False
