"""The `raft-data build` recipe: load -> (rewrite -> filter -> fuse -> measure) per shard -> write.

Work is done in shards; a finished shard is a Parquet file stamped with the config hash
and input fingerprint, so a rerun skips it, and every model call is cached by content,
so a killed shard redoes no finished batch. A resumed build ends with the same files as
an uninterrupted one.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import os
import re
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from raft_data import refine
from raft_data.backends import cuda_available, vllm_available
from raft_data.cache import CallCache
from raft_data.card import plot_histograms, write_card
from raft_data.config import PipelineConfig
from raft_data.engines import llm_roles, resolve_roles
from raft_data.errors import RaftDataError
from raft_data.load import LoadedInput, scan_input
from raft_data.log import by_reason, run_log
from raft_data.refine import STAGES
from raft_data.stages import refine_shards
from schemas.errors import SchemaError
from schemas.manifest import (
    CompatibilityGap,
    Counts,
    EngineInfo,
    Manifest,
    ModelInfo,
    StageTiming,
    write_manifest,
)
from schemas.model_registry import resolve_model
from schemas.parquet_io import atomic_write_bytes, check_file_schema, read_records, write_records
from schemas.records import RefinedRecord, RejectedRecord

STATE_DIR = ".raft"  # local state and logs: `raft-data push` never uploads it
REJECTED_FILE = "rejected/rejected.parquet"

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    folder: Path
    manifest: Manifest | None  # None when stopped early by max_shards
    shards_done: int
    shards_skipped: int


def tool_version() -> str:
    try:
        return importlib.metadata.version("raft-toolkit")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def shard_name(index: int, total: int) -> str:
    return f"data/train-{index:05d}-of-{total:05d}.parquet"


def _shard_done(path: Path, stamp: dict[str, str]) -> dict[str, str] | None:
    """The shard's metadata if it was finished by this same config on this same input and
    decision logic; else None, and the log says why the shard is (re)done."""
    if not path.exists():
        log.debug("%s: not built yet", path.name)
        return None
    try:
        extra = check_file_schema(path, RefinedRecord)
    except SchemaError as err:
        log.info("%s redone: not a finished shard (%s)", path.name, err)
        return None
    changed = [f"{k} {extra.get(k)} -> {v}" for k, v in stamp.items() if extra.get(k) != v]
    if changed:
        log.info("%s redone: made with another %s", path.name, "; ".join(changed))
        return None
    log.debug("%s reused: same config, input and decision logic", path.name)
    return extra


def _prepare_folder(folder: Path, config_hash: str, overwrite: bool, worker: bool = False) -> None:
    state = folder / STATE_DIR / "build.json"
    # only `.raft/` and no build.json yet: another worker is setting the folder up
    if folder.exists() and any(p.name != STATE_DIR for p in folder.iterdir()):
        previous = json.loads(state.read_text()).get("config_hash") if state.exists() else None
        if previous != config_hash:
            if not overwrite:
                what = f"a build of another config ({previous})" if previous else "files not made by raft-data build"
                raise RaftDataError(
                    f"output.dir '{folder}' holds {what}; choose another output.dir or pass --overwrite"
                )
            for child in ("data", "rejected", "manifest.json", "README.md"):
                target = folder / child
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
    if not worker:  # a worker could delete the temp file another is about to rename; _finalize does it
        _remove_temp_files(folder)
    (folder / STATE_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(state, json.dumps({"config_hash": config_hash}).encode())  # a kill never leaves half


# `.<name>.<mkstemp suffix>`: the temp file of an atomic write (schemas.parquet_io)
_TEMP_FILE = re.compile(r"\.(train-\d+-of-\d+\.parquet|rejected\.parquet|manifest\.json|README\.md)\.[a-z0-9_]{8}")


def _remove_temp_files(folder: Path) -> None:
    """Drop the temp files of writes a killed build never renamed (a shard's full bytes
    can sit in one), so the folder ends as an uninterrupted build leaves it."""
    for sub in (folder, folder / "data", folder / "rejected"):
        for path in sub.glob(".*"):
            if path.is_file() and _TEMP_FILE.fullmatch(path.name):
                path.unlink()


def build(
    cfg: PipelineConfig,
    overwrite: bool = False,
    max_shards: int | None = None,
    worker: tuple[int, int] | None = None,
) -> BuildResult:
    """Run stage 1 for a config. `max_shards` stops early (tests of resume); the manifest
    and card are written only when every shard is done.

    `worker=(i, n)` builds only the shards whose index is i modulo n, so n copies (GPUs, a
    SLURM array) share a build; they share the call cache (SQLite, WAL). The one that finds
    every shard finished writes the manifest and card; a plain rerun does the same.
    """
    if worker is not None and overwrite:
        raise RaftDataError("--overwrite with --worker would let one worker delete another's shards; "
                            "clear output.dir once, then start the workers")
    started = time.perf_counter()
    folder = Path(cfg.output.dir)
    config_hash = cfg.config_hash()
    loaded = scan_input(cfg)  # over-long rows: rejected before any request; JSONL streamed
    _prepare_folder(folder, config_hash, overwrite, worker is not None)
    with run_log(folder / STATE_DIR / "logs", "build") as log_path:
        log.info("build '%s' -> %s (config %s); log: %s", cfg.name, folder, config_hash, log_path)
        log.debug("config: %s", json.dumps(cfg.model_dump(mode="json"), sort_keys=True))
        _log_input(loaded)
        return _build(cfg, folder, loaded, config_hash, max_shards, started, worker)


def _build(
    cfg: PipelineConfig,
    folder: Path,
    loaded: LoadedInput,
    config_hash: str,
    max_shards: int | None,
    started: float,
    worker: tuple[int, int] | None = None,
) -> BuildResult:
    size = cfg.output.shard_size
    total = max(1, (loaded.count + size - 1) // size)
    stamp = {
        "config_hash": config_hash,
        "input_fingerprint": loaded.fingerprint,
        "decision_version": refine.DECISION_VERSION,
    }
    engines = resolve_roles(cfg, cuda_available(), vllm_available(), os.environ)
    log.info("engines: %s", "; ".join(f"{role} {_engine_text(e)}" for role, e in engines.items()))
    mine = [i for i in range(total) if worker is None or i % worker[1] == worker[0]]
    if worker is not None:
        log.info("worker %d/%d: %d of %d shards (index %% %d == %d)", worker[0], worker[1], len(mine), total, worker[1], worker[0])
    pending = [i for i in mine if _shard_done(folder / shard_name(i, total), stamp) is None]
    skipped = len(mine) - len(pending)
    stopped = max_shards is not None and len(pending) > max_shards
    if max_shards is not None:
        pending = pending[:max_shards]
    meta = {**stamp, "engines": json.dumps({k: v.model_dump() for k, v in engines.items()})}
    done = 0

    def write(index: int, refined: list[RefinedRecord], timings: dict[str, StageTiming]) -> None:
        nonlocal done
        path = folder / shard_name(index, total)
        write_records(path, refined, RefinedRecord, {**meta, "timings": json.dumps({k: v.model_dump() for k, v in timings.items()})})
        log.debug("%s built: %d rows, %s", path.name, len(refined), by_reason(r.reason for r in refined))
        done += 1

    cache = CallCache(folder / STATE_DIR / "calls.sqlite")
    try:
        refine_shards(cfg, pending, lambda i: loaded.chunk(i * size, (i + 1) * size), cache, write)
    finally:
        cache.close()
    if stopped:
        return BuildResult(folder, None, done, skipped)
    log.info("shards: %d built, %d reused", done, skipped)
    if worker is not None:
        pending = [i for i in range(total) if _shard_done(folder / shard_name(i, total), stamp) is None]
        if pending:
            log.info(
                "worker %d/%d finished its shards; %d shard(s) of other workers pending: the last "
                "worker, or a plain rerun, writes the manifest and card", worker[0], worker[1], len(pending)
            )
            return BuildResult(folder, None, done, skipped)
    with _finalize_lock(folder):
        manifest = _finalize(cfg, folder, loaded, stamp, total, started)
    return BuildResult(folder, manifest, done, skipped)


@contextmanager
def _finalize_lock(folder: Path) -> Iterator[None]:
    """One finalizer at a time: two workers that finish together write the same files, in turn.
    flock is released when its process dies, so a killed worker never blocks the others."""
    import fcntl

    with open(folder / STATE_DIR / "finalize.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _shard_stamps(folder: Path, total: int) -> tuple[dict[str, StageTiming], dict[str, EngineInfo]]:
    """Each stage's time and counts, summed over the shards' own stamps (whoever built
    them), and the engine settings each role ran with (the first shard's; a shard built with
    other settings, by a worker on other hardware, is logged)."""
    timings = {stage: StageTiming() for stage in STAGES}
    engines: dict[str, EngineInfo] = {}
    for i in range(total):
        extra = check_file_schema(folder / shard_name(i, total), RefinedRecord)
        for stage, value in json.loads(extra.get("timings", "{}")).items():
            t = StageTiming.model_validate(value)
            timings[stage].seconds += t.seconds
            timings[stage].requests += t.requests
            timings[stage].cached += t.cached
            timings[stage].generated_tokens += t.generated_tokens
        for role, value in json.loads(extra.get("engines", "{}")).items():
            info = EngineInfo.model_validate(value)
            if engines.setdefault(role, info) != info:
                log.warning("%s: %s ran with %s, not %s as in the manifest", shard_name(i, total), role,
                            _engine_text(info), _engine_text(engines[role]))
    return timings, engines


def _engine_text(info: EngineInfo) -> str:
    return ", ".join(f"{k} {v}" for k, v in info.model_dump().items() if v is not None)


_SUMMARY = [
    "decision", "reason", "over_length", "similarity", "fusion_score", "gold_nll", "final_nll",
    "answer_check_source", "missing_facts",
]


def _finalize(
    cfg: PipelineConfig, folder: Path, loaded: LoadedInput, stamp: dict[str, str], total: int, started: float
) -> Manifest:
    """Every shard is done: the rejected rows, the manifest, the plots and the card."""
    _remove_temp_files(folder)  # left by writers killed before their rename (none is writing now)
    write_records(folder / REJECTED_FILE, loaded.rejected, RejectedRecord, stamp)
    data_files = [shard_name(i, total) for i in range(total)]
    for stale in (folder / "data").glob("*.parquet"):
        # shards of an earlier input with another shard count: the card's glob would load them
        if f"data/{stale.name}" not in data_files:
            log.info("%s removed: a shard of an earlier input with another shard count", stale.name)
            stale.unlink()
    # the columns the summary needs, not the texts: a large build's rows need not fit in memory
    table = read_records([folder / f for f in data_files], RefinedRecord, validate_rows=False, columns=_SUMMARY)
    rows = table.to_pylist()
    _log_outcome(rows, cfg)
    timings, engines = _shard_stamps(folder, total)
    manifest = _manifest(cfg, loaded.fingerprint, loaded.rows_in, rows, len(loaded.rejected), timings, data_files)
    for role, info in manifest.models.items():
        info.engine = engines.get(role)
    sims = [r["similarity"] for r in rows if r["similarity"] is not None]
    judged = [r["fusion_score"] for r in rows if r["fusion_score"] is not None]
    plots = plot_histograms(folder, sims, judged, cfg.filter.tau)
    manifest.timings["total"] = StageTiming(seconds=time.perf_counter() - started)
    write_manifest(folder, manifest)
    write_card(folder, manifest, cfg.output.license, cfg.output.language, plots)
    return manifest


def _log_input(loaded: LoadedInput) -> None:
    rejected = by_reason(f"{r.field} {r.reason}" for r in loaded.rejected)
    log.info("input %s: %d rows, %d rejected (%s)", loaded.source, loaded.rows_in, len(loaded.rejected), rejected)
    log.debug("input fingerprint %s", loaded.fingerprint)


def _log_outcome(rows: list[dict], cfg: PipelineConfig) -> None:
    """Each decision by reason; the rows stage 2 will skip as too long for the teacher."""
    for decision in ("accepted", "fallback"):
        reasons = [r["reason"] for r in rows if r["decision"] == decision]
        log.info("%s: %d rows (%s)", decision, len(reasons), by_reason(reasons))
    over = sum(bool(r["over_length"]) for r in rows)
    if over:
        log.info("over_length: %d rows over teacher_context.max_tokens %d", over, cfg.teacher_context.max_tokens)


def _model_infos(cfg: PipelineConfig) -> dict[str, ModelInfo]:
    roles = {"original": cfg.model, "embedder": cfg.filter.embedder}
    roles.update(llm_roles(cfg))
    out = {}
    for role, name in roles.items():
        resolved = resolve_model(name, cfg.model_revision if role == "original" else None)
        out[role] = ModelInfo(name=name, model_id=resolved.model_id, revision=resolved.revision)
    return out


def _manifest(
    cfg: PipelineConfig,
    fingerprint: str,
    rows_in: int,
    rows: list[dict],
    rejected: int,
    timings: dict[str, StageTiming],
    data_files: list[str],
) -> Manifest:
    reasons = Counter(r["reason"].split(":", 1)[0] for r in rows)
    if rejected:
        reasons["rejected_input"] = rejected
    gold = [r["gold_nll"] for r in rows if r["gold_nll"] is not None]
    final = [r["final_nll"] for r in rows if r["final_nll"] is not None]
    return Manifest(
        tool_version=tool_version(),
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        pipeline_name=cfg.name,
        pipeline_config=cfg.model_dump(mode="json"),
        config_hash=cfg.config_hash(),
        input_fingerprint=fingerprint,
        models=_model_infos(cfg),
        counts=Counts(
            rows_in=rows_in,
            accepted=sum(r["decision"] == "accepted" for r in rows),
            fallback=sum(r["decision"] == "fallback" for r in rows),
            rejected=rejected,
            over_length=sum(bool(r["over_length"]) for r in rows),
            by_reason=dict(reasons),
            answer_check=dict(Counter(r["answer_check_source"] or "unchecked" for r in rows)),
            omissions_flagged=sum(r["decision"] == "accepted" and bool(r["missing_facts"]) for r in rows),
            meta_text=sum("meta_text" in r["reason"] for r in rows),
        ),
        timings=timings,
        compatibility_gap=CompatibilityGap(
            gold_nll_mean=statistics.fmean(gold) if gold else None,
            final_nll_mean=statistics.fmean(final) if final else None,
            rows=len(final),
        ),
        data_files=data_files,
        rejected_files=[REJECTED_FILE],
    )
