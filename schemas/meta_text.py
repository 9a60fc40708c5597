"""Text that talks about a prompt's reference instead of answering: one definition, two uses.

Stage 1 shows the model a "reference answer" (rewrite) and a "draft answer" (fusion); stage
2's teacher reads "Background reference knowledge". A small model sometimes writes about
those texts ("The reference answer is correct. The answer is indeed: ...", "... while the
reference answer is 21.", "The reference knowledge is: ..."). Such text is not an answer:
`raft_data.filter` rejects a rewrite or fusion that contains it (reason `meta_text`), and
`raft-distill eval` counts the responses that contain it per suite (`leak`), because a
student distilled from an answer-conditioned teacher can learn to say it.

A phrase is meta text only when the question and the gold answer do not use it themselves:
"Who reviews the draft answer?" may be answered with "the draft answer".
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# "<reference|draft|given|...> <answer|knowledge|...>": the nouns the prompts use, and the
# phrasings seen in rejected rows and leaked responses.
REFERENCE_TALK = re.compile(
    r"\b(?:reference|draft|given|provided|merged|both|two)\s+"
    r"(?:answers?|responses?|knowledge|texts?|solutions?)\b"
    r"|\bbackground\s+reference\b",
    re.IGNORECASE,
)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def reference_talk(text: str, allowed: Iterable[str] = ()) -> str | None:
    """The first phrase of `text` that refers to a prompt's reference, draft or given answer
    (or to the teacher's reference knowledge), or None. A phrase that also occurs in one of
    `allowed` (the question, the gold answer) is the row's own wording, not meta text."""
    context = [_norm(a) for a in allowed]
    for match in REFERENCE_TALK.finditer(text):
        phrase = _norm(match.group(0))
        if not any(phrase in c for c in context):
            return match.group(0)
    return None
