"""Stage-major execution: one engine resident at a time, each run over every pending shard.

A shard's refinement is a fixed sequence of model calls (rewrites by the original model;
per fusion round the fusion model, then each judge; the NLLs by the original model), and
every call's result is cached by content (`raft_data/cache.py`). A pass opens one engine
and runs each pending shard's `refine_shard` with the other roles' engines replaced by
`CacheOnly`: the shard goes as far as the cache and the open engine take it and stops
(`Pending`) at the first call of an engine that is not open. The next pass opens the engine
most pending shards wait for (the previous one is closed first), until every shard has
run through; that last run reads all its calls from the cache and the shard is written.

A shard's calls, batches and seeds are its own whatever the order of passes, so the output
equals a shard-at-a-time build's; a kill anywhere resumes from the cache and the written
shards. With one engine (the default: the fusion model and judges are the original model)
there is a single pass, the shard-major build it always was. The embedder is small and
stays loaded; filtering is redone in each pass (it is not cached), which costs embedder
time, never a different result.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from raft_data.backends import (
    Backend,
    CacheOnly,
    EngineKey,
    Pending,
    close_other_backends,
    engine_key,
    open_backend,
)
from raft_data.cache import CallCache
from raft_data.config import PipelineConfig
from raft_data.engines import config_key, llm_roles, role_settings
from raft_data.filter import Embedder, load_embedder
from raft_data.refine import STAGES, Models, refine_shard
from schemas.manifest import StageTiming
from schemas.records import RefinedRecord, SourceRecord

log = logging.getLogger(__name__)

Timings = dict[str, StageTiming]
ShardWriter = Callable[[int, list[RefinedRecord], Timings], None]


@dataclass
class Engine:
    """One engine and the roles it serves (roles with the same model and settings share it)."""

    key: EngineKey
    roles: dict[str, str] = field(default_factory=dict)  # role -> model name


def engine_groups(cfg: PipelineConfig) -> list[Engine]:
    groups: dict[EngineKey, Engine] = {}
    for role, name in llm_roles(cfg).items():
        revision = cfg.model_revision if role == "original" else None
        key = engine_key(name, role_settings(cfg, role), revision)
        groups.setdefault(key, Engine(key)).roles[role] = name
    return list(groups.values())


def _models(cfg: PipelineConfig, live: Engine | None, embedder: Embedder) -> Models:
    """Every role's backend: the live engine's roles (all of them when `live` is None)
    open, the others `CacheOnly`."""

    def backend(role: str, name: str) -> Backend:
        revision = cfg.model_revision if role == "original" else None
        settings, key = role_settings(cfg, role), config_key(role)
        if live is None or role in live.roles:
            return open_backend(name, settings, revision, key)
        return CacheOnly(name, settings, revision, key)

    roles = llm_roles(cfg)
    original = backend("original", roles["original"])
    fusion = backend("fusion", roles["fusion"]) if "fusion" in roles else None
    judges = [backend(role, name) for role, name in roles.items() if role.startswith("judge_")]
    return Models(original, fusion, judges, embedder)


def merge_timings(earlier: list[Timings], last: Timings) -> Timings:
    """A shard's timings over its passes: seconds and generated tokens summed; requests as
    counted by the last pass (a full run of the shard); calls made live in earlier passes
    are not `cached` (that counts calls found from earlier runs, as in a one-pass build)."""
    out: Timings = {}
    for stage, t in last.items():
        before = [p[stage] for p in earlier]
        live_before = 0 if stage == "filter" else sum(p.requests - p.cached for p in before)
        out[stage] = StageTiming(
            seconds=t.seconds + sum(p.seconds for p in before),
            requests=t.requests,
            cached=t.cached - live_before,
            generated_tokens=t.generated_tokens + sum(p.generated_tokens for p in before),
        )
    return out


@dataclass
class _Run:
    cfg: PipelineConfig
    records_of: Callable[[int], list[SourceRecord]]
    cache: CallCache
    write: ShardWriter
    earlier: dict[int, list[Timings]] = field(default_factory=dict)  # timings of a shard's earlier passes

    def one_pass(self, pending: list[int], models: Models, desc: str) -> dict[int, EngineKey]:
        """Each pending shard as far as it goes; the shards left, with the engine each waits for."""
        waiting: dict[int, EngineKey] = {}
        for index in tqdm(pending, desc=desc, unit="shard"):
            timings = {stage: StageTiming() for stage in STAGES}
            try:
                refined = refine_shard(self.records_of(index), models, self.cfg, self.cache, timings)
            except Pending as err:
                self.earlier.setdefault(index, []).append(timings)
                waiting[index] = err.key
                continue
            self.write(index, refined, merge_timings(self.earlier.pop(index, []), timings))
        return waiting


def refine_shards(
    cfg: PipelineConfig,
    shards: list[int],
    records_of: Callable[[int], list[SourceRecord]],
    cache: CallCache,
    write: ShardWriter,
) -> None:
    """Refine and write every shard in `shards`, one engine resident at a time."""
    if not shards:
        return
    groups = engine_groups(cfg)
    embedder = load_embedder(cfg.filter.embedder, dtype=cfg.engines.embedder.dtype)
    run = _Run(cfg, records_of, cache, write)
    if len(groups) == 1:
        run.one_pass(shards, _models(cfg, None, embedder), "shards")
        return
    by_key = {g.key: g for g in groups}
    waiting = {index: groups[0].key for index in shards}
    passes = 0
    while waiting:
        # the engine most shards wait for; every shard waiting for it moves on, so this ends
        key = Counter(waiting.values()).most_common(1)[0][0]
        engine = by_key[key]
        close_other_backends(key)
        passes += 1
        names = ", ".join(f"{role} {name}" for role, name in engine.roles.items())
        log.info("pass %d: %s over %d shard(s)", passes, names, sum(k == key for k in waiting.values()))
        ready = [i for i in shards if waiting.get(i) == key]
        left = run.one_pass(ready, _models(cfg, engine, embedder), f"pass {passes}")
        waiting = {i: k for i, k in waiting.items() if k != key} | left
