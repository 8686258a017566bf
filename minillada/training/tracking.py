"""Experiment tracking besides metrics.jsonl: `TrainConfig.log = "tensorboard"` also writes the
scalars of every step (loss, lr, grad_norm, tokens_per_s and the validation metrics val_*) to
`<run>/tensorboard/`, for `tensorboard --logdir runs`.

TensorBoard is optional (`pip install tensorboard`, or the `tracking` extra); a run asking for it
without it is refused before it writes anything (`check_tracker`, in `config.prepare_run`),
naming the install command. metrics.jsonl stays the
record every notebook and command reads.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCALARS = ("loss", "lr", "grad_norm", "tokens_per_s")  # and every val_* metric


def check_tracker(log: str) -> None:
    """ValueError naming the install command when `log` is "tensorboard" and the tensorboard
    package is absent."""
    if log == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("log='tensorboard' needs the tensorboard package: pip install "
                         "tensorboard (or pip install 'minillada[tracking]')")


class NoTracker:
    """What `open_tracker` returns for log="jsonl" and on ranks other than 0: does nothing."""

    def append(self, record: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(NoTracker):
    """A SummaryWriter in `folder`; steps after `start_step` (a resumed run) replace old ones."""

    def __init__(self, folder: Path, start_step: int = 0) -> None:
        check_tracker("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=start_step or None)

    def append(self, record: Mapping[str, Any]) -> None:
        for name, value in record.items():
            if (name in SCALARS or name.startswith("val_")) and isinstance(value, int | float):
                self.writer.add_scalar(name, value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_tracker(log: str, out: Path, start_step: int = 0, is_main: bool = True) -> NoTracker:
    """The tracker `TrainConfig.log` names, writing into the run folder `out`."""
    if log == "jsonl" or not is_main:
        return NoTracker()
    if log == "tensorboard":
        return TensorBoardTracker(Path(out) / "tensorboard", start_step)
    raise ValueError(f"unknown log {log!r}; choose one of jsonl, tensorboard")
