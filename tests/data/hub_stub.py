"""A small in-memory Hugging Face Hub on 127.0.0.1, for offline push/pull tests.

It answers the requests huggingface_hub 2.x sends for `create_repo`, `create_branch`,
`repo_info`, `list_repo_tree`, `get_paths_info`, README validation, `preupload`, the LFS
batch API with a basic single-part upload (Xet disabled with HF_HUB_DISABLE_XET=1), the
ndjson `commit` endpoint and `resolve` downloads (HEAD + GET), and records every request
(method, path, query, headers, body) so tests can check what left the client.

Like the Hub it stores repos as commits of {path: bytes}, answers "lfs" upload mode for
Parquet/PNG and "regular" for text, and returns the remote oid in preupload (git blob sha1,
or LFS sha256) so the client can drop unchanged files. `fail` queues error responses
(e.g. a 503 with Retry-After) for the next matching request.
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

LFS_SUFFIXES = (".parquet", ".png", ".arrow", ".safetensors")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes


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


class StubHub:
    """Start with `with StubHub(token="hf_x") as hub:`; `hub.endpoint` is its URL."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_store: dict[str, bytes] = {}
        self.requests: list[Recorded] = []
        self.failures: list[tuple[str, str, int, dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> StubHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ test helpers
    def fail(self, method: str, path_contains: str, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        """Answer the next `method` request whose path contains `path_contains` with `status`."""
        self.failures.append((method, path_contains, status, headers or {}, body))

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
        else:
            entry["oid"] = git_blob_sha1(data)
        return entry

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
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

            def _error(self, status: int, code: str, message: str) -> None:
                self._answer(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

            def _handle(self) -> None:
                url = urlsplit(self.path)
                path = unquote(url.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = Recorded(self.command, path, parse_qs(url.query), {k.lower(): v for k, v in self.headers.items()}, body)
                with hub._lock:
                    hub.requests.append(record)
                    for i, (method, part, status, headers, fail_body) in enumerate(hub.failures):
                        if method == self.command and part in path:
                            del hub.failures[i]
                            self._answer(status, fail_body or {"error": "injected"}, headers)
                            return
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
                p = r.path
                if p.startswith("/lfs-upload/") and m == "PUT":  # LFS storage: no Hub auth, like S3
                    oid = p.rsplit("/", 1)[1]
                    if hashlib.sha256(r.body).hexdigest() != oid:
                        return self._error(400, "BadRequest", "sha256 mismatch")
                    hub.lfs_store[oid] = r.body
                    return self._answer(200, b"")
                if p == "/api/agent-harnesses":  # huggingface_hub's daily, unauthenticated registry fetch
                    return self._error(404, "NotFound", "stub: no agent registry")
                if not self._authorized():
                    return None
                if p == "/api/repos/create" and m == "POST":
                    return self._create(json.loads(r.body))
                if p == "/api/validate-yaml" and m == "POST":
                    return self._answer(200, {"errors": [], "warnings": []})
                match = re.fullmatch(r"/datasets/([^/]+/[^/]+)\.git/info/lfs/objects/batch", p)
                if match and m == "POST":
                    return self._lfs_batch(json.loads(r.body))
                match = re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", p)
                if match and m in ("GET", "HEAD"):
                    return self._resolve(*match.groups())
                match = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/(revision|tree|paths-info|preupload|commit|branch)(?:/([^/]+)(?:/(.*))?)?)?", p)
                if not match:
                    return self._error(404, "NotFound", f"stub: no route for {m} {p}")
                repo_id, action, rev, rest = match.groups()
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(404, "RepoNotFound", f"Repository Not Found for url: {p}")
                if action == "branch" and m == "POST":
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
                    prefix = (rest or "").strip("/")
                    entries = [hub._entry(head, f) for f in sorted(head.files) if not prefix or f.startswith(prefix + "/")]
                    if r.query.get("recursive", ["false"])[0].lower() != "true":
                        entries = self._one_level(entries, prefix)
                    return self._answer(200, entries)
                if action == "paths-info" and m == "POST":
                    paths = parse_qs(r.body.decode()).get("paths", [])
                    return self._answer(200, [hub._entry(head, f) for f in paths if f in head.files])
                if action == "preupload" and m == "POST":
                    return self._preupload(head, json.loads(r.body))
                if action == "commit" and m == "POST":
                    return self._commit(repo, rev or "main", head, r.body)
                return self._error(404, "NotFound", f"stub: no route for {m} {p}")

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
                return self._answer(200, head.files[path], headers)

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
