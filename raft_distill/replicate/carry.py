"""A replication carried across machines: an earlier run's results without its weights.

A full replication (13 arms, 3 seeds) takes longer than one working session on 2 CPU
cores, and a fresh machine has none of the earlier fits. What a report needs from a
finished model is small: its eval results and responses (`<out>/eval/<model>/`), its eval
fingerprint (`eval_cache.json`) and its fit's records (`summary.json`, `metrics.jsonl`,
`replicate_fit.json`). `export_run` copies exactly that (no `final/`, no checkpoints); a
later run with `prior_runs` set to that folder imports every model whose recorded eval
fingerprint equals the one it would compute now (same suites, settings and model path):
it is neither trained nor evaluated again, and the report reads it beside the new ones.
A changed suite or setting changes the fingerprint, so stale results are never mixed in.
A post-hoc arm still to be made needs its source's weights: that source is retrained.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

Log = Callable[[str], None]
WEIGHT_DIRS = ("final", "checkpoints", "tensorboard")  # what an export leaves behind
RUN_FILES = ("summary.json", "metrics.jsonl", "replicate_fit.json", "config.yaml")
CACHE = "eval_cache.json"


def export_run(out: Path, dest: Path) -> list[str]:
    """Copy a replicate output folder to `dest` without weights; returns what was copied.
    The eval cache is merged, not replaced: a narrower run (one seed) exported into a folder
    that carries more keeps the other models importable."""
    kept = _read_cache(dest / CACHE)
    copied = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if any(part in WEIGHT_DIRS for part in rel.parts) or not path.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(str(rel))
    if kept and (out / CACHE).is_file():
        (dest / CACHE).write_text(json.dumps({**kept, **_read_cache(out / CACHE)}, indent=2) + "\n")
    return copied


def _read_cache(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def importable(
    prior: Path, prior_cache: dict[str, str], name: str, fingerprint: str
) -> bool:
    """Whether `prior` holds model `name`'s results for the eval this run would do."""
    return prior_cache.get(name) == fingerprint and (prior / "eval" / name / "results.json").is_file()


def import_model(prior: Path, out: Path, name: str, run_rel: Path | None) -> None:
    """Copy one model's eval folder and (for a trained arm) its fit records into `out`."""
    shutil.copytree(prior / "eval" / name, out / "eval" / name, dirs_exist_ok=True)
    if run_rel is None:
        return
    for file in RUN_FILES:
        src = prior / run_rel / file
        if src.is_file():
            (out / run_rel).mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / run_rel / file)


def import_prior(
    prior: Path,
    out: Path,
    wanted: dict[str, tuple[str, Path | None]],
    prior_cache: dict[str, Any],
    log: Log,
) -> dict[str, str]:
    """Import every wanted model (name -> (fingerprint, run folder relative to out, or None
    for base)) that `prior` holds with the same fingerprint; returns name -> fingerprint of
    those imported, for this run's eval cache."""
    imported: dict[str, str] = {}
    for name, (fingerprint, run_rel) in wanted.items():
        if importable(prior, prior_cache, name, fingerprint):
            import_model(prior, out, name, run_rel)
            imported[name] = fingerprint
    skipped = sorted(set(wanted) - set(imported))
    log(f"prior_runs {prior}: imported {', '.join(sorted(imported)) or 'nothing'}"
        + (f"; not there or changed: {', '.join(skipped)}" if skipped else ""))
    return imported
