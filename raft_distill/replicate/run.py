"""`raft-distill replicate`: every arm x seed through `fit`, one eval run, one report.

Order: build and validate every arm's fit config and the eval config first (a typo fails
before any training), then per (arm, seed) run `fit` into `<out>/<arm>/seed<k>` unless it
finished before (`final/` and `summary.json` there: resumable; a run stopped midway with a
checkpoint continues with `resume`), then evaluate the base model and every final model in
one `raft-distill eval` run (models already evaluated with the same suites and not
retrained are reused from `<out>/eval/`), then write `<out>/report.{md,json,png}`.
The fits run seed by seed (`ReplicateConfig.runs`), so a run cut short holds whole seeds.
Between the fits and the eval, each post-hoc arm (`fapm`, `sft_merge`, `raft_merge`:
posthoc.py) transforms its source arm's final model per seed into `<out>/<arm>/seed<k>/final`
(redone when the source was retrained or the settings changed).
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raft_distill.config import FitConfig, TrainConfig
from raft_distill.config import config_from_dict as fit_config_from_dict
from raft_distill.errors import DistillError
from raft_distill.evaluate.config import SUITES, EvalConfig, ModelEntry
from raft_distill.evaluate.config import config_from_dict as eval_config_from_dict
from raft_distill.replicate.carry import import_prior
from raft_distill.replicate.config import (
    ARMS,
    LORA_ARMS,
    POSTHOC_ARMS,
    RAFT_EMA_ABLATIONS,
    ReplicateConfig,
    lr_clash,
    set_dotted,
)
from raft_distill.replicate.posthoc import run_posthoc
from raft_distill.replicate.report import markdown, plot
from raft_distill.replicate.table import arm_table, item_table, item_vectors, result_scores
from schemas.config_files import read_config_mapping

Log = Callable[[str], None]


def model_name(arm: str, seed: int | None) -> str:
    """The eval label (and folder) of an arm's model: `base`, `raft_ema-seed0`, ..."""
    return arm if seed is None else f"{arm}-seed{seed}"


def _shared_fit(cfg: ReplicateConfig) -> dict[str, Any]:
    """The shared fit config file with fit_overrides applied (raw YAML data)."""
    shared = read_config_mapping(cfg.fit_config, DistillError)
    for key, value in cfg.fit_overrides.items():
        set_dotted(shared, key, value, f"fit_overrides '{key}'")
    return shared


def _fit_default(section: str, field: str) -> Any:
    """The fit config's default for `section.field` (what raft_ema runs with)."""
    model = FitConfig.model_fields[section].annotation
    return model.model_fields[field].get_default(call_default_factory=True)  # type: ignore[union-attr]


def _check_shared(cfg: ReplicateConfig, shared: dict[str, Any]) -> None:
    """Refuse a shared fit config that already makes an arm's switch for every arm."""
    where = f"{cfg.fit_config} + fit_overrides"
    train = shared.get("train") or {}
    for arm in (a for a in cfg.arms if a in RAFT_EMA_ABLATIONS):
        key, value = RAFT_EMA_ABLATIONS[arm]
        section, _, field = key.partition(".")
        default = _fit_default(section, field)
        shared_value = (shared.get(section) or {}).get(field, default)
        if shared_value != default:
            raise DistillError(
                f"arm {arm} is raft_ema with {key}: {value!r} (an ablation), but {where} "
                f"already set {key} to {shared_value!r} for every arm, so raft_ema would not "
                f"run with the default its ablation is read against: set it back to "
                f"{default!r} there or drop {arm}"
            )
    if train.get("lora") is not None and any(a in LORA_ARMS for a in cfg.arms):
        raise DistillError(
            f"{where} sets train.lora for every arm, so the full fine-tuning arms would be "
            "LoRA too: remove it there and set the lora arms' settings in `lora`"
        )
    clash = lr_clash(cfg.arms, train.get("lr", TrainConfig().lr), where)
    if clash:
        raise DistillError(clash)
    if any(a in LORA_ARMS for a in cfg.arms) and importlib.util.find_spec("peft") is None:
        raise DistillError(
            "the lora arms need the peft library: `pip install -e '.[lora]'`, or drop them"
        )


