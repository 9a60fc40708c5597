"""A small in-memory Hugging Face Hub on 127.0.0.1, for offline push/pull tests.

It answers the requests huggingface_hub 2.x sends for `create_repo`, `create_branch`,
`repo_info`, `list_repo_tree`, `get_paths_info`, README validation, `preupload`, the ndjson
`commit` endpoint and `resolve` downloads (HEAD + GET), and records every request (method,
path, query, headers, body) so tests can check what left the client.

Large files arrive the way they do from huggingface.co users: through **Xet** (the default
whenever `hf_xet` is installed) or, with HF_HUB_DISABLE_XET=1, through the Git LFS batch API
with a basic single-part upload. For Xet the stub hands out a write token
(`/api/datasets/{repo}/xet-write-token/{rev}`) pointing at its own CAS server (a second
port, `cas_endpoint`), which serves the calls `hf_xet` makes: global-dedup chunk queries
(always "not found"), upload telemetry,
xorb upload grants (grant -> PUT to the grant URL with no credentials -> commit; the
CRC-64/NVME checksum is checked), direct xorb uploads, and shard uploads (v1 JSON and v2
ndjson). From each shard it rebuilds every file from the xorbs' decompressed chunks and
checks its sha256 (tests/data/hub_xet.py), so the commit's `lfsFile` entries resolve to the
exact bytes the client had. Downloads of those files go through Xet too: `resolve` answers
with `X-Xet-Hash` and a `xet-auth` link to the read token, the CAS serves the file's
reconstruction (xorb chunk ranges) and the xorbs are fetched by byte range.

Like the Hub it stores repos as commits of {path: bytes}, answers "lfs" upload mode for
Parquet/PNG and "regular" for text, returns the remote oid in preupload (git blob sha1, or
LFS sha256) so the client can drop unchanged files, routes branch names with `/` (sent
URL-encoded as one path segment, `feature%2Fx`), validates card metadata on
`validate-yaml` and on commit (400 with the errors, as the Hub does), refuses a commit whose
`parentCommit` is not the branch head (412), refuses the deletion of a missing file (404),
and paginates tree listings (`page_size` entries per page, then a `Link: <...>; rel="next"`
header with an opaque cursor). `fail` queues error responses (e.g. a 503 with Retry-After)
for the next matching request; `drop_response` applies the next matching request and then
closes the connection without answering (a response lost on the way back); `before` runs a
callback (e.g. someone else's commit) just before the next matching request is handled.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import yaml

from tests.data.hub_xet import (
    ShardTerm,
    XetFormatError,
    crc64_nvme,
    rebuild_file,
    shard_files,
    xorb_chunks,
)

LFS_SUFFIXES = (".parquet", ".png", ".arrow", ".safetensors")
FRONT_MATTER = re.compile(r"^\s*---[\r\n]+([\S\s]*?)[\r\n]+---(?:\r\n|\n|$)")
# A subset of the Hub's card metadata rules (what a dataset card here can get wrong).
LICENSES = {
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause",
    "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5",
    "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0",
    "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0",
    "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0", "cdla-permissive-1.0",
    "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1",
    "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0",
    "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "osl-3.0", "postgresql",
    "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl", "llama2", "llama3", "llama3.1", "llama3.2",
    "llama3.3", "gemma", "unknown", "other",
}
SIZE_CATEGORIES = {
    "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
    "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T", "unknown",
}
LANGUAGE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]+)*$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def card_errors(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README's YAML front matter, worded like the Hub's."""
    match = FRONT_MATTER.match(content)
    if not match:
        return [], ["empty or missing yaml metadata in repo card"]
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        return [f"Error parsing YAML metadata: {str(err).splitlines()[0]}"], []
    if meta is None:
        return [], ["empty or missing yaml metadata in repo card"]
    if not isinstance(meta, dict):
        return ['"value" must be of type object'], []
    errors: list[str] = []

    def strings(key: str) -> list[Any]:
        value = meta.get(key)
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str):
                errors.append(f'"{key}" must be a string or a list of strings')
                return []
        return values

    if "license" in meta:
        errors += [f'"license" must be one of [{", ".join(sorted(LICENSES))}]' for v in strings("license") if v not in LICENSES][:1]
    if "language" in meta:
        errors += [f'"language" "{v}" is not a valid language code' for v in strings("language") if not LANGUAGE.match(v)]
    if "size_categories" in meta:
        errors += [f'"size_categories" must be one of [{", ".join(sorted(SIZE_CATEGORIES))}]' for v in strings("size_categories") if v not in SIZE_CATEGORIES][:1]
    if "tags" in meta:
        strings("tags")
    if "pretty_name" in meta and not isinstance(meta["pretty_name"], str):
        errors.append('"pretty_name" must be a string')
    if "configs" in meta:
        configs = meta["configs"]
        if not isinstance(configs, list):
            errors.append('"configs" must be an array')
            configs = []
        names = set()
        for i, config in enumerate(configs):
            where = f'"configs[{i}]"'
            if not isinstance(config, dict):
                errors.append(f"{where} must be of type object")
                continue
            name = config.get("config_name")
            if not isinstance(name, str) or not name:
                errors.append(f'{where}.config_name is required and must be a string')
            elif name in names:
                errors.append(f'{where}.config_name "{name}" is duplicated')
            names.add(name)
            files = config.get("data_files")
            if files is None:
                continue
            if isinstance(files, str):
                continue
            if not isinstance(files, list):
                errors.append(f"{where}.data_files must be a string or an array")
                continue
            for j, item in enumerate(files):
                if isinstance(item, str):
                    continue
                if not isinstance(item, dict) or not isinstance(item.get("split"), str) or not isinstance(item.get("path"), (str, list)):
                    errors.append(f"{where}.data_files[{j}] must be a path or an object with split and path")
    return errors, []


