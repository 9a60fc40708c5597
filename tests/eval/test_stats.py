"""stats.py against hand calculations, scipy (when installed) and synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raft_distill.evaluate.stats import (
    bootstrap_ci,
    compare,
    describe,
    format_p,
    holm,
    mcnemar,
    paired_bootstrap,
    paired_se,
    two_level_bootstrap,
    two_level_ci,
    weighted_mean,
)


def _pairs(a_only: int, b_only: int, both: int = 5, neither: int = 3) -> tuple[list[int], list[int]]:
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * neither
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * neither
    return a, b


def test_mcnemar_by_hand() -> None:
    # discordant 1 vs 7: n = 8, P(X <= 1) = 9/256, P(X = 1) = 8/256
    result = mcnemar(*_pairs(1, 7))
    assert (result.a_only, result.b_only) == (1, 7)
    assert result.p_exact == pytest.approx(18 / 256)
    assert result.p_mid == pytest.approx(2 * (9 / 256 - 4 / 256))


def test_mcnemar_edges() -> None:
    assert mcnemar(*_pairs(0, 0)).p_exact == 1.0 and mcnemar(*_pairs(0, 0)).p_mid == 1.0
    tied = mcnemar(*_pairs(4, 4))
    assert tied.p_exact == 1.0 and tied.p_mid == pytest.approx(1.0)
    one_sided = mcnemar(*_pairs(0, 10))
    assert one_sided.p_exact == pytest.approx(2 / 1024)
    assert one_sided.p_mid == pytest.approx(1 / 1024)
    with pytest.raises(ValueError):
        mcnemar([1, 0], [1])


def test_mcnemar_matches_scipy_binomtest() -> None:
    stats = pytest.importorskip("scipy.stats")
    for a_only, b_only in ((3, 12), (20, 31), (7, 7), (0, 5), (40, 25)):
        ours = mcnemar(*_pairs(a_only, b_only))
        n, k = a_only + b_only, min(a_only, b_only)
        assert ours.p_exact == pytest.approx(stats.binomtest(k, n, 0.5).pvalue, rel=1e-12)
        mid = 2 * (stats.binom.cdf(k, n, 0.5) - 0.5 * stats.binom.pmf(k, n, 0.5))
        assert ours.p_mid == pytest.approx(min(1.0, mid), rel=1e-9)


def test_bootstrap_ci_covers_the_true_mean() -> None:
    """95% intervals from 200 synthetic samples (p = 0.3, n = 400) cover 0.3 about 95% of
    the time (binomial tolerance for 200 trials), and their width is ~ 2 x 1.96 x SE."""
    rng = np.random.default_rng(123)
    covered = 0
    widths = []
    for trial in range(200):
        sample = (rng.random(400) < 0.3).astype(float)
        ci = bootstrap_ci(sample, n_boot=500, seed=trial)
        covered += ci.low <= 0.3 <= ci.high
        widths.append(ci.high - ci.low)
        assert ci.estimate == pytest.approx(sample.mean())
    assert 180 <= covered <= 199
    se = math.sqrt(0.3 * 0.7 / 400)
    assert float(np.mean(widths)) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_is_deterministic_and_weighted() -> None:
    values = [1, 0, 1, 1, 0, 0.5]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    # weights = instructions per prompt: the weighted mean is the pooled share
    assert weighted_mean([1.0, 0.5], [1, 2]) == pytest.approx(2 / 3)
    ci = bootstrap_ci([1.0, 0.5, 0.0], [1, 2, 3])
    assert ci.estimate == pytest.approx(2 / 6) and ci.low <= ci.estimate <= ci.high


def test_paired_bootstrap_sees_what_unpaired_misses() -> None:
    """B = A plus 30 extra right answers out of 1000: +3 points; pairing gives a tight
    interval (SE ~ 0.54 points) although each accuracy alone has SE ~ 1.6 points."""
    rng = np.random.default_rng(0)
    a = (rng.random(1000) < 0.5).astype(float)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:30]] = 1
    diff, p = paired_bootstrap(a, b, seed=1)
    assert diff.estimate == pytest.approx(0.03)
    assert 0.015 < diff.low < 0.03 < diff.high < 0.045
    assert p < 0.01
    assert paired_se(a, b) == pytest.approx(math.sqrt(0.03 * 0.97 / 999), rel=1e-6)
    alone = bootstrap_ci(a, seed=1)
    assert alone.high - alone.low > 4 * (diff.high - diff.low) / 2


def test_compare_and_describe() -> None:
    a, b = _pairs(2, 15, both=50, neither=33)
    result = compare(a, b)
    assert result["test"] == "McNemar mid-p" and result["significant"]
    assert result["mcnemar"]["b_only"] == 15
    text = describe("raft", "sft", "domain accuracy", result)
    assert text.startswith("domain accuracy: raft - sft = +13.0 points")
    assert "significantly higher at 95%" in text
    same = compare(*_pairs(5, 6, both=50, neither=39))
    assert not same["significant"]
    assert "no significant difference" in describe("b", "a", "x", same)
    frac = compare([0.5, 1.0, 0.0, 1.0], [1.0, 1.0, 0.5, 1.0], weights=[2, 1, 2, 1])
    assert frac["test"] == "paired bootstrap" and "mcnemar" not in frac


def test_bootstrap_p_of_zero_is_reported_as_a_bound() -> None:
    """No resample crossing 0 means p below the bootstrap's resolution, not p = 0."""
    a = [0.0] * 30
    b = [1.0] * 20 + [0.5] * 10  # fractions: the paired bootstrap's p, every resample > 0
    c = compare(a, b, n_boot=2000)
    assert c["test"] == "paired bootstrap" and c["p_bootstrap"] == 0.0
    assert c["p_resolution"] == pytest.approx(0.001)
    assert format_p(c) == "< 0.001"
    assert "p < 0.001" in describe("B", "A", "score", c)
    older = {k: v for k, v in c.items() if k != "p_resolution"}  # a report.json from before
    assert format_p(older) == "< 0.001"
    mixed = compare([0.0, 1.0, 0.5, 0.0, 1.0], [1.0, 0.0, 0.5, 1.0, 0.0], n_boot=2000)
    assert format_p(mixed) == f"{mixed['p']:.3g}"


