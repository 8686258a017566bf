"""The study's claims as data (`results/claims.json`) and the report rendered from them.

Each claim is decided across training runs (`claims.statistics`): its `estimates` hold, per
quantity, the mean over bases, the 95 % interval across bases, seeds and prompts, the range one
new run should fall in, how many bases agree in sign, and every run's own value with its
interval; the verdict `reproduced | refuted | unclear` follows the rule frozen in
docs/science.md ("The confirmatory design"), never a hand. Notebooks 03 (claims 1-2), 04 (claim 4a
and 4b) and 05 (claim 3 and its two comparators) write them; `record_claims` merges them into one
file; `summary_markdown` and `results_markdown` (results/summary.md, notebook 05's findings and
the README's results section) are rendered from it, and `committed_comparison` places a one-base
reproduction's numbers against the committed multi-seed ranges.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from minillada.claims.statistics import estimate, estimate_entry, in_percent, inside, verdict
from minillada.common.atomic import atomic_write_text

VERDICTS = ("reproduced", "refuted", "unclear")
CLAIM_ORDER = ("direct_extrapolation", "training_free", "post_trained_retrieval", "rope_law",
               "long_rows", "packing_adaptive", "packing_eod")
MIN_BASES = 3  # a verdict needs at least this many bases ...
MIN_BASES_PACKING = 5  # ... and the packing claims this many
LOSS_MARGIN = 0.01  # nats per token: the non-inferiority margin of the diffusion-aware law

# UltraLLaDA paper, LLaDA-8B scale (docs/science.md, "Reported results"); not computed here.
REPORTED = {
    "direct_extrapolation": "LongLLaDA: direct extrapolation keeps PPL stable and retrieves "
                            "only needles within about T_train of the question",
    "training_free": "NTK scaling at the critical dimension extends retrieval training-free; "
                     "diffusion-aware NTK is at least as good",
    "post_trained_retrieval": "UltraLLaDA: NIAH 100% to 128K (32x the 4K window)",
    "rope_law": "UltraLLaDA: diffusion-aware NTK + EOD 70.78 vs baseline NTK + EOD 65.85 (RULER "
                "32K)",
    "long_rows": "not tested in the paper (it post-trains on 64K rows only)",
    "packing_adaptive": "RULER at 32K: adaptive 73.63 > direct 63.04",
    "packing_eod": "RULER at 32K: EOD 70.78 > direct 63.04",
}


@dataclass(frozen=True)
class Claim:
    """One claim decided across runs. `estimates`: quantity -> `Estimate.as_dict()`; `chance`
    (%) is the retrieval chance level (None for losses); `design` names the runs (design,
    bases, seeds); `provenance` what computed them; `note` says why a verdict is `unclear` when
    the design has too few bases to decide it."""

    id: str
    claim: str
    metric: str
    estimates: dict[str, dict[str, Any]]
    chance: float | None
    test: str
    verdict: str
    design: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    tested: list[str] = field(default_factory=list)  # the estimates the verdict reads

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}; choose one of {', '.join(VERDICTS)}")
        if not self.estimates:
            raise ValueError(f"claim {self.id!r} has no estimates")

    def text(self) -> str:
        measured = "; ".join(describe(key, value) for key, value in self.estimates.items())
        chance = "" if self.chance is None else f"; chance {self.chance:.3g}%"
        note = f" {self.note}" if self.note else ""
        return (f"**{self.verdict}**: {self.claim}. {self.metric}: {measured}{chance}. "
                f"Test: {self.test}.{note}")

    def brief(self) -> str:
        """The verdict and the quantities it reads, each with every run's own value."""
        shown = [key for key in self.tested if key in self.estimates] or list(self.estimates)
        measured = "; ".join(
            f"{describe(key, self.estimates[key])}, runs: "
            + ", ".join(f"{run['value']:.3g}" for run in self.estimates[key]["per_run"])
            for key in shown)
        chance = "" if self.chance is None else f"; chance {self.chance:.3g}%"
        note = f" {self.note}" if self.note else ""
        return f"**{self.verdict}**: {self.claim}. {measured}{chance}.{note}"


