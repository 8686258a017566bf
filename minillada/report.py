"""The study's claims as data (`results/claims.json`) and the report rendered from them.

Each of UltraLLaDA's four claims is checked by one notebook (03: direct extrapolation and the
training-free laws; 04: the packing ablation; 05: post-trained retrieval) as a `Claim`: the
metric, the measured values with 95% intervals and sample counts, the chance level, the
comparison made and a verdict `reproduced | refuted | unclear` computed from the intervals.
`record_claims` merges them into one JSON file; `summary_markdown` and `results_markdown`
(results/summary.md, notebook 05's findings and the README's results section) are rendered from
that file, never typed by hand.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from minillada.atomic import atomic_write_text
from minillada.stats import paired_bootstrap_interval, proportion_table

VERDICTS = ("reproduced", "refuted", "unclear")
CLAIM_ORDER = ("direct_extrapolation", "training_free", "post_trained_retrieval", "packing")

# UltraLLaDA paper, LLaDA-8B scale (docs/science.md, "Reported results"); not computed here.
REPORTED = {
    "direct_extrapolation": "LongLLaDA: direct extrapolation keeps PPL stable and retrieves "
                            "only needles within about T_train of the question",
    "training_free": "NTK scaling at the critical dimension extends retrieval training-free; "
                     "diffusion-aware NTK is at least as good",
    "post_trained_retrieval": "UltraLLaDA: NIAH 100% to 128K (32x the 4K window)",
    "packing": "RULER at 32K: adaptive 73.63 > EOD 70.78 > direct 63.04",
}


@dataclass(frozen=True)
class Claim:
    """One claim checked on this run. `values`, `ci` (95% interval) and `n` are keyed alike;
    `chance` (%) is the retrieval chance level, None for losses."""

    id: str
    claim: str
    metric: str
    values: dict[str, float]
    ci: dict[str, list[float]]
    n: dict[str, int]
    chance: float | None
    comparison: str
    verdict: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}; choose one of {', '.join(VERDICTS)}")
        if not set(self.values) == set(self.ci) == set(self.n):
            raise ValueError(f"claim {self.id!r}: values, ci and n must have the same keys")

    def text(self) -> str:
        measured = "; ".join(f"{key} {value:.3g} [{low:.3g}, {high:.3g}] (n={self.n[key]})"
                             for key, value in self.values.items()
                             for low, high in [self.ci[key]])
        chance = "" if self.chance is None else f"; chance {self.chance:.3g}%"
        return (f"**{self.verdict}**: {self.claim}. {self.metric}: {measured}{chance}. "
                f"Test: {self.comparison}.")


def retrieval_values(frame: pd.DataFrame, by: Sequence[str],
                     label: str = "{}") -> tuple[dict, dict, dict]:
    """(values, ci, n) of exact-match percentages per group of `by` with Wilson intervals;
    keys are `label` formatted with the group's values."""
    table = proportion_table(frame, by)
    keys = [label.format(*(row[c] for c in by)) for _, row in table.iterrows()]
    return ({k: round(float(v), 2) for k, v in zip(keys, table["percent"], strict=True)},
            {k: [round(float(lo), 2), round(float(hi), 2)]
             for k, lo, hi in zip(keys, table["low"], table["high"], strict=True)},
            {k: int(v) for k, v in zip(keys, table["n"], strict=True)})


def above(ci: Mapping[str, Sequence[float]], better: str, worse: str) -> bool:
    """`better`'s interval lies wholly above `worse`'s."""
    return ci[better][0] > ci[worse][1]


def direct_extrapolation_claim(retrieval: pd.DataFrame, train_len: int,
                               chance: float) -> Claim:
    """LongLLaDA's local perception: the base model under direct extrapolation (rows of
    `retrieval` with rope `default`, lengths > T_train) retrieves needles within T_train of the
    question and not those farther away."""
    rows = retrieval[(retrieval["rope"] == "default") & (retrieval["length"] > train_len)]
    rows = rows.dropna(subset=["needle_distance"])
    rows = rows.assign(where=["within T_train" if d < train_len else "beyond T_train"
                              for d in rows["needle_distance"]])
    values, ci, n = retrieval_values(rows, ["where"], "needle {}")
    near, far = "needle within T_train", "needle beyond T_train"
    if near in ci and far in ci and ci[near][0] > max(ci[far][1], chance):
        verdict = "reproduced"
    elif near in ci and far in ci and ci[near][1] < ci[far][0]:
        verdict = "refuted"
    else:
        verdict = "unclear"
    return Claim("direct_extrapolation", "Under direct extrapolation (no RoPE change) the base "
                 "model still retrieves, but only needles within T_train of the question",
                 f"exact match (%) at lengths above T_train = {train_len}, by the needle's "
                 "distance from the question", values, ci, n, chance,
                 "reproduced when the within-T_train interval lies above the beyond-T_train "
                 "interval and chance; refuted when it lies below", verdict)


