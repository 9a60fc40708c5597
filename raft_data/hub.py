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
The checks, the card merge and the plan of adds, deletions and commits are decided on
this machine, in `raft_data/hub_plan.py`; this module talks to the Hub.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from raft_data.errors import RaftDataError
from raft_data.hub_plan import (
    CARD_NAME,
    Plan,
    merge_card,
    plan_changes,
    split_commits,
    validate_folder,
)
from schemas.errors import SchemaError
from schemas.manifest import Manifest

TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
BRANCH_MOVED = 412  # a commit's parent is no longer the branch head
XET_CLIENT_ERROR = re.compile(r"HTTP status client error \((\d{3})")
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
    from huggingface_hub import HfApi

    remote = _Remote(HfApi(endpoint=hub_endpoint(), token=token), repo_id, options.revision or "main", folder)
    message = commit_message(manifest, options.commit_message)
    retry = lambda step, what: with_retries(step, what, options, log)  # noqa: E731

    _ensure_repo(remote.api, repo_id, remote.revision, options.private, retry)
    head, plan = retry(remote.state, "reading the remote repo")
    result = PushResult(repo_id, remote.revision, up_to_date=not plan.add and not plan.delete, commit_message=message)
    result.unchanged = sorted(plan.unchanged)
    if result.up_to_date:
        return result
    result.transfer = transfer_path()
    log(f"large files go through {result.transfer}")
    card = plan.add.get(CARD_NAME)
    if isinstance(card, bytes):
        retry(lambda: check_card(remote.api, card, folder / CARD_NAME), "checking the card")

    parts = split_commits(plan, options.max_commit_files, options.max_commit_bytes)
    description = _description(manifest)
    parent = [head]  # the commit the next one must follow
    for i, (adds, deletes) in enumerate(parts, start=1):
        summary = message if len(parts) == 1 else f"{message} [part {i}/{len(parts)}]"
        what = f"commit {i}/{len(parts)}"
        step = _commit_step(remote, adds, deletes, (summary, description), what, parent, log)
        result.commits.append(
            with_retries(step, what, options, log, statuses=(*TRANSIENT_STATUS, BRANCH_MOVED))
        )
        result.uploaded += sorted(adds)
        result.deleted += deletes
    return result


@dataclass
class _Remote:
    """The dataset repo's branch that the folder is pushed to."""

    api: Any
    repo_id: str
    revision: str
    folder: Path

    def state(self) -> tuple[str, Plan]:
        """(the branch head's sha, what to add and delete to match the folder)."""
        # one commit for the whole read: the tree (every page of it) and the card agree
        head = _head(self.api, self.repo_id, self.revision)
        remote = _remote_files(self.api, self.repo_id, head)
        remote_card = _remote_card(self.api, self.repo_id, head) if CARD_NAME in remote else None
        card = merge_card((self.folder / CARD_NAME).read_text(encoding="utf-8"), remote_card)
        return head, plan_changes(self.folder, card.encode("utf-8"), remote)


def _commit_step(
    remote: _Remote,
    adds: dict[str, Path | bytes],
    deletes: list[str],
    texts: tuple[str, str],
    what: str,
    parent: list[str],
    log: Callable[[str], None],
) -> Callable[[], str]:
    """One part's commit as a step `with_retries` may run again; `texts` is (summary,
    description), `parent[0]` the commit it must follow (advanced when it lands). Returns
    the commit's URL."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api, repo_id = remote.api, remote.repo_id
    attempts = [0]

    def one_commit() -> str:
        attempts[0] += 1
        todo, gone = adds, deletes
        if attempts[0] > 1:
            # the last attempt may have been applied with its answer lost, or the branch
            # moved: re-read it and send only what is still missing
            parent[0], now = remote.state()
            todo = {rel: now.add[rel] for rel in adds if rel in now.add}
            gone = [rel for rel in deletes if rel in now.delete]
            if not todo and not gone:
                log(f"{what} is already on the Hub (its answer was lost); going on")
                return f"{api.endpoint}/datasets/{repo_id}/commit/{parent[0]}"
        # fresh operations per attempt: an operation cannot be committed twice
        operations: list[Any] = [
            CommitOperationAdd(path_in_repo=rel, path_or_fileobj=local if isinstance(local, bytes) else str(local))
            for rel, local in todo.items()
        ]
        operations += [CommitOperationDelete(path_in_repo=rel) for rel in gone]
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=texts[0],
            commit_description=texts[1],
            repo_type="dataset",
            revision=remote.revision,
            parent_commit=parent[0],
        )
        parent[0] = str(info.oid)
        return str(info.commit_url)

    return one_commit


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

