"""Question/answer suites with checkable answers: domain accuracy and general retention.

Both read JSON Lines with `question`, `answer_type` (number | span | choice) and `check`
(the expected value); other fields (`answer`, `kind`, ...) are kept as metadata and
`kind` breaks the accuracy down. A suite may give a default `answer_type` for rows that
lack one (the `seen` suite reads training rows, which carry `check` only). Scoring is
`answers.check_answer`, one bool per item.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raft_distill.errors import DistillError
from raft_distill.evaluate.answers import ANSWER_TYPES, check_answer
from raft_distill.evaluate.jsonl import jsonl_rows


@dataclass(frozen=True)
class QAItem:
    question: str
    answer_type: str
    check: str
    kind: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def load_qa(
    path: str | Path, limit: int | None = None, answer_type: str | None = None
) -> list[QAItem]:
    """Read a QA suite; errors name the file, line and field. `answer_type`: the check of
    rows without an `answer_type` field (None: the field is required)."""
    items: list[QAItem] = []
    for where, row in jsonl_rows(path, limit, "QA"):
        if answer_type is not None:
            row.setdefault("answer_type", answer_type)
        for key in ("question", "answer_type", "check"):
            if key not in row:
                raise DistillError(f"{where}: missing field '{key}'")
        if row["answer_type"] not in ANSWER_TYPES:
            raise DistillError(
                f"{where}: answer_type '{row['answer_type']}' is not one of {ANSWER_TYPES}"
            )
        check = str(row["check"])
        if row["answer_type"] == "number":
            try:
                float(check.replace(",", ""))
            except ValueError:
                raise DistillError(f"{where}: check '{check}' is not a number") from None
        if row["answer_type"] == "choice" and check.strip().upper() not in ("A", "B", "C", "D"):
            raise DistillError(f"{where}: check '{check}' is not a letter A-D")
        meta = {k: v for k, v in row.items() if k not in ("question", "answer_type", "check")}
        items.append(
            QAItem(row["question"], row["answer_type"], check, str(row.get("kind", "")), meta)
        )
    return items


def score_qa(items: list[QAItem], responses: list[str]) -> tuple[list[bool], dict[str, Any]]:
    """Correctness per item, and accuracy overall, per answer_type and per kind."""
    correct = [
        check_answer(item.answer_type, response, item.check, item.question)
        for item, response in zip(items, responses, strict=True)
    ]
    groups: dict[str, dict[str, list[bool]]] = {"by_answer_type": defaultdict(list), "by_kind": defaultdict(list)}
    for item, ok in zip(items, correct, strict=True):
        groups["by_answer_type"][item.answer_type].append(ok)
        if item.kind:
            groups["by_kind"][item.kind].append(ok)
    metrics: dict[str, Any] = {"accuracy": sum(correct) / len(correct) if correct else 0.0}
    for name, group in groups.items():
        metrics[name] = {k: sum(v) / len(v) for k, v in sorted(group.items())}
    return correct, metrics
