"""Answer checkers on known and adversarial cases (number, span, choice)."""

from __future__ import annotations

import pytest

from raft_distill.evaluate.answers import (
    check_answer,
    check_choice,
    check_number,
    check_span,
    extract_numbers,
    mentioned_letters,
    normalise_span,
    stated_number,
)


@pytest.mark.parametrize(
    "text, numbers",
    [
        ("Atomic number 26.", [26.0]),
        ("1,000 grams and 3.5 kg", [1000.0, 3.5]),
        ("H2O and Fe26 are not numbers", []),
        ("Carbon-12 is an isotope", [12.0]),
        ("It dropped to -4 degrees", [-4.0]),
        ("no digits here, twenty-six", []),
    ],
)
def test_extract_numbers(text, numbers):
    assert extract_numbers(text) == numbers


@pytest.mark.parametrize(
    "response, expected, ok",
    [
        ("Atomic number 26", "26", True),
        ("26", "26", True),
        ("The atomic number of iron is 26.", "26", True),
        ("26.0", "26", True),
        ("One kilogram is 1,000 grams.", "1000", True),
        # the right number in the wrong place: the first stated number is wrong
        ("Oxygen has 16 as its mass number; its atomic number is 8.", "8", False),
        ("It could be 26, 8 or 56.", "8", False),
        ("Carbon (Z = 6) is in period 2.", "2", False),
        ("I do not know.", "26", False),
        ("twenty-six", "26", False),
        # an explicit answer marker names the stated number
        ("Counting the shells gives 3 layers... Answer: 4", "4", True),
        ("The final answer is 12, not 13.", "12", True),
    ],
)
def test_check_number(response, expected, ok):
    assert check_number(response, expected) is ok


@pytest.mark.parametrize(
    "question, response, expected, ok",
    [
        ("What is 7 + 5?", "7 + 5 = 12", "12", True),
        ("What is 7 + 5?", "7 + 5 = 13, so 12", "12", False),
        ("What is 10 - 5?", "10 - 5 = 5", "5", True),
        ("What is 3 x 1?", "3", "3", True),
        ("What is 3 x 1?", "3 x 1 is 1", "3", False),
        ("What is 7 + 5?", "To add 7 and 5: 7 + 5 = 12.", "12", True),
        ("What is 7 + 5?", "7 + 5 = 12, or 7 + 5 = 13", "13", False),
        ("How many minutes are in 2 hours?", "2 hours have 120 minutes.", "120", True),
    ],
)
def test_check_number_skips_restated_question_numbers(question, response, expected, ok):
    assert check_number(response, expected, question) is ok


def test_stated_number_none_without_digits():
    assert stated_number("no idea") is None


@pytest.mark.parametrize(
    "response, expected, ok",
    [
        ("The symbol of iron is Fe.", "Fe", True),
        ("Feather", "Fe", False),
        ("FE", "Fe", False),  # two-letter symbols keep their case
        ("Its symbol is C.", "C", True),
        ("Carbon", "C", False),
        ("No, I am not sure.", "No", True),  # case-exact, so this is the word "No"...
        ("no, I am not sure.", "No", False),  # ...and lowercase "no" is not Nobelium
        ("It is CARBON.", "Carbon", True),
        ("The element is iron!", "Iron", True),
        ("Ironic, isn't it?", "Iron", False),
        ("The Pacific Ocean.", "the Pacific", True),
        ("Zürich", "Zurich", True),
        ("carbon-dioxide", "carbon dioxide", True),
        ("", "Paris", False),
    ],
)
def test_check_span(response, expected, ok):
    assert check_span(response, expected) is ok


def test_normalise_span():
    assert normalise_span("  The  Pacific, Ocean! ") == "pacific ocean"
    assert normalise_span("An apple", keep_case=True) == "apple"


@pytest.mark.parametrize(
    "response, expected, ok",
    [
        ("B", "B", True),
        ("(B)", "B", True),
        ("B.", "B", True),
        ("b", "B", True),
        ("Answer: B", "B", True),
        ("The answer is (B) Si.", "B", True),
        ("B) Dolphin", "B", True),
        ("A is correct.", "A", True),
        ("A dolphin is a mammal, so the answer is B.", "B", True),  # article "A"
        ("A: C  The chemical symbol for carbon is C.", "C", True),
        ("A: Rembrandt painted it.", "D", False),
        ("B or C", "B", False),
        ("The answer is B, not C.", "B", False),
        ("(A) (B) (C) (D)", "B", False),
        ("C", "B", False),
        ("Dolphins are mammals.", "B", False),
        ("Because dolphins breathe air.", "B", False),
    ],
)
def test_check_choice(response, expected, ok):
    assert check_choice(response, expected) is ok


def test_mentioned_letters():
    assert mentioned_letters("(C) C is the symbol of carbon") == {"C"}
    assert mentioned_letters("A metal") == set()


def test_check_answer_dispatch_and_unknown_type():
    assert check_answer("number", "Period 4", "4")
    assert check_answer("span", "It is Iron", "Iron")
    assert check_answer("choice", "(D)", "D")
    with pytest.raises(ValueError, match="unknown answer_type"):
        check_answer("essay", "x", "y")
