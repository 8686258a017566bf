"""environment.yml (conda) and pyproject.toml (pip) must declare the same packages and bounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml  # a declared dependency of papermill, itself a dependency of the project
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI distribution they provide.
CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-cpu": "torch"}
# Tooling of the environment itself, not dependencies of the project.
CONDA_ONLY = {"python", "pip"}
CONDA_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<spec>.*)$")


def pyproject_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    requirements = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r.specifier for r in requirements}


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_requirements(env: dict) -> dict[str, str]:
    """Conda entries as {pypi name: version spec}, without python, pip and the pip section."""
    found = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            continue
        match = CONDA_SPEC.match(entry)
        name = canonicalize_name(match["name"])
        if name not in CONDA_ONLY:
            found[CONDA_TO_PYPI.get(name, name)] = match["spec"].strip()
    return found


def test_same_packages_and_bounds():
    assert conda_requirements(environment()) == {
        name: str(spec) for name, spec in pyproject_requirements().items()
    }


def test_channel_python_and_editable_install():
    env = environment()
    assert env["channels"] == ["conda-forge"]
    conda_entries = [e for e in env["dependencies"] if isinstance(e, str)]
    assert "python=3.11" in conda_entries
    requires_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "requires-python"
    ]
    assert Version("3.11") in SpecifierSet(requires_python)
    (pip_section,) = [e["pip"] for e in env["dependencies"] if isinstance(e, dict)]
    assert pip_section == ["-e .[dev]"]


def test_conda_names_are_mapped_back_to_pypi():
    env = {"dependencies": ["python=3.11", "pip", "pytorch-cpu>=2.5", "Ruff>=0.6", {"pip": []}]}
    assert conda_requirements(env) == {"torch": ">=2.5", "ruff": ">=0.6"}
