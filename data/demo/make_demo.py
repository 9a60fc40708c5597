"""Generate the demo periodic-table Q&A dataset (train/test JSON Lines + README + LICENSE).

Usage:
    python data/demo/make_demo.py            # writes into data/demo/
    python data/demo/make_demo.py --out DIR  # writes into DIR

Standard library only. The output is deterministic: rerunning produces identical bytes.
"""

from __future__ import annotations

import argparse
import bisect
import json
import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple


class Element(NamedTuple):
    number: int
    name: str
    symbol: str


# (atomic number, IUPAC name, symbol) for all 118 elements.
ELEMENTS: tuple[Element, ...] = tuple(
    Element(z, name, symbol)
    for z, name, symbol in [
        (1, "Hydrogen", "H"),
        (2, "Helium", "He"),
        (3, "Lithium", "Li"),
        (4, "Beryllium", "Be"),
        (5, "Boron", "B"),
        (6, "Carbon", "C"),
        (7, "Nitrogen", "N"),
        (8, "Oxygen", "O"),
        (9, "Fluorine", "F"),
        (10, "Neon", "Ne"),
        (11, "Sodium", "Na"),
        (12, "Magnesium", "Mg"),
        (13, "Aluminium", "Al"),
        (14, "Silicon", "Si"),
        (15, "Phosphorus", "P"),
        (16, "Sulfur", "S"),
        (17, "Chlorine", "Cl"),
        (18, "Argon", "Ar"),
        (19, "Potassium", "K"),
        (20, "Calcium", "Ca"),
        (21, "Scandium", "Sc"),
        (22, "Titanium", "Ti"),
        (23, "Vanadium", "V"),
        (24, "Chromium", "Cr"),
        (25, "Manganese", "Mn"),
        (26, "Iron", "Fe"),
        (27, "Cobalt", "Co"),
        (28, "Nickel", "Ni"),
        (29, "Copper", "Cu"),
        (30, "Zinc", "Zn"),
        (31, "Gallium", "Ga"),
        (32, "Germanium", "Ge"),
        (33, "Arsenic", "As"),
        (34, "Selenium", "Se"),
        (35, "Bromine", "Br"),
        (36, "Krypton", "Kr"),
        (37, "Rubidium", "Rb"),
        (38, "Strontium", "Sr"),
        (39, "Yttrium", "Y"),
        (40, "Zirconium", "Zr"),
        (41, "Niobium", "Nb"),
        (42, "Molybdenum", "Mo"),
        (43, "Technetium", "Tc"),
        (44, "Ruthenium", "Ru"),
        (45, "Rhodium", "Rh"),
        (46, "Palladium", "Pd"),
        (47, "Silver", "Ag"),
        (48, "Cadmium", "Cd"),
        (49, "Indium", "In"),
        (50, "Tin", "Sn"),
        (51, "Antimony", "Sb"),
        (52, "Tellurium", "Te"),
        (53, "Iodine", "I"),
        (54, "Xenon", "Xe"),
        (55, "Caesium", "Cs"),
        (56, "Barium", "Ba"),
        (57, "Lanthanum", "La"),
        (58, "Cerium", "Ce"),
        (59, "Praseodymium", "Pr"),
        (60, "Neodymium", "Nd"),
        (61, "Promethium", "Pm"),
        (62, "Samarium", "Sm"),
        (63, "Europium", "Eu"),
        (64, "Gadolinium", "Gd"),
        (65, "Terbium", "Tb"),
        (66, "Dysprosium", "Dy"),
        (67, "Holmium", "Ho"),
        (68, "Erbium", "Er"),
        (69, "Thulium", "Tm"),
        (70, "Ytterbium", "Yb"),
        (71, "Lutetium", "Lu"),
        (72, "Hafnium", "Hf"),
        (73, "Tantalum", "Ta"),
        (74, "Tungsten", "W"),
        (75, "Rhenium", "Re"),
        (76, "Osmium", "Os"),
        (77, "Iridium", "Ir"),
        (78, "Platinum", "Pt"),
        (79, "Gold", "Au"),
        (80, "Mercury", "Hg"),
        (81, "Thallium", "Tl"),
        (82, "Lead", "Pb"),
        (83, "Bismuth", "Bi"),
        (84, "Polonium", "Po"),
        (85, "Astatine", "At"),
        (86, "Radon", "Rn"),
        (87, "Francium", "Fr"),
        (88, "Radium", "Ra"),
        (89, "Actinium", "Ac"),
        (90, "Thorium", "Th"),
        (91, "Protactinium", "Pa"),
        (92, "Uranium", "U"),
        (93, "Neptunium", "Np"),
        (94, "Plutonium", "Pu"),
        (95, "Americium", "Am"),
        (96, "Curium", "Cm"),
        (97, "Berkelium", "Bk"),
        (98, "Californium", "Cf"),
        (99, "Einsteinium", "Es"),
        (100, "Fermium", "Fm"),
        (101, "Mendelevium", "Md"),
        (102, "Nobelium", "No"),
        (103, "Lawrencium", "Lr"),
        (104, "Rutherfordium", "Rf"),
        (105, "Dubnium", "Db"),
        (106, "Seaborgium", "Sg"),
        (107, "Bohrium", "Bh"),
        (108, "Hassium", "Hs"),
        (109, "Meitnerium", "Mt"),
        (110, "Darmstadtium", "Ds"),
        (111, "Roentgenium", "Rg"),
        (112, "Copernicium", "Cn"),
        (113, "Nihonium", "Nh"),
        (114, "Flerovium", "Fl"),
        (115, "Moscovium", "Mc"),
        (116, "Livermorium", "Lv"),
        (117, "Tennessine", "Ts"),
        (118, "Oganesson", "Og"),
    ]
)

