"""The report's arithmetic on hand-worked numbers (the paper's own Table 1 values)."""

from __future__ import annotations

import math

import pytest

from raft_distill.replicate.table import (
    arm_table,
    fmt_pct,
    fmt_stats,
    item_table,
    item_vectors,
    recovered_fraction,
    relative_change,
    summarize,
)


def test_summarize_mean_sample_std_min_max():
    st = summarize([0.10, 0.20, 0.30])
    assert st.mean == pytest.approx(0.20)
    # deviations -0.1, 0, 0.1 -> sum of squares 0.02 / (n - 1 = 2) = 0.01 -> std 0.1
    assert st.std == pytest.approx(0.10)
    assert (st.min, st.max, st.n) == (0.10, 0.30, 3)
    two = summarize([0.5, 0.7])  # mean 0.6, std sqrt((0.01 + 0.01) / 1) = 0.1414
    assert two.mean == pytest.approx(0.6) and two.std == pytest.approx(math.sqrt(0.02))
    one = summarize([0.25])
    assert one.std is None and one.min == one.max == one.mean == 0.25
    with pytest.raises(ValueError):
        summarize([])


def test_relative_change_paper_definition():
    # SmolLM3-3B domain accuracy: SFT 12.8, RAFT 17.2 -> (17.2 - 12.8) / 12.8 = +34.375 %
    assert relative_change(0.172, 0.128) == pytest.approx(0.34375)
    assert relative_change(0.10, 0.20) == pytest.approx(-0.5)
    assert relative_change(0.3, 0.0) is None  # zero denominator
    assert relative_change(0.0, 0.0) is None


def test_recovered_fraction_paper_definition():
    # SmolLM3-3B MS-Bench: Base 68.0, SFT 61.5, RAFT 66.8 -> 5.3 / 6.5 = 0.8154
    assert recovered_fraction(0.668, 0.615, 0.680) == pytest.approx(5.3 / 6.5)
    assert recovered_fraction(0.615, 0.615, 0.680) == 0.0  # no better than SFT
    assert recovered_fraction(0.680, 0.615, 0.680) == pytest.approx(1.0)  # back to Base
    assert recovered_fraction(0.60, 0.615, 0.680) == pytest.approx(-0.015 / 0.065)
    assert recovered_fraction(0.70, 0.50, 0.50) is None  # Base == SFT: zero denominator


def test_arm_table_hand_worked():
    scores = {
        "base": {0: {"domain": 0.10, "general": 0.60, "ifeval": 0.30}},
        "sft_raw": {
            0: {"domain": 0.20, "general": 0.40, "ifeval": 0.20},
            1: {"domain": 0.30, "general": 0.50, "ifeval": 0.30},
        },
        "raft_ema": {
            0: {"domain": 0.30, "general": 0.50, "ifeval": 0.25},
            1: {"domain": 0.40, "general": 0.60, "ifeval": 0.25},
        },
    }
    rows = {r["arm"]: r for r in arm_table(scores)}
    assert list(rows) == ["base", "sft_raw", "raft_ema"]
    sft, raft, base = rows["sft_raw"], rows["raft_ema"], rows["base"]
    assert sft["seeds"] == [0, 1]
    assert sft["stats"]["domain"]["mean"] == pytest.approx(0.25)
    assert sft["stats"]["domain"]["std"] == pytest.approx(math.sqrt(0.005))  # 0.0707
    assert (sft["stats"]["general"]["min"], sft["stats"]["general"]["max"]) == (0.40, 0.50)
    # raft means: domain 0.35, general 0.55, ifeval 0.25; SFT: 0.25, 0.45, 0.25
    rel = raft["relative_change_vs_sft"]
    assert rel["domain"] == pytest.approx(0.10 / 0.25)  # +40 %
    assert rel["general"] == pytest.approx(0.10 / 0.45)  # +22.2 %
    assert rel["ifeval"] == pytest.approx(0.0)
    assert sft["relative_change_vs_sft"]["domain"] == 0.0
    # general: Base 0.60, SFT 0.45 -> raft recovers (0.55 - 0.45) / (0.60 - 0.45) = 2/3
    assert raft["general_loss_recovered"] == pytest.approx(2 / 3)
    assert sft["general_loss_recovered"] == 0.0
    assert base["general_loss_recovered"] == pytest.approx(1.0)
    assert base["stats"]["domain"]["std"] is None
    # the recovered fraction on another retention column (replicate's recovered_metric)
    on_ifeval = {r["arm"]: r for r in arm_table(scores, recovered_metric="ifeval")}
    assert "general_loss_recovered" not in on_ifeval["raft_ema"]
    assert on_ifeval["sft_raw"]["ifeval_loss_recovered"] == 0.0


