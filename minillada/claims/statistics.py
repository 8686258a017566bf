"""The study's statistics: Wilson intervals of accuracies, and estimates across training runs.

Accuracies: `wilson_interval` (Wilson 1927) and `proportion_table` (n, %, interval per group);
`by_needle_distance` re-bins a retrieval table by the needle's distance from the question.

Across runs, the training run is the unit of replication. A measurement is a tidy frame with one
row per (base, seed, arm, unit) (`outcomes` makes one from a result table): `base` is the seed of
the pre-trained base model, `seed` the post-training seed (-1 for a model that was not
post-trained, which then serves every seed of its base), `arm` the model compared, `unit` the
prompt (or held-out window) and `value` its outcome (0/1 exact match, a loss, ...); an optional
`cluster` column groups units that are not independent (the windows of one document).

A contrast is a weighted sum of arm means, e.g. {"adaptive": 1, "direct": -1}. Its value for one
run is computed on that run's units (paired: the units every arm shares, resampled together; or
unpaired: each arm's own units). Every run answers the same prompts, so prompts are crossed with
runs. `estimate` gives the mean over bases of the mean over seeds, and a hierarchical percentile
bootstrap (bases with replacement, then seeds within each base; and one resample of the clusters
of units per replicate, shared by every run) for:

- `ci`, the 95 % interval of that mean: what another set of bases would give;
- `run_range`, the 95 % range of a single new run's value (one base, one seed, its prompts): what
  one reproduction on another machine should fall in.

With few bases a percentile bootstrap is narrow (3 bases have 10 distinct resamples), so verdicts
also ask the same sign in most bases (`verdict`). `summarize` and `estimate_entry` store an
estimate as a claim holds it (`claims.report`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

# ---------------------------------------------------------------------------------------------
# Accuracies: Wilson intervals
# ---------------------------------------------------------------------------------------------

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (Wilson 1927), as fractions in [0, 1]:

        centre = (k + z^2/2) / (n + z^2),  half = z / (n + z^2) * sqrt(k (n - k) / n + z^2 / 4)

    Unlike the normal interval it stays inside [0, 1] and is not empty at k = 0 or k = n.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials >= 1, got {successes} of "
                         f"{trials}")
    k, n, z2 = float(successes), float(trials), z * z
    centre = (k + z2 / 2) / (n + z2)
    half = z / (n + z2) * math.sqrt(k * (n - k) / n + z2 / 4)
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_table(frame: pd.DataFrame, by: Sequence[str], column: str = "exact",
                     z: float = Z95) -> pd.DataFrame:
    """Per group of `by`: n, the successes (sum of the 0/1 `column`), the percentage and its
    Wilson interval (`low`, `high`, in %), in the groups' first-seen order."""
    if frame.empty:
        raise ValueError("no rows to summarise")
    rows = []
    for key, group in frame.groupby(list(by), sort=False):
        values = group[column].to_numpy(dtype=float)
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError(f"column {column!r} must hold 0/1 outcomes")
        n, k = len(values), int(values.sum())
        low, high = wilson_interval(k, n, z)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)), "n": n, "successes": k,
                     "percent": 100.0 * k / n, "low": 100.0 * low, "high": 100.0 * high})
    return pd.DataFrame(rows)


