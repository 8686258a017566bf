"""The calibrated rule (minillada.claims.rule): its numbers against closed forms and scipy, and
its false-verdict rate under a null simulated at the gated design's sizes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from minillada.claims.rule import (
    AcrossBases,
    BaseValue,
    Part,
    across_bases,
    base_values,
    claim_side,
    family_verdicts,
    holm,
    t_interval,
    t_test,
    welch_interval,
)


def test_t_interval_and_test_match_scipy():
    values = [3.0, 5.0, 4.5, 7.0, 6.0]
    mean, low, high = t_interval(values)
    reference = scipy_stats.t.interval(0.95, 4, loc=np.mean(values),
                                       scale=scipy_stats.sem(values))
    assert mean == pytest.approx(5.1)
    assert (low, high) == pytest.approx(reference)
    assert t_test(values, 4.0) == pytest.approx(scipy_stats.ttest_1samp(values, 4.0).pvalue)


def test_samples_without_spread_and_single_values():
    assert t_test([2.0, 2.0, 2.0]) == 0.0 and t_test([0.0, 0.0]) == 1.0
    assert t_test([5.0]) == 1.0
    assert math.isnan(t_interval([1.0])[1])
    assert welch_interval([1.0, 1.0], [0.0, 0.0]) == (1.0, 1.0, 1.0)


def test_welch_interval_matches_scipy():
    a, b = [1.0, 2.0, 4.0, 3.0], [0.0, 1.5, 0.5, 2.0, 1.0, 0.0]
    diff, low, high = welch_interval(a, b)
    result = scipy_stats.ttest_ind(a, b, equal_var=False)
    reference = result.confidence_interval(0.95)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high) == pytest.approx((reference.low, reference.high))


def test_holm_matches_the_step_down_procedure():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.5})
    assert adjusted == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.5})
    assert holm({"x": 0.7, "y": 0.6}) == pytest.approx({"y": 1.0, "x": 1.0})


def outcomes(values: dict[tuple[int, int, str], list[float]],
             clusters: list[int] | None = None) -> pd.DataFrame:
    rows = []
    for (base, seed, arm), units in values.items():
        for unit, value in enumerate(units):
            row = {"base": base, "seed": seed, "arm": arm, "unit": str(unit), "value": value}
            if clusters is not None:
                row["cluster"] = clusters[unit]
            rows.append(row)
    return pd.DataFrame(rows)


def test_base_values_average_runs_then_clusters_and_pair_units():
    frame = outcomes({(1, 21, "a"): [1, 1, 0, 1], (1, 22, "a"): [1, 0, 0, 1],
                      (1, -1, "b"): [0, 0, 0, 1]}, clusters=[0, 0, 1, 2])
    (value,) = base_values(frame, {"a": 1.0, "b": -1.0})
    # per unit a - b over the two runs: [1, 0.5, 0, 0]; clusters {0: 0.75, 1: 0, 2: 0}
    assert value.mean == pytest.approx(0.25) and value.units == 3 and value.runs == 2
    assert (value.low, value.high) == pytest.approx(t_interval([0.75, 0.0, 0.0])[1:])


def test_unpaired_bases_use_welch():
    frame = outcomes({(1, -1, "near"): [1, 1, 0, 1], (1, -1, "far"): [0, 0, 1, 0, 0]})
    (value,) = base_values(frame, {"near": 1.0, "far": -1.0}, paired=False)
    assert (value.mean, value.low, value.high) == pytest.approx(
        welch_interval([1, 1, 0, 1], [0, 0, 1, 0, 0]))


def part(base_means, own, higher_is_better=True, margin=0.0):
    per_base = [BaseValue(i, m, m - own, m + own, 100, 1) for i, m in enumerate(base_means)]
    return Part(across_bases(per_base, margin), higher_is_better)


def test_claim_side_is_intersection_union_then_bonferroni():
    good, weak = part([10, 12, 9, 11, 10], 3), part([3, -2, 5, 1, 4], 3)
    assert claim_side([good, weak]) == ("for", max(good.test.p, weak.test.p))
    bad = part([-10, -12, -9, -11, -10], 3)
    assert claim_side([good, bad]) == ("against", min(1.0, 2 * bad.test.p))
    loss = part([-0.2, -0.3, -0.25, -0.2, -0.3], 0.05, higher_is_better=False)
    assert claim_side([loss])[0] == "for"


def test_verdicts_need_five_bases_and_agreeing_own_tests():
    strong = part([10, 12, 9, 11, 10], 3)
    assert family_verdicts({"c": [strong]})["c"]["verdict"] == "reproduced"
    noisy_bases = part([10, 12, 9, 11, 10], 11)  # each base's own interval crosses 0
    assert family_verdicts({"c": [noisy_bases]})["c"]["verdict"] == "unclear"
    four = Part(AcrossBases(10.0, (8, 12), 1e-6, 0.0, strong.test.per_base[:4]))
    assert family_verdicts({"c": [four]})["c"]["verdict"] == "unclear"
    against = part([-10, -12, -9, -11, -10], 3)
    assert family_verdicts({"c": [against]})["c"]["verdict"] == "refuted"


def test_holm_across_the_family_can_withhold_a_verdict():
    # p of 0.014 passes alone; beside seven null claims Holm asks p <= 0.05 / 8
    marginal = part([5, 10, 3, 8, 3], 2.5)
    assert 0.05 / 8 < marginal.test.p < 0.05
    assert family_verdicts({"c": [marginal]})["c"]["verdict"] == "reproduced"
    family = {"c": [marginal], **{f"null{i}": [part([1, -1, 0.5, -0.5, 0], 3)] for i in range(7)}}
    assert family_verdicts(family)["c"]["verdict"] == "unclear"


def simulated_contrast(rng: np.random.Generator, effect: float, bases: int = 5,
                       prompts: int = 100, run_sd: float = 1.0, level: float = 0.0,
                       level_sd: float = 2.0) -> list[BaseValue]:
    """Two post-trained arms per base on the same prompts, 0/1 outcomes (in %): each base its
    own rate (logit ~ N(level, level_sd)), each run its own shift (N(0, run_sd)), each prompt
    its own difficulty (N(0, 1)) shared by the arms; arm a is `effect` logits above arm b."""
    values = []
    for base in range(bases):
        level, difficulty = rng.normal(level, level_sd), rng.normal(0, 1, prompts)
        rates = [1 / (1 + np.exp(-(level + shift + rng.normal(0, run_sd) + difficulty)))
                 for shift in (effect, 0.0)]
        a, b = (100.0 * (rng.random(prompts) < rate) for rate in rates)
        mean, low, high = t_interval(a - b)
        if low != low:
            low = high = mean
        values.append(BaseValue(base, mean, low, high, prompts, 1))
    return values


@pytest.mark.slow
def test_the_rule_keeps_false_verdicts_at_or_below_5_percent_under_the_null():
    """Eight claims of five bases, one run each and 100 paired prompts, no true effect: how
    often does any verdict other than `unclear` come out? The design's sizes, run-to-run spread
    from none to large."""
    rng = np.random.default_rng(2029)
    families = 200
    for run_sd in (0.0, 1.0, 2.0):
        any_false = single_false = 0
        for _ in range(families):
            decided = family_verdicts({
                f"claim {i}": [Part(across_bases(simulated_contrast(rng, 0.0, run_sd=run_sd)))]
                for i in range(8)})
            verdicts = [d["verdict"] for d in decided.values()]
            any_false += any(v != "unclear" for v in verdicts)
            single_false += verdicts[0] != "unclear"
        assert any_false / families <= 0.05, (run_sd, any_false)
        assert single_false / families <= 0.05, (run_sd, single_false)


@pytest.mark.slow
def test_the_rule_detects_an_effect_of_the_size_the_study_expects():
    """The same design with the gain the study looks for at 16x: a baseline near the floor
    (about 5 %, logit -3 with spread 1 across bases) and the post-trained model 4 logits above
    it (about 70 %), beside seven null claims: reproduced in at least 80 % of the families."""
    rng = np.random.default_rng(7)
    hits, families = 0, 50
    for _ in range(families):
        family = {"effect": [Part(across_bases(simulated_contrast(
            rng, 4.0, run_sd=0.5, level=-3.0, level_sd=1.0)))]}
        family.update({f"null {i}": [Part(across_bases(simulated_contrast(rng, 0.0)))]
                       for i in range(7)})
        hits += family_verdicts(family)["effect"]["verdict"] == "reproduced"
    assert hits >= 0.8 * families, hits


def test_the_committed_claims_are_re_decided_on_their_base_means():
    from minillada.claims.both_rules import under_both_rules
    from minillada.claims.report import Claim

    def claim(cid, values, chance=1.0, key="a - b"):
        runs = [{"base": base, "seed": seed, "value": v, "n": 100}
                for base, seed, v in values]
        return Claim(cid, "c", "m", {key: {"per_run": runs}}, chance, "t", "reproduced",
                     tested=[key])

    strong = claim("strong", [(b, 1, 10 + b % 3) for b in range(1, 6)]
                   + [(1, 2, 12.0)])  # base 1's two runs average to 11.5
    weak = claim("weak", [(b, 1, v) for b, v in zip(range(1, 6), [9, -2, 4, 0, 1], strict=True)])
    few = claim("few", [(b, 1, 10.0 + b) for b in range(1, 4)])
    loss = claim("loss", [(b, 1, -0.1 - 0.01 * b) for b in range(1, 6)], chance=None,
                 key="diffusion_ntk - ntk_critical @ 2048")
    table = under_both_rules([strong, weak, few, loss]).set_index("claim")
    assert table.loc["strong", "bases"] == 5
    means = [11.5, 12, 10, 11, 12]
    _, low, high = t_interval(means)
    assert table.loc["strong", "mean over bases [95% t]"] == f"{11.3:.3g} [{low:.3g}, {high:.3g}]"
    assert table.loc["strong", "calibrated rule"] == "for the claim: needs the bases' own intervals"
    assert table.loc["weak", "calibrated rule"] == "unclear"
    assert table.loc["few", "calibrated rule"] == "unclear (< 5 bases)"
    # a loss claims the lower side of its non-inferiority margin
    assert table.loc["loss", "margin"] == 0.01
    assert table.loc["loss", "calibrated rule"].startswith("for the claim")
