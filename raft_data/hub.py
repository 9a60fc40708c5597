"""`raft-data push`: share a built dataset folder on the Hugging Face Hub, unchanged.

The folder that `raft-data build` wrote is the dataset: the push checks it first (manifest,
schema stamps, row counts, card) and makes no request at all for a folder that fails, then
uploads every file but the local build state (`.raft/`). The push is a sync, not a blind
upload: files whose content already matches the remote (git blob sha1 for small files, LFS
sha256 for large ones) are skipped, remote shards the new build no longer has are deleted
(else the card's `data/train-*.parquet` glob would load them), and an unchanged folder makes
no commit at all. A card edited on the Hub keeps the keys its owner set; only the keys this
tool owns (`configs`, `size_categories`, the raft tags) are replaced.

The remote state is read at one commit (the branch head's sha), every commit names that
commit as its parent (the Hub refuses it with 412 if the branch moved), and a commit that is
retried re-reads the branch first and sends only what is still missing: a commit that was
applied but whose answer was lost is recognised as done, never resent with deletions of
files it already deleted. Transient Hub errors (429, 5xx, dropped connections) are retried
with exponential backoff. The card to upload is checked by the Hub's `validate-yaml` before
the first commit, so a bad card stops the push before any data lands. Folders with more
files or bytes than one commit should hold are committed in several parts, card and
manifest last, so a push that dies half-way is resumed by running it again.

Large files travel the way `huggingface_hub` sends them: through Xet storage when `hf_xet` is
installed (the default on x86_64 and arm64), else through Git LFS; the push logs which.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.parquet as pq
import yaml

from raft_data.errors import RaftDataError
from schemas.errors import SchemaError
from schemas.manifest import MANIFEST_NAME, Manifest, read_manifest
from schemas.parquet_io import check_file_schema
from schemas.records import RefinedRecord, RejectedRecord

CARD_NAME = "README.md"
STATE_DIR = ".raft"
# Keys of the card's YAML front matter that this tool owns: replaced on every push. Every
# other key (license, language, task_categories, pretty_name, anything a user added) keeps
# the remote value when the remote card has one.
OWNED_KEYS = ("configs", "size_categories")
RAFT_TAGS = ("raft", "distillation", "refined")
RAFT_TAG_PREFIX = "raft-schema-"
# Remote folders whose files must match the local build exactly (stale shards are deleted).
SYNCED_FOLDERS = ("data/", "rejected/")
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
BRANCH_MOVED = 412  # a commit's parent is no longer the branch head
XET_CLIENT_ERROR = re.compile(r"HTTP status client error \((\d{3})")
FRONT_MATTER = re.compile(r"^\s*---[\r\n]+([\S\s]*?)[\r\n]+---(?:\r\n|\n|$)")
TOKEN_HELP = "set HF_TOKEN or pass --token or run `hf auth login`"

T = TypeVar("T")


@dataclass
class PushOptions:
    """How to push. A folder over `max_commit_files` files or `max_commit_bytes` bytes of
    changes is committed in several parts of at most that size."""

    private: bool | None = None
    revision: str | None = None
    commit_message: str | None = None
    max_commit_files: int = 100
    max_commit_bytes: int = 4 * 1024**3
    retries: int = 5
    backoff_s: float = 2.0
    max_backoff_s: float = 60.0


@dataclass
class PushResult:
    repo_id: str
    revision: str
    up_to_date: bool
    commits: list[str] = field(default_factory=list)  # commit URLs, in order
    transfer: str = ""  # how large files travel: Xet or Git LFS
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    commit_message: str = ""


# --------------------------------------------------------------------------- validation


def _parquet_rows(path: Path) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)


def validate_folder(folder: str | Path) -> Manifest:
    """Check a built folder before anything leaves the machine; return its manifest.

    Raises `SchemaError`/`RaftDataError` naming the file and what to do when the manifest is
    missing or newer than this toolkit, a listed file is missing or not stamped with a
    schema this toolkit reads, a Parquet file is present but not listed, row counts differ
    from the manifest's, or the card has no YAML front matter.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise RaftDataError(f"'{folder}' is not a folder; pass the output.dir of a `raft-data build`")
    manifest = read_manifest(folder)
    counts = manifest.counts

    decisions = {"accepted": 0, "fallback": 0}
    for name in manifest.data_files:
        path = _listed_file(folder, name)
        check_file_schema(path, RefinedRecord)
        for value in pq.ParquetFile(path).read(columns=["decision"]).column("decision").to_pylist():
            decisions[value] = decisions.get(value, 0) + 1
    want = {"accepted": counts.accepted, "fallback": counts.fallback}
    if decisions != want:
        raise RaftDataError(
            f"{folder / MANIFEST_NAME}: counts say accepted {want['accepted']}, fallback "
            f"{want['fallback']}, but the data files hold accepted {decisions.get('accepted', 0)}, "
            f"fallback {decisions.get('fallback', 0)}; the folder was changed after the build: "
            "rebuild it with `raft-data build`"
        )

    rejected = 0
    for name in manifest.rejected_files:
        path = _listed_file(folder, name)
        check_file_schema(path, RejectedRecord)
        rejected += _parquet_rows(path)
    if rejected != counts.rejected:
        raise RaftDataError(
            f"{folder / MANIFEST_NAME}: counts say rejected {counts.rejected}, but the rejected "
            f"files hold {rejected} rows; rebuild the folder with `raft-data build`"
        )

    listed = set(manifest.data_files) | set(manifest.rejected_files)
    for prefix in SYNCED_FOLDERS:
        for path in sorted((folder / prefix).glob("*.parquet")):
            rel = path.relative_to(folder).as_posix()
            if rel not in listed:
                raise RaftDataError(
                    f"{path}: not listed in {MANIFEST_NAME}; `load_dataset` would read it too. "
                    "Remove it or rebuild the folder with `raft-data build`"
                )

    _card_metadata(folder / CARD_NAME)
    return manifest


