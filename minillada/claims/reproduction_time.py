"""How long a reproduction will take on this machine, said before the work.

`minillada reproduce` measures the training throughput of the preset's pre-training step
(`training.throughput`: a few steps, seconds) and scales the per-notebook wall times of the last
reproduction of that preset (`timings.json` in its results folder, written by every reproduction
with the throughput it measured then) by the ratio of the two throughputs: the cost of every
notebook, evaluation included, is dominated by the same model's forward and backward passes.
Without such a file the estimate covers the pre-training alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minillada.claims.design import Design
from minillada.common.atomic import atomic_write_text

TIMINGS_FILE = "timings.json"


@dataclass(frozen=True)
class TimeEstimate:
    """Expected seconds per notebook (None where nothing is known) and how they were derived."""

    seconds: dict[str, float | None]
    basis: str

    @property
    def total(self) -> float:
        return sum(s for s in self.seconds.values() if s is not None)

    @property
    def complete(self) -> bool:
        return all(s is not None for s in self.seconds.values())


TRAINING = "training"  # the key of the training phase among the expected seconds


def estimate_reproduction(notebooks: Sequence[str], tokens_per_s: float,
                          timings: Mapping[str, Any] | None, pretrain_tokens: int,
                          design: Design | None = None) -> TimeEstimate:
    """Expected seconds of the training phase (`TRAINING`) and of each notebook (names like
    '02_pretrain_base.ipynb') of `design`.

    With `timings` from an earlier reproduction (`notebooks`: name -> seconds, `tokens_per_s`:
    the throughput measured then, and the `bases`, `runs` and seconds of the training of bases
    and runs it made), each time is scaled by timings['tokens_per_s'] / tokens_per_s and, for
    another design, by its count of bases (pre-training, notebooks 02 and 03) or of
    post-training runs (their training, notebooks 04 and 05). Otherwise only the pre-training
    is estimated, as `pretrain_tokens / tokens_per_s`.
    """
    if tokens_per_s <= 0:
        raise ValueError(f"tokens_per_s must be > 0, got {tokens_per_s}")
    if timings:
        ratio = float(timings["tokens_per_s"]) / tokens_per_s
        bases = runs = 1.0
        if design is not None and timings.get("bases") and timings.get("runs"):
            bases = len(design.bases) / float(timings["bases"])
            runs = len(design.runs) / float(timings["runs"])
        per_notebook = {"02": bases, "03": bases, "04": runs, "05": runs}
        known = timings["notebooks"]
        seconds: dict[str, float | None] = {n: (float(known[n]) * ratio * per_notebook.get(
            n[:2], 1.0) if n in known else None) for n in notebooks}
        if "training_bases" in timings:
            seconds = {TRAINING: ratio * (float(timings["training_bases"]) * bases
                                          + float(timings["training_runs"]) * runs), **seconds}
        return TimeEstimate(seconds, f"the reproduction of {timings.get('date', '?')} on "
                                 f"{timings.get('machine', '?')} ({timings.get('design', '?')}), "
                                 "scaled by throughput "
                                 f"({float(timings['tokens_per_s']):.0f} then, "
                                 f"{tokens_per_s:.0f} tokens/s now) and by the runs")
    seconds = {TRAINING: pretrain_tokens / tokens_per_s, **{n: None for n in notebooks}}
    return TimeEstimate(seconds, f"pre-training tokens at {tokens_per_s:.0f} tokens/s (no earlier "
                             "reproduction has timed the post-training and the notebooks)")


def read_timings(results: Path) -> dict[str, Any] | None:
    """The timings of the last reproduction into `results`, or None (absent or unreadable)."""
    try:
        timings = json.loads((results / TIMINGS_FILE).read_text())
        float(timings["tokens_per_s"])
        dict(timings["notebooks"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return timings


def write_timings(results: Path, notebooks: Mapping[str, float], tokens_per_s: float,
                  machine: str, dtype: str, design: Design | None = None,
                  training: tuple[float, float] | None = None) -> None:
    """Record per-notebook seconds (merged over the file's earlier entries) and, when given,
    the design's counts and the seconds of training its bases and its runs, atomically."""
    earlier = read_timings(results) or {}
    merged = {**earlier.get("notebooks", {}), **{n: round(s, 1) for n, s in notebooks.items()}}
    record: dict[str, Any] = {k: v for k, v in earlier.items()
                              if k in ("design", "bases", "runs", "training_bases",
                                       "training_runs")}
    if design is not None:
        record.update(design=design.name, bases=len(design.bases), runs=len(design.runs))
    if training is not None:
        record.update(training_bases=round(training[0], 1), training_runs=round(training[1], 1))
    atomic_write_text(results / TIMINGS_FILE, json.dumps({
        "date": time.strftime("%Y-%m-%d"), "machine": machine, "dtype": dtype,
        "tokens_per_s": round(tokens_per_s, 1), **record, "notebooks": merged},
        indent=1) + "\n")