def paired_gap(loss: pd.DataFrame, model: str, reference: str, length: int,
               seed: int = 0) -> tuple[float, tuple[float, float], int]:
    """Mean paired loss difference `model` - `reference` over the windows at `length`, its
    paired bootstrap 95% interval and the number of windows."""
    at = loss[loss["length"] == length].pivot_table(index="window", columns="model",
                                                    values="value")
    differences = (at[model] - at[reference]).dropna().to_numpy()
    return float(differences.mean()), paired_bootstrap_interval(differences, seed=seed), \
        len(differences)


def training_free_claim(loss: pd.DataFrame, target_len: int, seed: int = 0) -> Claim:
    """Training-free extension: NTK at the critical dimension beats direct extrapolation, and
    the diffusion-aware law is at least as good as it, on the held-out loss at the target
    length (paired windows; negative gaps favour the first model)."""
    pairs = {"ntk_critical - default": ("ntk_critical", "default"),
             "diffusion_ntk - ntk_critical": ("diffusion_ntk", "ntk_critical")}
    values, ci, n = {}, {}, {}
    for key, (model, reference) in pairs.items():
        mean, (low, high), count = paired_gap(loss, model, reference, target_len, seed)
        values[key], ci[key], n[key] = round(mean, 4), [round(low, 4), round(high, 4)], count
    ntk, diffusion = ci["ntk_critical - default"], ci["diffusion_ntk - ntk_critical"]
    if ntk[1] < 0 and diffusion[1] < 0:
        verdict = "reproduced"
    elif ntk[0] > 0 or diffusion[0] > 0:
        verdict = "refuted"
    else:
        verdict = "unclear"
    return Claim("training_free", "Training-free, NTK scaling at the critical dimension extends "
                 "the window and the diffusion-aware law does at least as well",
                 f"paired held-out loss gap (nats per token) at {target_len} tokens, per window",
                 values, ci, n, None, "reproduced when both bootstrap intervals lie below 0; "
                 "refuted when either lies above 0", verdict)


def post_trained_retrieval_claim(retrieval: pd.DataFrame, ultra: str, others: Sequence[str],
                                 train_len: int, chance: float, task: str = "niah",
                                 targets: Mapping[int, float] = {16: 80.0, 32: 50.0}) -> Claim:
    """UltraLLaDA's headline: after post-training, `ultra` retrieves at 16x and 32x T_train,
    above direct extrapolation and the best training-free law (`others`)."""
    factors = sorted(targets)
    rows = retrieval[retrieval["length"].isin([f * train_len for f in factors])]
    values, ci, n = retrieval_values(rows, ["model", "length"], "{} @ {}")
    beats = all(above(ci, f"{ultra} @ {f * train_len}", f"{other} @ {f * train_len}")
                for f in factors for other in others)
    reaches = all(values[f"{ultra} @ {f * train_len}"] >= targets[f] for f in factors)
    worse = any(ci[f"{ultra} @ {f * train_len}"][1] < ci[f"{other} @ {f * train_len}"][0]
                for f in factors for other in others)
    verdict = "reproduced" if beats and reaches else "refuted" if worse else "unclear"
    goal = " and ".join(f">= {targets[f]:g}% at {f}x" for f in factors)
    return Claim("post_trained_retrieval", "Post-training with diffusion-aware NTK and adaptive "
                 "packing retrieves at 16x and 32x the training window",
                 f"{task} exact match (%) per model and length", values, ci, n, chance,
                 f"reproduced when {ultra} reaches {goal} with its interval above those of "
                 f"{', '.join(others)} at both lengths; refuted when it lies below one of them",
                 verdict)


