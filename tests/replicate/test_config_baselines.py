"""The practitioners' baselines as replicate arms: lower learning rates (the arm's lr wins
over the shared one, and may not equal it), LoRA (the `lora` section, never the shared
config), the teacher-guard ablation, the merge arms (post-hoc, following their source's
seeds, alpha chosen on `merge.val_path`); the shipped MedMCQA config and its fit order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raft_distill.errors import DistillError
from raft_distill.replicate.config import config_from_dict, load_replicate_config
from raft_distill.replicate.run import fit_configs
from schemas.teacher_context import GUARDED_TEACHER_TEMPLATE, TEACHER_TEMPLATE

ROOT = Path(__file__).resolve().parents[2]
MIN = {"fit_config": "pipelines/distill_demo.yaml", "eval_config": "pipelines/eval_demo.yaml"}
VAL = {"val_path": "data/medmcqa/val.jsonl"}


def _err(raw: dict[str, Any]) -> str:
    with pytest.raises(DistillError) as info:
        config_from_dict(raw, "rep.yaml")
    return str(info.value)


def test_baseline_arms_are_checked():
    assert "key 'arms.1'" in _err({**MIN, "arms": ["base", "sft_lr1e-3"]})
    assert "merges 'sft_raw': add it to arms" in _err({**MIN, "arms": ["sft_merge"], "merge": VAL})
    assert "merges 'raft_ema'" in _err({**MIN, "arms": ["sft_raw", "raft_merge"], "merge": VAL})
    assert "set merge.val_path" in _err({**MIN, "arms": ["sft_raw", "sft_merge"]})
    assert "follows the seeds of 'raft_ema'" in _err({
        **MIN, "arms": ["raft_ema", "raft_merge"], "all_seeds_arms": ["raft_merge"], "merge": VAL,
    })
    assert "key 'merge.grid'" in _err({**MIN, "merge": {"grid": [0.0, 1.5]}})
    assert "key 'merge.grid'" in _err({**MIN, "merge": {"grid": [0.5, 0.5]}})
    assert "unknown key 'merge.val'" in _err({**MIN, "merge": {"val": "x.jsonl"}})
    # LoRA is the lora arms' switch: set through the `lora` section, never for every arm
    for key in ("train.lora", "train.lora.r"):
        msg = _err({**MIN, "fit_overrides": {key: 8}})
        assert f"'{key}'" in msg and "`lora` section" in msg
    assert "key 'lora.rank'" in _err({**MIN, "lora": {"rank": 8}})
    assert "keep it true" in _err({**MIN, "lora": {"merge_on_save": False}})
    # an lr arm at the shared lr would be a second sft_raw
    msg = _err({**MIN, "arms": ["sft_raw", "sft_lr2e-4"], "fit_overrides": {"train.lr": 2e-4}})
    assert "arm sft_lr2e-4 trains at train.lr 0.0002" in msg and "fit_overrides" in msg
    ok = config_from_dict({**MIN, "arms": ["sft_lr2e-4"], "fit_overrides": {"train.lr": 5e-4}})
    assert ok.arms == ["sft_lr2e-4"]


def test_switches_lr_lora_guard(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    arms = ["sft_raw", "sft_lr5e-5", "sft_lr2e-4", "raft_ema", "raft_ema_guard", "lora_sft",
            "lora_raft", "raft_ema_vllm", "raft_ema_budget"]
    cfg = config_from_dict({
        **MIN, "arms": arms, "seeds": [0],
        # the demo's fit config sets the budget; the ablation runs against the fixed cap
        "fit_overrides": {"train.lr": 5e-4, "rollout.target_length_factor": None},
        "lora": {"r": 8, "alpha": 16},
    })
    fits = {arm: c for (arm, _), c in fit_configs(cfg).items()}
    assert {a: c.train.lr for a, c in fits.items()} == {
        **{a: 5e-4 for a in arms}, "sft_lr5e-5": 5e-5, "sft_lr2e-4": 2e-4,
    }
    for arm, c in fits.items():
        lora = c.train.lora
        assert (lora is not None) == arm.startswith("lora_")
        assert lora is None or (lora.r, lora.alpha, lora.target_modules) == (8, 16, "all-linear")
        guarded = c.teacher.template == GUARDED_TEACHER_TEMPLATE
        assert guarded == (arm == "raft_ema_guard")
        assert (c.rollout.engine == "vllm") == (arm == "raft_ema_vllm")
        assert (c.rollout.target_length_factor == 1.5) == (arm == "raft_ema_budget")
    gold = ("sft", "gold")
    for arm in ("sft_raw", "sft_lr5e-5", "sft_lr2e-4", "lora_sft"):
        assert (fits[arm].loss.mode, fits[arm].loss.sft_target) == gold
    for arm in ("raft_ema_guard", "lora_raft", "raft_ema_vllm", "raft_ema_budget"):
        assert fits[arm].loss == fits["raft_ema"].loss
    # nothing else differs between the arms
    dumps = []
    for c in fits.values():
        d = c.model_dump(mode="json", by_alias=True)
        for section, key in (("train", "lr"), ("train", "lora"), ("train", "output_dir"),
                             ("teacher", "template"), ("rollout", "engine"),
                             ("rollout", "target_length_factor")):
            d[section].pop(key)
        d.pop("loss")
        dumps.append(str(d))
    assert len(set(dumps)) == 1


def test_switch_clashes_with_the_shared_fit_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    guarded = {**MIN, "arms": ["raft_ema_guard"],
               "fit_overrides": {"teacher.template": GUARDED_TEACHER_TEMPLATE}}
    with pytest.raises(DistillError, match="arm raft_ema_guard is raft_ema with teacher.template.* already set teacher.template"):
        fit_configs(config_from_dict(guarded))
    vllm = {**MIN, "arms": ["raft_ema_vllm"], "fit_overrides": {"rollout.engine": "vllm"}}
    with pytest.raises(DistillError, match="arm raft_ema_vllm .* already set rollout.engine to 'vllm'"):
        fit_configs(config_from_dict(vllm))
    budget = {**MIN, "arms": ["raft_ema_budget"],
              "fit_overrides": {"rollout.target_length_factor": 2.0}}
    with pytest.raises(DistillError, match="already set rollout.target_length_factor to 2.0"):
        fit_configs(config_from_dict(budget))
    for arm, key, value in (("raft_ema_mask", "loss.mask_reference_kl", True),
                            ("raft_ema_plain", "teacher.format", "plain")):
        clash = {**MIN, "arms": [arm], "fit_overrides": {key: value}}
        with pytest.raises(DistillError, match=f"arm {arm} .* already set {key} .* or drop {arm}"):
            fit_configs(config_from_dict(clash))
    # the default set explicitly is no clash
    mask_off = {**MIN, "arms": ["raft_ema_mask"], "fit_overrides": {"loss.mask_reference_kl": False}}
    assert len(fit_configs(config_from_dict(mask_off))) == 1
    plain = {**MIN, "arms": ["raft_ema_guard"], "fit_overrides": {"teacher.template": TEACHER_TEMPLATE}}
    assert len(fit_configs(config_from_dict(plain))) == 1
    # the shared lr from the fit config file itself (not fit_overrides): caught before training
    fit = tmp_path / "fit.yaml"
    fit.write_text((ROOT / "pipelines/distill_demo.yaml").read_text().replace(
        "lr: 5.0e-6", "lr: 5.0e-5"))
    assert "lr: 5.0e-5" in fit.read_text()
    cfg = config_from_dict({**MIN, "fit_config": str(fit), "arms": ["sft_raw", "sft_lr5e-5"]})
    with pytest.raises(DistillError, match=f"arm sft_lr5e-5 .* which {fit} \\+ fit_overrides sets"):
        fit_configs(cfg)
    # LoRA set for every arm in the shared file would make every arm a LoRA arm
    fit.write_text((ROOT / "pipelines/distill_demo.yaml").read_text() + "  lora: {r: 4}\n")
    cfg = config_from_dict({**MIN, "fit_config": str(fit), "arms": ["sft_raw", "lora_sft"]})
    with pytest.raises(DistillError, match="train.lora for every arm"):
        fit_configs(cfg)


def test_posthoc_arms_follow_their_source():
    cfg = config_from_dict({
        **MIN,
        "arms": ["raft_merge", "sft_merge", "fapm", "raft_ema", "sft_raw", "sft_fused"],
        "all_seeds_arms": ["sft_raw"],
        "seeds": [0, 1, 2],
        "merge": VAL,
    })
    assert cfg.arms == ["sft_raw", "sft_fused", "fapm", "sft_merge", "raft_ema", "raft_merge"]
    assert cfg.runs() == [
        ("sft_raw", 0), ("raft_ema", 0), ("sft_fused", 0), ("sft_raw", 1), ("sft_raw", 2),
    ]
    assert cfg.posthoc_runs() == [
        ("fapm", 0), ("fapm", 1), ("fapm", 2), ("sft_merge", 0), ("sft_merge", 1),
        ("sft_merge", 2), ("raft_merge", 0),
    ]
    assert cfg.every_seed_arms() == ["sft_raw", "fapm", "sft_merge"]
    assert [cfg.source(a) for a in ("fapm", "sft_merge", "raft_merge")] == [
        "sft_raw", "sft_raw", "raft_ema"
    ]
    assert cfg.merge.grid == [0.0, 0.3, 0.5, 0.7, 0.9, 1.0] and cfg.merge.mc_items == 50


def test_shipped_medmcqa_config(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    cfg = load_replicate_config("pipelines/replicate_medmcqa.yaml")
    assert cfg.arms == [
        "base", "sft_raw", "sft_lr5e-5", "sft_lr2e-4", "sft_fused", "fapm", "sft_merge",
        "on_policy", "raft_ema", "raft_ema_guard", "raft_merge", "lora_sft", "lora_raft",
    ]
    assert cfg.all_seeds_arms == ["sft_raw", "sft_fused", "on_policy", "raft_ema", "lora_sft"]
    assert cfg.arm_data == {} and cfg.output_dir == "runs/replicate_lr5e-4"
    assert cfg.merge.val_path == "data/medmcqa/val.jsonl"
    fits = fit_configs(cfg)
    assert len(fits) == 5 * 3 + 4
    assert {c.data.path for c in fits.values()} == {"runs/medmcqa"}
    assert fits[("sft_raw", 0)].train.lr == 5e-4 and fits[("lora_sft", 2)].train.lr == 5e-4
    order = cfg.runs()
    assert order[:2] == [("sft_raw", 0), ("raft_ema", 0)]
    assert {s for _, s in order[:9]} == {0} and {s for _, s in order[9:14]} == {1}
    assert len(cfg.posthoc_runs()) == 9