def _listed_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise RaftDataError(
            f"{folder / MANIFEST_NAME} lists '{name}' but {path} is missing; "
            "rebuild the folder with `raft-data build`"
        )
    return path


def _card_metadata(path: Path) -> dict[str, Any]:
    """The card's YAML front matter (the block the Hub and `load_dataset` read)."""
    if not path.is_file():
        raise RaftDataError(f"{path}: no dataset card; rebuild the folder with `raft-data build`")
    match = FRONT_MATTER.match(path.read_text(encoding="utf-8"))
    try:
        data = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError as err:
        raise RaftDataError(f"{path}: the card's YAML front matter does not parse ({err})") from None
    if not isinstance(data, dict) or not data.get("configs"):
        raise RaftDataError(
            f"{path}: the card has no YAML front matter with `configs`, so the Hub would not know "
            "the default and rejected configs; rebuild the folder with `raft-data build`"
        )
    return data


# --------------------------------------------------------------------------- the card


def merge_card(local_text: str, remote_text: str | None) -> str:
    """The card to upload: the local card, with the remote card's metadata merged in.

    Keys in `OWNED_KEYS` come from the local card; `tags` is the local tags followed by the
    remote tags the user added (old `raft-schema-*` tags dropped); every other key keeps the
    remote value when the remote has one. The body is the local body (it holds this build's
    counts). Merging is idempotent, so pushing the same folder twice gives the same bytes.
    """
    from huggingface_hub import DatasetCard
    from huggingface_hub.repocard_data import DatasetCardData

    if remote_text is None:
        return local_text
    local = DatasetCard(local_text, ignore_metadata_errors=True)
    ours = local.data.to_dict()
    theirs = DatasetCard(remote_text, ignore_metadata_errors=True).data.to_dict()
    merged: dict[str, Any] = {}
    for key, value in theirs.items():
        merged[key] = ours[key] if key in OWNED_KEYS and key in ours else value
    for key, value in ours.items():
        merged.setdefault(key, value)
    if "tags" in ours or "tags" in theirs:
        own_tags = list(ours.get("tags") or [])
        extra = [
            t
            for t in _as_list(theirs.get("tags"))
            if t not in own_tags and not str(t).startswith(RAFT_TAG_PREFIX)
        ]
        merged["tags"] = own_tags + extra
    if merged == ours:
        return local_text
    local.data = DatasetCardData(**merged)
    return str(local)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


# --------------------------------------------------------------------------- the plan


