"""Bad RoPE input: a ValueError naming the value and what is allowed; `minillada rope` exits 2."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest

from minillada.rope.analysis import rope_summary
from minillada.rope.formulas import critical_dim, ntk_scale
from minillada.rope.laws import ROPE_VARIANTS, compute_rope

GOOD = {"variant": "default", "head_dim": 64, "base": 500.0, "train_len": 128, "target_len": 256}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # base: finite and > 1
        ({"base": math.inf}, r"base must be a finite number > 1, got inf"),
        ({"base": math.nan}, r"base must be a finite number > 1, got nan"),
        ({"base": 1}, r"base must be a finite number > 1, got 1$"),
        ({"base": 0.0}, r"base must be a finite number > 1, got 0\.0"),
        ({"base": -10000.0}, r"base must be a finite number > 1, got -10000\.0"),
        ({"base": "1e4"}, r"base must be a finite number > 1, got '1e4'"),
        # head_dim: even and > 0
        ({"head_dim": 0}, r"head_dim \(the rotary dim\) must be a positive even integer, got 0"),
        ({"head_dim": -4}, r"positive even integer, got -4"),
        ({"head_dim": 7}, r"positive even integer, got 7"),
        ({"head_dim": 64.0}, r"positive even integer, got 64\.0"),
        # lengths
        ({"train_len": 0}, r"train_len must be an integer >= 1, got 0"),
        ({"target_len": 0}, r"target_len must be an integer >= 1 or None, got 0"),
        ({"target_len": -5}, r"target_len must be an integer >= 1 or None, got -5"),
        ({"target_len": 512.0}, r"target_len must be an integer >= 1 or None, got 512\.0"),
        # shared parameter values
        (
            {"variant": "linear", "params": {"factor": math.inf}},
            r"factor must be a finite number >= 1, got inf",
        ),
        (
            {"variant": "linear", "params": {"factor": math.nan}},
            r"factor must be a finite number >= 1, got nan",
        ),
        (
            {"variant": "diffusion_ntk", "params": {"span": math.inf}},
            r"span must be a finite number > 0, got inf",
        ),
        (
            {"variant": "diffusion_ntk", "params": {"span": 0}},
            r"span must be a finite number > 0, got 0",
        ),
        # critical_dim override above the rotary dim, or not positive
        (
            {"variant": "ntk_critical", "params": {"critical_dim": 66}},
            r"critical_dim must be an integer in \[1, head_dim = 64\], got 66",
        ),
        (
            {"variant": "diffusion_ntk", "params": {"critical_dim": 0}},
            r"critical_dim must be an integer in \[1, head_dim = 64\], got 0",
        ),
        # a trained span below 2*pi: log_b(span * T / 2pi) <= 0
        *[
            (
                {"variant": "ntk_critical", "train_len": t, "target_len": 64},
                rf"ntk_critical: the critical-dimension law needs span \* train_len > 2\*pi = "
                rf"6\.2832 .*got span \* train_len = 1\.0 \* {t} = {t};",
            )
            for t in (1, 3, 4, 5, 6)
        ],
        (
            {"variant": "diffusion_ntk", "train_len": 3, "target_len": 64, "params": {"span": 2}},
            r"diffusion_ntk: .*span \* train_len > 2\*pi = 6\.2832 .*got span \* train_len = "
            r"2 \* 3 = 6;",
        ),
        # a base below span * T / 2pi: the computed critical dimension exceeds the rotary dim
        (
            {"variant": "ntk_critical", "base": 10.0, "train_len": 4096, "target_len": 8192},
            r"ntk_critical: critical dimension .* = 182 exceeds head_dim = 64: base 10 is below "
            r"span \* train_len / 2pi = 651\.9.*use a base >= 651\.9",
        ),
        (
            {"variant": "diffusion_ntk", "base": 1000.0, "train_len": 4096, "target_len": 8192},
            r"diffusion_ntk: critical dimension .* = 68 exceeds head_dim = 64: base 1000 is below "
            r"span \* train_len / 2pi = 1304",
        ),
    ],
)
def test_bad_rope_input_names_the_value_and_the_bound(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compute_rope(**(GOOD | kwargs))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((64, 500.0, 5), r"span \* train_len > 2\*pi = 6\.2832 .* = 1\.0 \* 5 = 5;"),
        ((64, 500.0, 6, 1.0), r"= 1\.0 \* 6 = 6;"),
        ((64, 500.0, 2, 3.0), r"= 3\.0 \* 2 = 6;"),
        ((64, 10.0, 4096), r"= 182 exceeds head_dim = 64"),
        ((64, math.inf, 4096), r"base must be a finite number > 1, got inf"),
        ((64, 1.0, 4096), r"base must be a finite number > 1, got 1\.0"),
        ((63, 500.0, 4096), r"positive even integer, got 63"),
    ],
)
def test_the_critical_dimension_law_refuses_what_it_cannot_compute(args, message):
    with pytest.raises(ValueError, match=message):
        critical_dim(*args)


def test_the_law_holds_at_its_bounds():
    assert critical_dim(64, 500.0, 7) == 2  # span * T just above 2 pi
    base = 4096 / (2 * math.pi) * (1 + 1e-9)  # base just above T / 2pi: d_c = head_dim
    assert critical_dim(64, base, 4096) == 64
    with pytest.raises(ValueError, match=r"critical_dim must be an integer in \[1, head_dim"):
        ntk_scale(64, 500.0, 128, 256, d_crit=65)
    assert ntk_scale(64, 500.0, 5, 256, d_crit=32) > 0  # an explicit d_c needs no law


@pytest.mark.parametrize(("variant", "span", "expected"), [
    ("ntk_critical", 1.0, 0.8499),
    ("diffusion_ntk", 2.0, 0.9941),
])  # fmt: skip
def test_at_the_training_length_the_critical_laws_give_lambda_below_1(variant, span, expected):
    """The ceiling in d_c makes the "extended" base at T' = T lower than the original."""
    row = rope_summary(variant, 128, 500000.0, 4096, 4096)
    assert row["scale"] == pytest.approx(expected, abs=1e-4)
    assert row["scale"] < 1 and row["new_base"] < 500000.0
    assert ntk_scale(128, 500000.0, 4096, 4096, span) == pytest.approx(expected, abs=1e-4)


