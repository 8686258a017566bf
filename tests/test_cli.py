"""The command line starts fast: help, version and argument errors never import torch."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import minillada

PROBE = ("import sys, runpy; sys.argv = ['minillada', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('minillada', run_name='__main__')\n"
         "except SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n"
         "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
         "sys.exit(code)")


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=60)
    return done, time.perf_counter() - start


@pytest.mark.parametrize("args", [("--help",), ("rope", "--help"), ("train", "--help"),
                                  ("reproduce", "--help"), ("gate", "--help"),
                                  ("--version",)])
def test_help_and_version_do_not_import_torch(args):
    done, seconds = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("NO-TORCH")
    assert seconds < 2.0


def test_version_and_listing():
    done, _ = run_cli("--version")
    assert done.stdout.strip() == f"minillada {minillada.__version__}"
    done, _ = run_cli("--help")
    for command in ("rope", "train", "eval", "reproduce", "gate"):
        assert command in done.stdout


def test_an_unknown_command_is_one_line_and_fast():
    done, seconds = run_cli("trian")
    assert done.returncode == 2
    error = done.stderr.strip().splitlines()[0]
    assert error.startswith("minillada: error:") and "'trian'" in error and "train" in error
    assert "Traceback" not in done.stderr and seconds < 2.0
