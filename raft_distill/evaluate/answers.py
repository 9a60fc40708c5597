"""Programmatic answer checkers for question/answer suites (domain and general retention).

Every checker is a pure function `(response, expected) -> bool`. The rules are strict on
purpose: a response that hedges between several answers is wrong, so that a model cannot
score by listing candidates. Each rule is spelled out in its docstring, because the rule
*is* the metric.

| answer_type | expected (`check`) | correct when |
|---|---|---|
| number | a number, e.g. "26" | the response's stated number equals it (`check_number`) |
| span   | a name or symbol, e.g. "Iron" | the normalised span occurs as whole words (`check_span`) |
| choice | a letter A-D | the response names exactly that one letter (`check_choice`) |
"""

from __future__ import annotations

import re
import unicodedata

ANSWER_TYPES = ("number", "span", "choice")

_NUMBER = re.compile(r"(?<![A-Za-z0-9.])-?\d+(?:,\d{3})*(?:\.\d+)?")
_ANSWER_MARKER = re.compile(r"\b(?:final\s+answer|answer)\b\s*(?:is\b|:|=)?\s*", re.IGNORECASE)
_LETTER = re.compile(r"(?<![A-Za-z0-9])([A-D])(?![A-Za-z0-9])")
_LONE_LETTER = re.compile(r"^\W*([A-Da-d])\W*$")
# "A" followed by a lowercase word is the article ("A metal"), unless the word is a verb
# that makes the letter the subject ("A is correct").
_ARTICLE_A = re.compile(r"A\s+(?!(?:is|was|would|should|seems|appears|must|can|could)\b)[a-z]")
_QA_PREFIX = re.compile(r"^\s*A:\s+(?=\S)")
_ARTICLES = {"a", "an", "the"}
SHORT_SPAN = 2


def extract_numbers(text: str) -> list[float]:
    """All numbers written with digits in `text`, in order of appearance.

    A number is an optional minus sign, digits with optional thousands commas
    ("1,000") and an optional decimal part ("3.14"). Digits glued to a letter
    ("H2O", "Fe26") are not numbers; a hyphen after a letter ("Carbon-12") is not a minus
    sign. A sentence-final full stop ("26.") is not a decimal point. Number words
    ("twenty-six") are not read.
    """
    return [float(m.group(0).replace(",", "")) for m in _NUMBER.finditer(text)]


def stated_number(response: str, question: str = "") -> float | None:
    """The number a response states as its answer, or None when it states none.

    Rule, in order:
    1. Candidates: the numbers after the first explicit answer marker ("answer:",
       "answer is", "final answer") when one is followed by a number, else all numbers
       of the response.
    2. Echo skip: a leading run of candidates whose values occur among the question's
       own numbers is skipped, so "7 + 5 = 12" states 12 for "What is 7 + 5?" (also when
       restated twice). If every candidate is such an echo, the last one is stated
       ("10 - 5 = 5" states 5).
    3. The first remaining candidate is the stated number. Later numbers never rescue a
       wrong first one: "Oxygen has 16 ... atomic number 8" states 16 ("the right number
       in the wrong place").
    """
    candidates = extract_numbers(response)
    marker = _ANSWER_MARKER.search(response)
    if marker is not None:
        after = extract_numbers(response[marker.end():])
        if after:
            candidates = after
    if not candidates:
        return None
    echoes = set(extract_numbers(question))
    for value in candidates:
        if value not in echoes:
            return value
    return candidates[-1]


def check_number(response: str, expected: str, question: str = "") -> bool:
    """True when the stated number (see `stated_number`) equals `expected` numerically.

    Equality is exact for integers and within a relative 1e-9 for decimals, so "26.0"
    is 26 and "1,000" is 1000. "Atomic number 26." is correct for 26; "It has 8 electrons
    in period 4" is wrong for 4.
    """
    target = float(expected.replace(",", ""))
    value = stated_number(response, question)
    if value is None:
        return False
    return abs(value - target) <= 1e-9 * max(1.0, abs(target))


def normalise_span(text: str, keep_case: bool = False) -> str:
    """Words of `text` joined by single spaces: accents and punctuation removed, the
    articles a/an/the dropped, lowercased unless `keep_case`."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    words = re.sub(r"[^\w\s]|_", " ", plain).split()
    words = [w for w in words if w.lower() not in _ARTICLES]
    joined = " ".join(words)
    return joined if keep_case else joined.lower()


def check_span(response: str, expected: str) -> bool:
    """True when the normalised `expected` occurs in the normalised response as whole words.

    Normalisation (`normalise_span`) ignores punctuation, accents and articles, and case
    for spans longer than two characters. Spans of at most two characters (element
    symbols such as "Fe", "No", "C") keep their case, because there case is meaning:
    "Co" is cobalt and "CO" carbon monoxide, and "no"/"I" are ordinary words. Whole words
    means "Fe" is not found in "Feather" and "Iron" not in "Ironic".
    """
    keep_case = len(normalise_span(expected, keep_case=True)) <= SHORT_SPAN
    needle = normalise_span(expected, keep_case=keep_case)
    if not needle:
        return False
    haystack = normalise_span(response, keep_case=keep_case)
    return f" {needle} " in f" {haystack} "


def mentioned_letters(response: str) -> set[str]:
    """The option letters A-D that a response names.

    A letter counts when it stands alone: "B", "(B)", "B.", "B)", "Answer: B", "option B".
    Uppercase only (a lone lowercase letter counts only when it is the whole response),
    "A" followed by a lowercase word is read as the article ("A metal"), except before
    a verb ("A is correct"), and a leading "A:" is the answer prefix of a Q/A layout
    ("A: C" names C only).
    """
    lone = _LONE_LETTER.match(response)
    if lone is not None:
        return {lone.group(1).upper()}
    response = _QA_PREFIX.sub("", response, count=1)
    letters = set()
    for m in _LETTER.finditer(response):
        if m.group(1) == "A" and _ARTICLE_A.match(response, m.start()):
            continue
        letters.add(m.group(1))
    return letters


def check_choice(response: str, expected: str) -> bool:
    """True when the response names exactly one option letter and it is `expected`.

    A response naming several letters ("B or C", "The answer is B, not C") is wrong, as
    is one naming none.
    """
    return mentioned_letters(response) == {expected.strip().upper()}


def check_answer(answer_type: str, response: str, expected: str, question: str = "") -> bool:
    """Dispatch to the checker of `answer_type` (one of ANSWER_TYPES); `question` is used
    only by `check_number` (echo skip)."""
    if answer_type == "number":
        return check_number(response, expected, question)
    if answer_type == "span":
        return check_span(response, expected)
    if answer_type == "choice":
        return check_choice(response, expected)
    raise ValueError(f"unknown answer_type '{answer_type}'; expected one of {ANSWER_TYPES}")
