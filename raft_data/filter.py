"""Step 2: keep a rewrite only if it still says what the gold answer says.

Semantic check (docs/METHOD.md stage 1.2): s = cosine(phi(y), phi(y~)) >= tau, phi a
sentence-embedding model. Checks added by this project, because a cosine stays high when a
fact changes but the topic does not (`raft_data/facts.py`): a rewrite that contradicts
gold (a number, symbol, name or choice letter that neither gold nor the question holds)
or does not state the row's short answer falls back; a gold fact it merely leaves out is
recorded, not fatal. A degenerate loop, an echo of the prompt, text about the prompt
(its instructions restated, or talk of the reference/draft answer: `meta_text`,
`schemas.meta_text`) or a rewrite cut off at max_new_tokens is not an answer; a
near-verbatim copy of gold is kept, as `copy`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from rapidfuzz import fuzz, process, utils

from raft_data.config import FilterConfig
from raft_data.facts import Answer, contradictions, omissions, states_answer
from schemas.meta_text import reference_talk

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


class Embedder(Protocol):
    def encode(self, sentences: list[str], **kwargs: Any) -> Any: ...


@dataclass
class CheckResult:
    """Every score of one (gold, candidate) pair and the verdict with its reason."""

    similarity: float
    copy_score: float
    repetition_score: float
    missing_facts: list[str] = field(default_factory=list)
    contradictions: list[str] = field(default_factory=list)
    passed: bool = False
    reason: str = ""

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True)
class Pair:
    """What one candidate is checked against: gold, the question, the short answer (if any),
    and how the candidate's generation ended ("length": cut off at max_new_tokens)."""

    gold: str
    candidate: str
    question: str = ""
    answer: Answer | None = None
    finish_reason: str | None = None


def repetition_score(text: str) -> float:
    """Share of the text that repeats itself: near-duplicate sentences or repeated word 4-grams."""
    segments = [s.strip() for s in _SENTENCE.split(text) if s.strip()]
    seg_share = 0.0
    if len(segments) >= 3:
        sim = process.cdist(segments, segments, scorer=fuzz.ratio, processor=utils.default_process)
        dup = sum(1 for i in range(1, len(segments)) if sim[i, :i].max() >= 90)
        seg_share = dup / (len(segments) - 1)
    words = [w.lower() for w in _WORD.findall(text)]
    grams = [tuple(words[i : i + 4]) for i in range(len(words) - 3)]
    gram_share = 1.0 - len(set(grams)) / len(grams) if len(grams) >= 8 else 0.0
    return max(seg_share, gram_share)


def template_lines(template: str) -> list[str]:
    """The fixed lines of a prompt template (placeholders removed), long enough to recognise."""
    literal = "".join(text for text, _, _, _ in string.Formatter().parse(template))
    return [line.strip() for line in literal.splitlines() if len(line.strip()) >= 12]


def echoed_line(candidate: str, lines: list[str]) -> str | None:
    """A template line the candidate repeats: small models often echo their prompt, and an
    echo of a prompt that quotes the gold answer scores high on every similarity check."""
    for line in lines:
        if line in candidate:
            return line
        if len(line) >= 30 and fuzz.partial_ratio(line, candidate, processor=utils.default_process) >= 95:
            return line
    return None


def instruction_sentence(candidate: str, template: str) -> str | None:
    """A sentence of the candidate (>= 20 characters) that restates the template's own
    instructions: one that stands, near verbatim, inside the template's fixed text. The
    template's placeholders are left out, so gold and the question never count."""
    literal = " ".join("".join(text for text, _, _, _ in string.Formatter().parse(template)).split())
    for sentence in _SENTENCE.split(candidate):
        sentence = sentence.strip()
        if len(sentence) >= 20 and fuzz.partial_ratio(sentence, literal, processor=utils.default_process) >= 92:
            return sentence
    return None


