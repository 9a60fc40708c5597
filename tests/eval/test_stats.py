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
    mcnemar,
    paired_bootstrap,
    paired_se,
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
