"""WiSE-FT merging (raft_distill.merge): alpha 0 = the base, 1 = the fine-tuned model, 0.5
the midpoint of every tensor; the CLI writes a folder transformers loads; alpha chosen on
validation by min-max normalised criteria (ties -> larger alpha), the grid's end points
scored as the two models themselves; validation MC items disjoint from the report's.
Tiny random Llamas: seed 0 = base, seed 1 = "fine-tuned"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from raft_distill.errors import DistillError
from raft_distill.merge import REPORT_FILE, Validation, merge, pick_alpha, validation_mc_items


def _state(folder: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.fixture(scope="module")
def states(tiny_model_dir: Path, tiny_teacher_dir: Path) -> tuple[dict, dict]:
    return _state(tiny_model_dir), _state(tiny_teacher_dir)


def test_alpha_0_is_base_1_is_finetuned_half_is_midpoint(
    tmp_path: Path, tiny_model_dir: Path, tiny_teacher_dir: Path, states: tuple[dict, dict]
):
    base, ft = states
    for alpha, expected in ((0.0, base), (1.0, ft)):
        merge(str(tiny_model_dir), str(tiny_teacher_dir), tmp_path / f"a{alpha}", alpha=alpha)
        merged = _state(tmp_path / f"a{alpha}")
        assert merged.keys() == expected.keys()
        assert all(torch.equal(v, expected[k]) for k, v in merged.items())
    report = merge(str(tiny_model_dir), str(tiny_teacher_dir), tmp_path / "half", alpha=0.5)
    half = _state(tmp_path / "half")
    for name, value in half.items():
        torch.testing.assert_close(value, (base[name] + ft[name]) / 2, rtol=0, atol=1e-6)
        if not torch.equal(base[name], ft[name]):  # the norms start at 1 in both
            assert not torch.equal(value, base[name]) and not torch.equal(value, ft[name])
    assert sum(not torch.equal(base[k], ft[k]) for k in base) == len(base) - 5  # 2 x 2 + 1 norms
    assert report["alpha"] == 0.5 and report["chosen_by"] == "fixed" and report["grid"] == []
    delta = sum(float((ft[k] - base[k]).pow(2).sum()) for k in ft) ** 0.5
    assert report["delta_norm"] == pytest.approx(delta, rel=1e-5)


def test_cli_writes_a_loadable_folder(tmp_path: Path, tiny_model_dir: Path, tiny_teacher_dir: Path):
    from raft_distill.cli import main

    out = tmp_path / "merged"
    args = ["merge", "--base", str(tiny_model_dir), "--finetuned", str(tiny_teacher_dir),
            "--output", str(out), "--alpha", "0.3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / REPORT_FILE).read_text())
    assert json.loads(result.stdout)["alpha"] == report["alpha"] == 0.3
    assert report["source"] == str(tiny_teacher_dir) and report["method"] == "wise-ft"
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("Hello", return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 3

    again = CliRunner().invoke(main, args)  # a non-empty output folder is refused
    assert again.exit_code == 2 and "--overwrite" in again.output
    neither = CliRunner().invoke(main, [*args[:-2], "--overwrite"])
    assert neither.exit_code == 2 and "--alpha" in neither.output and "--val" in neither.output


def test_mismatched_models_name_the_tensor(tmp_path: Path, tiny_model_dir: Path, smollm2_dir: Path):
    from tests.tiny_llama import make_tiny_llama

    other = make_tiny_llama(tmp_path / "wide", smollm2_dir, seed=0, head_dim=32)
    with pytest.raises(DistillError, match="differ at 'model.layers.0.self_attn"):
        merge(str(tiny_model_dir), str(other), tmp_path / "out", alpha=0.5)


def _rows(nll: list[float], mc: list[float], grid: list[float] | None = None) -> list[dict]:
    grid = grid or [0.0, 0.3, 0.5, 0.7, 0.9, 1.0][: len(nll)]
    return [{"alpha": a, "domain_nll": x, "general_mc": y} for a, x, y in zip(grid, nll, mc, strict=True)]


def test_pick_alpha_normalises_and_breaks_ties_to_the_larger_alpha():
    # nll normalised [0, .5, 1], mc [1, .75, 0]: sums 1, 1.25, 1 -> 0.3
    assert pick_alpha(_rows([3.0, 2.5, 2.0], [0.6, 0.55, 0.4])) == 0.3
    # the scale of a criterion does not matter, only its rank within the grid
    assert pick_alpha(_rows([300.0, 250.0, 200.0], [0.6, 0.55, 0.4])) == 0.3
    # sums 1, 1, 1 (a tie) -> the largest alpha
    assert pick_alpha(_rows([3.0, 2.5, 2.0], [0.6, 0.5, 0.4])) == 0.5
    # a criterion constant over the grid counts nothing: NLL alone decides
    assert pick_alpha(_rows([3.0, 2.0, 2.5], [0.5, 0.5, 0.5])) == 0.3
    assert pick_alpha(_rows([2.0, 2.0], [0.5, 0.5])) == 0.3  # all equal -> larger alpha
    assert pick_alpha(_rows([2.0], [0.1], [0.7])) == 0.7
    with pytest.raises(DistillError, match="empty alpha grid"):
        pick_alpha([])


def test_validation_items_avoid_the_report_and_training_ids(tmp_path: Path):
    from raft_distill.evaluate.mc_tasks import load_suite, load_task

    report_tasks: dict[str, int | None] = {"arc_easy": 250, "boolq": 250}
    exclude = tmp_path / "train.jsonl"
    train_ids = [i.id for i in load_task("arc_easy")[:100]]
    exclude.write_text("".join(json.dumps({"id": i}) + "\n" for i in train_ids))
    v = Validation(domain="unused", mc_items=50, mc_seed=0, report_tasks=report_tasks,
                   report_seed=0, exclude=str(exclude))
    items = validation_mc_items(v)
    assert [i.task for i in items] == ["arc_easy"] * 50 + ["boolq"] * 50
    keys = {(i.task, i.id) for i in items}
    assert len(keys) == 100
    scored = load_suite(report_tasks, 0, set(train_ids))
    assert not keys & {(i.task, i.id) for i in scored}  # same seed, still disjoint
    assert not {i.id for i in items if i.task == "arc_easy"} & set(train_ids)
    assert validation_mc_items(v) == items  # deterministic
    # without a report selection: the tasks given, nothing avoided but the training ids
    free = validation_mc_items(Validation(domain="u", mc_items=3, mc_tasks=("piqa",)))
    assert len(free) == 3 and {i.task for i in free} == {"piqa"}
    # fewer left beside the report's than asked: what is left (arc_challenge: 299 - 250)
    few = validation_mc_items(Validation(domain="u", mc_items=60, report_tasks={"arc_challenge": 250}))
    assert len(few) == 49
    # none left: the error says what to lower
    with pytest.raises(DistillError, match="'arc_challenge' has no items left beside the report's 299"):
        validation_mc_items(Validation(domain="u", report_tasks={"arc_challenge": None}))


def _val_file(tmp_path: Path) -> Path:
    path = tmp_path / "val.jsonl"
    rows = [("What is 2 + 2?", "4. Two and two make four."),
            ("Name a primary colour.", "Red."),
            ("Which organ pumps blood?", "The heart pumps blood through the body.")]
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    return path


def test_choose_alpha_scores_the_grid_in_place(
    tmp_path: Path, tiny_model_dir: Path, tiny_teacher_dir: Path, states: tuple[dict, dict]
):
    from raft_distill.merge import read_domain, score

    v = Validation(domain=str(_val_file(tmp_path)), mc_items=3, mc_seed=1,
                   mc_tasks=("arc_easy", "piqa"), dtype="float32", token_budget=512)
    lines: list[str] = []
    report = merge(str(tiny_model_dir), str(tiny_teacher_dir), tmp_path / "m",
                   grid=[1.0, 0.0, 0.5], validation=v, log=lines.append)
    grid = report["grid"]
    assert [r["alpha"] for r in grid] == [0.0, 0.5, 1.0] and len(lines) == 3
    assert report["alpha"] == pick_alpha(grid) and report["chosen_by"] == "validation"
    assert report["validation"]["mc_items_by_task"] == {"arc_easy": 3, "piqa": 3}
    assert report["validation"]["domain_questions"] == 3
    assert report["settings"]["grid"] == [0.0, 0.5, 1.0]
    assert json.loads((tmp_path / "m" / REPORT_FILE).read_text()) == report
    # the grid's ends score as the two models loaded on their own: in-place weights are right
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    items = validation_mc_items(v)
    for folder, row in ((tiny_model_dir, grid[0]), (tiny_teacher_dir, grid[2])):
        lm = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        nll, mc = score(lm, tok, read_domain(v.domain), items, 512)
        assert (round(nll, 6), mc) == (row["domain_nll"], row["general_mc"])
    assert grid[0]["domain_nll"] != grid[2]["domain_nll"]
    # the folder holds the chosen alpha's weights in the fine-tuned dtype
    base, ft = states
    for name, value in _state(tmp_path / "m").items():
        torch.testing.assert_close(value, torch.lerp(base[name], ft[name], report["alpha"]))


def test_cli_chooses_alpha_avoiding_an_eval_configs_items(
    tmp_path: Path, tiny_model_dir: Path, tiny_teacher_dir: Path
):
    import yaml

    from raft_distill.cli import main

    ev = {"models": [{"name": "m", "path": "p"}],
          "suites": {"general_mc": {"tasks": {"arc_challenge": 290}, "seed": 0}}}
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(ev))
    args = ["merge", "--base", str(tiny_model_dir), "--finetuned", str(tiny_teacher_dir),
            "--output", str(tmp_path / "m"), "--val", str(_val_file(tmp_path)), "--grid", "0,1",
            "--mc-items", "20", "--eval-config", str(tmp_path / "eval.yaml")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m" / REPORT_FILE).read_text())
    assert [r["alpha"] for r in report["grid"]] == [0.0, 1.0]
    assert report["validation"]["report_tasks"] == {"arc_challenge": 290}
    assert report["validation"]["mc_items_by_task"] == {"arc_challenge": 9}  # 299 - 290
    assert report["validation"]["dtype"] == "bfloat16"
    (tmp_path / "all.yaml").write_text(yaml.safe_dump(
        {**ev, "suites": {"general_mc": {"tasks": {"arc_challenge": None}}}}))
    none = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "all.yaml"), "--overwrite"])
    assert none.exit_code == 2 and "'arc_challenge' has no items left" in none.output
    bad = CliRunner().invoke(main, [*args[:-2], "--grid", "0,2"])
    assert bad.exit_code == 2 and "alphas in [0, 1]" in bad.output
