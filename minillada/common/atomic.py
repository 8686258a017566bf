"""Atomic writes: a reader sees the old file (or folder) or the complete new one, never half of it.

Everything the package writes that another process may read (tables, figures, logs, caches,
checkpoints, exported models) goes through these three helpers: write into a temporary sibling
(named after this process), then `os.replace` it into place.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write `payload` to `path` through a temporary file, fsync, then `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name opened exclusively ("x"): unlike mkstemp, the file gets the umask's mode.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """`atomic_write_bytes` of `text` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_folder(folder: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder to fill; on success it becomes `folder`.

    With `replace` an existing `folder` is removed first (the newest write wins); without it an
    existing non-empty `folder` is kept (another process finished first: its copy stands). On an
    error the temporary folder is removed and `folder` is untouched.
    """
    folder = Path(folder)
    temporary = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    try:
        yield temporary
        if replace:
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(temporary, folder)
        except OSError:
            if replace or not folder.is_dir():
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
