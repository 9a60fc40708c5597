"""What `raft-data push` sends, decided on this machine before any request: the folder
checked (`validate_folder`), the card merged with the Hub's (`merge_card`), and the files
to add and delete (`plan_changes`), cut into commits (`split_commits`).

Talking to the Hub (tokens, retries, the commits themselves) is `raft_data/hub.py`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from raft_data.errors import RaftDataError
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
FRONT_MATTER = re.compile(r"^\s*---[\r\n]+([\S\s]*?)[\r\n]+---(?:\r\n|\n|$)")


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
