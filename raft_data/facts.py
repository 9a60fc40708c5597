"""The facts a rewrite must not change: numbers, symbols, names and choice letters.

Stage 1's filter (docs/METHOD.md stage 1.2) keeps a rewrite when its embedding is close to the
gold answer's. A cosine cannot tell "element 26" from "element 62", "A. Al" from "B. Al",
or quantum from classical mechanics, so this module reads the facts themselves:

- a **contradiction** is a fact of the candidate that neither the gold answer nor the
  question supports (a number, a symbol compared case-sensitively, a name, another
  choice letter): the candidate is wrong, not merely shorter;
- an **omission** is a gold fact the candidate leaves out: recorded, not fatal by default,
  since "The atomic number of Radium is 88." answers correctly without "Ra";
- the **answer check** asks whether the candidate states the row's short answer (a
  column of the input, or a span derived from the gold answer), compared as a number, a
  choice letter, a case-sensitive symbol or a word-bounded phrase.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rapidfuzz import fuzz, process, utils

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:,\d{3})*(?:\.\d+)?")
_LIST_MARKER = re.compile(r"(?m)^\s*\d+[.)](?=\s)")
_WORD = re.compile(r"[^\W\d_][^\W_]*", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?]\s+$|^\s*$|\n\s*$")
# Where a capital may be positional too: after a list bullet, markdown emphasis or a quote
# ("- Located in", "**Iron**"), and, for names only, after a colon ("Answer: The"). Not after a
# bracket: "(He)" is a symbol.
_CLAUSE_START = re.compile(r"(?:\n\s*(?:[-*\u2022]|\d+[.)])|\*\*|[\"'])\s*$")
# Symbols (He, Fe, H) and formulas or codes (NaCl, H2O, CO2): compared case-sensitively.
_SYMBOL = re.compile(r"^[A-Z][a-z]?$")
_FORMULA = re.compile(r"^(?:[A-Z][a-z]?\d*){2,}$|^[A-Z][a-z]?\d+$")
# Common words that a sentence may start with; at a sentence start they are words, not the
# symbols He, In, At, As, No, I, A, So, Be, ... Anywhere else a capital marks a symbol.
_COMMON = {
    "a", "an", "the", "it", "in", "on", "at", "as", "is", "of", "to", "by", "for", "and",
    "but", "or", "if", "so", "we", "he", "she", "they", "its", "yes", "no", "not", "this",
    "that", "these", "those", "there", "here", "i", "you", "my", "our", "your", "be", "do",
    "what", "which", "who", "when", "where", "why", "how", "with", "from", "also",
    "each", "every", "all", "some", "one", "both", "however", "therefore", "thus", "then",
    "answer", "note", "sure", "okay", "well", "first", "second", "finally", "overall",
}
# "I" and "A" are a pronoun and an article far more often than iodine and a choice label.
_PRONOUNS = {"I", "A"}
_OPTION_LABELS = re.compile(r"\(([A-H])\)|^\s*([A-H])[.):]\s", re.MULTILINE)
_CHOICE_PATTERNS = (
    re.compile(r"^\s*\(?([A-H])\)?\s*[.):\-]\s"),
    re.compile(r"^\s*\(?([A-H])\)?\s*$"),
    re.compile(r"\b(?i:answer|option|choice)\s+(?:is\s+)?\(?([A-H])\)?(?![\w])"),
    re.compile(r"\(([A-H])\)"),
)


@dataclass(frozen=True)
class Token:
    text: str
    sentence_start: bool
    clause_start: bool  # a sentence start, or after a bullet, emphasis, quote or bracket
    after_colon: bool
    label: bool  # followed by ':' ("Symbol: He", "Te: Tellurium")
    notation: bool  # a variable in notation ("Z = 1")


@dataclass(frozen=True)
class Facts:
    numbers: tuple[float, ...]
    symbols: tuple[str, ...]
    names: tuple[str, ...]  # as written; compared case-insensitively
    choice: str | None


def tokens(text: str) -> list[Token]:
    """Words with where they stand: sentence starts, labels and notation letters."""
    out: list[Token] = []
    for m in _WORD.finditer(text):
        # only the text just around a word decides where it stands: linear in the text
        before, after = text[max(0, m.start() - 64) : m.start()], text[m.end() : m.end() + 8]
        first = not out and not text[: m.start()].strip()
        start = first or bool(_SENTENCE_END.search(before)) and bool(before.strip() or m.start() < 64)
        clause = start or bool(_CLAUSE_START.search(before))
        colon = bool(re.search(r":\s*$", before))
        label = after.startswith(":")
        notation = len(m.group()) == 1 and bool(re.match(r"\s*=", after))
        out.append(Token(m.group(), start, clause, colon, label, notation))
    return out


_NUMBER_WORDS = {
    w: float(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30.0, "forty": 40.0, "fifty": 50.0, "hundred": 100.0, "thousand": 1000.0}


def number_words(text: str) -> list[float]:
    """Numbers spelled out ("three"): they support a rewrite's "3", but a candidate's own
    "one of the ..." is not read as a number."""
    return [_NUMBER_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _NUMBER_WORDS]


def numbers(text: str) -> list[float]:
    """Numbers as values (1,200 == 1200.0), list markers ("1. ") left out."""
    masked = _LIST_MARKER.sub(lambda m: " " * len(m.group()), text)
    return [float(m.group().replace(",", "")) for m in _NUMBER.finditer(masked)]


def _is_symbol(word: str) -> bool:
    return bool(_SYMBOL.match(word) or _FORMULA.match(word))


def _ambiguous(tok: Token) -> bool:
    """A capitalised common word at a sentence start, or the pronoun/article I/A."""
    return tok.text in _PRONOUNS or (tok.clause_start and tok.text.lower() in _COMMON)


def option_labels(question: str) -> set[str]:
    """Choice labels the question offers: "(A) ..." or lines "A. ..."."""
    return {a or b for a, b in _OPTION_LABELS.findall(question)}


def chosen_letter(text: str, labels: set[str]) -> str | None:
    """The choice letter a text commits to, when the question offers choices."""
    if not labels:
        return None
    for pattern in _CHOICE_PATTERNS:
        for m in pattern.finditer(text):
            if m.group(1) in labels:
                return m.group(1)
    return None


def extract(text: str, labels: set[str] | frozenset[str] = frozenset()) -> Facts:
    """The facts of a text. Sentence-initial ordinary words and notation letters are not facts."""
    symbols: list[str] = []
    names: list[str] = []
    for tok in tokens(text):
        word = tok.text
        if tok.notation or not word[0].isupper() or _ambiguous(tok):
            continue
        if _is_symbol(word):
            symbols.append(word)
        elif _is_name(tok):
            names.append(word)
    choice = chosen_letter(text, set(labels))
    return Facts(tuple(numbers(text)), tuple(dict.fromkeys(symbols)), tuple(dict.fromkeys(names)), choice)


def _is_name(tok: Token) -> bool:
    """A capitalised word that is not capitalised by its position and is no common word."""
    word = tok.text
    if len(word) < 3 or tok.label or word.lower() in _COMMON:
        return False
    return not (tok.clause_start or tok.after_colon) or _inner_caps(word)


def _inner_caps(word: str) -> bool:
    return any(c.isupper() or c.isdigit() for c in word[1:])


def _same_number(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _has_word(word: str, words: list[str], threshold: float) -> bool:
    best = process.extractOne(word, words, scorer=fuzz.ratio, processor=utils.default_process)
    return best is not None and best[1] >= threshold


def contradictions(gold: str, question: str, candidate: str, threshold: float) -> list[str]:
    """Facts of the candidate that conflict with gold or that neither gold nor question holds."""
    labels = option_labels(question)
    ref_numbers = numbers(gold) + numbers(question) + number_words(gold) + number_words(question)
    ref_symbols = {t.text for t in tokens(gold) + tokens(question)}
    ref_words = [t.text for t in tokens(gold) + tokens(question)]
    cand = extract(candidate, labels)
    found = [f"number {n:g}" for n in cand.numbers if not any(_same_number(n, r) for r in ref_numbers)]
    found += [f"symbol {s}" for s in cand.symbols if s not in ref_symbols and not (labels and s in labels)]
    found += [f"name {n}" for n in cand.names if not _has_word(n, ref_words, threshold)]
    gold_choice = chosen_letter(gold, labels)
    if cand.choice is not None and gold_choice is not None and cand.choice != gold_choice:
        found.append(f"choice {cand.choice} (gold {gold_choice})")
    return list(dict.fromkeys(found))


def omissions(gold: str, candidate: str, threshold: float) -> list[str]:
    """Gold facts the candidate does not state: numbers by value, symbols by exact case, names fuzzily."""
    facts = extract(gold)
    have_numbers = numbers(candidate)
    have_tokens = {t.text for t in tokens(candidate)}
    words = [t.text for t in tokens(candidate)]
    missing = [f"{n:g}" for n in facts.numbers if not any(_same_number(n, c) for c in have_numbers)]
    missing += [s for s in facts.symbols if s not in have_tokens]
    missing += [n for n in facts.names if not _has_word(n, words, threshold)]
    return list(dict.fromkeys(missing))


@dataclass(frozen=True)
class Answer:
    """The short answer a candidate must state, and how to compare it."""

    value: str
    kind: str  # number | choice | symbol | text
    source: str  # column | derived


def parse_answer(value: str, question: str, source: str) -> Answer:
    """Classify a short answer: a choice letter when the question offers choices, a number, a symbol, else text."""
    value = value.strip()
    if value in option_labels(question):
        return Answer(value, "choice", source)
    if re.fullmatch(r"[-+]?\d+(?:,\d{3})*(?:\.\d+)?", value):
        return Answer(value.replace(",", ""), "number", source)
    if value.lower() in _NUMBER_WORDS:
        return Answer(f"{_NUMBER_WORDS[value.lower()]:g}", "number", source)
    if _is_symbol(value):
        return Answer(value, "symbol", source)
    return Answer(value, "text", source)


def derive_answer(gold: str, question: str) -> Answer | None:
    """The answer span of a gold answer, where one can be read off it.

    With choices: gold's letter. Else the first number, symbol or name of gold that the
    question does not already contain; a sentence's first word counts only when it stands
    alone ("Hydrogen (H); Z = 1.", not "Because the ..." nor the label "Symbol:"); else a
    short gold answer (<= 6 words) as a whole. None: not checkable.
    """
    labels = option_labels(question)
    if labels:
        letter = chosen_letter(gold, labels)
        return Answer(letter, "choice", "derived") if letter else None
    q_numbers = numbers(question)
    q_words = {t.text.lower() for t in tokens(question)}
    masked = _LIST_MARKER.sub(lambda m: " " * len(m.group()), gold)
    spans: list[tuple[int, Answer]] = []
    for m in _NUMBER.finditer(masked):
        value = float(m.group().replace(",", ""))
        if not any(_same_number(value, q) for q in q_numbers):
            spans.append((m.start(), Answer(m.group().replace(",", ""), "number", "derived")))
    for m, tok in zip(_WORD.finditer(gold), tokens(gold), strict=True):
        word = tok.text
        if not word[0].isupper() or tok.notation or tok.label or _ambiguous(tok) or word.lower() in q_words:
            continue
        if _is_symbol(word):
            spans.append((m.start(), Answer(word, "symbol", "derived")))
        elif _is_name(tok) or (len(word) >= 3 and _standalone(gold, m.end())):
            spans.append((m.start(), Answer(word, "text", "derived")))
    if spans:
        return min(spans, key=lambda s: s[0])[1]
    words = gold.strip().rstrip(".!").split()
    if 0 < len(words) <= 6:
        return Answer(" ".join(words), "text", "derived")
    return None


def _standalone(text: str, end: int) -> bool:
    """The word ending at `end` is a phrase of its own: punctuation or the end follows."""
    return bool(re.match(r"\s*(?:[(,;.!?]|$)", text[end:]))


def _norm(text: str) -> list[str]:
    return re.sub(r"[^\w]+", " ", text.casefold()).split()


def states_answer(candidate: str, answer: Answer, question: str, threshold: float) -> bool:
    """Whether the candidate states the answer: numbers as numbers, choices as letters (or the
    chosen option's text), symbols case-sensitively and word-bounded, text as a word-bounded
    phrase (each word fuzzily, so spelling variants such as Aluminium/Aluminum pass)."""
    if answer.kind == "number":
        spelled = [n for n in number_words(candidate) if n != 1.0]  # "one of the ..." is no answer "1"
        return any(_same_number(float(answer.value), n) for n in numbers(candidate) + spelled)
    if answer.kind == "symbol":
        return answer.value in {t.text for t in tokens(candidate)}
    if answer.kind == "choice":
        labels = option_labels(question)
        letter = chosen_letter(candidate, labels)
        if letter is not None:
            return letter == answer.value
        option = _option_text(question, answer.value)
        return option is not None and states_answer(candidate, parse_answer(option, "", answer.source), "", threshold)
    want = _norm(answer.value)
    have = _norm(candidate)
    if not want:
        return True
    for i in range(len(have) - len(want) + 1):
        window = have[i : i + len(want)]
        if all(w == h or (len(w) >= 5 and fuzz.ratio(w, h) >= threshold) for w, h in zip(want, window, strict=True)):
            return True
    return False


def _option_text(question: str, letter: str) -> str | None:
    m = re.search(rf"\({letter}\)\s*([^()\n]+?)\s*(?=\([A-H]\)|$|\n)", question)
    return m.group(1).strip() if m else None
