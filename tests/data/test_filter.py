from __future__ import annotations

import pytest

from raft_data.config import FilterConfig
from raft_data.facts import Answer, contradictions, derive_answer, extract, omissions, parse_answer
from raft_data.filter import Pair, check_pairs, decide, load_embedder, repetition_score

GOLD = "Symbol: Fe. Iron is element 26, in period 4."
Q_FE = "What is the chemical symbol of Iron?"


def pair(candidate: str, gold: str = GOLD, question: str = Q_FE, answer: str | None = None, finish: str | None = "stop") -> Pair:
    return Pair(gold, candidate, question, parse_answer(answer, question, "column") if answer else None, finish)


def test_gold_facts_keep_numbers_symbols_and_names_not_sentence_starts() -> None:
    facts = extract(GOLD)
    assert facts.numbers == (26.0, 4.0) and facts.symbols == ("Fe",) and facts.names == ()
    facts = extract("The answer is 1,200 kg. NaCl dissolves; Paris is in France.")
    assert facts.numbers == (1200.0,) and facts.symbols == ("NaCl",) and facts.names == ("Paris", "France")


def test_omissions_numbers_exact_names_fuzzy() -> None:
    assert omissions(GOLD, "Iron's symbol is Fe; it is element 26 in period 4.", 90) == []
    assert omissions(GOLD, "Iron's symbol is Fe; it is element 62 in period 4.", 90) == ["26"]
    assert omissions(GOLD, "Iron is element 26 in period 4.", 90) == ["Fe"]
    # a number inside another number is not a match
    assert omissions("It costs 26 dollars.", "It costs 260 dollars.", 90) == ["26"]


def test_repetition_score() -> None:
    assert repetition_score("The answer is 5. The answer is 5. The answer is 5. The answer is 5.") == 1.0
    assert repetition_score("yes " * 40) > 0.9
    assert repetition_score("Iron is a metal with symbol Fe and number 26, found in period four.") == 0.0


def test_stop_words_no_longer_hide_symbols() -> None:
    # He, In, At, As, No are symbols anywhere but at a sentence start
    assert extract("Symbol: He. Helium is element 2.").symbols == ("He",)
    assert extract("The symbol of indium is In, of arsenic As.").symbols == ("In", "As")
    assert extract("He was right. In the table it sits at the top.").symbols == ()
    # case-sensitive: "he"/"in" are words, "He"/"In" symbols
    assert omissions("Symbol: In.", "the symbol is in the table", 90) == ["In"]
    # a notation letter is not a fact
    assert extract("Hydrogen (H); Z = 1.").symbols == ("H",)


def test_review_findings() -> None:
    """A lowercase 'a' before the real letter, a symbol in brackets, 'one of the ...'."""
    q = "Which? (A) Fe (B) Al (C) Cu"
    assert contradictions("B. Al", q, "The answer is a metal, so the answer is C.", 90) == ["choice C (gold B)"]
    assert extract("Helium (He) is a noble gas.").symbols == ("He",)
    assert contradictions("Helium (He).", "What is helium's symbol?", "Helium (Be).", 90) == ["symbol Be"]
    one = parse_answer("1", "How many?", "column")
    assert not decide(Pair("1", "It is one of the gases.", "How many?", one), 0.9, FilterConfig(tau=0.0)).passed


def test_positional_capitals_are_not_names() -> None:
    """Bullets, emphasis and "Answer: The" capitalise ordinary words; they are not facts."""
    rewrite = "Answer: The symbol of Iron is Fe.\n- Located in period 4.\n- It is element 26.\n**Iron** rusts."
    assert contradictions(GOLD, Q_FE, rewrite, 90) == []


