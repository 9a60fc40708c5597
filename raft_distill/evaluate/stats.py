"""Uncertainty of scores and of differences between models, as pure functions over items.

A score is a (weighted) mean of per-item values: 0/1 for correctness, a fraction for
IFEval's instruction level (a prompt's share of passed instructions, weighted by its number
of instructions, so the weighted mean is IFEval's instruction-level accuracy and the
bootstrap resamples prompts, not instructions within a prompt).

- `bootstrap_ci`: percentile bootstrap over items (Efron & Tibshirani 1993, ch. 13) for
  one model's score.
- `paired_bootstrap`: the same items resampled jointly for two models, for the interval of
  the difference B - A (pairing removes the item-difficulty variance both models share,
  which is why a paired difference needs far fewer items than two separate accuracies);
  a two-sided p-value from the share of resampled differences on either side of 0.
- `two_level_bootstrap`: B - A when each arm is several trained models (seeds) scored on
  the same items. Each resample draws seeds within each arm, then items (the same items for
  both arms): the seed spread is part of the uncertainty, so two arms from one training
  recipe are not called different because their seeds happened to differ (`paired_bootstrap`
  on seed-averaged items treats the trained models as fixed and, on a simulation with the
  seed spread seen between SFT seeds, flags ~40% of equal arms at 5%; tests/eval/test_stats).
  `two_level_ci` is the same for one arm's score.
- `holm`: Holm-Bonferroni adjusted p-values for a family of comparisons (Holm 1979).
- `mcnemar`: McNemar's test for two models' binary outcomes on the same items: exact
  (binomial on the discordant pairs) and mid-p (Fagerland, Lydersen & Laake 2013, BMC Med
  Res Methodol 13:91, who recommend mid-p).
- `compare` and `describe`: one comparison as a dict and in words.

Everything is deterministic for a given `seed`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

N_BOOT = 2000
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    """An estimate with its (1 - alpha) interval; fractions, like the scores."""

    estimate: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arrays(values: Sequence[float], weights: Sequence[float] | None) -> tuple[Any, Any]:
    x = np.asarray(values, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if x.ndim != 1 or w.shape != x.shape:
        raise ValueError("values and weights must be 1-D and of equal length")
    if len(x) == 0:
        raise ValueError("no items")
    return x, w


def weighted_mean(values: Sequence[float], weights: Sequence[float] | None = None) -> float:
    """sum(w x) / sum(w) (the plain mean without weights)."""
    x, w = _arrays(values, weights)
    return float(np.sum(w * x) / np.sum(w))


def _boot_means(x: Any, w: Any, n_boot: int, seed: int) -> Any:
    """Weighted means of `n_boot` resamples of the items, in chunks (bounded memory)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    out = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        ww = w[idx]
        total = ww.sum(axis=1)
        out[start : start + len(idx)] = np.where(
            total > 0, (ww * x[idx]).sum(axis=1) / np.where(total > 0, total, 1.0), 0.0
        )
    return out


