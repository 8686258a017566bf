"""Intervals for the study's numbers: Wilson 95% intervals for accuracies, paired bootstrap
intervals for mean differences, and whether two results can be told apart."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

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


def paired_bootstrap_interval(differences: Sequence[float], resamples: int = 2000,
                              seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences (resampling the pairs)."""
    values = np.asarray(differences, dtype=np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"need at least 2 paired differences, got {values.size}")
    if not 0 < level < 1 or resamples < 100:
        raise ValueError(f"need 0 < level < 1 and resamples >= 100, got {level}, {resamples}")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when two intervals share a point: the two results are not told apart."""
    return a[0] <= b[1] and b[0] <= a[1]


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
