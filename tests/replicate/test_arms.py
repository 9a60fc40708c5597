"""The arms whose data or kind differ: `sdft` (its own data set via arm_data), `fapm` (a
prune of another arm's final model), `raft_ema_plain` (teacher-format ablation); the
shipped configs that use them validate; a tiny end-to-end run with a data override and a
prune, resumable (a rerun does nothing; a retrained source is pruned again)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from raft_distill import prune as prune_module
from raft_distill import train
from raft_distill.errors import DistillError
from raft_distill.evaluate import run as eval_run
from raft_distill.replicate.config import ARM_ORDER, config_from_dict, load_replicate_config
from raft_distill.replicate.run import fit_configs, replicate
from schemas import RefinedRecord, row_id, write_records

ROOT = Path(__file__).resolve().parents[2]
MIN = {"fit_config": "pipelines/distill_demo.yaml", "eval_config": "pipelines/eval_demo.yaml"}
# the practitioners' baselines and the vLLM-rollout and trajectory-budget checks
# (test_config_baselines.py), not in replicate_full.yaml
NEWER_ARMS = ("sft_lr5e-5", "sft_lr2e-4", "sft_merge", "raft_ema_guard", "raft_merge",
              "lora_sft", "lora_raft", "raft_ema_vllm", "raft_ema_budget", "raft_ema_mask")


def _err(raw: dict[str, Any]) -> str:
    with pytest.raises(DistillError) as info:
        config_from_dict(raw, "rep.yaml")
    return str(info.value)


def test_new_arms_are_checked():
    assert "set arm_data.sdft" in _err({**MIN, "arms": ["sdft"]})
    assert "arm_data.base" in _err({**MIN, "arms": ["base"], "arm_data": {"base": "d"}})
    assert "not in arms" in _err({**MIN, "arms": ["sft_raw"], "arm_data": {"sdft": "d"}})
    assert "key 'arm_data.sdfx" in _err({**MIN, "arm_data": {"sdfx": "d"}})
    assert "add it to arms" in _err({**MIN, "arms": ["fapm"]})
    assert "key 'prune.source'" in _err({**MIN, "arms": ["fapm"], "prune": {"source": "base"}})
    assert "key 'prune.ratio'" in _err({**MIN, "prune": {"ratio": 1.5}})
    msg = _err({**MIN, "prune": {"ratoi": 0.5}})
    assert "unknown key 'prune.ratoi'" in msg and "ratio, targets" in msg
    assert "follows the seeds" in _err(
        {**MIN, "arms": ["sft_raw", "fapm"], "all_seeds_arms": ["fapm"]}
    )


def test_plan_switches_and_data(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    cfg = config_from_dict({
        **MIN,
        "arms": ["raft_ema_plain", "fapm", "sdft", "base", "sft_raw", "raft_ema"],
        "arm_data": {"sdft": "runs/sdft_demo"},
        "seeds": [3, 4],
    })
    assert cfg.arms == ["base", "sft_raw", "sdft", "fapm", "raft_ema", "raft_ema_plain"]
    assert cfg.runs() == [  # seed by seed, headline arms first
        ("sft_raw", 3), ("raft_ema", 3), ("sdft", 3), ("raft_ema_plain", 3), ("sft_raw", 4),
        ("raft_ema", 4),
    ]
    assert cfg.posthoc_runs() == [("fapm", 3), ("fapm", 4)]  # sft_raw's seeds
    assert cfg.every_seed_arms() == ["sft_raw", "fapm", "raft_ema"]
    fits = fit_configs(cfg)
    assert {k: c.data.path for k, c in fits.items()} == {
        k: ("runs/sdft_demo" if k[0] == "sdft" else "runs/demo") for k in fits
    }
    sdft = fits[("sdft", 3)]
    assert (sdft.loss.mode, sdft.loss.sft_target) == ("sft", "fused")
    chat, plain = fits[("raft_ema", 3)], fits[("raft_ema_plain", 3)]
    assert (chat.teacher.format, plain.teacher.format) == ("chat", "plain")
    assert chat.loss == plain.loss
    cfg = config_from_dict({
        **MIN, "arms": ["raft_ema_plain"], "fit_overrides": {"teacher.format": "plain"},
    })
    with pytest.raises(DistillError, match="already set teacher.format to 'plain' for every arm"):
        fit_configs(cfg)


def test_shipped_configs_validate(monkeypatch: pytest.MonkeyPatch):
    from raft_data.config import load_config

    monkeypatch.chdir(ROOT)
    sdft = load_config("pipelines/sdft_demo.yaml")
    assert not sdft.fusion.enabled and sdft.filter.tau == -1.0
    assert sdft.filter.check_answer and not sdft.filter.check_facts
    assert sdft.output.dir == "runs/sdft_demo" and sdft.input.answer_check_field == "check"
    full = load_replicate_config("pipelines/replicate_full.yaml")
    assert full.arms == [a for a in ARM_ORDER if a not in NEWER_ARMS]
    assert full.seeds == [0, 1, 2] and full.every_seed_arms() == ["sft_raw", "fapm", "raft_ema"]
    assert full.arm_data == {"sdft": sdft.output.dir}
    assert len(fit_configs(full)) == 3 + 1 + 1 + 1 + 3 + 1 + 1 + 1


def _no_call(*_: Any, **__: Any) -> Any:
    raise AssertionError("should have been skipped")


def test_tiny_data_override_and_prune_end_to_end(
    replicate_files: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    from raft_distill.replicate_cli import replicate_cmd

    tmp: Path = replicate_files["tmp"]
    out: Path = replicate_files["out"]
    sdft_data = tmp / "sdft"
    rows = [("What is 7 - 4?", "3", "Three: 7 - 4 = 3."), ("Name a noble gas.", "Neon", "Neon.")]
    records = [
        RefinedRecord(
            id=row_id("general", q, gold), question=q, gold_answer=gold, domain="general",
            source_file="sdft.jsonl", source_row=i, decision="accepted", reason="passed",
            final_answer=rewrite, final_source="rewrite", teacher_context_tokens=40,
            over_length=False,
        )
        for i, (q, gold, rewrite) in enumerate(rows)
    ]
    write_records(sdft_data / "data" / "train-00000.parquet", records, RefinedRecord)
    rep = {
        **replicate_files["raw"],
        "fit_overrides": {"train.max_steps": 2},
        "seeds": [0],
        "arms": ["base", "sft_raw", "sdft", "fapm"],
        "arm_data": {"sdft": str(sdft_data)},
        "prune": {"ratio": 0.5},
    }
    path = tmp / "arms.yaml"
    path.write_text(yaml.safe_dump(rep))
    result = CliRunner().invoke(replicate_cmd, [str(path)])
    assert result.exit_code == 0, result.output

    report = json.loads((out / "report.json").read_text())
    assert [r["arm"] for r in report["arms"]] == ["base", "sft_raw", "sdft", "fapm"]
    assert [r["model"] for r in report["runs"]] == ["base", "sft_raw-seed0", "sdft-seed0", "fapm-seed0"]
    fapm = report["runs"][3]
    assert fapm["pruned_from"] == "sft_raw-seed0" and fapm["prune"]["ratio"] == 0.5
    assert fapm["fit_seconds"] is not None and fapm["final_lambda"] is None
    assert report["runs"][2]["data"] == str(sdft_data) and report["arm_data"] == rep["arm_data"]
    assert f"path: {sdft_data}" in (out / "sdft" / "seed0" / "config.yaml").read_text()
    pruned = json.loads((out / "fapm" / "seed0" / "final" / prune_module.REPORT_FILE).read_text())
    assert pruned["finetuned"] == str(out / "sft_raw" / "seed0" / "final")
    assert (pruned["ratio"], pruned["targets"]) == (0.5, "linear")
    for name in ("sdft-seed0", "fapm-seed0"):
        assert (out / "eval" / name / "results.json").is_file()
    assert "| fapm | 0 |" in (out / "report.md").read_text()

    # rerun: nothing trained, pruned or evaluated again
    monkeypatch.setattr(train, "fit", _no_call)
    monkeypatch.setattr(prune_module, "prune", _no_call)
    monkeypatch.setattr(eval_run, "evaluate", _no_call)
    cfg = load_replicate_config(path)
    assert replicate(cfg, "rerun", log=lambda _: None)["arms"] == report["arms"]

    # the source retrained -> pruned again, and both evaluated again
    shutil.rmtree(out / "sft_raw" / "seed0" / "final")
    calls: dict[str, list[str]] = {"fit": [], "prune": [], "eval": []}

    def fit_once(fcfg: Any, resume: bool = False) -> Any:
        calls["fit"].append(Path(fcfg.train.output_dir).parent.name)
        return real_fit(fcfg, resume=resume).run()

    def prune_once(base: str, finetuned: str, output: Path, **kw: Any) -> Any:
        calls["prune"].append(Path(output).parent.parent.name)
        return real_prune(base, finetuned, output, **kw)

    def eval_once(ecfg: Any, log: Any = print, **kwargs: Any) -> Any:
        calls["eval"] += [m.name for m in ecfg.models]
        return real_eval(ecfg, log=log, **kwargs)

    real_fit, real_prune, real_eval = train.Trainer, _REAL_PRUNE, _REAL_EVALUATE
    monkeypatch.setattr(train, "fit", fit_once)
    monkeypatch.setattr(prune_module, "prune", prune_once)
    monkeypatch.setattr(eval_run, "evaluate", eval_once)
    replicate(cfg, "rerun", log=lambda _: None)
    assert calls == {"fit": ["sft_raw"], "prune": ["fapm"], "eval": ["sft_raw-seed0", "fapm-seed0"]}

    # the source retrained by a run that stopped before its prune (a newer summary.json):
    # pruned and evaluated again, nothing trained
    summary = out / "sft_raw" / "seed0" / "summary.json"
    stat = summary.stat()
    os.utime(summary, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    calls = {"fit": [], "prune": [], "eval": []}
    replicate(cfg, "rerun", log=lambda _: None)
    assert calls == {"fit": [], "prune": ["fapm"], "eval": ["fapm-seed0"]}


_REAL_PRUNE = prune_module.prune
_REAL_EVALUATE = eval_run.evaluate
