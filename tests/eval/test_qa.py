"""QA suite loading and scoring; the shipped general set is well-formed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raft_distill.errors import DistillError
from raft_distill.evaluate.qa import QAItem, load_qa, score_qa
from raft_distill.evaluate.report import model_markdown, summary_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_suites_load():
    general = load_qa(ROOT / "data" / "eval" / "general_qa.jsonl")
    assert len(general) >= 60
    assert {i.answer_type for i in general} == {"number", "span", "choice"}
    assert len({i.question for i in general}) == len(general)
    domain = load_qa(ROOT / "data" / "demo" / "test.jsonl", limit=7)
    assert len(domain) == 7 and domain[0].meta["element"] == "C"


def test_gold_answers_pass_their_own_checks():
    """Each demo gold answer states its check value: the checkers must accept them."""
    rows = [json.loads(line) for line in (ROOT / "data" / "demo" / "test.jsonl").open()]
    items = load_qa(ROOT / "data" / "demo" / "test.jsonl")
    correct, metrics = score_qa(items, [r["answer"] for r in rows])
    wrong = [r["answer"] for r, ok in zip(rows, correct, strict=True) if not ok]
    assert metrics["accuracy"] == 1.0, wrong


def test_load_errors_name_line_and_field(tmp_path: Path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "q", "answer_type": "number", "check": "x"}\n')
    with pytest.raises(DistillError, match=r"qa.jsonl:1: check 'x' is not a number"):
        load_qa(path)
    path.write_text('{"question": "q", "answer_type": "essay", "check": "x"}\n')
    with pytest.raises(DistillError, match="answer_type 'essay'"):
        load_qa(path)
    path.write_text('\n{"question": "q", "check": "x"}\n')
    with pytest.raises(DistillError, match=r"qa.jsonl:2: missing field 'answer_type'"):
        load_qa(path)


def test_score_breakdown_and_markdown():
    items = [
        QAItem("What is 2 + 2?", "number", "4", "arithmetic"),
        QAItem("Capital of France?", "span", "Paris", "capital"),
        QAItem("Pick one (A) x (B) y", "choice", "B", "choice"),
    ]
    correct, metrics = score_qa(items, ["2 + 2 = 4", "Lyon", "(B)"])
    assert correct == [True, False, True]
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["by_answer_type"] == {"choice": 1.0, "number": 1.0, "span": 0.0}
    result = {
        "model": "m", "path": "p", "model_id": "id", "revision": "r", "engine": "transformers",
        "suites": {"general": {"items": 3, "seconds": 1.0, "metrics": metrics}},
    }
    assert "| general | accuracy | 66.7 | 3 |" in model_markdown(result)
    table = summary_markdown([result])
    assert "general acc" in table and "domain acc" not in table and "| m | 66.7 |" in table