def fit_configs(cfg: ReplicateConfig) -> dict[tuple[str, int], FitConfig]:
    """The validated fit config of every (arm, seed), in training order: shared file +
    overrides + the arm's switches (+ train.lora for the LoRA arms)."""
    shared = _shared_fit(cfg)
    _check_shared(cfg, shared)
    out: dict[tuple[str, int], FitConfig] = {}
    for arm, seed in cfg.runs():
        raw = copy.deepcopy(shared)
        for key, value in (ARMS[arm] or {}).items():
            set_dotted(raw, key, value, f"arm {arm}")
        if arm in LORA_ARMS:
            set_dotted(raw, "train.lora", cfg.lora.model_dump(mode="json"), f"arm {arm}")
        if arm in cfg.arm_data:
            set_dotted(raw, "data.path", cfg.arm_data[arm], f"arm_data.{arm}")
        set_dotted(raw, "train.seed", seed, "replicate")
        set_dotted(raw, "train.output_dir", str(cfg.run_dir(arm, seed)), "replicate")
        out[(arm, seed)] = fit_config_from_dict(
            raw, f"{cfg.fit_config} + fit_overrides (arm {arm}, seed {seed})"
        )
    return out


def base_model(cfg: ReplicateConfig) -> str:
    """The untrained student: `model.student` of the shared fit config (after overrides)."""
    shared = _shared_fit(cfg)
    shared.setdefault("data", {"path": "unused"})
    return fit_config_from_dict(shared, f"{cfg.fit_config} + fit_overrides").model.student


def eval_config(cfg: ReplicateConfig, models: list[ModelEntry]) -> EvalConfig:
    """The eval file + overrides, with `models` and `output_dir` set by replicate."""
    raw = read_config_mapping(cfg.eval_config, DistillError)
    if "suites" not in raw:
        raw["suites"] = {name: {} for name in SUITES}
    elif isinstance(raw["suites"], dict):
        raw["suites"] = {k: ({} if v is None else v) for k, v in raw["suites"].items()}
    for key, value in cfg.eval_overrides.items():
        set_dotted(raw, key, value, f"eval_overrides '{key}'")
    raw["models"] = [m.model_dump() for m in models]
    raw["output_dir"] = str(Path(cfg.output_dir) / "eval")
    return eval_config_from_dict(raw, f"{cfg.eval_config} + eval_overrides")


def is_finished(run_dir: Path) -> bool:
    """A fit run is done when its final model and summary exist (summary is written last)."""
    return (run_dir / "final").is_dir() and (run_dir / "summary.json").is_file()


def _fingerprint(ecfg: EvalConfig, entry: ModelEntry) -> str:
    keys = ("engine", "dtype", "max_new_tokens", "max_model_len", "suites")
    data = {k: v for k, v in ecfg.model_dump(mode="json").items() if k in keys}
    data["path"] = entry.path
    return json.dumps(data, sort_keys=True)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def run_fits(
    cfg: ReplicateConfig, configs: dict[tuple[str, int], FitConfig], log: Log
) -> set[str]:
    """Train every unfinished (arm, seed); returns the eval names of the models (re)trained."""
    from raft_distill import train

    trained: set[str] = set()
    for i, ((arm, seed), fcfg) in enumerate(configs.items(), 1):
        run_dir = cfg.run_dir(arm, seed)
        tag = f"[{i}/{len(configs)} {arm} seed {seed}]"
        if is_finished(run_dir):
            log(f"{tag} finished before, skipped ({run_dir}/final)")
            continue
        resume = train.latest_checkpoint(run_dir) is not None
        if not resume:  # a fresh fit appends to metrics.jsonl: drop a stopped run's leftovers
            for stale in ("metrics.jsonl", "summary.json", "replicate_fit.json"):
                (run_dir / stale).unlink(missing_ok=True)
        log(f"{tag} fit -> {run_dir}" + (" (resuming)" if resume else ""))
        start = time.perf_counter()
        result = train.fit(fcfg, resume=resume)
        seconds = time.perf_counter() - start
        _write_json(
            run_dir / "replicate_fit.json",
            {"seconds": round(seconds, 1), "resumed": resume, "steps": result.steps},
        )
        if not cfg.keep_checkpoints:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        trained.add(model_name(arm, seed))
        del result
        gc.collect()
        log(f"{tag} done in {seconds:.0f} s")
    return trained


