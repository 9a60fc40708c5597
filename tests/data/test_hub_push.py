"""`raft-data push` against a local stub Hub (tests/data/hub_stub.py), offline.

The push runs as the real CLI in a subprocess: huggingface_hub reads HF_ENDPOINT and
HF_HUB_DISABLE_XET at import time, so the child gets them in its environment and runs the
same code path as against huggingface.co: large files go through Xet (hf_xet, as on x86_64
and arm64) to the stub's CAS server, which rebuilds them from the uploaded xorbs and shard;
one test covers the Git LFS path that HF_HUB_DISABLE_XET=1 selects.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from raft_data.errors import RaftDataError
from raft_data.hub import (
    PushOptions,
    merge_card,
    plan_changes,
    split_commits,
    validate_folder,
    with_retries,
)
from schemas import SCHEMA_VERSION, SchemaError
from tests.data.hub_cli import REPO, TOKEN, push, run_cli
from tests.data.hub_stub import StubHub, make_built_folder


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


def commit_ops(hub: StubHub, index: int = -1) -> dict[str, str]:
    """{path: operation} of the `index`-th commit request the stub received."""
    body = [r.body for r in hub.requests if r.method == "POST" and "/commit/" in r.path][index].decode()
    return {json.loads(line)["value"].get("path"): json.loads(line)["key"] for line in body.splitlines()[1:]}


def test_push_uploads_the_folder_with_schema_and_config_in_the_message(hub: StubHub, tmp_path: Path, built: Path) -> None:
    """The production path: Parquet/PNG go through Xet (grant, upload, shard) to the CAS."""
    result = push(hub, tmp_path, built)
    assert result.returncode == 0, result.stderr
    assert "large files go through Xet storage (hf_xet " in result.stderr
    commits = hub.commits(REPO)
    assert [c.message for c in commits][0] == "initial commit" and len(commits) == 2
    commit = commits[-1]
    assert f"schema raft.refined {SCHEMA_VERSION}" in commit.message and "config c0ffee1234567890" in commit.message
    assert "5 rows" in commit.message
    files = hub.files(REPO)
    assert set(files) == EXPECTED | {".gitattributes"}
    assert not any(p.startswith(".raft") for p in files)
    for rel in EXPECTED:
        assert files[rel] == (built / rel).read_bytes(), rel
    # Parquet/PNG went through Xet: the stub rebuilt each from the uploaded xorbs and shard
    # (and checked its sha256), the commit points at them by sha256; text rides in the commit
    ops = commit_ops(hub)
    assert ops["data/train-00000-of-00002.parquet"] == "lfsFile" and ops["README.md"] == "file"
    lfs = [rel for rel, op in ops.items() if op == "lfsFile"]
    assert sorted(lfs) == sorted(p for p in EXPECTED if p.endswith((".parquet", ".png")))
    assert {hashlib.sha256(files[rel]).hexdigest() for rel in lfs} <= set(hub.xet_files)
    calls = {(r.server, r.method, r.path) for r in hub.requests}
    assert ("hub", "GET", f"/api/datasets/{REPO}/xet-write-token/main") in calls
    for server, method, prefix in [("cas", "POST", "/v1/xorb-grants/"), ("hub", "PUT", "/xet-upload/"), ("cas", "POST", "/v2/shards")]:
        assert any(c[:2] == (server, method) and c[2].startswith(prefix) for c in calls), prefix
    assert not any("/info/lfs/" in r.path or r.path.startswith("/lfs-upload/") for r in hub.requests)
    assert not any(".raft" in r.path or b".raft/" in r.body for r in hub.requests)
    # every Hub API request carried the token; the CAS got the short-lived Xet token, never
    # the Hub token; the grant's upload URL and the library's agent-registry fetch got neither
    for r in hub.requests:
        if r.server == "cas":
            assert r.headers["authorization"] == f"Bearer {hub.xet_token}", r.path
        elif r.path.startswith("/xet-upload/") or r.path == "/api/agent-harnesses":
            assert "authorization" not in r.headers, r.path
        else:
            assert r.headers["authorization"] == f"Bearer {TOKEN}", r.path
    # the card on the Hub says which schema and config it holds
    card = files["README.md"].decode()
    assert f"raft-schema-{SCHEMA_VERSION}" in front_matter(card)["tags"] and "c0ffee1234567890" in card
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
    assert f"Schema `raft.refined` version {SCHEMA_VERSION}" in hub.files(REPO)["README.md"].decode()

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
    assert message.startswith(f"first cut (schema raft.refined {SCHEMA_VERSION}, config c0ffee1234567890")


def test_a_large_push_is_split_into_commits_card_last(hub: StubHub, tmp_path: Path, built: Path) -> None:
    result = push(hub, tmp_path, built, "--max-commit-files", "2")
    assert result.returncode == 0, result.stderr
    commits = hub.commits(REPO)[1:]
    assert len(commits) == 3 and all("[part" in c.message for c in commits)
    assert "README.md" not in commits[-2].files and "README.md" in commits[-1].files
    assert set(hub.files(REPO)) == EXPECTED | {".gitattributes"}


def test_push_through_git_lfs_when_xet_is_disabled(hub: StubHub, tmp_path: Path, built: Path) -> None:
    """HF_HUB_DISABLE_XET=1 (or no hf_xet): the LFS batch API and a plain PUT per file."""
    result = push(hub, tmp_path, built, xet=False)
    assert result.returncode == 0, result.stderr
    assert "large files go through Git LFS (HF_HUB_DISABLE_XET is set)" in result.stderr
    assert commit_ops(hub)["data/train-00000-of-00002.parquet"] == "lfsFile"
    assert any(r.path.endswith("/info/lfs/objects/batch") for r in hub.requests)
    assert not any(r.server == "cas" or "xet" in r.path for r in hub.requests)
    files = hub.files(REPO)
    for rel in EXPECTED:
        assert files[rel] == (built / rel).read_bytes(), rel


@pytest.mark.parametrize(("extra", "parts"), [((), 1), (("--max-commit-files", "1"), 2)])
def test_a_commit_whose_answer_is_lost_is_not_sent_again(
    hub: StubHub, tmp_path: Path, built: Path, extra: tuple[str, ...], parts: int
) -> None:
    """The Hub applies the (first) commit but the answer never arrives: the retry re-reads the
    branch, sees the commit there and goes on, instead of resending it (with one commit: its
    deletions of two stale shards, a 404 from the Hub) or committing twice."""
    assert push(hub, tmp_path, built).returncode == 0
    rebuilt = tmp_path / "out2"
    make_built_folder(rebuilt, shards=1)
    hub.requests.clear()
    hub.drop_response("POST", "/commit/")
    result = push(hub, tmp_path, rebuilt, *extra)
    assert result.returncode == 0, result.stderr
    assert f"commit 1/{parts} is already on the Hub (its answer was lost)" in result.stderr
    # a 404 status, not the digits inside the stub's random port (127.0.0.1:40429 failed CI once)
    assert re.search(r"(?<!\d)404(?!\d)", result.stderr + result.stdout) is None
    assert len([r for r in hub.requests if r.method == "POST" and "/commit/" in r.path]) == parts
    assert len(hub.commits(REPO)) == 2 + parts  # initial, first push, this one's parts: no duplicate
    files = hub.files(REPO)
    assert sorted(p for p in files if p.startswith("data/")) == ["data/train-00000-of-00001.parquet"]
    assert files["data/train-00000-of-00001.parquet"] == (rebuilt / "data/train-00000-of-00001.parquet").read_bytes()
    assert "2 deleted" in result.stdout
    assert "up to date" in push(hub, tmp_path, rebuilt).stdout


def test_a_branch_moved_mid_push_keeps_the_edit_made_on_the_hub(hub: StubHub, tmp_path: Path, built: Path) -> None:
    """Someone edits the card on the Hub while the push uploads: the commit names the commit
    it was planned on as its parent, the Hub refuses it (412), and the push re-reads the
    branch and merges the new card instead of overwriting the edit."""
    assert push(hub, tmp_path, built).returncode == 0
    edited = hub.files(REPO)["README.md"].decode().replace("license: apache-2.0", "license: cc-by-4.0")
    hub.before("POST", "/preupload/", lambda: hub.put_file(REPO, "README.md", edited.encode()))
    rebuilt = tmp_path / "out2"
    make_built_folder(rebuilt, accepted=4, shards=1)  # new counts: the card changes too
    result = push(hub, tmp_path, rebuilt)
    assert result.returncode == 0, result.stderr
    assert "the branch moved during commit 1/1" in result.stderr
    card = front_matter(hub.files(REPO)["README.md"].decode())
    assert card["license"] == "cc-by-4.0"  # the edit made during the push survives
    assert card["configs"] == front_matter((rebuilt / "README.md").read_text())["configs"]
    assert "| 7 | 4 | 2 | 1 |" in hub.files(REPO)["README.md"].decode()  # the new build's counts
    assert sorted(p for p in hub.files(REPO) if p.startswith("data/")) == ["data/train-00000-of-00001.parquet"]
    assert [c.message for c in hub.commits(REPO)][-2] == "edit on the Hub"


def test_push_to_a_branch_whose_name_has_a_slash(hub: StubHub, tmp_path: Path, built: Path) -> None:
    result = push(hub, tmp_path, built, "--revision", "feature/x")
    assert result.returncode == 0, result.stderr
    assert set(hub.files(REPO, "feature/x")) == EXPECTED | {".gitattributes"}
    assert set(hub.files(REPO, "main")) == {".gitattributes"} and "feature" not in hub.repos[REPO].branches
    # the name travels as one URL segment; the printed link keeps it one segment too
    assert any(r.raw_path.endswith("/commit/feature%2Fx") for r in hub.requests)
    assert f"/datasets/{REPO}/tree/feature%2Fx" in result.stdout
    again = push(hub, tmp_path, built, "--revision", "feature/x")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stderr


def test_a_card_the_hub_refuses_stops_the_push_before_any_upload(hub: StubHub, tmp_path: Path, built: Path) -> None:
    """The card passes the local check (front matter with configs) but not the Hub's: the
    push asks `validate-yaml` first, so even a push split into several commits lands nothing."""
    card = built / "README.md"
    card.write_text(card.read_text().replace("license: apache-2.0", "license: my-own-license"))
    result = push(hub, tmp_path, built, "--max-commit-files", "2")
    assert result.returncode == 2, result.stderr
    assert "the Hub refuses the card's metadata" in result.stderr and '"license" must be one of' in result.stderr
    assert "nothing was pushed" in result.stderr and "Traceback" not in result.stderr
    assert [c.message for c in hub.commits(REPO)] == ["initial commit"]
    assert not any("/commit/" in r.path or "/preupload/" in r.path or r.server == "cas" for r in hub.requests)
    card.write_text(card.read_text().replace("license: my-own-license", "license: apache-2.0"))
    assert push(hub, tmp_path, built).returncode == 0


def test_tree_listings_are_read_page_by_page(hub: StubHub, tmp_path: Path) -> None:
    """65 files, 50 per page: the push reads both pages, so it sees the repo as up to date and
    deletes stale shards that are only on the second page."""
    many = tmp_path / "many"
    make_built_folder(many, accepted=120, fallback=0, shards=60)
    assert push(hub, tmp_path, many).returncode == 0
    assert len(hub.files(REPO)) == 65 > hub.page_size
    hub.requests.clear()
    again = push(hub, tmp_path, many)
    assert again.returncode == 0 and "up to date (64 files)" in again.stdout, again.stdout + again.stderr
    tree = [r for r in hub.requests if "/tree/" in r.path]
    assert len(tree) == 2 and "cursor" in tree[1].query  # the second page, by the Link header
    fewer = tmp_path / "fewer"
    make_built_folder(fewer, accepted=120, fallback=0, shards=30)
    result = push(hub, tmp_path, fewer)
    assert result.returncode == 0, result.stderr
    assert "60 deleted" in result.stdout  # 60 shards of 2 rows out, 30 shards of 4 rows in
    shards = sorted(p for p in hub.files(REPO) if p.startswith("data/"))
    assert shards == [f"data/train-{i:05d}-of-00030.parquet" for i in range(30)]


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


def test_with_retries_retries_xet_network_errors_but_not_xet_refusals() -> None:
    """hf_xet raises ConnectionError for every failed request; a 4xx in it is a refusal."""
    for message, calls_wanted in [
        ("Network error: Request error: HTTP status client error (404 Not Found), domain: http://x/api", 1),
        ("Network error: Request error: HTTP status server error (503 Service Unavailable), domain: http://x", 3),
        ("Network error: connection reset by peer", 3),
        ("Network error: Request error: HTTP status client error (429 Too Many Requests), domain: http://x", 3),
    ]:
        calls: list[int] = []

        def boom(message: str = message, calls: list[int] = calls) -> None:
            calls.append(1)
            raise ConnectionError(message)

        with pytest.raises(ConnectionError):
            with_retries(boom, "x", PushOptions(retries=2), log=lambda m: None, sleep=lambda s: None)
        assert len(calls) == calls_wanted, message


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
