"""The report's arithmetic, as pure functions (no files, no models).

Scores are fractions in [0, 1] as `raft-distill eval` writes them; the tables show percent.
- per arm: mean over seeds, sample standard deviation (n - 1; none for one seed), min, max;
- relative change vs SFT, as the paper defines it: (method - SFT) / SFT, SFT = `sft_raw`;
- fraction of SFT's general-score loss recovered: (method - SFT) / (Base - SFT).
A zero denominator gives None, shown as "n/a".

Columns (`COLUMNS`: report column -> (suite, metric key)); each is read only when the eval
results carry it. `domain_nll` (per-token NLL of held-out gold answers, nats) is the one
column where LOWER is better (`LOWER_IS_BETTER`); every direction-aware computation here
(Pareto front, domain learning) respects it. Diagnostics beside the columns: the share of
responses that talk about a reference (`leak_<suite>`) and IFEval's share cut at
max_new_tokens (`ifeval_cut_share`).

Item-level uncertainty (`item_vectors`, `item_table`): every arm vs SFT and every ablation
pair by the two-level bootstrap (`stats.two_level_bootstrap`: seeds within each arm, then
items, paired), so seed-to-seed variation counts; a comparison with one seed on either side
is "one seed: suggestive", never significant; Holm-adjusted p over all of a report's
comparisons, and "significant" only from the adjusted p < 0.05 with both arms >= 2 seeds.
Also per arm vs Base: items flipped 1 -> 0 and 0 -> 1 (sample-wise forgetting), and the
leak counts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from raft_distill.evaluate.stats import (
    ALPHA,
    boot_difference,
    boot_interval,
    holm,
    two_level_arms,
)

# report column -> (eval suite, metric key), learning columns first, then retention;
# "ifeval"'s key is the config's ifeval_metric.
COLUMNS: dict[str, tuple[str, str]] = {
    "domain": ("domain", "accuracy"),
    "domain_mc": ("domain_mc", "accuracy"),
    "domain_nll": ("domain_nll", "nll"),
    "seen": ("seen", "accuracy"),
    "general": ("general", "accuracy"),
    "ifeval": ("ifeval", "prompt_level_strict"),
    "general_mc": ("general_mc", "accuracy"),
    "general_mc_no_boolq": ("general_mc", "accuracy_no_boolq"),
}
METRICS = tuple(COLUMNS)
LOWER_IS_BETTER = frozenset({"domain_nll"})
# generated suites whose responses may talk about a reference (metrics["leak"], item "leak")
LEAK_SUITES = ("domain", "general", "ifeval", "seen")
DIAGNOSTICS = tuple(f"leak_{suite}" for suite in LEAK_SUITES) + ("ifeval_cut_share",)
SUGGESTIVE = "one seed: suggestive"
TEST_NAME = "two-level bootstrap (seeds, items)"


def column_source(metric: str, ifeval_metric: str) -> tuple[str, str]:
    """(suite, key) of a report column or diagnostic in an eval result."""
    if metric == "ifeval":
        return "ifeval", ifeval_metric
    if metric == "ifeval_cut_share":
        return "ifeval", "cut_share"
    if metric.startswith("leak_"):
        return metric.removeprefix("leak_"), "leak"
    return COLUMNS[metric]


def result_scores(result: Mapping[str, Any], ifeval_metric: str) -> dict[str, float]:
    """One eval result's report columns and diagnostics (fractions; NLL in nats), each only
    when the result has it (results from before a suite existed simply lack it)."""
    suites = result.get("suites", {})
    out = {}
    for metric in METRICS + DIAGNOSTICS:
        suite, key = column_source(metric, ifeval_metric)
        value = suites.get(suite, {}).get("metrics", {}).get(key)
        if value is not None:
            out[metric] = float(value)
    return out


@dataclass(frozen=True)
class SeedStats:
    """One metric of one arm over its seeds."""

    mean: float
    std: float | None  # sample std (n - 1); None for a single seed
    min: float
    max: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(values: Sequence[float]) -> SeedStats:
    """Mean, sample std, min and max of one metric over seeds."""
    if not values:
        raise ValueError("summarize: no values")
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return SeedStats(mean, std, min(values), max(values), n)


def relative_change(method: float, sft: float) -> float | None:
    """(method - SFT) / SFT; None when SFT is 0."""
    if sft == 0:
        return None
    return (method - sft) / sft


def recovered_fraction(method: float, sft: float, base: float) -> float | None:
    """(method - SFT) / (Base - SFT): share of SFT's loss vs Base that the method recovers.

    1 = back to Base, 0 = no better than SFT, < 0 = worse than SFT. None when Base == SFT
    (SFT lost nothing). When Base < SFT the sign flips meaning; callers flag it.
    """
    if base == sft:
        return None
    return (method - sft) / (base - sft)


def arm_table(
    scores: Mapping[str, Mapping[int, Mapping[str, float]]],
    base_arm: str = "base",
    sft_arm: str = "sft_raw",
    recovered_metric: str = "general",
) -> list[dict[str, Any]]:
    """One row per arm (in the order of `scores`): seeds, stats per report column, relative
    change vs SFT per column (on the seed means), fraction of the `recovered_metric` loss
    recovered, and stats per diagnostic (`diagnostics`: leak shares, IFEval cut share; apart
    from the columns). `scores[arm][seed][metric]` is a fraction; missing ones are skipped.
    """
    stats: dict[str, dict[str, SeedStats]] = {}
    for arm, per_seed in scores.items():
        stats[arm] = {}
        for metric in METRICS + DIAGNOSTICS:
            values = [s[metric] for s in per_seed.values() if metric in s]
            if values:
                stats[arm][metric] = summarize(values)
    sft = stats.get(sft_arm, {})
    base = stats.get(base_arm, {})
    rows = []
    for arm, per_seed in scores.items():
        rel: dict[str, float | None] = {}
        columns = {k: v for k, v in stats[arm].items() if k in METRICS}
        for metric, st in columns.items():
            rel[metric] = relative_change(st.mean, sft[metric].mean) if metric in sft else None
        rec: float | None = None
        m = recovered_metric
        if m in stats[arm] and m in sft and m in base:
            rec = recovered_fraction(stats[arm][m].mean, sft[m].mean, base[m].mean)
        rows.append(
            {
                "arm": arm,
                "seeds": sorted(per_seed),
                "stats": {k: v.as_dict() for k, v in columns.items()},
                "relative_change_vs_sft": rel,
                f"{m}_loss_recovered": rec,
                "diagnostics": {k: v.as_dict() for k, v in stats[arm].items() if k in DIAGNOSTICS},
            }
        )
    return rows


def fmt_pct(value: float | None, signed: bool = False) -> str:
    """0.1234 -> '12.3' ('+12.3' when signed); None -> 'n/a'."""
    if value is None:
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def fmt_value(metric: str, value: float | None, signed: bool = False) -> str:
    """A score or difference for the tables: nats with 3 decimals for NLL columns, else
    percent with 1 ('+' when signed); None -> 'n/a'."""
    if value is None or metric not in LOWER_IS_BETTER:
        return fmt_pct(value, signed)
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def fmt_stats(st: Mapping[str, Any] | None, metric: str = "") -> str:
    """'12.5 ± 0.7 [12.0-13.0]' in percent (nats for NLL); one seed: '12.5'; missing: '-'."""
    if st is None:
        return "-"
    text = fmt_value(metric, st["mean"])
    if st["n"] > 1:
        spread = fmt_value(metric, st["std"])
        text += f" ± {spread} [{fmt_value(metric, st['min'])}-{fmt_value(metric, st['max'])}]"
    return text


def item_vectors(result: Mapping[str, Any], ifeval_metric: str) -> dict[str, dict[str, Any]]:
    """The per-item scores behind each report column of one eval result (results.json), and
    the per-item leak flags (`leak_<suite>`): {name: {"ids", "values", "weights"}}; columns
    without per-item scores (or with values not one per id) are left out."""
    out: dict[str, dict[str, Any]] = {}
    names = METRICS + tuple(f"leak_{suite}" for suite in LEAK_SUITES)
    for name in names:
        suite, key = column_source(name, ifeval_metric)
        data = result.get("suites", {}).get(suite, {}).get("item_scores")
        if not data or key not in data["scores"]:
            continue
        score = data["scores"][key]
        if len(score["values"]) == len(data["ids"]):
            out[name] = {"ids": data["ids"], "values": score["values"], "weights": score["weights"]}
    return out


def _arm_vectors(per_seed: Mapping[int, Mapping[str, Any]], name: str) -> dict[str, Any] | None:
    """{"ids", "weights", "seeds": [values per seed]}; None when absent or the seeds were
    not scored on the same items."""
    vectors = [v[name] for v in per_seed.values() if name in v]
    if not vectors or any(v["ids"] != vectors[0]["ids"] for v in vectors):
        return None
    return {
        "ids": vectors[0]["ids"],
        "weights": vectors[0]["weights"],
        "seeds": [v["values"] for v in vectors],
    }


# Each ablation against the arm it changes one thing of: (arm, reference, the question).
# Resamples per report column: p resolves down to 2 / n_boot = 1e-4, so a comparison no
# resample crosses can pass Holm at 0.05 in a family of up to ~500 (~110 in the MedMCQA
# report); ~2 s for that report's 12 arms x 7 columns on one core.
REPORT_N_BOOT = 20_000
ABLATION_PAIRS: list[tuple[str, str, str]] = [
    ("raft_ema", "sft_fused", "does the KL term add to SFT on the same fused targets?"),
    ("on_policy", "raft_ema", "on-policy distillation (KL only, teacher without y^) vs RAFT"),
    ("raft_fixed_0.1", "raft_ema", "fixed lambda 0.1 vs the EMA balance"),
    ("raft_fixed_1.0", "raft_ema", "fixed lambda 1.0 vs the EMA balance"),
    ("raft_ema_plain", "raft_ema", "teacher format: the paper's plain layout vs the chat one"),
    ("raft_ema_guard", "raft_ema", "the leak fix: a teacher told not to mention the reference"),
    ("raft_ema_vllm", "raft_ema", "rollouts from vLLM instead of HF generate: should not differ"),
    ("raft_ema_budget", "raft_ema", "z cut at 1.5 x the target instead of max_new_tokens"),
    ("raft_ema_mask", "raft_ema", "the leak fix: no KL where the teacher's top-1 starts 'reference'"),
    ("raft_merge", "raft_ema", "does merging back with the original add to RAFT?"),
    ("sft_merge", "raft_ema", "SFT merged back vs RAFT: the cheap recipe against the method"),
    ("fapm", "raft_ema", "SFT pruned (FAPM) vs RAFT"),
    ("lora_raft", "lora_sft", "RAFT vs SFT under LoRA"),
    ("lora_sft", "raft_ema", "LoRA SFT vs full RAFT: learning less to forget less"),
    ("sft_lr5e-5", "raft_ema", "SFT at a 10x lower lr vs RAFT"),
    ("sft_lr2e-4", "raft_ema", "SFT at a 2.5x lower lr vs RAFT"),
]


def _add_boots(arms: Mapping[str, dict[str, Any]], n_boot: int) -> None:
    """Per report column, the arms scored on the same items resampled together
    (`stats.two_level_arms`): one item resample per column serves every interval and every
    comparison in it. Adds "boot" to each arm's vectors."""
    for metric in METRICS:
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for per in arms.values():
            if metric in per:
                groups.setdefault(tuple(per[metric]["ids"]), []).append(per[metric])
        for group in groups.values():
            boots = two_level_arms([v["seeds"] for v in group], group[0]["weights"], n_boot)
            for v, boot in zip(group, boots, strict=True):
                v["boot"] = boot