def local_files(folder: Path) -> dict[str, Path]:
    """Every file to upload by its path in the repo: all but `.raft/` and hidden files (such
    as a writer's unfinished temp file)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        out[rel.as_posix()] = path
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git_blob_sha1(data: bytes) -> str:
    from huggingface_hub.utils.sha import git_hash

    return str(git_hash(data))


def _unchanged(local: Path | bytes, remote: Any) -> bool:
    """Whether a local file (path, or bytes for the merged card) equals a remote `RepoFile`."""
    size = len(local) if isinstance(local, bytes) else local.stat().st_size
    lfs = getattr(remote, "lfs", None)
    if lfs is not None:
        if lfs.size != size:
            return False
        digest = hashlib.sha256(local).hexdigest() if isinstance(local, bytes) else _sha256(local)
        return bool(digest == lfs.sha256)
    if remote.size != size:
        return False
    data = local if isinstance(local, bytes) else local.read_bytes()
    return _git_blob_sha1(data) == remote.blob_id


@dataclass
class Plan:
    add: dict[str, Path | bytes]  # path in repo -> local file, or bytes (the merged card)
    delete: list[str]
    unchanged: list[str]


def plan_changes(folder: Path, card: bytes, remote: dict[str, Any]) -> Plan:
    """What to add and delete to make the remote match the folder (with the merged card)."""
    wanted: dict[str, Path | bytes] = dict(local_files(folder))
    wanted[CARD_NAME] = card
    add: dict[str, Path | bytes] = {}
    unchanged = []
    for rel, local in wanted.items():
        if rel in remote and _unchanged(local, remote[rel]):
            unchanged.append(rel)
        else:
            add[rel] = local
    delete = sorted(p for p in remote if p.startswith(SYNCED_FOLDERS) and p not in wanted)
    return Plan(add, delete, unchanged)


def split_commits(plan: Plan, max_files: int, max_bytes: int) -> list[tuple[dict[str, Path | bytes], list[str]]]:
    """Cut a plan into commits of at most `max_files` files / `max_bytes` bytes. Data files
    go first; card, manifest and deletions of stale shards go in the last commit, so the
    card never advertises data that is not there yet."""
    last_names = {CARD_NAME, MANIFEST_NAME}
    body = [(p, v) for p, v in plan.add.items() if p not in last_names]
    tail = {p: v for p, v in plan.add.items() if p in last_names}
    parts: list[tuple[dict[str, Path | bytes], list[str]]] = []
    current: dict[str, Path | bytes] = {}
    size = 0
    for rel, local in body:
        n = len(local) if isinstance(local, bytes) else local.stat().st_size
        if current and (len(current) >= max(1, max_files) or size + n > max_bytes):
            parts.append((current, []))
            current, size = {}, 0
        current[rel] = local
        size += n
    if current and len(current) + len(tail) <= max(1, max_files):
        current.update(tail)
        parts.append((current, plan.delete))
    else:
        if current:
            parts.append((current, []))
        parts.append((tail, plan.delete))
    return [(adds, deletes) for adds, deletes in parts if adds or deletes]


# --------------------------------------------------------------------------- the push


def resolve_token(token: str | None) -> str:
    """The token to use: --token, else HF_TOKEN, else the cached `hf auth login` token."""
    if token:
        return token
    from huggingface_hub import get_token

    found = get_token()
    if not found:
        raise RaftDataError(f"no Hugging Face token: {TOKEN_HELP}")
    return str(found)


def scrub(text: str, token: str | None) -> str:
    """Remove the token from text that is about to be shown."""
    return text.replace(token, "***") if token else text


def hub_endpoint() -> str:
    """The Hub to talk to: HF_ENDPOINT read now (not at import time), else huggingface.co."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def _transient(err: BaseException, statuses: tuple[int, ...] = TRANSIENT_STATUS) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, HfHubHTTPError):
        return _status(err) in statuses
    try:
        import httpx2 as httpx  # huggingface_hub >= 1.x
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx  # type: ignore[no-redef]
    if not isinstance(err, (httpx.TransportError, ConnectionError, TimeoutError)):
        return False
    # hf_xet reports every failed request as a ConnectionError, a refusal (4xx) included:
    # "... HTTP status client error (404 Not Found), domain: ..."; those do not pass on retry
    refused = XET_CLIENT_ERROR.search(str(err))
    return refused is None or int(refused.group(1)) in statuses