def by_needle_distance(frame: pd.DataFrame, bin_width: int | None = None,
                       edges: Sequence[int] | None = None) -> pd.DataFrame:
    """Retrieval re-binned by the needle's distance from the question instead of its depth.

    LongLLaDA's "local perception": under direct extrapolation a diffusion LM still retrieves a
    needle, but only within about T_train tokens of the question, whatever the total length.
    Bins are `bin_width` tokens wide, or start at the increasing `edges` (distances below the
    first edge are dropped); `distance` is each bin's start; `value` the mean score, `exact`
    the exact-match percentage with its Wilson 95% interval (`low`, `high`) over `n` samples.
    """
    if (bin_width is None) == (edges is None):
        raise ValueError("give exactly one of bin_width and edges")
    if bin_width is not None and (not isinstance(bin_width, int) or bin_width < 1):
        raise ValueError(f"bin_width must be a positive integer, got {bin_width!r}")
    if edges is not None and (len(edges) < 1 or list(edges) != sorted(set(edges))):
        raise ValueError(f"edges must be increasing distances, got {list(edges)}")
    known = frame.dropna(subset=["needle_distance"])
    if known.empty:
        raise ValueError("no row has a needle_distance (single-needle tasks only)")
    distance = known["needle_distance"].to_numpy()
    if edges is None:
        starts = distance // bin_width * bin_width
    else:
        index = np.searchsorted(np.asarray(edges), distance, side="right") - 1
        known, starts = known[index >= 0], np.asarray(edges)[index[index >= 0]]
    # A model kept as saved has no rope label; "" keeps it a group of its own.
    binned = known.assign(distance=np.asarray(starts).astype(int),
                          rope=known["rope"].fillna(""))
    keys = ["model", "rope", "method", "task", "distance"]
    scores = binned.groupby(keys)["value"].mean().rename("value").reset_index()
    exact = proportion_table(binned, keys).rename(columns={"percent": "exact"})
    return scores.merge(exact, on=keys).sort_values(["model", "distance"], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Across runs: the hierarchical bootstrap and its verdicts
# ---------------------------------------------------------------------------------------------

NO_SEED = -1  # the `seed` of a model that was not post-trained
SIGN_SHARE = 0.8  # the share of bases whose contrast must have the claimed sign


@dataclass(frozen=True)
class Estimate:
    """A contrast across runs. `per_run` holds (base, seed, value, units) of every run."""

    mean: float
    ci: tuple[float, float]
    run_range: tuple[float, float]
    bases: int
    runs: int
    units: int  # units per run (the smallest run)
    above: int  # bases whose mean contrast lies above the margin of the test
    below: int  # bases whose mean contrast lies below it
    per_run: tuple[tuple[int, int, float, int], ...]

    def as_dict(self) -> dict:
        return asdict(self)


def contrast_rows(frame: pd.DataFrame, weights: Mapping[str, float]) -> pd.DataFrame:
    """The outcome rows of the arms in `weights`, checked (columns base, seed, arm, unit, value;
    every arm present), with a `cluster` column (each unit its own where none is given)."""
    missing = {"base", "seed", "arm", "unit", "value"} - set(frame.columns)
    if missing:
        raise ValueError(f"a measurement needs columns base, seed, arm, unit, value; "
                         f"missing {sorted(missing)}")
    absent = sorted(set(weights) - set(frame["arm"]))
    if absent:
        raise ValueError(f"arm(s) {absent} have no rows; present: {sorted(set(frame['arm']))}")
    frame = frame[frame["arm"].isin(list(weights))]
    return frame if "cluster" in frame else frame.assign(cluster=frame["unit"])


def _matrices(frame: pd.DataFrame, weights: Mapping[str, float], paired: bool
              ) -> tuple[list[tuple[int, int]], dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
    """The runs (base, seed) holding every arm of the contrast, and per arm a matrix of values
    [run, unit] over the units every run of it was measured on (one unit order per arm; the same
    order for all arms when `paired`) with the unit indices of each cluster."""
    frame = contrast_rows(frame, weights).drop_duplicates(["base", "seed", "arm", "unit"])
    runs: list[tuple[int, int]] = []
    for base, at_base in frame.groupby("base", sort=True):
        seeds = sorted(s for s in at_base["seed"].unique() if s != NO_SEED) or [NO_SEED]
        for seed in seeds:
            rows = at_base[at_base["seed"].isin([seed, NO_SEED])]
            if set(rows["arm"]) == set(weights):
                runs.append((int(base), int(seed)))
    if not runs:
        raise ValueError(f"no run holds every arm of the contrast {dict(weights)}")
    units: dict[str, list] = {}
    for arm in weights:
        own = frame[frame["arm"] == arm]
        units[arm] = sorted(own["unit"].unique(), key=str)
    if paired:
        shared = sorted(set.intersection(*(set(u) for u in units.values())), key=str)
        if not shared:
            raise ValueError("the arms share no unit: compare them unpaired")
        units = {arm: shared for arm in weights}
    matrices, clusters = {}, {}
    for arm in weights:
        own = frame[frame["arm"] == arm]
        table = own.pivot_table(index=["base", "seed"], columns="unit", values="value")
        rows = [(b, s) if (b, s) in table.index else (b, NO_SEED) for b, s in runs]
        matrix = table.reindex(index=pd.MultiIndex.from_tuples(rows), columns=units[arm])
        if matrix.isna().to_numpy().any():
            raise ValueError(f"the runs of arm {arm!r} were not all measured on the same units "
                             "(prompts or windows): a crossed bootstrap needs the same ones")
        matrices[arm] = matrix.to_numpy(dtype=float)
        labels = own.drop_duplicates("unit").set_index("unit").loc[units[arm], "cluster"]
        labels = labels.to_numpy()
        clusters[arm] = [np.flatnonzero(labels == c) for c in dict.fromkeys(labels)]
    return runs, matrices, clusters


def _counts(groups: list[np.ndarray], size: int, rng: np.random.Generator | None) -> np.ndarray:
    """How often each unit is drawn when the clusters are resampled (all ones without `rng`)."""
    if rng is None:
        return np.ones(size)
    drawn = np.bincount(rng.integers(len(groups), size=len(groups)), minlength=len(groups))
    if len(groups) == size:  # every unit its own cluster, in order
        return drawn.astype(float)
    counts = np.zeros(size)
    for group, times in zip(groups, drawn, strict=True):
        counts[group] += times
    return counts


def estimate(frame: pd.DataFrame, weights: Mapping[str, float], *, paired: bool = True,
             margin: float = 0.0, resamples: int = 2000, seed: int = 0) -> Estimate:
    """The contrast `weights` of arm means across runs (module doc); `above` / `below` count the
    bases whose contrast lies above / below `margin`.

    Every run of the study answers the same prompts, so prompts are crossed with runs: each
    bootstrap replicate draws one resample of the prompts (of their clusters; one for all arms
    when `paired`) and applies it to every run, and resamples bases, then seeds within bases."""
    runs, matrices, clusters = _matrices(frame, weights, paired)
    arms = list(weights)

    def values(rng: np.random.Generator | None) -> np.ndarray:
        """The contrast of every run under one resample of the units."""
        total, counts = np.zeros(len(runs)), None
        for arm in arms:
            if counts is None or not paired:
                counts = _counts(clusters[arm], matrices[arm].shape[1], rng)
            total += weights[arm] * (matrices[arm] @ counts) / counts.sum()
        return total

    by_base: dict[int, list[int]] = {}
    for index, (base, _) in enumerate(runs):
        by_base.setdefault(base, []).append(index)
    bases = list(by_base)
    point = values(None)
    base_means = {b: float(point[by_base[b]].mean()) for b in bases}
    rng = np.random.default_rng(seed)
    means, singles = np.empty(resamples), np.empty(resamples)
    for r in range(resamples):
        run_values = values(rng)
        weight = np.zeros(len(runs))
        for b in rng.integers(len(bases), size=len(bases)):
            members = by_base[bases[b]]
            for i in rng.integers(len(members), size=len(members)):
                weight[members[i]] += 1.0 / (len(bases) * len(members))
        means[r] = weight @ run_values
        members = by_base[bases[int(rng.integers(len(bases)))]]
        singles[r] = run_values[members[int(rng.integers(len(members)))]]
    low, high = np.quantile(means, [0.025, 0.975])
    run_low, run_high = np.quantile(singles, [0.025, 0.975])
    per_run = tuple((base, seed_, float(point[i]), min(m.shape[1] for m in matrices.values()))
                    for i, (base, seed_) in enumerate(runs))
    return Estimate(float(np.mean(list(base_means.values()))), (float(low), float(high)),
                    (float(run_low), float(run_high)), len(bases), len(runs),
                    min(m.shape[1] for m in matrices.values()),
                    sum(v > margin for v in base_means.values()),
                    sum(v < margin for v in base_means.values()), per_run)


def needed_bases(count: int) -> int:
    """How many of `count` bases must share a sign: ceil(SIGN_SHARE x count)."""
    return math.ceil(SIGN_SHARE * count - 1e-9)


def verdict(result: Estimate, *, margin: float = 0.0, higher_is_better: bool = True,
            min_bases: int = 3) -> str:
    """`reproduced` when the across-run interval lies on the claimed side of `margin` and at least
    SIGN_SHARE of the bases do; `refuted` when both lie on the other side; else `unclear`
    (always with fewer than `min_bases` bases). For a non-inferiority test the claimed side of
    the margin is below it for a loss (`higher_is_better=False`)."""
    if result.bases < min_bases:
        return "unclear"
    low, high = result.ci
    claimed, against = ((low > margin, result.above) if higher_is_better
                        else (high < margin, result.below))
    opposite, other = ((high < margin, result.below) if higher_is_better
                       else (low > margin, result.above))
    if claimed and against >= needed_bases(result.bases):
        return "reproduced"
    if opposite and other >= needed_bases(result.bases):
        return "refuted"
    return "unclear"


def inside(value: float, interval: Sequence[float]) -> bool:
    """`value` lies in the closed interval."""
    return interval[0] <= value <= interval[1]


# ---------------------------------------------------------------------------------------------
# Result tables as the tidy frames `estimate` reads, and estimates as a claim stores them
# ---------------------------------------------------------------------------------------------


def outcomes(table: pd.DataFrame, *, base: int, seed: int, arm: str | Sequence[str],
             value: str = "exact", unit: Sequence[str] = ("task", "length", "depth", "repeat"),
             cluster: str | None = None, keep: Sequence[str] = ()) -> pd.DataFrame:
    """The rows of a result table as outcomes of run (base, seed) under `arm` (one name, or one
    per row): `unit` columns identify a prompt (or window), `value` its outcome, `cluster`
    (optional) the group of non-independent units; `keep` columns are copied."""
    arm = arm if isinstance(arm, str) else list(arm)
    frame = pd.DataFrame({"base": base, "seed": seed, "arm": arm,
                          "unit": table[list(unit)].astype(str).agg("|".join, axis=1),
                          "value": table[value].astype(float)})
    if cluster is not None:
        frame["cluster"] = table[cluster].to_numpy()
    for column in keep:
        frame[column] = table[column].to_numpy()
    return frame


def summarize(frame: pd.DataFrame, weights: Mapping[str, float], proportion: bool = True,
              paired: bool = True, seed: int = 0) -> dict[str, Any]:
    """The across-run estimate of the contrast `weights` over `frame`'s outcomes, as a claim
    stores it; `proportion`: 0/1 outcomes reported in % with per-run Wilson intervals."""
    if proportion:
        frame = in_percent(frame)
    return estimate_entry(estimate(frame, weights, paired=paired, seed=seed),
                          proportion and len(weights) == 1)


def estimate_entry(result: Estimate, proportion: bool) -> dict[str, Any]:
    """`result` as a claim stores it (rounded); per-run intervals: Wilson for a proportion (in
    %), else none."""
    entry = result.as_dict()
    runs = []
    for base, seed, value, units in result.per_run:
        run: dict[str, Any] = {"base": base, "seed": seed, "value": round(value, 4), "n": units}
        if proportion:
            low, high = wilson_interval(round(value / 100 * units), units)
            run["wilson"] = [round(100 * low, 2), round(100 * high, 2)]
        runs.append(run)
    entry["per_run"] = runs
    entry["mean"] = round(entry["mean"], 4)
    for name in ("ci", "run_range"):
        entry[name] = [round(v, 4) for v in entry[name]]
    return entry


def in_percent(frame: pd.DataFrame) -> pd.DataFrame:
    """0/1 outcomes as percentages."""
    return frame.assign(value=100.0 * frame["value"])
