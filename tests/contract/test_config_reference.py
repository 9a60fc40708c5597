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

MODELS: dict[str, type[BaseModel]] = {
    "build": PipelineConfig, "fit": FitConfig, "eval": EvalConfig, "replicate": ReplicateConfig
}


def run(kind: str, *args: str) -> str:
    if kind == "build":
        result = CliRunner().invoke(data_main, ["config", *args])
    else:
        result = CliRunner().invoke(distill_main, ["config", "--kind", kind, *args])
    assert result.exit_code == 0, result.output
    return result.output


def schema_leaves(schema: dict[str, Any], node: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted leaf keys from pydantic's JSON schema: a property that refers to a model
    (alone, optional, or as a list's items: `models[].x`) is a section, all else a leaf."""
    out: set[str] = set()
    for name, prop in node["properties"].items():
        many = prop.get("type") == "array"
        options = [prop.get("items", {})] if many else [prop, *prop.get("anyOf", [])]
        refs = [o["$ref"] for o in options if "$ref" in o]
        if not refs:
            out.add(prefix + name)
            continue
        section = schema["$defs"][refs[0].rsplit("/", 1)[-1]]
        out |= schema_leaves(schema, section, f"{prefix}{name}{'[]' if many else ''}.")
    return out


def printed_keys(text: str) -> set[str]:
    return {line.split(":", 1)[0] for line in text.splitlines() if line and line[0] not in " #[("}


@pytest.mark.parametrize("kind", list(MODELS))
def test_printed_keys_are_every_leaf_field(kind: str) -> None:
    model = MODELS[kind]
    schema = model.model_json_schema(by_alias=True)
    assert printed_keys(run(kind)) == schema_leaves(schema, schema) == {k.key for k in config_keys(model)}


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


@pytest.mark.parametrize("kind", list(MODELS))
def test_yaml_reads_back_as_the_defaults(kind: str) -> None:
    model = MODELS[kind]
    raw = apply_overrides(yaml.safe_load(run(kind, "--yaml")), REQUIRED[kind], ValueError)
    assert model.model_validate(raw) == model.model_validate(apply_overrides({}, REQUIRED[kind], ValueError))