def describe(key: str, value: Mapping[str, Any]) -> str:
    """'key mean [low, high] (b bases, r runs, n per run)'."""
    low, high = value["ci"]
    return (f"{key} {value['mean']:.3g} [{low:.3g}, {high:.3g}] ({value['bases']} bases, "
            f"{value['runs']} runs, n={value['units']} per run)")


def _bases_note(bases: int, needed: int) -> str:
    if bases >= needed:
        return ""
    return (f"Unclear at {bases} base{'s' if bases != 1 else ''}: this design cannot decide the "
            f"claim (the test needs >= {needed} bases); compare with the committed multi-seed "
            "verdict.")


def _combine(verdicts: Sequence[str]) -> str:
    """Reproduced when every part is, refuted when any part is, else unclear."""
    if all(v == "reproduced" for v in verdicts):
        return "reproduced"
    return "refuted" if "refuted" in verdicts else "unclear"


def _design(frame: pd.DataFrame, design: str) -> dict[str, Any]:
    return {"name": design, "bases": sorted(int(b) for b in frame["base"].unique()),
            "seeds": sorted(int(s) for s in frame["seed"].unique() if s >= 0)}


# ---------------------------------------------------------------------------------------------
# The claims
# ---------------------------------------------------------------------------------------------


def direct_extrapolation_claim(frame: pd.DataFrame, chance: float, train_len: int,
                               design: str, seed: int = 0) -> Claim:
    """LongLLaDA's local perception. `frame`: outcomes of the base models under direct
    extrapolation at lengths above T_train, arms `within T_train` and `beyond T_train` by the
    needle's distance from the question (not the same prompts: unpaired)."""
    frame = in_percent(frame)
    near = estimate(frame, {"within T_train": 1.0}, seed=seed)
    far = estimate(frame, {"beyond T_train": 1.0}, seed=seed)
    gap = estimate(frame, {"within T_train": 1.0, "beyond T_train": -1.0}, paired=False,
                   seed=seed)
    decided = verdict(gap, min_bases=MIN_BASES)
    if decided == "reproduced" and near.ci[0] <= chance:
        decided = "unclear"
    estimates = {"needle within T_train": estimate_entry(near, True),
                 "needle beyond T_train": estimate_entry(far, True),
                 "within - beyond": estimate_entry(gap, False)}
    return Claim("direct_extrapolation", "Under direct extrapolation (no RoPE change) the base "
                 "model still retrieves, but only needles within T_train of the question",
                 f"NIAH exact match (%) of the base models at lengths above T_train = "
                 f"{train_len}, by the needle's distance from the question", estimates, chance,
                 "reproduced when the across-run interval of within - beyond lies above 0, "
                 f">= 80% of the bases agree and the within interval lies above chance (>= "
                 f"{MIN_BASES} bases); refuted when it lies below 0 with >= 80% of the bases",
                 decided, _design(frame, design), note=_bases_note(near.bases, MIN_BASES),
                 tested=["within - beyond", "needle within T_train"])


def training_free_claim(frame: pd.DataFrame, target_len: int, design: str,
                        margin: float = LOSS_MARGIN, seed: int = 0) -> Claim:
    """Training-free extension at the target length. `frame`: per-window losses of the bases
    under `default`, `ntk_critical` and `diffusion_ntk` (units: windows, clusters: documents),
    with a `length` column. Superiority of NTK at the critical dimension over direct
    extrapolation (negative gap), non-inferiority of the diffusion-aware law within `margin`."""
    estimates, verdicts, bases = {}, [], 0
    for length in sorted(frame["length"].unique()):
        at = frame[frame["length"] == length].drop(columns="length")
        ntk = estimate(at, {"ntk_critical": 1.0, "default": -1.0}, seed=seed)
        law = estimate(at, {"diffusion_ntk": 1.0, "ntk_critical": -1.0}, margin=margin,
                       seed=seed)
        estimates[f"ntk_critical - default @ {length}"] = estimate_entry(ntk, False)
        estimates[f"diffusion_ntk - ntk_critical @ {length}"] = estimate_entry(law, False)
        if length == target_len:
            bases = ntk.bases
            verdicts = [verdict(ntk, higher_is_better=False, min_bases=MIN_BASES),
                        verdict(law, margin=margin, higher_is_better=False,
                                min_bases=MIN_BASES)]
    if not verdicts:
        raise ValueError(f"no losses at the target length {target_len}")
    return Claim("training_free", "Training-free, NTK scaling at the critical dimension extends "
                 "the window and the diffusion-aware law does at least as well",
                 "paired held-out masked-diffusion loss gap (nats per token) per window, "
                 "bootstrapped by document", estimates, None,
                 f"at {target_len} tokens: reproduced when the across-run interval of "
                 "ntk_critical - default lies below 0 and that of diffusion_ntk - ntk_critical "
                 f"below +{margin:g} (non-inferiority), each with >= 80% of the bases (>= "
                 f"{MIN_BASES} bases); refuted when either lies wholly on the other side; "
                 "other lengths are reported, not tested", _combine(verdicts),
                 _design(frame, design), note=_bases_note(bases, MIN_BASES),
                 tested=[f"ntk_critical - default @ {target_len}",
                         f"diffusion_ntk - ntk_critical @ {target_len}"])