def test_holm_step_down_by_hand() -> None:
    """Holm (1979): sorted p_(j) times (m - j + 1), running maximum, capped at 1, returned in
    the input order."""
    # sorted: 0.01 x 4 = 0.04, 0.02 x 3 = 0.06, 0.03 x 2 = 0.06 (monotone), 0.5 x 1 = 0.5
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.4, 0.3]) == pytest.approx([0.6, 0.6])  # running max keeps it monotone
    assert holm([0.9, 0.8, 0.7]) == [1.0, 1.0, 1.0]  # capped at 1
    assert holm([0.2]) == pytest.approx([0.2]) and holm([]) == []


def _seeded_arm(rng: np.random.Generator, logits: np.ndarray, seeds: int, sd: float) -> np.ndarray:
    """seeds x items 0/1 outcomes: each seed's model is the generator shifted by its own logit
    offset (training-seed variation), each item by its difficulty."""
    offsets = rng.normal(0.0, sd, size=(seeds, 1))
    return (rng.random((seeds, len(logits))) < 1 / (1 + np.exp(-(logits + offsets)))).astype(float)


def test_two_level_bootstrap_holds_its_level_where_the_item_test_does_not() -> None:
    """200 simulated reports: two arms drawn from one generator (300 binary items with
    difficulties logit ~ N(0, 1.5), 3 seeds per arm, each seed offset on the logit by
    N(0, 0.3), the spread seen between SFT seeds). Every "significant" difference is a false
    positive. The item-only test on seed-averaged items (the old report) treats the trained
    models as fixed and flags ~40% here; the two-level bootstrap stays near 5% (<= 8%)."""
    rng = np.random.default_rng(2024)
    old = new = 0
    for trial in range(200):
        logits = rng.normal(0.0, 1.5, size=300)
        a, b = (_seeded_arm(rng, logits, 3, 0.3) for _ in range(2))
        _, p_items = paired_bootstrap(a.mean(axis=0), b.mean(axis=0), n_boot=400, seed=trial)
        _, p_two = two_level_bootstrap(list(a), list(b), n_boot=400, seed=trial)
        old += p_items < 0.05
        new += p_two < 0.05
    assert new / 200 <= 0.08
    assert old / 200 >= 0.25  # the bias this test replaces, measured on the same data


