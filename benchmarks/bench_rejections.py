"""How fast the command line refuses bad input: every CLI case of tests/test_bad_input.py, each run
as a user runs it (`python -m minillada ...`, a fresh process), timed from start to exit.

    .venv/bin/python benchmarks/bench_rejections.py --repeats 3

Prints (not a test) the machine, each case's median wall seconds and CPU seconds (user + system
of the process: its own work, which other jobs on the machine do not inflate) and, per command,
their medians, maxima and how many cases took 1.5 s or more (the goal for `train` and `eval`:
none).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_bad_input import CLI_CASES, complete_argv, make_folders  # noqa: E402

GOAL_S = 1.5


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_rejection(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of `python -m minillada ARGV` from start to exit; it must exit 2."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start, cpu = time.perf_counter(), cpu_of_children()
    done = subprocess.run([sys.executable, "-m", "minillada", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start, cpu_of_children() - cpu
    if done.returncode != 2:
        raise RuntimeError(f"{argv} exited {done.returncode}, not 2: {done.stderr[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (default 3)")
    args = parser.parse_args()

    import torch

    from minillada.training.precision import describe_machine

    print(f"machine: {describe_machine()}; torch.backends.cpu.get_cpu_capability() = "
          f"{torch.backends.cpu.get_cpu_capability()}")
    seconds: dict[str, tuple[str, float, float]] = {}  # case -> (command, wall, CPU)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        folders = make_folders(root)
        for name, argv, _ in CLI_CASES:
            cwd = root / "cases" / name
            cwd.mkdir(parents=True)
            full = complete_argv(argv, cwd / "out", folders)
            runs = [time_rejection(full, cwd) for _ in range(args.repeats)]
            wall, cpu = (statistics.median(column) for column in zip(*runs, strict=True))
            seconds[name] = (argv[0], wall, cpu)
            print(f"{name:<30} wall {wall:6.3f} s, CPU {cpu:6.3f} s", flush=True)
    for command in [*dict.fromkeys(command for command, _, _ in seconds.values()), "all"]:
        chosen = [(w, c) for name, w, c in seconds.values() if command in (name, "all")]
        parts = []
        for kind, values in zip(("wall", "CPU"), zip(*chosen, strict=True), strict=True):
            slow = sum(value >= GOAL_S for value in values)
            parts.append(f"{kind} median {statistics.median(values):.3f} s, max "
                         f"{max(values):.3f} s, {slow} at or above {GOAL_S} s")
        print(f"{command:<10} {len(chosen):3d} cases: " + "; ".join(parts))


if __name__ == "__main__":
    main()