def test_contradictions_numbers_symbols_names_and_choice_letters() -> None:
    assert contradictions(GOLD, Q_FE, "Iron's symbol is Fe, element 26.", 90) == []
    assert contradictions(GOLD, Q_FE, "Iron's symbol is Fe, element 62.", 90) == ["number 62"]
    assert contradictions(GOLD, Q_FE, "Iron's symbol is Ir.", 90) == ["symbol Ir"]
    assert contradictions(GOLD, Q_FE, "Iron was named by Lavoisier.", 90) == ["name Lavoisier"]
    # facts from the question are supported
    assert contradictions("Period 3.", "In which period is Aluminium (Al)?", "Aluminium (Al) is in period 3.", 90) == []


def test_decide_first_failing_check_is_the_reason() -> None:
    cfg = FilterConfig()
    assert decide(pair(""), 0.0, cfg).reason == "empty_rewrite"
    assert decide(pair("Iron is Fe, element 26", finish="length"), 0.95, cfg).reason.startswith("truncated")
    assert decide(pair("Fe 26 4. " * 10), 0.95, cfg).reason.startswith("degenerate_repetition")
    assert decide(pair("Iron: Fe, 26, period 4."), 0.7, cfg).reason == "low_similarity: 0.700 < tau 0.80"
    r = decide(pair("Iron has the symbol Fe and sits in period 4."), 0.9, cfg)
    assert r.passed and r.reason == "passed" and r.missing_facts == ["26"]  # an omission is flagged
    r = decide(pair("Iron has the symbol Fe and sits in period 4."), 0.9, FilterConfig(omissions="fallback"))
    assert not r.passed and r.reason == "missing_facts: 26" and r.code == "missing_facts"
    ok = decide(pair("Iron's chemical symbol is Fe; it is element 26, in period 4."), 0.9, cfg)
    assert ok.passed and ok.reason == "passed" and ok.missing_facts == []
    assert decide(pair("Iron has the symbol Ir.", finish=None), 0.9, FilterConfig(check_facts=False)).passed


def test_copy_of_gold_is_accepted_as_copy_unless_it_changes_a_fact() -> None:
    r = decide(pair(GOLD, answer="Fe"), 1.0, FilterConfig())
    assert r.passed and r.code == "copy"
    r = decide(pair("Symbol: Fe. Iron is element 62, in period 4."), 0.99, FilterConfig())
    assert not r.passed and r.code == "contradiction"


@pytest.mark.parametrize("sim, passed", [(0.79, False), (0.8, True), (0.81, True)])
def test_tau_is_the_boundary(sim: float, passed: bool) -> None:
    """METHOD.md: keep y~ iff s >= tau. One below falls back, at tau it is kept."""
    cfg = FilterConfig(tau=0.8)
    r = decide(pair("Iron's chemical symbol is Fe; it is element 26, in period 4."), sim, cfg)
    assert r.passed is passed and (passed or r.code == "low_similarity")
    assert decide(pair("Iron's chemical symbol is Fe; it is element 26, in period 4."), 0.8 - 0.01, cfg).code == "low_similarity"


# Rows seen in demo and held-out builds (the issue "The training signal, right in both stages").
REGRESSIONS = [
    # an omission of "Ra" is no reason to fall back
    ("Atomic number 88 (radium, Ra).", "What is the atomic number of Radium?",
     "The atomic number of Radium is 88.", "88", True, "passed"),
    ("Symbol: Os. Osmium is element 76, in period 6.", "What is the chemical symbol of Osmium?",
     "Osmium's chemical symbol is Os; it is element 67, in period 6.", "Os", False, "contradiction"),
    ("Symbol: Os. Osmium is element 76, in period 6.", "What is the chemical symbol of Osmium?",
     "The chemical symbol of Osmium is Os.", "Os", True, "passed"),
    # the choice letter A was a stop word: "B. Al" was accepted
    ("A. Al is the symbol of aluminium.",
     "Which of these is the chemical symbol of Aluminium? (A) Al (B) Hg (C) Co (D) Rn",
     "B. Al is the symbol of aluminium.", "A", False, "contradiction"),
    ("A. Al is the symbol of aluminium.",
     "Which of these is the chemical symbol of Aluminium? (A) Al (B) Hg (C) Co (D) Rn",
     "The chemical symbol of aluminium is Al.", "A", True, "passed"),
    # "Helium" is not the symbol He
    ("Symbol: He. Helium is element 2, in period 1.", "What is the chemical symbol of Helium?",
     "The chemical symbol of helium is Helium.", "He", False, "answer_missing"),
    # same topic, other answer: the cosine stays high, the answer check does not
    ("quantum mechanics",
     "The specialized study of the motion of objects that are atomic/subatomic in size is called ...?",
     "The study of the motion of objects of atomic size is called classical mechanics.",
     "quantum mechanics", False, "answer_missing"),
]


