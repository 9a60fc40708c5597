"""The report's arithmetic, as pure functions (no files, no models).

Scores are fractions in [0, 1] as `raft-distill eval` writes them; the tables show percent.
- per arm: mean over seeds, sample standard deviation (n - 1; none for one seed), min, max;
- relative change vs SFT, as the paper defines it: (method - SFT) / SFT, SFT = `sft_raw`;
- fraction of SFT's general-score loss recovered: (method - SFT) / (Base - SFT).
A zero denominator gives None, shown as "n/a".

Item-level uncertainty (`item_vectors`, `item_table`): per arm, each item's score averaged
over the arm's seeds; a 95% bootstrap interval over items; every arm minus SFT paired per
item (`raft_distill.evaluate.stats.compare`: McNemar mid-p when both sides are single 0/1
vectors, else the paired bootstrap's p). Seed-averaging keeps the pairing by item; the
seed spread itself is in the std/min-max columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from raft_distill.evaluate.stats import bootstrap_ci, compare

METRICS = ("domain", "domain_mc", "general", "ifeval", "general_mc")


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
    """One row per arm (in the order of `scores`): seeds, stats per metric, relative change
    vs SFT per metric (on the seed means), fraction of the `recovered_metric` loss
    recovered. `scores[arm][seed][metric]` is a fraction; missing metrics are skipped.
    """
    stats: dict[str, dict[str, SeedStats]] = {}
    for arm, per_seed in scores.items():
        stats[arm] = {}
        for metric in METRICS:
            values = [s[metric] for s in per_seed.values() if metric in s]
            if values:
                stats[arm][metric] = summarize(values)
    sft = stats.get(sft_arm, {})
    base = stats.get(base_arm, {})
    rows = []
    for arm, per_seed in scores.items():
        rel: dict[str, float | None] = {}
        for metric, st in stats[arm].items():
            rel[metric] = relative_change(st.mean, sft[metric].mean) if metric in sft else None
        rec: float | None = None
        m = recovered_metric
        if m in stats[arm] and m in sft and m in base:
            rec = recovered_fraction(stats[arm][m].mean, sft[m].mean, base[m].mean)
        rows.append(
            {
                "arm": arm,
                "seeds": sorted(per_seed),
                "stats": {k: v.as_dict() for k, v in stats[arm].items()},
                "relative_change_vs_sft": rel,
                f"{m}_loss_recovered": rec,
            }
        )
    return rows


def fmt_pct(value: float | None, signed: bool = False) -> str:
    """0.1234 -> '12.3' ('+12.3' when signed); None -> 'n/a'."""
    if value is None:
        return "n/a"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def fmt_stats(st: Mapping[str, Any] | None) -> str:
    """'12.5 ± 0.7 [12.0-13.0]' in percent; one seed: '12.5'; missing: '-'."""
    if st is None:
        return "-"
    text = fmt_pct(st["mean"])
    if st["n"] > 1:
        text += f" ± {100 * st['std']:.1f} [{fmt_pct(st['min'])}-{fmt_pct(st['max'])}]"
    return text


def item_vectors(result: Mapping[str, Any], ifeval_metric: str) -> dict[str, dict[str, Any]]:
    """The per-item scores behind each report column of one eval result (results.json):
    {metric: {"ids", "values", "weights"}}; columns without per-item scores are left out."""
    out: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        suite, key = ("ifeval", ifeval_metric) if metric == "ifeval" else (metric, "accuracy")
        data = result.get("suites", {}).get(suite, {}).get("item_scores")
        if data and key in data["scores"]:
            score = data["scores"][key]
            out[metric] = {"ids": data["ids"], "values": score["values"], "weights": score["weights"]}
    return out


def _seed_mean(vectors: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Per-item mean over seeds; None when the seeds were not scored on the same items."""
    if not vectors or any(v["ids"] != vectors[0]["ids"] for v in vectors):
        return None
    n = len(vectors)
    values = [math.fsum(col) / n for col in zip(*(v["values"] for v in vectors), strict=True)]
    return {"ids": vectors[0]["ids"], "values": values, "weights": vectors[0]["weights"]}


# Each ablation against the arm it changes one thing of: (arm, reference, the question).
ABLATION_PAIRS: list[tuple[str, str, str]] = [
    ("raft_ema", "sft_fused", "does the KL term add to SFT on the same fused targets?"),
    ("on_policy", "raft_ema", "on-policy distillation (KL only, teacher without y^) vs RAFT"),
    ("raft_fixed_0.1", "raft_ema", "fixed lambda 0.1 vs the EMA balance"),
    ("raft_fixed_1.0", "raft_ema", "fixed lambda 1.0 vs the EMA balance"),
    ("raft_ema_plain", "raft_ema", "teacher format: the paper's plain layout vs the chat one"),
]


def _paired(ref: Mapping[str, Any], arm: Mapping[str, Any], n_boot: int) -> dict[str, Any]:
    """arm - ref per metric, on the items both were scored on (same ids only)."""
    out = {}
    for metric, v in arm.items():
        r = ref.get(metric)
        if r is not None and r["ids"] == v["ids"]:
            out[metric] = compare(r["values"], v["values"], r["weights"], n_boot=n_boot)
    return out


def item_table(
    items: Mapping[str, Mapping[int, Mapping[str, Mapping[str, Any]]]],
    sft_arm: str = "sft_raw",
    n_boot: int = 2000,
) -> dict[str, Any]:
    """`items[arm][seed][metric]` = item_vectors(...)[metric]. Returns
    {"intervals": {arm: {metric: interval}}, "vs_sft": {arm: {metric: comparison}},
    "pairs": [{arm, reference, question, metrics: {metric: comparison}}]} (the
    ABLATION_PAIRS whose two arms ran), intervals and comparisons as `stats` dicts
    (fractions)."""
    means: dict[str, dict[str, dict[str, Any]]] = {}
    for arm, per_seed in items.items():
        means[arm] = {}
        for metric in METRICS:
            vectors = [v[metric] for v in per_seed.values() if metric in v]
            mean = _seed_mean(vectors)
            if mean is not None:
                means[arm][metric] = {**mean, "seeds": len(vectors)}
    intervals = {
        arm: {
            m: {**bootstrap_ci(v["values"], v["weights"], n_boot=n_boot).as_dict(), "seeds": v["seeds"]}
            for m, v in per_metric.items()
        }
        for arm, per_metric in means.items()
    }
    sft = means.get(sft_arm, {})
    vs_sft: dict[str, dict[str, Any]] = {}
    for arm, per_metric in means.items():
        if arm != sft_arm and (paired := _paired(sft, per_metric, n_boot)):
            vs_sft[arm] = paired
    pairs = [
        {"arm": arm, "reference": ref, "question": question, "metrics": paired}
        for arm, ref, question in ABLATION_PAIRS
        if arm in means and ref in means and (paired := _paired(means[ref], means[arm], n_boot))
    ]
    return {"intervals": intervals, "vs_sft": vs_sft, "pairs": pairs}