def meta_text(pair: Pair, template: str | None) -> str | None:
    """Why the candidate talks about the prompt instead of answering, or None: the prompt's
    instructions restated, or a reference/draft/given answer named where neither the
    question nor gold names one (both seen in accepted rows before this check)."""
    said = instruction_sentence(pair.candidate, template) if template else None
    if said is not None:
        return f"instruction {said[:60]!r}"
    phrase = reference_talk(pair.candidate, allowed=(pair.question, pair.gold))
    return repr(phrase) if phrase is not None else None


def decide(pair: Pair, similarity: float, cfg: FilterConfig, template: str | None = None) -> CheckResult:
    """The verdict for one pair; the first failing check names the reason."""
    gold, candidate = pair.gold, pair.candidate
    copy = float(fuzz.ratio(gold, candidate, processor=utils.default_process))
    rep = repetition_score(candidate)
    facts = cfg.check_facts
    missing = omissions(gold, candidate, cfg.fact_match_threshold) if facts else []
    wrong = contradictions(gold, pair.question, candidate, cfg.fact_match_threshold) if facts else []
    result = CheckResult(similarity, copy, rep, missing, wrong)
    echo = echoed_line(candidate, template_lines(template)) if template else None
    meta = meta_text(pair, template) if echo is None else None
    answer = pair.answer if cfg.check_answer else None
    if not candidate.strip():
        result.reason = "empty_rewrite"
    elif pair.finish_reason == "length" and cfg.reject_truncated:
        result.reason = "truncated: cut off at max_new_tokens"
    elif echo is not None:
        result.reason = f"prompt_echo: {echo[:60]!r}"
    elif meta is not None:
        result.reason = f"meta_text: {meta}"
    elif rep > cfg.repetition_threshold:
        result.reason = f"degenerate_repetition: {rep:.2f} > {cfg.repetition_threshold:.2f}"
    elif wrong:
        result.reason = "contradiction: " + ", ".join(wrong)
    elif answer is not None and not states_answer(candidate, answer, pair.question, cfg.fact_match_threshold):
        result.reason = f"answer_missing: {answer.value!r} ({answer.kind}, from {answer.source})"
    elif copy >= cfg.copy_threshold:
        result.passed = True
        result.reason = f"copy: ratio {copy:.1f} >= {cfg.copy_threshold:.1f}"
    elif similarity < cfg.tau:
        result.reason = f"low_similarity: {similarity:.3f} < tau {cfg.tau:.2f}"
    elif missing and cfg.omissions == "fallback":
        result.reason = "missing_facts: " + ", ".join(missing)
    else:
        result.passed = True
        result.reason = "passed"
    return result


def cosine_pairs(embedder: Embedder, golds: list[str], candidates: list[str], batch_size: int) -> list[float]:
    """cosine(phi(gold_i), phi(candidate_i)) for each aligned pair."""
    from sentence_transformers import util

    if not golds:
        return []
    kw = dict(batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)
    a = embedder.encode(golds, **kw)
    b = embedder.encode(candidates, **kw)
    return [float(x) for x in util.pairwise_cos_sim(a, b)]


def check_pairs(
    embedder: Embedder, pairs: list[Pair], cfg: FilterConfig, template: str | None = None
) -> list[CheckResult]:
    """All checks for aligned pairs; `template` is the prompt that produced the candidates."""
    sims = cosine_pairs(embedder, [p.gold for p in pairs], [p.candidate for p in pairs], cfg.embed_batch_size)
    return [decide(p, s, cfg, template) for p, s in zip(pairs, sims, strict=True)]


def load_embedder(name: str, device: str | None = None, dtype: str = "float32") -> Embedder:
    """`dtype` (engines.embedder.dtype): float32 unless set; "auto" is float32 too."""
    import torch
    from sentence_transformers import SentenceTransformer

    from schemas.model_registry import resolve_model

    model = SentenceTransformer(str(resolve_model(name).path), device=device)
    if dtype not in ("auto", "float32"):
        model.to(getattr(torch, dtype))
    return cast(Embedder, model)