def _retry_after(err: BaseException) -> float | None:
    response = getattr(err, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def with_retries(
    step: Callable[[], T],
    what: str,
    options: PushOptions,
    log: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
    statuses: tuple[int, ...] = TRANSIENT_STATUS,
) -> T:
    """Run one idempotent step, retrying 429/5xx (or `statuses`) and dropped connections with
    exponential backoff (or the server's Retry-After). Other errors propagate at once."""
    delay = options.backoff_s
    for attempt in range(options.retries + 1):
        try:
            return step()
        except Exception as err:
            if attempt >= options.retries or not _transient(err, statuses):
                raise
            wait = _retry_after(err)
            wait = min(options.max_backoff_s, delay if wait is None else wait)
            code = _status(err)
            if code == BRANCH_MOVED:
                log(f"the branch moved during {what}; re-reading it, retrying in {wait:.0f}s ({attempt + 1}/{options.retries})")
            else:
                log(
                    f"Hub busy during {what} ({code or type(err).__name__}); "
                    f"retrying in {wait:.0f}s ({attempt + 1}/{options.retries})"
                )
            sleep(wait)
            delay *= 2
    raise AssertionError("unreachable")


def commit_message(manifest: Manifest, user_message: str | None) -> str:
    rows = manifest.counts.accepted + manifest.counts.fallback
    stamp = (
        f"schema {manifest.schema_name} {manifest.schema_version}, "
        f"config {manifest.config_hash}, {rows} rows"
    )
    return f"{user_message.strip()} ({stamp})" if user_message else f"raft-data push: {stamp}"


def transfer_path() -> str:
    """How `huggingface_hub` will send large files, by its own rule (`is_xet_available`):
    Xet when `hf_xet` is installed and HF_HUB_DISABLE_XET is not set, else Git LFS."""
    from huggingface_hub import constants

    if constants.HF_HUB_DISABLE_XET:
        return "Git LFS (HF_HUB_DISABLE_XET is set)"
    try:
        version = importlib.metadata.version("hf_xet")
    except importlib.metadata.PackageNotFoundError:
        return "Git LFS (hf_xet is not installed)"
    return f"Xet storage (hf_xet {version})"


def _head(api: Any, repo_id: str, revision: str) -> str:
    """The commit sha the branch points at now."""
    return str(api.repo_info(repo_id, repo_type="dataset", revision=revision).sha)


def _remote_files(api: Any, repo_id: str, revision: str) -> dict[str, Any]:
    """Every file of the repo at `revision` (all pages of the listing: the Hub pages it)."""
    from huggingface_hub.hf_api import RepoFile

    tree = api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="dataset")
    return {f.path: f for f in tree if isinstance(f, RepoFile)}


def check_card(api: Any, card: bytes, path: Path) -> None:
    """Have the Hub validate the card's metadata (its `validate-yaml` endpoint, the check it
    applies on commit). Raises `RaftDataError` with the Hub's reasons when it refuses it."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    response = get_session().post(
        f"{api.endpoint}/api/validate-yaml",
        json={"content": card.decode("utf-8"), "repoType": "dataset"},
        headers=build_hf_headers(token=api.token),
    )
    if response.status_code == 400:
        try:
            reasons = [str(e.get("message")) for e in response.json().get("errors", [])]
        except (ValueError, AttributeError):
            reasons = []
        listed = "".join(f"\n  - {r}" for r in reasons or [response.text.strip() or "no reason given"])
        raise RaftDataError(
            f"{path}: the Hub refuses the card's metadata (this card merged with the Hub's):{listed}\n"
            "Fix the card's YAML front matter (or rebuild the folder with `raft-data build`); nothing was pushed"
        )
    hf_raise_for_status(response)


def _remote_card(api: Any, repo_id: str, revision: str) -> str | None:
    """The remote card's text. Fetched into a temporary folder, not the shared Hub cache: a
    lone README.md cached there would pass for a (partial) snapshot of the dataset."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="raft-push-card-") as tmp:
        path = api.hf_hub_download(repo_id, CARD_NAME, repo_type="dataset", revision=revision, local_dir=tmp)
        return Path(path).read_text(encoding="utf-8")


def push(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    options: PushOptions | None = None,
    log: Callable[[str], None] = print,
) -> PushResult:
    """Validate `folder`, then make dataset repo `repo_id` (at `options.revision`) match it."""
    options = options or PushOptions()
    folder = Path(folder)
    manifest = validate_folder(folder)
    token = resolve_token(token)
    try:
        return _push(folder, repo_id, token, manifest, options, log)
    except (RaftDataError, SchemaError) as err:
        raise type(err)(scrub(str(err), token)) from None
    except Exception as err:
        raise RaftDataError(
            f"push to dataset '{repo_id}' failed: {type(err).__name__}: {scrub(str(err), token)}"
        ) from None


