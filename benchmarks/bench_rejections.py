"""How fast the command line refuses bad input: every CLI case of tests/test_bad_input.py, each run
as a user runs it (`python -m minillada ...`, a fresh process), timed from start to exit.

    .venv/bin/python benchmarks/bench_rejections.py --repeats 3

Prints (not a test) the machine, each case's median seconds and, per command, the median, the
maximum and how many cases took 1.5 s or more (the goal for `train` and `eval`: none).
"""

from __future__ import annotations

import argparse
import os
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


def time_rejection(argv: list[str], cwd: Path) -> float:
    """Seconds from starting `python -m minillada ARGV` to its exit; it must exit 2."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "minillada", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    if done.returncode != 2:
        raise RuntimeError(f"{argv} exited {done.returncode}, not 2: {done.stderr[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (default 3)")
    args = parser.parse_args()

    import torch

    from minillada.precision import describe_machine

    print(f"machine: {describe_machine()}; torch.backends.cpu.get_cpu_capability() = "
          f"{torch.backends.cpu.get_cpu_capability()}")
    seconds: dict[str, tuple[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        folders = make_folders(root)
        for name, argv, _ in CLI_CASES:
            cwd = root / "cases" / name
            cwd.mkdir(parents=True)
            full = complete_argv(argv, cwd / "out", folders)
            runs = [time_rejection(full, cwd) for _ in range(args.repeats)]
            seconds[name] = (argv[0], statistics.median(runs))
            print(f"{name:<30} {seconds[name][1]:6.3f} s", flush=True)
    for command in dict.fromkeys(command for command, _ in seconds.values()):
        values = [s for c, s in seconds.values() if c == command]
        slow = sum(s >= GOAL_S for s in values)
        print(f"{command:<10} {len(values):3d} cases: median {statistics.median(values):.3f} s, "
              f"max {max(values):.3f} s, {slow} at or above {GOAL_S} s")
    values = [s for _, s in seconds.values()]
    print(f"{'all':<10} {len(values):3d} cases: median {statistics.median(values):.3f} s, "
          f"max {max(values):.3f} s")


if __name__ == "__main__":
    main()
