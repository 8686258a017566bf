"""The study's statistics: Wilson intervals against published values; the training run as the
unit (point estimates, the hierarchical bootstrap, the verdict rule) against closed forms and
hand-built runs; result tables as outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from minillada.claims.statistics import (
    NO_SEED,
    Estimate,
    estimate,
    needed_bases,
    outcomes,
    verdict,
    wilson_interval,
)


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


def runs(rates: dict[str, list[list[float]]], units: int = 100, seed: int = 0,
         shared: dict[str, list[float]] | None = None) -> pd.DataFrame:
    """0/1 outcomes: rates[arm][base][i] is the success rate of post-training seed i on that
    base; `shared` arms (not post-trained) have one rate per base."""
    rng = np.random.default_rng(seed)
    rows = []
    for arm, per_base in rates.items():
        for base, seeds in enumerate(per_base):
            for index, rate in enumerate(seeds):
                hits = rng.random(units) < rate
                rows += [dict(base=base, seed=20 + index, arm=arm, unit=u, value=float(h))
                         for u, h in enumerate(hits)]
    for arm, per_base in (shared or {}).items():
        for base, rate in enumerate(per_base):
            hits = rng.random(units) < rate
            rows += [dict(base=base, seed=NO_SEED, arm=arm, unit=u, value=float(h))
                     for u, h in enumerate(hits)]
    return pd.DataFrame(rows)


def test_the_point_estimate_is_the_mean_over_bases_of_the_mean_over_seeds():
    frame = pd.DataFrame([dict(base=b, seed=s, arm="a", unit=u, value=v)
                          for b, s, values in ((0, 1, [1, 1]), (0, 2, [0, 0]), (1, 1, [1, 0]))
                          for u, v in enumerate(values)])
    result = estimate(frame, {"a": 1.0}, resamples=200)
    # base 0: the mean of its seeds' runs (1.0 and 0.0); base 1: its one run (0.5)
    assert result.mean == pytest.approx(0.5)
    assert result.bases == 2 and result.runs == 3 and result.units == 2
    assert [(b, s, v) for b, s, v, _ in result.per_run] == [(0, 1, 1.0), (0, 2, 0.0), (1, 1, 0.5)]


def test_a_base_with_more_seeds_does_not_weigh_more():
    frame = pd.DataFrame([dict(base=b, seed=s, arm="a", unit=0, value=v)
                          for b, s, v in ((0, 1, 1.0), (0, 2, 1.0), (0, 3, 1.0), (1, 1, 0.0))])
    assert estimate(frame, {"a": 1.0}, resamples=200).mean == pytest.approx(0.5)  # pooled: 0.75


def test_a_shared_model_serves_every_seed_of_its_base_and_pairs_by_unit():
    frame = runs({"ultra": [[0.9, 0.8], [0.7]]}, shared={"free": [0.1, 0.2]})
    result = estimate(frame, {"ultra": 1.0, "free": -1.0}, resamples=200)
    assert result.runs == 3 and result.bases == 2
    ultra = frame[frame["arm"] == "ultra"].groupby(["base", "seed"])["value"].mean()
    free = frame[frame["arm"] == "free"].groupby("base")["value"].mean()
    expected = np.mean([np.mean([ultra[(0, 20)], ultra[(0, 21)]]) - free[0],
                        ultra[(1, 20)] - free[1]])
    assert result.mean == pytest.approx(expected)


def test_the_interval_covers_the_spread_between_bases_not_only_prompts():
    # Five bases whose true rates differ widely: the across-run interval must be far wider than
    # a Wilson interval over the 500 pooled prompts, and the single-run range wider still.
    frame = runs({"a": [[0.2], [0.4], [0.6], [0.8], [0.5]]})
    result = estimate(frame, {"a": 1.0})
    low, high = result.ci
    assert high - low > 0.2
    assert result.run_range[0] < low and result.run_range[1] > high
    assert low < result.mean < high


def test_identical_runs_give_the_prompt_interval_only():
    frame = runs({"a": [[0.5]] * 5}, units=400)
    frame["value"] = np.tile(frame[frame["base"] == 0]["value"].to_numpy(), 5)  # same outcomes
    result = estimate(frame, {"a": 1.0})
    # Resampling 400 prompts of a 50 % rate: the interval is about +-2 standard errors.
    se = np.sqrt(0.25 / 400)
    assert result.ci[1] - result.ci[0] == pytest.approx(4 * se, rel=0.25)


def test_clusters_are_resampled_whole():
    # Two documents of 20 windows each; b - a is 1 on every window of document 0 and 0 on
    # document 1. By window (40 units) the interval would be about 0.5 +- 0.16; by document
    # there are two units, and a resample holds document 0 twice, once or never.
    frame = pd.DataFrame([dict(base=0, seed=NO_SEED, arm=arm, unit=f"{d}-{w}", cluster=d,
                               value=float(arm == "b" and d == 0))
                          for arm in ("a", "b") for d in (0, 1) for w in range(20)])
    result = estimate(frame, {"b": 1.0, "a": -1.0}, resamples=500)
    assert result.mean == pytest.approx(0.5)
    assert result.ci == (pytest.approx(0.0), pytest.approx(1.0))
    unclustered = estimate(frame.drop(columns="cluster"), {"b": 1.0, "a": -1.0}, resamples=500)
    assert 0.3 < unclustered.ci[0] < unclustered.ci[1] < 0.7


def test_unpaired_arms_resample_their_own_units():
    frame = pd.DataFrame([dict(base=0, seed=NO_SEED, arm=arm, unit=f"{arm}{u}", value=v)
                          for arm, values in (("near", [1, 1, 0, 1]), ("far", [0, 0, 1]))
                          for u, v in enumerate(values)])
    result = estimate(frame, {"near": 1.0, "far": -1.0}, paired=False, resamples=300)
    assert result.mean == pytest.approx(0.75 - 1 / 3)
    with pytest.raises(ValueError, match="share no unit"):
        estimate(frame, {"near": 1.0, "far": -1.0})


def test_bad_measurements_are_named():
    with pytest.raises(ValueError, match=r"missing \['unit'\]"):
        estimate(pd.DataFrame({"base": [0], "seed": [0], "arm": ["a"], "value": [1.0]}),
                 {"a": 1.0})
    with pytest.raises(ValueError, match=r"arm\(s\) \['b'\] have no rows"):
        estimate(runs({"a": [[0.5]]}), {"a": 1.0, "b": -1.0})


def fixed(mean: float, ci: tuple[float, float], bases: int, above: int, below: int) -> Estimate:
    return Estimate(mean, ci, ci, bases, bases, 100, above, below, ())


@pytest.mark.parametrize("result, kwargs, expected", [
    (fixed(10, (4, 16), 5, 5, 0), {}, "reproduced"),
    (fixed(10, (4, 16), 5, 3, 2), {}, "unclear"),       # 3 of 5 bases: below 80 %
    (fixed(10, (4, 16), 5, 4, 1), {}, "reproduced"),    # 4 of 5
    (fixed(10, (-1, 16), 5, 5, 0), {}, "unclear"),      # the interval reaches 0
    (fixed(-10, (-16, -4), 5, 0, 5), {}, "refuted"),
    (fixed(10, (4, 16), 2, 2, 0), {}, "unclear"),       # too few bases
    (fixed(10, (4, 16), 3, 3, 0), {"min_bases": 5}, "unclear"),
    # a loss gap: lower is better; non-inferiority below a margin of 0.01
    (fixed(0.002, (-0.003, 0.008), 3, 0, 3), {"margin": 0.01, "higher_is_better": False},
     "reproduced"),
    (fixed(0.02, (0.012, 0.03), 3, 3, 0), {"margin": 0.01, "higher_is_better": False},
     "refuted"),
    (fixed(0.008, (0.002, 0.014), 3, 0, 3), {"margin": 0.01, "higher_is_better": False},
     "unclear"),
])
def test_the_verdict_rule(result, kwargs, expected):
    assert verdict(result, **kwargs) == expected


def test_needed_bases():
    assert [needed_bases(n) for n in (1, 3, 4, 5, 10)] == [1, 3, 4, 4, 8]


def test_more_seeds_of_one_recipe_show_their_spread_in_the_single_run_range():
    narrow = estimate(runs({"a": [[0.5, 0.5]] * 3}, units=200), {"a": 1.0})
    wide = estimate(runs({"a": [[0.2, 0.8]] * 3}, units=200), {"a": 1.0})
    assert (wide.run_range[1] - wide.run_range[0]) > 2 * (narrow.run_range[1] - narrow.run_range[0])


def test_outcomes_name_a_unit_per_prompt_and_keep_columns():
    table = pd.DataFrame({"task": ["niah"] * 2, "length": [64, 64], "depth": [0.0, 50.0],
                          "repeat": [0, 0], "exact": [1.0, 0.0], "document": [3, 4]})
    frame = outcomes(table, base=11, seed=21, arm=["a", "b"], cluster="document",
                     keep=("length",))
    assert frame["unit"].tolist() == ["niah|64|0.0|0", "niah|64|50.0|0"]
    assert frame["arm"].tolist() == ["a", "b"] and frame["cluster"].tolist() == [3, 4]
    assert set(frame.columns) == {"base", "seed", "arm", "unit", "value", "cluster", "length"}
