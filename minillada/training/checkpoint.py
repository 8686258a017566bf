"""A run folder on disk: its config, metrics, checkpoints and exported model.

    config.json          the run's TrainConfig
    run.lock             held (flock) by the one trainer writing the folder; holds its pid
    metrics.jsonl        one line per step: step, loss, lr, grad_norm, tokens, tokens_per_s, ...
                         (+ val_loss, val_task_* at validation steps)
    checkpoints/step_NNNNNN/   a torch.distributed.checkpoint (DCP) folder: .metadata and one
                         __<rank>_0.distcp per saving rank (the model and optimizer tensors, each
                         rank its own shards), + trainer_state.json (step, tokens, corpus cursor)
    checkpoints/latest   the name of the newest complete checkpoint (a plain name, never a path)
    model/               the final model (save_pretrained) and its tokenizer

Every write is atomic (`common.atomic`): a crash at any moment leaves the previous checkpoint,
model and metrics complete. A checkpoint is resharded when loaded, so a run saved by N processes
resumes on M. Loading runs no pickled code: tensors are read with `torch.load(weights_only=True)`
and DCP's pickled `.metadata` through an unpickler that builds only DCP's metadata classes.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from minillada.common.atomic import atomic_folder, atomic_write_text
from minillada.modeling.distributed import Runtime, all_sum
from minillada.modeling.model import LLaDAModelLM
from minillada.training.config import incompatible_fields

log = logging.getLogger(__name__)
FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)
TRAINER_STATE = "trainer_state.json"
TRAINER_STATE_KEYS = ("step", "tokens", "corpus_cursor")


def save_config(out: Path, config: Any) -> None:
    """Write a run's config (a dataclass) as `out/config.json`."""
    atomic_write_text(out / "config.json", json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def saved_config(out: str | os.PathLike) -> dict[str, Any]:
    """The config a run folder was written with, as a dict (tuples read back as lists)."""
    return json.loads((Path(out) / "config.json").read_text())


# ---------------------------------------------------------------------------------- one writer


class RunInUseError(ValueError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """`out/run.lock`, flock-ed for the life of a run (released on close, and by the OS when the
    process dies, kill -9 included); the file holds the holder's pid for the error message."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "run.lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            self._fd = None
            raise RunInUseError(
                f"{out} is in use: another trainer (pid {holder}) holds {self.path}; wait for it "
                "to finish or stop it before training or resuming this run"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


# ---------------------------------------------------------------------------------- checkpoints


def latest_checkpoint(out: Path) -> Path | None:
    """The checkpoint checkpoints/latest names, or None without the pointer. The pointer must be
    a plain folder name inside checkpoints/: a path (`../x`, `/x`) raises ValueError."""
    root = Path(out) / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    if not name or name in (".", "..") or "/" in name or os.sep in name \
            or (root / name).resolve().parent != root.resolve():
        raise ValueError(f"{pointer} names {name!r}, not a checkpoint folder inside {root}; "
                         "refusing to follow it")
    return root / name


def checkpoint_candidates(out: Path) -> list[Path]:
    """Where a resume may start, best first: the checkpoint `latest` names, then the older
    step_* folders, newest first. Empty without a `latest` pointer."""
    latest = latest_checkpoint(out)
    if latest is None:
        return []
    older = sorted((p for p in latest.parent.glob("step_*") if p.name < latest.name),
                   reverse=True)
    return [latest, *older]


def lock_run(out: Path, runtime: Runtime) -> RunLock | None:
    """Rank 0 locks the run folder (None on the other ranks); every rank raises if it could not,
    so no rank waits on a collective that rank 0 will never join."""
    lock, error = None, None
    if runtime.is_main:
        try:
            lock = RunLock(out)
        except RunInUseError as refused:
            error = refused
    failed = all_sum(torch.tensor(float(error is not None), device=runtime.device), runtime)
    if error is not None:
        raise error
    if float(failed):
        raise RunInUseError(f"{out} is in use by another trainer (rank 0 could not lock its "
                            "run.lock)")
    return lock


def no_intact_checkpoint(out: Path) -> str:
    # Not a silent start from 0: the run's metrics and schedule say it had got further.
    return (f"no intact checkpoint in {out / 'checkpoints'} (every one is damaged, see the "
            "warnings); remove that folder to start the run again from step 0")


def resume_candidates(out: Path, resume: bool | str, is_main: bool) -> list[Path]:
    """The intact checkpoints of a run folder, newest first, for `resume` True, False or 'auto'
    (resume if there is a run): [] for a fresh start. Raises for a run that exists without
    resume, for resume=True without a run, and when every checkpoint is damaged; each damaged
    one is named in a warning (by rank 0). Rank 0, which holds the run's lock, first removes what
    killed writes left (`remove_temporaries`)."""
    candidates = checkpoint_candidates(out)
    if not candidates:
        if resume is True:
            raise FileNotFoundError(f"{out} holds no run to resume (no checkpoints/latest); "
                                    "start it without resume (--resume)")
        if resume == "auto":
            log.info("no checkpoint in %s: starting from step 0", out)
        if is_main:
            remove_temporaries(out)
        return []
    if not resume:
        raise ValueError(f"{out} already holds a run (checkpoint {candidates[0].name}); pass "
                         "resume (--resume) to continue it, or choose another out folder")
    intact = []
    for candidate in candidates:
        problem = checkpoint_problem(candidate)
        if problem is None:
            intact.append(candidate)
        elif is_main:
            log.warning("checkpoint %s is damaged: %s; falling back to an older one",
                        candidate.name, problem)
    if not intact:
        raise ValueError(no_intact_checkpoint(out))
    if is_main:
        remove_temporaries(out)
    return intact


def remove_temporaries(out: Path) -> list[Path]:
    """Remove, and return, the temporary files and folders that writes killed midway left in a
    run folder and its checkpoints/ (`.latest.<pid>.<hex>.tmp` of the pointer, `.step_NNNNNN.tmp`
    of a save, `.metrics.jsonl.<pid>.<hex>.tmp`, ...: `.*.tmp`). Only for the one trainer that
    holds the run's lock: no other process may be writing them."""
    stale = sorted([*out.glob(".*.tmp"), *(out / "checkpoints").glob(".*.tmp")])
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        log.info("removed %s, left by a write that was killed", path)
    return stale


def check_resumable(out: Path, config: Any) -> None:
    """Raise ValueError, before any work, when `config` (a TrainConfig) differs from the run saved
    in `out` in a field a resume cannot change (`config.incompatible_fields`), naming each field
    with its saved and its new value."""
    saved = saved_config(out)
    differing = incompatible_fields(saved, config)
    if differing:
        details = ", ".join(f"{n}: {saved.get(n)!r} -> {getattr(config, n, None)!r}"
                            for n in differing)
        raise ValueError(f"cannot resume {out}: config differs in {details}")


class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata dataclasses, torch.Size and dtypes; any other global is refused, so
    a crafted .metadata cannot run code."""

    MODULES = frozenset({"torch.distributed.checkpoint.metadata"})
    GLOBALS = frozenset({
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
        ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"), ("collections", "OrderedDict"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if module in self.MODULES or (module, name) in self.GLOBALS or (
                module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name} in checkpoint metadata")


def read_metadata(folder: Path) -> Metadata:
    with open(folder / ".metadata", "rb") as handle:
        metadata = _MetadataUnpickler(handle).load()
    if not isinstance(metadata, Metadata):
        raise pickle.UnpicklingError(f"not DCP metadata: {type(metadata).__name__}")
    return metadata


class _SafeReader(FileSystemReader):
    """FileSystemReader whose metadata goes through `_MetadataUnpickler` and that refuses
    non-tensor (pickled) entries."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        metadata = read_metadata(Path(self.path))
        pickled = [k for k, v in metadata.state_dict_metadata.items()
                   if isinstance(v, BytesStorageMetadata)]
        if pickled:
            raise ValueError(f"{self.path} holds pickled entries {pickled[:3]}: refusing them")
        metadata.storage_meta = metadata.storage_meta or StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` is not an intact checkpoint (naming the bad file), or None. Reads the small
    files and checks every shard file holds the bytes the metadata says; the tensors are checked
    when they are loaded."""
    state_file = folder / TRAINER_STATE
    try:
        state = json.loads(state_file.read_text())
        if not isinstance(state, dict) or not all(k in state for k in TRAINER_STATE_KEYS):
            return f"{state_file} lacks {', '.join(TRAINER_STATE_KEYS)}"
    except (OSError, ValueError) as error:
        return f"{state_file} is unreadable ({type(error).__name__}: {error})"
    try:
        metadata = read_metadata(folder)
    except Exception as error:  # any unpickling failure means a damaged file
        return f"{folder / '.metadata'} is unreadable ({type(error).__name__}: {error})"
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        end = info.offset + info.length
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), end)
    for name, size in sorted(needed.items()):
        path = folder / name
        have = path.stat().st_size if path.is_file() else None
        if have is None:
            return f"{path} is missing"
        if have < size:
            return f"{path} is truncated ({have} < {size} bytes)"
    return None


@contextmanager
def _quiet_single_process() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def save_checkpoint(out: Path, tensors: dict[str, Any], state: Mapping[str, Any], keep: int,
                    runtime: Runtime) -> Path:
    """Write checkpoints/step_NNNNNN: `tensors` (a nested dict of tensors or DTensors; each rank
    writes its own shards, nothing is gathered) with `dcp.save`, and `state` (JSON: step, tokens,
    corpus cursor) as trainer_state.json; a collective under torchrun. Written into a temporary
    folder, renamed into place, then `latest` re-pointed (itself atomic): a crash at any moment
    leaves the previous `latest` complete. Keeps the newest `keep` checkpoints."""
    root = Path(out) / "checkpoints"
    name = f"step_{state['step']:06d}"
    temporary = root / f".{name}.tmp"  # one name for every rank; only one trainer holds `out`
    if runtime.is_main:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    runtime.barrier()
    try:
        with _quiet_single_process():
            dcp.save(tensors, storage_writer=FileSystemWriter(temporary),
                     no_dist=not runtime.distributed)
        # dcp.save returns on rank 0 once every rank wrote its shards and rank 0 the .metadata.
        if runtime.is_main:
            atomic_write_text(temporary / TRAINER_STATE, json.dumps(dict(state)) + "\n")
            shutil.rmtree(root / name, ignore_errors=True)
            os.replace(temporary, root / name)
            atomic_write_text(root / "latest", name)
            for old in sorted(root.glob("step_*"))[:-keep]:
                shutil.rmtree(old)
    finally:
        if runtime.is_main:
            shutil.rmtree(temporary, ignore_errors=True)
    runtime.barrier()
    return root / name


def load_checkpoint(folder: Path, tensors: dict[str, Any] | None = None,
                    runtime: Runtime | None = None) -> dict[str, Any]:
    """The trainer state of checkpoint `folder`; with `tensors`, first load the checkpoint into
    them in place (resharded to this world size; a collective under torchrun)."""
    state = json.loads((folder / TRAINER_STATE).read_text())
    if tensors is not None:
        distributed = runtime is not None and runtime.distributed
        with _quiet_single_process():
            dcp.load(tensors, storage_reader=_SafeReader(folder), no_dist=not distributed)
    return state


def trainer_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the tensors a checkpoint holds, the optimizer's state dict): the sharded model and
    optimizer state (DTensors under FSDP: nothing is gathered), as DCP saves and loads it: the
    optimizer's tensors only (its param_groups come from the config), so no entry of a
    checkpoint is pickled."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": {"state": optimizer_state["state"]}}, \
        optimizer_state


def restore_checkpoint(out: Path, candidates: list[Path], model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, runtime: Runtime) -> dict[str, Any]:
    """Load the first of `candidates` (best first, `resume_candidates`) whose shards load into
    `model` and `optimizer`, in place, and return its trainer state. One whose shards fail to load
    is named in a warning (by rank 0) and the next is tried; none loading is a ValueError."""
    for checkpoint in candidates:
        tensors, optimizer_state = trainer_tensors(model, optimizer)
        try:
            # DCP gathers every rank's error and raises on all: the ranks fall back together.
            state = load_checkpoint(checkpoint, tensors, runtime)
        except (Exception, CheckpointException) as error:  # the latter a BaseException
            if runtime.is_main:
                shards = ", ".join(sorted(p.name for p in checkpoint.glob("*.distcp")))
                log.warning("checkpoint %s is damaged: a shard (%s) failed to load (%s: %s); "
                            "falling back to an older one", checkpoint, shards,
                            type(error).__name__, str(error)[:300])
            continue
        optimizer_state["state"] = tensors["optimizer"]["state"]
        set_state_dict(model, optimizer, model_state_dict=tensors["model"],
                       optim_state_dict=optimizer_state)
        return state
    raise ValueError(no_intact_checkpoint(out))


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


# ---------------------------------------------------------------------------------- metrics


class MetricsLog:
    """metrics.jsonl: one JSON object per line, appended by rank 0. A line a crash left half
    written is skipped with a warning when read, and dropped by `truncate_after`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _records(self) -> list[tuple[str, dict[str, Any]]]:
        records = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    raise ValueError("no integer step")
            except ValueError:
                log.warning("%s line %d is damaged (a crash mid-write?): skipped: %.60r",
                            self.path, number, line)
                continue
            records.append((line, record))
        return records

    def truncate_after(self, step: int) -> None:
        """Keep the lines up to `step` (those a resumed run, or a new one at 0, will not write
        again); damaged lines go too."""
        if self.path.is_file():
            kept = [line for line, record in self._records() if record["step"] <= step]
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def append(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return [record for _, record in self._records()]


def read_metrics(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The metrics of a run folder, one dict per step."""
    return MetricsLog(Path(out) / "metrics.jsonl").read()