@pytest.mark.parametrize("gold, question, candidate, check, passed, code", REGRESSIONS)
def test_regression_rows(gold: str, question: str, candidate: str, check: str, passed: bool, code: str) -> None:
    cfg = FilterConfig()
    for answer in (parse_answer(check, question, "column"), derive_answer(gold, question)):
        r = decide(Pair(gold, candidate, question, answer, "stop"), 0.9, cfg)
        assert (r.passed, r.code) == (passed, code), (answer, r.reason)


def test_derived_answer_spans() -> None:
    assert derive_answer("Atomic number 88 (radium, Ra).", "What is the atomic number of Radium?") == Answer("88", "number", "derived")
    assert derive_answer("Te: Tellurium, atomic number 52.", "Which element has the chemical symbol Te?") == Answer("Tellurium", "text", "derived")
    assert derive_answer("Hydrogen (H); Z = 1.", "Which element has atomic number 1?") == Answer("Hydrogen", "text", "derived")
    assert derive_answer("C. Co is the symbol of cobalt.", "Which? (A) B (B) Hg (C) Co (D) Rn") == Answer("C", "choice", "derived")
    # a sentence's first word is the answer only when it stands alone
    assert derive_answer("Because the Earth rotates, day follows night on every side of it.", "Why?") == Answer(
        "Earth", "text", "derived"
    )
    long = "it depends on many things that are hard to say in a few words at all"
    assert derive_answer(long, "why?") is None


def test_answer_check_compares_numbers_as_numbers_and_choices_by_option_text() -> None:
    cfg = FilterConfig(tau=0.0, check_facts=False)
    q = "Which of these is the chemical symbol of Cobalt? (A) B (B) Hg (C) Co (D) Rn"
    assert decide(Pair("C. Co.", "The symbol of cobalt is Co.", q, parse_answer("C", q, "column")), 0.9, cfg).passed
    assert not decide(Pair("C. Co.", "The symbol of cobalt is Hg.", q, parse_answer("C", q, "column")), 0.9, cfg).passed
    n = parse_answer("1,200", "How many?", "column")
    assert decide(Pair("1200 kg", "about 1200.0 kg", "How many?", n), 0.9, cfg).passed
    assert not decide(Pair("1200 kg", "about 12000 kg", "How many?", n), 0.9, cfg).passed
    # spelled-out numbers: a column "three" is met by "3", and gold's "three" supports a "3"
    three = parse_answer("three", "How many?", "column")
    assert three == Answer("3", "number", "column")
    assert decide(Pair("three", "The answer is 3.", "How many?", three), 0.9, FilterConfig()).passed
    assert decide(Pair("It has 3 parts.", "It has three parts.", "How many?", three), 0.9, FilterConfig()).passed


@pytest.mark.integration
def test_real_minilm_cosine_separates_paraphrase_from_drift() -> None:
    embedder = load_embedder("all-minilm-l6-v2", device="cpu")
    cfg = FilterConfig()
    golds = [GOLD, GOLD, "Paris is the capital of France."]
    cands = [
        "Iron's chemical symbol is Fe; iron is element 26, in period 4.",
        "I'm here to help with your homework.",
        "The capital of France is Paris.",
    ]
    res = check_pairs(embedder, [Pair(g, c) for g, c in zip(golds, cands, strict=True)], cfg)
    assert res[0].similarity >= cfg.tau and res[0].passed
    assert res[1].similarity < 0.5 and res[1].code == "low_similarity"
    assert res[2].similarity > 0.9


