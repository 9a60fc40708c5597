"""Fusion round logic with a scripted engine (the real-model path is in test_build_real.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raft_data.backends import Generation
from raft_data.cache import CallCache
from raft_data.config import FusionConfig, SamplingConfig
from raft_data.filter import CheckResult
from raft_data.fuse import fuse, parse_score
from schemas.manifest import StageTiming
from schemas.model_registry import ResolvedModel
from schemas.records import SourceRecord, row_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Score: 10", 1.0),
        ("score = 1", 0.0),
        ("**Score:** 5.5 because", 0.5),
        ("Score: 7/10", 2 / 3),
        ("4", 1 / 3),
        ("Score: 7/5", None),
        ("Score: 11", None),
        ("I think it is good", None),
        ("", None),
    ],
)
def test_parse_score(text: str, expected: float | None) -> None:
    got = parse_score(text, 1.0, 10.0)
    assert got == pytest.approx(expected) if expected is not None else got is None


class Scripted:
    """Replies by prompt content: fusions are numbered per call, judges read a table."""

    engine = "scripted"
    identity = "scripted"
    batch_size = 8

    def __init__(self, tokenizer: Any, name: str, replies: dict[str, list[str]]) -> None:
        self.tokenizer = tokenizer
        self.model = ResolvedModel(name, Path("."), name, "r")
        self.replies = replies
        self.calls = 0

    def generate(self, prompts: list[list[int]], sampling: SamplingConfig, seeds: list[int]) -> list[Generation]:
        out = []
        for p in prompts:
            text = self.tokenizer.decode(p)
            for needle, replies in self.replies.items():
                if needle in text:
                    out.append(Generation(replies.pop(0) if len(replies) > 1 else replies[0], 3))
                    break
            else:
                raise AssertionError(text)
        self.calls += len(prompts)
        return out

    def answer_nll(self, prompts: list[list[int]], answers: list[list[int]]) -> list[float]:
        raise NotImplementedError


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def rec(q: str) -> SourceRecord:
    return SourceRecord(id=row_id("d", q, "a"), question=q, gold_answer="a", domain="d", source_file="f", source_row=0)


def test_rounds_best_mean_early_stop_and_unparseable(tokenizer: Any, tmp_path: Path) -> None:
    fusion = Scripted(tokenizer, "fuser", {"Q-early": ["F-early-1"], "Q-late": ["F-late-1", "F-late-2"], "Q-none": ["F-none"]})
    judge_a = Scripted(tokenizer, "a", {"F-early-1": ["Score: 9"], "F-late-1": ["Score: 4"], "F-late-2": ["Score: 6"], "F-none": ["no idea"]})
    judge_b = Scripted(tokenizer, "b", {"F-early-1": ["Score: 8"], "F-late-1": ["Score: 5"], "F-late-2": ["garbage"], "F-none": ["?"]})
    records = [rec("Q-early"), rec("Q-late"), rec("Q-none")]
    timings = {"fuse": StageTiming(), "judge": StageTiming()}
    cfg = FusionConfig(rounds=2, stop_score=0.8)
    res = fuse(fusion, [judge_a, judge_b], CallCache(tmp_path / "c.sqlite"), records, ["r"] * 3, cfg, None, timings)
    early, late, none = res
    assert early.rounds == 1 and early.candidates == ["F-early-1"]
    assert early.best_score == pytest.approx((8 / 9 + 7 / 9) / 2)
    assert late.rounds == 2 and late.candidates == ["F-late-1", "F-late-2"]
    assert late.scores == pytest.approx([(3 / 9 + 4 / 9) / 2, 5 / 9])
    assert late.best == 1 and len(late.judge_errors) == 1 and "judge b" in late.judge_errors[0]
    assert none.best == 0 and none.best_score is None and len(none.judge_errors) == 4
    assert timings["fuse"].requests == 5 and timings["judge"].requests == 10


def test_checks_exclude_candidates(tokenizer: Any, tmp_path: Path) -> None:
    fusion = Scripted(tokenizer, "fuser", {"Q": ["good", "bad"]})
    judge = Scripted(tokenizer, "j", {"good": ["Score: 2"], "bad": ["Score: 10"]})

    def check(rows: list[SourceRecord], outs: list[Generation]) -> list[CheckResult]:
        return [
            CheckResult(1.0, 0.0, 0.0, passed=g.text == "good", reason="passed" if g.text == "good" else "low_similarity: x")
            for g in outs
        ]

    timings = {"fuse": StageTiming(), "judge": StageTiming()}
    (res,) = fuse(fusion, [judge], CallCache(tmp_path / "c.sqlite"), [rec("Q")], ["r"], FusionConfig(rounds=2), check, timings)
    assert res.candidates == ["good", "bad"] and res.best == 0  # "bad" scored higher but failed the checks


class SameEmbedding:
    """Every text embeds to the same vector: cosine 1.0, so only the fact checks decide."""

    def encode(self, sentences: list[str], **kwargs: Any) -> Any:
        import torch

        return torch.ones(len(sentences), 4) / 2.0


OS_GOLD = "Symbol: Os. Osmium is element 76, in period 6."
OS_Q = "What is the chemical symbol of Osmium?"


@pytest.mark.parametrize(
    "fusions, final, source",
    [
        # the judges prefer the wrong fusion; it contradicts gold (67), the copy of gold wins
        (["Osmium's symbol is Os; it is element 67.", OS_GOLD], OS_GOLD, "fusion"),
        # every fusion contradicts gold or drops the answer: the correct rewrite is kept
        (["Osmium's symbol is Os; it is element 67.", "Osmium is a dense metal."], "Osmium's chemical symbol is Os, element 76.", "rewrite"),
    ],
)
def test_fusion_never_replaces_a_correct_rewrite_with_a_wrong_one(
    tokenizer: Any, tmp_path: Path, fusions: list[str], final: str, source: str
) -> None:
    from raft_data.config import PipelineConfig
    from raft_data.refine import STAGES, Models, refine_shard

    record = SourceRecord(
        id=row_id("d", OS_Q, OS_GOLD), question=OS_Q, gold_answer=OS_GOLD, domain="d",
        metadata='{"check": "Os"}', source_file="f", source_row=0,
    )
    original = Scripted(tokenizer, "orig", {"reference answer as a": ["Osmium's chemical symbol is Os, element 76."]})
    fusion = Scripted(tokenizer, "fuser", {"Merge the two answers": list(fusions)})
    judge = Scripted(tokenizer, "j", {fusions[0]: ["Score: 10"], fusions[1]: ["Score: 3"]})
    cfg = PipelineConfig.model_validate(
        {
            "name": "t", "input": {"path": "x", "answer_check_field": "check"}, "output": {"dir": str(tmp_path)},
            "fusion": {"rounds": 2}, "measure_gap": False,
        }
    )
    models = Models(original, fusion, [judge], SameEmbedding())  # type: ignore[arg-type]
    timings = {s: StageTiming() for s in STAGES}
    (row,) = refine_shard([record], models, cfg, CallCache(tmp_path / "c.sqlite"), timings)
    assert (row.final_answer, row.final_source, row.decision) == (final, source, "accepted")
    assert row.answer_check == "Os" and row.answer_check_source == "column"
