"""The study's final report (notebook 05): the main table beside the paper's reported numbers,
findings computed from the measurements, and `results/summary.md`.

A `Finding` is a claim of the paper, the values this run measured for it, and a verdict computed
by a stated comparison (`rule`); nothing in a finding is written by hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from minillada.evals.retrieval import chance_level

# UltraLLaDA paper, LLaDA-8B scale (docs/science.md, "Reported results"); not computed here.
# Columns: LLaDA-8B-Base, LongLLaDA (training-free NTK), UltraLLaDA.
REPORTED_COLUMNS = ("reported: LLaDA-8B-Base", "reported: LongLLaDA", "reported: UltraLLaDA")
REPORTED = {
    "PPL at T_train": ("12.00", "13.39", "11.27"),
    "PPL at 32x T_train": ("343.88", "not runnable", "10.45"),
    "passkey/NIAH at 16x T_train": ("local only", "~20% at 8x, none beyond", "100"),
    "RULER-style average at 2x T_train": ("41.69", "65.20", "86.22"),
    "RULER-style average at 8x T_train": ("fails", "5.69", "73.63"),
}


def _ppl_at(ppl: pd.DataFrame, name: str, length: int) -> str:
    row = ppl[(ppl["model"] == name) & (ppl["length"] == length)]
    return f"{row['ppl'].iloc[0]:.2f}" if len(row) else "n/a"


def _score_at(frame: pd.DataFrame, name: str, length: int) -> str:
    rows = frame[(frame["model"] == name) & (frame["length"] == length)]
    return f"{rows['value'].mean():.1f}" if len(rows) else "n/a"


def main_table(ppl: pd.DataFrame, passkey: pd.DataFrame, ruler: pd.DataFrame,
               names: Sequence[str], train_len: int, target_len: int) -> pd.DataFrame:
    """The paper's main table at the same multiples of the training window: our models (`names`)
    then the reported LLaDA-8B columns. `ppl` has columns model, length, ppl; `passkey` and
    `ruler` are retrieval tables (model, length, value)."""
    ours = {
        "PPL at T_train": [_ppl_at(ppl, n, train_len) for n in names],
        "PPL at 32x T_train": [_ppl_at(ppl, n, 32 * train_len) for n in names],
        "passkey/NIAH at 16x T_train": [_score_at(passkey, n, target_len) for n in names],
        "RULER-style average at 2x T_train": [_score_at(ruler, n, 2 * train_len) for n in names],
        "RULER-style average at 8x T_train": [_score_at(ruler, n, 8 * train_len) for n in names],
    }
    return pd.DataFrame([[*ours[row], *REPORTED[row]] for row in ours], index=list(ours),
                        columns=[*(f"ours: {n}" for n in names), *REPORTED_COLUMNS])


@dataclass(frozen=True)
class Finding:
    """A claim of the paper checked on this run: `measured` values per model, the verdict
    `holds` (None when nothing was measured) and the comparison `rule` that decided it."""

    claim: str
    measured: Mapping[str, float]
    unit: str
    holds: bool | None
    rule: str
    chance: float | None = None

    def text(self) -> str:
        values = ", ".join(f"{name} {value:.4g}{self.unit}"
                           for name, value in self.measured.items())
        if self.chance is not None:
            values += f" (chance {self.chance:.3g}{self.unit})"
        verdict = {True: "holds", False: "does not hold", None: "not measured"}[self.holds]
        return f"{self.claim}: {values}; verdict: {verdict} (test: {self.rule})."


def _means(frame: pd.DataFrame, column: str, names: Sequence[str]) -> dict[str, float]:
    means = frame.groupby("model")[column].mean()
    return {n: float(means[n]) for n in names if n in means and not math.isnan(means[n])}


def findings(ppl: pd.DataFrame, passkey: pd.DataFrame, ruler: pd.DataFrame,
             names: Sequence[str], train_len: int, key_digits: int,
             margin: float = 10.0) -> list[Finding]:
    """The paper's three headline claims, each decided from this run's numbers; `names[0]` is the
    base model and `names[-1]` the post-trained one. Retrieval gains count when they exceed
    `margin` percentage points."""
    base, ultra = names[0], names[-1]
    result = []
    long_ppl = _means(ppl[ppl["length"] == 32 * train_len], "ppl", names)
    paper_base, _, paper_ultra = REPORTED["PPL at 32x T_train"]
    result.append(Finding(
        claim=f"post-training gives the lowest PPL at 32x T_train (paper: {paper_ultra} vs "
              f"{paper_base} for the base)",
        measured=dict(sorted(long_ppl.items(), key=lambda kv: kv[1])), unit="",
        holds=(min(long_ppl, key=long_ppl.get) == ultra) if ultra in long_ppl else None,
        rule=f"{ultra} has the lowest PPL"))
    far = _means(passkey[passkey["length"] >= 4 * train_len], "exact", names)
    far = {n: 100 * v for n, v in far.items()}
    chance = chance_level("passkey", key_digits)
    result.append(Finding(
        claim="post-training lets the model retrieve a passkey beyond 4x T_train where the base "
              "cannot (exact match)", measured=far, unit="%", chance=chance,
        holds=(far[ultra] > max(far[base], chance) + margin) if {base, ultra} <= set(far)
        else None,
        rule=f"{ultra} exceeds both {base} and chance by more than {margin:g} points"))
    scores = _means(ruler, "value", names)
    result.append(Finding(
        claim="post-training improves RULER-style retrieval (NIAH, multi-key NIAH, variable "
              "tracking; mean NeedleBench score)", measured=scores, unit="",
        holds=(scores[ultra] > scores[base] + margin) if {base, ultra} <= set(scores) else None,
        rule=f"{ultra} exceeds {base} by more than {margin:g} points"))
    return result


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `frame`, its index as the first column."""
    header = [str(frame.index.name or ""), *map(str, frame.columns)]
    rows = [[str(index), *map(str, values)]
            for index, values in zip(frame.index, frame.to_numpy().tolist(), strict=True)]
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |"
                     for line in lines)


