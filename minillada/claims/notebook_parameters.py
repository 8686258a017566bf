"""Notebook parameters: a mistyped or unknown name stops the run at once, listing the known ones.

papermill only warns about a parameter the notebook does not declare and runs on with the
defaults (`-p presett smoke` would run the cpu preset for an hour). Two guards:

- every study notebook's second cell calls `check_parameters(globals(), [...declared names...])`,
  which raises when papermill injected a name the parameters cell does not declare (a test keeps
  that list equal to the parameters cell);
- `minillada reproduce -p NAME=VALUE` checks NAME against the notebooks' declared parameters
  (`papermill.inspect_notebook`) before anything runs.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any

# Names IPython itself puts into a notebook's namespace.
KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


def unknown_parameters(namespace: Mapping[str, Any], declared: Iterable[str]) -> list[str]:
    """Public names in `namespace` that are neither declared parameters nor the kernel's own,
    leaving out modules, functions and classes (imported, never injected: papermill injects
    plain values)."""
    known = set(declared) | KERNEL_NAMES
    return sorted(name for name, value in namespace.items()
                  if not name.startswith("_") and name not in known and not callable(value)
                  and not isinstance(value, types.ModuleType))


def check_parameters(namespace: Mapping[str, Any], declared: Iterable[str]) -> None:
    """Raise ValueError naming the injected names that `declared` does not contain."""
    declared = list(declared)
    unknown = unknown_parameters(namespace, declared)
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; this notebook takes "
                         f"{', '.join(declared)}")


def parse_assignment(text: str) -> tuple[str, Any]:
    """'NAME=VALUE' -> (NAME, VALUE read as YAML, as papermill's -y reads it)."""
    import yaml

    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise ValueError(f"-p expects NAME=VALUE with a Python name, got {text!r}")
    try:
        return name.strip(), yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ValueError(f"-p {name}: value {value!r} is not valid YAML ({error})") from None