@dataclass
class Recorded:
    method: str
    path: str  # URL-decoded
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    raw_path: str = ""  # as sent (segments still percent-encoded)
    server: str = "hub"  # "hub", or "cas" for the Xet storage server


@dataclass
class Commit:
    sha: str
    message: str
    description: str
    files: dict[str, bytes]
    lfs: set[str]  # paths stored as LFS


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)  # commit shas in creation order

    def head(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


@dataclass
class Grant:
    xorb: str
    length: int
    crc: int
    data: bytes | None = None


class StubHub:
    """Start with `with StubHub(token="hf_x") as hub:`; `hub.endpoint` is its URL."""

    def __init__(self, token: str | None = None, page_size: int = 50) -> None:
        self.token = token
        self.page_size = page_size
        self.repos: dict[str, Repo] = {}
        self.lfs_store: dict[str, bytes] = {}  # sha256 -> bytes (LFS uploads and Xet files)
        self.xorbs: dict[str, bytes] = {}  # xorb hash -> serialized xorb
        self.xet_files: dict[str, str] = {}  # sha256 -> Xet file hash, for files uploaded via Xet
        self.xet_terms: dict[str, list[ShardTerm]] = {}  # Xet file hash -> its xorb chunk ranges
        self.grants: dict[str, Grant] = {}
        self.xet_token = "xet_" + secrets.token_hex(8)
        self.requests: list[Recorded] = []
        self.failures: list[tuple[str, str, int, dict[str, str], bytes]] = []
        self.drops: list[tuple[str, str]] = []
        self.hooks: list[tuple[str, str, Callable[[], None]]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class("hub"))
        self._cas_server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class("cas"))
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self._server, self._cas_server)]

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def cas_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._cas_server.server_port}"

    def __enter__(self) -> StubHub:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self._server, self._cas_server):
            server.shutdown()
            server.server_close()

    # ------------------------------------------------------------------ test helpers
    def fail(self, method: str, path_contains: str, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        """Answer the next `method` request whose path contains `path_contains` with `status`."""
        self.failures.append((method, path_contains, status, headers or {}, body))

    def drop_response(self, method: str, path_contains: str) -> None:
        """Carry out the next matching request, then close the connection without answering:
        the server applied it, the client never hears so."""
        self.drops.append((method, path_contains))

    def before(self, method: str, path_contains: str, action: Callable[[], None]) -> None:
        """Run `action` once, just before the next matching request is handled."""
        self.hooks.append((method, path_contains, action))

    def commits(self, repo_id: str) -> list[Commit]:
        repo = self.repos[repo_id]
        return [repo.commits[sha] for sha in repo.history]

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        head = self.repos[repo_id].head(revision)
        return dict(head.files) if head else {}

    def put_file(self, repo_id: str, path: str, data: bytes, message: str = "edit on the Hub") -> None:
        """Commit a file directly, as a user editing on the website would."""
        repo = self.repos[repo_id]
        head = repo.head("main")
        assert head is not None
        self._new_commit(repo, "main", {**head.files, path: data}, set(head.lfs) - {path}, message, "")

    # ------------------------------------------------------------------ the "Hub"
    def _new_commit(self, repo: Repo, branch: str, files: dict[str, bytes], lfs: set[str], message: str, description: str) -> Commit:
        seed = f"{repo.repo_id}{len(repo.history)}{message}{sorted(files)}".encode()
        sha = hashlib.sha1(seed).hexdigest()
        commit = Commit(sha, message, description, files, lfs)
        repo.commits[sha] = commit
        repo.history.append(sha)
        repo.branches[branch] = sha
        return commit

    def _entry(self, commit: Commit, path: str) -> dict[str, Any]:
        data = commit.files[path]
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data)}
        if path in commit.lfs:
            sha256 = hashlib.sha256(data).hexdigest()
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
            entry["oid"] = git_blob_sha1(pointer)
            entry["lfs"] = {"oid": sha256, "size": len(data), "pointerSize": len(pointer)}
            if sha256 in self.xet_files:
                entry["xetHash"] = self.xet_files[sha256]
        else:
            entry["oid"] = git_blob_sha1(data)
        return entry

    def _handler_class(self, server: str) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _answer(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if not isinstance(body, bytes) else "application/octet-stream")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _error(self, status: int, code: str, message: str, body: dict[str, Any] | None = None) -> None:
                self._answer(status, {"error": message, **(body or {})}, {"X-Error-Code": code, "X-Error-Message": message.splitlines()[0]})

            def _handle(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                record = Recorded(self.command, unquote(url.path), parse_qs(url.query), headers, body, url.path, server)
                with hub._lock:
                    hub.requests.append(record)
                    for i, (method, part, status, fail_headers, fail_body) in enumerate(hub.failures):
                        if method == self.command and part in record.path:
                            del hub.failures[i]
                            self._answer(status, fail_body or {"error": "injected"}, fail_headers)
                            return
                    for i, (method, part, action) in enumerate(hub.hooks):
                        if method == self.command and part in record.path:
                            del hub.hooks[i]
                            action()
                            break
                    for i, (method, part) in enumerate(hub.drops):
                        if method == self.command and part in record.path:
                            del hub.drops[i]
                            self.wfile = io.BytesIO()  # the answer goes nowhere
                            self.close_connection = True
                            break
                    self._route(record)

            do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

            def _authorized(self) -> bool:
                if hub.token is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {hub.token}":
                    return True
                self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
                return False

            def _route(self, r: Recorded) -> None:
                m = self.command
                # split the path as sent, then decode each segment: a revision such as
                # "feature/x" arrives as one segment, "feature%2Fx"
                segs = [unquote(s) for s in r.raw_path.split("/")[1:]]
                if server == "cas":
                    return self._cas(segs, r)
                if segs[0] == "lfs-upload" and m == "PUT":  # LFS storage: no Hub auth, like S3
                    oid = segs[-1]
                    if hashlib.sha256(r.body).hexdigest() != oid:
                        return self._error(400, "BadRequest", "sha256 mismatch")
                    hub.lfs_store[oid] = r.body
                    return self._answer(200, b"")
                if segs[0] == "xet-upload" and m == "PUT":  # a xorb upload grant's URL: no credentials
                    return self._grant_upload(segs[-1], r)
                if segs[0] == "xet-xorbs" and m == "GET":  # a xorb's (presigned) download URL
                    return self._xorb_range(segs[-1])
                if r.path == "/api/agent-harnesses":  # huggingface_hub's daily, unauthenticated registry fetch
                    return self._error(404, "NotFound", "stub: no agent registry")
                if not self._authorized():
                    return None
                if r.path == "/api/repos/create" and m == "POST":
                    return self._create(json.loads(r.body))
                if r.path == "/api/validate-yaml" and m == "POST":
                    errors, warnings = card_errors(json.loads(r.body).get("content", ""))
                    answer = {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]}
                    return self._answer(400 if errors else 200, answer)
                if len(segs) == 7 and segs[0] == "datasets" and segs[2].endswith(".git") and segs[3:] == ["info", "lfs", "objects", "batch"] and m == "POST":
                    return self._lfs_batch(json.loads(r.body))
                if len(segs) >= 6 and segs[0] == "datasets" and segs[3] == "resolve" and m in ("GET", "HEAD"):
                    return self._resolve(f"{segs[1]}/{segs[2]}", segs[4], "/".join(segs[5:]))
                if len(segs) < 4 or segs[:2] != ["api", "datasets"]:
                    return self._error(404, "NotFound", f"stub: no route for {m} {r.path}")
                repo_id = f"{segs[2]}/{segs[3]}"
                action = segs[4] if len(segs) > 4 else None
                rev = segs[5] if len(segs) > 5 else None
                rest = "/".join(segs[6:])
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", f"Repository Not Found for url: {r.path}")
                if action == "branch" and m == "POST" and rev:
                    if rev in repo.branches:
                        return self._error(409, "Conflict", "Reference already exists")
                    start = json.loads(r.body or b"{}").get("startingPoint") or "main"
                    repo.branches[rev] = repo.branches.get(start, start)
                    return self._answer(200, {})
                head = repo.head(rev or "main")
                if head is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                if action in (None, "revision") and m == "GET":
                    return self._answer(200, {
                        "id": repo_id, "sha": head.sha, "private": repo.private,
                        "siblings": [{"rfilename": f} for f in sorted(head.files)],
                    })
                if action == "tree" and m == "GET":
                    return self._tree(head, rest.strip("/"), r)
                if action == "paths-info" and m == "POST":
                    paths = parse_qs(r.body.decode()).get("paths", [])
                    return self._answer(200, [hub._entry(head, f) for f in paths if f in head.files])
                if action == "preupload" and m == "POST":
                    return self._preupload(head, json.loads(r.body))
                if action == "commit" and m == "POST":
                    return self._commit(repo, rev or "main", head, r.body)
                if action in ("xet-write-token", "xet-read-token") and m == "GET":
                    exp = int(time.time()) + 3600
                    cas = hub.cas_endpoint
                    return self._answer(
                        200,
                        {"casUrl": cas, "accessToken": hub.xet_token, "exp": exp},
                        {"X-Xet-Cas-Url": cas, "X-Xet-Access-Token": hub.xet_token, "X-Xet-Token-Expiration": str(exp)},
                    )
                return self._error(404, "NotFound", f"stub: no route for {m} {r.path}")

            def _tree(self, head: Commit, prefix: str, r: Recorded) -> None:
                entries = [hub._entry(head, f) for f in sorted(head.files) if not prefix or f.startswith(prefix + "/")]
                if r.query.get("recursive", ["false"])[0].lower() != "true":
                    entries = self._one_level(entries, prefix)
                entries.sort(key=lambda e: e["path"])
                cursor = r.query.get("cursor", [None])[0]
                if cursor is not None:  # opaque to the client: the last path of the previous page
                    after = base64.urlsafe_b64decode(cursor.encode()).decode()
                    entries = [e for e in entries if e["path"] > after]
                page = entries[: hub.page_size]
                headers = {}
                if len(entries) > len(page):
                    query = {k: v[0] for k, v in r.query.items() if k != "cursor"}
                    query["cursor"] = base64.urlsafe_b64encode(page[-1]["path"].encode()).decode()
                    headers["Link"] = f'<{hub.endpoint}{r.raw_path}?{urlencode(query)}>; rel="next"'
                return self._answer(200, page, headers)

            def _one_level(self, entries: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
                out: dict[str, dict[str, Any]] = {}
                cut = len(prefix) + 1 if prefix else 0
                for e in entries:
                    rest = e["path"][cut:]
                    if "/" in rest:
                        folder = e["path"][: cut + rest.index("/")]
                        out[folder] = {"type": "directory", "path": folder, "oid": "0" * 40, "size": 0}
                    else:
                        out[e["path"]] = e
                return list(out.values())

            def _create(self, payload: dict[str, Any]) -> None:
                repo_id = f"{payload.get('organization')}/{payload['name']}"
                if payload.get("type") != "dataset":
                    return self._error(400, "BadRequest", "stub only hosts datasets")
                if repo_id in hub.repos:  # the Hub's 409 carries the repo url, which the client reads
                    message = "You already created this dataset repo"
                    return self._answer(409, {"error": message, "url": f"{hub.endpoint}/datasets/{repo_id}"}, {"X-Error-Message": message})
                repo = Repo(repo_id, payload.get("visibility") == "private" or bool(payload.get("private")))
                hub.repos[repo_id] = repo
                hub._new_commit(repo, "main", {".gitattributes": b"*.parquet filter=lfs diff=lfs merge=lfs -text\n"}, set(), "initial commit", "")
                return self._answer(200, {"url": f"{hub.endpoint}/datasets/{repo_id}", "name": repo_id})

            def _preupload(self, head: Commit, payload: dict[str, Any]) -> None:
                files = []
                for f in payload["files"]:
                    lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10 * 1024 * 1024
                    oid = None
                    if f["path"] in head.files:
                        data = head.files[f["path"]]
                        oid = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
                    files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
                return self._answer(200, {"files": files, "commitOid": head.sha})

            def _lfs_batch(self, payload: dict[str, Any]) -> None:
                objects = []
                for o in payload["objects"]:
                    entry: dict[str, Any] = {"oid": o["oid"], "size": o["size"]}
                    if o["oid"] not in hub.lfs_store:
                        entry["actions"] = {"upload": {"href": f"{hub.endpoint}/lfs-upload/{o['oid']}"}}
                    objects.append(entry)
                return self._answer(200, {"transfer": "basic", "objects": objects})

            def _commit(self, repo: Repo, branch: str, head: Commit, body: bytes) -> None:
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                header = lines[0]["value"]
                parent = header.get("parentCommit")
                if parent and parent != head.sha:
                    return self._error(412, "PreconditionFailed", "A commit has happened since. Please refresh and try again.")
                files = dict(head.files)
                lfs = set(head.lfs)
                for item in lines[1:]:
                    key, value = item["key"], item["value"]
                    if key == "file":
                        files[value["path"]] = base64.b64decode(value["content"])
                        lfs.discard(value["path"])
                    elif key == "lfsFile":
                        if value["oid"] not in hub.lfs_store:
                            return self._error(400, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                        files[value["path"]] = hub.lfs_store[value["oid"]]
                        lfs.add(value["path"])
                    elif key == "deletedFile":
                        if value["path"] not in files:
                            return self._error(404, "EntryNotFound", "A file with this name doesn't exist")
                        del files[value["path"]]
                        lfs.discard(value["path"])
                    elif key == "deletedFolder":
                        prefix = value["path"].rstrip("/") + "/"
                        for f in [f for f in files if f.startswith(prefix)]:
                            del files[f]
                            lfs.discard(f)
                if "README.md" in files and files["README.md"] != head.files.get("README.md"):
                    errors, _ = card_errors(files["README.md"].decode("utf-8", "replace"))
                    if errors:
                        message = "Invalid metadata in README.md.\n" + "\n".join(f"- {e}" for e in errors)
                        return self._error(400, "BadRequest", message)
                commit = hub._new_commit(repo, branch, files, lfs, header["summary"], header.get("description", ""))
                return self._answer(200, {
                    "commitUrl": f"{hub.endpoint}/datasets/{repo.repo_id}/commit/{commit.sha}",
                    "commitOid": commit.sha, "success": True,
                })

            def _resolve(self, repo_id: str, rev: str, path: str) -> None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", "Repository Not Found")
                head = repo.head(rev)
                if head is None:
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                if path not in head.files:
                    return self._error(404, "EntryNotFound", f"{path} does not exist")
                entry = hub._entry(head, path)
                etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
                headers = {"X-Repo-Commit": head.sha, "ETag": f'"{etag}"'}
                if "lfs" in entry:
                    headers["X-Linked-Etag"] = f'"{etag}"'
                    headers["X-Linked-Size"] = str(entry["size"])
                if "xetHash" in entry:  # stored in Xet: the client downloads it through the CAS
                    headers["X-Xet-Hash"] = entry["xetHash"]
                    headers["Link"] = f'<{hub.endpoint}/api/datasets/{repo_id}/xet-read-token/{head.sha}>; rel="xet-auth"'
                return self._answer(200, head.files[path], headers)

            # ---------------------------------------------------------- the Xet CAS server
            def _cas(self, segs: list[str], r: Recorded) -> None:
                """Xet storage: authenticated by the Xet token, never the Hub token."""
                m = self.command
                if self.headers.get("Authorization") != f"Bearer {hub.xet_token}":
                    return self._error(401, "Unauthorized", "invalid or missing Xet access token")
                if segs == ["v1", "telemetry"] and m == "POST":
                    return self._answer(200, {})
                if len(segs) == 4 and segs[:2] == ["v1", "chunks"] and m == "GET":
                    return self._error(404, "NotFound", "chunk not tracked by global deduplication")
                if len(segs) == 4 and segs[:2] == ["v1", "xorb-grants"] and m == "POST":
                    xorb = segs[3]
                    if xorb in hub.xorbs:
                        return self._answer(200, {"was_inserted": False})
                    request = json.loads(r.body)
                    checksum = request.get("checksum") or {}
                    if checksum.get("algo") != "crc64nvme":
                        return self._error(400, "BadRequest", f"unsupported checksum {checksum.get('algo')}")
                    grant_id = secrets.token_hex(8)
                    hub.grants[grant_id] = Grant(xorb, int(request["length"]), int(checksum["value"]))
                    return self._answer(201, {
                        "id": grant_id, "method": "PUT", "url": f"{hub.endpoint}/xet-upload/{grant_id}",
                        "headers": {"Content-Type": "application/octet-stream"},
                    })
                if len(segs) == 6 and segs[:2] == ["v1", "xorb-commits"] and segs[4] == "grant" and m == "POST":
                    grant = hub.grants.get(segs[5])
                    if grant is None or grant.xorb != segs[3] or grant.data is None:
                        return self._error(404, "NotFound", "no data was uploaded for this grant")
                    return self._store_xorb(segs[3], grant.data)
                if len(segs) == 4 and segs[:2] == ["v1", "xorbs"] and m == "POST":
                    return self._store_xorb(segs[3], r.body)
                if segs in (["v1", "shards"], ["v2", "shards"]) and m == "POST":
                    return self._shard(r.body, ndjson=segs[0] == "v2")
                if len(segs) == 3 and segs[:2] == ["v1", "reconstructions"] and m == "GET":
                    return self._reconstruction(segs[2])
                return self._error(404, "NotFound", f"stub CAS: no route for {m} /{'/'.join(segs)}")

            def _grant_upload(self, grant_id: str, r: Recorded) -> None:
                grant = hub.grants.get(grant_id)
                if grant is None:
                    return self._error(403, "Forbidden", "unknown or expired grant")
                if len(r.body) != grant.length or crc64_nvme(r.body) != grant.crc:
                    return self._error(400, "BadRequest", "body does not match the grant's length and checksum")
                grant.data = r.body
                return self._answer(200, b"")

            def _store_xorb(self, xorb: str, data: bytes) -> None:
                try:
                    xorb_chunks(data)
                except (XetFormatError, IndexError, ValueError) as err:
                    return self._error(400, "BadRequest", f"xorb {xorb} is not a valid xorb: {err}")
                inserted = xorb not in hub.xorbs
                hub.xorbs[xorb] = data
                return self._answer(200, {"was_inserted": inserted})

            def _shard(self, shard: bytes, ndjson: bool) -> None:
                try:
                    files = shard_files(shard)
                    rebuilt = [(f, rebuild_file(f, hub.xorbs)) for f in files]
                except (XetFormatError, IndexError, ValueError) as err:
                    if not ndjson:
                        return self._error(400, "BadRequest", f"invalid shard: {err}")
                    frames = [{"type": "error", "message": f"invalid shard: {err}", "retryable": False}]
                else:
                    for f, data in rebuilt:
                        sha256 = f.sha256 or hashlib.sha256(data).hexdigest()
                        hub.lfs_store[sha256] = data
                        hub.xet_files[sha256] = f.file_hash
                        hub.xet_terms[f.file_hash] = f.terms
                    if not ndjson:
                        return self._answer(200, {"result": 1})
                    frames = [{"type": "validating", "verified": len(files), "total": len(files)}, {"type": "result"}]
                body = b"".join(json.dumps(f).encode() + b"\n" for f in frames)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _reconstruction(self, file_hash: str) -> None:
                """The xorb chunk ranges that hold bytes [a, b] of a file (v1 API; the client
                asks v2 first and falls back on the 404)."""
                terms = hub.xet_terms.get(file_hash)
                if terms is None:
                    return self._error(404, "NotFound", f"file {file_hash} not found")
                total = sum(t.size for t in terms)
                match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range") or "")
                first, last = (int(match.group(1)), int(match.group(2))) if match else (0, total - 1)
                if first >= total:
                    return self._error(416, "RangeNotSatisfiable", f"range starts past the file's {total} bytes")
                picked: list[list[Any]] = []  # [term index, xorb, chunk start, chunk end, bytes]
                offset = None
                pos = 0
                for k, t in enumerate(terms):
                    chunks = xorb_chunks(hub.xorbs[t.xorb])
                    for index in range(t.start, t.end):
                        size = len(chunks[index].data)
                        lo, pos = pos, pos + size
                        if pos <= first or lo > last:
                            continue
                        if offset is None:
                            offset = first - lo
                        if picked and picked[-1][0] == k and picked[-1][3] == index:
                            picked[-1][3] += 1
                            picked[-1][4] += size
                        else:
                            picked.append([k, t.xorb, index, index + 1, size])
                fetch: dict[str, list[dict[str, Any]]] = {}
                for _k, xorb, lo_chunk, hi_chunk, _size in picked:
                    chunks = xorb_chunks(hub.xorbs[xorb])
                    item = {
                        "range": {"start": lo_chunk, "end": hi_chunk},
                        "url": f"{hub.endpoint}/xet-xorbs/{xorb}",
                        "url_range": {"start": chunks[lo_chunk].offset, "end": chunks[hi_chunk - 1].end - 1},
                    }
                    if item not in fetch.setdefault(xorb, []):
                        fetch[xorb].append(item)
                return self._answer(200, {
                    "offset_into_first_range": offset or 0,
                    "terms": [{"hash": x, "unpacked_length": n, "range": {"start": a, "end": b}} for _k, x, a, b, n in picked],
                    "fetch_info": fetch,
                })

            def _xorb_range(self, xorb: str) -> None:
                data = hub.xorbs.get(xorb)
                if data is None:
                    return self._error(404, "NotFound", f"xorb {xorb} not found")
                match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range") or "")
                if not match:
                    return self._answer(200, data)
                start, end = int(match.group(1)), int(match.group(2))
                return self._answer(206, data[start : end + 1], {"Content-Range": f"bytes {start}-{end}/{len(data)}"})

        return Handler


# ---------------------------------------------------------------------- a built dataset folder


def make_built_folder(
    folder: Any,
    accepted: int = 3,
    fallback: int = 2,
    rejected: int = 1,
    shards: int = 2,
    seed: int = 0,
) -> Any:
    """Write a folder as `raft-data build` leaves it (records, manifest, card, a plot and
    the `.raft/` build state), without running any model. Returns the manifest."""
    import datetime as dt
    import random
    from pathlib import Path

    from raft_data.card import write_card
    from schemas import RefinedRecord, RejectedRecord, row_id, write_manifest, write_records
    from schemas.manifest import CompatibilityGap, Counts, Manifest, ModelInfo, StageTiming

    folder = Path(folder)
    rng = random.Random(seed)
    records = []
    for i in range(accepted + fallback):
        ok = i < accepted
        question = f"What is the boiling point of compound {i}?"
        gold = f"Compound {i} boils at {100 + i} degrees Celsius under standard pressure."
        rewrite = f"At standard pressure, compound {i} boils at about {100 + i} C."
        similarity = round(rng.uniform(0.8, 0.99) if ok else rng.uniform(0.2, 0.6), 4)
        records.append(
            RefinedRecord(
                id=row_id("chem", question, gold),
                question=question,
                gold_answer=gold,
                domain="chem",
                source_file="in.jsonl",
                source_row=i,
                rewrite_candidates=[rewrite],
                rewrite=rewrite,
                similarity=similarity,
                decision="accepted" if ok else "fallback",
                reason="passed" if ok else f"low_similarity: {similarity:.3f} < tau 0.70",
                fusion_candidates=[rewrite] if ok else [],
                fusion_scores=[0.8] if ok else [],
                fusion_rounds=1 if ok else 0,
                fusion_score=round(rng.uniform(0.5, 1.0), 3) if ok else None,
                final_answer=rewrite if ok else gold,
                final_source="fusion" if ok else "gold",
                teacher_context_tokens=150 if i == 0 else 80,
                over_length=i == 0,
                over_length_reason="teacher_context.max_tokens 120 exceeded" if i == 0 else None,
                gold_nll=round(rng.uniform(2.0, 3.0), 3),
                final_nll=round(rng.uniform(1.0, 2.0), 3),
            )
        )
    per = max(1, -(-len(records) // shards))
    data_files = []
    for s in range(shards):
        name = f"data/train-{s:05d}-of-{shards:05d}.parquet"
        write_records(folder / name, records[s * per : (s + 1) * per], RefinedRecord, {"config_hash": "c0ffee"})
        data_files.append(name)
    bad = [
        RejectedRecord(source_file="in.jsonl", source_row=100 + j, field="answer", reason="missing", raw="{}")
        for j in range(rejected)
    ]
    write_records(folder / "rejected/rejected.parquet", bad, RejectedRecord, {"config_hash": "c0ffee"})
    reasons: dict[str, int] = {}
    for r in records:
        key = r.reason.split(":", 1)[0]
        reasons[key] = reasons.get(key, 0) + 1
    if rejected:
        reasons["rejected_input"] = rejected
    manifest = Manifest(
        tool_version="0.1.0",
        created_at=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc).isoformat(timespec="seconds"),
        pipeline_name="stub-chem",
        pipeline_config={"name": "stub-chem", "filter": {"tau": 0.7}},
        config_hash="c0ffee1234567890",
        input_fingerprint="f" * 16,
        models={"original": ModelInfo(name="tiny", model_id="org/tiny", revision="abc")},
        counts=Counts(
            rows_in=len(records) + rejected,
            accepted=accepted,
            fallback=fallback,
            rejected=rejected,
            over_length=1 if records else 0,
            by_reason=reasons,
        ),
        timings={"rewrite": StageTiming(seconds=1.5, requests=5, generated_tokens=100)},
        compatibility_gap=CompatibilityGap(gold_nll_mean=2.5, final_nll_mean=1.5, rows=len(records)),
        data_files=data_files,
        rejected_files=["rejected/rejected.parquet"],
    )
    write_manifest(folder, manifest)
    (folder / "similarity.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    write_card(folder, manifest, "apache-2.0", ["en"], ["similarity.png"])
    (folder / ".raft").mkdir(exist_ok=True)
    (folder / ".raft" / "build.json").write_text('{"config_hash": "c0ffee1234567890"}')
    (folder / ".raft" / "calls.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x00" * 64)
    return manifest
