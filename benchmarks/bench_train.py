"""Training throughput at a preset's T_train, FSDP2 overhead, and model-FLOPs utilisation.

    .venv/bin/python benchmarks/bench_train.py --preset cpu --steps 20

Prints (not a test):
- tokens/s of the plain single-process training step (the trainer's own `train_step`: batch
  assembly, forward process, forward, backward, clipping, AdamW), per precision;
- the same step under `torchrun --nproc_per_node=1` with FSDP2 over one process, as a ratio;
- MFU: model FLOPs/s over the measured peak of a large matmul in the same precision. Model FLOPs
  per token are 6 N (N = parameters in matmuls, head included, embedding lookup excluded) plus
  attention 12 n_layers d_model L_attended (forward + backward of QK^T and AV; PaLM appendix B).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

from minillada.common.names import DTYPE_NAMES
from minillada.training.precision import choose_precision, machine_report, matmul_flops
from minillada.training.throughput import time_training_steps
from minillada.training.trainer import Trainer


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10,
                device: str | torch.device = "cpu") -> float:
    """FLOP/s of a size x size x size matmul in `dtype` on `device` (best of `repeats`)."""
    return matmul_flops(str(dtype).removeprefix("torch."), size=size, repeats=repeats,
                        device=str(device), budget_s=30.0)


def model_flops_per_token(trainer: Trainer, seq_len: int) -> float:
    """6 N + 12 n_layers d_model L (see the module docstring)."""
    config = trainer.model.config
    matmul_params = sum(p.numel() for name, p in trainer.model.named_parameters()
                        if p.dim() == 2 and "wte" not in name)
    return 6 * matmul_params + 12 * config.n_layers * config.d_model * seq_len


def measure(preset: str, dtype: str, steps: int, warmup: int) -> dict[str, float]:
    """tokens/s and model FLOPs/s of `steps` timed training steps (in this process's runtime)."""
    trainer, tokens, seconds = time_training_steps(preset, steps, warmup, dtype=dtype)
    flops = model_flops_per_token(trainer, trainer.config.seq_len) * tokens / seconds
    return {"tokens_per_s": tokens / seconds, "model_flops_per_s": flops}


def measure_under_torchrun(preset: str, dtype: str, steps: int, warmup: int) -> dict[str, float]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               __file__, "--worker", "--preset", preset, "--dtypes", dtype,
               "--steps", str(steps), "--warmup", str(warmup)]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["auto", "float32"],
                        choices=DTYPE_NAMES, help="auto is what this machine's runs use")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice); "
                        "on a CPU shared with other work, 1 thread can be far faster than 2")
    parser.add_argument("--no-fsdp", action="store_true", help="skip the torchrun comparison")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args.preset, args.dtypes[0], args.steps, args.warmup)))
        return

    print(machine_report())
    print(f"preset {args.preset}, load average {os.getloadavg()[0]:.2f} (above 0.5: another "
          "job shares the CPU, treat the numbers as 'under load')")
    for dtype in args.dtypes:
        plain = measure(args.preset, dtype, args.steps, args.warmup)
        resolved = choose_precision(dtype).dtype
        peak = matmul_peak(getattr(torch, resolved))
        label = f"{dtype} ({resolved})" if dtype == "auto" else dtype
        line = (f"{label:15s} plain: {plain['tokens_per_s']:8.0f} tokens/s, "
                f"{plain['model_flops_per_s'] / 1e9:6.1f} GFLOP/s model, matmul peak "
                f"{peak / 1e9:6.1f} GFLOP/s, MFU {plain['model_flops_per_s'] / peak:.1%}")
        if not args.no_fsdp:
            fsdp = measure_under_torchrun(args.preset, dtype, args.steps, args.warmup)
            line += (f"; FSDP2 x1: {fsdp['tokens_per_s']:8.0f} tokens/s "
                     f"(ratio to plain {fsdp['tokens_per_s'] / plain['tokens_per_s']:.3f})")
        print(line, flush=True)


if __name__ == "__main__":
    main()