def packing_claim(retrieval: pd.DataFrame, interference: pd.DataFrame | None,
                  length: int, chance: float, task: str = "niah") -> Claim:
    """The masking ablation: adaptive >= EOD > direct on retrieval at `length` (rows of the
    `retrieval` table carry a `packing` column; every seed pooled), with the distractor
    interference measure (exact match with another document's needle in the prompt) beside."""
    values, ci, n = retrieval_values(retrieval[retrieval["length"] == length], ["packing"])
    if interference is not None:
        more = retrieval_values(interference[interference["length"] == length], ["packing"],
                                "{}, with a distractor document")
        for mine, theirs in zip((values, ci, n), more, strict=True):
            mine.update(theirs)
    have = {"adaptive", "eod", "direct"} <= set(ci)
    if have and above(ci, "eod", "direct") and not above(ci, "eod", "adaptive"):
        verdict = "reproduced"
    elif have and (above(ci, "direct", "eod") or above(ci, "eod", "adaptive")):
        verdict = "refuted"
    else:
        verdict = "unclear"
    return Claim("packing", "Boundary-aware packing helps: adaptive >= EOD > direct",
                 f"{task} exact match (%) at {length} tokens after post-training, seeds pooled",
                 values, ci, n, chance,
                 "reproduced when EOD's interval lies above direct's and adaptive's is not below "
                 "EOD's; refuted when the order is reversed with separated intervals", verdict)


def record_claims(path: str | os.PathLike, claims: Sequence[Claim]) -> list[Claim]:
    """Merge `claims` into the JSON list at `path` (replacing those with the same id), written
    atomically in `CLAIM_ORDER`; returns every claim now in the file."""
    merged = {c.id: c for c in load_claims(path)} | {c.id: c for c in claims}
    ordered = sorted(merged.values(), key=lambda c: (CLAIM_ORDER.index(c.id)
                                                      if c.id in CLAIM_ORDER else 99, c.id))
    atomic_write_text(path, json.dumps([asdict(c) for c in ordered], indent=1) + "\n")
    return ordered


def load_claims(path: str | os.PathLike) -> list[Claim]:
    """The claims in `path` (none when it does not exist)."""
    path = Path(path)
    return [Claim(**entry) for entry in json.loads(path.read_text())] if path.is_file() else []


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `frame`, its index as the first column."""
    header = [str(frame.index.name or ""), *map(str, frame.columns)]
    rows = [[str(index), *map(str, values)]
            for index, values in zip(frame.index, frame.to_numpy().tolist(), strict=True)]
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |"
                     for line in lines)


def claims_table(claims: Sequence[Claim]) -> pd.DataFrame:
    """One row per claim: the verdict, what this run measured and what the paper reported."""
    return pd.DataFrame(
        [[c.verdict, c.claim, "; ".join(
            f"{k} {v:.3g} [{c.ci[k][0]:.3g}, {c.ci[k][1]:.3g}] (n={c.n[k]})"
            for k, v in c.values.items()) + ("" if c.chance is None else
                                             f"; chance {c.chance:.3g}%"),
          REPORTED.get(c.id, "")] for c in claims],
        index=pd.Index([c.id for c in claims], name="id"),
        columns=["verdict", "claim", "measured (95% interval, n)", "reported (LLaDA-8B)"])


def results_markdown(claims: Sequence[Claim]) -> str:
    """The claims as a bulleted list: notebook 05's findings and the README's results."""
    return "\n".join(f"- {claim.text()}" for claim in claims)


def summary_markdown(*, preset: str, seed: int, train_len: int, target_len: int, date: str,
                     claims: Sequence[Claim], sections: Mapping[str, Mapping[str, Any]]) -> str:
    """`results/summary.md`: the claims (from claims.json), then each notebook's summary
    (`sections`: title -> key/value pairs, as the notebooks' *_summary.json files hold)."""
    lines = [f"# minillada results (preset `{preset}`, seed {seed})", "",
             f"Generated by `notebooks/05_long_context_eval.ipynb` on {date} from "
             "`results/claims.json`; every number comes from this run except the *reported* "
             "column (the UltraLLaDA paper's LLaDA-8B results, docs/science.md).", "",
             f"Mini model: T_train {train_len}, post-trained at {target_len}, evaluated to "
             f"{32 * train_len} tokens. Intervals are 95% (Wilson for accuracies, paired "
             "bootstrap for loss gaps); n is the number of samples (windows for losses).", "",
             "## Claims", "", results_markdown(claims), "",
             markdown_table(claims_table(claims)), ""]
    for title, section in sections.items():
        lines += [f"## {title}", "", *(f"- {key}: {value}" for key, value in section.items()), ""]
    return "\n".join(lines)


README_START = "<!-- results: rendered from results/claims.json by minillada.report -->"
README_END = "<!-- /results -->"


def readme_with_results(readme: str, claims: Sequence[Claim]) -> str:
    """`readme` with the block between README_START and README_END replaced by the claims."""
    if README_START not in readme or README_END not in readme:
        raise ValueError(f"the README has no results block ({README_START} ... {README_END})")
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{results_markdown(claims)}\n{README_END}{tail}"