# Last atomic number of each period (periods 1..7).
PERIOD_ENDS: tuple[int, ...] = (2, 10, 18, 36, 54, 86, 118)

# Elements 1..MC_MAX_Z also get a multiple-choice question.
MC_MAX_Z = 60
# Every TEST_EVERY-th element (by atomic number) is held out for the test split.
TEST_EVERY = 6
KINDS: tuple[str, ...] = (
    "symbol",
    "atomic_number",
    "name_from_number",
    "name_from_symbol",
    "period",
    "symbol_choice",
)
# Question kinds asked only about held-out elements, after the rows above (test.jsonl
# only; drawn with their own seeded generator so train.jsonl stays byte-identical).
TEST_ONLY_KINDS: tuple[str, ...] = (
    "number_from_symbol",
    "symbol_from_number",
    "protons",
    "electrons",
    "period_from_symbol",
    "next_element",
    "previous_element",
    "number_choice",
    "name_choice_from_symbol",
    "name_choice_from_number",
)
LETTERS = "ABCD"

Row = dict[str, str]


def period_of(z: int) -> int:
    """Period (1..7) of the element with atomic number z."""
    if not 1 <= z <= PERIOD_ENDS[-1]:
        raise ValueError(f"atomic number out of range: {z}")
    return bisect.bisect_left(PERIOD_ENDS, z) + 1


def is_test(z: int) -> bool:
    return z % TEST_EVERY == 0


def row(question: str, answer: str, answer_type: str, check: str, kind: str, el: Element) -> Row:
    if check not in answer:
        raise AssertionError(f"check value {check!r} missing from answer {answer!r}")
    return {
        "question": question,
        "answer": answer,
        "answer_type": answer_type,
        "check": check,
        "kind": kind,
        "element": el.symbol,
    }


def rows_for(el: Element, rng: random.Random) -> list[Row]:
    z, name, sym = el
    low, per = name.lower(), period_of(z)
    out = [
        row(
            f"What is the chemical symbol of {name}?",
            f"Symbol: {sym}. {name} is element {z}, in period {per}.",
            "span",
            sym,
            "symbol",
            el,
        ),
        row(
            f"What is the atomic number of {name}?",
            f"Atomic number {z} ({low}, {sym}).",
            "number",
            str(z),
            "atomic_number",
            el,
        ),
        row(
            f"Which element has atomic number {z}?",
            f"{name} ({sym}); Z = {z}.",
            "span",
            name,
            "name_from_number",
            el,
        ),
        row(
            f"Which element has the chemical symbol {sym}?",
            f"{sym}: {name}, atomic number {z}.",
            "span",
            name,
            "name_from_symbol",
            el,
        ),
        row(
            f"In which period of the periodic table is {name}?",
            f"Period {per}. {name} ({sym}, Z = {z}).",
            "number",
            str(per),
            "period",
            el,
        ),
    ]
    if z <= MC_MAX_Z:
        others = [e.symbol for e in ELEMENTS if e.number != z]
        options = rng.sample(others, 3)
        options.insert(rng.randrange(4), sym)
        letter = LETTERS[options.index(sym)]
        shown = " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
        out.append(
            row(
                f"Which of these is the chemical symbol of {name}? {shown}",
                f"{letter}. {sym} is the symbol of {low}.",
                "choice",
                letter,
                "symbol_choice",
                el,
            )
        )
    return out


