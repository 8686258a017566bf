"""Wilson and paired-bootstrap intervals against closed forms and published values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from minillada.stats import intervals_overlap, paired_bootstrap_interval, wilson_interval


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [
        # Newcombe (1998), Table I, method 3 (Wilson score without continuity correction).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_matches_published_values(k, n, low, high):
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=1e-4)


def test_wilson_is_symmetric_and_contains_the_estimate():
    for n in (1, 7, 100):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0
            mirrored = wilson_interval(n - k, n)
            assert (low, high) == pytest.approx((1 - mirrored[1], 1 - mirrored[0]))
    # More samples, narrower interval at the same rate.
    assert np.diff(wilson_interval(50, 100)) > np.diff(wilson_interval(500, 1000))


@pytest.mark.parametrize(("k", "n"), [(3, 2), (-1, 5), (0, 0)])
def test_wilson_names_bad_counts(k, n):
    with pytest.raises(ValueError, match=f"{k} of {n}"):
        wilson_interval(k, n)


def test_bootstrap_interval_covers_the_mean_like_the_normal_interval():
    rng = np.random.default_rng(1)
    values = rng.normal(0.3, 1.0, size=400)
    low, high = paired_bootstrap_interval(values, resamples=4000)
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half, abs=0.02)
    assert high == pytest.approx(values.mean() + half, abs=0.02)
    assert paired_bootstrap_interval(values, seed=3) == paired_bootstrap_interval(values, seed=3)


def test_bootstrap_names_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        paired_bootstrap_interval([1.0])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap_interval([1.0, 2.0], level=1.5)


def test_overlap():
    assert intervals_overlap((0.1, 0.3), (0.3, 0.5))
    assert not intervals_overlap((0.1, 0.29), (0.3, 0.5))