def post_trained_retrieval_claim(frame: pd.DataFrame, ultra: str, baselines: Sequence[str],
                                 conditions: Sequence[str], chance: float, design: str,
                                 seed: int = 0) -> Claim:
    """UltraLLaDA's headline. `frame`: outcomes with arms `<model> @ <condition>` (a length, or
    a length and a task such as "2048, 4 keys"); the post-trained `ultra` must beat every one of
    `baselines` in every condition."""
    frame = in_percent(frame)
    estimates, verdicts, bases = {}, [], 0
    for condition in conditions:
        for model in (ultra, *baselines):
            result = estimate(frame, {f"{model} @ {condition}": 1.0}, seed=seed)
            estimates[f"{model} @ {condition}"] = estimate_entry(result, True)
        for other in baselines:
            gap = estimate(frame, {f"{ultra} @ {condition}": 1.0,
                                   f"{other} @ {condition}": -1.0}, seed=seed)
            estimates[f"{ultra} - {other} @ {condition}"] = estimate_entry(gap, False)
            verdicts.append(verdict(gap, min_bases=MIN_BASES))
            bases = gap.bases
    return Claim("post_trained_retrieval", "Post-training with diffusion-aware NTK and adaptive "
                 "packing retrieves at 16x and 32x the training window, above direct "
                 "extrapolation and the best training-free law",
                 "NIAH exact match (%) on the same prompts for every model (\"4 keys\": four "
                 "needles with other words and keys in the document, one queried; picking one of "
                 "them at random scores 25%)", estimates, chance,
                 f"reproduced when, in every condition, the across-run interval of {ultra} minus "
                 f"each of {', '.join(baselines)} lies above 0 with >= 80% of the bases (>= "
                 f"{MIN_BASES} bases); refuted when one lies below 0 so", _combine(verdicts),
                 _design(frame, design), note=_bases_note(bases, MIN_BASES),
                 tested=[f"{ultra} - {other} @ {condition}" for condition in conditions
                         for other in baselines])


def comparator_claim(claim_id: str, claim: str, frame: pd.DataFrame, ultra: str,
                     comparator: str, length: int, chance: float, design: str,
                     seed: int = 0) -> Claim:
    """What one ingredient of the recipe adds: `ultra` against the matched post-trained
    `comparator` (the same recipe without that ingredient), NIAH at `length`, paired. Both
    levels are estimated on the bases that have the comparator (a design runs it on fewer), so
    that they compare as their difference does."""
    frame = in_percent(frame)
    frame = frame[frame["base"].isin(frame.loc[frame["arm"] == comparator, "base"].unique())]
    estimates = {arm: estimate_entry(estimate(frame, {arm: 1.0}, seed=seed), True)
                 for arm in (ultra, comparator)}
    gap = estimate(frame, {ultra: 1.0, comparator: -1.0}, seed=seed)
    estimates[f"{ultra} - {comparator}"] = estimate_entry(gap, False)
    return Claim(claim_id, claim, f"NIAH exact match (%) at {length} tokens, same prompts",
                 estimates, chance,
                 f"reproduced when the across-run interval of {ultra} - {comparator} lies "
                 f"above 0 with >= 80% of the bases (>= {MIN_BASES} bases); refuted when below",
                 verdict(gap, min_bases=MIN_BASES), _design(frame, design),
                 note=_bases_note(gap.bases, MIN_BASES), tested=[f"{ultra} - {comparator}"])


