"""The instrument gate: a base model enters the study only if it retrieves inside its own window.

Pre-registered in docs/science.md ("The gated design") before any base of that design was
trained: NIAH exact match >= 90 % and every answer slot right >= 95 % of the time, on at least
200 prompts of lengths up to T_train whose haystacks come from the validation split and whose
draws come from a seed used for nothing else, each answer decoded one token a step. `GATE` holds
those numbers, `judge` reads a base's gate table (`claims.study.Study.gate`) and `record_gate`
keeps every base ever judged in `results/gate.csv`, with the CPU it was trained on: a base that
fails stays listed, and the next pre-registered seed takes its place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from minillada.claims.statistics import wilson_interval
from minillada.common.atomic import atomic_write_text


@dataclass(frozen=True)
class Gate:
    """What a base must retrieve in its window: prompts of each task it was trained on at
    `length_fractions` of T_train, `depths` (percent) x `repeats`, from `split` under
    `prompt_seed`; it passes with exact match >= `exact_min` % and every answer slot >=
    `slot_min` % on the study's retrieval task (NIAH where trained); the other tasks are listed,
    not judged."""

    length_fractions: tuple[float, ...] = (0.5, 0.75, 1.0)
    depths: tuple[float, ...] = tuple(round(100 * i / 9, 2) for i in range(10))
    repeats: int = 8
    split: str = "validation"
    prompt_seed: int = 51
    exact_min: float = 90.0
    slot_min: float = 95.0
    min_samples: int = 200

    def lengths(self, train_len: int, shortest: int = 1) -> list[int]:
        """The prompt lengths: the fractions of `train_len`, rounded down, that hold a prompt
        of `shortest` tokens."""
        lengths = [int(fraction * train_len) for fraction in self.length_fractions]
        fitting = [length for length in lengths if length >= shortest]
        if not fitting:
            raise ValueError(f"no gate length ({lengths}) holds a prompt of {shortest} tokens")
        return fitting

    def repeats_for(self, lengths: int) -> int:
        """Repeats per (length, depth): the gate's own, or more where fewer lengths fit, so that
        every task gets at least `min_samples` prompts."""
        return max(self.repeats, -(-self.min_samples // (lengths * len(self.depths))))

    @property
    def samples(self) -> int:
        """Prompts per task when every length fits: lengths x depths x repeats."""
        return len(self.length_fractions) * len(self.depths) * self.repeats

    def __post_init__(self) -> None:
        if self.samples < self.min_samples:
            raise ValueError(f"a gate of {self.samples} prompts per task is under the "
                             f"pre-registered minimum of {self.min_samples}")


GATE = Gate()


@dataclass(frozen=True)
class GateResult:
    """One base judged on `task`: `passed`, its exact match (%) with the Wilson 95 % interval,
    each answer slot's accuracy (%), the prompts scored and the other tasks' exact match (%)."""

    base: int
    task: str
    passed: bool
    exact: float
    exact_ci: tuple[float, float]
    slots: tuple[float, ...]
    n: int
    reported: Mapping[str, float]

    def line(self) -> str:
        """'base 101 passes the gate: NIAH 97.5 % [94.6, 98.9] (n = 240), slots 97.5 %; ...'"""
        verdict = "passes the gate" if self.passed else "FAILS the gate"
        slots = " / ".join(f"{slot:.1f} %" for slot in self.slots)
        others = "".join(f"; {task} {value:.1f} %" for task, value in self.reported.items())
        low, high = self.exact_ci
        return (f"base {self.base} {verdict}: {self.task} {self.exact:.1f} % [{low:.1f}, "
                f"{high:.1f}] (n = {self.n}), answer slots {slots}{others}")


def judge(table: pd.DataFrame, base: int, task: str, gate: Gate = GATE) -> GateResult:
    """The gate's verdict on `base` from its gate table (generated answers, with `slots`),
    judged on `task`; the table's other tasks are reported."""
    rows = table[table["method"] == "generate"]
    judged = rows[rows["task"] == task]
    if len(judged) < gate.min_samples:
        raise ValueError(f"base {base}: {len(judged)} {task} prompts in its gate table, "
                         f"fewer than the gate's {gate.min_samples}")
    hits = pd.DataFrame([json.loads(slots) for slots in judged["slots"]])
    if hits.isna().any().any():
        raise ValueError(f"base {base}: answers of different lengths in its gate table")
    exact = 100.0 * judged["exact"].mean()
    low, high = wilson_interval(int(judged["exact"].sum()), len(judged))
    slots = tuple(round(100.0 * value, 2) for value in hits.mean())
    reported = {other: round(100.0 * rows.loc[rows["task"] == other, "exact"].mean(), 2)
                for other in dict.fromkeys(rows["task"]) if other != task}
    passed = exact >= gate.exact_min and all(slot >= gate.slot_min for slot in slots)
    return GateResult(base, task, bool(passed), round(exact, 2), (round(100 * low, 2),
                      round(100 * high, 2)), slots, len(judged), reported)


GATE_COLUMNS = ("base", "passed", "task", "exact", "low", "high", "slots", "n", "others",
                "cpu", "dtype", "recipe")


def record_gate(path: str | os.PathLike, results: Sequence[GateResult],
                provenance: Mapping[str, Any]) -> pd.DataFrame:
    """Merge `results` into the gate table at `path` (one row per base, replaced when judged
    again with the same `provenance["cpu"]`, kept beside it when judged on another CPU), written
    atomically, sorted by base; returns the whole table. `provenance`: `cpu`, `dtype` and
    `recipe` (the digest of the pretrain stage's config)."""
    path = Path(path)
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=GATE_COLUMNS)
    new = pd.DataFrame([{
        "base": r.base, "passed": r.passed, "task": r.task, "exact": r.exact,
        "low": r.exact_ci[0], "high": r.exact_ci[1], "slots": json.dumps(list(r.slots)),
        "n": r.n, "others": json.dumps(dict(r.reported)),
        **{k: provenance[k] for k in ("cpu", "dtype", "recipe")}}
        for r in results], columns=GATE_COLUMNS)
    keep = ~old.set_index(["base", "cpu"]).index.isin(new.set_index(["base", "cpu"]).index)
    table = pd.concat([old[keep], new], ignore_index=True) if len(old) else new
    table = table.sort_values(["base", "cpu"], kind="stable").reset_index(drop=True)
    atomic_write_text(path, table.to_csv(index=False))
    return table


def passing_bases(table: pd.DataFrame, candidates: Sequence[int], needed: int) -> tuple[int, ...]:
    """The first `needed` of `candidates`, in order, that passed in `table` (the pre-registered
    rule that picks the study's bases); fewer when fewer passed."""
    passed = set(table.loc[table["passed"].astype(bool), "base"].astype(int))
    return tuple(seed for seed in candidates if seed in passed)[:needed]
