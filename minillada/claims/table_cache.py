"""Result tables cached by the inputs they were computed from, all written atomically.

- `cached_table`: a CSV beside a JSON file holding the inputs it was computed from; recomputed
  exactly when those inputs change (`digest` names such inputs in short). `cached_grid` is the
  same for a resumable grid (`evals.retrieval.ResultLog` keeps its rows while it runs).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from minillada.common.atomic import atomic_write_text


def digest(value: Any, length: int = 10) -> str:
    """A short stable hash of a JSON-serialisable value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".inputs.json")


def _holds(path: Path, wanted: Any) -> bool:
    stamp = _stamp(path)
    return path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted


def cached_table(path: str | os.PathLike, inputs: Mapping[str, Any],
                 compute: Callable[[], pd.DataFrame],
                 fallback: str | os.PathLike | None = None) -> pd.DataFrame:
    """`path` (a CSV) if it was computed from `inputs`, else a copy of `fallback` (another CSV)
    if that was computed from the same inputs, else `compute()` written there.

    The inputs are stored beside it as `<path>.inputs.json`; the CSV is written first, the inputs
    last, so an interrupted write never passes for a finished one. Where and on what the table
    was computed (`provenance`) goes to `<path>.provenance.json`, which the cache never compares.
    """
    path = Path(path)
    stamp = _stamp(path)
    wanted = json.loads(json.dumps(dict(inputs), sort_keys=True, default=str))
    if _holds(path, wanted):
        return pd.read_csv(path)
    stamp.unlink(missing_ok=True)
    source = Path(fallback) if fallback is not None else None
    if source is not None and source.resolve() != path.resolve() and _holds(source, wanted):
        text, origin = source.read_text(), source.with_name(source.name + ".provenance.json")
        origin = json.loads(origin.read_text()) if origin.is_file() else provenance()
    else:
        text, origin = compute().to_csv(index=False), provenance()
    atomic_write_text(path, text)
    atomic_write_text(path.with_name(path.name + ".provenance.json"),
                      json.dumps(origin, indent=1, sort_keys=True))
    atomic_write_text(stamp, json.dumps(wanted, indent=1, sort_keys=True))
    return pd.read_csv(path)  # the same dtypes whether computed now or read back later


def provenance() -> dict[str, str]:
    """What computed a result: the machine (`precision.describe_machine`: CPU, capability,
    threads, torch), Python, the package version and the date."""
    import platform
    from datetime import date

    from minillada import __version__
    from minillada.training.precision import describe_machine

    return {"machine": describe_machine(), "python": platform.python_version(),
            "minillada": __version__, "date": str(date.today())}


def cached_grid(path: str | os.PathLike, inputs: Mapping[str, Any],
                run: Callable[[Path], pd.DataFrame],
                fallback: str | os.PathLike | None = None) -> pd.DataFrame:
    """`cached_table` for a resumable grid: `run(partial)` appends its rows to a JSON-lines file
    named by the digest of `inputs` (in `.partial/` beside `path`), so an interrupted grid
    continues where it stopped and a grid with other inputs never reads its rows."""
    path = Path(path)
    partial = path.parent / ".partial" / f"{path.stem}-{digest(dict(inputs))}.jsonl"
    return cached_table(path, inputs, lambda: run(partial), fallback)
