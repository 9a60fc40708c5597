"""`raft-data inspect` and `schemas.resolve_dataset`: on a folder, and on a Hub id served by
the stub Hub (tests/data/hub_stub.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from raft_data.cli import main
from raft_data.inspect_view import histogram, inspect_dataset, side_by_side
from schemas import SCHEMA_VERSION, SchemaError
from schemas.hub_dataset import looks_like_repo_id, resolve_dataset
from tests.data.hub_stub import StubHub, make_built_folder

TOKEN = "hf_stubTOKEN_inspect"
REPO = "someone/refined-chem"


@pytest.fixture
def built(tmp_path: Path) -> Path:
    make_built_folder(tmp_path / "out")
    return tmp_path / "out"


def test_summary_has_counts_reasons_scores_and_rows_side_by_side(built: Path) -> None:
    text = inspect_dataset(built, rows=2, width=100)
    assert f"stub-chem: schema raft.refined {SCHEMA_VERSION}, config c0ffee1234567890" in text
    assert "rows in 6: accepted 3, fallback 2, rejected 1; over teacher length 1" in text
    lines = text.splitlines()
    # decisions table: counts and shares
    assert any(line.split()[:3] == ["accepted", "3", "50.0%"] for line in lines)
    assert any(line.split()[:3] == ["fallback", "2", "33.3%"] for line in lines)
    # reasons per decision, including the rejected input rows
    assert any(line.split() == ["accepted", "passed", "3"] for line in lines)
    assert any(line.split() == ["fallback", "low_similarity", "2"] for line in lines)
    assert any(line.split() == ["rejected", "answer:", "missing", "1"] for line in lines)
    # score distributions with min/median/mean/max and histograms
    for name in ("similarity (gold, rewrite)", "judge score (fusion)", "NLL gold answer", "NLL final answer"):
        assert name in text
    assert "similarity histogram" in text and "#" in text
    # over-length rows
    assert "over-length rows: 1" in text and "source_row 0: 150 tokens" in text
    # two rows, gold / rewrite / final side by side
    assert text.count("== source_row") == 2
    header = next(line for line in lines if line.startswith("GOLD"))
    assert "| REWRITE" in header and "| FINAL" in header
    assert "Compound 0 boils" in text and "At standard pressure," in text
    assert max(len(line) for line in lines) <= 100


def test_rows_option_and_narrow_width(built: Path) -> None:
    text = inspect_dataset(built, rows=0, width=60)
    assert "== source_row" not in text
    text = inspect_dataset(built, rows=5, width=60)
    assert text.count("== source_row") == 5
    assert max(len(line) for line in text.splitlines()) <= 60


def test_side_by_side_wraps_each_column() -> None:
    lines = side_by_side([("gold", "a " * 40), ("rewrite", ""), ("final", "short")], width=50)
    assert lines[0].startswith("GOLD") and all(len(line) <= 50 for line in lines)
    assert sum("a a" in line for line in lines) > 2


def test_histogram_counts_every_value() -> None:
    lines = histogram([0.1, 0.2, 0.2, 0.9], bins=4)
    assert len(lines) == 4 and sum(int(line.rsplit(" ", 1)[1]) for line in lines) == 4
    assert histogram([]) == ["  (no values)"]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in histogram([0.5, 0.5])) == 2  # zero span


def test_inspect_command_on_a_folder(built: Path) -> None:
    result = CliRunner().invoke(main, ["inspect", str(built), "--rows", "1", "--width", "90"])
    assert result.exit_code == 0, result.output
    assert "accepted 3, fallback 2, rejected 1" in result.output
    assert result.output.count("== source_row") == 1


def test_inspect_command_errors_are_clear(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope" / "x")])
    assert result.exit_code == 2 and "neither an existing folder nor a Hub dataset id" in result.stderr
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no manifest" in result.stderr


def test_resolve_dataset_local_and_offline(built: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_dataset(str(built)) == built
    with pytest.raises(SchemaError, match="is a file"):
        resolve_dataset(str(built / "manifest.json"))
    assert looks_like_repo_id("org/name-1.2") and not looks_like_repo_id("a/b/c")
    assert not looks_like_repo_id("../x")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    # HF_HUB_OFFLINE=1 (tests/conftest.py): not cached -> a clear error, no traceback
    with pytest.raises(SchemaError, match="not in the local cache"):
        resolve_dataset("nobody/not-cached-anywhere")


def _env(hub: StubHub, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_OFFLINE="0",
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
        HF_TOKEN=TOKEN,
    )
    env.update(extra)
    return env


def test_inspect_a_hub_id_downloads_then_reuses_the_cache(tmp_path: Path, built: Path) -> None:
    cli = [sys.executable, "-m", "raft_data.cli"]
    with StubHub(token=TOKEN) as hub:
        for _ in range(2):  # the second push reads the remote card: it must not leave a partial snapshot
            pushed = subprocess.run([*cli, "push", str(built), REPO], env=_env(hub, tmp_path), capture_output=True, text=True, timeout=120)
            assert pushed.returncode == 0, pushed.stderr
        hub.requests.clear()
        first = subprocess.run([*cli, "inspect", REPO, "--rows", "1"], env=_env(hub, tmp_path), capture_output=True, text=True, timeout=120)
        assert first.returncode == 0, first.stderr
        assert "rows in 6: accepted 3, fallback 2, rejected 1" in first.stdout
        assert first.stdout.count("== source_row") == 1
        downloaded = {r.path.rsplit("/resolve/", 1)[1].split("/", 1)[1] for r in hub.requests if r.method == "GET" and "/resolve/" in r.path}
        assert "manifest.json" in downloaded and "data/train-00000-of-00002.parquet" in downloaded
        hub.requests.clear()
        again = subprocess.run([*cli, "inspect", REPO], env=_env(hub, tmp_path, HF_HUB_OFFLINE="1"), capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert "accepted 3, fallback 2, rejected 1" in again.stdout
        assert hub.requests == []  # served from the cached snapshot
        missing = subprocess.run([*cli, "inspect", "someone/missing"], env=_env(hub, tmp_path), capture_output=True, text=True, timeout=120)
        assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr
