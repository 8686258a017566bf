"""Result tables that survive interruption, all written atomically (`minillada.atomic`).

- `ResultLog`: rows of a tidy table in a JSON-lines file, rewritten whole at each `extend`, so an
  interrupted grid resumes where it stopped (the retrieval grids use it).
- `cached_table`: a CSV beside a JSON file holding the inputs it was computed from; recomputed
  exactly when those inputs change. `cached_grid` is the same for a resumable grid.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from minillada.atomic import atomic_write_text


def digest(value: Any, length: int = 10) -> str:
    """A short stable hash of a JSON-serialisable value (keys sorted)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class ResultLog:
    """Rows of a tidy table kept in a JSON-lines file; `key` columns identify a finished cell.

    Each `extend` rewrites the whole file atomically, so a crash leaves either the old or the new
    table, and a restart skips the cells already present.
    """

    def __init__(self, path: str | Path, key: Sequence[str]):
        self.path, self.key = Path(path), tuple(key)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with self.path.open() as handle:
                self.rows = [json.loads(line) for line in handle if line.strip()]
        missing = {k for row in self.rows for k in self.key if k not in row}
        if missing:
            raise ValueError(f"{self.path} lacks key columns {sorted(missing)}; "
                             f"it was written by another evaluation (expected key {self.key})")

    def cell(self, row: Mapping[str, Any]) -> tuple:
        return tuple(row[k] for k in self.key)

    def done(self) -> set[tuple]:
        return {self.cell(row) for row in self.rows}

    def extend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self.rows.extend(dict(row) for row in rows)
        atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in self.rows))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


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
    atomic_write_text(path, table.to_csv(index=False))
    atomic_write_text(stamp, json.dumps(wanted, indent=1, sort_keys=True))
    return pd.read_csv(path)  # the same dtypes whether computed now or read back later


def cached_grid(path: str | os.PathLike, inputs: Mapping[str, Any],
                run: Callable[[Path], pd.DataFrame]) -> pd.DataFrame:
    """`cached_table` for a resumable grid: `run(partial)` appends its rows to a JSON-lines file
    named by the digest of `inputs` (in `.partial/` beside `path`), so an interrupted grid
    continues where it stopped and a grid with other inputs never reads its rows."""
    path = Path(path)
    partial = path.parent / ".partial" / f"{path.stem}-{digest(dict(inputs))}.jsonl"
    return cached_table(path, inputs, lambda: run(partial))
