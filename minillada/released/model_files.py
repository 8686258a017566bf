"""A model on disk, found and checked without torch: the folder holding its config.json (a run
folder's `model/`, or the folder itself), that config.json (JSON naming the file when broken, a
LLaDA `model_type`), and its safetensors weight files.

`minillada train --init` and `minillada eval --checkpoint` refuse a missing, truncated or garbage
weight file here, by name, before torch loads: a safetensors header (its length, its JSON, the
byte ranges of every tensor within the file) is read without reading any tensor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The architectures the package implements: LLaDA's (its released config.json and minillada's
# own exports say "llada"). LLaDA-MoE and LLaDA 2 are other architectures.
LLADA_MODEL_TYPES = ("llada",)


def model_folder(path: str | os.PathLike) -> Path:
    """The exported model inside a run folder, or `path` itself if it holds a config.json."""
    path = Path(path)
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no model at {str(path)!r} (no config.json in it or in model/)")


def check_model_type(fields: Mapping[str, Any], source: str = "config") -> None:
    """ValueError naming `source`, its model_type and the accepted ones unless the config is a
    LLaDA's: a config with LLaDA's field names but another architecture would load and train."""
    model_type = fields.get("model_type")
    if model_type not in LLADA_MODEL_TYPES:
        found = "has no model_type" if model_type is None else f"has model_type {model_type!r}"
        raise ValueError(f"{source} {found}; minillada implements LLaDA's architecture only: "
                         f"model_type {' or '.join(map(repr, LLADA_MODEL_TYPES))} (LLaDA-8B's "
                         "config.json, minillada's exports)")


def read_model_config(folder: str | os.PathLike) -> dict[str, Any]:
    """`folder`/config.json as a dict, a LLaDA model's (`check_model_type`); ValueError naming
    the file when it is no JSON object (FileNotFoundError when absent)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {str(folder)!r}")
    try:
        fields = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = (f"{error.msg} at line {error.lineno} column {error.colno}"
                 if isinstance(error, json.JSONDecodeError) else "not UTF-8")
        raise ValueError(f"{path} is not valid JSON ({where}); restore the model's "
                         "config.json") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path} holds a JSON {type(fields).__name__}, not an object of model "
                         "fields")
    check_model_type(fields, str(path))
    return fields


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a model folder: the shards of model.safetensors.index.json, or
    model.safetensors; FileNotFoundError naming what is absent, ValueError naming a file whose
    header is unreadable or that is shorter than its header says (`check_safetensors`)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_bytes())["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ValueError(f"{index} is no weight index (JSON with a \"weight_map\" object of "
                             "tensor name -> shard file); restore it") from None
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