def test_prompt_echo_is_caught_before_similarity() -> None:
    from raft_data.config import FUSION_TEMPLATE

    echo = (
        "Merge the two answers below into one answer to the question.\n\n### Question:\nWhich?\n\n"
        "### Reference answer:\n" + GOLD
    )
    r = decide(Pair(GOLD, echo), 0.95, FilterConfig(check_facts=False), FUSION_TEMPLATE)
    assert not r.passed and r.code == "prompt_echo"
    honest = "Iron's chemical symbol is Fe; it is element 26, in period 4."
    assert decide(Pair(GOLD, honest), 0.9, FilterConfig(), FUSION_TEMPLATE).passed


@pytest.mark.parametrize(
    "candidate",
    [
        # the phrasings found in accepted rows of the demo and a science-domain build
        "Merge the two answers below into one answer. Iron's symbol is Fe; it is element 26, in period 4.",
        "The reference answer is correct. The answer is indeed: Fe, element 26, in period 4.",
        "Iron's symbol is Fe and it sits in period 4, while the reference answer is 26.",
        "The reference knowledge is: Iron (Fe) is element 26, in period 4.",
        "Iron's chemical symbol is Fe; it is element 26, in period 4, as the reference answer says.",
        "Both answers agree: Fe is element 26, in period 4.",
    ],
)
def test_meta_text_about_the_prompt_is_not_an_answer(candidate: str) -> None:
    """A rewrite or fusion that states the prompt's instructions or talks about the
    reference/draft answer is rejected (meta_text), before any fact or similarity check."""
    from raft_data.config import FUSION_TEMPLATE

    r = decide(pair(candidate, answer="Fe"), 0.95, FilterConfig(), FUSION_TEMPLATE)
    assert not r.passed and r.code == "meta_text", r.reason


def test_meta_text_restating_the_instructions() -> None:
    """A sentence of the prompt's own instructions, restated inside the answer."""
    template = "Rewrite the answer in plain words for a student.\n\n{question}\n\n{answer}"
    candidate = "Rewrite the answer in plain words. Iron's symbol is Fe; it is element 26, in period 4."
    r = decide(pair(candidate, answer="Fe"), 0.95, FilterConfig(), template)
    assert not r.passed and r.code == "meta_text", r.reason
    assert r.reason == "meta_text: instruction 'Rewrite the answer in plain words.'"


def test_meta_text_allows_the_rows_own_wording() -> None:
    """The phrase is the row's own when the question or gold uses it."""
    from raft_data.config import REWRITE_TEMPLATE

    gold = "The editor reviews the draft answer before it is published."
    question = "Who reviews the draft answer?"
    candidate = "The editor reviews the draft answer before publication."
    r = decide(Pair(gold, candidate, question), 0.95, FilterConfig(check_facts=False), REWRITE_TEMPLATE)
    assert r.passed, r.reason


def test_a_real_rewrite_is_kept_before_a_copy_of_gold() -> None:
    """With rewrite.n > 1 a copy (similarity ~1) must not win over a rewrite that passed."""
    from raft_data.filter import CheckResult
    from raft_data.refine import _choose

    copy = CheckResult(1.0, 100.0, 0.0, passed=True, reason="copy: ratio 100.0 >= 97.0")
    own = CheckResult(0.86, 60.0, 0.0, passed=True, reason="passed")
    failed = CheckResult(0.95, 60.0, 0.0, passed=False, reason="contradiction: number 62")
    assert _choose([copy, own, failed]) == 1
    assert _choose([copy, failed]) == 0
