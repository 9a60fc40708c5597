"""`leak`: responses that talk about a reference instead of answering (schemas.meta_text).

A student distilled from an answer-conditioned teacher can learn the teacher's habit of
writing about "the reference answer" it was shown; the student never sees one, so such
text in its answers is leaked teacher context. Every generated suite counts it per
response. A phrase the prompt itself uses (or the row's reference answer, where there is
one) is the row's own wording, not a leak: "Who reviews the draft answer?".
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.meta_text import reference_talk


def leak_flags(responses: Sequence[str], allowed: Sequence[Sequence[str]]) -> list[bool]:
    """Per response: does it talk about a reference not named in its own `allowed` texts."""
    return [
        reference_talk(text, texts) is not None
        for text, texts in zip(responses, allowed, strict=True)
    ]


def leak_metrics(flags: Sequence[bool]) -> dict[str, float | int]:
    """`leak`: the share of responses with reference talk; `leak_count`: how many."""
    count = sum(flags)
    return {"leak": count / len(flags) if flags else 0.0, "leak_count": count}
