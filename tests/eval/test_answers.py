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
    named_options,
    normalise_span,
    parse_options,
    question_numbers,
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


@pytest.mark.parametrize(
    "question, response, expected, ok",
    [
        # number words of the question are echoes like its digits
        ("How many grams are in one kilogram?", "1 kilogram = 1000 grams", "1000", True),
        ("How many grams are in one kilogram?", "1 kilogram = 1000 grams", "1", False),
        ("How many minutes are in one hour?", "1 hour has 60 minutes.", "60", True),
        ("How many centimetres are in one metre?", "1 m = 100 cm", "100", True),
        ("How many eggs are in two dozen?", "2 dozen = 24 eggs", "24", True),
        ("What is twenty-five plus one?", "25 + 1 = 26", "26", True),
        # an answer equal to a number of the question is still stated
        ("How many ones make one?", "1", "1", True),
        ("What is eleven minus zero?", "11 - 0 = 11", "11", True),
        # a number word not in the question is no echo
        ("How many seconds are in one minute?", "60 seconds, so 2 minutes is 120", "60", True),
        ("How many seconds are in one minute?", "2 minutes = 120 s; 1 minute = 60 s", "60", False),
    ],
)
def test_check_number_skips_question_number_words(question, response, expected, ok):
    assert check_number(response, expected, question) is ok


def test_question_numbers_reads_digits_and_words():
    assert question_numbers("How many grams are in one kilogram?") == {1.0}
    assert question_numbers("Two hundred and 7, a dozen, twenty-five") == {
        2.0, 100.0, 7.0, 12.0, 20.0, 5.0, 25.0
    }
    assert question_numbers("Someone, anyone: a stone") == set()  # whole words only


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


@pytest.mark.parametrize(
    "response",
    [
        # hedged: the span is one of several alternatives
        "It could be Paris, London, Berlin or Rome.",
        "Either Paris or Lyon.",
        "Paris or Lyon",
        "The capital is Lyon or Paris.",
        "London, Paris, or Rome",
        "Perhaps Lyon, Paris, Marseille.",
        "It might be Paris, Lyon, Nice.",
        "It may be Lyon, Paris.",
        # negated
        "The capital of France is not Paris; it is Lyon.",
        "It isn't Paris.",
        "It isn\u2019t Paris.",
        "The capital is never Paris.",
        "Paris is wrong; the answer is Lyon.",
        "Paris is incorrect.",
        "Paris is not correct.",
        # one hedged or negated occurrence is enough
        "Paris. Or rather, not Paris but Lyon.",
    ],
)
def test_check_span_rejects_hedged_and_negated_spans(response):
    assert check_span(response, "Paris") is False


@pytest.mark.parametrize(
    "response, expected",
    [
        ("The capital of France is Paris.", "Paris"),
        ("Paris, the capital of France, is on the Seine.", "Paris"),
        ("Paris is the capital and largest city of France.", "Paris"),
        ("The capital of France is Paris, France.", "Paris"),
        ("It could be Paris.", "Paris"),  # one candidate, however tentative
        ("As you may be aware, Paris is the capital.", "Paris"),
        ("Perhaps surprisingly, Canberra is the capital of Australia.", "Canberra"),
        # the negation or alternative belongs to another word
        ("The capital of France is not Lyon; it is Paris.", "Paris"),
        ("Paris, not Lyon, is the capital.", "Paris"),
        ("It is not Lyon but Paris.", "Paris"),
        ("Not Lyon or Marseille: Paris.", "Paris"),
        ("Paris is not only the capital but also the largest city.", "Paris"),
        ("Mount Everest, also known as Sagarmatha or Chomolungma.", "Everest"),
        ("Plants absorb carbon dioxide, not oxygen.", "carbon dioxide"),
        ("The Pacific Ocean is larger than the Atlantic and Indian oceans.", "Pacific"),
        ("Romeo and Juliet was written by William Shakespeare.", "Shakespeare"),
    ],
)
def test_check_span_keeps_plain_answers(response, expected):
    assert check_span(response, expected) is True


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


PORTUGAL = "Which of these is the capital of Portugal? (A) Porto (B) Madrid (C) Lisbon (D) Seville"
MONA_LISA = "Who painted the Mona Lisa? (A) Michelangelo (B) Raphael (C) Rembrandt (D) Leonardo da Vinci"
MEDMCQA = "Vitamin D toxicity is treated with\nA. Chloroquine\nB. Hydroxychloroquine\nC. Dexamethasone\nD. Ketoconazole"


@pytest.mark.parametrize(
    "question, response, expected, ok",
    [
        # an option's text, without its letter, chooses that option
        (PORTUGAL, "The capital of Portugal is Lisbon.", "C", True),
        (PORTUGAL, "lisbon", "C", True),
        (PORTUGAL, "The capital of Portugal is Lisbon.", "A", False),
        (MONA_LISA, "Leonardo da Vinci painted it.", "D", True),
        (MONA_LISA, "A: Rembrandt painted it.", "D", False),
        (MEDMCQA, "Dexamethasone is the treatment.", "C", True),
        (MEDMCQA, "Hydroxychloroquine", "B", True),  # "chloroquine" inside it is not A
        (MEDMCQA, "Chloroquine", "A", True),
        # the letter and the same option's text agree
        (PORTUGAL, "C) Lisbon", "C", True),
        (MEDMCQA, "C. Dexamethasone", "C", True),
        # several options, or a letter and another option's text: wrong
        (PORTUGAL, "Lisbon or Porto.", "C", False),
        (PORTUGAL, "It is Lisbon, not Porto.", "C", False),
        (PORTUGAL, "C. Porto", "C", False),
        (PORTUGAL, "(A) Porto (B) Madrid (C) Lisbon (D) Seville", "C", False),
        # no option named at all
        (PORTUGAL, "The capital is a port city.", "C", False),
        (PORTUGAL, "Lisboa", "C", False),
    ],
)
def test_check_choice_by_option_text(question, response, expected, ok):
    assert check_choice(response, expected, question) is ok
    assert check_answer("choice", response, expected, question) is ok


def test_parse_options_inline_and_lines():
    assert parse_options(PORTUGAL) == {"A": "Porto", "B": "Madrid", "C": "Lisbon", "D": "Seville"}
    assert parse_options(MEDMCQA)["B"] == "Hydroxychloroquine"
    assert parse_options("What is 7 + 5?") == {}
    assert named_options("Lisbon, not Madrid", parse_options(PORTUGAL)) == {"B", "C"}


def test_mentioned_letters():
    assert mentioned_letters("(C) C is the symbol of carbon") == {"C"}
    assert mentioned_letters("A metal") == set()


def test_check_answer_dispatch_and_unknown_type():
    assert check_answer("number", "Period 4", "4")
    assert check_answer("span", "It is Iron", "Iron")
    assert check_answer("choice", "(D)", "D")
    with pytest.raises(ValueError, match="unknown answer_type"):
        check_answer("essay", "x", "y")
