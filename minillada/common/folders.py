"""Where the package writes: output folders checked before any work (a command refuses an --out
it cannot write into at once, by name, instead of failing with a traceback after minutes, with
half its folders made), and the cache folder (`cache_dir`: tokenizers, token caches, the
precision probe)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_writable(folder: str | os.PathLike, flag: str) -> None:
    """ValueError naming `flag` and `folder` unless this process can create files in `folder`,
    or create it: its nearest existing ancestor is a folder in which a probe folder can be made
    (and is removed at once; permissions alone do not tell, e.g. for root in /proc). Nothing is
    left behind."""
    path = Path(folder).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{flag} {str(folder)!r} cannot be a folder: {str(existing)!r} is a "
                         "file; choose a folder you can write to")
    try:
        Path(tempfile.mkdtemp(prefix=".minillada-probe-", dir=existing)).rmdir()
    except OSError as error:
        raise ValueError(f"{flag} {str(folder)!r} is not writable: cannot create anything in "
                         f"{str(existing)!r} ({error.strerror}); choose a folder you can write "
                         "to") from None


def cache_dir() -> Path:
    """`$MINILLADA_CACHE`, default `~/.cache/minillada`."""
    return Path(os.environ.get("MINILLADA_CACHE", Path.home() / ".cache" / "minillada"))