def packing_claim(claim_id: str, claim: str, niah: pd.DataFrame, decoys: pd.DataFrame,
                  arm: str, reference: str, length: int, chance: float, decoy_chance: float,
                  design: str, seed: int = 0) -> Claim:
    """A packing against `reference` (direct concatenation): the primary endpoint is NIAH on
    single documents at `length` (the paper's setting); packed-context retrieval with decoy
    documents (`decoys`, where cross-document attention matters) is reported beside it."""
    estimates, bases, decided = {}, 0, "unclear"
    for endpoint, frame in (("NIAH", in_percent(niah)), ("decoys", in_percent(decoys))):
        for model in (arm, reference):
            estimates[f"{model}, {endpoint}"] = estimate_entry(
                estimate(frame, {model: 1.0}, seed=seed), True)
        gap = estimate(frame, {arm: 1.0, reference: -1.0}, seed=seed)
        estimates[f"{arm} - {reference}, {endpoint}"] = estimate_entry(gap, False)
        if endpoint == "NIAH":
            bases, decided = gap.bases, verdict(gap, min_bases=MIN_BASES_PACKING)
    return Claim(claim_id, claim,
                 f"exact match (%) at {length} tokens after post-training: NIAH on single "
                 "documents (primary); packed rows with decoy documents that hold other keys "
                 f"for the queried word (secondary; picking one of those keys at random scores "
                 f"{decoy_chance:.3g}%)", estimates, chance,
                 f"reproduced when the across-run interval of {arm} - {reference} on NIAH lies "
                 f"above 0 with >= 80% of the bases (>= {MIN_BASES_PACKING} bases); refuted "
                 "when below; the decoy endpoint is reported, not tested", decided,
                 _design(niah, design), note=_bases_note(bases, MIN_BASES_PACKING),
                 tested=[f"{arm} - {reference}, NIAH", f"{arm} - {reference}, decoys"])


# ---------------------------------------------------------------------------------------------
# The file and its renderings
# ---------------------------------------------------------------------------------------------


def record_claims(path: str | os.PathLike, claims: Sequence[Claim],
                  provenance: Mapping[str, Any] | None = None) -> list[Claim]:
    """Merge `claims` into the JSON list at `path` (replacing those with the same id), each
    with `provenance` (when given), written atomically in `CLAIM_ORDER`; returns every claim
    now in the file."""
    stamped = [Claim(**{**asdict(c), "provenance": dict(provenance)}) if provenance else c
               for c in claims]
    merged = {c.id: c for c in load_claims(path)} | {c.id: c for c in stamped}
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
    """One row per claim: the verdict, what the runs measured and what the paper reported."""
    return pd.DataFrame(
        [[c.verdict, c.claim, "; ".join(describe(k, v) for k, v in c.estimates.items())
          + ("" if c.chance is None else f"; chance {c.chance:.3g}%"), REPORTED.get(c.id, "")]
         for c in claims],
        index=pd.Index([c.id for c in claims], name="id"),
        columns=["verdict", "claim", "measured: mean [95% across runs]", "reported (LLaDA-8B)"])


def committed_comparison(claims: Sequence[Claim], committed: Sequence[Claim]) -> pd.DataFrame:
    """Each run value of `claims` (a reproduction) beside the committed multi-seed range of the
    same quantity (`run_range`: where 95% of single runs fall) and the committed verdict:
    `inside` tells a reproduction from a drift."""
    reference = {c.id: c for c in committed}
    rows = []
    for claim in claims:
        theirs = reference.get(claim.id)
        for key, value in claim.estimates.items():
            if theirs is None or key not in theirs.estimates:
                continue
            window = theirs.estimates[key]["run_range"]
            for run in value["per_run"]:
                rows.append({"claim": claim.id, "quantity": key, "base": run["base"],
                             "seed": run["seed"], "this run": run["value"],
                             "committed range": f"[{window[0]:.3g}, {window[1]:.3g}]",
                             "inside": inside(run["value"], window),
                             "committed verdict": theirs.verdict})
    return pd.DataFrame(rows)


