"""`minillada rope`: table, JSON, overrides and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from minillada.cli import main

KEYS = {
    "method", "head_dim", "base", "train_len", "target_len",
    "critical_dim", "scale", "new_base", "attention_factor",
}  # fmt: skip


def run_json(capsys, *argv: str) -> list[dict]:
    assert main(["rope", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_llada_128k_diffusion_ntk(capsys):
    (row,) = run_json(
        capsys, "--model", "llada-8b", "--method", "diffusion_ntk", "--target-len", "131072"
    )
    assert set(row) == KEYS
    assert row["critical_dim"] == 70
    assert row["scale"] == pytest.approx(561.9, rel=0.005)
    assert row["new_base"] == pytest.approx(561.9 * 500000, rel=0.005)
    assert row["attention_factor"] == 1.0


def test_all_methods_and_nulls(capsys):
    rows = run_json(capsys, "--model", "llada-8b", "--target-len", "32768")
    by_method = {row["method"]: row for row in rows}
    assert {"default", "linear", "ntk", "yarn", "ntk_critical", "diffusion_ntk"} <= set(by_method)
    assert by_method["ntk_critical"]["scale"] == pytest.approx(54.40, rel=0.005)
    assert by_method["linear"]["critical_dim"] is None and by_method["linear"]["scale"] == 8.0
    assert by_method["default"]["scale"] is None


def test_custom_model_and_variant_options(capsys):
    (row,) = run_json(
        capsys, "--head-dim", "64", "--base", "500", "--train-len", "128", "--target-len", "2048",
        "--method", "diffusion_ntk", "--critical-dim", "32", "--span", "2",
    )  # fmt: skip
    assert row["head_dim"] == 64 and row["critical_dim"] == 32
    assert row["scale"] == pytest.approx((2 * 2048 / (2 * 3.141592653589793)) ** 2 / 500)


def test_human_table(capsys):
    assert (
        main(["rope", "--model", "llada-8b", "--method", "ntk_critical", "--target-len", "8192"])
        == 0
    )
    out = capsys.readouterr().out
    assert "critical_dim" in out and "ntk_critical" in out and "3.4" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--model", "llada-8b", "--method", "foo", "--target-len", "8192"],
            "unknown --method 'foo'",
        ),
        (["--model", "llada-8b", "--method", "yarn", "--target-len", "10"], "got 10"),
        (["--head-dim", "64", "--target-len", "8192"], "--base, --train-len"),
        (["--model", "llada-8b", "--head-dim", "63", "--target-len", "8192"], "got 63"),
    ],
)
def test_bad_input_exits_2_with_the_value(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["rope", *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "minillada", "rope", "--model", "llada-8b", "--target-len", "65536",
         "--method", "diffusion_ntk", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(result.stdout)[0]["scale"] == pytest.approx(158.2, rel=0.005)