def test_two_level_bootstrap_finds_a_real_difference_and_is_deterministic() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(0.0, 1.5, size=300)
    a = list(_seeded_arm(rng, logits, 3, 0.3))
    b = list(_seeded_arm(rng, logits + 1.0, 3, 0.3))  # +1 logit: ~ +15 points
    diff, p = two_level_bootstrap(a, b, n_boot=1000, seed=1)
    assert diff.estimate == pytest.approx(np.mean(b) - np.mean(a))
    assert 0 < diff.low < diff.estimate < diff.high and p < 0.01
    assert two_level_bootstrap(a, b, n_boot=1000, seed=1) == (diff, p)
    # one seed each: the paired item bootstrap (no seed level to resample)
    one, _ = two_level_bootstrap(a[:1], b[:1], n_boot=500, seed=0)
    ref, _ = paired_bootstrap(a[0], b[0], n_boot=500, seed=0)
    assert one.estimate == pytest.approx(ref.estimate)
    assert one.high - one.low == pytest.approx(ref.high - ref.low, rel=0.25)


def test_two_level_bootstrap_seed_level_and_weights() -> None:
    """Identical items across seeds but seed means 0.4 and 0.6: the seed spread alone widens
    the interval; weights enter the means (IFEval's instruction level)."""
    a = [[0.5] * 40, [0.5] * 40]
    b = [[0.4] * 40, [0.6] * 40]
    diff, p = two_level_bootstrap(a, b, n_boot=800, seed=0)
    assert diff.estimate == pytest.approx(0.0) and p > 0.5
    assert diff.low < -0.05 and diff.high > 0.05  # no item noise: all of it is seed spread
    w = [3.0, 1.0]
    got, _ = two_level_bootstrap([[0.0, 0.0]], [[1.0, 0.0]], weights=w, n_boot=50)
    assert got.estimate == pytest.approx(0.75)
    ci = two_level_ci([[1.0, 0.0], [1.0, 1.0]], weights=w, n_boot=200)
    assert ci.estimate == pytest.approx((0.75 + 1.0) / 2) and ci.low <= ci.estimate <= ci.high
    with pytest.raises(ValueError, match="same items"):
        two_level_bootstrap([[1.0, 0.0]], [[1.0]])
    with pytest.raises(ValueError, match="no seeds"):
        two_level_bootstrap([], [[1.0]])


def test_format_and_describe_the_two_level_comparison() -> None:
    """The Holm-adjusted p prints beside the raw one (its bound for a raw 0 scales with the
    family), a one-seed comparison is called suggestive, an NLL difference reads in nats
    with the direction that is better."""
    c = {
        "diff": {"estimate": -0.05, "low": -0.08, "high": -0.02, "n": 300},
        "test": "two-level bootstrap (seeds, items)",
        "p": 0.0, "p_holm": 0.0, "p_resolution": 0.001, "family_size": 8,
        "seeds": [3, 3], "one_seed": False, "significant": True, "alpha": 0.05,
    }
    assert format_p(c) == "< 0.001" and format_p(c, adjusted=True) == "< 0.008"
    floored = {**c, "p_holm": 0.008}  # since the Holm floor: the bound's adjusted p
    assert format_p(floored) == "< 0.001" and format_p(floored, adjusted=True) == "<= 0.008"
    assert format_p({**floored, "p": 0.0005}, adjusted=True) == "0.008"
    assert format_p({"p": 0.2, "test": "McNemar mid-p"}, adjusted=True) == "-"  # older report
    text = describe("raft", "sft", "domain NLL", c, unit="nats", lower_is_better=True)
    assert "raft - sft = -0.050 nats [-0.080, -0.020]" in text
    assert "p < 0.001 (Holm-adjusted p < 0.008)" in text
    assert "significantly lower at 95% (lower is better)" in text
    one = {**c, "p": 0.01, "p_holm": 0.08, "one_seed": True, "significant": False, "seeds": [1, 3]}
    assert "one seed on a side: suggestive only" in describe("a", "b", "x", one)
    assert "-5.0 points" in describe("a", "b", "x", one)
