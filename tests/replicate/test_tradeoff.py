"""Domain learning vs retention: points per arm, the Pareto front (NLL: lower is better),
the markdown's new sections, an old report.json still rendering, and report.png with and
without the merge arms' validation grid."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from raft_distill.replicate.report import figure, markdown, plot
from raft_distill.replicate.table import arm_table, item_table
from raft_distill.replicate.tradeoff import merge_grids, pareto_front, tradeoff


def test_pareto_front_by_hand():
    points = {"a": (1.0, 0.5), "b": (0.5, 0.9), "c": (0.4, 0.4), "d": (1.0, 0.5), "e": (0.9, 0.5)}
    # c is dominated by a; e by a (same y, less x); a and d tie (neither dominates)
    assert pareto_front(points) == ["a", "b", "d"]
    assert pareto_front({}) == [] and pareto_front({"x": (0.0, 0.0)}) == ["x"]


SCORES = {
    "base": {0: {"domain_nll": 2.00, "seen": 0.30, "ifeval": 0.40, "general": 0.60}},
    "sft_raw": {
        0: {"domain_nll": 1.50, "seen": 0.70, "ifeval": 0.30, "general": 0.45},
        1: {"domain_nll": 1.60, "seen": 0.60, "ifeval": 0.32, "general": 0.47},
    },
    "raft_ema": {
        0: {"domain_nll": 1.60, "seen": 0.65, "ifeval": 0.38, "general": 0.55},
        1: {"domain_nll": 1.70, "seen": 0.55, "ifeval": 0.36, "general": 0.57},
    },
    "sft_merge": {0: {"domain_nll": 1.90, "seen": 0.40, "ifeval": 0.35, "general": 0.50}},
}


def test_tradeoff_learning_is_the_nll_drop_vs_base():
    """x = base NLL - arm NLL (higher = learned more); its seed range comes from the arm's
    max and min NLL. sft_merge learns less than raft_ema and retains less: dominated."""
    t = tradeoff(arm_table(SCORES))
    assert t["x"] == "domain_nll"
    ifeval = next(p for p in t["panels"] if p["y"] == "ifeval")
    sft = ifeval["points"]["sft_raw"]
    assert sft["x"] == pytest.approx([0.45, 0.40, 0.50])  # 2.0 - [1.55, 1.60 max, 1.50 min]
    assert sft["y"] == pytest.approx([0.31, 0.30, 0.32])
    assert ifeval["points"]["base"]["x"] == pytest.approx([0.0, 0.0, 0.0])
    assert ifeval["front"] == ["sft_raw", "raft_ema"]  # base is a reference, not a candidate
    general = next(p for p in t["panels"] if p["y"] == "general")
    assert general["front"] == ["sft_raw", "raft_ema"]


def test_tradeoff_falls_back_to_seen_accuracy_and_to_general_mc():
    scores = {
        arm: {s: {k: v for k, v in sc.items() if k != "domain_nll"} for s, sc in per.items()}
        for arm, per in SCORES.items()
    }
    for per in scores.values():  # general QA absent: general MC is the general panel
        for sc in per.values():
            sc["general_mc"] = sc.pop("general")
    t = tradeoff(arm_table(scores))
    assert t["x"] == "seen"
    panel = next(p for p in t["panels"] if p["y"] == "general_mc")
    assert panel["points"]["sft_raw"]["x"] == pytest.approx([0.65, 0.60, 0.70])
    assert tradeoff(arm_table({"base": {0: {"ifeval": 0.4}}}))["panels"] == []


def _report(table: dict[str, Any] | None, scores: dict[str, Any]) -> dict[str, Any]:
    return {
        "ifeval_metric": "prompt_level_strict",
        "recovered_metric": "general",
        "arms": arm_table(scores),
        "fit_config": "f.yaml",
        "fit_overrides": {},
        "eval_config": "e.yaml",
        "eval_overrides": {},
        "command": "c",
        "notes": [],
        "item_stats": table or {},
        "seeds": [0, 1],
        "all_seeds_arms": ["sft_raw", "raft_ema"],
        "arms_requested": list(scores),
        "arm_data": {},
        "plot": "report.png",
        "runs": [
            {
                "arm": arm,
                "seed": None if arm == "base" else seed,
                "scores": sc,
                "model_path": f"{arm}/seed{seed}/final",
            }
            for arm, per in scores.items()
            for seed, sc in per.items()
        ],
    }


def _vec(values: list[float]) -> dict[str, Any]:
    return {"ids": [f"q{i}" for i in range(len(values))], "values": values, "weights": None}


def test_markdown_new_sections():
    scores = copy.deepcopy(SCORES)
    scores["sft_raw"][0].update(leak_domain=0.25, ifeval_cut_share=0.1)
    scores["sft_raw"][1].update(leak_domain=0.0, ifeval_cut_share=0.3)
    right = [1] * 30 + [0] * 10
    items = {
        "base": {0: {"domain": _vec(right), "domain_nll": _vec([2.0] * 40)}},
        "sft_raw": {
            0: {
                "domain": _vec([0] * 5 + [1] * 35),
                "domain_nll": _vec([1.5] * 40),
                "leak_domain": _vec([1] * 10 + [0] * 30),
            },
            1: {
                "domain": _vec(right),
                "domain_nll": _vec([1.6] * 40),
                "leak_domain": _vec([0] * 40),
            },
        },
        "raft_ema": {
            0: {"domain": _vec(right), "domain_nll": _vec([1.6] * 40)},
            1: {"domain": _vec(right), "domain_nll": _vec([1.7] * 40)},
        },
    }
    md = markdown(_report(item_table(items, n_boot=200), scores))
    assert "| sft_raw | 0,1 | 1.550 ± 0.071 [1.500-1.600] |" in md  # NLL in nats
    assert "p (Holm)" in md and "two-level bootstrap (seeds, items)" in md
    assert "| base | domain acc |" in md and "one seed: suggestive" in md
    assert "domain NLL (nats, lower is better): raft_ema - sft_raw = +0.100 nats" in md
    # base right on 30 of 40; seed 0: 5 of those lost, the other 10 gained; seed 1: no flip
    assert "## Flips vs Base" in md and "| sft_raw | 2.5 / 5.0 (n=40) |" in md
    assert "| sft_raw | 10/80 (12.5%) |" in md  # leak on domain, pooled over 2 seeds
    assert "IFEval cut at max_new_tokens" in md and "20.0 ± 14.1" in md
    assert "Pareto front (IFEval prompt-level strict): sft_raw, raft_ema" in md
    assert "domain NLL drop vs base" in md


def test_an_old_report_json_still_renders():
    """A report.json from before this change: McNemar and paired-bootstrap entries without
    Holm p, seeds or verdicts; no flips, leak or diagnostics; old columns only."""
    old_cmp = {
        "diff": {"estimate": 0.2, "low": 0.1, "high": 0.3, "n": 100},
        "p_bootstrap": 0.0,
        "p_resolution": 0.001,
        "mcnemar": {"a_only": 0, "b_only": 20, "p_exact": 1e-6, "p_mid": 5e-7},
        "test": "McNemar mid-p",
        "p": 5e-7,
        "significant": True,
        "alpha": 0.05,
    }
    old_pb = {**old_cmp, "test": "paired bootstrap", "p": 0.0}
    del old_pb["mcnemar"]
    table = {
        "intervals": {
            "raft_ema": {
                "general_mc": {"estimate": 0.6, "low": 0.5, "high": 0.7, "n": 100, "seeds": 2}
            }
        },
        "vs_sft": {"raft_ema": {"general_mc": old_cmp, "domain": old_pb}},
        "pairs": [
            {
                "arm": "raft_ema",
                "reference": "sft_fused",
                "question": "q?",
                "metrics": {"general_mc": old_cmp},
            }
        ],
    }
    scores = {
        "sft_raw": {0: {"general_mc": 0.4, "domain": 0.1}},
        "raft_ema": {0: {"general_mc": 0.6, "domain": 0.3}},
    }
    md = markdown(_report(table, scores))
    assert (
        "| raft_ema | general MC acc | +20.0 [+10.0, +30.0] | McNemar mid-p | 5e-07 | - | yes |"
        in md
    )
    assert (
        "| raft_ema | domain acc | +20.0 [+10.0, +30.0] | paired bootstrap | < 0.001 | - | yes |"
        in md
    )
    assert "## Ablations" in md and "Flips" not in md and "Pareto" not in md


def _grid(out: Path, arm: str, seed: int, alpha: float, grid: list[dict[str, float]]) -> None:
    folder = out / arm / f"seed{seed}" / "final"
    folder.mkdir(parents=True)
    (folder / "merge_report.json").write_text(json.dumps({"alpha": alpha, "grid": grid}))


def test_plot_with_and_without_the_merge_grid(tmp_path: Path):
    """Bars, one trade-off panel per retention score, and the merge grid panel only where a
    merge arm left its merge_report.json."""
    import matplotlib.pyplot as plt

    report = _report(None, SCORES)
    plain = figure(report, tmp_path / "plain")
    titles = [a.get_title() for a in plain.axes]
    assert len(titles) == 3 and "learning vs IFEval prompt-level strict" in titles[1]
    assert "learning vs general QA acc" in titles[2]
    plt.close(plain)
    out = tmp_path / "merged"
    grid = [
        {"alpha": a, "domain_nll": 2.0 - a, "general_mc": 0.5 - 0.1 * a} for a in (0.0, 0.5, 1.0)
    ]
    _grid(out, "sft_merge", 0, 0.5, grid)
    found = merge_grids(out, report["runs"])
    assert [(g["arm"], g["seed"], g["alpha"], len(g["grid"])) for g in found] == [
        ("sft_merge", 0, 0.5, 3)
    ]
    assert merge_grids(tmp_path / "plain", report["runs"]) == []
    merged = figure(report, out)
    assert [a.get_title() for a in merged.axes][-1].startswith("merge alpha grid")
    plt.close(merged)
    png = plot(report, out / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    old = _report(None, {"sft_raw": {0: {"general": 0.4}}, "raft_ema": {0: {"general": 0.5}}})
    assert len(figure(old, tmp_path / "old").axes) == 1  # no learning axis: the bars only


def test_ablation_pairs_are_reported_without_sft_raw():
    """A run of an arm and its ablation only (raft_ema vs raft_ema_budget, no sft_raw): the
    pair's seed-level comparison is the report's point, so it must be printed."""
    right = [1] * 30 + [0] * 10
    items = {
        "base": {0: {"domain": _vec(right)}},
        "raft_ema": {s: {"domain": _vec(right)} for s in (0, 1)},
        "raft_ema_budget": {s: {"domain": _vec([0] * 5 + [1] * 35)} for s in (0, 1)},
    }
    scores = {
        "base": {0: {"domain": 0.75}},
        "raft_ema": {0: {"domain": 0.75}, 1: {"domain": 0.75}},
        "raft_ema_budget": {0: {"domain": 0.875}, 1: {"domain": 0.875}},
    }
    md = markdown(_report(item_table(items, n_boot=200), scores))
    assert "## Ablations: each arm vs the arm it varies" in md
    assert "| raft_ema_budget | raft_ema | z cut at 1.5 x the target" in md
    assert "seeds resampled, then items" in md