def _push(
    folder: Path, repo_id: str, token: str, manifest: Manifest, options: PushOptions, log: Callable[[str], None]
) -> PushResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(endpoint=hub_endpoint(), token=token)
    revision = options.revision or "main"
    message = commit_message(manifest, options.commit_message)
    retry = lambda step, what: with_retries(step, what, options, log)  # noqa: E731

    _ensure_repo(api, repo_id, revision, options.private, retry)

    def current_state() -> tuple[str, Plan]:
        # one commit for the whole read: the tree (every page of it) and the card agree
        head = _head(api, repo_id, revision)
        remote = _remote_files(api, repo_id, head)
        remote_card = _remote_card(api, repo_id, head) if CARD_NAME in remote else None
        card = merge_card((folder / CARD_NAME).read_text(encoding="utf-8"), remote_card)
        return head, plan_changes(folder, card.encode("utf-8"), remote)

    head, plan = retry(current_state, "reading the remote repo")
    result = PushResult(repo_id, revision, up_to_date=not plan.add and not plan.delete, commit_message=message)
    result.unchanged = sorted(plan.unchanged)
    if result.up_to_date:
        return result
    result.transfer = transfer_path()
    log(f"large files go through {result.transfer}")
    card = plan.add.get(CARD_NAME)
    if isinstance(card, bytes):
        retry(lambda: check_card(api, card, folder / CARD_NAME), "checking the card")

    parts = split_commits(plan, options.max_commit_files, options.max_commit_bytes)
    description = _description(manifest)
    parent = [head]  # the commit the next one must follow
    for i, (adds, deletes) in enumerate(parts, start=1):
        summary = message if len(parts) == 1 else f"{message} [part {i}/{len(parts)}]"
        what = f"commit {i}/{len(parts)}"
        attempts = [0]

        def one_commit(
            adds: dict[str, Path | bytes] = adds,
            deletes: list[str] = deletes,
            summary: str = summary,
            what: str = what,
            attempts: list[int] = attempts,
        ) -> str:
            attempts[0] += 1
            if attempts[0] > 1:
                # the last attempt may have been applied with its answer lost, or the branch
                # moved: re-read it and send only what is still missing
                parent[0], now = current_state()
                adds = {rel: now.add[rel] for rel in adds if rel in now.add}
                deletes = [rel for rel in deletes if rel in now.delete]
                if not adds and not deletes:
                    log(f"{what} is already on the Hub (its answer was lost); going on")
                    return f"{api.endpoint}/datasets/{repo_id}/commit/{parent[0]}"
            # fresh operations per attempt: an operation cannot be committed twice
            operations: list[Any] = [
                CommitOperationAdd(path_in_repo=rel, path_or_fileobj=local if isinstance(local, bytes) else str(local))
                for rel, local in adds.items()
            ]
            operations += [CommitOperationDelete(path_in_repo=rel) for rel in deletes]
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=summary,
                commit_description=description,
                repo_type="dataset",
                revision=revision,
                parent_commit=parent[0],
            )
            parent[0] = str(info.oid)
            return str(info.commit_url)

        result.commits.append(
            with_retries(one_commit, what, options, log, statuses=(*TRANSIENT_STATUS, BRANCH_MOVED))
        )
        result.uploaded += sorted(adds)
        result.deleted += deletes
    return result


def _ensure_repo(api: Any, repo_id: str, revision: str, private: bool | None, retry: Callable[..., Any]) -> None:
    """The dataset repo, and the branch when it is not main (both idempotent)."""
    retry(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True), "create repo")
    if revision != "main":
        retry(
            lambda: api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True),
            "create branch",
        )


def _description(manifest: Manifest) -> str:
    c = manifest.counts
    return (
        f"Pipeline '{manifest.pipeline_name}', schema {manifest.schema_name} {manifest.schema_version}, "
        f"config hash {manifest.config_hash}, built {manifest.created_at} with raft-toolkit "
        f"{manifest.tool_version}.\n\nRows in {c.rows_in}: accepted {c.accepted}, fell back to gold "
        f"{c.fallback}, rejected {c.rejected}; over teacher length {c.over_length}."
    )


def format_push(result: PushResult, endpoint: str) -> str:
    from urllib.parse import quote

    url = f"{endpoint}/datasets/{result.repo_id}"
    if result.revision != "main":
        url += f"/tree/{quote(result.revision, safe='')}"
    if result.up_to_date:
        return f"{result.repo_id}@{result.revision} is up to date ({len(result.unchanged)} files); nothing pushed\n  {url}"
    lines = [
        f"pushed to {result.repo_id}@{result.revision}: {len(result.uploaded)} file(s) uploaded, "
        f"{len(result.deleted)} deleted, {len(result.unchanged)} unchanged, in {len(result.commits)} commit(s)",
        f"  message: {result.commit_message}",
        f"  {url}",
    ]
    return "\n".join(lines)
