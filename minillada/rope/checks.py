"""Checks of RoPE arguments (plain numbers, no tensors), and the known models' RoPE setups.

`rope.laws` and `rope.formulas` run these checks; the `minillada rope`
calculator runs them on its flags before it computes anything. Every check raises ValueError
naming the argument, the value it got and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "llada-8b": {"head_dim": 128, "base": 500000.0, "train_len": 4096},
}


def _is_integer(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_head_dim(head_dim: object) -> None:
    if not _is_integer(head_dim) or head_dim <= 0 or head_dim % 2:
        raise ValueError(
            f"head_dim (the rotary dim) must be a positive even integer, got {head_dim!r}"
        )


def check_base(base: object) -> None:
    if not _is_finite_number(base) or not base > 1:
        raise ValueError(f"RoPE base must be a finite number > 1, got {base!r}")


def check_lengths(train_len: object, target_len: object) -> None:
    if not _is_integer(train_len) or train_len < 1:
        raise ValueError(f"train_len must be an integer >= 1, got {train_len!r}")
    if target_len is not None and (not _is_integer(target_len) or target_len < 1):
        raise ValueError(f"target_len must be an integer >= 1 or None, got {target_len!r}")


def check_critical_dim(d_crit: object, head_dim: int) -> None:
    if not _is_integer(d_crit) or not 0 < d_crit <= head_dim:
        raise ValueError(
            f"critical_dim must be an integer in [1, head_dim = {head_dim}], got {d_crit!r}"
        )


def check_rope_values(
    head_dim: object, base: object, train_len: object, target_len: object
) -> None:
    """The arguments every variant takes: head_dim, base, train_len, target_len."""
    check_head_dim(head_dim)
    check_base(base)
    check_lengths(train_len, target_len)


def check_param_values(params: Mapping[str, Any], head_dim: int) -> None:
    """The values of the shared parameters `factor`, `span` and `critical_dim`, where given."""
    factor = params.get("factor")
    if factor is not None and (not _is_finite_number(factor) or factor < 1):
        raise ValueError(f"factor must be a finite number >= 1, got {factor!r}")
    span = params.get("span")
    if span is not None and (not _is_finite_number(span) or span <= 0):
        raise ValueError(f"span must be a finite number > 0, got {span!r}")
    if params.get("critical_dim") is not None:
        check_critical_dim(params["critical_dim"], head_dim)