def test_report_markdown_names_the_recovered_metric():
    from raft_distill.replicate.report import markdown

    scores = {
        "base": {0: {"general_mc": 0.50}},
        "sft_raw": {0: {"general_mc": 0.40}},
        "raft_ema": {0: {"general_mc": 0.45}},
    }
    report = {
        "ifeval_metric": "prompt_level_strict",
        "recovered_metric": "general_mc",
        "arms": arm_table(scores, recovered_metric="general_mc"),
        "fit_config": "f.yaml", "fit_overrides": {}, "eval_config": "e.yaml",
        "eval_overrides": {}, "runs": [], "notes": [], "command": "c", "item_stats": {},
        "seeds": [0], "all_seeds_arms": [], "arms_requested": ["base"], "arm_data": {},
        "plot": "report.png",
    }
    text = markdown(report)
    assert "general_mc loss recovered" in text and "| raft_ema | " in text
    assert "| 50.0% |" in text  # (0.45 - 0.40) / (0.50 - 0.40)


def test_arm_table_zero_denominators_and_missing_arms():
    scores = {
        "base": {0: {"domain": 0.5, "general": 0.4}},
        "sft_raw": {0: {"domain": 0.0, "general": 0.4}},
        "raft_ema": {0: {"domain": 0.2, "general": 0.5}},
    }
    rows = {r["arm"]: r for r in arm_table(scores)}
    assert rows["raft_ema"]["relative_change_vs_sft"]["domain"] is None  # SFT domain = 0
    assert rows["raft_ema"]["relative_change_vs_sft"]["general"] == pytest.approx(0.25)
    assert rows["raft_ema"]["general_loss_recovered"] is None  # Base == SFT
    assert "ifeval" not in rows["raft_ema"]["stats"]
    no_sft = arm_table({"base": {0: {"general": 0.4}}, "raft_ema": {0: {"general": 0.5}}})
    assert no_sft[1]["relative_change_vs_sft"] == {"general": None}
    assert no_sft[1]["general_loss_recovered"] is None


def test_formatting():
    assert fmt_pct(None) == "n/a" and fmt_pct(0.1234) == "12.3"
    assert fmt_pct(0.34375, signed=True) == "+34.4" and fmt_pct(-0.5, signed=True) == "-50.0"
    assert fmt_stats(None) == "-"
    assert fmt_stats(summarize([0.25]).as_dict()) == "25.0"
    assert fmt_stats(summarize([0.2, 0.3]).as_dict()) == "25.0 ± 7.1 [20.0-30.0]"


def _vec(values, ids=None, weights=None):
    return {"ids": ids or [f"q{i}" for i in range(len(values))], "values": values, "weights": weights}


def test_item_table_intervals_and_paired_differences_vs_sft():
    """SFT right on 40 of 100 items (2 seeds); RAFT right on those plus 20 more (2 seeds
    agreeing): +20 points, significant; base (one model) differs from SFT on 2 items each
    way: one seed on its side, so only suggestive."""
    sft = [1] * 40 + [0] * 60
    raft = [1] * 60 + [0] * 40
    base = [0, 0] + [1] * 38 + [1, 1] + [0] * 58
    items = {
        "base": {0: {"general_mc": _vec(base)}},
        "sft_raw": {0: {"general_mc": _vec(sft)}, 1: {"general_mc": _vec(sft)}},
        "raft_ema": {0: {"general_mc": _vec(raft)}, 1: {"general_mc": _vec(raft)}},
    }
    table = item_table(items, n_boot=500)
    ci = table["intervals"]["raft_ema"]["general_mc"]
    assert ci["estimate"] == pytest.approx(0.60) and ci["low"] < 0.60 < ci["high"]
    assert ci["seeds"] == 2 and ci["n"] == 100
    vs = table["vs_sft"]
    assert set(vs) == {"base", "raft_ema"}
    raft_vs = vs["raft_ema"]["general_mc"]
    assert raft_vs["diff"]["estimate"] == pytest.approx(0.20)
    assert raft_vs["significant"] and raft_vs["test"] == "two-level bootstrap (seeds, items)"
    assert raft_vs["p"] == raft_vs["p_bootstrap"] and raft_vs["p_holm"] >= raft_vs["p"]
    assert vs["base"]["general_mc"]["verdict"] == "one seed: suggestive"
    assert not vs["base"]["general_mc"]["significant"]


