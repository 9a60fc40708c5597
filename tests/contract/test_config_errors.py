"""One config-error message for every command (`schemas.config_files.format_errors`):
each bad key named with its value and what is allowed there, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from raft_data.cli import main as data_main
from raft_distill.cli import main as distill_main

BUILD = "name: x\ninput: {path: a.jsonl}\noutput: {dir: o}\n"
FIT = "data: {path: runs/demo}\n"


def run(command: str, config: str, tmp_path: Path) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(config)
    main, name = (data_main, "build") if command == "raft-data" else (distill_main, "fit")
    result = CliRunner().invoke(main, [name, str(path)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize(
    ("command", "config", "expected"),
    [
        (
            "raft-data",
            BUILD + "filter: {tua: 0.7}\n",
            "unknown key 'filter.tua'; allowed here: tau, embedder, embed_batch_size, copy_threshold",
        ),
        (
            "raft-data",
            BUILD + "filtr: {}\n",
            "unknown key 'filtr'; allowed here: name, input, output, model, model_revision, backend",
        ),
        (
            "raft-distill",
            FIT + "loss: {topk: 5}\n",
            "unknown key 'loss.topk'; allowed here: mode, sft_target, lambda, ema_beta, eps, top_k",
        ),
    ],
)
def test_unknown_key_lists_the_keys_of_its_section(command: str, config: str, expected: str, tmp_path: Path) -> None:
    output = run(command, config, tmp_path)
    assert f"cfg.yaml: {expected}" in output
    assert f"every key, its default and meaning: `{command} config`" in output


@pytest.mark.parametrize(
    ("command", "config", "expected"),
    [
        (
            "raft-data",
            BUILD + "backend: {engine: vlm}\n",
            "key 'backend.engine': 'vlm' is not allowed; choose one of: auto, vllm, transformers",
        ),
        (
            "raft-distill",
            FIT + "loss: {mode: dpo}\n",
            "key 'loss.mode': 'dpo' is not allowed; choose one of: raft, sft, on-policy",
        ),
        (
            "raft-distill",
            FIT + "loss: {lambda: emma}\n",
            "key 'loss.lambda': 'emma' is not allowed; expected ema | float",
        ),
    ],
)
def test_bad_choice_lists_the_choices(command: str, config: str, expected: str, tmp_path: Path) -> None:
    assert f"cfg.yaml: {expected}" in run(command, config, tmp_path)


@pytest.mark.parametrize(
    ("command", "config", "expected"),
    [
        ("raft-data", BUILD + "filter: {tau: high}\n", "key 'filter.tau': must be a valid number"),
        ("raft-data", BUILD + "output: {dir: o, shard_size: 0}\n", "key 'output.shard_size': must be greater than or equal to 1 (got 0)"),
        ("raft-distill", FIT + "train: {max_steps: ten}\n", "key 'train.max_steps': must be a valid integer"),
        ("raft-distill", "model: {student: x}\n", "key 'data' is required"),
    ],
)
def test_bad_type_names_key_and_value(command: str, config: str, expected: str, tmp_path: Path) -> None:
    output = run(command, config, tmp_path)
    assert f"cfg.yaml: {expected}" in output
    if "(got" not in expected and "required" not in expected:
        assert "(got '" in output
