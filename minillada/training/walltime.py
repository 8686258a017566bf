"""How long a training run takes on this machine, said while it runs: after its first timed
steps the trainer prints its pace and the expected wall time of the steps left (`training_pace`).
How long a whole reproduction takes, said before it starts: `claims.reproduction_time`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minillada.training.config import TrainConfig


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3.2 h'."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and >= 0, got {seconds}")
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def remaining_seconds(steps_total: int, steps_done: int, seconds_per_step: float) -> float:
    """Expected seconds for the steps left at the measured pace."""
    if steps_done > steps_total:
        raise ValueError(f"steps_done {steps_done} exceeds steps_total {steps_total}")
    return (steps_total - steps_done) * seconds_per_step


def training_pace(config: TrainConfig, first_step: int, step: int, tokens: int,
                  seconds: float) -> str:
    """What the trainer says once: the pace of steps first_step + 1 .. step (`tokens` in
    `seconds`) and the expected wall time of the steps left."""
    left = remaining_seconds(config.steps, step, seconds / (step - first_step))
    return (f"{config.stage} {config.preset}: {tokens / seconds:.0f} tokens/s in {config.dtype} "
            f"over steps {first_step + 1}-{step}; the {config.steps - step} steps left need "
            f"about {format_duration(left)} (plus validation and checkpoints)")
