"""The baseline arms end to end on the tiny Llama: an lr arm, the teacher-guard arm, a LoRA
arm and a merge arm; fits run seed by seed; a run at `seeds=[0]` reports, and the rerun at
[0, 1] adds only seed 1's fit and merge; a rerun does nothing; a changed merge grid redoes
only the merges (and their evaluation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from raft_distill import merge as merge_module
from raft_distill import train
from raft_distill.evaluate import run as eval_run
from raft_distill.replicate.config import load_replicate_config
from raft_distill.replicate.run import replicate

_REAL = {"fit": train.fit, "merge": merge_module.merge, "eval": eval_run.evaluate}


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Record what each stage runs (fit: arm/seed, merge: arm/seed, eval: model names)."""
    calls: dict[str, list[str]] = {"fit": [], "merge": [], "eval": []}

    def fit(fcfg: Any, resume: bool = False) -> Any:
        out = Path(fcfg.train.output_dir)
        calls["fit"].append(f"{out.parent.name}/{out.name}")
        return _REAL["fit"](fcfg, resume=resume)

    def merge(base: str, finetuned: str, output: Path, **kw: Any) -> Any:
        calls["merge"].append(f"{Path(output).parent.parent.name}/{Path(output).parent.name}")
        return _REAL["merge"](base, finetuned, output, **kw)

    def evaluate(ecfg: Any, log: Any = print, **kwargs: Any) -> Any:
        calls["eval"] += [m.name for m in ecfg.models]
        return _REAL["eval"](ecfg, log=log, **kwargs)

    monkeypatch.setattr(train, "fit", fit)
    monkeypatch.setattr(merge_module, "merge", merge)
    monkeypatch.setattr(eval_run, "evaluate", evaluate)
    return calls


def test_baseline_arms_end_to_end(replicate_files: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    tmp: Path = replicate_files["tmp"]
    out: Path = replicate_files["out"]
    val = tmp / "val.jsonl"
    val.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                           for q, a in (("What is 1 + 1?", "2."), ("Name a fruit.", "An apple."))))
    rep = {
        **replicate_files["raw"],
        "seeds": [0],
        "arms": ["base", "sft_raw", "sft_lr5e-5", "sft_merge", "raft_ema_guard", "lora_sft"],
        "all_seeds_arms": ["sft_raw"],
        "merge": {"grid": [0.0, 1.0], "val_path": str(val), "mc_items": 2, "dtype": "float32"},
        "lora": {"r": 4, "alpha": 8},
    }
    path = tmp / "baselines.yaml"
    path.write_text(yaml.safe_dump(rep))
    calls = _spy(monkeypatch)
    report = replicate(load_replicate_config(path), "first", log=lambda _: None)
    assert calls["fit"] == ["sft_raw/seed0", "sft_lr5e-5/seed0", "lora_sft/seed0",
                            "raft_ema_guard/seed0"]  # headline, then SFT, then rollout arms
    assert calls["merge"] == ["sft_merge/seed0"]
    assert [r["arm"] for r in report["arms"]] == rep["arms"]
    merged = next(r for r in report["runs"] if r["arm"] == "sft_merge")
    assert merged["merged_from"] == "sft_raw-seed0" and merged["merge_alpha"] in (0.0, 1.0)
    assert report["merge"]["grid"] == [0.0, 1.0] and report["lora"]["r"] == 4
    mreport = json.loads((out / "sft_merge/seed0/final/merge_report.json").read_text())
    assert mreport["source"] == str(out / "sft_raw/seed0/final")
    assert [r["alpha"] for r in mreport["grid"]] == [0.0, 1.0]
    assert mreport["validation"]["mc_items_by_task"]["mmlu"] == 2  # general_mc's default tasks
    fit_cfg = {a: yaml.safe_load((out / a / "seed0" / "config.yaml").read_text())
               for a in ("sft_raw", "sft_lr5e-5", "raft_ema_guard", "lora_sft")}
    assert fit_cfg["sft_lr5e-5"]["train"]["lr"] == 5e-5 and fit_cfg["sft_raw"]["train"]["lr"] == 1e-3
    assert "do not mention" in fit_cfg["raft_ema_guard"]["teacher"]["template"]
    assert fit_cfg["lora_sft"]["train"]["lora"]["r"] == 4 and fit_cfg["sft_raw"]["train"]["lora"] is None
    assert (out / "lora_sft/seed0/final/adapter").is_dir()

    # seed 1 added: only sft_raw trains (the only all-seeds arm), its merge follows
    calls = _spy(monkeypatch)
    cfg = load_replicate_config(path, ["seeds=[0,1]"])
    report = replicate(cfg, "second", log=lambda _: None)
    assert calls == {"fit": ["sft_raw/seed1"], "merge": ["sft_merge/seed1"],
                     "eval": ["sft_raw-seed1", "sft_merge-seed1"]}
    assert next(r for r in report["arms"] if r["arm"] == "sft_merge")["seeds"] == [0, 1]
    # alpha 0 is the base alone: seed 1's merge takes seed 0's score instead of rescoring it
    grids = [json.loads((out / f"sft_merge/seed{s}/final/merge_report.json").read_text())["grid"]
             for s in (0, 1)]
    assert grids[1][0] == {"reused_from": str(out / "sft_raw/seed0/final"), **grids[0][0]}
    assert "reused_from" not in grids[1][1] and grids[1][1] != grids[0][1]

    # a rerun does nothing; a new merge grid redoes the merges and their evaluation only
    calls = _spy(monkeypatch)
    replicate(cfg, "third", log=lambda _: None)
    assert calls == {"fit": [], "merge": [], "eval": []}
    cfg = load_replicate_config(path, ["seeds=[0,1]", "merge.grid=[0.0,0.5,1.0]"])
    replicate(cfg, "fourth", log=lambda _: None)
    assert calls == {"fit": [], "merge": ["sft_merge/seed0", "sft_merge/seed1"],
                     "eval": ["sft_merge-seed0", "sft_merge-seed1"]}
    grid = json.loads((out / "sft_merge/seed1/final/merge_report.json").read_text())["grid"]
    assert [r["alpha"] for r in grid] == [0.0, 0.5, 1.0] and "reused_from" in grid[0]