def test_item_table_averages_seeds_and_skips_mismatched_items():
    items = {
        "sft_raw": {0: {"domain": _vec([1, 0, 1, 0])}},
        "raft_ema": {0: {"domain": _vec([1, 1, 0, 0])}, 1: {"domain": _vec([1, 0, 0, 1])}},
        "other": {0: {"domain": _vec([1, 1], ids=["x", "y"])}},
    }
    table = item_table(items, n_boot=200)
    assert table["intervals"]["raft_ema"]["domain"]["estimate"] == pytest.approx(0.5)
    raft = table["vs_sft"]["raft_ema"]["domain"]
    assert raft["seeds"] == [1, 2] and raft["one_seed"]
    assert "other" not in table["vs_sft"]  # different items: no pairing


def test_item_vectors_read_the_report_columns():
    result = {
        "suites": {
            "ifeval": {
                "item_scores": {
                    "ids": ["1"],
                    "scores": {
                        "prompt_level_strict": {"values": [0], "weights": None},
                        "instruction_level_strict": {"values": [0.5], "weights": [2]},
                    },
                }
            },
            "general": {"metrics": {"accuracy": 0.5}},
        }
    }
    vectors = item_vectors(result, "instruction_level_strict")
    assert vectors == {"ifeval": {"ids": ["1"], "values": [0.5], "weights": [2]}}


def test_item_table_pairs_the_ablations_with_their_reference_arm():
    """Beyond each arm vs SFT, the ablations are compared with the arm they ablate, item by
    item (e.g. the plain teacher format with raft_ema), when both arms ran."""
    chat = [1] * 50 + [0] * 50
    plain = [1] * 30 + [0] * 70
    items = {
        "sft_raw": {0: {"general_mc": _vec([1] * 40 + [0] * 60)}},
        "sft_fused": {0: {"general_mc": _vec([1] * 45 + [0] * 55)}},
        "raft_ema": {0: {"general_mc": _vec(chat)}},
        "raft_ema_plain": {0: {"general_mc": _vec(plain)}},
    }
    table = item_table(items, n_boot=300)
    pairs = {(p["arm"], p["reference"]): p for p in table["pairs"]}
    assert set(pairs) == {("raft_ema", "sft_fused"), ("raft_ema_plain", "raft_ema")}  # on_policy etc. did not run
    plain_vs_chat = pairs[("raft_ema_plain", "raft_ema")]
    assert plain_vs_chat["question"] and plain_vs_chat["metrics"]["general_mc"]["diff"]["estimate"] == pytest.approx(-0.20)
    # one seed each: a 20-point gap is reported with its p, but only as suggestive
    plain_c = plain_vs_chat["metrics"]["general_mc"]
    assert plain_c["p"] < 0.05 and not plain_c["significant"] and plain_c["one_seed"]
    from raft_distill.replicate.report import markdown

    scores = {"sft_raw": {0: {"general_mc": 0.40}}, "raft_ema": {0: {"general_mc": 0.5}}}
    report = {
        "ifeval_metric": "prompt_level_strict", "recovered_metric": "general_mc",
        "arms": arm_table(scores, recovered_metric="general_mc"),
        "fit_config": "f.yaml", "fit_overrides": {}, "eval_config": "e.yaml",
        "eval_overrides": {}, "runs": [], "notes": [], "command": "c", "item_stats": table,
        "seeds": [0], "all_seeds_arms": [], "arms_requested": ["sft_raw"], "arm_data": {},
        "plot": "report.png",
    }
    md = markdown(report)
    assert "## Ablations" in md and "| raft_ema_plain | raft_ema |" in md
