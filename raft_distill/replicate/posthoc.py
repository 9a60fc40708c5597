"""Post-hoc arms of `raft-distill replicate`: another arm's final model transformed, no training.

`fapm` prunes its source's task vector (`raft_distill.prune`); `sft_merge` / `raft_merge`
merge sft_raw / raft_ema back with the base at an alpha chosen on validation data
(`raft_distill.merge`). Each runs per seed of its source, after the fits, into
`<out>/<arm>/seed<k>/final`, and is redone when the source was retrained (in this run, or
in an earlier one that stopped before this step: the source's summary.json is newer than
the one recorded) or when the settings differ from those in the report the transform wrote
beside the model (prune_report.json / merge_report.json).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raft_distill.config import FitConfig
from raft_distill.evaluate.config import EvalConfig
from raft_distill.merge import Validation
from raft_distill.replicate.config import POSTHOC_ARMS, ReplicateConfig

Log = Callable[[str], None]


def merge_validation(cfg: ReplicateConfig, eval_cfg: EvalConfig) -> Validation:
    """The merge arms' validation: `merge` settings, avoiding the report's general_mc items."""
    from raft_distill.merge import report_selection

    m = cfg.merge
    assert m.val_path is not None  # the config validator requires it for a merge arm
    return Validation(
        domain=m.val_path, mc_items=m.mc_items, mc_seed=m.mc_seed, dtype=m.dtype,
        token_budget=m.token_budget, **report_selection(eval_cfg),
    )


def expected(
    cfg: ReplicateConfig, arm: str, source_dir: Path, validation: Validation | None
) -> tuple[str, dict[str, Any]]:
    """(report file name, the fields it must hold for the model to be reused)."""
    from raft_distill import merge, prune

    fields: dict[str, Any]
    if POSTHOC_ARMS[arm][0] == "prune":
        fields = {"ratio": cfg.prune.ratio, "targets": cfg.prune.targets,
                  "finetuned": str(source_dir)}
        return prune.REPORT_FILE, fields
    assert validation is not None
    fields = {"source": str(source_dir),
              "settings": merge.merge_settings(cfg.merge.grid, validation)}
    return merge.REPORT_FILE, fields


def transform(
    cfg: ReplicateConfig, arm: str, base: str, source_dir: Path, out: Path,
    validation: Validation | None, log: Log, known: dict[float, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Prune or merge `source_dir` into `out`; what replicate_fit.json records of it."""
    from raft_distill import merge, prune

    if POSTHOC_ARMS[arm][0] == "prune":
        log(f"[{arm}] FAPM ratio {cfg.prune.ratio} on {source_dir} -> {out}")
        report = prune.prune(base, str(source_dir), out, ratio=cfg.prune.ratio,
                             targets=cfg.prune.targets, overwrite=True)
        return {"kept_fraction": report["kept_fraction"]}
    log(f"[{arm}] WiSE-FT on {source_dir}, alpha over {cfg.merge.grid} -> {out}")
    report = merge.merge(base, str(source_dir), out, grid=cfg.merge.grid,
                         validation=validation, overwrite=True, log=log, known=known)
    return {"alpha": report["alpha"]}


def base_row(report: dict[str, Any], source_dir: Path) -> dict[float, dict[str, Any]]:
    """{0.0: the alpha-0 grid row} of a merge report (the base's scores: the same for every
    merge from that base with the same validation), marked with the model it was scored
    for; {} when the grid has no 0."""
    row = next((r for r in report.get("grid") or [] if r["alpha"] == 0.0), None)
    if row is None:
        return {}
    return {0.0: {"reused_from": str(source_dir), **row}}


def run_posthoc(
    cfg: ReplicateConfig,
    configs: dict[tuple[str, int], FitConfig],
    eval_cfg: EvalConfig,
    retrained: set[str],
    log: Log,
    skip: frozenset[str] = frozenset(),
) -> set[str]:
    """Every post-hoc (arm, seed) not done before with the same settings and an unchanged
    source, but those in `skip`; returns the eval names of the models (re)made."""
    from raft_distill.replicate.run import _read_json, _write_json, model_name

    validation = None
    if any(POSTHOC_ARMS[a][0] == "merge" for a, _ in cfg.posthoc_runs()):
        validation = merge_validation(cfg, eval_cfg)
    made: set[str] = set()
    known: dict[str, dict[float, dict[str, Any]]] = {}  # base -> its alpha-0 row, once scored
    for arm, seed in cfg.posthoc_runs():
        if model_name(arm, seed) in skip:  # imported from prior_runs (carry.py)
            continue
        source = cfg.source(arm)
        source_dir = cfg.run_dir(source, seed) / "final"
        out = cfg.run_dir(arm, seed)
        report_file, fields = expected(cfg, arm, source_dir, validation)
        # the source's summary.json is rewritten by every fit that finishes: its mtime tells
        # a retrained source even when the retraining happened in a run that stopped after
        stamp = (cfg.run_dir(source, seed) / "summary.json").stat().st_mtime_ns
        done = _read_json(out / "final" / report_file) or {}
        info = _read_json(out / "replicate_fit.json") or {}
        same = {k: done.get(k) for k in fields} == fields
        base = configs[(source, seed)].model.student
        if same and POSTHOC_ARMS[arm][0] == "merge" and done.get("base") == base:
            known[base] = known.get(base) or base_row(done, source_dir)
        if model_name(source, seed) not in retrained and same and info.get("source_stamp") == stamp:
            log(f"[{arm} seed {seed}] made before, skipped ({out}/final)")
            continue
        (out / "replicate_fit.json").unlink(missing_ok=True)
        start = time.perf_counter()
        record = transform(cfg, arm, base, source_dir, out / "final", validation, log,
                           known.get(base))
        if POSTHOC_ARMS[arm][0] == "merge" and not known.get(base):
            known[base] = base_row(_read_json(out / "final" / report_file), source_dir)
        seconds = time.perf_counter() - start
        key = "pruned_from" if POSTHOC_ARMS[arm][0] == "prune" else "merged_from"
        _write_json(out / "replicate_fit.json", {
            "seconds": round(seconds, 1), key: model_name(source, seed),
            "source_stamp": stamp, **record,
        })
        made.add(model_name(arm, seed))
        gc.collect()
        log(f"[{arm} seed {seed}] done in {seconds:.0f} s ({json.dumps(record)})")
    return made
