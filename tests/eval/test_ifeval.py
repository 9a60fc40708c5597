"""IFEval loading and scoring with the checkers shipped by `if-verifiable`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raft_distill.errors import DistillError
from raft_distill.evaluate.ifeval import (
    IFEvalItem,
    check_response,
    instruction_registry,
    load_ifeval,
    score_ifeval,
)

MINI = Path(__file__).resolve().parents[2] / "data" / "eval" / "ifeval_mini.jsonl"

# The first line of the official IFEval input_data.jsonl (google-research), verbatim format:
# kwargs hold only the keys each instruction takes.
OFFICIAL_LINE = json.dumps(
    {
        "key": 1000,
        "prompt": "Write a 300+ word summary of the wikipedia page \"https://en.wikipedia.org/wiki/"
        "Raymond_III,_Count_of_Tripoli\". Do not use any commas and highlight at least 3 "
        "sections that has titles in markdown format, for example *highlighted section part 1*,"
        " *highlighted section part 2*, *highlighted section part 3*.",
        "instruction_id_list": [
            "punctuation:no_comma",
            "detectable_format:number_highlighted_sections",
            "length_constraints:number_words",
        ],
        "kwargs": [{}, {"num_highlights": 3}, {"relation": "at least", "num_words": 300}],
    }
)

# The Hugging Face google/IFEval copy: every kwargs dict holds every key, unused ones null.
HF_KWARGS = {
    "num_highlights": None,
    "relation": None,
    "num_words": None,
    "num_placeholders": None,
    "prompt_to_repeat": None,
    "num_bullets": None,
    "section_spliter": None,
    "num_sections": None,
    "capital_relation": None,
    "capital_frequency": None,
    "keywords": None,
    "num_paragraphs": None,
    "language": None,
    "let_relation": None,
    "letter": None,
    "let_frequency": None,
    "end_phrase": None,
    "forbidden_words": None,
    "keyword": None,
    "frequency": None,
    "num_sentences": None,
    "postscript_marker": None,
    "first_word": None,
    "nth_paragraph": None,
}

REPEAT = "Write one sentence about rain."
# instruction id -> (kwargs, a response that satisfies it, one that violates it)
CASES: dict[str, tuple[dict, str, str]] = {
    "keywords:existence": ({"keywords": ["waves", "salt"]}, "Salt and waves.", "Only waves."),
    "keywords:frequency": (
        {"keyword": "forest", "frequency": 3, "relation": "at least"},
        "A forest, a forest and a forest.",
        "A forest and a forest.",
    ),
    "keywords:forbidden_words": (
        {"forbidden_words": ["coffee", "alarm"]},
        "I wake up and stretch.",
        "I drink coffee first.",
    ),
    "keywords:letter_frequency": (
        {"letter": "z", "let_frequency": 2, "let_relation": "at least"},
        "A zippy zebra.",
        "A quick fox.",
    ),
    "language:response_language": (
        {"language": "fr"},
        "Il fait chaud et le soleil brille tous les jours en été, nous allons à la plage.",
        "It is hot and the sun shines every day in summer, we go to the beach.",
    ),
    "length_constraints:number_sentences": (
        {"num_sentences": 4, "relation": "less than"},
        "A library lends books. It is quiet.",
        "One. Two. Three. Four. Five.",
    ),
    "length_constraints:number_paragraphs": (
        {"num_paragraphs": 2},
        "Reading is fun.\n***\nIt also teaches.",
        "Reading is fun. It also teaches.",
    ),
    "length_constraints:number_words": (
        {"num_words": 10, "relation": "less than"},
        "A small green park.",
        "This park is large and green and full of happy people today.",
    ),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "dear"},
        "Dear neighbour, the party was loud.\n\nPlease keep it down.",
        "Hello neighbour, the party was loud.\n\nPlease keep it down.",
    ),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2},
        "Dear [name], I live at [address].",
        "Dear [name], I live here.",
    ),
    "detectable_content:postscript": (
        {"postscript_marker": "P.S."},
        "Thank you!\nP.S. See you soon.",
        "Thank you! See you soon.",
    ),
    "detectable_format:number_bullet_lists": (
        {"num_bullets": 3},
        "* Sleep.\n* Eat well.\n* Walk.",
        "* Sleep.\n* Eat well.",
    ),
    "detectable_format:constrained_response": ({}, "My answer is yes.", "Yes, definitely."),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 2},
        "*Boil water* then *add the tea*.",
        "Boil water then *add the tea*.",
    ),
    "detectable_format:multiple_sections": (
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nDig.\nSECTION 2\nPlant.",
        "Dig and plant.",
    ),
    "detectable_format:json_format": ({}, '```json\n{"planet": "Mars"}\n```', '{"planet": "Mars"} Hope it helps!'),
    "detectable_format:title": ({}, "<<Moon>>\nSilver light.", "Moon\nSilver light."),
    "combination:two_responses": ({}, "A cat.\n******\nA fish.", "A cat or a fish."),
    "combination:repeat_prompt": (
        {"prompt_to_repeat": REPEAT},
        REPEAT + " Rain falls softly on the roof.",
        "Rain falls softly on the roof.",
    ),
    "startend:end_checker": (
        {"end_phrase": "Any other questions?"},
        "I like hiking. Any other questions?",
        "Any other questions? I like hiking.",
    ),
    "change_case:capital_word_frequency": (
        {"capital_frequency": 2, "capital_relation": "at least"},
        "NEVER give up and ALWAYS try.",
        "Never give up and always try.",
    ),
    "change_case:english_capital": (
        {},
        "ONCE UPON A TIME A KEY WAS LOST IN THE GARDEN.",
        "Once upon a time a key was lost in the garden.",
    ),
    "change_case:english_lowercase": (
        {},
        "the sky is blue because air scatters blue light the most.",
        "The sky is blue because air scatters blue light the most.",
    ),
    "punctuation:no_comma": ({}, "Come to dinner on Friday.", "Come to dinner, on Friday."),
    "startend:quotation": ({}, '"A cat is a small animal."', "A cat is a small animal."),
}


def _item(instruction_id: str, kwargs: dict, prompt: str = "") -> IFEvalItem:
    if instruction_id == "combination:repeat_prompt":
        prompt = REPEAT
    return IFEvalItem(0, prompt or "a prompt", [instruction_id], [kwargs])


@pytest.fixture(scope="module")
def registry():
    return instruction_registry()


def test_mini_set_uses_only_tested_ids():
    items = load_ifeval(MINI)
    used = {i for item in items for i in item.instruction_id_list}
    assert len(items) >= 40
    assert used <= set(CASES), used - set(CASES)


@pytest.mark.parametrize("instruction_id", sorted(CASES))
def test_each_instruction_satisfied_and_violated(instruction_id, registry):
    kwargs, good, bad = CASES[instruction_id]
    if instruction_id == "length_constraints:number_sentences" or instruction_id.startswith(
        "change_case:capital_word"
    ):
        from raft_distill.evaluate.ifeval import ensure_punkt_tab

        ensure_punkt_tab()
    item = _item(instruction_id, kwargs)
    assert check_response(item, good, registry).strict == [True]
    assert check_response(item, bad, registry).strict == [False]


def test_json_with_trailing_text_fails_strict_and_loose(registry):
    item = _item("detectable_format:json_format", {})
    outcome = check_response(item, '{"planet": "Mars"}\nHope this helps!', registry)
    # loose drops the last line, so a trailing line of chat passes loose but not strict
    assert outcome.strict == [False] and outcome.loose == [True]
    outcome = check_response(item, '{"planet": "Mars"} Hope this helps!', registry)
    assert outcome.strict == [False] and outcome.loose == [False]


def test_loose_strips_markdown_and_first_line(registry):
    item = _item("startend:quotation", {})
    outcome = check_response(item, 'Sure, here it is:\n"A cat."', registry)
    assert outcome.strict == [False] and outcome.loose == [True]


def test_empty_response_fails_every_instruction(registry):
    item = IFEvalItem(1, "p", ["punctuation:no_comma", "detectable_format:title"], [{}, {}])
    outcome = check_response(item, "   ", registry)
    assert outcome.strict == [False, False] and outcome.loose == [False, False]


def test_loader_reads_official_and_hf_formats(tmp_path: Path, registry):
    hf_row = json.loads(OFFICIAL_LINE)
    hf_row["key"] = 1001
    hf_row["kwargs"] = [
        {**HF_KWARGS, **kw} for kw in hf_row["kwargs"]
    ]
    path = tmp_path / "input_data.jsonl"
    path.write_text(OFFICIAL_LINE + "\n" + json.dumps(hf_row) + "\n")
    items = load_ifeval(path)
    assert [i.key for i in items] == [1000, 1001]
    assert items[0].instruction_id_list[1] == "detectable_format:number_highlighted_sections"
    assert items[0].kwargs[2] == {"relation": "at least", "num_words": 300}
    response = "*Raymond* was *a count* of *Tripoli*. " + "word " * 300
    for item in items:
        outcome = check_response(item, response, registry)
        assert outcome.strict == [True, True, True]
    assert load_ifeval(path, limit=1)[0].key == 1000


def test_loader_errors_name_line_and_id(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text(OFFICIAL_LINE + "\n" + json.dumps(
        {"key": 2, "prompt": "p", "instruction_id_list": ["format:nonsense"], "kwargs": [{}]}
    ) + "\n")
    with pytest.raises(DistillError, match=r"bad.jsonl:2: unknown instruction id 'format:nonsense'"):
        load_ifeval(path)
    path.write_text(json.dumps({"key": 3, "prompt": "p", "instruction_id_list": [], "kwargs": [{}]}))
    with pytest.raises(DistillError, match="equal length"):
        load_ifeval(path)
    with pytest.raises(DistillError, match="does not exist"):
        load_ifeval(tmp_path / "missing.jsonl")


def test_score_ifeval_prompt_and_instruction_levels(registry):
    a = IFEvalItem(1, "p", ["punctuation:no_comma", "detectable_format:title"], [{}, {}])
    b = IFEvalItem(2, "p", ["punctuation:no_comma"], [{}])
    outcomes = [
        check_response(a, "<<T>>\nNo commas here.", registry),  # 2/2
        check_response(b, "One, two.", registry),  # 0/1
    ]
    scores = score_ifeval(outcomes)
    assert scores["prompt_level_strict"] == pytest.approx(0.5)
    assert scores["instruction_level_strict"] == pytest.approx(2 / 3)
    assert score_ifeval([])["prompt_level_loose"] == 0.0
