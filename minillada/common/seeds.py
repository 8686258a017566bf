"""The one way the package derives a seed for one purpose from the run's seed."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np


def derived_seed(seed: int, *parts: Any) -> int:
    """A stable 63-bit seed for one purpose (e.g. `derived_seed(seed, "mask", step)` or
    `derived_seed(seed, "ppl", length, window)`); independent of PYTHONHASHSEED and of the order
    in which purposes are drawn, so a resumed or partial computation redraws exactly the same."""
    words = [zlib.crc32(str(part).encode()) for part in (seed, *parts)]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))
