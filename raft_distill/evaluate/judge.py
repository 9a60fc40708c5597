"""Optional LLM-judge majority vote on the QA suites, as the paper grades domain accuracy.

Each judge model reads (question, reference answer, model response) and answers CORRECT or
INCORRECT; the verdict of an item is the majority of the judges that gave a parsable
verdict. A tie, or no parsable verdict at all, is "undecided" and counts as incorrect in
`judge_accuracy` (the count is reported, so a judge that never answers in the format shows
up as a high undecided rate instead of a silent score). The programmatic checker stays the
headline `accuracy`; the judge score sits next to it with its agreement rate, so the two
can be compared rather than one replacing the other.

Judges are loaded one at a time after every evaluated model has answered, and each judge
grades every model's responses in one batched call through the same generator interface
(transformers or vLLM) as the answers themselves. Judging is greedy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from raft_distill.evaluate.generate import Generator

DEFAULT_JUDGE_TEMPLATE = (
    "You are grading an answer to a question against a reference answer.\n"
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Answer to grade: {response}\n"
    "Is the answer to grade correct, i.e. does it state the same fact as the reference? "
    "Reply with exactly one word: CORRECT or INCORRECT."
)

# The first verdict word wins; "incorrect"/"not correct" are tried before "correct".
_VERDICT = re.compile(
    r"\b(incorrect|not\s+correct|wrong|false|no|correct|right|true|yes)\b", re.IGNORECASE
)
_POSITIVE = {"correct", "right", "true", "yes"}


def parse_verdict(text: str) -> bool | None:
    """CORRECT -> True, INCORRECT -> False, neither -> None (the first verdict word wins)."""
    match = _VERDICT.search(text)
    if match is None:
        return None
    return match.group(1).lower() in _POSITIVE


def majority(votes: Sequence[bool | None]) -> bool | None:
    """The majority of the parsable votes; None on a tie or when no judge answered."""
    yes = sum(1 for v in votes if v is True)
    no = sum(1 for v in votes if v is False)
    if yes == no:
        return None
    return yes > no


@dataclass(frozen=True)
class JudgeItem:
    """One response to grade: which model and suite it belongs to, and what it says."""

    model: str
    suite: str
    question: str
    reference: str
    response: str


def judge_prompt(template: str, item: JudgeItem) -> str:
    return template.format(question=item.question, reference=item.reference, response=item.response)


def collect_votes(
    judges: Sequence[str],
    items: Sequence[JudgeItem],
    open_judge: Callable[[str], Generator],
    template: str,
    max_new_tokens: int,
    log: Callable[[str], None] = print,
) -> tuple[list[list[bool | None]], list[list[str]]]:
    """Every judge's verdict (and raw text) on every item: [item][judge]."""
    prompts = [judge_prompt(template, item) for item in items]
    votes: list[list[bool | None]] = [[] for _ in items]
    texts: list[list[str]] = [[] for _ in items]
    for judge in judges:
        log(f"[judge {judge}] grading {len(items)} responses")
        generator = open_judge(judge)
        try:
            replies = generator.generate(prompts, max_new_tokens)
        finally:
            generator.close()
        for i, reply in enumerate(replies):
            texts[i].append(reply)
            votes[i].append(parse_verdict(reply))
    return votes, texts


def judge_metrics(
    verdicts: Sequence[bool | None],
    programmatic: Sequence[bool],
    per_judge: Sequence[Sequence[bool | None]],
    judges: Sequence[str],
) -> dict[str, Any]:
    """Judge accuracy, undecided rate, agreement with the programmatic checker, per judge."""
    n = len(verdicts)
    if n == 0:
        return {"judge_accuracy": 0.0, "judge_undecided": 0.0, "judge_agreement": 0.0}
    metrics: dict[str, Any] = {
        "judge_accuracy": sum(1 for v in verdicts if v is True) / n,
        "judge_undecided": sum(1 for v in verdicts if v is None) / n,
        "judge_agreement": sum(
            1 for v, p in zip(verdicts, programmatic, strict=True) if (v is True) == p
        )
        / n,
    }
    # keyed "<position>:<judge>", so a judge listed twice keeps two entries
    metrics["judge_parsed_by_judge"] = {
        f"{j}:{judge}": sum(1 for votes in per_judge if votes[j] is not None) / n
        for j, judge in enumerate(judges)
    }
    return metrics
