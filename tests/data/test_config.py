from __future__ import annotations

from pathlib import Path

import pytest

from raft_data.config import PipelineConfig, load_config
from raft_data.errors import RaftDataError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_shipped_demo_config_is_valid_and_uses_paper_defaults() -> None:
    cfg = load_config(ROOT / "pipelines" / "demo.yaml")
    assert cfg.filter.tau == 0.8 and cfg.fusion.stop_score == 0.8
    assert cfg.model == "smollm2-135m-instruct"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ninput: {path: a.jsonl}\noutput: {dir: o}\nfilter: {tua: 0.7}\n")
    with pytest.raises(RaftDataError, match=r"unknown key 'filter.tua'; allowed here: tau, embedder"):
        load_config(path)


def test_bad_choice_lists_allowed_values(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ninput: {path: a.jsonl, on_bad_row: skip}\noutput: {dir: o}\n")
    with pytest.raises(RaftDataError, match=r"key 'input.on_bad_row': 'skip' is not allowed; choose one of: quarantine, fail"):
        load_config(path)


def test_template_placeholders_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ninput: {path: a.jsonl}\noutput: {dir: o}\nrewrite: {prompt_template: '{question} {gold}'}\n")
    with pytest.raises(RaftDataError, match=r"rewrite.prompt_template.*lacks placeholder.*answer"):
        load_config(path)


def test_overrides_and_hash(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\ninput: {path: a.jsonl}\noutput: {dir: o}\n")
    a = load_config(path)
    b = load_config(path, ["filter.tau=0.5", "input.limit=3"])
    assert b.filter.tau == 0.5 and b.input.limit == 3
    assert a.config_hash() != b.config_hash()
    assert a.config_hash() == PipelineConfig.model_validate(a.model_dump()).config_hash()
    with pytest.raises(RaftDataError, match="key.sub=value"):
        load_config(path, ["nonsense"])


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(RaftDataError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(RaftDataError, match="not valid YAML"):
        load_config(write(tmp_path, "name: [x\n"))