def choice_row(
    question: str, options: list[str], correct: str, answer: str, kind: str, el: Element
) -> Row:
    """A multiple-choice row: `options` shown as (A)..(D); `answer` gets the letter first."""
    letter = LETTERS[options.index(correct)]
    shown = " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options))
    return row(f"{question} {shown}", f"{letter}. {answer}", "choice", letter, kind, el)


def shuffled_options(correct: str, pool: list[str], rng: random.Random) -> list[str]:
    options = rng.sample([p for p in pool if p != correct], 3)
    options.insert(rng.randrange(4), correct)
    return options


def test_only_rows(el: Element, rng: random.Random) -> list[Row]:
    """The held-out-only kinds (TEST_ONLY_KINDS, plus symbol_choice above MC_MAX_Z)."""
    z, name, sym = el
    low, per = name.lower(), period_of(z)
    nxt, prev = ELEMENTS[z], ELEMENTS[z - 2]  # z is 1-based; held-out z are 6..114
    names = [e.name for e in ELEMENTS]
    out = [
        row(
            f"What is the atomic number of the element with the symbol {sym}?",
            f"Atomic number {z} ({sym}, {low}).",
            "number",
            str(z),
            "number_from_symbol",
            el,
        ),
        row(
            f"What is the chemical symbol of element number {z}?",
            f"Symbol: {sym} ({name}, Z = {z}).",
            "span",
            sym,
            "symbol_from_number",
            el,
        ),
        row(
            f"How many protons are in the nucleus of an atom of {name}?",
            f"{z} protons ({name}, {sym}).",
            "number",
            str(z),
            "protons",
            el,
        ),
        row(
            f"How many electrons does a neutral atom of {name} have?",
            f"{z} electrons, equal to its atomic number.",
            "number",
            str(z),
            "electrons",
            el,
        ),
        row(
            f"In which period of the periodic table is the element with the symbol {sym}?",
            f"Period {per} ({sym} is {low}).",
            "number",
            str(per),
            "period_from_symbol",
            el,
        ),
        row(
            f"Which element comes right after {name} in the periodic table?",
            f"{nxt.name} ({nxt.symbol}), atomic number {nxt.number}.",
            "span",
            nxt.name,
            "next_element",
            el,
        ),
        row(
            f"Which element comes right before {name} in the periodic table?",
            f"{prev.name} ({prev.symbol}), atomic number {prev.number}.",
            "span",
            prev.name,
            "previous_element",
            el,
        ),
        choice_row(
            f"Which of these is the atomic number of {name}?",
            shuffled_options(str(z), [str(n) for n in range(1, 119)], rng),
            str(z),
            f"{name} has atomic number {z}.",
            "number_choice",
            el,
        ),
        choice_row(
            f"Which element has the chemical symbol {sym}?",
            shuffled_options(name, names, rng),
            name,
            f"{name} has that symbol.",
            "name_choice_from_symbol",
            el,
        ),
        choice_row(
            f"Which element has atomic number {z}?",
            shuffled_options(name, names, rng),
            name,
            f"Element {z} is {name}.",
            "name_choice_from_number",
            el,
        ),
    ]
    if z > MC_MAX_Z:
        out.append(
            choice_row(
                f"Which of these is the chemical symbol of {name}?",
                shuffled_options(sym, [e.symbol for e in ELEMENTS], rng),
                sym,
                f"{sym} is the symbol of {low}.",
                "symbol_choice",
                el,
            )
        )
    return out


def build() -> tuple[list[Row], list[Row]]:
    rng = random.Random(0)
    train: list[Row] = []
    test: list[Row] = []
    for el in ELEMENTS:  # fixed order: the seeded draws depend on it
        (test if is_test(el.number) else train).extend(rows_for(el, rng))
    extra = random.Random(1)  # its own stream: the rows above stay as they were
    for el in ELEMENTS:
        if is_test(el.number):
            test.extend(test_only_rows(el, extra))
    return train, test


def base_test_rows(test: list[Row]) -> int:
    """How many test rows come before the first held-out-only kind (the original set)."""
    return next((i for i, r in enumerate(test) if r["kind"] in TEST_ONLY_KINDS), len(test))