def run_eval(
    cfg: ReplicateConfig, models: list[ModelEntry], retrained: set[str], log: Log
) -> list[dict[str, Any]]:
    """Evaluate the models lacking reusable results in one eval run; all results in order."""
    from raft_distill.evaluate.report import write_summary
    from raft_distill.evaluate.run import evaluate

    ecfg = eval_config(cfg, models)
    eval_dir = Path(ecfg.output_dir)
    cache_path = Path(cfg.output_dir) / "eval_cache.json"
    cache: dict[str, str] = _read_json(cache_path) or {}
    todo = [
        m
        for m in models
        if m.name in retrained
        or cache.get(m.name) != _fingerprint(ecfg, m)
        or not (eval_dir / m.name / "results.json").is_file()
    ]
    reused = [m.name for m in models if m not in todo]
    if reused:
        log(f"eval: reusing {', '.join(reused)} from {eval_dir}")
    if todo:
        log(f"eval: {len(todo)} model(s) -> {eval_dir}")
        for m in todo:
            cache.pop(m.name, None)
        _write_json(cache_path, cache)
        by_name = {m.name: m for m in todo}

        def done(result: dict[str, Any]) -> None:  # one model at a time: a stopped run resumes
            cache[result["model"]] = _fingerprint(ecfg, by_name[result["model"]])
            _write_json(cache_path, cache)

        evaluate(ecfg.model_copy(update={"models": todo}), log=log, on_result=done)
    results = [json.loads((eval_dir / m.name / "results.json").read_text()) for m in models]
    write_summary(eval_dir, results)
    return results


def _import_prior(
    cfg: ReplicateConfig, ecfg: EvalConfig,
    entries: list[tuple[str, int | None, ModelEntry]], log: Log,
) -> set[str]:
    """Models carried from `prior_runs` (carry.py): their eval results and fit records are
    copied in and their eval cache entries set; returns the names that need no fit, i.e.
    the imported ones but a source a post-hoc arm still has to transform."""
    if cfg.prior_runs is None:
        return set()
    prior, out = Path(cfg.prior_runs), Path(cfg.output_dir)
    prior_cache = _read_json(prior / "eval_cache.json")
    if prior_cache is None:
        raise DistillError(
            f"prior_runs {prior}: no eval_cache.json there; point it at a folder written by "
            "`raft-distill replicate CONFIG --export DIR`"
        )
    wanted = {
        e.name: (_fingerprint(ecfg, e), None if seed is None else cfg.run_dir(arm, seed).relative_to(out))
        for arm, seed, e in entries
    }
    imported = import_prior(prior, out, wanted, prior_cache, log)
    cache = _read_json(out / "eval_cache.json") or {}
    _write_json(out / "eval_cache.json", {**cache, **imported})
    needed = {
        model_name(cfg.source(a), s) for a, s in cfg.posthoc_runs() if model_name(a, s) not in imported
    }
    return set(imported) - needed


def _scores(result: dict[str, Any], ifeval_metric: str) -> dict[str, float]:
    return result_scores(result, ifeval_metric)


def _last_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def _report_notes(
    scores: dict[str, Any], rows: list[dict[str, Any]], metric: str = "general"
) -> list[str]:
    """What the table cannot say on its own: missing reference arms, no forgetting to recover."""
    notes = []
    if "sft_raw" not in scores:
        notes.append("sft_raw is not among the arms: relative changes are n/a.")
    if "base" not in scores or "sft_raw" not in scores:
        notes.append(f"base and sft_raw are both needed for the {metric} loss recovered.")
    else:
        b = rows[list(scores).index("base")]["stats"].get(metric)
        s = rows[list(scores).index("sft_raw")]["stats"].get(metric)
        if b and s and b["mean"] == s["mean"]:
            notes.append(f"Base == SFT on {metric}: no loss to recover (n/a).")
        elif b and s and b["mean"] < s["mean"]:
            notes.append(
                f"SFT scored above Base on {metric} here (no forgetting to recover): "
                "the recovered fraction's sign is not meaningful."
            )
    return notes


def _run_record(
    cfg: ReplicateConfig, arm: str, seed: int | None, entry: ModelEntry,
    result: dict[str, Any], scores: dict[str, float],
) -> dict[str, Any]:
    """report.json's entry of one evaluated model: scores, where it came from, fit figures."""
    run: dict[str, Any] = {
        "arm": arm,
        "seed": seed,
        "model": entry.name,
        "model_path": entry.path,
        "scores": scores,
        "eval_seconds": round(sum(s["seconds"] for s in result["suites"].values()), 1),
    }
    if seed is None:
        return run
    run_dir = cfg.run_dir(arm, seed)
    last = _last_metrics(run_dir)
    fit_info = _read_json(run_dir / "replicate_fit.json") or {}
    if arm in POSTHOC_ARMS and POSTHOC_ARMS[arm][0] == "prune":
        run.update(pruned_from=fit_info.get("pruned_from"), prune=cfg.prune.model_dump())
    elif arm in POSTHOC_ARMS:
        run.update(merged_from=fit_info.get("merged_from"), merge_alpha=fit_info.get("alpha"))
    if arm in cfg.arm_data:
        run.update(data=cfg.arm_data[arm])
    run.update(
        final_lambda=last.get("lambda"),
        final_ce_kl_ratio=last.get("ce_kl_ratio"),
        final_loss_sft=last.get("loss_sft"),
        final_loss_kl=last.get("loss_kl"),
        fit_seconds=fit_info.get("seconds"),
        steps=last.get("step"),
    )
    return run


