"""`raft-data push` against a local stub Hub (tests/data/hub_stub.py), offline.

The push runs as the real CLI in a subprocess: huggingface_hub reads HF_ENDPOINT and
HF_HUB_DISABLE_XET at import time, so the child gets them in its environment and runs the
same code path as against huggingface.co (Xet disabled: plain LFS uploads to the stub).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hub_stub import StubHub, make_built_folder

from raft_data.errors import RaftDataError
from raft_data.hub import (
    PushOptions,
    merge_card,
    plan_changes,
    split_commits,
    validate_folder,
    with_retries,
)
from schemas import SchemaError

TOKEN = "hf_stubTOKEN_9f8e7d6c5b4a"
REPO = "someone/refined-chem"


def run_cli(hub: StubHub, tmp_path: Path, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and k != "HF_TOKEN"}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_OFFLINE="0",
        HF_HOME=str(tmp_path / "hf-home"),  # no cached login, a fresh download cache
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "raft_data.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def push(hub: StubHub, tmp_path: Path, folder: Path, *extra: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    return run_cli(hub, tmp_path, "push", str(folder), REPO, *extra, token=token)


def front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---", 2)[1])


@pytest.fixture
def built(tmp_path: Path) -> Path:
    make_built_folder(tmp_path / "out")
    return tmp_path / "out"


@pytest.fixture
def hub():
    with StubHub(token=TOKEN) as stub:
        yield stub


EXPECTED = {
    "README.md",
    "manifest.json",
    "data/train-00000-of-00002.parquet",
    "data/train-00001-of-00002.parquet",
    "rejected/rejected.parquet",
    "similarity.png",
}


def test_push_uploads_the_folder_with_schema_and_config_in_the_message(hub: StubHub, tmp_path: Path, built: Path) -> None:
    result = push(hub, tmp_path, built)
    assert result.returncode == 0, result.stderr
    commits = hub.commits(REPO)
    assert [c.message for c in commits][0] == "initial commit" and len(commits) == 2
    commit = commits[-1]
    assert "schema raft.refined 1.0" in commit.message and "config c0ffee1234567890" in commit.message
    assert "5 rows" in commit.message
    files = hub.files(REPO)
    assert set(files) == EXPECTED | {".gitattributes"}
    assert not any(p.startswith(".raft") for p in files)
    for rel in EXPECTED:
        assert files[rel] == (built / rel).read_bytes(), rel
    # Parquet/PNG went through the LFS batch API, text as regular files in the commit
    body = next(r.body for r in hub.requests if r.path.endswith("/commit/main")).decode()
    ops = {json.loads(line)["value"].get("path"): json.loads(line)["key"] for line in body.splitlines()[1:]}
    assert ops["data/train-00000-of-00002.parquet"] == "lfsFile" and ops["README.md"] == "file"
    assert not any(".raft" in r.path or b".raft/" in r.body for r in hub.requests)
    # every Hub API request carried the token; LFS storage PUTs and the library's
    # unauthenticated agent-registry fetch do not
    for r in hub.requests:
        if r.path.startswith("/lfs-upload/") or r.path == "/api/agent-harnesses":
            assert "authorization" not in r.headers
        else:
            assert r.headers["authorization"] == f"Bearer {TOKEN}", r.path
    # the card on the Hub says which schema and config it holds
    card = files["README.md"].decode()
    assert "raft-schema-1.0" in front_matter(card)["tags"] and "c0ffee1234567890" in card
    # the token is in no output and no uploaded or local file
    assert TOKEN not in result.stdout + result.stderr
    for rel, data in files.items():
        assert TOKEN.encode() not in data, rel
    for path in built.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert "pushed to someone/refined-chem@main" in result.stdout


def test_repush_of_an_unchanged_folder_makes_no_commit(hub: StubHub, tmp_path: Path, built: Path) -> None:
    assert push(hub, tmp_path, built).returncode == 0
    hub.requests.clear()
    again = push(hub, tmp_path, built)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    assert len(hub.commits(REPO)) == 2
    assert not [r for r in hub.requests if "/commit/" in r.path or "/preupload/" in r.path or r.method == "PUT"]


def test_rebuilt_folder_uploads_changes_and_deletes_stale_shards(hub: StubHub, tmp_path: Path, built: Path) -> None:
    assert push(hub, tmp_path, built).returncode == 0
    rebuilt = tmp_path / "out2"
    make_built_folder(rebuilt, shards=1)  # same rows, one shard instead of two
    result = push(hub, tmp_path, rebuilt)
    assert result.returncode == 0, result.stderr
    files = hub.files(REPO)
    assert sorted(p for p in files if p.startswith("data/")) == ["data/train-00000-of-00001.parquet"]
    assert "2 file(s) uploaded, 2 deleted, 3 unchanged" in result.stdout
    assert files["rejected/rejected.parquet"] == (rebuilt / "rejected/rejected.parquet").read_bytes()
    last = [r for r in hub.requests if r.path.endswith("/commit/main")][-1].body.decode()
    assert "similarity.png" not in last  # unchanged files are not re-sent


def test_remote_card_metadata_added_on_the_hub_survives_the_next_push(hub: StubHub, tmp_path: Path, built: Path) -> None:
    assert push(hub, tmp_path, built).returncode == 0
    remote = hub.files(REPO)["README.md"].decode()
    meta = front_matter(remote)
    meta["license"] = "cc-by-4.0"
    meta["task_categories"] = ["text-generation"]
    meta["tags"] = [*meta["tags"], "chemistry", "raft-schema-0.9"]
    meta["annotations_creators"] = ["expert-generated"]
    meta["configs"] = [{"config_name": "default", "data_files": "old/*.parquet"}]
    meta["size_categories"] = ["1M<n<10M"]
    body = remote.split("---", 2)[2]
    hub.put_file(REPO, "README.md", ("---\n" + yaml.safe_dump(meta, sort_keys=False) + "---" + body).encode())

    result = push(hub, tmp_path, built)
    assert result.returncode == 0, result.stderr
    merged = front_matter(hub.files(REPO)["README.md"].decode())
    ours = front_matter((built / "README.md").read_text())
    assert merged["license"] == "cc-by-4.0"  # the user's choices stay
    assert merged["task_categories"] == ["text-generation"]
    assert merged["annotations_creators"] == ["expert-generated"]
    assert "chemistry" in merged["tags"] and "raft-schema-0.9" not in merged["tags"]
    assert set(ours["tags"]) <= set(merged["tags"])  # our tags are back
    assert merged["configs"] == ours["configs"]  # our keys are ours
    assert merged["size_categories"] == ours["size_categories"]
    assert "Schema `raft.refined` version 1.0" in hub.files(REPO)["README.md"].decode()

    commits = len(hub.commits(REPO))
    third = push(hub, tmp_path, built)  # merging is idempotent: nothing left to push
    assert "up to date" in third.stdout and len(hub.commits(REPO)) == commits


def _drop_manifest(folder: Path) -> None:
    (folder / "manifest.json").unlink()


def _newer_schema(folder: Path) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    data["schema_version"] = "2.0"
    (folder / "manifest.json").write_text(json.dumps(data))


def _count_mismatch(folder: Path) -> None:
    data = json.loads((folder / "manifest.json").read_text())
    data["counts"]["accepted"] += 1
    (folder / "manifest.json").write_text(json.dumps(data))


def _missing_shard(folder: Path) -> None:
    (folder / "data/train-00001-of-00002.parquet").unlink()


def _corrupt_shard(folder: Path) -> None:
    (folder / "data/train-00001-of-00002.parquet").write_bytes(b"not parquet")


def _no_card(folder: Path) -> None:
    (folder / "README.md").write_text("# no front matter\n")


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_drop_manifest, "no manifest"),
        (_newer_schema, "schema version 2.0 is newer"),
        (_count_mismatch, "counts say accepted 4"),
        (_missing_shard, "train-00001-of-00002.parquet' but"),
        (_corrupt_shard, "not a readable Parquet file"),
        (_no_card, "no YAML front matter"),
    ],
)
def test_a_bad_folder_is_refused_before_any_request(
    hub: StubHub, built: Path, monkeypatch: pytest.MonkeyPatch, damage, says: str
) -> None:
    """In-process (fast): HF_ENDPOINT is read at call time, so a push that got past the
    checks would reach the stub (and fail the message check) instead of the real Hub."""
    from click.testing import CliRunner

    from raft_data.cli import main

    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    damage(built)
    result = CliRunner().invoke(main, ["push", str(built), REPO])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and says in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert hub.requests == []


def test_a_bad_folder_is_refused_by_the_real_command(hub: StubHub, tmp_path: Path, built: Path) -> None:
    _count_mismatch(built)
    result = push(hub, tmp_path, built)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "rebuild" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and hub.requests == []


def test_a_stray_parquet_file_is_refused(tmp_path: Path, built: Path) -> None:
    (built / "data/train-00005-of-00009.parquet").write_bytes((built / "data/train-00000-of-00002.parquet").read_bytes())
    with pytest.raises(RaftDataError, match="not listed in manifest.json"):
        validate_folder(built)


def test_a_missing_token_is_a_clear_error_with_no_request(hub: StubHub, tmp_path: Path, built: Path) -> None:
    result = push(hub, tmp_path, built, token=None)
    assert result.returncode == 2
    assert "set HF_TOKEN or pass --token or run `hf auth login`" in result.stderr
    assert "Traceback" not in result.stderr and hub.requests == []


def test_the_token_is_scrubbed_from_hub_errors(hub: StubHub, tmp_path: Path, built: Path) -> None:
    hub.fail("POST", "/commit/", 403, body=json.dumps({"error": f"token {TOKEN} cannot write here"}).encode())
    result = run_cli(hub, tmp_path, "push", str(built), REPO, "--token", TOKEN, token=None)
    assert result.returncode == 2
    assert "error: push to dataset 'someone/refined-chem' failed" in result.stderr
    assert "cannot write here" in result.stderr and "***" in result.stderr
    assert TOKEN not in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert any(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests)


def test_transient_hub_errors_are_retried(hub: StubHub, tmp_path: Path, built: Path) -> None:
    hub.fail("GET", "/tree/", 429, {"Retry-After": "0"})
    hub.fail("POST", "/commit/", 503, {"Retry-After": "0"})
    result = push(hub, tmp_path, built)
    assert result.returncode == 0, result.stderr
    assert "retrying" in result.stderr
    assert len(hub.commits(REPO)) == 2 and set(hub.files(REPO)) == EXPECTED | {".gitattributes"}


def test_push_to_a_branch_and_private(hub: StubHub, tmp_path: Path, built: Path) -> None:
    result = push(hub, tmp_path, built, "--revision", "v1", "--private", "--commit-message", "first cut")
    assert result.returncode == 0, result.stderr
    assert hub.repos[REPO].private
    assert set(hub.files(REPO, "main")) == {".gitattributes"}
    assert set(hub.files(REPO, "v1")) == EXPECTED | {".gitattributes"}
    message = hub.commits(REPO)[-1].message
    assert message.startswith("first cut (schema raft.refined 1.0, config c0ffee1234567890")


def test_a_large_push_is_split_into_commits_card_last(hub: StubHub, tmp_path: Path, built: Path) -> None:
    result = push(hub, tmp_path, built, "--max-commit-files", "2")
    assert result.returncode == 0, result.stderr
    commits = hub.commits(REPO)[1:]
    assert len(commits) == 3 and all("[part" in c.message for c in commits)
    assert "README.md" not in commits[-2].files and "README.md" in commits[-1].files
    assert set(hub.files(REPO)) == EXPECTED | {".gitattributes"}


# --------------------------------------------------------------------------- units


def test_merge_card_is_identity_without_a_remote_card_and_idempotent(built: Path) -> None:
    local = (built / "README.md").read_text()
    assert merge_card(local, None) == local
    assert merge_card(local, local) == local
    remote = local.replace("license: apache-2.0", "license: mit\nextra_key: kept")
    once = merge_card(local, remote)
    assert "extra_key: kept" in once and "license: mit" in once
    assert merge_card(local, once) == once


def test_plan_and_split(built: Path) -> None:
    plan = plan_changes(built, (built / "README.md").read_bytes(), {})
    assert set(plan.add) == EXPECTED and plan.delete == []
    parts = split_commits(plan, max_files=2, max_bytes=10**9)
    assert [sorted(a) for a, _ in parts][-1] == ["README.md", "manifest.json"]
    assert sum(len(a) for a, _ in parts) == len(EXPECTED)


def test_with_retries_gives_up_on_permanent_errors() -> None:
    calls = []

    def boom() -> None:
        calls.append(1)
        raise ValueError("not transient")

    with pytest.raises(ValueError):
        with_retries(boom, "x", PushOptions(retries=3), log=lambda m: None, sleep=lambda s: None)
    assert len(calls) == 1


def test_the_folder_loads_with_datasets_like_the_hub_repo(tmp_path: Path, built: Path) -> None:
    """The card's `configs` give the same splits as on the Hub. A fresh cache_dir: offline,
    `datasets` keys its cache by folder name and would reuse another folder named 'out'."""
    import datasets

    cache = str(tmp_path / "datasets-cache")
    train = datasets.load_dataset(str(built), split="train", cache_dir=cache)
    assert train.num_rows == 5
    assert sorted(set(train["decision"])) == ["accepted", "fallback"]
    rejected = datasets.load_dataset(str(built), "rejected", split="train", cache_dir=cache)
    assert rejected.num_rows == 1 and rejected["decision"] == ["rejected"]


def test_validate_folder_rejects_newer_stamped_shard(built: Path) -> None:
    import pyarrow.parquet as pq

    path = built / "data/train-00000-of-00002.parquet"
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"raft.schema_version"] = b"1.9"
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(SchemaError, match="newer than or incompatible"):
        validate_folder(built)
