"""Programmatic answer checkers for question/answer suites (domain and general retention).

Every checker is a pure function `(response, expected[, question]) -> bool`. The rules are strict on
purpose: a response that hedges between several answers is wrong, so that a model cannot
score by listing candidates. Each rule is spelled out in its docstring, because the rule
*is* the metric.

| answer_type | expected (`check`) | correct when |
|---|---|---|
| number | a number, e.g. "26" | the response's stated number equals it (`check_number`) |
| span   | a name or symbol, e.g. "Iron" | the normalised span occurs as whole words, never hedged or negated (`check_span`) |
| choice | a letter A-D | the response chooses exactly that one option, by letter or by its text (`check_choice`) |
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

_UNITS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    " fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS: dict[str, float] = {
    **{word: float(i) for i, word in enumerate(_UNITS)},
    **{word: float(20 + 10 * i) for i, word in enumerate(_TENS)},
    "hundred": 100.0, "thousand": 1e3, "million": 1e6, "billion": 1e9, "dozen": 12.0,
}
_TENS_UNIT = re.compile(rf"\b({'|'.join(_TENS)})[- ]({'|'.join(_UNITS[1:10])})\b")

_WORD = re.compile(r"[^\W_]+")  # the words of `normalise_span`: letters and digits
_ITEM = r"[^\W_]+(?:[ '-][^\W_]+){0,2}"  # an item of a list: one to three words
_ARTICLE = r"(?:(?:a|an|the)\s+)?"
# Hedges: the span is one alternative among several.
_OR_BEFORE = re.compile(rf"\b(?:or|either)\s+{_ARTICLE}$", re.IGNORECASE)  # "Lyon or X"
_OR_AFTER = re.compile(rf"^(?:\s*,\s*{_ITEM})*\s*,?\s+or\b", re.IGNORECASE)  # "X, Y or Z"
_MAYBE_BEFORE = re.compile(  # "could be Y, X", "perhaps X, ..."
    rf"\b(?:(?:could|might|may)\s+be|possibly|perhaps|maybe)\s+(?P<items>(?:{_ITEM}\s*,\s*)*)"
    rf"{_ARTICLE}$",
    re.IGNORECASE,
)
_ITEM_END = re.compile(r"^\s*(?:$|[,.;:!?]|(?:or|and)\b)", re.IGNORECASE)  # "X." "X, " "X and"
_LIST_AFTER = re.compile(rf"^\s*,\s*{_ITEM}\s*(?:,|$|[.;:!?]|\s(?:or|and)\b)", re.IGNORECASE)
# Negations: the span is denied.
_NOT_BEFORE = re.compile(rf"(?:\bnot|\bnever|n't)\s+{_ARTICLE}$", re.IGNORECASE)
_WRONG_AFTER = re.compile(
    r"^['\")\]]?\s+(?:(?:is|was|would\s+be)\s+(?:wrong|incorrect|false|not\s+(?:correct|right))"
    r"|(?:isn't|wasn't)\s+(?:correct|right))\b",
    re.IGNORECASE,
)
_INLINE_OPTION = re.compile(r"\(([A-D])\)\s*(.*?)\s*(?=\([A-D]\)|$)", re.DOTALL)
_LINE_OPTION = re.compile(r"^\s*([A-D])[.)]\s+(.+?)\s*$", re.MULTILINE)


def extract_numbers(text: str) -> list[float]:
    """All numbers written with digits in `text`, in order of appearance.

    A number is an optional minus sign, digits with optional thousands commas
    ("1,000") and an optional decimal part ("3.14"). Digits glued to a letter
    ("H2O", "Fe26") are not numbers; a hyphen after a letter ("Carbon-12") is not a minus
    sign. A sentence-final full stop ("26.") is not a decimal point. Number words
    ("twenty-six") are not read.
    """
    return [float(m.group(0).replace(",", "")) for m in _NUMBER.finditer(text)]


def question_numbers(question: str) -> set[float]:
    """The numbers a question states, in digits or in words: the values a response may echo.

    Words matter because questions spell small numbers out ("How many grams are in one
    kilogram?") while answers restate them in digits ("1 kilogram = 1000 grams"). Each
    number word of `NUMBER_WORDS` (zero-nineteen, the tens, hundred, thousand, million,
    billion, dozen) counts on its own, as a whole word, and a tens-units pair also as a
    whole: "two hundred" gives 2 and 100, "twenty-five" gives 20, 5 and 25.
    """
    lower = question.lower()
    values = set(extract_numbers(question))
    values.update(NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", lower) if w in NUMBER_WORDS)
    values.update(NUMBER_WORDS[t] + NUMBER_WORDS[u] for t, u in _TENS_UNIT.findall(lower))
    return values


def stated_number(response: str, question: str = "") -> float | None:
    """The number a response states as its answer, or None when it states none.

    Rule, in order:
    1. Candidates: the numbers after the first explicit answer marker ("answer:",
       "answer is", "final answer") when one is followed by a number, else all numbers
       of the response.
    2. Echo skip: a leading run of candidates whose values occur among the question's
       own numbers, in digits or words (`question_numbers`), is skipped, so "7 + 5 = 12"
       states 12 for "What is 7 + 5?" (also when restated twice) and "1 kilogram = 1000
       grams" states 1000 for "How many grams are in one kilogram?". If every candidate is
       such an echo, the last one is stated ("10 - 5 = 5" states 5).
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
    echoes = question_numbers(question)
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


def _plain(text: str) -> str:
    """`text` without accents (NFKD, combining marks dropped), "’" read as "'"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).replace("\u2019", "'")


def normalise_span(text: str, keep_case: bool = False) -> str:
    """Words of `text` joined by single spaces: accents and punctuation removed, the
    articles a/an/the dropped, lowercased unless `keep_case`."""
    words = [w for w in _WORD.findall(_plain(text)) if w.lower() not in _ARTICLES]
    joined = " ".join(words)
    return joined if keep_case else joined.lower()


def span_occurrences(plain: str, expected: str) -> list[tuple[int, int]]:
    """Character ranges of `plain` (text already `_plain`) where `expected` occurs as whole
    words, compared as `normalise_span` does: articles skipped, case ignored except for
    spans of at most two characters."""
    keep_case = len(normalise_span(expected, keep_case=True)) <= SHORT_SPAN
    needle = normalise_span(expected, keep_case=keep_case).split()
    if not needle:
        return []
    words = [m for m in _WORD.finditer(plain) if m.group(0).lower() not in _ARTICLES]
    texts = [m.group(0) if keep_case else m.group(0).lower() for m in words]
    n = len(needle)
    return [
        (words[i].start(), words[i + n - 1].end())
        for i in range(len(words) - n + 1)
        if texts[i : i + n] == needle
    ]


def _hedged(before: str, after: str) -> bool:
    """True when the occurrence between `before` and `after` is one of several alternatives:
    next to "or" ("X or Y", "Lyon or X", "X, or Y", "either X"), in a comma list closed by
    "or" ("X, Y or Z"), or in a comma list after a word of possibility ("could be Y, X",
    "perhaps X, Y")."""
    if _OR_BEFORE.search(before) or _OR_AFTER.match(after):
        return True
    maybe = _MAYBE_BEFORE.search(before)
    if maybe is None:
        return False
    # a later item of the list must end where the span ends ("may be aware, X is" is no list)
    return bool((maybe.group("items") and _ITEM_END.match(after)) or _LIST_AFTER.match(after))


def _negated(before: str, after: str) -> bool:
    """True when the occurrence is denied: "not X", "isn't X", "is not X", "never X",
    "X is wrong / incorrect / false / not correct / not right"."""
    return bool(_NOT_BEFORE.search(before) or _WRONG_AFTER.match(after))


def check_span(response: str, expected: str) -> bool:
    """True when the normalised `expected` occurs in the normalised response as whole words,
    and no occurrence is hedged or negated.

    Normalisation (`normalise_span`) ignores punctuation, accents and articles, and case
    for spans longer than two characters. Spans of at most two characters (element
    symbols such as "Fe", "No", "C") keep their case, because there case is meaning:
    "Co" is cobalt and "CO" carbon monoxide, and "no"/"I" are ordinary words. Whole words
    means "Fe" is not found in "Feather" and "Iron" not in "Ironic".

    A hedged occurrence (`_hedged`: "Paris or Lyon", "either Paris or Lyon", "It could be
    Paris, London, Berlin or Rome") lists the span among candidates; a negated one
    (`_negated`: "is not Paris", "isn't Paris", "never Paris", "Paris is wrong") denies
    it. One such occurrence makes the response wrong, as naming two letters does for a
    choice. Only the words next to the span decide: "Paris, not Lyon", "not Lyon but
    Paris", "Paris, the capital of France, ..." and a lone tentative "It could be Paris"
    are correct. Alternative names joined by "or" ("Everest, or Sagarmatha") read as a
    hedge; "also known as" does not.
    """
    plain = _plain(response)
    occurrences = span_occurrences(plain, expected)
    return bool(occurrences) and not any(
        _hedged(plain[:start], plain[end:]) or _negated(plain[:start], plain[end:])
        for start, end in occurrences
    )


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


def parse_options(question: str) -> dict[str, str]:
    """The options of a multiple-choice question, letter -> text: inline "(A) x (B) y" as in
    general_qa.jsonl, else one "A. x" (or "A) x") per line as in MedMCQA. Empty when
    neither layout gives two options."""
    for layout in (_INLINE_OPTION, _LINE_OPTION):
        options = {m.group(1): m.group(2) for m in layout.finditer(question) if m.group(2)}
        if len(options) >= 2:
            return options
    return {}


def named_options(response: str, options: dict[str, str]) -> set[str]:
    """The letters whose option text the response names, matched as spans (`span_occurrences`:
    whole words, normalised). An occurrence inside a longer option's occurrence names only
    the longer option: "Hydroxychloroquine" is not also "Chloroquine", nor "carbon dioxide"
    also "carbon"."""
    plain = _plain(response)
    found = [(s, e, k) for k, text in options.items() for s, e in span_occurrences(plain, text)]
    return {
        k for s, e, k in found
        if not any(s2 <= s and e <= e2 and e2 - s2 > e - s for s2, e2, _ in found)
    }


def check_choice(response: str, expected: str, question: str = "") -> bool:
    """True when the response chooses exactly one option and it is `expected`.

    An option is chosen by naming its letter (`mentioned_letters`) or its text
    (`named_options`, options parsed from `question` by `parse_options`), so "The capital
    of Portugal is Lisbon." chooses (C) Lisbon. Letters and texts count together: a
    response naming several letters ("B or C", "The answer is B, not C"), several texts
    ("Lisbon, not Porto") or a letter and another option's text ("C. Porto") is wrong, as
    is one naming none. Texts must be whole: "Leonardo" does not name "Leonardo da Vinci".
    """
    chosen = mentioned_letters(response) | named_options(response, parse_options(question))
    return chosen == {expected.strip().upper()}


def check_answer(answer_type: str, response: str, expected: str, question: str = "") -> bool:
    """Dispatch to the checker of `answer_type` (one of ANSWER_TYPES); `question` gives
    `check_number` the numbers to skip as echoes and `check_choice` the options' texts."""
    if answer_type == "number":
        return check_number(response, expected, question)
    if answer_type == "span":
        return check_span(response, expected)
    if answer_type == "choice":
        return check_choice(response, expected, question)
    raise ValueError(f"unknown answer_type '{answer_type}'; expected one of {ANSWER_TYPES}")