def build_report(
    cfg: ReplicateConfig,
    entries: list[tuple[str, int | None, ModelEntry]],
    results: list[dict[str, Any]],
    command: str,
    eval_cfg: EvalConfig,
) -> dict[str, Any]:
    """report.json's content: per-run scores + the per-arm table (fractions)."""
    runs = []
    scores: dict[str, dict[int, dict[str, float]]] = {}
    items: dict[str, dict[int, dict[str, dict[str, Any]]]] = {}
    for (arm, seed, entry), result in zip(entries, results, strict=True):
        sc = _scores(result, cfg.ifeval_metric)
        scores.setdefault(arm, {})[seed if seed is not None else 0] = sc
        items.setdefault(arm, {})[seed or 0] = item_vectors(result, cfg.ifeval_metric)
        runs.append(_run_record(cfg, arm, seed, entry, result, sc))
    rows = arm_table(scores, recovered_metric=cfg.recovered_metric)
    notes = _report_notes(scores, rows, cfg.recovered_metric)
    return {
        "command": command,
        "cwd": str(Path.cwd()),
        "seeds": cfg.seeds,
        "arms_requested": list(cfg.arms),
        "all_seeds_arms": cfg.every_seed_arms(),
        "arm_data": cfg.arm_data,
        "prune": cfg.prune.model_dump() if "fapm" in cfg.arms else None,
        "merge": cfg.merge.model_dump() if {"sft_merge", "raft_merge"} & set(cfg.arms) else None,
        "lora": cfg.lora.model_dump() if set(LORA_ARMS) & set(cfg.arms) else None,
        "fit_config": cfg.fit_config,
        "fit_overrides": cfg.fit_overrides,
        "eval_config": cfg.eval_config,
        "eval_overrides": cfg.eval_overrides,
        "eval_resolved": eval_cfg.model_dump(mode="json", exclude={"models"}),
        "ifeval_metric": cfg.ifeval_metric,
        "recovered_metric": cfg.recovered_metric,
        "columns": {
            "domain": "domain suite accuracy",
            "domain_mc": "domain log-likelihood multiple-choice accuracy",
            "general": "general QA suite accuracy",
            "ifeval": f"IFEval {cfg.ifeval_metric}",
        },
        "definitions": {
            "relative_change_vs_sft": "(method - SFT) / SFT on seed means, SFT = sft_raw",
            f"{cfg.recovered_metric}_loss_recovered": "(method - SFT) / (Base - SFT) on "
            f"{cfg.recovered_metric} seed means",
            "std": "sample standard deviation over seeds (n - 1); null for one seed",
        },
        "arms": rows,
        "item_stats": item_table(items),
        "runs": runs,
        "notes": notes,
        "plot": "report.png",
    }


def replicate(cfg: ReplicateConfig, command: str, log: Log = print) -> dict[str, Any]:
    """Run the whole replication for a validated config; returns report.json's content."""
    configs = fit_configs(cfg)
    entries: list[tuple[str, int | None, ModelEntry]] = []
    for arm in cfg.arms:
        if arm == "base":
            entries.append(("base", None, ModelEntry(name="base", path=base_model(cfg))))
            continue
        for seed in cfg.arm_seeds(arm):
            path = str(cfg.run_dir(arm, seed) / "final")
            entries.append((arm, seed, ModelEntry(name=model_name(arm, seed), path=path)))
    models = [e for _, _, e in entries]
    ecfg = eval_config(cfg, models)  # validate before any training
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(
        out / "replicate_config.json", {"command": command, **cfg.model_dump(mode="json")}
    )

    skip = _import_prior(cfg, ecfg, entries, log)
    retrained = run_fits(cfg, {k: v for k, v in configs.items() if model_name(*k) not in skip}, log)
    retrained |= run_posthoc(cfg, configs, ecfg, retrained, log, skip=frozenset(skip))
    results = run_eval(cfg, models, retrained, log)
    report = build_report(cfg, entries, results, command, ecfg)
    plot(report, out / "report.png")
    _write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown(report))
    log(f"report: {out}/report.md, report.json, report.png")
    return report
