"""Values checked against a dataclass field's annotation, where they enter (a command line's
`--set`, a preset, a saved config): the value if it fits, else a ValueError naming the field, the
value and the expected type in words (`describe_type`). A list for a tuple field becomes a
tuple, an int for a float field a float; bool is not an integer, and a float must be finite.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from typing import Any


def describe_type(annotation: Any) -> str:
    """An annotation in words: 'an integer', 'a list of strings', 'a number or null', ..."""
    origin, params = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return "anything"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null (None)" if p is type(None) else describe_type(p) for p in params)
    if origin is tuple:
        if len(params) == 2 and params[1] is Ellipsis:
            return f"a list of {describe_type(params[0]).split(' ', 1)[1]}s"
        return f"a list of {len(params)} " + " and ".join(
            describe_type(p).split(" ", 1)[1] for p in params).replace("number and number",
                                                                        "numbers")
    if origin is dict or annotation is dict:
        return "a dict (JSON object)"
    return {bool: "a bool (true or false)", int: "an integer", float: "a number",
            str: "a string"}.get(annotation, str(annotation))


def check_value(name: str, value: Any, annotation: Any) -> Any:
    """`value` if it fits `annotation` (a list for a tuple field becomes a tuple, a lone string
    for a tuple of strings becomes one item, an int for a float field becomes a float); else
    ValueError naming the field, the value and the expected type. bool is not an integer here,
    and a float must be finite."""
    origin, params = typing.get_origin(annotation), typing.get_args(annotation)

    def refuse() -> ValueError:
        return ValueError(f"{name} must be {describe_type(annotation)}, got {value!r} "
                          f"({type(value).__name__})")

    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in params:
            return None
        for option in (p for p in params if p is not type(None)):
            try:
                return check_value(name, value, option)
            except ValueError:
                pass
        raise refuse()
    if origin is tuple:
        if params and params[-1] is Ellipsis:
            if isinstance(value, str) and params[0] is str:
                value = (value,)  # one name: one item, not its letters
            if not isinstance(value, (list, tuple)):
                raise refuse()
            return tuple(check_value(f"{name}[{i}]", item, params[0])
                         for i, item in enumerate(value))
        if not isinstance(value, (list, tuple)) or len(value) != len(params):
            raise refuse()
        return tuple(check_value(f"{name}[{i}]", item, kind)
                     for i, (item, kind) in enumerate(zip(value, params, strict=True)))
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise refuse()
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise refuse()
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse()
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse()
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise refuse()
        return value
    raise TypeError(f"check_value: unsupported annotation {annotation!r} of {name}")


def check_values(values: Mapping[str, Any], hints: Mapping[str, Any], owner: str,
                 prefix: str = "") -> dict[str, Any]:
    """Every value of `values` checked against `hints` (field -> annotation); ValueError naming an
    unknown field with the known ones of `owner`."""
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ValueError(f"unknown {owner} field(s) {[prefix + n for n in unknown]}; "
                         f"known: {sorted(hints)}")
    return {n: check_value(prefix + n, v, hints[n]) for n, v in values.items()}
