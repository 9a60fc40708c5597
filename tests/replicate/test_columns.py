"""The report's newer columns (domain NLL, seen, general MC without BoolQ), the leak and
IFEval cut-share diagnostics, and flips vs Base, each read only when the results carry it."""

from __future__ import annotations

import pytest

from raft_distill.replicate.table import (
    arm_table,
    fmt_stats,
    fmt_value,
    item_table,
    item_vectors,
    result_scores,
)

IDS = ["a", "b", "c", "d"]


def _suite(metrics: dict, scores: dict) -> dict:
    return {
        "metrics": metrics,
        "item_scores": {
            "ids": IDS,
            "scores": {k: {"values": v, "weights": None} for k, v in scores.items()},
        },
    }


def _result(acc: list[int], nll: list[float], leak: list[int], cut: float = 0.25) -> dict:
    return {
        "suites": {
            "domain": _suite(
                {"accuracy": sum(acc) / 4, "leak": sum(leak) / 4}, {"accuracy": acc, "leak": leak}
            ),
            "domain_nll": _suite({"nll": sum(nll) / 4}, {"nll": nll}),
            "seen": _suite({"accuracy": 0.75}, {"accuracy": [1, 1, 1, 0]}),
            "general_mc": _suite(
                {"accuracy": 0.5, "accuracy_no_boolq": 0.6},
                {"accuracy": [1, 0, 1, 0], "accuracy_no_boolq": [1, 0, 1]},
            ),
            "ifeval": _suite(
                {"prompt_level_strict": 0.5, "cut_share": cut},
                {"prompt_level_strict": [1, 0, 1, 0]},
            ),
        }
    }


def test_result_scores_reads_columns_and_diagnostics_when_present():
    scores = result_scores(
        _result([1, 1, 0, 0], [2.0, 1.0, 1.0, 2.0], [0, 1, 0, 0]), "prompt_level_strict"
    )
    assert scores == pytest.approx(
        {
            "domain": 0.5,
            "domain_nll": 1.5,
            "seen": 0.75,
            "general_mc": 0.5,
            "general_mc_no_boolq": 0.6,
            "ifeval": 0.5,
            "leak_domain": 0.25,
            "ifeval_cut_share": 0.25,
        }
    )
    old = {"suites": {"general": {"metrics": {"accuracy": 0.4}}}}  # a result from before
    assert result_scores(old, "prompt_level_strict") == {"general": 0.4}


def test_item_vectors_new_columns_and_leak_flags():
    vectors = item_vectors(
        _result([1, 1, 0, 0], [2.0, 1.0, 1.0, 2.0], [0, 1, 0, 0]), "prompt_level_strict"
    )
    assert set(vectors) == {"domain", "domain_nll", "seen", "general_mc", "ifeval", "leak_domain"}
    assert vectors["leak_domain"]["values"] == [0, 1, 0, 0]
    # no_boolq's values are not one per id here: they cannot be paired by id, left out
    assert "general_mc_no_boolq" not in vectors


def test_nll_is_shown_in_nats_and_stays_out_of_relative_change_diagnostics():
    assert (
        fmt_value("domain_nll", 1.23456) == "1.235"
        and fmt_value("domain_nll", -0.1, signed=True) == "-0.100"
    )
    assert fmt_value("domain", 0.1234) == "12.3"
    rows = arm_table(
        {
            "base": {0: {"domain_nll": 2.0, "leak_domain": 0.0}},
            "sft_raw": {
                0: {"domain_nll": 1.5, "leak_domain": 0.5},
                1: {"domain_nll": 1.7, "leak_domain": 0.3},
            },
        }
    )
    sft = rows[1]
    assert fmt_stats(sft["stats"]["domain_nll"], "domain_nll") == "1.600 ± 0.141 [1.500-1.700]"
    assert sft["diagnostics"]["leak_domain"]["mean"] == pytest.approx(0.4)
    assert set(sft["stats"]) == {"domain_nll"}  # diagnostics are no report column
    assert "leak_domain" not in sft["relative_change_vs_sft"]


def test_flips_and_leak_counts_vs_base():
    """Base right on a, b; seed 0 right on a, c (b lost, c gained); seed 1 right on c, d
    (a, b lost; c, d gained): lost (1 + 2) / 2 = 1.5, gained (1 + 2) / 2 = 1.5."""
    items = {
        "base": {
            0: item_vectors(_result([1, 1, 0, 0], [2.0] * 4, [0, 0, 0, 0]), "prompt_level_strict")
        },
        "sft_raw": {
            0: item_vectors(_result([1, 0, 1, 0], [1.0] * 4, [1, 0, 0, 0]), "prompt_level_strict"),
            1: item_vectors(_result([0, 0, 1, 1], [1.0] * 4, [1, 1, 0, 0]), "prompt_level_strict"),
        },
    }
    table = item_table(items, n_boot=50)
    f = table["flips"]["sft_raw"]["domain"]
    assert (f["lost"], f["gained"], f["per_seed"], f["n"]) == (1.5, 1.5, [[1, 1], [2, 2]], 4)
    assert "domain_nll" not in table["flips"]["sft_raw"]  # not a 0/1 column
    assert table["flips"]["sft_raw"]["seen"]["lost"] == 0
    leak = table["leak"]["sft_raw"]["domain"]
    assert (leak["count"], leak["n"], leak["share"], leak["seeds"]) == (3, 8, 3 / 8, 2)
    assert table["leak"]["base"]["domain"]["count"] == 0
    assert "domain_nll" in table["intervals"]["sft_raw"]
