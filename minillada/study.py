"""The study's runs and tables, cached: each is computed once and reused while its inputs hold.

The notebooks call these so that `make reproduce` after an interruption continues where it
stopped and a re-run with unchanged inputs recomputes nothing:

- A training run lives in `runs/<preset>/<name>-<digest>`, the digest covering every field of its
  TrainConfig that changes the trajectory (and, for `extend`, the digest of the model it starts
  from). A finished run (its exported `model/`) is reused; an interrupted one resumes from its
  latest checkpoint; a changed config gets a new folder.
- A result table is a CSV beside a JSON file holding the inputs it was computed from (including
  the fingerprints of the models it read); it is recomputed when those inputs change, and both
  files are written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from minillada import data
from minillada.model import LLaDAModelLM
from minillada.train import (
    RUN_CONTROL_FIELDS,
    TrainConfig,
    make_config,
    model_folder,
    tokenized_split,
    train,
)


def digest(value: Any, length: int = 10) -> str:
    """A short stable hash of a JSON-serialisable value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def model_fingerprint(path: str | os.PathLike) -> str:
    """Hash of a model folder's config and weight files: identifies what a table was made from."""
    folder = model_folder(path)
    files = sorted([folder / "config.json", *folder.glob("*.safetensors")])
    sha = hashlib.sha256()
    for file in files:
        sha.update(file.name.encode())
        sha.update(file.read_bytes())
    return sha.hexdigest()[:16]


def trajectory_fields(config: TrainConfig) -> dict[str, Any]:
    """The config fields that change what a run computes (not where it writes or how often it
    logs), with `init` replaced by the fingerprint of the model it names."""
    fields = json.loads(json.dumps(dataclasses.asdict(config)))
    fields = {k: v for k, v in fields.items() if k not in RUN_CONTROL_FIELDS}
    if config.init is not None:
        fields["init"] = model_fingerprint(config.init)
    return fields


def run_folder(runs_dir: str | os.PathLike, name: str, config: TrainConfig) -> Path:
    """`runs_dir/<name>-<digest of the trajectory fields>`."""
    return Path(runs_dir) / f"{name}-{digest(trajectory_fields(config))}"


def ensure_trained(preset: str, stage: str, name: str, runs_dir: str | os.PathLike,
                   **overrides: Any) -> Path:
    """The exported model of the run `make_config(preset, stage, ..., **overrides)` describes:
    reused when finished, resumed when interrupted, trained otherwise. Returns its run folder."""
    probe = make_config(preset, stage, Path(runs_dir) / name, **overrides)
    out = run_folder(runs_dir, name, probe)
    if (out / "model" / "config.json").is_file():
        return out
    train(dataclasses.replace(probe, out=str(out)), resume=True)
    return out


def load_model(run: str | os.PathLike) -> LLaDAModelLM:
    """The exported model of a run (or a model folder), in eval mode."""
    model = LLaDAModelLM.from_pretrained(model_folder(run))
    return model.eval()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary)`, then move the temporary file onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def cached_table(path: str | os.PathLike, inputs: Mapping[str, Any],
                 compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """`path` (a CSV) if it was computed from `inputs`, else `compute()` written there.

    The inputs are stored beside it as `<path>.inputs.json`; the CSV is written first, the inputs
    last, so an interrupted write never passes for a finished one.
    """
    path = Path(path)
    stamp = path.with_name(path.name + ".inputs.json")
    wanted = json.loads(json.dumps(dict(inputs), sort_keys=True, default=str))
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return pd.read_csv(path)
    stamp.unlink(missing_ok=True)
    table = compute()
    atomic_write(path, lambda p: table.to_csv(p, index=False))
    atomic_write(stamp, lambda p: p.write_text(json.dumps(wanted, indent=1, sort_keys=True)))
    return pd.read_csv(path)  # the same dtypes whether computed now or read back later



def split_documents(tokenizer, split: str = "test", corpus: str = data.STDLIB,
                    split_seed: int = 0) -> list[list[int]]:
    """Token ids of one corpus split's non-empty documents (the test split is never trained on;
    tokenized once and cached, like the trainer's rows)."""
    return [doc.tolist() for doc in tokenized_split(tokenizer, corpus, split_seed, split)]


def cached_grid(path: str | os.PathLike, inputs: Mapping[str, Any],
                run: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
    """`cached_table` for a resumable grid: `run(partial)` appends its rows to a JSON-lines file
    named by the digest of `inputs` (in `.partial/` beside `path`), so an interrupted grid
    continues where it stopped and a grid with other inputs never reads its rows."""
    path = Path(path)
    partial = path.parent / ".partial" / f"{path.stem}-{digest(dict(inputs))}.jsonl"
    return cached_table(path, inputs, lambda: run(partial))
