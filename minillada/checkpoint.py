"""A run folder on disk: its config, metrics, checkpoints and exported model.

    config.json          the run's TrainConfig
    metrics.jsonl        one line per step: step, loss, lr, grad_norm, tokens, tokens_per_s, ...
                         (+ val_loss, val_task_* at validation steps)
    checkpoints/step_NNNNNN/state.pt, checkpoints/latest (the name of the newest complete one)
    model/               the final model (save_pretrained) and its tokenizer

Every write is atomic (`minillada.atomic`): a crash at any moment leaves the previous checkpoint,
model and metrics complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from minillada.atomic import atomic_folder, atomic_write_text
from minillada.distributed import Runtime
from minillada.model import LLaDAModelLM

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


def model_folder(path: str | os.PathLike) -> Path:
    """The exported model inside a run folder, or `path` itself if it holds a config.json."""
    path = Path(path)
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no model at {str(path)!r} (no config.json in it or in model/)")


def save_config(out: Path, config: Any) -> None:
    """Write a run's config (a dataclass) as `out/config.json`."""
    atomic_write_text(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def saved_config(out: str | os.PathLike) -> dict[str, Any]:
    """The config a run folder was written with, as a dict (tuples read back as lists)."""
    return json.loads((Path(out) / "config.json").read_text())


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint of a run folder (named by checkpoints/latest), or None."""
    pointer = out / "checkpoints" / "latest"
    return out / "checkpoints" / pointer.read_text().strip() if pointer.is_file() else None


def save_checkpoint(out: Path, state: dict[str, Any], keep: int) -> Path:
    """Write `state` to checkpoints/step_NNNNNN/state.pt atomically: into a temporary folder,
    renamed into place, then `latest` re-pointed (itself atomic). A crash at any moment leaves the
    previous `latest` complete. Keeps the newest `keep` checkpoints."""
    root = out / "checkpoints"
    name = f"step_{state['step']:06d}"
    with atomic_folder(root / name) as temporary:
        torch.save(state, temporary / "state.pt")
    atomic_write_text(root / "latest", name)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return root / name


def load_checkpoint(folder: Path) -> dict[str, Any]:
    return torch.load(folder / "state.pt", map_location="cpu", weights_only=True)


def export_model(model: LLaDAModelLM, tokenizer, folder: Path, runtime: Runtime) -> None:
    """save_pretrained the full (gathered) model and the tokenizer into `folder`, atomically."""
    state = get_model_state_dict(model, options=FULL_STATE)  # a collective under FSDP
    if runtime.is_main:
        plain = LLaDAModelLM(model.config)
        plain.load_state_dict(state)
        with atomic_folder(folder) as temporary:
            plain.save_pretrained(temporary)
            tokenizer.save_pretrained(temporary)
    runtime.barrier()


class MetricsLog:
    """metrics.jsonl: one JSON object per line, appended by rank 0."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (written after the checkpoint a run resumes from)."""
        if self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= step]
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def append(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def read_metrics(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The metrics of a run folder, one dict per step."""
    return MetricsLog(Path(out) / "metrics.jsonl").read()
