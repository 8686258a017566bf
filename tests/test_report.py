"""The final report: the main table beside the paper's numbers, findings decided by comparisons of
the measured values (never written by hand), and summary.md."""

from __future__ import annotations

import pandas as pd
import pytest

from minillada import report

NAMES = ["base", "free", "ultra"]
T = 4


def frames(ultra_ppl: float, ultra_exact: float):
    ppl = pd.DataFrame({"model": NAMES * 2, "length": [T] * 3 + [32 * T] * 3,
                        "ppl": [10.0, 10.0, 9.0, 300.0, 50.0, ultra_ppl]})
    passkey = pd.DataFrame({"model": NAMES * 2, "length": [16 * T] * 6,
                            "value": [0, 10, 100, 0, 10, 100.0],
                            "exact": [0, 0, ultra_exact, 0, 0.5, ultra_exact]})
    ruler = pd.DataFrame({"model": NAMES, "length": [2 * T] * 3, "value": [5.0, 6.0, 40.0],
                          "task": ["niah"] * 3})
    return ppl, passkey, ruler


def test_main_table_puts_ours_beside_the_reported_numbers():
    table = report.main_table(*frames(20.0, 1.0), NAMES, T, 16 * T)
    assert list(table.columns[:3]) == ["ours: base", "ours: free", "ours: ultra"]
    assert list(table.columns[3:]) == list(report.REPORTED_COLUMNS)
    assert table.loc["PPL at 32x T_train"].tolist()[:3] == ["300.00", "50.00", "20.00"]
    assert table.loc["PPL at 32x T_train", "reported: LLaDA-8B-Base"] == "343.88"
    assert table.loc["passkey/NIAH at 16x T_train"].tolist()[:3] == ["0.0", "10.0", "100.0"]
    assert table.loc["RULER-style average at 8x T_train"].tolist()[:3] == ["n/a"] * 3


def test_findings_follow_the_numbers():
    good = report.findings(*frames(20.0, 1.0), NAMES, T, key_digits=1)
    assert [f.holds for f in good] == [True, True, True]
    assert good[0].measured == {"ultra": 20.0, "free": 50.0, "base": 300.0}  # sorted by PPL
    assert good[1].measured == {"base": 0.0, "free": 25.0, "ultra": 100.0}  # exact, in %
    assert good[1].chance == pytest.approx(10.0)
    bad = report.findings(*frames(80.0, 0.1), NAMES, T, key_digits=1)
    assert [f.holds for f in bad][:2] == [False, False]  # free has the lower PPL; 10% = chance
    text = bad[1].text()
    assert "ultra 10%" in text and "chance 10%" in text and "verdict: does not hold (test: " in text


def test_a_claim_without_measurements_is_not_decided():
    ppl, passkey, ruler = frames(20.0, 1.0)
    (found,) = report.findings(ppl[ppl["length"] == T], passkey, ruler, NAMES, T, 1)[:1]
    assert found.holds is None and "not measured" in found.text()


def test_summary_markdown_structure():
    ppl, passkey, ruler = frames(20.0, 1.0)
    table = report.main_table(ppl, passkey, ruler, NAMES, T, 16 * T)
    base = {"steps": 2, "tokens": 1000, "train_minutes": 0.1, "tokens_per_s": 500,
            "val_loss": 4.2, "ppl_at_T": 60.0, "passkey_exact": 50.0, "passkey_samples": 11,
            "key_digits": 1}
    text = report.summary_markdown(preset="smoke", seed=0, train_len=T, target_len=16 * T,
                                   date="2026-01-01", table=table, base=base,
                                   found=report.findings(ppl, passkey, ruler, NAMES, T, 1))
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == ["# minillada results (preset `smoke`, seed 0)",
                        "## Base model (notebook 02)", "## Main table", "## Findings"]
    assert "50.0% exact over 11 samples (chance 10%)" in text
    assert "| 343.88 |" in text and text.count("\n- ") >= 6


def test_markdown_table():
    frame = pd.DataFrame({"a": [1, 2], "b|c": ["x", "y"]}, index=pd.Index(["r1", "r2"], name="k"))
    assert report.markdown_table(frame) == (
        "| k | a | b\\|c |\n| --- | --- | --- |\n| r1 | 1 | x |\n| r2 | 2 | y |")
