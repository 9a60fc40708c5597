"""A replication carried to a fresh machine (replicate/carry.py): export without weights,
delete the run, rerun with `prior_runs`: nothing is trained or evaluated again and the
report is the same; a model whose eval settings changed is redone; a post-hoc arm still to
be made gets its source retrained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from raft_distill import train
from raft_distill.errors import DistillError
from raft_distill.evaluate import run as eval_run
from raft_distill.replicate.config import load_replicate_config
from raft_distill.replicate.run import replicate
from raft_distill.replicate_cli import replicate_cmd


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    calls: dict[str, list[str]] = {"fit": [], "eval": []}
    real_fit, real_eval = train.fit, eval_run.evaluate

    def fit(fcfg: Any, resume: bool = False) -> Any:
        out = Path(fcfg.train.output_dir)
        calls["fit"].append(f"{out.parent.name}/{out.name}")
        return real_fit(fcfg, resume=resume)

    def evaluate(ecfg: Any, log: Any = print, **kwargs: Any) -> Any:
        calls["eval"] += [m.name for m in ecfg.models]
        return real_eval(ecfg, log=log, **kwargs)

    monkeypatch.setattr(train, "fit", fit)
    monkeypatch.setattr(eval_run, "evaluate", evaluate)
    return calls


def _scores(report: dict[str, Any]) -> dict[str, Any]:
    return {r["model"]: r["scores"] for r in report["runs"]}


def test_export_then_prior_runs_redoes_nothing(
    replicate_files: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp, out = replicate_files["tmp"], replicate_files["out"]
    rep = {**replicate_files["raw"], "seeds": [0], "arms": ["base", "sft_raw", "fapm"]}
    path = tmp / "carry.yaml"
    path.write_text(yaml.safe_dump(rep))
    first = replicate(load_replicate_config(path), "first", log=lambda _: None)
    exported = tmp / "carried"
    result = CliRunner().invoke(
        replicate_cmd, [str(path), "--export", str(exported), "--export-only"]
    )
    assert result.exit_code == 0, result.output
    assert (exported / "eval_cache.json").is_file()
    assert (exported / "eval" / "sft_raw-seed0" / "results.json").is_file()
    assert (exported / "sft_raw" / "seed0" / "summary.json").is_file()
    assert not list(exported.rglob("*.safetensors")) and not list(exported.rglob("final"))

    shutil.rmtree(out)  # a fresh machine: no weights, no results
    calls = _spy(monkeypatch)
    cfg = load_replicate_config(path, [f"prior_runs={exported}"])
    second = replicate(cfg, "second", log=lambda _: None)
    assert calls == {"fit": [], "eval": []}
    assert _scores(second) == _scores(first)
    sft = next(r for r in second["runs"] if r["model"] == "sft_raw-seed0")
    assert sft["steps"] == 1 and sft["fit_seconds"] is not None  # the fit records came along

    # a changed eval setting changes the fingerprint: those results are not carried
    shutil.rmtree(out)
    changed = load_replicate_config(
        path, [f"prior_runs={exported}", "eval_overrides={suites.general.max_new_tokens: 2}"]
    )
    replicate(changed, "changed", log=lambda _: None)
    assert calls["fit"] == ["sft_raw/seed0"]  # fapm needs its source's weights again
    assert set(calls["eval"]) == {"base", "sft_raw-seed0", "fapm-seed0"}


def test_prior_runs_without_an_export_is_a_clear_error(
    replicate_files: dict[str, Any], tmp_path: Path
) -> None:
    path = replicate_files["path"]
    with pytest.raises(DistillError, match="no eval_cache.json there"):
        replicate(load_replicate_config(path, [f"prior_runs={tmp_path / 'nothing'}"]), "x",
                  log=lambda _: None)


def test_export_keeps_the_destinations_other_models(tmp_path: Path) -> None:
    """A narrower run exported into a carried folder (seed 0 only, say) must not drop the
    fingerprints of the models it did not plan (seed 1): a later run would retrain them."""
    from raft_distill.replicate.carry import export_run

    out, dest = tmp_path / "run", tmp_path / "carried"
    for folder, cache in ((out, {"a": "new", "b": "b1"}), (dest, {"a": "old", "c": "c1"})):
        (folder / "eval").mkdir(parents=True)
        (folder / "eval_cache.json").write_text(json.dumps(cache))
    export_run(out, dest)
    assert json.loads((dest / "eval_cache.json").read_text()) == {
        "a": "new", "b": "b1", "c": "c1"
    }
