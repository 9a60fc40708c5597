"""The teacher's context before the trajectory z (METHOD.md stage 2, step 2), defined once.

Stage 2 (`raft_distill.data`) builds it and splices the student's trajectory ids z after
it; stage 1 (`raft_data.measure`) measures the same ids to flag rows that will not fit.
Both call `teacher_context_ids`, so the count stage 1 writes is the context stage 2 feeds.

The text is the paper's template: background reference y^, question x, instruction. Two
formats:
- `chat` (default): the text is the user turn of the model's chat template, followed by the
  assistant header (`add_generation_prompt=True`). z is then read after the same boundary
  the student sampled it after (its own prompt ends with that header), which is what public
  demonstration-conditioned teachers do (SDFT, OPSD, TRL's self-distillation trainers). A
  tokenizer without a chat template falls back to `plain`, as the student's prompt does.
- `plain`: the text as is (the paper's layout), with the tokenizer's BOS where it adds one.
  With a chat student z starts a line ("The", not " The"), so the teacher still reads it
  at an unnatural boundary: on SmolLM2 the first-position KL stays ~4.5 nats against ~0.2
  elsewhere, 0.5 with `chat` (benchmarks/teacher_boundary.py, docs/teacher_boundary.json).

Either way the text ends WITHOUT trailing whitespace ("Answer:", rendered text is
right-stripped): a context tokenized alone and ending in a space leaves an orphan
whitespace token (SmolLM2's lone "Ġ", a sentencepiece "▁") before z's first token, a
boundary real text never produces, and the teacher's prediction there is an artifact.
"""

from __future__ import annotations

from typing import Any, Literal

from schemas.chat import chat_prompt_ids, text_ids

TEACHER_TEMPLATE = (
    "Background reference knowledge: {reference}\n"
    "Answer the question based on the reference knowledge: {question}\n"
    "Answer:"
)
"""The paper's teacher template; `{reference}` is y^, `{question}` is x; z follows."""

GUARDED_TEACHER_TEMPLATE = (
    "Background reference knowledge: {reference}\n"
    "Answer the question based on the reference knowledge: {question}\n"
    "After understanding the reference knowledge, answer in your own words, as if you had "
    "not been shown it: do not mention, quote or copy it.\n"
    "Answer:"
)
"""The paper's template plus an instruction not to talk about the reference (as OPSD's
teacher prompt asks for "your own approach", arXiv 2601.18734): a RAFT student otherwise
learns the teacher's pull toward "The reference knowledge is: ...". Measured on MedMCQA
(docs/replication.md, seed 0) it made the leak worse, 14 leaking responses against 1: an
arm under test (`raft_ema_guard`), not the default."""

TeacherFormat = Literal["chat", "plain"]
TEACHER_FORMATS: tuple[TeacherFormat, ...] = ("chat", "plain")


def teacher_context_text(question: str, reference: str, template: str = TEACHER_TEMPLATE) -> str:
    """The paper's text with y^ and x filled in, without trailing whitespace."""
    return template.format(reference=reference, question=question).rstrip()


def _bos_prefix(tokenizer: Any, text: str, ids: list[int]) -> list[int]:
    """[bos] when the tokenizer starts plain text with BOS on its own (Llama, Gemma), else []."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None or ids[:1] == [bos]:
        return []
    default = tokenizer(text, add_special_tokens=True)["input_ids"]
    return [int(bos)] if list(default[:1]) == [bos] else []


def teacher_context_ids(
    tokenizer: Any,
    question: str,
    reference: str,
    template: str = TEACHER_TEMPLATE,
    format: TeacherFormat = "chat",
) -> list[int]:
    """Token ids of the teacher's context before z (see the module docstring)."""
    if format not in TEACHER_FORMATS:
        raise ValueError(
            f"teacher context format {format!r}; allowed: {', '.join(TEACHER_FORMATS)}"
        )
    text = teacher_context_text(question, reference, template)
    if format == "chat" and getattr(tokenizer, "chat_template", None):
        return chat_prompt_ids(tokenizer, text)
    ids = text_ids(tokenizer, text)
    return _bos_prefix(tokenizer, text, ids) + ids