def write_jsonl(path: Path, rows: Iterable[Row]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def count_table(train: list[Row], test: list[Row]) -> str:
    tr, te = Counter(r["kind"] for r in train), Counter(r["kind"] for r in test)
    lines = ["| kind | answer_type | train | test |", "|---|---|---:|---:|"]
    types = {r["kind"]: r["answer_type"] for r in train + test}
    for k in KINDS + TEST_ONLY_KINDS:
        lines.append(f"| `{k}` | {types[k]} | {tr[k]} | {te[k]} |")
    lines.append(f"| **total** | | **{len(train)}** | **{len(test)}** |")
    return "\n".join(lines)


README = """\
# Demo dataset: periodic-table Q&A

A small, synthetic domain question/answer dataset about the chemical elements, for
demos and tests of this project. Every fact comes from the public-domain periodic
table (atomic number, IUPAC name and symbol of all 118 elements; names use IUPAC
spelling, e.g. *Aluminium*, *Caesium*). The period is derived from the atomic
number (periods end at Z = 2, 10, 18, 36, 54, 86, 118).

Gold answers use a terse reference-book style (e.g. `Atomic number 26 (iron, Fe).`)
that deliberately differs from a chat model's style; each contains its `check`
value verbatim.

## Regenerating

    python data/demo/make_demo.py            # rewrites the files in data/demo/
    python data/demo/make_demo.py --out DIR  # writes them into DIR instead

The script uses only the standard library and is deterministic: rerunning it
reproduces `train.jsonl`, `test.jsonl`, this README and `LICENSE` byte for byte.
Multiple-choice distractors are drawn with `random.Random(0)`.

## Files and fields

`train.jsonl` and `test.jsonl`: JSON Lines, UTF-8, one object per line:

| field | meaning |
|---|---|
| `question` | the question text |
| `answer` | gold answer (reference-book style) |
| `answer_type` | `span` (a name or symbol), `number` (an integer), or `choice` (a letter A-D) |
| `check` | the checkable value; always a substring of `answer` |
| `kind` | question template, see below |
| `element` | symbol of the element the row is about |

## Split

By element: every {every}th element by atomic number (Z = {every}, {every2}, ..., 114)
goes to `test.jsonl`, all others to `train.jsonl`. Each element's rows are all in one
split, so no test element is the subject of any train question (the `element` values
and the questions are disjoint across splits). Elements 1-{mc_max} also get a
multiple-choice question; its distractors may be any other element's symbol.

`test.jsonl` then asks {n_extra} more question kinds about the same held-out elements
(atomic number from the symbol, symbol from the number, protons, electrons, period from
the symbol, the next and the previous element, and three multiple-choice forms), plus
the symbol multiple-choice question for held-out elements above {mc_max}: {test_total}
checkable held-out items. Its first {n_base} rows are the train kinds only (the original
test set, unchanged); the rest follow. These extra rows are drawn with their own
`random.Random(1)`, so `train.jsonl` is unchanged by them. A next/previous element
question is answered by a neighbour, which is a train element; but no (element, kind)
pair of the test split is asked in train.

## Counts

{counts}

## License

CC0-1.0 (see `LICENSE`). Written for this project; the facts come from the
public-domain periodic table.
"""

LICENSE = """\
CC0 1.0 Universal (CC0-1.0)

The demo periodic-table Q&A dataset in this directory (train.jsonl, test.jsonl,
README.md and make_demo.py) was written for this project. To the extent possible
under law, the authors have waived all copyright and related or neighboring rights
to it and dedicate it to the public domain worldwide. The underlying facts (element
names, symbols, atomic numbers, periods) are from the public-domain periodic table.

Full legal text: https://creativecommons.org/publicdomain/zero/1.0/legalcode
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output directory (default: the script's directory)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    train, test = build()
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    readme = README.format(
        every=TEST_EVERY,
        every2=2 * TEST_EVERY,
        mc_max=MC_MAX_Z,
        counts=count_table(train, test),
        n_extra=len(TEST_ONLY_KINDS),
        test_total=len(test),
        n_base=base_test_rows(test),
    )
    (out / "README.md").write_text(readme, encoding="utf-8", newline="\n")
    (out / "LICENSE").write_text(LICENSE, encoding="utf-8", newline="\n")
    print(f"wrote {len(train)} train and {len(test)} test rows to {out}")


if __name__ == "__main__":
    main()
