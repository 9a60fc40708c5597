"""Record types shared by `raft_data` (writer) and `raft_distill` (reader).

One `RefinedRecord` per accepted-or-fallen-back input row, one `RejectedRecord` per input
row that could not be used; together they account for every input row.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Decision = Literal["accepted", "fallback", "rejected"]
FinalSource = Literal["gold", "rewrite", "fusion"]


def row_id(domain: str, question: str, answer: str) -> str:
    """Stable id from content: the same (domain, question, answer) always gets the same id."""
    digest = hashlib.sha256("\x1f".join((domain, question, answer)).encode("utf-8"))
    return digest.hexdigest()[:16]


class SourceRecord(BaseModel):
    """A validated input pair (x, y) with its provenance."""

    model_config = ConfigDict(extra="forbid")

    id: str
    question: str = Field(min_length=1)
    gold_answer: str = Field(min_length=1)
    domain: str
    metadata: str = "{}"  # JSON object text: keeps the Parquet schema fixed across datasets
    source_file: str
    source_row: int


class RefinedRecord(SourceRecord):
    """Stage-1 output for one input row: every score, the decision and its reason.

    `final_answer` is y^ in docs/METHOD.md: the fused answer for accepted rows, the gold answer
    for rows that fell back. Stage 2 trains on it.
    """

    rewrite_candidates: list[str] = Field(default_factory=list)
    rewrite: str | None = None
    similarity: float | None = None
    copy_score: float | None = None
    repetition_score: float | None = None
    missing_facts: list[str] = Field(default_factory=list)  # gold facts the kept rewrite leaves out
    contradictions: list[str] = Field(default_factory=list)  # its facts neither gold nor question holds
    rewrite_finish_reason: str | None = None  # "length": cut off at max_new_tokens
    answer_check: str | None = None  # the short answer the final answer had to state
    answer_check_kind: str | None = None  # number | choice | symbol | text
    answer_check_source: str | None = None  # column | derived; None: not checkable
    decision: Literal["accepted", "fallback"]
    reason: str
    fusion_candidates: list[str] = Field(default_factory=list)
    fusion_scores: list[float | None] = Field(default_factory=list)
    judge_errors: list[str] = Field(default_factory=list)
    fusion_rounds: int = 0
    fusion_score: float | None = None
    fused_similarity: float | None = None
    final_answer: str
    final_source: FinalSource
    teacher_context_tokens: int
    over_length: bool
    over_length_reason: str | None = None
    gold_nll: float | None = None
    final_nll: float | None = None


class RejectedRecord(BaseModel):
    """An input row that could not be used, with where and why."""

    model_config = ConfigDict(extra="forbid")

    source_file: str
    source_row: int
    field: str
    reason: str
    raw: str  # the row as JSON text, so nothing is lost
    decision: Literal["rejected"] = "rejected"
