"""`raft-distill eval` config: defaults, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from raft_distill.errors import DistillError
from raft_distill.eval_cli import eval_cmd
from raft_distill.evaluate.config import config_from_dict, load_eval_config

MODELS = [{"name": "base", "path": "smollm2-135m-instruct"}]


def test_defaults_run_all_three_suites():
    cfg = config_from_dict({"models": MODELS})
    assert cfg.engine == "transformers"
    assert cfg.suites.enabled() == ["domain", "ifeval", "general"]
    assert cfg.suites.domain is not None and cfg.suites.domain.path == "data/demo/test.jsonl"


def test_unknown_key_error_names_key_and_allowed_keys():
    with pytest.raises(DistillError) as err:
        config_from_dict({"models": MODELS, "suites": {"domain": {"limt": 3}}}, "cfg.yaml")
    message = str(err.value)
    assert "cfg.yaml: unknown key 'suites.domain.limt'" in message
    assert "limit" in message and "prompt_template" in message
    with pytest.raises(DistillError, match="unknown key 'models.0.pth'; allowed here: name, path"):
        config_from_dict({"models": [{"name": "a", "path": "x", "pth": "y"}]})
    with pytest.raises(DistillError, match="unknown key 'engin'"):
        config_from_dict({"models": MODELS, "engin": "vllm"})


def test_bad_values_name_the_key():
    with pytest.raises(DistillError, match="key 'engine'"):
        config_from_dict({"models": MODELS, "engine": "llama.cpp"})
    with pytest.raises(DistillError, match="key 'models.0.name'"):
        config_from_dict({"models": [{"name": "a/b", "path": "x"}]})
    with pytest.raises(DistillError, match="repeated: a"):
        config_from_dict({"models": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]})
    with pytest.raises(DistillError, match="key 'models'"):
        config_from_dict({"models": []})


def test_suite_sections_and_overrides(tmp_path: Path):
    path = tmp_path / "eval.yaml"
    path.write_text(
        "models:\n  - {name: base, path: smollm2-135m-instruct}\n"
        "suites:\n  domain:\n  general: {enabled: false}\n"
    )
    cfg = load_eval_config(path)
    assert cfg.suites.enabled() == ["domain"]  # empty section = defaults; absent = off
    cfg = load_eval_config(path, ["suites.domain.limit=5", "max_new_tokens=32", "suites.general.enabled=true"])
    assert cfg.suites.domain is not None and cfg.suites.domain.limit == 5
    assert cfg.max_new_tokens == 32
    assert cfg.suites.enabled() == ["domain", "general"]
    # without a suites section every suite runs, and an override keeps the others on
    path.write_text("models:\n  - {name: base, path: smollm2-135m-instruct}\n")
    cfg = load_eval_config(path, ["suites.ifeval.limit=3"])
    assert cfg.suites.enabled() == ["domain", "ifeval", "general"]


def test_cli_prints_config_error_and_exits_2(tmp_path: Path):
    path = tmp_path / "eval.yaml"
    path.write_text("models:\n  - {name: base, path: smollm2-135m-instruct}\nbatchsize: 4\n")
    result = CliRunner().invoke(eval_cmd, [str(path)])
    assert result.exit_code == 2
    assert "unknown key 'batchsize'" in result.output
    result = CliRunner().invoke(eval_cmd, [str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_demo_pipeline_config_is_valid():
    root = Path(__file__).resolve().parents[2]
    cfg = load_eval_config(root / "pipelines" / "eval_demo.yaml")
    assert cfg.suites.enabled() == ["domain", "ifeval", "general"]
    assert [m.path for m in cfg.models] == ["smollm2-135m-instruct"]
