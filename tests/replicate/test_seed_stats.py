"""The report's arm-vs-SFT tests: two-level bootstrap (seeds, then items), one-seed
comparisons only suggestive, Holm-adjusted p over the report's family."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from raft_distill.evaluate.stats import holm
from raft_distill.replicate.table import SUGGESTIVE, item_table


def _arm(rng: np.random.Generator, logits: np.ndarray, seeds: list[int], sd: float) -> dict:
    """{seed: {"general_mc": vector}}: each seed's model is the generator shifted by its own
    logit offset (the spread between training seeds)."""
    out = {}
    for s in seeds:
        p = 1 / (1 + np.exp(-(logits + rng.normal(0.0, sd))))
        values = (rng.random(len(logits)) < p).astype(int).tolist()
        out[s] = {
            "general_mc": {
                "ids": [f"q{i}" for i in range(len(logits))],
                "values": values,
                "weights": None,
            }
        }
    return out


def test_equal_arms_are_rarely_called_different() -> None:
    """200 simulated reports, SFT and another arm from one generator (300 binary items,
    difficulties logit ~ N(0, 1.5), 3 seeds each with a N(0, 0.3) logit offset, the spread
    seen between SFT seeds): "significant" at most 8% of the time (the old item-only test
    on seed-averaged items: ~40%, see tests/eval/test_stats.py)."""
    rng = np.random.default_rng(7)
    flagged = 0
    for _ in range(200):
        logits = rng.normal(0.0, 1.5, size=300)
        items = {
            "sft_raw": _arm(rng, logits, [0, 1, 2], 0.3),
            "raft_ema": _arm(rng, logits, [0, 1, 2], 0.3),
        }
        c = item_table(items, n_boot=400)["vs_sft"]["raft_ema"]["general_mc"]
        assert c["seeds"] == [3, 3] and not c["one_seed"]
        flagged += c["significant"]
    assert flagged / 200 <= 0.08


def test_one_sft_seed_against_the_others_is_never_flagged() -> None:
    """SFT seed k alone vs SFT's other seeds: one side has one seed, so the entry is only
    suggestive whatever its p, even where the seeds differ a lot (offset sd 0.6 here)."""
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 1.5, size=400)
    sft = _arm(rng, logits, [0, 1, 2], 0.6)
    raw_ps = []
    for k in sft:
        items = {"sft_raw": {s: v for s, v in sft.items() if s != k}, f"sft_seed{k}": {k: sft[k]}}
        c = item_table(items, n_boot=400)["vs_sft"][f"sft_seed{k}"]["general_mc"]
        assert c["one_seed"] and c["verdict"] == SUGGESTIVE and not c["significant"]
        raw_ps.append(c["p"])
    assert min(raw_ps) < 0.05  # the item-level p alone would have flagged it


def _two_logits_apart() -> dict[str, Any]:
    """sft_raw and raft_ema, 3 seeds each on 300 items, raft_ema +2 logits (~ +15 points)."""
    rng = np.random.default_rng(11)
    logits = rng.normal(0.0, 1.5, size=300)
    return {
        "sft_raw": _arm(rng, logits, [0, 1, 2], 0.3),
        "raft_ema": _arm(rng, logits + 2.0, [0, 1, 2], 0.3),
    }


def test_a_large_true_difference_is_flagged() -> None:
    items = _two_logits_apart()
    c = item_table(items, n_boot=1000)["vs_sft"]["raft_ema"]["general_mc"]
    assert c["diff"]["estimate"] > 0.1 and c["diff"]["low"] > 0  # +2 logits: ~ +15 points
    assert c["significant"] and c["verdict"] == "yes" and c["p_holm"] < 0.05
    assert c["test"] == "two-level bootstrap (seeds, items)"


def test_holm_over_the_report_family() -> None:
    """Every comparison in the report (vs SFT and the ablation pairs) is one family: each
    entry keeps its raw p and carries the Holm-adjusted p; significance needs the adjusted
    p < 0.05 and two seeds or more on both sides."""
    rng = np.random.default_rng(5)
    logits = rng.normal(0.0, 1.5, size=300)
    items = {
        "sft_raw": _arm(rng, logits, [0, 1, 2], 0.2),
        "sft_fused": _arm(rng, logits + 0.1, [0, 1, 2], 0.2),
        "raft_ema": _arm(rng, logits + 1.0, [0, 1, 2], 0.2),
        "on_policy": _arm(rng, logits + 1.0, [0], 0.2),  # one seed: suggestive
    }
    table = item_table(items, n_boot=500)
    family = [c["general_mc"] for c in table["vs_sft"].values()]
    family += [p["metrics"]["general_mc"] for p in table["pairs"]]
    assert len(family) == 3 + 2  # 3 arms vs SFT; raft_ema vs sft_fused, on_policy vs raft_ema
    bounded = [max(c["p"], c["p_resolution"]) for c in family]  # a p of 0 is p < 2 / n_boot
    assert [c["p_holm"] for c in family] == pytest.approx(holm(bounded))
    assert all(c["family_size"] == 5 for c in family)
    for c in family:
        both = min(c["seeds"]) >= 2
        assert c["significant"] == (both and c["p_holm"] < 0.05)
        assert c["verdict"] == (SUGGESTIVE if not both else "yes" if c["significant"] else "no")
    assert table["vs_sft"]["raft_ema"]["general_mc"]["significant"]
    assert table["vs_sft"]["on_policy"]["general_mc"]["verdict"] == SUGGESTIVE
    assert table["vs_sft"]["on_policy"]["general_mc"]["p"] < 0.05  # small p, still not claimed


def test_a_bootstrap_p_of_zero_is_only_as_small_as_the_test_can_show() -> None:
    """No resample crossing 0 means p < 2 / n_boot, not p = 0: Holm must use that bound,
    so a family too large for the resolution claims nothing (the 3-seed MedMCQA report
    printed 'p (Holm) < 0.11' beside 'significant: yes'); the report's default n_boot
    resolves a large effect in a family of ~100."""
    items = _two_logits_apart()
    coarse = item_table(items, n_boot=50)["vs_sft"]["raft_ema"]["general_mc"]
    assert coarse["p"] == 0.0 and coarse["p_resolution"] == pytest.approx(0.04)
    # family of 1 here: the bound 0.04 itself; a bound >= 0.05 would claim nothing
    assert coarse["p_holm"] == pytest.approx(0.04) and coarse["significant"]
    coarser = item_table(items, n_boot=20)["vs_sft"]["raft_ema"]["general_mc"]
    assert coarser["p"] == 0.0 and coarser["p_holm"] == pytest.approx(0.1)
    assert not coarser["significant"] and coarser["verdict"] == "no"
    default = item_table(items)["vs_sft"]["raft_ema"]["general_mc"]
    assert default["p_resolution"] * 100 < 0.05  # ~100 comparisons: still resolvable


def test_intervals_include_the_seed_spread() -> None:
    """Two seeds on the same items, all right vs all wrong on half: the seed-level spread
    widens the arm's interval beyond what its seed-averaged items alone would give."""
    ids = [f"q{i}" for i in range(100)]
    half = [1] * 50 + [0] * 50
    items = {
        "sft_raw": {
            0: {"domain": {"ids": ids, "values": [1] * 100, "weights": None}},
            1: {"domain": {"ids": ids, "values": half, "weights": None}},
        }
    }
    ci = item_table(items, n_boot=500)["intervals"]["sft_raw"]["domain"]
    assert ci["estimate"] == pytest.approx(0.75) and ci["seeds"] == 2
    assert ci["low"] < 0.6 and ci["high"] > 0.9
