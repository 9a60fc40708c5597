"""Step 3: a fusion model merges gold y and accepted rewrite y~ into y^; judges score it.

Per docs/METHOD.md stage 1.3: over up to R rounds a new fusion candidate is drawn for each row
still below the stop score; each judge scores it in [0, 1]; the candidate with the best
mean score is kept, and a row stops early once its mean reaches the stop score (0.8).
Judge output that does not parse is recorded and left out of the mean, never fatal.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from raft_data.backends import Backend, Generation, render_chat
from raft_data.cache import CallCache
from raft_data.calls import generate_cached
from raft_data.config import FusionConfig
from raft_data.filter import CheckResult
from raft_data.seeds import request_seed
from schemas.manifest import StageTiming
from schemas.records import SourceRecord

_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?", re.IGNORECASE)
_BARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?\s*\.?\s*$")

# (rows, candidate generations) -> one check per candidate against its row's gold answer
Checker = Callable[[list[SourceRecord], list[Generation]], list[CheckResult]]


def parse_score(text: str, lo: float, hi: float) -> float | None:
    """A judge reply 'Score: N' (or a bare number) -> (N - lo) / (hi - lo) in [0, 1]; else None."""
    match = _SCORE.search(text) or _BARE.match(text)
    if match is None:
        return None
    value = float(match.group(1))
    if match.group(2) is not None and float(match.group(2)) != hi:
        return None  # "7/5"-style replies on another scale are not trusted
    if not lo <= value <= hi:
        return None
    return (value - lo) / (hi - lo)


@dataclass
class FusionResult:
    candidates: list[str] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    judge_errors: list[str] = field(default_factory=list)
    rounds: int = 0
    best: int | None = None

    @property
    def best_score(self) -> float | None:
        return None if self.best is None else self.scores[self.best]


def _mean(values: Sequence[float | None]) -> float | None:
    good = [v for v in values if v is not None]
    return sum(good) / len(good) if good else None


def fuse(
    fusion_backend: Backend,
    judges: list[Backend],
    cache: CallCache,
    records: list[SourceRecord],
    rewrites: list[str],
    cfg: FusionConfig,
    check: Checker | None,
    timings: dict[str, StageTiming],
) -> list[FusionResult]:
    """Run the fusion rounds for accepted rows; returns one result per record."""
    results = [FusionResult() for _ in records]
    active = list(range(len(records)))
    for rnd in range(cfg.rounds):
        if not active:
            break
        prompts = [
            render_chat(
                fusion_backend.tokenizer,
                cfg.prompt_template.format(
                    question=records[i].question, answer=records[i].gold_answer, rewrite=rewrites[i]
                ),
            )
            for i in active
        ]
        seeds = [request_seed(cfg.sampling.seed, "fuse", records[i].id, rnd) for i in active]
        outs = generate_cached(
            fusion_backend, cache, "fuse", prompts, cfg.sampling, seeds, timings["fuse"], f"fuse r{rnd + 1}"
        )
        texts = [g.text for g in outs]
        checks = check([records[i] for i in active], outs) if check else None
        per_judge = [
            _judge_scores(judge, cache, records, active, texts, cfg, rnd, timings["judge"], results)
            for judge in judges
        ]
        still = []
        for k, i in enumerate(active):
            res = results[i]
            mean = _mean([scores[k] for scores in per_judge])
            res.candidates.append(texts[k])
            res.scores.append(mean)
            if checks is not None:
                res.checks.append(checks[k])
            res.rounds = rnd + 1
            res.best = _pick(res)
            best = res.best_score
            if not (res.best is not None and best is not None and best >= cfg.stop_score):
                still.append(i)
        active = still
    return results


def _judge_scores(
    judge: Backend,
    cache: CallCache,
    records: list[SourceRecord],
    active: list[int],
    texts: list[str],
    cfg: FusionConfig,
    rnd: int,
    timing: StageTiming,
    results: list[FusionResult],
) -> list[float | None]:
    """One judge's score for each active row's candidate (None where its reply has no
    score: the reply is kept in that row's `judge_errors`)."""
    prefill = list(judge.tokenizer(cfg.judge_prefill, add_special_tokens=False)["input_ids"])
    prompts = [
        render_chat(
            judge.tokenizer,
            cfg.judge_template.format(
                question=records[i].question, answer=records[i].gold_answer, candidate=t
            ),
        )
        + prefill
        for i, t in zip(active, texts, strict=True)
    ]
    seeds = [request_seed(cfg.judge_sampling.seed, "judge", records[i].id, rnd) for i in active]
    outs = generate_cached(judge, cache, "judge", prompts, cfg.judge_sampling, seeds, timing, "judge")
    scores: list[float | None] = []
    for i, g in zip(active, outs, strict=True):
        reply = f"{cfg.judge_prefill} {g.text}" if cfg.judge_prefill else g.text
        score = parse_score(reply, cfg.score_min, cfg.score_max)
        if score is None:
            results[i].judge_errors.append(
                f"round {rnd + 1}, judge {judge.model.name}: unparseable {reply[:200]!r}"
            )
        scores.append(score)
    return scores


def _pick(res: FusionResult) -> int | None:
    """Best-scoring candidate among those that passed the checks (unscored ones rank last)."""
    eligible = [j for j in range(len(res.candidates)) if not res.checks or res.checks[j].passed]
    if not eligible:
        return None
    return max(eligible, key=lambda j: (res.scores[j] if res.scores[j] is not None else -1.0, -j))