def summary_markdown(*, preset: str, seed: int, train_len: int, target_len: int, date: str,
                     table: pd.DataFrame, found: Sequence[Finding],
                     base: Mapping[str, Any] | None = None,
                     training_free: Mapping[str, Any] | None = None,
                     masking: Mapping[str, Any] | None = None) -> str:
    """`results/summary.md`: the notebooks' summaries (02, 03, 04; each optional), the main table
    and the findings."""
    lines = [f"# minillada results (preset `{preset}`, seed {seed})", "",
             f"Generated by `notebooks/05_long_context_eval.ipynb` on {date}; every number below "
             "comes from this run, except the columns marked *reported*, which are the "
             "UltraLLaDA paper's LLaDA-8B numbers.", "",
             f"Mini model: T_train {train_len}, post-trained at {target_len}, evaluated to "
             f"{32 * train_len} tokens.", ""]
    if base:
        chance = chance_level("passkey", base["key_digits"])
        lines += ["## Base model (notebook 02)", "",
                  f"- {base['steps']} steps, {base['tokens']:,} tokens, "
                  f"{base['train_minutes']} min of training steps "
                  f"({base['tokens_per_s']:,} tokens/s)",
                  f"- held-out loss {base['val_loss']}, PPL at T_train {base['ppl_at_T']}",
                  f"- passkey inside the window ({base['key_digits']}-digit keys): "
                  f"{base['passkey_exact']}% exact over {base['passkey_samples']} samples "
                  f"(chance {chance:.3g}%)", ""]
    if training_free:
        losses = ", ".join(f"{k} {v}" for k, v in sorted(training_free["loss_at_target"].items(),
                                                           key=lambda kv: kv[1]))
        lines += ["## Training-free extension (notebook 03)", "",
                  f"- held-out loss at {training_free['target_len']} tokens: {losses}",
                  f"- best: `{training_free['best_training_free']}`", ""]
    if masking:
        lines += ["## Masking ablation (notebook 04)", "",
                  "- held-out loss at the target length: " + ", ".join(
                      f"{k} {v}" for k, v in masking["ranking_by_loss_at_target"].items()),
                  "- attention mass crossing documents, unmasked (%): " + ", ".join(
                      f"{k} {v}" for k, v in masking["leakage_percent"].items()), ""]
    lines += ["## Main table", "", markdown_table(table), "", "## Findings", "",
              *(f"- {finding.text()}" for finding in found), ""]
    return "\n".join(lines)
