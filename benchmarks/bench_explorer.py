"""Redraw time of the RoPE explorer (minillada.figures.widgets.rope_explorer) per slider move.

    .venv/bin/python benchmarks/bench_explorer.py --moves 24

For each configuration (LLaDA-8B: head dim 128, base 500000, T_train 4K, T' 128K; and head dim
256 at 128K) builds the explorer (the first draw, timed apart), then makes `--moves` slider moves
one step away from the start and back (base, head dim, T_train, target T', variant in turn) and
times each redraw: from setting the control's value to the new PNG in the Image widget, outside an
event loop so that a move draws at once (in a kernel the widget waits DEBOUNCE_S first to coalesce
bursts). Prints the median and the slowest redraw, wall clock and process CPU time, with the CPU
capability and thread count. Not a test: on a shared CPU, repeat and compare the CPU times.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from minillada.figures import widgets

CONFIGURATIONS = {
    "LLaDA-8B, T' = 128K": dict(head_dim=128, base=500000.0, train_len=4096, target_len=131072),
    "head dim 256, T' = 128K": dict(head_dim=256, base=500000.0, train_len=4096,
                                    target_len=131072),
}


def neighbour(control, step: int):
    """The value `step` positions away along the control's options (or slider steps)."""
    if hasattr(control, "options") and control.options:
        values = [value for _, value in control.options]
        index = values.index(control.value)
        return values[min(max(index + step, 0), len(values) - 1)]
    return min(max(control.value + step * control.step, control.min), control.max)


def bench(config: dict, moves: int) -> dict[str, float]:
    start = time.perf_counter()
    explorer = widgets.rope_explorer(**config)
    first = time.perf_counter() - start
    boxes, message, image = explorer.children
    controls = [c for box in boxes.children for c in box.children]
    walls, cpus = [], []
    for move in range(moves):
        control = controls[(move // 2) % len(controls)]
        before = image.value
        # out one step (down for the target, which sits at the top of its range), then back
        value = neighbour(control, -1 if move % 2 == 0 else 1)
        if control.description == "variant":
            value = "yarn" if move % 2 == 0 else config.get("variant", "diffusion_ntk")
        wall, cpu = time.perf_counter(), time.process_time()
        control.value = value
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        if message.value or image.value == before:
            raise RuntimeError(f"move {move} ({control.description} -> {value}) did not redraw: "
                               f"{message.value!r}")
    return {"first": first, "median": statistics.median(walls), "max": max(walls),
            "cpu_median": statistics.median(cpus), "cpu_max": max(cpus)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=24)
    args = parser.parse_args()
    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, torch threads "
          f"{torch.get_num_threads()}, os cpus {os.cpu_count()}, OMP_NUM_THREADS "
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, {platform.machine()}, "
          f"load average {os.getloadavg()[0]:.2f} (1 min)")
    print(f"{'configuration':<26} {'first s':>8} {'median s':>9} {'max s':>7} "
          f"{'cpu med s':>10} {'cpu max s':>10}  ({args.moves} moves)")
    for name, config in CONFIGURATIONS.items():
        r = bench(config, args.moves)
        print(f"{name:<26} {r['first']:>8.3f} {r['median']:>9.3f} {r['max']:>7.3f} "
              f"{r['cpu_median']:>10.3f} {r['cpu_max']:>10.3f}")


if __name__ == "__main__":
    main()
