"""Claims as data: verdicts decided across runs by the frozen rule (never by hand), one
claims.json merged across notebooks, and the summary / README rendered from it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from minillada.claims import report
from minillada.claims.statistics import outcomes, wilson_interval

T = 4


def hits(arm: str, base: int, seed: int, rate: float, n: int = 100, **columns) -> pd.DataFrame:
    """n prompts (the same units for every run) of which round(rate n) are answered."""
    k = round(rate * n)
    table = pd.DataFrame({"task": "niah", "length": 64, "depth": np.arange(n) % 10,
                          "repeat": np.arange(n) // 10, "exact": [1.0] * k + [0.0] * (n - k),
                          **columns})
    return outcomes(table, base=base, seed=seed, arm=arm)


def headline(ultra: float, bases: int = 3, free: float = 0.3) -> pd.DataFrame:
    parts = []
    for base in range(bases):
        for length in (64, 128):
            parts += [hits(f"ultra @ {length}", base, 21, ultra),
                      hits(f"base @ {length}", base, -1, 0.05),
                      hits(f"free @ {length}", base, -1, free)]
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("ultra, bases, verdict", [
    (0.9, 3, "reproduced"),  # above both baselines at both lengths on every base
    (0.9, 2, "unclear"),     # two bases cannot decide it
    (0.3, 3, "unclear"),     # tied with the training-free baseline
    (0.0, 3, "refuted"),     # below it
])
def test_post_trained_retrieval_verdict_follows_the_across_run_rule(ultra, bases, verdict):
    claim = report.post_trained_retrieval_claim(headline(ultra, bases), "ultra", ["base", "free"],
                                                ["64", "128"], chance=1.0, design="test")
    assert claim.verdict == verdict
    entry = claim.estimates["ultra @ 64"]
    assert entry["mean"] == pytest.approx(100 * ultra) and entry["bases"] == bases
    assert entry["runs"] == bases and entry["units"] == 100
    low, high = wilson_interval(round(100 * ultra), 100)
    assert entry["per_run"][0]["wilson"] == [round(100 * low, 2), round(100 * high, 2)]
    assert claim.design == {"name": "test", "bases": list(range(bases)), "seeds": [21]}
    assert ("cannot decide" in claim.note) == (bases < 3)


def packing(direct: list[float], eod: list[float], adaptive: list[float]) -> pd.DataFrame:
    return pd.concat([hits(arm, base, 21, rate)
                      for arm, rates in (("direct", direct), ("eod", eod), ("adaptive", adaptive))
                      for base, rate in enumerate(rates)], ignore_index=True)


@pytest.mark.parametrize("eod, verdict", [
    ([0.6] * 5, "reproduced"),
    ([0.6, 0.6, 0.6, 0.1, 0.1], "unclear"),  # 3 of 5 bases: not the 80 % the test asks
    ([0.2] * 5, "unclear"),
    ([0.05] * 5, "refuted"),
])
def test_packing_claims_need_five_bases_and_a_consistent_sign(eod, verdict):
    niah = packing([0.2] * 5, eod, [0.8] * 5)
    claim = report.packing_claim("packing_eod", "EOD beats direct", niah, niah, "eod", "direct",
                                 64, 1.0, 33.3, "test")
    assert claim.verdict == verdict
    assert {"eod, NIAH", "direct, NIAH", "eod - direct, NIAH", "eod - direct, decoys"} <= set(
        claim.estimates)
    four = packing([0.2] * 4, [0.6] * 4, [0.8] * 4)
    assert report.packing_claim("packing_eod", "c", four, four, "eod", "direct", 64, 1.0, 33.3,
                                "test").verdict == "unclear"


def losses(gap_ntk: float, gap_law: float, bases: int = 3, windows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for base in range(bases):
        noise = rng.normal(0, 0.002, windows)
        for arm, shift in (("default", 0.0), ("ntk_critical", gap_ntk),
                           ("diffusion_ntk", gap_ntk + gap_law)):
            rows += [dict(base=base, seed=-1, arm=arm, unit=w, cluster=w // 4, length=64,
                          value=5.0 + shift + noise[w] + rng.normal(0, 0.001))
                     for w in range(windows)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("gap_ntk, gap_law, verdict", [
    (-0.5, 0.0, "reproduced"),    # NTK beats direct; the diffusion-aware law ties (non-inferior)
    (-0.5, -0.05, "reproduced"),  # ... or beats it
    (-0.5, 0.05, "refuted"),      # worse by more than the 0.01 margin
    (0.5, 0.0, "refuted"),        # NTK worse than direct extrapolation
    (-0.5, 0.01, "unclear"),      # on the margin: cannot tell
])
def test_training_free_claim_is_superiority_plus_non_inferiority(gap_ntk, gap_law, verdict):
    claim = report.training_free_claim(losses(gap_ntk, gap_law), 64, "test")
    assert claim.verdict == verdict
    assert claim.estimates["ntk_critical - default @ 64"]["mean"] == pytest.approx(gap_ntk,
                                                                                   abs=0.002)
    assert "+0.01" in claim.test


def test_local_perception_compares_near_and_far_needles():
    near = [hits("within T_train", b, -1, 0.8, n=50) for b in range(3)]
    far = [hits("beyond T_train", b, -1, 0.02, n=150).assign(unit=lambda f: "far" + f["unit"])
           for b in range(3)]
    claim = report.direct_extrapolation_claim(pd.concat(near + far), 1.0, T, "test")
    assert claim.verdict == "reproduced"
    assert claim.estimates["within - beyond"]["mean"] == pytest.approx(78.0)
    assert claim.estimates["needle beyond T_train"]["units"] == 150


def test_claims_merge_into_one_file_in_order_and_render(tmp_path):
    path = tmp_path / "claims.json"
    ultra = report.post_trained_retrieval_claim(headline(0.9), "ultra", ["base", "free"],
                                                ["64", "128"], 1.0, "test")
    niah = packing([0.2] * 5, [0.6] * 5, [0.8] * 5)
    eod = report.packing_claim("packing_eod", "EOD beats direct", niah, niah, "eod", "direct",
                               64, 1.0, 33.3, "test")
    report.record_claims(path, [eod])
    claims = report.record_claims(path, [ultra, eod], {"machine": "a CPU"})
    assert [c.id for c in claims] == ["post_trained_retrieval", "packing_eod"]
    entries = json.loads(path.read_text())
    assert {"claim", "metric", "estimates", "chance", "verdict", "design", "provenance"} <= set(
        entries[0])
    assert entries[0]["provenance"] == {"machine": "a CPU"}
    assert report.load_claims(path) == claims
    summary = report.summary_markdown(design="test", train_len=T, target_len=16 * T,
                                      date="2026-12-04", claims=claims,
                                      sections={"Base model": {"steps": 10}})
    assert "**reproduced**: Post-training" in summary and "- steps: 10" in summary
    assert "ultra @ 64 90 [" in summary and "(3 bases, 3 runs, n=100 per run)" in summary
    readme = f"intro\n{report.README_START}\nSTALE\n{report.README_END}\nrest\n"
    updated = report.readme_with_results(readme, claims)
    assert "STALE" not in updated and report.results_markdown(claims, brief=True) in updated
    assert "ultra - free @ 64 60" in updated and ", runs: 90, 90, 90" not in updated
    assert "ultra @ 64" not in report.results_markdown(claims, brief=True)  # not tested
    assert "runs: 60, 60, 60" in report.results_markdown(claims, brief=True)
    assert updated.endswith("rest\n")
    with pytest.raises(ValueError, match="results block"):
        report.readme_with_results("no block", claims)


def test_a_reproduction_is_placed_against_the_committed_ranges():
    committed = report.post_trained_retrieval_claim(headline(0.8, bases=5), "ultra",
                                                    ["base", "free"], ["64", "128"], 1.0, "many")
    one = report.post_trained_retrieval_claim(
        pd.concat([hits(f"ultra @ {n}", 11, 21, 0.2) for n in (64, 128)]
                  + [hits(f"{m} @ {n}", 11, -1, 0.05) for m in ("base", "free")
                     for n in (64, 128)]), "ultra", ["base", "free"], ["64", "128"], 1.0, "one")
    assert one.verdict == "unclear" and "1 base" in one.note
    table = report.committed_comparison([one], [committed])
    row = table[table["quantity"] == "ultra @ 64"].iloc[0]
    assert row["this run"] == pytest.approx(20.0) and not row["inside"]
    assert table[table["quantity"] == "base @ 64"]["inside"].all()
    assert set(table["committed verdict"]) == {"reproduced"}
    text = report.summary_markdown(design="one", train_len=T, target_len=16 * T, date="d",
                                   claims=[one], sections={}, comparison=table)
    assert "lie inside the committed range" in text and "ultra @ 64 (20" in text


def test_a_claim_needs_estimates_and_a_known_verdict():
    with pytest.raises(ValueError, match="verdict"):
        report.Claim("x", "c", "m", {"a": {}}, None, "t", "maybe")
    with pytest.raises(ValueError, match="no estimates"):
        report.Claim("x", "c", "m", {}, None, "t", "unclear")


def test_markdown_table():
    frame = pd.DataFrame({"a": [1, 2], "b": ["x|y", "z"]}, index=pd.Index(["r1", "r2"], name="k"))
    assert report.markdown_table(frame).splitlines() == [
        "| k | a | b |", "| --- | --- | --- |", "| r1 | 1 | x\\|y |", "| r2 | 2 | z |"]


def test_estimate_figures_keep_every_label_inside_under_one_legend():
    import matplotlib

    matplotlib.use("Agg")
    from minillada.figures import plots

    claim = report.post_trained_retrieval_claim(headline(0.9), "ultra", ["base", "free"],
                                                ["64", "128"], 1.0, "test")
    shown = {k: v for k, v in claim.estimates.items() if " - " not in k}
    gaps = {k: v for k, v in claim.estimates.items() if " - " in k}
    fig = plots.estimate_figure(
        plots.EstimatePanel(shown, "exact match", "%", chance=1.0),
        plots.EstimatePanel(gaps, "differences", "points", zero=True, margin=5.0))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top, bottom = fig.axes
    assert [t.get_text() for t in top.get_yticklabels()] == list(shown)
    assert len(fig.legends) == 1 and top.get_legend() is None and bottom.get_legend() is None
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [labels.count(f"a run on base {b}") for b in range(3)] == [1, 1, 1]
    assert {"chance = 1%", "non-inferiority margin 5"} <= set(labels)
    for ax in fig.axes:  # long row labels are laid out inside the figure, not cut off
        for label in ax.get_yticklabels():
            box = label.get_window_extent(renderer)
            assert box.x0 >= 0 and box.x1 <= fig.bbox.x1
    assert top.get_tightbbox(renderer).y0 >= bottom.get_tightbbox(renderer).y1 - 1
    assert fig.legends[0].get_window_extent(renderer).y1 <= bottom.get_tightbbox(renderer).y0 + 1
    with pytest.raises(ValueError, match="at least one"):
        plots.estimate_figure()


def test_comparator_levels_cover_the_bases_that_have_the_comparator():
    """The matched comparator runs on three of five bases: mini-UltraLLaDA's level is taken on
    those three too, so the two levels differ by what their difference says."""
    rates = [0.5, 0.1, 0.9, 0.0, 0.3]
    frame = pd.concat([hits("ultra", base, 21, rate) for base, rate in enumerate(rates)]
                      + [hits("plain", base, 21, rate / 2) for base, rate in enumerate(rates[:3])],
                      ignore_index=True)
    claim = report.comparator_claim("rope_law", "the law is needed", frame, "ultra", "plain", 64,
                                    1.0, "test")
    ultra, plain, gap = (claim.estimates[k] for k in ("ultra", "plain", "ultra - plain"))
    assert ultra["bases"] == plain["bases"] == gap["bases"] == 3
    assert ultra["mean"] == pytest.approx(100 * sum(rates[:3]) / 3)
    assert ultra["mean"] - plain["mean"] == pytest.approx(gap["mean"])
    assert claim.verdict == "reproduced"