def _compare(ref: Mapping[str, Any], arm: Mapping[str, Any], n_boot: int) -> dict[str, Any]:
    """arm - ref by the two-level bootstrap; significance is set later, over the family."""
    diff, p = boot_difference(ref["boot"], arm["boot"])
    seeds = [len(ref["seeds"]), len(arm["seeds"])]
    return {
        "diff": diff.as_dict(),
        "test": TEST_NAME,
        "p": p,
        "p_bootstrap": p,
        "p_resolution": 2 / n_boot,
        "seeds": seeds,
        "one_seed": min(seeds) < 2,
        "alpha": ALPHA,
    }


def _paired(ref: Mapping[str, Any], arm: Mapping[str, Any], n_boot: int) -> dict[str, Any]:
    """arm - ref per report column, on the items both were scored on (same ids only)."""
    return {
        metric: _compare(ref[metric], v, n_boot)
        for metric, v in arm.items()
        if metric in METRICS and metric in ref and ref[metric]["ids"] == v["ids"]
    }


def adjust_family(comparisons: Sequence[dict[str, Any]], alpha: float = ALPHA) -> None:
    """Holm-adjust the raw p of every comparison in place (one family: the whole report);
    significant only with the adjusted p < alpha and >= 2 seeds on both sides."""
    # a bootstrap p of 0 (no resample crossed 0) says p < p_resolution, no less: Holm gets
    # that bound, so a family too large for the resamples' resolution claims nothing
    adjusted = holm([max(c["p"], c.get("p_resolution", 0.0)) for c in comparisons])
    for c, p_holm in zip(comparisons, adjusted, strict=True):
        c["p_holm"], c["family_size"] = p_holm, len(comparisons)
        c["significant"] = bool(not c["one_seed"] and p_holm < alpha)
        c["verdict"] = SUGGESTIVE if c["one_seed"] else "yes" if c["significant"] else "no"


