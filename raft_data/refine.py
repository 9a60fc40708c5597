"""One shard through the three refinement steps: rewrite -> filter -> fuse, then measure.

Pure over its inputs apart from the model calls it is handed; `build.py` does the I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from raft_data.backends import Backend, Generation
from raft_data.cache import CallCache
from raft_data.config import PipelineConfig
from raft_data.facts import Answer, derive_answer, parse_answer
from raft_data.filter import CheckResult, Embedder, Pair, check_pairs
from raft_data.fuse import fuse
from raft_data.measure import answer_nlls, teacher_context_tokens
from raft_data.rewrite import rewrite
from schemas.manifest import StageTiming
from schemas.records import RefinedRecord, SourceRecord

STAGES = ("rewrite", "filter", "fuse", "judge", "measure")
# Stamped on every shard: bump when a change to the checks, fusion or measures changes what a
# row's decision or record would be, so a rerun redoes shards the old logic made (model
# calls stay cached: they do not depend on it). 2: contradiction + answer checks, copies kept;
# 3: positional capitals are not names, spelled-out numbers support digits.
DECISION_VERSION = "3"


@dataclass
class Models:
    original: Backend
    fusion: Backend | None
    judges: list[Backend]
    embedder: Embedder


def _choose(checks: list[CheckResult]) -> int:
    """The candidate to keep: the most similar that passed, else the most similar overall."""
    passed = [j for j, c in enumerate(checks) if c.passed]
    pool = passed or list(range(len(checks)))
    return max(pool, key=lambda j: (checks[j].similarity, -j))


def row_answer(record: SourceRecord, cfg: PipelineConfig) -> Answer | None:
    """The short answer a row's rewrite must state: its answer-check column when set and
    non-empty, else a span read off the gold answer, else None (not checkable)."""
    field = cfg.input.answer_check_field
    if field:
        value = json.loads(record.metadata).get(field)
        if value is not None and str(value).strip():
            return parse_answer(str(value), record.question, "column")
    return derive_answer(record.gold_answer, record.question)


def _pair(record: SourceRecord, answer: Answer | None, gen: Generation) -> Pair:
    return Pair(record.gold_answer, gen.text, record.question, answer, gen.finish_reason)


def refine_shard(
    records: list[SourceRecord],
    models: Models,
    cfg: PipelineConfig,
    cache: CallCache,
    timings: dict[str, StageTiming],
) -> list[RefinedRecord]:
    import time

    generations = rewrite(models.original, cache, records, cfg.rewrite, timings["rewrite"])
    candidates = [[g.text for g in gens] for gens in generations]
    answers = [row_answer(r, cfg) for r in records]

    t0 = time.perf_counter()
    pairs = [
        _pair(record, answer, g) for record, answer, gens in zip(records, answers, generations, strict=True) for g in gens
    ]
    flat = check_pairs(models.embedder, pairs, cfg.filter, cfg.rewrite.prompt_template)
    timings["filter"].seconds += time.perf_counter() - t0
    timings["filter"].requests += len(flat)
    checks = [flat[i * cfg.rewrite.n : (i + 1) * cfg.rewrite.n] for i in range(len(records))]
    chosen = [_choose(c) for c in checks]

    accepted = [i for i, (c, j) in enumerate(zip(checks, chosen, strict=True)) if c[j].passed]
    fusion: dict[int, Any] = {}
    if cfg.fusion.enabled and accepted and models.fusion is not None:

        answer_of = {r.id: a for r, a in zip(records, answers, strict=True)}
        # without refilter, tau is not applied to fusions; the fact and answer checks always are
        fusion_filter = cfg.filter if cfg.fusion.refilter else cfg.filter.model_copy(update={"tau": -1.0})

        def checker(rows: list[SourceRecord], outs: list[Generation]) -> list[CheckResult]:
            fused = [_pair(r, answer_of[r.id], g) for r, g in zip(rows, outs, strict=True)]
            return check_pairs(models.embedder, fused, fusion_filter, cfg.fusion.prompt_template)

        results = fuse(
            models.fusion,
            models.judges,
            cache,
            [records[i] for i in accepted],
            [candidates[i][chosen[i]] for i in accepted],
            cfg.fusion,
            checker,
            timings,
        )
        fusion = dict(zip(accepted, results, strict=True))

    out: list[RefinedRecord] = []
    finals: list[tuple[str, str, str, str]] = []  # final text, source, decision, reason
    for i, record in enumerate(records):
        check = checks[i][chosen[i]]
        rewrite_text = candidates[i][chosen[i]]
        if not check.passed:
            finals.append((record.gold_answer, "gold", "fallback", check.reason))
        elif i not in fusion:
            reason = "fusion_disabled" if not cfg.fusion.enabled else "rewrite_accepted"
            finals.append((rewrite_text, "rewrite", "accepted", reason))
        else:
            res = fusion[i]
            if res.best is None:
                why = res.checks[-1].reason if res.checks else "no candidate"
                finals.append((rewrite_text, "rewrite", "accepted", f"fusion_failed_checks: {why}"))
            elif res.best_score is None:
                # no judge could score any candidate: an unverified fusion is not trusted
                finals.append((rewrite_text, "rewrite", "accepted", "fusion_unscored"))
            else:
                finals.append(
                    (res.candidates[res.best], "fusion", "accepted", f"fused: judge mean {res.best_score:.2f}")
                )

    t0 = time.perf_counter()
    tok = models.original.tokenizer
    ctx = [teacher_context_tokens(tok, r.question, f[0], cfg.teacher_context) for r, f in zip(records, finals, strict=True)]
    timings["measure"].seconds += time.perf_counter() - t0
    gold_nll: list[float | None] = [None] * len(records)
    final_nll: list[float | None] = [None] * len(records)
    if cfg.measure_gap:
        qs = [r.question for r in records]
        bs = max(1, min(cfg.backend.batch_size, 16))
        gold_nll = list(answer_nlls(models.original, cache, qs, [r.gold_answer for r in records], timings["measure"], bs, "nll gold"))
        final_nll = list(answer_nlls(models.original, cache, qs, [f[0] for f in finals], timings["measure"], bs, "nll final"))

    for i, record in enumerate(records):
        check = checks[i][chosen[i]]
        final, source, decision, reason = finals[i]
        res = fusion.get(i)
        fused_sim = None
        if res is not None and res.best is not None and res.checks:
            fused_sim = res.checks[res.best].similarity
        out.append(
            RefinedRecord(
                **record.model_dump(),
                rewrite_candidates=candidates[i],
                rewrite=candidates[i][chosen[i]],
                similarity=check.similarity,
                copy_score=check.copy_score,
                repetition_score=check.repetition_score,
                missing_facts=check.missing_facts,
                contradictions=check.contradictions,
                rewrite_finish_reason=generations[i][chosen[i]].finish_reason,
                answer_check=getattr(answers[i], "value", None),
                answer_check_kind=getattr(answers[i], "kind", None),
                answer_check_source=getattr(answers[i], "source", None),
                decision=decision,  # type: ignore[arg-type]
                reason=reason,
                fusion_candidates=res.candidates if res else [],
                fusion_scores=res.scores if res else [],
                judge_errors=res.judge_errors if res else [],
                fusion_rounds=res.rounds if res else 0,
                fusion_score=res.best_score if res else None,
                fused_similarity=fused_sim,
                final_answer=final,
                final_source=source,  # type: ignore[arg-type]
                teacher_context_tokens=ctx[i][0],
                over_length=ctx[i][1],
                over_length_reason=ctx[i][2],
                gold_nll=gold_nll[i],
                final_nll=final_nll[i],
            )
        )
    return out