def bootstrap_ci(
    values: Sequence[float],
    weights: Sequence[float] | None = None,
    n_boot: int = N_BOOT,
    alpha: float = ALPHA,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of the (weighted) mean over items."""
    x, w = _arrays(values, weights)
    means = _boot_means(x, w, n_boot, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(weighted_mean(x, w), float(low), float(high), len(x))


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    weights: Sequence[float] | None = None,
    n_boot: int = N_BOOT,
    alpha: float = ALPHA,
    seed: int = 0,
) -> tuple[Interval, float]:
    """Interval of mean(b) - mean(a) over the same items, and a two-sided bootstrap p-value.

    Items are resampled jointly (the pairing). The p-value is 2 * min(share of resampled
    differences <= 0, share >= 0), capped at 1: the percentile-interval duality, so p < alpha
    exactly when the (1 - alpha) interval excludes 0 (up to ties at 0).
    """
    xa, w = _arrays(a, weights)
    xb, _ = _arrays(b, weights)
    if xa.shape != xb.shape:
        raise ValueError("paired scores need the same items: lengths differ")
    diffs = _boot_means(xb - xa, w, n_boot, seed)
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return Interval(weighted_mean(xb - xa, w), float(low), float(high), len(xa)), p


def _seed_matrix(arm: Sequence[Sequence[float]], n: int | None) -> Any:
    """One arm as a seeds x items array, checked."""
    if len(arm) == 0:
        raise ValueError("two-level bootstrap: an arm with no seeds")
    x = np.asarray(arm, dtype=np.float64)
    if x.ndim != 2 or (n is not None and x.shape[1] != n) or x.shape[1] == 0:
        raise ValueError("two-level bootstrap: every seed of both arms needs the same items")
    return x


def _item_draws(rng: Any, n: int, size: int) -> Any:
    """size x n counts: how often each item is drawn in each of `size` item resamples."""
    idx = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
    return np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)


def _two_level_means(arms: Sequence[Any], w: Any, n_boot: int, seed: int) -> list[Any]:
    """Per arm, the weighted means of `n_boot` two-level resamples: items drawn once for all
    arms (the pairing), then S - 1 of an arm's S seeds drawn with replacement (the mean of
    S - 1 draws has the variance of a mean of S seeds, sigma^2 / S; S draws would give
    (S - 1) / S of it, too narrow with 2-3 seeds). One seed: that model, items only."""
    rng = np.random.default_rng(seed)
    n = len(w)
    out = [np.empty(n_boot) for _ in arms]
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        items = _item_draws(rng, n, size) * w  # resampled item weights
        total = items.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        for x, dest in zip(arms, out, strict=True):
            sums = items @ x.T  # size x seeds: each seed's weighted sum over the drawn items
            draws = max(1, len(x) - 1)
            picks = rng.multinomial(draws, np.full(len(x), 1 / len(x)), size=size) / draws
            dest[start : start + size] = np.where(total > 0, (picks * sums).sum(axis=1) / safe, 0.0)
    return out


@dataclass(frozen=True)
class ArmBoot:
    """One arm's score (the seed mean of weighted means over items) and its two-level
    bootstrap replicates, drawn on item resamples shared with the arms it was drawn with."""

    estimate: float
    means: Any
    n: int
    seeds: int


def two_level_arms(
    arms: Sequence[Sequence[Sequence[float]]],
    weights: Sequence[float] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> list[ArmBoot]:
    """Several arms on the same items, resampled together: each pair of them is a paired
    comparison (`boot_difference`), each alone an interval (`boot_interval`). Drawing a
    report's arms once per column costs one item resample for all its comparisons."""
    xs = [_seed_matrix(arms[0], None)] if arms else []
    xs += [_seed_matrix(arm, xs[0].shape[1]) for arm in arms[1:]]
    if not xs:
        return []
    _, w = _arrays(xs[0][0], weights)
    means = _two_level_means(xs, w, n_boot, seed)
    return [
        ArmBoot(float(np.sum(w * x.mean(axis=0)) / np.sum(w)), m, x.shape[1], len(x))
        for x, m in zip(xs, means, strict=True)
    ]


def boot_interval(arm: ArmBoot, alpha: float = ALPHA) -> Interval:
    """The arm's score with its percentile interval."""
    low, high = np.quantile(arm.means, [alpha / 2, 1 - alpha / 2])
    return Interval(arm.estimate, float(low), float(high), arm.n)


def boot_difference(a: ArmBoot, b: ArmBoot, alpha: float = ALPHA) -> tuple[Interval, float]:
    """B - A: the difference of scores, its percentile interval and two-sided p (as
    `paired_bootstrap`); a and b must come from one `two_level_arms` call (shared items)."""
    diffs = b.means - a.means
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return Interval(b.estimate - a.estimate, float(low), float(high), a.n), p


def two_level_bootstrap(
    a: Sequence[Sequence[float]],
    b: Sequence[Sequence[float]],
    weights: Sequence[float] | None = None,
    n_boot: int = N_BOOT,
    alpha: float = ALPHA,
    seed: int = 0,
) -> tuple[Interval, float]:
    """B - A, each arm a list of per-seed item vectors over the same items: the seed-mean
    difference of weighted means, its percentile interval and two-sided p (as
    `paired_bootstrap`) from resampling items jointly, then seeds within each arm.

    With one seed per arm it is the paired item bootstrap: the trained model is then taken
    as fixed, which is why callers call such a comparison suggestive only. With 3 seeds the
    seed spread itself is estimated from 3 values: where it dominates the item noise (a
    0.3-logit seed spread on 1,000 items) equal arms come out "significant" ~10% of the time
    at 5% (~5% on 300 items), against ~65% for the item-only test.
    """
    boot_a, boot_b = two_level_arms([a, b], weights, n_boot, seed)
    return boot_difference(boot_a, boot_b, alpha)


def two_level_ci(
    arm: Sequence[Sequence[float]],
    weights: Sequence[float] | None = None,
    n_boot: int = N_BOOT,
    alpha: float = ALPHA,
    seed: int = 0,
) -> Interval:
    """One arm's score (seed mean of weighted means) with its two-level percentile interval."""
    (boot,) = two_level_arms([arm], weights, n_boot, seed)
    return boot_interval(boot, alpha)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order: the j-th smallest p
    times (m - j + 1), made monotone by a running maximum, capped at 1. Rejecting where the
    adjusted p < alpha keeps the family-wise error rate at alpha for any dependence."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return [float(v) for v in adjusted]


def paired_se(a: Sequence[float], b: Sequence[float]) -> float:
    """Analytic standard error of the mean paired difference: sd(b - a) / sqrt(n)."""
    xa, _ = _arrays(a, None)
    xb, _ = _arrays(b, None)
    d = xb - xa
    if len(d) < 2:
        return float("nan")
    return float(np.std(d, ddof=1) / math.sqrt(len(d)))


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exact in integers."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


