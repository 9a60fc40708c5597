"""Step 2: keep a rewrite only if it still says what the gold answer says.

Semantic check (METHOD.md): s = cosine(phi(y), phi(y~)) >= tau, phi a sentence-embedding
model. String checks added by this project (rapidfuzz): a near-verbatim copy adds
nothing, a degenerate loop is not an answer, and a number or name of the gold answer that
vanished from the rewrite is a changed fact even when the embeddings agree.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from rapidfuzz import fuzz, process, utils

from raft_data.config import FilterConfig

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# Capitalised only because they start a sentence; never facts on their own.
_STOP = {
    "a", "an", "the", "it", "in", "on", "at", "as", "is", "of", "to", "by", "for", "and",
    "but", "or", "if", "so", "we", "he", "she", "they", "its", "yes", "no", "not", "this",
    "that", "these", "those", "there", "here", "i", "you", "my", "our", "your",
}


class Embedder(Protocol):
    def encode(self, sentences: list[str], **kwargs: Any) -> Any: ...


@dataclass
class CheckResult:
    """Every score of one (gold, candidate) pair and the verdict with its reason."""

    similarity: float
    copy_score: float
    repetition_score: float
    missing_facts: list[str] = field(default_factory=list)
    passed: bool = False
    reason: str = ""

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


def gold_facts(gold: str) -> list[str]:
    """Numbers and names in the gold answer that a faithful rewrite must keep."""
    facts: list[str] = [m.group().replace(",", "") for m in _NUMBER.finditer(gold)]
    for sentence in _SENTENCE.split(gold):
        words = _WORD.findall(sentence)
        for pos, word in enumerate(words):
            if not word[0].isupper() or word.lower() in _STOP or word.isdigit():
                continue
            inner_caps = any(c.isupper() or c.isdigit() for c in word[1:])
            if pos == 0 and not (inner_caps or len(word) <= 3):
                continue  # an ordinary word capitalised by its position
            facts.append(word)
    return list(dict.fromkeys(facts))


def missing_facts(gold: str, candidate: str, threshold: float) -> list[str]:
    """Gold facts absent from the candidate: numbers exactly, names by fuzzy word match."""
    numbers = {m.group().replace(",", "") for m in _NUMBER.finditer(candidate)}
    words = _WORD.findall(candidate)
    missing = []
    for fact in gold_facts(gold):
        if fact[0].isdigit() or fact[0] in "+-":
            if fact not in numbers:
                missing.append(fact)
            continue
        best = process.extractOne(fact, words, scorer=fuzz.ratio, processor=utils.default_process)
        if best is None or best[1] < threshold:
            missing.append(fact)
    return missing


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


def decide(
    gold: str, candidate: str, similarity: float, cfg: FilterConfig, template: str | None = None
) -> CheckResult:
    """The verdict for one pair; the first failing check names the reason."""
    copy = float(fuzz.ratio(gold, candidate, processor=utils.default_process))
    rep = repetition_score(candidate)
    missing = missing_facts(gold, candidate, cfg.fact_match_threshold) if cfg.check_facts else []
    result = CheckResult(similarity, copy, rep, missing)
    echo = echoed_line(candidate, template_lines(template)) if template else None
    if not candidate.strip():
        result.reason = "empty_rewrite"
    elif echo is not None:
        result.reason = f"prompt_echo: {echo[:60]!r}"
    elif rep > cfg.repetition_threshold:
        result.reason = f"degenerate_repetition: {rep:.2f} > {cfg.repetition_threshold:.2f}"
    elif copy >= cfg.copy_threshold:
        result.reason = f"near_verbatim_copy: ratio {copy:.1f} >= {cfg.copy_threshold:.1f}"
    elif similarity < cfg.tau:
        result.reason = f"low_similarity: {similarity:.3f} < tau {cfg.tau:.2f}"
    elif missing:
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
    embedder: Embedder,
    golds: list[str],
    candidates: list[str],
    cfg: FilterConfig,
    template: str | None = None,
) -> list[CheckResult]:
    """All checks for aligned pairs; `template` is the prompt that produced the candidates."""
    sims = cosine_pairs(embedder, golds, candidates, cfg.embed_batch_size)
    return [decide(g, c, s, cfg, template) for g, c, s in zip(golds, candidates, sims, strict=True)]


def load_embedder(name: str, device: str | None = None) -> Embedder:
    from sentence_transformers import SentenceTransformer

    from schemas.model_registry import resolve_model

    model = resolve_model(name)
    return cast(Embedder, SentenceTransformer(str(model.path), device=device))
