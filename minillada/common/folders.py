"""Where the package writes: output folders checked before any work (a command refuses an --out
it cannot write into at once, by name, instead of failing with a traceback after minutes, with
half its folders made) and made so that a failed command leaves no empty one behind
(`output_folder`), and the cache folder (`cache_dir`: tokenizers, token caches, the precision
probe)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def output_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """`folder` made (with its parents) for a command's outputs. When the command fails, the
    folders it made that are still empty are removed: a refused command leaves no folder behind,
    and what a failed one wrote (a resumable table) stays."""
    folder = Path(folder)
    made = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for path in made:
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        raise


def cache_dir() -> Path:
    """`$MINILLADA_CACHE`, default `~/.cache/minillada`."""
    return Path(os.environ.get("MINILLADA_CACHE", Path.home() / ".cache" / "minillada"))
