"""Model calls through the cache, in fixed batches, with progress and timing.

Batches are fixed slices of a stage's request list (sorted by prompt length to cut
padding), so a resumed build samples every unfinished batch exactly as an uninterrupted
build would have.
"""

from __future__ import annotations

import time
from typing import Any

from tqdm.auto import tqdm

from raft_data.backends import Backend, Generation
from raft_data.cache import CallCache, call_key
from raft_data.config import SamplingConfig
from schemas.manifest import StageTiming


def generate_cached(
    backend: Backend,
    cache: CallCache,
    kind: str,
    prompts: list[list[int]],
    sampling: SamplingConfig,
    seeds: list[int],
    timing: StageTiming,
    desc: str,
) -> list[Generation]:
    """Generate one completion per prompt, reusing cached results."""
    params: dict[str, Any] = sampling.model_dump()
    keys = [
        call_key(kind, backend.identity, backend.model.model_id, backend.model.revision, p, {**params, "seed": s})
        for p, s in zip(prompts, seeds, strict=True)
    ]
    found = cache.get_many(keys)
    results = {k: Generation(v["text"], v["tokens"], v.get("finish_reason")) for k, v in found.items()}
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), keys[i]))
    todo_order = [i for i in order if keys[i] not in results]
    unique: list[int] = []
    seen: set[str] = set()
    for i in todo_order:
        if keys[i] not in seen:
            seen.add(keys[i])
            unique.append(i)
    size = backend.batch_size
    with tqdm(total=len(unique), desc=desc, unit="req", leave=False, disable=not unique) as bar:
        for start in range(0, len(unique), size):
            batch = unique[start : start + size]
            t0 = time.perf_counter()
            out = backend.generate([prompts[i] for i in batch], sampling, [seeds[i] for i in batch])
            timing.seconds += time.perf_counter() - t0
            timing.generated_tokens += sum(g.tokens for g in out)
            fresh = {keys[i]: g for i, g in zip(batch, out, strict=True)}
            cache.put_many(
                {k: {"text": g.text, "tokens": g.tokens, "finish_reason": g.finish_reason} for k, g in fresh.items()}
            )
            results.update(fresh)
            bar.update(len(batch))
    # counted once the call is complete: a call stopped by `Pending` (stage-major) counts nothing
    timing.requests += len(prompts)
    timing.cached += len(prompts) - len(todo_order)
    return [results[k] for k in keys]


def nll_cached(
    backend: Backend,
    cache: CallCache,
    prompts: list[list[int]],
    answers: list[list[int]],
    timing: StageTiming,
    batch_size: int,
    desc: str,
) -> list[float]:
    """Mean per-token NLL of each answer under the backend's model, cached like generations."""
    keys = [
        call_key("nll", backend.identity, backend.model.model_id, backend.model.revision, p + [-1] + a, {})
        for p, a in zip(prompts, answers, strict=True)
    ]
    found = cache.get_many(keys)
    todo = [i for i in range(len(keys)) if keys[i] not in found]
    todo.sort(key=lambda i: len(prompts[i]) + len(answers[i]))
    with tqdm(total=len(todo), desc=desc, unit="row", leave=False, disable=not todo) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            t0 = time.perf_counter()
            vals = backend.answer_nll([prompts[i] for i in batch], [answers[i] for i in batch])
            timing.seconds += time.perf_counter() - t0
            fresh = {keys[i]: v for i, v in zip(batch, vals, strict=True)}
            cache.put_many(fresh)
            found.update(fresh)
            bar.update(len(batch))
    timing.requests += len(keys)
    timing.cached += len(keys) - len(todo)
    return [float(found[k]) for k in keys]
