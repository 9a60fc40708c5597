"""Checks for the demo periodic-table Q&A dataset in data/demo/ (no network, fast)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

DEMO_DIR = Path(__file__).resolve().parents[2] / "data" / "demo"
SCRIPT = DEMO_DIR / "make_demo.py"
GENERATED = ("train.jsonl", "test.jsonl", "README.md", "LICENSE")
KEYS = {"question", "answer", "answer_type", "check", "kind", "element"}


def _load_rows(name: str) -> list[dict[str, str]]:
    with (DEMO_DIR / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def make_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_demo", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train() -> list[dict[str, str]]:
    return _load_rows("train.jsonl")


@pytest.fixture(scope="module")
def held_out() -> list[dict[str, str]]:
    return _load_rows("test.jsonl")


def test_row_counts_and_fields(train: list[dict[str, str]], held_out: list[dict[str, str]]) -> None:
    assert len(train) == 545
    assert len(held_out) >= 300
    for r in train + held_out:
        assert set(r) == KEYS
        assert r["answer_type"] in {"span", "number", "choice"}
        assert all(isinstance(v, str) and v for v in r.values())


def test_splits_are_disjoint(train: list[dict[str, str]], held_out: list[dict[str, str]]) -> None:
    assert not {r["question"] for r in train} & {r["question"] for r in held_out}
    assert not {r["element"] for r in train} & {r["element"] for r in held_out}


def test_answers_contain_check(train: list[dict[str, str]], held_out: list[dict[str, str]]) -> None:
    for r in train + held_out:
        assert r["check"] in r["answer"], r


def test_choice_rows_are_consistent(
    make_demo: ModuleType, train: list[dict[str, str]], held_out: list[dict[str, str]]
) -> None:
    by_symbol = {e.symbol: e for e in make_demo.ELEMENTS}
    for r in train + held_out:
        if r["answer_type"] != "choice":
            continue
        el = by_symbol[r["element"]]
        right = {
            "symbol_choice": el.symbol,
            "number_choice": str(el.number),
            "name_choice_from_symbol": el.name,
            "name_choice_from_number": el.name,
        }[r["kind"]]
        assert r["check"] in "ABCD"
        options = re.findall(r"\(([ABCD])\) (\S+)", r["question"])
        assert [letter for letter, _ in options] == list("ABCD"), r
        assert dict(options)[r["check"]] == right, r
        assert sum(text == right for _, text in options) == 1, r


def test_held_out_only_kinds(
    make_demo: ModuleType, train: list[dict[str, str]], held_out: list[dict[str, str]]
) -> None:
    """New kinds only in test, after the original rows; no (element, kind) in both splits."""
    extra = set(make_demo.TEST_ONLY_KINDS)
    assert not extra & {r["kind"] for r in train}
    base = make_demo.base_test_rows(held_out)
    assert base == 105
    assert {r["kind"] for r in held_out[:base]} == set(make_demo.KINDS)
    assert extra <= {r["kind"] for r in held_out[base:]}
    assert not {(r["element"], r["kind"]) for r in train} & {
        (r["element"], r["kind"]) for r in held_out
    }
    facts = {(r["kind"], r["element"]): r["check"] for r in held_out}
    assert facts[("next_element", "C")] == "Nitrogen"
    assert facts[("previous_element", "Fl")] == "Nihonium"
    assert facts[("period_from_symbol", "Xe")] == "5"
    assert facts[("protons", "Cr")] == "24"


def test_element_table(make_demo: ModuleType) -> None:
    elements = make_demo.ELEMENTS
    assert [e.number for e in elements] == list(range(1, 119))
    assert len({e.symbol for e in elements}) == 118
    assert len({e.name for e in elements}) == 118


def test_spot_facts(
    make_demo: ModuleType, train: list[dict[str, str]], held_out: list[dict[str, str]]
) -> None:
    by_symbol = {e.symbol: e for e in make_demo.ELEMENTS}
    assert by_symbol["Fe"].number == 26 and by_symbol["Fe"].name == "Iron"
    assert by_symbol["Au"].number == 79 and by_symbol["Au"].name == "Gold"
    assert by_symbol["Og"].number == 118 and by_symbol["Og"].name == "Oganesson"
    assert by_symbol["Rf"].number == 104
    assert make_demo.period_of(by_symbol["Ca"].number) == 4
    assert [
        make_demo.period_of(z) for z in (1, 2, 3, 10, 11, 18, 19, 36, 37, 54, 55, 86, 87, 118)
    ] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]

    checks = {(r["kind"], r["element"]): r["check"] for r in train + held_out}
    assert checks[("atomic_number", "Fe")] == "26"
    assert checks[("symbol", "Au")] == "Au"
    assert checks[("name_from_symbol", "Og")] == "Oganesson"
    assert checks[("period", "Ca")] == "4"


def test_script_regenerates_identical_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for name in GENERATED:
        assert (tmp_path / name).read_bytes() == (DEMO_DIR / name).read_bytes(), name
