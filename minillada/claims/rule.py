"""The calibrated rule that decides the gated study's claims (docs/science.md, "The gated design").

Bases are the unit that generalises: a quantity (a contrast of arms, e.g. {"adaptive": 1,
"direct": -1}) is decided on its base values, each the mean over the base's runs of the
per-prompt contrast. `across_bases` gives their mean, its t-interval with B - 1 degrees of
freedom and the two-sided one-sample t-test against 0 (or a margin), and every base's own
interval over its prompts (t over the per-prompt contrasts, averaged within clusters such as the
windows of one document; Welch for unpaired arms). A claim holds one or more such quantities,
all of which must hold (`claim_side`: an intersection-union test, so none is corrected within a
claim). `family_verdicts` adjusts the claims' p-values by Holm's step-down (family-wise 5 %) and
asks, for `reproduced`, that at least 80 % of the bases agree by their own test in every part.
`tests/test_statistics.py` simulates the null at the design's sizes to show the false-verdict
rate stays at or below 5 %.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

# the 80 % share of the previous rule, and the one check of a contrast's outcome rows
from minillada.claims.statistics import contrast_rows, needed_bases

LEVEL = 0.95  # every interval; each test is two-sided at 1 - LEVEL before Holm
MIN_BASES = 5  # a verdict needs at least this many bases
NO_SEED = -1  # the `seed` of a model that was not post-trained (serves every seed of its base)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the mean of `values` and its t-interval with n - 1 degrees of freedom;
    a constant sample's interval is the point itself, a single value's is nan."""
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = float(scipy_stats.t.ppf(0.5 + level / 2, values.size - 1)) * _standard_error(values)
    return mean, mean - half, mean + half


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1)) / math.sqrt(values.size)


def t_test(values: Sequence[float], margin: float = 0.0) -> float:
    """Two-sided p-value of the one-sample t-test "mean = margin" (n - 1 degrees of freedom). A
    sample without spread gives 0 when it lies off the margin and 1 on it; fewer than two
    values give 1 (nothing can be decided)."""
    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return 1.0
    mean, error = float(values.mean()), _standard_error(values)
    if error == 0.0:
        return 0.0 if mean != margin else 1.0
    return float(2.0 * scipy_stats.t.sf(abs(mean - margin) / error, values.size - 1))


def welch_interval(a: Sequence[float], b: Sequence[float],
                   level: float = LEVEL) -> tuple[float, float, float]:
    """(difference, low, high): mean(a) - mean(b) with Welch's t-interval (unequal variances,
    Welch-Satterthwaite degrees of freedom); no spread in either: the point itself."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    difference = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0.0:
        return difference, difference, difference
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(scipy_stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(va + vb)
    return difference, difference - half, difference + half


@dataclass(frozen=True)
class BaseValue:
    """One base's value of a quantity: the mean over its `runs` of the per-prompt contrast, and
    its own 95 % interval over its `units` (prompts, or clusters of them)."""

    base: int
    mean: float
    low: float
    high: float
    units: int
    runs: int


@dataclass(frozen=True)
class AcrossBases:
    """A quantity decided on base values: their mean with its 95 % t-interval (B - 1 degrees of
    freedom), the two-sided t-test p-value against `margin`, and every base's own value."""

    mean: float
    ci: tuple[float, float]
    p: float
    margin: float
    per_base: tuple[BaseValue, ...]

    @property
    def bases(self) -> int:
        return len(self.per_base)

    def agreeing(self, higher_is_better: bool = True) -> tuple[int, int]:
        """(bases whose own interval lies wholly on the claimed side of the margin, bases whose
        own interval lies wholly on the other side)."""
        above = sum(b.low > self.margin for b in self.per_base)
        below = sum(b.high < self.margin for b in self.per_base)
        return (above, below) if higher_is_better else (below, above)

    def as_dict(self) -> dict[str, Any]:
        return {"mean": round(self.mean, 4), "ci": [round(v, 4) for v in self.ci],
                "p": self.p, "margin": self.margin,
                "per_base": [{**asdict(b), "mean": round(b.mean, 4), "low": round(b.low, 4),
                              "high": round(b.high, 4)} for b in self.per_base]}


def _cluster_means(frame: pd.DataFrame) -> pd.Series:
    """The per-unit values of one base and arm, averaged over its runs, then within clusters."""
    per_unit = frame.groupby("unit")["value"].mean()
    clusters = frame.drop_duplicates("unit").set_index("unit")["cluster"]
    return per_unit.groupby(clusters.loc[per_unit.index].to_numpy()).mean()


