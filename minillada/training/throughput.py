"""This machine's training throughput, measured on a few steps of a preset's pre-training: what
`minillada reproduce` scales its expected wall time by (`claims.reproduction_time`) and what
benchmarks/bench_train.py reports."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from minillada.modeling.distributed import start_runtime, stop_runtime
from minillada.training.config import make_config
from minillada.training.trainer import Trainer


def time_training_steps(preset: str, steps: int, warmup: int = 1,
                        **overrides: Any) -> tuple[Trainer, int, float]:
    """Run `warmup`, then `steps` timed steps of the preset's pre-training in a temporary run
    folder (this process's runtime); returns (the trainer, tokens and seconds of the timed
    steps)."""
    runtime = start_runtime()
    try:
        with tempfile.TemporaryDirectory() as out:
            config = make_config(preset, "pretrain", out, **{
                "steps": warmup + steps, "progress": False, "random_length_fraction": 0.0,
                **overrides})
            trainer = Trainer(config, runtime)
            try:
                for _ in range(warmup):
                    trainer.train_step()
                tokens, start = trainer.tokens, time.perf_counter()
                for _ in range(steps):
                    trainer.train_step()
                return trainer, trainer.tokens - tokens, time.perf_counter() - start
            finally:
                trainer.close()
    finally:
        stop_runtime(runtime)


def probe_throughput(preset: str, steps: int = 2, warmup: int = 1) -> tuple[float, str]:
    """(tokens/s, resolved dtype) of the preset's pre-training step on this machine."""
    trainer, tokens, seconds = time_training_steps(preset, steps, warmup, val_rows=0,
                                                   val_task_rows=0)
    return tokens / seconds, trainer.config.dtype