@dataclass(frozen=True)
class McNemar:
    """Discordant counts (a right b wrong, a wrong b right) and two-sided p-values."""

    a_only: int
    b_only: int
    p_exact: float
    p_mid: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar(a: Sequence[bool | float], b: Sequence[bool | float]) -> McNemar:
    """McNemar's test on paired binary outcomes (truthy = correct).

    With n = discordant pairs and k = the smaller discordant count: exact two-sided
    p = min(1, 2 P(X <= k)), mid-p = 2 (P(X <= k) - P(X = k) / 2), X ~ Binomial(n, 1/2).
    No discordant pair: both p-values are 1.
    """
    if len(a) != len(b):
        raise ValueError("paired outcomes need the same items: lengths differ")
    a_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return McNemar(a_only, b_only, 1.0, 1.0)
    cdf = _binom_cdf_half(k, n)
    pmf = math.comb(n, k) / 2**n
    return McNemar(a_only, b_only, min(1.0, 2 * cdf), min(1.0, 2 * (cdf - pmf / 2)))


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1) for v in values)


def compare(
    a: Sequence[float],
    b: Sequence[float],
    weights: Sequence[float] | None = None,
    alpha: float = ALPHA,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> dict[str, Any]:
    """B - A on the same items: difference, its interval, the test and its verdict.

    Binary unweighted items are tested with McNemar's mid-p; anything else (weights,
    fractions, seed-averaged items) with the paired bootstrap's p-value. Always reports the
    paired bootstrap interval.
    """
    diff, p_boot = paired_bootstrap(a, b, weights, n_boot=n_boot, alpha=alpha, seed=seed)
    # the smallest nonzero bootstrap p: 2 of n_boot resamples on the far side of 0
    out: dict[str, Any] = {"diff": diff.as_dict(), "p_bootstrap": p_boot, "p_resolution": 2 / n_boot}
    if weights is None and is_binary(a) and is_binary(b):
        test = mcnemar(a, b)
        out["mcnemar"] = test.as_dict()
        out["test"], out["p"] = "McNemar mid-p", test.p_mid
    else:
        out["test"], out["p"] = "paired bootstrap", p_boot
    out["significant"] = bool(out["p"] < alpha)
    out["alpha"] = alpha
    return out


def format_p(comparison: dict[str, Any], adjusted: bool = False) -> str:
    """The test's p (or, `adjusted`, its Holm-adjusted p; "-" when the report has none) for a
    report. A bootstrap p of 0 means no resample crossed 0, so it prints as "< 2/n_boot" (the
    test's resolution; times the family size when adjusted), not as 0. Reports written
    before `p_resolution` was recorded used N_BOOT resamples."""
    key = "p_holm" if adjusted else "p"
    if comparison.get(key) is None:
        return "-"
    p = float(comparison[key])
    resolution = comparison.get("p_resolution", 2 / N_BOOT)
    if adjusted:
        resolution = min(1.0, resolution * comparison.get("family_size", 1))
    bootstrap = "bootstrap" in str(comparison.get("test", ""))
    if p == 0.0 and bootstrap:
        return f"< {resolution:.2g}"
    if adjusted and bootstrap and comparison.get("p") == 0.0:  # Holm of the bound 2/n_boot
        return f"<= {p:.3g}"
    return f"{p:.3g}"


def _p_text(comparison: dict[str, Any], adjusted: bool = False) -> str:
    text = format_p(comparison, adjusted)
    return f" {text}" if text.startswith("<") else f"={text}"


def _amount(d: dict[str, Any], unit: str) -> str:
    if unit == "nats":
        return f"{d['estimate']:+.3f} nats [{d['low']:+.3f}, {d['high']:+.3f}]"
    return f"{100 * d['estimate']:+.1f} points [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def describe(
    name_b: str,
    name_a: str,
    what: str,
    comparison: dict[str, Any],
    unit: str = "points",
    lower_is_better: bool = False,
) -> str:
    """One sentence: which way, by how much (points, or nats for an NLL), the interval, the
    test (and its Holm-adjusted p when the report has one), the verdict. A comparison with
    one seed on a side is suggestive only: the trained model's seed spread is unknown."""
    d = comparison["diff"]
    alpha = comparison.get("alpha", ALPHA)
    level = f"{100 * (1 - alpha):.0f}%"
    p_text = f"p{_p_text(comparison)}"
    if comparison.get("p_holm") is not None:
        p_text += f" (Holm-adjusted p{_p_text(comparison, adjusted=True)})"
    if comparison.get("one_seed"):
        verdict = "one seed on a side: suggestive only, not tested for significance"
    elif not comparison["significant"]:
        verdict = f"no significant difference at {level}"
    else:
        way = "higher" if d["estimate"] > 0 else "lower"
        verdict = f"{name_b} significantly {way} at {level}"
        verdict += " (lower is better)" if lower_is_better else ""
    return (
        f"{what}: {name_b} - {name_a} = {_amount(d, unit)} ({level} CI, n={d['n']}), "
        f"{comparison['test']} {p_text}: {verdict}."
    )