def recipe_mismatch(ours: Mapping[str, Any] | None, theirs: Mapping[str, Any] | None) -> str:
    """Why the committed study's ranges are no test of a reproduction ("" when they are), from
    the two studies' notebook 02 summaries: their bases learned other keys, i.e. another recipe
    (docs/recipe.md)."""
    if not ours or not theirs or ours.get("keys") == theirs.get("keys"):
        return ""
    return (f"the committed study's bases learned {theirs.get('keys')}, these {ours.get('keys')}: "
            "another recipe, so its ranges are a reference here, not a test")


def results_markdown(claims: Sequence[Claim], brief: bool = False) -> str:
    """The claims as a bulleted list: notebook 05's findings and summary.md (every estimate),
    or with `brief` the README's results (the quantities each verdict reads, run by run)."""
    return "\n".join(f"- {claim.brief() if brief else claim.text()}" for claim in claims)


def summary_markdown(*, design: str, train_len: int, target_len: int, date: str,
                     claims: Sequence[Claim], sections: Mapping[str, Mapping[str, Any]],
                     comparison: pd.DataFrame | None = None, notes: Sequence[str] = ()) -> str:
    """`results/summary.md`: the claims (from claims.json), each run's values, the comparison
    with the committed ranges (for a reproduction) and each notebook's summary (`sections`:
    title -> key/value pairs, as the notebooks' *_summary.json files hold); `notes` (e.g. the
    bases' gate, a recipe mismatch) stand under the title."""
    provenance = next((c.provenance for c in claims if c.provenance), {})
    lines = [f"# minillada results (design `{design}`)", "",
             f"Generated by `notebooks/05_long_context_eval.ipynb` on {date} from "
             "`results/claims.json`; every number comes from these runs except the *reported* "
             "column (the UltraLLaDA paper's LLaDA-8B results, docs/science.md).", "",
             f"Mini model: T_train {train_len}, post-trained at {target_len}, evaluated to "
             f"{32 * train_len} tokens. The unit of replication is the training run: each "
             "number is the mean over base models of the mean over post-training seeds, with a "
             "95% interval from a hierarchical bootstrap (bases, then seeds, then prompts); "
             "the tests are in docs/science.md.", ""]
    if provenance:
        lines += ["Computed on: " + "; ".join(f"{k} {v}" for k, v in provenance.items()), ""]
    lines += [line for note in notes if note for line in (f"**Note:** {note}.", "")]
    lines += ["## Claims", "", results_markdown(claims), "",
              markdown_table(claims_table(claims)), ""]
    if comparison is not None and len(comparison):
        outside = comparison[~comparison["inside"]]
        lines += ["## Against the committed multi-seed study", "",
                  f"{int(comparison['inside'].sum())} of {len(comparison)} numbers of this run "
                  "lie inside the committed range where 95% of single runs fall"
                  + (": every one." if outside.empty else
                     "; outside: " + ", ".join(
                         f"{row['claim']} / {row['quantity']} ({row['this run']:.3g}, "
                         f"committed {row['committed range']})" for _, row in outside.iterrows())
                     + "."),
                  "", markdown_table(comparison.set_index("claim")), ""]
    for title, section in sections.items():
        lines += [f"## {title}", "", *(f"- {key}: {value}" for key, value in section.items()), ""]
    return "\n".join(lines)


README_START = "<!-- results: rendered from results/claims.json by minillada.claims.report -->"
README_END = "<!-- /results -->"


def readme_with_results(readme: str, claims: Sequence[Claim]) -> str:
    """`readme` with the block between README_START and README_END replaced by the claims
    (`results_markdown(claims, brief=True)`)."""
    if README_START not in readme or README_END not in readme:
        raise ValueError(f"the README has no results block ({README_START} ... {README_END})")
    head, rest = readme.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_START}\n{results_markdown(claims, brief=True)}\n{README_END}{tail}"
