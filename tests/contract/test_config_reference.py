"""`raft-data config` / `raft-distill config`: every key a loader accepts is printed, with
the defaults a run gets, and `--yaml` is a file the loader reads back as the defaults."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from raft_data.cli import main as data_main
from raft_data.config import PipelineConfig
from raft_distill.cli import main as distill_main
from raft_distill.config import FitConfig
from raft_distill.evaluate.config import EvalConfig
from raft_distill.replicate.config import ReplicateConfig
from schemas.config_files import apply_overrides
from schemas.config_reference import config_keys

# Each config with its required keys filled and every optional section present, so that
# pydantic's own dump of it holds every leaf key.
FULL: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
    "build": (PipelineConfig, {"name": "n", "input": {"path": "in.jsonl"}, "output": {"dir": "out"}}),
    "fit": (FitConfig, {"data": {"path": "runs/demo"}}),
    "eval": (EvalConfig, {"models": [{"name": "m", "path": "p"}], "judge": {"models": ["j"]}}),
    "replicate": (ReplicateConfig, {"fit_config": "f.yaml", "eval_config": "e.yaml"}),
}


def run(kind: str, *args: str) -> str:
    if kind == "build":
        result = CliRunner().invoke(data_main, ["config", *args])
    else:
        result = CliRunner().invoke(distill_main, ["config", "--kind", kind, *args])
    assert result.exit_code == 0, result.output
    return result.output


def dumped_leaves(value: Any, prefix: str = "") -> set[str]:
    """Dotted leaf keys of a pydantic dump: a list of mappings is a section (`models[].x`)."""
    if isinstance(value, dict) and value:
        return {k for key, v in value.items() for k in dumped_leaves(v, f"{prefix}{key}.")}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return dumped_leaves(value[0], prefix.removesuffix(".") + "[].")
    return {prefix.removesuffix(".")}


def printed_keys(text: str) -> set[str]:
    return {line.split(":", 1)[0] for line in text.splitlines() if line and line[0] not in " #[("}


@pytest.mark.parametrize("kind", list(FULL))
def test_printed_keys_are_every_leaf_field(kind: str) -> None:
    model, raw = FULL[kind]
    dump = model.model_validate(raw).model_dump(mode="json", by_alias=True)
    # dict-valued leaves (replicate's *_overrides, arm_data) are keys of their own
    leaves = dumped_leaves(dump)
    assert printed_keys(run(kind)) == leaves == {k.key for k in config_keys(model)}


def test_every_key_has_help_text() -> None:
    """Stage 1 and fit document every key; eval and replicate are listed for their owners."""
    for model in (PipelineConfig, FitConfig):
        assert [k.key for k in config_keys(model) if not k.help] == []


def test_defaults_are_those_of_a_run() -> None:
    text = run("build", "judge_sampling")
    assert "fusion.judge_sampling.temperature: float = 0.0" in text  # not SamplingConfig's 0.7
    assert "fusion.judge_sampling.max_new_tokens: int = 16" in text
    assert run("fit", "lambda").splitlines()[-2] == "loss.lambda: ema | float = ema"
    assert "filter.tau: float = 0.8  (>= -1.0, <= 1.0)" in run("build", "tau")
    assert "no key contains 'nosuchkey'" in run("build", "nosuchkey")


# The required keys, as `--set` overrides
REQUIRED = {
    "build": ["name=n", "input.path=in.jsonl", "output.dir=out"],
    "fit": ["data.path=runs/demo"],
    "eval": ["models=[{name: m, path: p}]"],
    "replicate": ["fit_config=f.yaml", "eval_config=e.yaml"],
}


@pytest.mark.parametrize("kind", list(FULL))
def test_yaml_reads_back_as_the_defaults(kind: str) -> None:
    model = FULL[kind][0]
    raw = apply_overrides(yaml.safe_load(run(kind, "--yaml")), REQUIRED[kind], ValueError)
    assert model.model_validate(raw) == model.model_validate(apply_overrides({}, REQUIRED[kind], ValueError))