def base_values(frame: pd.DataFrame, weights: Mapping[str, float],
                paired: bool = True) -> list[BaseValue]:
    """Every base's value of the contrast `weights` over `frame`'s outcomes (columns base, seed,
    arm, unit, value, and optionally cluster; `NO_SEED` rows serve every seed of their base).
    Paired: on the units every arm of the base shares, the per-unit contrast averaged over the
    base's runs, then over clusters, with its t-interval. Unpaired (two arms): the difference of
    the arms' cluster means with Welch's interval."""
    frame = contrast_rows(frame, weights)
    if not paired and len(weights) != 2:
        raise ValueError(f"an unpaired contrast compares two arms, got {dict(weights)}")
    values = []
    for base, at_base in frame.groupby("base", sort=True):
        if set(at_base["arm"]) != set(weights):
            continue
        seeds = sorted(s for s in at_base["seed"].unique() if s != NO_SEED) or [NO_SEED]
        per_arm = {arm: _cluster_means(at_base[at_base["arm"] == arm]) for arm in weights}
        if paired:
            shared = sorted(set.intersection(*(set(v.index) for v in per_arm.values())), key=str)
            if not shared:
                raise ValueError(f"base {base}: the arms share no unit; compare them unpaired")
            contrast = sum(weight * per_arm[arm].loc[shared]
                           for arm, weight in weights.items())
            mean, low, high = t_interval(contrast.to_numpy())
            units = len(shared)
        else:
            (first, w1), (second, _) = weights.items()
            a, b = per_arm[first].to_numpy(), per_arm[second].to_numpy()
            mean, low, high = welch_interval(a, b) if w1 > 0 else welch_interval(b, a)
            units = min(a.size, b.size)
        values.append(BaseValue(int(base), mean, low, high, units, len(seeds)))
    if not values:
        raise ValueError(f"no base holds every arm of the contrast {dict(weights)}")
    return values


def across_bases(per_base: Sequence[BaseValue], margin: float = 0.0) -> AcrossBases:
    """The mean of the base values, its t-interval and t-test against `margin`."""
    means = [b.mean for b in per_base]
    mean, low, high = t_interval(means)
    return AcrossBases(mean, (low, high), t_test(means, margin), margin, tuple(per_base))


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjustment: the k-th smallest of m p-values times (m - k + 1), kept
    monotone and capped at 1 (Holm 1979); a family-wise error of alpha rejects those <= alpha."""
    adjusted, running = {}, 0.0
    ordered = sorted(pvalues, key=lambda key: pvalues[key])
    for rank, key in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * pvalues[key]))
        adjusted[key] = running
    return adjusted


@dataclass(frozen=True)
class Part:
    """A tested quantity of a claim and the side it claims (higher, or lower for a loss)."""

    test: AcrossBases
    higher_is_better: bool = True

    @property
    def on_claimed_side(self) -> bool:
        gap = self.test.mean - self.test.margin
        return gap > 0 if self.higher_is_better else gap < 0


def claim_side(parts: Sequence[Part]) -> tuple[str, float]:
    """("for", p) with p the largest of the parts' p-values when every part lies on the claimed
    side (intersection-union); else ("against", p) with the smallest p of the parts on the other
    side times the number of parts (Bonferroni)."""
    if not parts:
        raise ValueError("a claim needs at least one tested quantity")
    if all(part.on_claimed_side for part in parts):
        return "for", max(part.test.p for part in parts)
    against = min(part.test.p for part in parts if not part.on_claimed_side)
    return "against", min(1.0, len(parts) * against)


def family_verdicts(claims: Mapping[str, Sequence[Part]], alpha: float = 1 - LEVEL,
                    min_bases: int = MIN_BASES) -> dict[str, dict[str, Any]]:
    """Every claim's verdict under the calibrated rule (module doc): `verdict`, the side its
    estimates take (`direction`), its `p` and Holm-adjusted `p_holm`, and its `bases`."""
    sides = {claim: claim_side(parts) for claim, parts in claims.items()}
    adjusted = holm({claim: p for claim, (_, p) in sides.items()})
    decided = {}
    for claim, parts in claims.items():
        direction, p = sides[claim]
        bases = min(part.test.bases for part in parts)
        verdict = "unclear"
        if bases >= min_bases and adjusted[claim] <= alpha:
            if direction == "for" and all(
                    part.test.agreeing(part.higher_is_better)[0] >= needed_bases(part.test.bases)
                    for part in parts):
                verdict = "reproduced"
            elif direction == "against" and any(
                    not part.on_claimed_side and part.test.agreeing(part.higher_is_better)[1]
                    >= needed_bases(part.test.bases) for part in parts):
                verdict = "refuted"
        decided[claim] = {"verdict": verdict, "direction": direction, "p": p,
                          "p_holm": adjusted[claim], "bases": bases}
    return decided
