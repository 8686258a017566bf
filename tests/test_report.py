"""Claims as data: verdicts decided by the intervals of the measured values (never by hand), one
claims.json merged across notebooks, and the summary / README rendered from it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from minillada import report
from minillada.stats import wilson_interval

T = 4


def outcomes(model: str, length: int, hits: int, n: int = 100, **columns) -> pd.DataFrame:
    return pd.DataFrame({"model": model, "length": length, "exact": [1.0] * hits +
                         [0.0] * (n - hits), **columns})


def headline(ultra16: int, ultra32: int, base: int = 5, free: int = 30) -> pd.DataFrame:
    return pd.concat([outcomes(m, f * T, hits) for m, f, hits in (
        ("base", 16, base), ("base", 32, base), ("free", 16, free), ("free", 32, free),
        ("ultra", 16, ultra16), ("ultra", 32, ultra32))], ignore_index=True)


def test_retrieval_values_are_wilson_intervals_with_counts():
    values, ci, n = report.retrieval_values(headline(90, 60), ["model", "length"], "{} @ {}")
    assert values["ultra @ 64"] == 90.0 and n["ultra @ 64"] == 100
    low, high = wilson_interval(90, 100)
    assert ci["ultra @ 64"] == [round(100 * low, 2), round(100 * high, 2)]


@pytest.mark.parametrize("ultra16, ultra32, verdict", [
    (90, 60, "reproduced"),   # meets 80 / 50 and separates from both baselines
    (70, 60, "unclear"),      # separated but below the 80% target at 16x
    (35, 30, "unclear"),      # overlaps the training-free baseline
    (5, 5, "refuted"),        # below the training-free baseline
])
def test_post_trained_retrieval_verdict_follows_the_intervals(ultra16, ultra32, verdict):
    claim = report.post_trained_retrieval_claim(headline(ultra16, ultra32), "ultra",
                                                ["base", "free"], T, chance=1.0)
    assert claim.verdict == verdict
    assert set(claim.values) == set(claim.ci) == set(claim.n) and claim.chance == 1.0


def packing_frame(direct: int, eod: int, adaptive: int) -> pd.DataFrame:
    return pd.concat([outcomes(f"{p}, seed 0", 64, hits, packing=p) for p, hits in
                      (("direct", direct), ("eod", eod), ("adaptive", adaptive))],
                     ignore_index=True)


@pytest.mark.parametrize("counts, verdict", [
    ((20, 60, 65), "reproduced"), ((40, 45, 50), "unclear"), ((70, 20, 25), "refuted"),
    ((20, 70, 30), "refuted"),
])
def test_packing_verdict(counts, verdict):
    claim = report.packing_claim(packing_frame(*counts), packing_frame(*counts), 64, chance=1.0)
    assert claim.verdict == verdict
    assert "eod, with a distractor document" in claim.values


def test_training_free_verdict_uses_the_paired_bootstrap():
    rng = np.random.default_rng(0)
    windows = np.arange(16)
    noise = rng.normal(0, 0.01, 16)
    loss = pd.concat([pd.DataFrame({"model": m, "length": 64, "window": windows,
                                    "value": 5.0 + shift + noise})
                      for m, shift in (("default", 2.0), ("ntk_critical", 0.0),
                                       ("diffusion_ntk", -0.05))], ignore_index=True)
    claim = report.training_free_claim(loss, 64)
    assert claim.verdict == "reproduced" and claim.n["ntk_critical - default"] == 16
    assert claim.values["ntk_critical - default"] == pytest.approx(-2.0, abs=1e-6)
    tied = loss.assign(value=np.where(loss["model"] == "diffusion_ntk",
                                      loss["value"] + 0.05 + rng.normal(0, 0.01, len(loss)),
                                      loss["value"]))
    assert report.training_free_claim(tied, 64).verdict == "unclear"


def test_local_perception_verdict():
    near = pd.DataFrame({"rope": "default", "length": 64, "needle_distance": 2,
                         "exact": [1.0] * 45 + [0.0] * 5})
    far = pd.DataFrame({"rope": "default", "length": 64, "needle_distance": 40,
                        "exact": [1.0] * 2 + [0.0] * 48})
    claim = report.direct_extrapolation_claim(pd.concat([near, far]), T, chance=1.0)
    assert claim.verdict == "reproduced"
    assert claim.n == {"needle within T_train": 50, "needle beyond T_train": 50}


def test_claims_merge_into_one_file_in_order_and_render(tmp_path):
    path = tmp_path / "claims.json"
    ultra = report.post_trained_retrieval_claim(headline(90, 60), "ultra", ["base", "free"], T, 1.0)
    packing = report.packing_claim(packing_frame(20, 60, 65), None, 64, 1.0)
    report.record_claims(path, [packing])
    claims = report.record_claims(path, [ultra, packing])
    assert [c.id for c in claims] == ["post_trained_retrieval", "packing"]
    entries = json.loads(path.read_text())
    assert {"claim", "metric", "values", "ci", "n", "chance", "verdict"} <= set(entries[0])
    assert report.load_claims(path) == claims
    summary = report.summary_markdown(preset="cpu", seed=0, train_len=T, target_len=16 * T,
                                      date="2026-12-02", claims=claims,
                                      sections={"Base model": {"steps": 10}})
    assert "**reproduced**: Post-training" in summary and "- steps: 10" in summary
    assert "ultra @ 64 90 [" in summary and "(n=100)" in summary
    readme = f"intro\n{report.README_START}\nold\n{report.README_END}\nrest\n"
    updated = report.readme_with_results(readme, claims)
    assert "old" not in updated and report.results_markdown(claims) in updated
    assert updated.endswith("rest\n")
    with pytest.raises(ValueError, match="results block"):
        report.readme_with_results("no block", claims)


def test_a_claim_needs_matching_keys_and_a_known_verdict():
    with pytest.raises(ValueError, match="verdict"):
        report.Claim("x", "c", "m", {}, {}, {}, None, "t", "maybe")
    with pytest.raises(ValueError, match="same keys"):
        report.Claim("x", "c", "m", {"a": 1.0}, {}, {}, None, "t", "unclear")


def test_markdown_table():
    frame = pd.DataFrame({"a": [1, 2], "b": ["x|y", "z"]}, index=pd.Index(["r1", "r2"], name="k"))
    assert report.markdown_table(frame).splitlines() == [
        "| k | a | b |", "| --- | --- | --- |", "| r1 | 1 | x\\|y |", "| r2 | 2 | z |"]
