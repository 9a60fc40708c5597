"""Replicate config: defaults, arms x seeds plan, errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raft_distill.errors import DistillError
from raft_distill.evaluate.config import ModelEntry
from raft_distill.replicate.config import DEFAULT_ARMS, config_from_dict, load_replicate_config
from raft_distill.replicate.run import eval_config, fit_configs

ROOT = Path(__file__).resolve().parents[2]
MIN = {"fit_config": "pipelines/distill_demo.yaml", "eval_config": "pipelines/eval_demo.yaml"}


def _err(raw: dict[str, Any]) -> str:
    with pytest.raises(DistillError) as info:
        config_from_dict(raw, "rep.yaml")
    return str(info.value)


def test_defaults_and_plan():
    cfg = config_from_dict(dict(MIN))
    assert cfg.seeds == [0, 1] and cfg.arms == DEFAULT_ARMS
    # seed by seed; within a seed the headline arms, then SFT (cheap), then rollout arms
    assert cfg.runs() == [
        ("sft_raw", 0), ("raft_ema", 0), ("sft_fused", 0), ("on_policy", 0),
        ("raft_fixed_0.1", 0), ("raft_fixed_1.0", 0), ("sft_raw", 1), ("raft_ema", 1),
    ]
    assert cfg.run_dir("raft_ema", 1) == Path("runs/replicate/raft_ema/seed1")


def test_errors_name_the_key():
    msg = _err({**MIN, "seed": [0]})
    assert "unknown key 'seed'" in msg and "seeds" in msg
    assert "key 'arms.1'" in _err({**MIN, "arms": ["base", "raft_fixed_0.5"]})
    assert "key 'fit_config'" in _err({"eval_config": "x.yaml"})
    assert "'loss.mode'" in _err({**MIN, "fit_overrides": {"loss.mode": "sft"}})
    assert "'train.seed'" in _err({**MIN, "fit_overrides": {"train.seed": 3}})
    assert "'models'" in _err({**MIN, "eval_overrides": {"models": []}})
    assert "'train.output_dir'" in _err({**MIN, "fit_overrides": {"train": {"output_dir": "x"}}})
    assert "key 'seeds'" in _err({**MIN, "seeds": [1, 1]})
    assert "key 'ifeval_metric'" in _err({**MIN, "ifeval_metric": "strict"})


def test_fit_and_eval_keys_validated_before_training(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    cfg = config_from_dict({**MIN, "fit_overrides": {"train.max_stepz": 3}})
    with pytest.raises(DistillError, match="unknown key 'train.max_stepz'"):
        fit_configs(cfg)
    cfg = config_from_dict({**MIN, "eval_overrides": {"suites.domain.limt": 3}})
    with pytest.raises(DistillError, match="unknown key 'suites.domain.limt'"):
        eval_config(cfg, [ModelEntry(name='m', path='p')])


def test_arm_switches_reach_the_fit_configs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    cfg = load_replicate_config(ROOT / "pipelines/replicate_demo.yaml")
    fits = fit_configs(cfg)
    loss = {key: (c.loss.mode, c.loss.sft_target, c.loss.lambda_) for key, c in fits.items()}
    assert loss[("sft_raw", 1)] == ("sft", "gold", "ema")
    assert loss[("sft_fused", 0)][:2] == ("sft", "fused")
    assert loss[("on_policy", 0)][0] == "on-policy"
    assert loss[("raft_ema", 0)] == ("raft", "fused", "ema")
    assert loss[("raft_fixed_0.1", 0)] == ("raft", "fused", 0.1)
    assert loss[("raft_fixed_1.0", 0)] == ("raft", "fused", 1.0)
    for (arm, seed), c in fits.items():
        assert c.train.seed == seed
        assert Path(c.train.output_dir) == Path(cfg.output_dir) / arm / f"seed{seed}"
    # shared overrides reach every arm; nothing else differs between arms
    dumps = {k: c.model_dump(mode="json", by_alias=True) for k, c in fits.items()}
    for d in dumps.values():
        d.pop("loss")
        d["train"].pop("seed")
        d["train"].pop("output_dir")
    assert len({str(d) for d in dumps.values()}) == 1
    ecfg = eval_config(cfg, [ModelEntry(name='m', path='p')])
    assert ecfg.output_dir == str(Path(cfg.output_dir) / "eval")


def test_nested_overrides_flatten():
    cfg = config_from_dict(
        {**MIN, "fit_overrides": {"train.lr": 1e-5, "train": {"batch_size": 8}, "model": {"student": "m"}}}
    )
    assert cfg.fit_overrides == {"train.lr": 1e-5, "train.batch_size": 8, "model.student": "m"}
    cli = load_replicate_config(ROOT / "pipelines/replicate_demo.yaml", ["fit_overrides.train.batch_size=16"])
    assert cli.fit_overrides["train.batch_size"] == 16 and cli.fit_overrides["train.max_steps"] == 30


def test_cli_override_and_error(tmp_path: Path):
    from click.testing import CliRunner

    from raft_distill.replicate_cli import command_line, replicate_cmd

    path = tmp_path / "rep.yaml"
    path.write_text("fit_config: a.yaml\neval_config: b.yaml\narms: [base]\n")
    result = CliRunner().invoke(replicate_cmd, [str(path), "--set", "seedz=[1]"])
    assert result.exit_code == 2 and "unknown key 'seedz'" in result.output
    assert command_line("p.yaml", ("seeds=[0, 1]",)) == "raft-distill replicate p.yaml --set 'seeds=[0, 1]'"