def test_the_registry_answers_without_torch():
    """Names, parameters and targets of every variant, as the CLI checks them before torch."""
    code = ("import sys\n"
            "from minillada.rope.laws import ROPE_VARIANTS, UNTARGETED, variant_parameters\n"
            "print(len(ROPE_VARIANTS), sorted(UNTARGETED),\n"
            "      sorted(variant_parameters('longrope')[1]), 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["10", "['default',", "'dynamic']", "['long_factor',",
                                     "'short_factor']", "False"], result.stderr
    assert len({(v.color, v.marker) for v in ROPE_VARIANTS.values()}) == len(ROPE_VARIANTS)


# ----------------------------------------------------------------------------- the calculator


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--base", "inf"], "got inf"),
        (["--base", "nan"], "got nan"),
        (["--base", "1"], "RoPE base must be a finite number > 1, got 1.0"),
        (["--base", "-5"], "got -5.0"),
        (["--head-dim", "0"], "positive even integer, got 0"),
        (["--target-len", "0"], "target_len must be an integer >= 1 or None, got 0"),
        (["--factor", "inf"], "factor must be a finite number >= 1, got inf"),
        (["--critical-dim", "130"], "critical_dim must be an integer in [1, head_dim = 128]"),
        (["--train-len", "5", "--method", "ntk_critical"], "= 1.0 * 5 = 5;"),
        (["--base", "100", "--method", "diffusion_ntk"], "exceeds head_dim = 128"),
    ],
)
def test_the_calculator_refuses_bad_numbers_in_one_line(capsys, argv, message):
    from minillada.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["rope", "--model", "llada-8b", "--target-len", "8192", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("minillada rope: error:")]
    assert message in line
    assert "Traceback" not in err


def test_rope_base_inf_exits_2_fast_without_a_traceback_or_torch():
    code = (
        "import sys\n"
        "from minillada.cli import main\n"
        "try:\n"
        "    main(['rope', '--base', 'inf', '--head-dim', '128', '--train-len', '4096',\n"
        "          '--target-len', '8192'])\n"
        "finally:\n"
        "    print('torch' in sys.modules)\n"
    )
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "minillada rope: error: RoPE base must be a finite number > 1, got inf" in result.stderr
    assert result.stdout.strip() == "False"  # refused before torch was imported
    assert seconds < 2, f"minillada rope --base inf took {seconds:.2f} s"
