"""`colorfilter export` with SELECTION and OUT on a bucket (a real S3 server on 127.0.0.1):
the same bytes as on local disk, nothing written locally, and a damaged export resumes there."""

from __future__ import annotations

import pytest

from colorfilter.io import storage
from colorfilter.io.transfer import upload_folder
from tests.export.test_export import export, file_bytes


def bucket_bytes(root: storage.Location) -> dict[str, bytes]:
    return {info.location.relative_to(root): storage.read_bytes(info.location)
            for info in storage.find(root)}


def same_as_local(ours: dict[str, bytes], local: dict[str, bytes], out: str, local_out: str):
    assert ours.keys() == local.keys()
    for name, data in ours.items():
        if name == "export.json":
            continue
        if name == "data_paths.txt":  # URLs on the bucket, paths on disk
            data = data.replace(out.encode(), local_out.encode())
        assert data == local[name], name


@pytest.mark.parametrize("fmt", ["megatron", "olmo"])
def test_export_between_buckets_equals_local_disk(selection, s3_bucket, quiet_disk, tmp_path, fmt):
    local = tmp_path / "local"
    export(selection, local, fmt)
    upload_folder(selection, s3_bucket.join("selected", "color-tau1"))
    source, out = s3_bucket.join("selected", "color-tau1"), s3_bucket.join("export", fmt)
    summary = export(source.url, out.url, fmt)
    assert summary["out"] == out.url and not summary["noop"]
    same_as_local(bucket_bytes(out), file_bytes(local), out.url, str(local))
    manifest = storage.read_json(out.join("export.json"))
    assert manifest["source"]["url"] == source.url
    assert storage.read_text(out.join("data_paths.txt")).startswith(f"{out.url}/train-00000")
    # damage it on the bucket: one record gone, one data object torn, export.json gone
    names = sorted(bucket_bytes(out))
    records = [n for n in names if n.endswith(".done.json")]
    data = [n for n in names if n.endswith((".npy", ".bin"))]
    storage.remove(out.join(records[0]))
    storage.write_bytes(out.join(data[-1]), b"torn")
    storage.remove(out.join("export.json"))
    again = export(source.url, out.url, fmt)
    assert again["shards_reused"] == again["shards"] - 2
    same_as_local(bucket_bytes(out), file_bytes(local), out.url, str(local))
    assert list(quiet_disk.iterdir()) == []
