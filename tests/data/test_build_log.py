"""The build's log: every decision that changes the result, on stderr (INFO) and in a file
per run under `.raft/logs/` (DEBUG), which `raft-data push` never uploads."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from raft_data.build import build
from raft_data.cli import main
from raft_data.config import PipelineConfig
from raft_data.hub_plan import local_files
from raft_data.log import LOGGER


@pytest.fixture()
def clean_logger() -> Iterator[None]:
    """The CLI adds a stderr handler to the process's `raft_data` logger: undo it. Engines
    left open by earlier tests are closed first: a shared engine logs no engine choice."""
    from raft_data.backends import close_backends

    close_backends()
    logger = logging.getLogger(LOGGER)
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def pipeline(tmp_path: Path, model: Path) -> dict:
    rows = [{"question": f"What is the atomic number of element {i}?", "answer": f"{i}."} for i in range(1, 6)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"question": "no answer"}\n')
    return {
        "name": "logged",
        "input": {"path": str(src)},
        "output": {"dir": str(tmp_path / "out"), "shard_size": 2},
        "model": str(model),
        "backend": {"engine": "transformers", "batch_size": 8},
        "rewrite": {"sampling": {"max_new_tokens": 6}},
        # a random model's rewrites, cut at 6 tokens, all fall back
        "filter": {"tau": 0.999},
        "fusion": {"enabled": False},
        "measure_gap": False,
    }


def logs(folder: Path) -> list[str]:
    return [p.read_text() for p in sorted((folder / ".raft" / "logs").glob("build-*.log"))]


def test_build_logs_decisions_and_why_shards_are_redone(
    tmp_path: Path, tiny_model_dir: Path, clean_logger: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump(pipeline(tmp_path, tiny_model_dir)))
    result = CliRunner().invoke(main, ["build", str(config)])
    assert result.exit_code == 0, result.output
    err = result.stderr
    assert "engine transformers (backend.engine set)" in err
    assert "transformers on cpu, float32 (backend.dtype auto: bfloat16 on GPU, float32 on CPU)" in err
    assert "6 rows, 1 rejected (answer missing 1)" in err
    assert "shards: 3 built, 0 reused" in err
    assert "fallback: 5 rows (truncated 5)" in err and "accepted: 0 rows (none)" in err
    out = tmp_path / "out"
    [first] = logs(out)
    assert "DEBUG" in first and "train-00000-of-00003.parquet: not built yet" in first
    assert "train-00000-of-00003.parquet built: 2 rows, truncated 2" in first
    assert not any(name.startswith(".raft") for name in local_files(out))  # never pushed

    # a rerun: one shard damaged, the others made by older decision logic
    from raft_data import refine

    (out / "data" / "train-00001-of-00003.parquet").write_bytes(b"not parquet")
    monkeypatch.setattr(refine, "DECISION_VERSION", refine.DECISION_VERSION + "-new")
    again = build(PipelineConfig.model_validate(pipeline(tmp_path, tiny_model_dir)))
    assert again.shards_done == 3
    second = logs(out)[-1]
    assert "train-00001-of-00003.parquet redone: not a finished shard (" in second
    assert "not a readable Parquet file" in second
    old = refine.DECISION_VERSION.removesuffix("-new")
    assert f"train-00000-of-00003.parquet redone: made with another decision_version {old} -> {old}-new" in second