def flips(base: Mapping[str, Any], arm: Mapping[str, Any]) -> dict[str, Any] | None:
    """Sample-wise forgetting vs Base on a 0/1 column: per seed, items Base got right and
    the arm wrong (`lost`, 1 -> 0) and the reverse (`gained`), then the means over seeds.
    Items of weight 0 do not count. None unless both are 0/1 on the same items."""
    if base["ids"] != arm["ids"]:
        return None
    keep = [w is None or w > 0 for w in (base["weights"] or [None] * len(base["ids"]))]
    ref = base["seeds"][0]
    if any(v not in (0, 1) for vals in [ref, *arm["seeds"]] for v in vals):
        return None
    per_seed = []
    for vals in arm["seeds"]:
        pairs = [(r, v) for r, v, k in zip(ref, vals, keep, strict=True) if k]
        per_seed.append([sum(r > v for r, v in pairs), sum(v > r for r, v in pairs)])
    n = len(per_seed)
    return {
        "lost": sum(p[0] for p in per_seed) / n,
        "gained": sum(p[1] for p in per_seed) / n,
        "per_seed": per_seed,
        "n": sum(keep),
    }


def leak_counts(arm: Mapping[str, Any]) -> dict[str, Any]:
    """Responses that talk about a reference, pooled over the arm's seeds: count/n, share."""
    count = sum(float(v) for vals in arm["seeds"] for v in vals)
    n = sum(len(vals) for vals in arm["seeds"])
    return {"count": count, "n": n, "share": count / n if n else None, "seeds": len(arm["seeds"])}


