from __future__ import annotations

import pytest

from raft_data.config import FilterConfig
from raft_data.filter import (
    check_pairs,
    decide,
    gold_facts,
    load_embedder,
    missing_facts,
    repetition_score,
)

GOLD = "Symbol: Fe. Iron is element 26, in period 4."


def test_gold_facts_keep_numbers_and_names_not_sentence_starts() -> None:
    assert gold_facts(GOLD) == ["26", "4", "Fe"]
    assert gold_facts("The answer is 1,200 kg. NaCl dissolves; Paris is in France.") == [
        "1200", "NaCl", "Paris", "France"
    ]


def test_missing_facts_numbers_exact_names_fuzzy() -> None:
    assert missing_facts(GOLD, "Iron's symbol is Fe; it is element 26 in period 4.", 90) == []
    assert missing_facts(GOLD, "Iron's symbol is Fe; it is element 62 in period 4.", 90) == ["26"]
    assert missing_facts(GOLD, "Iron is element 26 in period 4.", 90) == ["Fe"]
    # a number inside another number is not a match
    assert missing_facts("It costs 26 dollars.", "It costs 260 dollars.", 90) == ["26"]


def test_repetition_score() -> None:
    assert repetition_score("The answer is 5. The answer is 5. The answer is 5. The answer is 5.") == 1.0
    assert repetition_score("yes " * 40) > 0.9
    assert repetition_score("Iron is a metal with symbol Fe and number 26, found in period four.") == 0.0


def test_decide_first_failing_check_is_the_reason() -> None:
    cfg = FilterConfig()
    assert decide(GOLD, "", 0.0, cfg).reason == "empty_rewrite"
    assert decide(GOLD, "Fe 26 4. " * 10, 0.95, cfg).reason.startswith("degenerate_repetition")
    assert decide(GOLD, GOLD, 1.0, cfg).reason.startswith("near_verbatim_copy")
    assert decide(GOLD, "Iron: Fe, 26, period 4.", 0.7, cfg).reason == "low_similarity: 0.700 < tau 0.80"
    r = decide(GOLD, "Iron has the symbol Fe and sits in period 4.", 0.9, cfg)
    assert not r.passed and r.reason == "missing_facts: 26" and r.code == "missing_facts"
    ok = decide(GOLD, "Iron's chemical symbol is Fe; it is element 26, in period 4.", 0.9, cfg)
    assert ok.passed and ok.reason == "passed"
    assert decide(GOLD, "Iron has the symbol Fe.", 0.9, FilterConfig(check_facts=False)).passed


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
    res = check_pairs(embedder, golds, cands, cfg)
    assert res[0].similarity >= cfg.tau and res[0].passed
    assert res[1].similarity < 0.5 and res[1].code == "low_similarity"
    assert res[2].similarity > 0.9


def test_prompt_echo_is_caught_before_similarity() -> None:
    from raft_data.config import FUSION_TEMPLATE

    echo = (
        "Merge the two answers below into one answer to the question.\n\n### Question:\nWhich?\n\n"
        "### Reference answer:\n" + GOLD
    )
    r = decide(GOLD, echo, 0.95, FilterConfig(check_facts=False), FUSION_TEMPLATE)
    assert not r.passed and r.code == "prompt_echo"
    honest = "Iron's chemical symbol is Fe; it is element 26, in period 4, as the reference answer says."
    assert decide(GOLD, honest, 0.9, FilterConfig(), FUSION_TEMPLATE).passed
