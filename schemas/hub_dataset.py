"""Where a refined dataset lives: a local folder, or a Hub dataset repo fetched into the cache.

Readers (`raft-data inspect`, `raft-distill fit`) take either and get a folder back, so the
rest of the code reads files and never talks to the Hub.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from schemas.errors import SchemaError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_repo_id(text: str) -> bool:
    return bool(_REPO_ID.fullmatch(text)) and ".." not in text and not text.endswith(".")


def resolve_dataset(path_or_repo: str, revision: str | None = None, refresh: bool = False) -> Path:
    """The local folder of a refined dataset.

    A folder that exists is returned as is. An `org/name` id is a Hub dataset repo: the
    cached snapshot is used when there is one (no network), else it is downloaded with
    `snapshot_download(repo_type="dataset")` into the Hugging Face cache. A cached branch
    (`main`) is not re-checked against the Hub: pass a commit sha as `revision` to pin a
    version, or `refresh=True` to fetch the branch's latest commit.
    """
    path = Path(path_or_repo).expanduser()
    if path.exists():
        if not path.is_dir():
            raise SchemaError(f"'{path_or_repo}' is a file; pass a dataset folder (the output.dir of a build)")
        return path
    if not looks_like_repo_id(path_or_repo):
        raise SchemaError(
            f"'{path_or_repo}' is neither an existing folder nor a Hub dataset id (org/name)"
        )
    return _snapshot(path_or_repo, revision, refresh)


def _complete(folder: Path) -> bool:
    """Whether a cached snapshot holds the manifest, the card and every file the manifest
    lists (a cache can hold a few files of a repo, e.g. one fetched by hf_hub_download)."""
    import json

    from schemas.manifest import MANIFEST_NAME

    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
        names = [*data.get("data_files", []), *data.get("rejected_files", []), "README.md"]
    except (OSError, ValueError, AttributeError):
        return False
    return all((folder / str(name)).is_file() for name in names)


def _snapshot(repo_id: str, revision: str | None, refresh: bool) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"Hub dataset '{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if not refresh:
        try:
            cached = Path(
                snapshot_download(
                    repo_id, repo_type="dataset", revision=revision, local_files_only=True, endpoint=endpoint
                )
            )
            if _complete(cached):
                return cached
        except (LocalEntryNotFoundError, FileNotFoundError):
            pass
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, endpoint=endpoint))
    except (RepositoryNotFoundError, GatedRepoError):
        raise SchemaError(
            f"{where}: not found, or private/gated and no valid token was sent; check the id, "
            "set HF_TOKEN or run `hf auth login`, or pass a local folder"
        ) from None
    except RevisionNotFoundError:
        raise SchemaError(f"{where}: no such branch, tag or commit on the Hub") from None
    except LocalEntryNotFoundError as err:
        offline = " (HF_HUB_OFFLINE is set)" if constants.is_offline_mode() else ""
        raise SchemaError(
            f"{where}: not in the local cache and the Hub could not be reached{offline}; "
            f"download it once while online, or pass a local folder ({err.__class__.__name__})"
        ) from None
    except HfHubHTTPError as err:
        raise SchemaError(f"{where}: the Hub answered an error ({str(err).splitlines()[0]}); try again later") from None