def _by_arm(
    items: Mapping[str, Mapping[int, Mapping[str, Mapping[str, Any]]]],
) -> dict[str, dict[str, Any]]:
    names = METRICS + tuple(f"leak_{suite}" for suite in LEAK_SUITES)
    return {
        arm: {n: v for n in names if (v := _arm_vectors(per_seed, n)) is not None}
        for arm, per_seed in items.items()
    }


def item_table(
    items: Mapping[str, Mapping[int, Mapping[str, Mapping[str, Any]]]],
    sft_arm: str = "sft_raw",
    n_boot: int = REPORT_N_BOOT,
    base_arm: str = "base",
) -> dict[str, Any]:
    """`items[arm][seed][name]` = item_vectors(...)[name]. Returns {"intervals": {arm:
    {metric: interval}}, "vs_sft": {arm: {metric: comparison}}, "pairs": [{arm, reference,
    question, metrics: {metric: comparison}}] (the ABLATION_PAIRS whose two arms ran),
    "flips": {arm: {metric: flips}}, "leak": {arm: {suite: counts}}}; fractions (NLL: nats)."""
    arms = _by_arm(items)
    _add_boots(arms, n_boot)
    intervals = {
        arm: {
            m: {**boot_interval(v["boot"]).as_dict(), "seeds": len(v["seeds"])}
            for m, v in per.items()
            if m in METRICS
        }
        for arm, per in arms.items()
    }
    sft = arms.get(sft_arm, {})
    vs_sft = {
        arm: paired
        for arm, per in arms.items()
        if arm != sft_arm and (paired := _paired(sft, per, n_boot))
    }
    pairs: list[dict[str, Any]] = [
        {"arm": arm, "reference": ref, "question": question, "metrics": paired}
        for arm, ref, question in ABLATION_PAIRS
        if arm in arms and ref in arms and (paired := _paired(arms[ref], arms[arm], n_boot))
    ]
    adjust_family(
        [c for per in vs_sft.values() for c in per.values()]
        + [c for p in pairs for c in p["metrics"].values()]
    )
    base = arms.get(base_arm, {})
    flipped = {
        arm: {
            m: f for m, v in per.items() if m in METRICS and m in base and (f := flips(base[m], v))
        }
        for arm, per in arms.items()
        if arm != base_arm
    }
    leak = {
        arm: {
            n.removeprefix("leak_"): leak_counts(v) for n, v in per.items() if n.startswith("leak_")
        }
        for arm, per in arms.items()
    }
    return {
        "intervals": intervals,
        "vs_sft": vs_sft,
        "pairs": pairs,
        "flips": {a: f for a, f in flipped.items() if f},
        "leak": {a: lk for a, lk in leak.items() if lk},
    }
