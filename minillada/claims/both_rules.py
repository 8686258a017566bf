"""The committed study's claims under both rules: the bootstrap rule they were decided by
(2026-12-04) and the calibrated rule pre-registered for the gated design (`claims.rule`).

`results/claims.json` keeps every run's value of each tested quantity, not its prompts, so the
calibrated rule is applied to what it decides on first: the base means (a base's runs averaged),
their t-test with B - 1 degrees of freedom against the claimed margin, the claims' p-values
adjusted by Holm, and the minimum of five bases. A claim that no Holm-adjusted test supports is
`unclear` under the calibrated rule whatever the bases' own intervals say (they can only
withhold a verdict); one that a test supports is marked `needs the bases' own intervals`, which
only the per-prompt tables can give. `results/both_rules.md` is this module's rendering.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import pandas as pd

from minillada.claims.report import LOSS_MARGIN, Claim, markdown_table
from minillada.claims.rule import MIN_BASES, BaseValue, Part, across_bases, claim_side, holm

# Quantities tested against a non-inferiority margin rather than 0 (docs/science.md).
MARGINS = {"diffusion_ntk - ntk_critical": LOSS_MARGIN}
ALPHA = 0.05


def _margin(quantity: str) -> float:
    return next((m for prefix, m in MARGINS.items() if quantity.startswith(prefix)), 0.0)


def _base_means(entry: dict) -> list[BaseValue]:
    """One value per base: its runs' values averaged (no own interval: nan)."""
    runs = defaultdict(list)
    for run in entry["per_run"]:
        runs[run["base"]].append(run["value"])
    return [BaseValue(base, sum(v) / len(v), float("nan"), float("nan"), 0, len(v))
            for base, v in sorted(runs.items())]


def parts_of(claim: Claim) -> list[tuple[str, Part]]:
    """The claim's tested quantities as calibrated-rule parts; losses (no chance level) claim
    the lower side."""
    higher = claim.chance is not None
    return [(key, Part(across_bases(_base_means(claim.estimates[key]), _margin(key)), higher))
            for key in claim.tested]


def under_both_rules(claims: Sequence[Claim]) -> pd.DataFrame:
    """One row per tested quantity: bases, the mean over bases with its 95 % t-interval, the
    t-test's p, the claim's p after the intersection-union test and Holm, and both verdicts."""
    parts = {claim.id: parts_of(claim) for claim in claims}
    sides = {cid: claim_side([p for _, p in ps]) for cid, ps in parts.items()}
    adjusted = holm({cid: p for cid, (_, p) in sides.items()})
    rows = []
    for claim in claims:
        bases = min(p.test.bases for _, p in parts[claim.id])
        if bases < MIN_BASES:
            calibrated = f"unclear (< {MIN_BASES} bases)"
        elif adjusted[claim.id] > ALPHA:
            calibrated = "unclear"
        else:
            calibrated = f"{sides[claim.id][0]} the claim: needs the bases' own intervals"
        for key, part in parts[claim.id]:
            low, high = part.test.ci
            rows.append({"claim": claim.id, "quantity": key, "bases": part.test.bases,
                         "mean over bases [95% t]": f"{part.test.mean:.3g} [{low:.3g}, "
                                                    f"{high:.3g}]",
                         "margin": part.test.margin, "p": f"{part.test.p:.2g}",
                         "claim p (Holm)": f"{adjusted[claim.id]:.2g}",
                         "calibrated rule": calibrated, "bootstrap rule": claim.verdict})
    return pd.DataFrame(rows)


def both_rules_markdown(claims: Sequence[Claim]) -> str:
    """`results/both_rules.md`: the table of `under_both_rules` with what it means."""
    table = under_both_rules(claims)
    changed = sorted({row["claim"] for _, row in table.iterrows()
                      if row["bootstrap rule"] != row["calibrated rule"].split()[0]})
    return "\n".join([
        "# The committed study (2026-12-04) under both rules", "",
        "Rendered by `minillada.claims.both_rules` from `results/claims.json`. The bootstrap "
        "rule decided these claims; the calibrated rule of the gated design (docs/science.md) "
        "decides on base means: a t-test with B - 1 degrees of freedom, Holm across the "
        f"{len(claims)} claims, at least {MIN_BASES} bases. Claims whose verdict differs: "
        + (", ".join(changed) if changed else "none") + ".", "",
        markdown_table(table.set_index("claim")), ""])
