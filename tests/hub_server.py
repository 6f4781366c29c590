"""A fake Hugging Face Hub on 127.0.0.1 for tests: enough of the API for the real client to
create repos and branches and upload folders, storing the files in memory.

Implements what `huggingface_hub` 2.4 calls for `create_repo`, `create_branch` and
`upload_folder` (both its xet-pipelined path and the legacy single-commit path), when every file
is answered `uploadMode: "regular"` (contents travel base64-encoded in the commit's JSON lines,
so no LFS or xet storage is needed):

  POST /api/repos/create                          -> 200, or 409 when the repo exists
  POST /api/validate-yaml                         -> parses the README front matter
  POST /api/{type}s/{repo}/preupload/{rev}        -> uploadMode regular + remote git oid
  POST /api/{type}s/{repo}/commit/{rev}           -> applies file / deletedFile / deletedFolder
  POST /api/{type}s/{repo}/branch/{branch}        -> 200, or 409 when the branch exists
  GET  /api/{type}s/{repo}[/revision/{rev}]       -> repo info with head sha and siblings
  GET  /api/whoami-v2                             -> a fixed user
  GET  /api/agent-harnesses                       -> an empty registry

and, for reading through `HfFileSystem` (hf:// URLs) and `hf_hub_download`:

  GET  /api/{type}s/{repo}/tree/{rev}[/{path}]    -> files and folders (recursive=True: all)
  POST /api/{type}s/{repo}/paths-info/{rev}       -> entries for the form's `paths`
  GET|HEAD /[{type}s/]{repo}/resolve/{rev}/{path} -> file bytes (Range requests: 206)

Write calls without an `Authorization: Bearer` header (or with a token in `refused_tokens`)
get 401; while `outage` is set, every request gets that status (a hub that is down). Every
request is recorded in `FakeHub.requests`; unknown routes get 404 and are listed in
`FakeHub.unknown`.

Usage:
    with FakeHub() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "dummy"}
        ...
        assert hub.files("org/name") == {...}
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

REPO_ACTION = re.compile(
    r"^/api/(models|datasets|spaces)/(.+?)/(preupload|commit|branch|revision)/(.+)$"
)
REPO_INFO = re.compile(r"^/api/(models|datasets|spaces)/([^/]+(?:/[^/]+)?)$")
TREE = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$")
PATHS_INFO = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/paths-info/([^/]+)$")
RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
USER = "tester"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports it for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeRepo:
    """One repository: files per branch and the commit history per branch."""

    repo_type: str
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {"main": []})

    def head(self, branch: str) -> str:
        history = self.commits[branch]
        return history[-1]["oid"] if history else "0" * 40


class FakeHub:
    """The server and its state; start with `with FakeHub() as hub` or `start()`/`stop()`."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.unknown: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.refused_tokens: set[str] = set()  # write calls with one of these get 401
        self.outage: int | None = None  # when set, every request gets this status (e.g. 503)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        handler = type("BoundHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_files(self, repo_id: str, files: dict[str, bytes], repo_type: str = "dataset") -> None:
        """Create a public repo holding `files` on main (one commit), bypassing the upload API."""
        with self.lock:
            repo = self.repos.setdefault((repo_type, repo_id), FakeRepo(repo_type, False))
            repo.branches["main"].update(files)
            oid = hashlib.sha1(repr(sorted(repo.branches["main"])).encode()).hexdigest()
            commit = {"oid": oid, "summary": "add files", "paths": sorted(files)}
            repo.commits["main"].append(commit)

    def repo(self, repo_id: str, repo_type: str = "dataset") -> FakeRepo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> dict:
        """{path: bytes} at the head of a branch."""
        with self.lock:
            return dict(self.repo(repo_id, repo_type).branches[revision])

    def commits(self, repo_id: str, repo_type: str = "dataset", revision: str = "main") -> list:
        with self.lock:
            return list(self.repo(repo_id, repo_type).commits[revision])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    # -- plumbing -------------------------------------------------------------------------

    def _path(self) -> str:
        return urlsplit(self.path).path

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[len("Bearer "):] not in self.hub.refused_tokens:
            return True
        self._error(401, "Invalid credentials in Authorization header")
        return False

    def _unknown(self, body: bytes = b"") -> None:
        with self.hub.lock:
            self.hub.unknown.append((self.command, self.path))
        self._error(404, f"fake hub: no route for {self.command} {self.path}")

    # -- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self._path()
        with self.hub.lock:
            self.hub.requests.append(("GET", path))
        if self.hub.outage:
            return self._error(self.hub.outage, "the hub is down")
        if path == "/api/whoami-v2":
            return self._send(200, {"type": "user", "name": USER, "orgs": []})
        if path == "/api/agent-harnesses":  # the client's user-agent registry: empty here
            return self._send(200, {"standardEnvVars": [], "harnesses": {}})
        match = TREE.match(path)
        if match:
            query = parse_qs(urlsplit(self.path).query)
            recursive = query.get("recursive", ["False"])[0].lower() == "true"
            repo_type, repo_id, rev, sub = match.groups()
            return self._tree(repo_type[:-1], repo_id, unquote(rev), unquote(sub or ""), recursive)
        match = RESOLVE.match(path)
        if match:
            return self._resolve(match, head=False)
        match = REPO_ACTION.match(path)
        if match and match.group(3) == "revision":
            return self._repo_info(match.group(1)[:-1], match.group(2), unquote(match.group(4)))
        match = REPO_INFO.match(path)
        if match:
            return self._repo_info(match.group(1)[:-1], match.group(2), "main")
        return self._unknown()

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        path = self._path()
        with self.hub.lock:
            self.hub.requests.append(("HEAD", path))
        if self.hub.outage:
            return self._error(self.hub.outage, "the hub is down")
        match = RESOLVE.match(path)
        if match:
            return self._resolve(match, head=True)
        return self._unknown()

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = self._path()
        body = self._body()
        with self.hub.lock:
            self.hub.requests.append(("POST", path))
        if self.hub.outage:
            return self._error(self.hub.outage, "the hub is down")
        if path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        match = PATHS_INFO.match(path)
        if match:
            paths = parse_qs(body.decode()).get("paths", [])
            return self._paths_info(match.group(1)[:-1], match.group(2), unquote(match.group(3)),
                                    paths)
        if not self._authorized():
            return None
        if path == "/api/repos/create":
            return self._create_repo(json.loads(body))
        match = REPO_ACTION.match(path)
        if not match:
            return self._unknown(body)
        repo_type, repo_id, action, rev = match.group(1)[:-1], match.group(2), *match.group(3, 4)
        rev = unquote(rev)
        with self.hub.lock:
            repo = self.hub.repos.get((repo_type, repo_id))
            if repo is None:
                return self._error(404, f"Repository Not Found for {repo_id}", "RepoNotFound")
            if action == "branch":
                return self._create_branch(repo, rev)
            if rev not in repo.branches:
                return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            if action == "preupload":
                return self._preupload(repo, rev, json.loads(body))
            if action == "commit":
                return self._commit(repo, repo_type, repo_id, rev, body)
        return self._unknown(body)

    def _create_repo(self, payload: dict[str, Any]) -> None:
        name, org = payload["name"], payload.get("organization")
        repo_id = f"{org or USER}/{name}"
        repo_type = payload.get("type") or "model"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}"
        private = payload.get("private", payload.get("visibility") == "private")
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                return self._send(409, {"error": "You already created this repo", "url": url})
            self.hub.repos[(repo_type, repo_id)] = FakeRepo(repo_type, bool(private))
        return self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        import yaml

        content = payload.get("content", "")
        parts = content.split("---\n")
        if not content.startswith("---\n") or len(parts) < 3:
            return self._send(200, {"errors": [], "warnings": [{"message": "no metadata"}]})
        try:
            meta = yaml.safe_load(parts[1])
        except yaml.YAMLError as exc:
            return self._send(400, {"errors": [{"message": str(exc)}]})
        if not isinstance(meta, dict):
            return self._send(400, {"errors": [{"message": "metadata is not a mapping"}]})
        return self._send(200, {"errors": [], "warnings": []})

    def _create_branch(self, repo: FakeRepo, branch: str) -> None:
        if branch in repo.branches:
            return self._error(409, f"Reference already exists: {branch}")
        repo.branches[branch] = dict(repo.branches["main"])
        repo.commits[branch] = list(repo.commits["main"])
        return self._send(200, {})

    def _preupload(self, repo: FakeRepo, rev: str, payload: dict[str, Any]) -> None:
        stored = repo.branches[rev]
        files = [
            {
                "path": entry["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_sha1(stored[entry["path"]]) if entry["path"] in stored else None,
            }
            for entry in payload["files"]
        ]
        return self._send(200, {"files": files, "commitOid": repo.head(rev)})

    def _commit(self, repo: FakeRepo, repo_type: str, repo_id: str, rev: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "commit payload must start with a header line")
        staged = dict(repo.branches[rev])
        for item in lines[1:]:
            key, value = item["key"], item["value"]
            if key == "file" and value.get("encoding") == "base64":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                staged.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                staged = {p: c for p, c in staged.items() if not p.startswith(prefix)}
            else:
                return self._error(422, f"fake hub does not support commit item {key!r}")
        oid = hashlib.sha1(f"{repo.head(rev)}{len(repo.commits[rev])}".encode() + body).hexdigest()
        repo.branches[rev] = staged
        changed = sorted(item["value"]["path"] for item in lines[1:])
        summary = lines[0]["value"].get("summary")
        repo.commits[rev].append({"oid": oid, "summary": summary, "paths": changed})
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.hub.url}/{prefix}{repo_id}/commit/{oid}"
        return self._send(200, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None})

    def _repo_info(self, repo_type: str, repo_id: str, rev: str) -> None:
        with self.hub.lock:
            repo = self.hub.repos.get((repo_type, repo_id))
            if repo is None:
                return self._error(404, f"Repository Not Found for {repo_id}", "RepoNotFound")
            if rev not in repo.branches:
                return self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            siblings = [
                {"rfilename": path, "size": len(content)}
                for path, content in sorted(repo.branches[rev].items())
            ]
            payload = {
                "id": repo_id,
                "sha": repo.head(rev),
                "private": repo.private,
                "siblings": siblings,
            }
        return self._send(200, payload)

    # -- reading --------------------------------------------------------------------------

    def _files_at(self, repo_type: str, repo_id: str, rev: str) -> dict[str, bytes] | None:
        """{path: bytes} at `rev`, or None after answering 404 (unknown repo or revision)."""
        with self.hub.lock:
            repo = self.hub.repos.get((repo_type, repo_id))
            if repo is None:
                self._error(404, f"Repository Not Found for {repo_id}", "RepoNotFound")
                return None
            if rev not in repo.branches:
                self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                return None
            return dict(repo.branches[rev])

    def _tree(self, repo_type: str, repo_id: str, rev: str, sub: str, recursive: bool) -> None:
        files = self._files_at(repo_type, repo_id, rev)
        if files is None:
            return None
        prefix = sub.strip("/") + "/" if sub.strip("/") else ""
        entries: dict[str, dict[str, Any]] = {}
        for path, content in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):  # folders on the way
                folder = prefix + "/".join(parts[:i])
                entries[folder] = _folder_entry(folder)
            if recursive or len(parts) == 1:
                entries[path] = _file_entry(path, content)
        if not entries and prefix:
            return self._error(404, f"{sub} does not exist on {rev}", "EntryNotFound")
        return self._send(200, [entries[k] for k in sorted(entries)])

    def _paths_info(self, repo_type: str, repo_id: str, rev: str, paths: list[str]) -> None:
        files = self._files_at(repo_type, repo_id, rev)
        if files is None:
            return None
        found = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                found.append(_file_entry(path, files[path]))
            elif any(p.startswith(path + "/") for p in files):
                found.append(_folder_entry(path))
        return self._send(200, found)

    def _resolve(self, match: re.Match, head: bool) -> None:
        repo_type = (match.group(1) or "models")[:-1]
        repo_id, rev, path = match.group(2), unquote(match.group(3)), unquote(match.group(4))
        files = self._files_at(repo_type, repo_id, rev)
        if files is None:
            return None
        if path not in files:
            return self._error(404, f"Entry not found: {path}", "EntryNotFound")
        content = files[path]
        status, body = 200, content
        ranged = RANGE.match(self.headers.get("Range", ""))
        headers = {"ETag": f'"{git_blob_sha1(content)}"', "Accept-Ranges": "bytes",
                   "X-Repo-Commit": self.hub.repo(repo_id, repo_type).head(rev)}
        if ranged and content:
            start = int(ranged.group(1))
            end = min(int(ranged.group(2) or len(content) - 1), len(content) - 1)
            status, body = 206, content[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)
        return None


def _file_entry(path: str, content: bytes) -> dict[str, Any]:
    return {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)}


def _folder_entry(path: str) -> dict[str, Any]:
    return {"type": "directory", "path": path, "size": 0,
            "oid": hashlib.sha1(path.encode()).hexdigest()}
