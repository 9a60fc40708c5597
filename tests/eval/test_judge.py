"""The LLM-judge majority vote: verdict parsing, voting, metrics, and a real-model run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raft_distill.errors import DistillError
from raft_distill.evaluate.config import config_from_dict
from raft_distill.evaluate.judge import (
    JudgeItem,
    collect_votes,
    judge_metrics,
    majority,
    parse_verdict,
)
from raft_distill.evaluate.run import evaluate

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("CORRECT", True),
        ("Correct.", True),
        ("INCORRECT", False),
        ("incorrect - the symbol is Fe", False),
        ("The answer is not correct.", False),
        ("Yes, it matches.", True),
        ("No", False),
        ("Wrong: it says 7", False),
        ("", None),
        ("The reference says 26.", None),
        ("Nothing to grade", None),  # "Nothing" is not "no"
    ],
)
def test_parse_verdict(text: str, verdict: bool | None):
    assert parse_verdict(text) is verdict


@pytest.mark.parametrize(
    ("votes", "verdict"),
    [
        ([True, True, False], True),
        ([False, False, True], False),
        ([True, False], None),
        ([None, None, None], None),
        ([True, None, None], True),  # unparsable judges abstain
        ([False, None, True, False], False),
        ([], None),
    ],
)
def test_majority(votes: list[bool | None], verdict: bool | None):
    assert majority(votes) is verdict


def test_judge_metrics_counts_undecided_as_wrong():
    verdicts = [True, False, None, True]
    programmatic = [True, True, False, False]
    per_judge = [[True, True], [False, False], [None, None], [True, None]]
    metrics = judge_metrics(verdicts, programmatic, per_judge, ["a", "b"])
    assert metrics["judge_accuracy"] == pytest.approx(0.5)
    assert metrics["judge_undecided"] == pytest.approx(0.25)
    # agreement: T/T yes, F/T no, None(F)/F yes, T/F no
    assert metrics["judge_agreement"] == pytest.approx(0.5)
    assert metrics["judge_parsed_by_judge"] == {"0:a": 0.75, "1:b": 0.5}


class _Scripted:
    """A generator that answers from a fixed list (to test the plumbing, not a model)."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.prompts: list[str] = []
        self.closed = False

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        self.prompts = prompts
        return self.replies[: len(prompts)]

    def close(self) -> None:
        self.closed = True


def test_collect_votes_one_batched_call_per_judge():
    items = [JudgeItem("m", "domain", f"q{i}", f"ref{i}", f"resp{i}") for i in range(3)]
    gens = {"j1": _Scripted(["CORRECT", "INCORRECT", "?"]), "j2": _Scripted(["yes", "no", "no"])}
    votes, texts = collect_votes(
        ["j1", "j2"],
        items,
        gens.__getitem__,
        "{question}|{reference}|{response}",
        4,
        log=lambda _: None,
    )
    assert votes == [[True, True], [False, False], [None, False]]
    assert texts[2] == ["?", "no"]
    assert gens["j1"].prompts == ["q0|ref0|resp0", "q1|ref1|resp1", "q2|ref2|resp2"]
    assert all(g.closed for g in gens.values())


def test_judge_config_errors_name_the_key():
    base = {"models": [{"name": "m", "path": "smollm2-135m-instruct"}]}
    with pytest.raises(DistillError, match="judge.prompt_template"):
        config_from_dict({**base, "judge": {"models": ["x"], "prompt_template": "{question}"}})
    with pytest.raises(DistillError, match="judge.suites"):
        config_from_dict({**base, "judge": {"models": ["x"], "suites": ["ifeval"]}})
    with pytest.raises(DistillError, match="unknown key 'judge.votes'"):
        config_from_dict({**base, "judge": {"models": ["x"], "votes": 3}})


@pytest.mark.integration
def test_real_judges_vote_on_real_answers(tmp_path: Path):
    """SmolLM2-135M answers 4 domain questions; three judge runs of SmolLM2 grade them.

    A 135M judge is no good grader; this checks the real path end to end (verdicts parsed
    from real replies, votes written per response, metrics and summary column present).
    """
    out = tmp_path / "eval"
    cfg = config_from_dict(
        {
            "models": [{"name": "smollm2", "path": "smollm2-135m-instruct"}],
            "batch_size": 4,
            "suites": {
                "domain": {
                    "path": str(ROOT / "data/demo/test.jsonl"),
                    "limit": 4,
                    "max_new_tokens": 24,
                }
            },
            "judge": {"models": ["smollm2-135m-instruct"] * 3, "max_new_tokens": 6},
            "output_dir": str(out),
        }
    )
    results = evaluate(cfg, log=lambda _: None)
    metrics = results[0]["suites"]["domain"]["metrics"]
    for key in ("accuracy", "judge_accuracy", "judge_undecided", "judge_agreement"):
        assert 0.0 <= metrics[key] <= 1.0, key
    rows = [json.loads(line) for line in (out / "smollm2" / "domain_responses.jsonl").open()]
    source = [json.loads(line) for line in (ROOT / "data/demo/test.jsonl").open()][:4]
    assert [r["reference"] for r in rows] == [s["answer"] for s in source]
    for row in rows:
        assert len(row["judge_votes"]) == len(row["judge_replies"]) == 3
        # greedy judges with the same weights agree with each other
        assert len(set(row["judge_votes"])) == 1
        assert row["judge_correct"] == row["judge_votes"][0]
    assert "domain judge" in (out / "summary.md").read_text()
