"""One shard through the three refinement steps: rewrite -> filter -> fuse, then measure.

Pure over its inputs apart from the model calls it is handed; `build.py` does the I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from raft_data.backends import Backend, Generation
from raft_data.cache import CallCache
from raft_data.config import PipelineConfig
from raft_data.facts import Answer, derive_answer, parse_answer
from raft_data.filter import CheckResult, Embedder, Pair, check_pairs
from raft_data.fuse import FusionResult, fuse
from raft_data.measure import answer_nlls, teacher_context_tokens
from raft_data.rewrite import rewrite
from schemas.manifest import StageTiming
from schemas.records import RefinedRecord, SourceRecord

STAGES = ("rewrite", "filter", "fuse", "judge", "measure")
# Stamped on every shard: bump when a change to the checks, fusion or measures changes what a
# row's decision or record would be, so a rerun redoes shards the old logic made (model
# calls stay cached: they do not depend on it). 2: contradiction + answer checks, copies kept;
# 3: positional capitals are not names, spelled-out numbers support digits; 4: symbols in
# brackets, the first letter that is a label, a derived answer's leading word only when it
# stands alone, a real rewrite before a copy of gold.
DECISION_VERSION = "4"


@dataclass
class Models:
    original: Backend
    fusion: Backend | None
    judges: list[Backend]
    embedder: Embedder


def _choose(checks: list[CheckResult]) -> int:
    """The candidate to keep: the most similar that passed (a real rewrite before a copy of
    gold, whose similarity is ~1 by construction), else the most similar overall."""
    passed = [j for j, c in enumerate(checks) if c.passed]
    pool = passed or list(range(len(checks)))
    return max(pool, key=lambda j: (checks[j].code != "copy", checks[j].similarity, -j))


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


@dataclass
class Filtered:
    """Step 1-2 for a shard: every rewrite candidate, its checks, and the one kept per row."""

    generations: list[list[Generation]]
    answers: list[Answer | None]
    checks: list[list[CheckResult]]
    chosen: list[int]

    def check(self, i: int) -> CheckResult:
        return self.checks[i][self.chosen[i]]

    def generation(self, i: int) -> Generation:
        return self.generations[i][self.chosen[i]]


Final = tuple[str, str, str, str]  # final text, source, decision, reason


def refine_shard(
    records: list[SourceRecord],
    models: Models,
    cfg: PipelineConfig,
    cache: CallCache,
    timings: dict[str, StageTiming],
) -> list[RefinedRecord]:
    """rewrite -> filter -> fuse -> measure for one shard; one record per input row."""
    filtered = rewrite_and_filter(records, models, cfg, cache, timings)
    fusion = fuse_accepted(records, filtered, models, cfg, cache, timings)
    finals = [_final(record, filtered, fusion, cfg, i) for i, record in enumerate(records)]
    return measure_and_record(records, filtered, fusion, finals, models, cfg, cache, timings)


def rewrite_and_filter(
    records: list[SourceRecord], models: Models, cfg: PipelineConfig, cache: CallCache, timings: dict[str, StageTiming]
) -> Filtered:
    """`rewrite.n` rewrites per row, each checked against gold; the best that passed is kept."""
    import time

    generations = rewrite(models.original, cache, records, cfg.rewrite, timings["rewrite"])
    answers = [row_answer(r, cfg) for r in records]
    t0 = time.perf_counter()
    pairs = [
        _pair(record, answer, g) for record, answer, gens in zip(records, answers, generations, strict=True) for g in gens
    ]
    flat = check_pairs(models.embedder, pairs, cfg.filter, cfg.rewrite.prompt_template)
    timings["filter"].seconds += time.perf_counter() - t0
    timings["filter"].requests += len(flat)
    checks = [flat[i * cfg.rewrite.n : (i + 1) * cfg.rewrite.n] for i in range(len(records))]
    return Filtered(generations, answers, checks, [_choose(c) for c in checks])


def fuse_accepted(
    records: list[SourceRecord],
    filtered: Filtered,
    models: Models,
    cfg: PipelineConfig,
    cache: CallCache,
    timings: dict[str, StageTiming],
) -> dict[int, FusionResult]:
    """Fusion rounds for the rows whose rewrite passed; fused candidates pass the same checks."""
    accepted = [i for i in range(len(records)) if filtered.check(i).passed]
    if not (cfg.fusion.enabled and accepted and models.fusion is not None):
        return {}
    answer_of = {r.id: a for r, a in zip(records, filtered.answers, strict=True)}
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
        [filtered.generation(i).text for i in accepted],
        cfg.fusion,
        checker,
        timings,
    )
    return dict(zip(accepted, results, strict=True))


def _final(
    record: SourceRecord, filtered: Filtered, fusion: dict[int, FusionResult], cfg: PipelineConfig, i: int
) -> Final:
    """What row i trains on, and why: gold on fallback, else the fusion or the rewrite."""
    check = filtered.check(i)
    rewrite_text = filtered.generation(i).text
    if not check.passed:
        return (record.gold_answer, "gold", "fallback", check.reason)
    if i not in fusion:
        return (rewrite_text, "rewrite", "accepted", "fusion_disabled" if not cfg.fusion.enabled else "rewrite_accepted")
    res = fusion[i]
    if res.best is None:
        why = res.checks[-1].reason if res.checks else "no candidate"
        return (rewrite_text, "rewrite", "accepted", f"fusion_failed_checks: {why}")
    if res.best_score is None:  # no judge could score any candidate: an unverified fusion is not trusted
        return (rewrite_text, "rewrite", "accepted", "fusion_unscored")
    return (res.candidates[res.best], "fusion", "accepted", f"fused: judge mean {res.best_score:.2f}")


def measure_and_record(
    records: list[SourceRecord],
    filtered: Filtered,
    fusion: dict[int, FusionResult],
    finals: list[Final],
    models: Models,
    cfg: PipelineConfig,
    cache: CallCache,
    timings: dict[str, StageTiming],
) -> list[RefinedRecord]:
    """Teacher-context length and the NLL gap per row, then the records."""
    import time

    t0 = time.perf_counter()
    tok = models.original.tokenizer
    ctx = [teacher_context_tokens(tok, r.question, f[0], cfg.teacher_context) for r, f in zip(records, finals, strict=True)]
    timings["measure"].seconds += time.perf_counter() - t0
    gold_nll: list[float | None] = [None] * len(records)
    final_nll: list[float | None] = [None] * len(records)
    if cfg.measure_gap:
        qs = [r.question for r in records]
        # vLLM schedules its own batches: the whole shard in one call; HF pads a [B, S, V]
        # logits tensor, so at most 16 rows per forward
        original = models.original
        bs = original.batch_size if original.engine == "vllm" else max(1, min(original.batch_size, 16))
        gold_nll = list(answer_nlls(models.original, cache, qs, [r.gold_answer for r in records], timings["measure"], bs, "nll gold"))
        final_nll = list(answer_nlls(models.original, cache, qs, [f[0] for f in finals], timings["measure"], bs, "nll final"))
    return [
        _record(record, filtered, fusion.get(i), finals[i], ctx[i], gold_nll[i], final_nll[i], i)
        for i, record in enumerate(records)
    ]


def _record(
    record: SourceRecord,
    filtered: Filtered,
    res: FusionResult | None,
    final: Final,
    ctx: tuple[int, bool, str | None],
    gold_nll: float | None,
    final_nll: float | None,
    i: int,
) -> RefinedRecord:
    check = filtered.check(i)
    answer = filtered.answers[i]
    text, source, decision, reason = final
    fused_sim = None
    if res is not None and res.best is not None and res.checks:
        fused_sim = res.checks[res.best].similarity
    return RefinedRecord(
        **record.model_dump(),
        rewrite_candidates=[g.text for g in filtered.generations[i]],
        rewrite=filtered.generation(i).text,
        similarity=check.similarity,
        copy_score=check.copy_score,
        repetition_score=check.repetition_score,
        missing_facts=check.missing_facts,
        contradictions=check.contradictions,
        rewrite_finish_reason=filtered.generation(i).finish_reason,
        answer_check=answer.value if answer else None,
        answer_check_kind=answer.kind if answer else None,
        answer_check_source=answer.source if answer else None,
        decision=decision,  # type: ignore[arg-type]
        reason=reason,
        fusion_candidates=res.candidates if res else [],
        fusion_scores=res.scores if res else [],
        judge_errors=res.judge_errors if res else [],
        fusion_rounds=res.rounds if res else 0,
        fusion_score=res.best_score if res else None,
        fused_similarity=fused_sim,
        final_answer=text,
        final_source=source,  # type: ignore[arg-type]
        teacher_context_tokens=ctx[0],
        over_length=ctx[1],
        over_length_reason=ctx[2],
        gold_nll=gold_nll,
        final_nll=final_nll,
    )
