"""Orchestration on the tiny random Llama: base + 2 arms x 2 seeds, 1 step each, 2 eval
items per suite -> report.md/json/png with the right rows; a rerun trains nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from raft_distill import train
from raft_distill.evaluate import run as eval_run
from raft_distill.replicate.config import load_replicate_config
from raft_distill.replicate.run import replicate


def _no_call(*_: Any, **__: Any) -> Any:
    raise AssertionError("should have been skipped")


def test_replicate_tiny_end_to_end_and_resume(
    replicate_files: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    from raft_distill.replicate_cli import replicate_cmd

    out: Path = replicate_files["out"]
    result = CliRunner().invoke(replicate_cmd, [str(replicate_files["path"])])
    assert result.exit_code == 0, result.output
    assert "# RAFT replication report" in result.output

    report = json.loads((out / "report.json").read_text())
    assert [r["arm"] for r in report["arms"]] == ["base", "sft_raw", "raft_ema"]
    assert [(r["arm"], r["seed"]) for r in report["runs"]] == [
        ("base", None), ("sft_raw", 0), ("sft_raw", 1), ("raft_ema", 0), ("raft_ema", 1),
    ]
    assert report["seeds"] == [0, 1]
    assert report["command"] == f"raft-distill replicate {replicate_files['path']}"
    for row in report["arms"]:
        assert set(row["stats"]) == {"domain", "general", "ifeval"}
        assert row["seeds"] == ([0] if row["arm"] == "base" else [0, 1])
        for st in row["stats"].values():
            assert 0.0 <= st["min"] <= st["mean"] <= st["max"] <= 1.0
            assert st["n"] == len(row["seeds"])
    sft = next(r for r in report["arms"] if r["arm"] == "sft_raw")
    assert all(v in (0.0, None) for v in sft["relative_change_vs_sft"].values())
    for run in report["runs"][1:]:
        run_dir = out / run["arm"] / f"seed{run['seed']}"
        assert (run_dir / "final" / "model.safetensors").is_file()
        assert not (run_dir / "checkpoints").exists()  # keep_checkpoints: false
        assert run["steps"] == 1 and run["model_path"] == str(run_dir / "final")
        saved = json.loads((run_dir / "summary.json").read_text())
        assert saved["mode"] == ("sft" if run["arm"] == "sft_raw" else "raft")
    assert report["runs"][3]["final_lambda"] is not None  # raft: EMA lambda logged
    cfg1 = (out / "sft_raw" / "seed1" / "config.yaml").read_text()
    assert "sft_target: gold" in cfg1 and "seed: 1" in cfg1 and "max_steps: 1" in cfg1
    results = json.loads((out / "eval" / "raft_ema-seed1" / "results.json").read_text())
    assert results["suites"]["domain"]["items"] == 2
    assert results["suites"]["general"]["max_new_tokens"] == 3  # eval_overrides applied
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert [m["model"] for m in summary["models"]] == [
        "base", "sft_raw-seed0", "sft_raw-seed1", "raft_ema-seed0", "raft_ema-seed1",
    ]

    md = (out / "report.md").read_text()
    for line in ("| base | - |", "| sft_raw | 0,1 |", "| raft_ema | 0,1 |", "| raft_ema | 1 |"):
        assert line in md, line
    assert "IFEval prompt-level strict" in md and "(method - SFT) / (Base - SFT)" in md
    assert "## Scores (%) with 95% bootstrap intervals over items" in md
    assert "## Paired differences vs SFT (sft_raw), per item (points)" in md
    assert set(report["item_stats"]["intervals"]) == {"base", "sft_raw", "raft_ema"}
    assert set(report["item_stats"]["vs_sft"]["raft_ema"]) == {"domain", "general", "ifeval"}
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # rerun: nothing trains, nothing is evaluated again, same table
    monkeypatch.setattr(train, "fit", _no_call)
    monkeypatch.setattr(eval_run, "evaluate", _no_call)
    cfg = load_replicate_config(replicate_files["path"])
    again = replicate(cfg, "rerun", log=lambda _: None)
    assert again["arms"] == report["arms"]

    # a run without final/ (interrupted) is retrained, and only it is evaluated again
    shutil.rmtree(out / "raft_ema" / "seed1" / "final")
    calls: dict[str, list[str]] = {"fit": [], "eval": []}
    real_fit = train.Trainer

    def fit_once(fcfg: Any, resume: bool = False) -> Any:
        calls["fit"].append(fcfg.train.output_dir)
        return real_fit(fcfg, resume=resume).run()

    def eval_once(ecfg: Any, log: Any = print, **kwargs: Any) -> Any:
        calls["eval"] += [m.name for m in ecfg.models]
        return real_eval(ecfg, log=log, **kwargs)

    real_eval = _REAL_EVALUATE
    monkeypatch.setattr(train, "fit", fit_once)
    monkeypatch.setattr(eval_run, "evaluate", eval_once)
    replicate(cfg, "rerun", log=lambda _: None)
    assert calls == {"fit": [str(out / "raft_ema" / "seed1")], "eval": ["raft_ema-seed1"]}
    assert len((out / "raft_ema" / "seed1" / "metrics.jsonl").read_text().splitlines()) == 1
    final = json.loads((out / "report.json").read_text())
    assert [r["model"] for r in final["runs"]] == [r["model"] for r in report["runs"]]


_REAL_EVALUATE = eval_run.evaluate


def test_a_stopped_eval_keeps_the_models_it_finished(
    replicate_files: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    """An eval killed after some models (a session ending mid-run) must not evaluate those
    again: each model's cache entry is written when its results are, not at the end."""
    cfg = load_replicate_config(
        replicate_files["path"], ["seeds=[0]", "arms=[base,sft_raw]", "all_seeds_arms=[sft_raw]"]
    )
    out: Path = replicate_files["out"]
    real_model = eval_run._evaluate_model
    seen: list[str] = []

    def stop_at_second(ecfg: Any, entry: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(entry.name)
        if len(seen) == 2:
            raise KeyboardInterrupt("session ended")
        return real_model(ecfg, entry, *args, **kwargs)

    monkeypatch.setattr(eval_run, "_evaluate_model", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        replicate(cfg, "first", log=lambda _: None)
    assert seen == ["base", "sft_raw-seed0"]
    assert set(json.loads((out / "eval_cache.json").read_text())) == {"base"}

    seen.clear()
    monkeypatch.setattr(eval_run, "_evaluate_model", real_model)
    calls: list[str] = []

    def eval_once(ecfg: Any, log: Any = print, **kwargs: Any) -> Any:
        calls.extend(m.name for m in ecfg.models)
        return _REAL_EVALUATE(ecfg, log=log, **kwargs)

    monkeypatch.setattr(eval_run, "evaluate", eval_once)
    report = replicate(cfg, "again", log=lambda _: None)
    assert calls == ["sft_raw-seed0"]
    assert [r["model"] for r in report["runs"]] == ["base", "sft_raw-seed0"]
