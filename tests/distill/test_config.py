"""config.py: defaults, unknown keys named with the allowed ones, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raft_distill.config import config_from_dict, load_config
from raft_distill.errors import DistillError


def test_defaults_follow_the_paper():
    cfg = config_from_dict({"data": {"path": "x"}})
    assert cfg.loss.top_k == 512 and cfg.loss.temperature == 1.5
    assert cfg.loss.ema_beta == 0.9 and cfg.loss.eps == 1e-8 and cfg.loss.lambda_ == "ema"
    assert cfg.train.lr == 5e-6 and cfg.train.weight_decay == 0.01
    assert cfg.teacher_name == cfg.model.student == "smollm2-135m-instruct"
    assert "Background reference knowledge: {reference}" in cfg.teacher.template


def test_unknown_key_is_named_with_allowed_keys():
    with pytest.raises(DistillError) as err:
        config_from_dict({"data": {"path": "x"}, "loss": {"topk": 5}})
    text = str(err.value)
    assert "loss.topk" in text and "top_k" in text and "temperature" in text
    with pytest.raises(DistillError, match="unknown key 'trainer'"):
        config_from_dict({"data": {"path": "x"}, "trainer": {}})


def test_bad_value_names_the_key():
    with pytest.raises(DistillError, match="loss.mode"):
        config_from_dict({"data": {"path": "x"}, "loss": {"mode": "dpo"}})
    with pytest.raises(DistillError, match="key 'data' is required"):
        config_from_dict({})
    with pytest.raises(DistillError, match="data.path"):
        config_from_dict({"data": {}})


def test_fixed_lambda_and_overrides(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": "d"}, "loss": {"lambda": 0.1}}))
    cfg = load_config(path, ["train.max_steps=7", "loss.mode=sft", "rollout.top_p=0.9"])
    assert cfg.loss.lambda_ == 0.1 and cfg.train.max_steps == 7 and cfg.loss.mode == "sft"
    assert cfg.rollout.top_p == 0.9
    with pytest.raises(DistillError, match="key.sub=value"):
        load_config(path, ["train.max_steps"])
    with pytest.raises(DistillError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_teacher_url_needs_the_vllm_engine():
    with pytest.raises(DistillError, match="teacher.url is read only with teacher.engine: vllm"):
        config_from_dict({"data": {"path": "x"}, "teacher": {"url": "http://127.0.0.1:8000"}})
    cfg = config_from_dict(
        {"data": {"path": "x"}, "teacher": {"engine": "vllm", "url": "http://127.0.0.1:8000"}}
    )
    assert cfg.teacher.engine == "vllm" and cfg.teacher.url == "http://127.0.0.1:8000"
    assert config_from_dict({"data": {"path": "x"}}).teacher.engine == "inprocess"
