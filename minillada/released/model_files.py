"""A model on disk, found and checked without torch: the folder holding its config.json (a run
folder's `model/`, or the folder itself) and its safetensors weight files.

`minillada train --init` and `minillada eval --checkpoint` refuse a missing, truncated or garbage
weight file here, by name, before torch loads: a safetensors header (its length, its JSON, the
byte ranges of every tensor within the file) is read without reading any tensor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def model_folder(path: str | os.PathLike) -> Path:
    """The exported model inside a run folder, or `path` itself if it holds a config.json."""
    path = Path(path)
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no model at {str(path)!r} (no config.json in it or in model/)")


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a model folder: the shards of model.safetensors.index.json, or
    model.safetensors; FileNotFoundError naming what is absent, ValueError naming a file whose
    header is unreadable or that is shorter than its header says (`check_safetensors`)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        absent = [name for name in shards if not (path / name).is_file()]
        if absent:
            raise FileNotFoundError(f"{index} lists shard(s) missing from {path}: {absent}")
        files = [path / name for name in shards]
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path}")
    for file in files:
        check_safetensors(file)
    return files


def check_safetensors(file: Path) -> None:
    """ValueError naming `file` unless its header parses and covers the file exactly (a
    truncated or overwritten file fails here, not halfway through loading)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, framework="numpy"):  # reads the header only
            pass
    except SafetensorError as error:
        raise ValueError(f"{file} is not a readable safetensors file ({error}); it may be "
                         "truncated or overwritten: export or download it again") from None
