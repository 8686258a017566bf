"""environment.yml (conda) and pyproject.toml (pip) must declare the same packages and bounds, and
they must declare every package that minillada/ and the notebooks import."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
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


def imported_modules() -> dict[str, set[str]]:
    """Top-level modules imported by the package and the notebooks' code cells: {name: files}."""
    sources = {str(path.relative_to(ROOT)): path.read_text()
               for path in sorted((ROOT / "minillada").rglob("*.py"))}
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        # IPython magics and shell escapes are not Python
        sources[str(notebook.relative_to(ROOT))] = "\n".join(
            line for cell in code for line in cell.splitlines()
            if not line.lstrip().startswith(("%", "!")))
    found: dict[str, set[str]] = {}
    for name, source in sources.items():
        for node in ast.walk(ast.parse(source, filename=name)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                found.setdefault(module.split(".")[0], set()).add(name)
    return found


def test_every_imported_package_is_declared():
    declared = set(pyproject_requirements()) - {"pytest", "ruff", "selenium"}  # runtime only
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in imported_modules().items():
        if module in sys.stdlib_module_names or module == "minillada":
            continue
        distributions = {canonicalize_name(d) for d in providers.get(module, [])}
        assert distributions, f"{module} (imported in {sorted(files)}) is not installed"
        if not distributions & declared:
            missing[module] = (sorted(distributions), sorted(files))
    assert not missing, f"imported but not in pyproject.toml dependencies: {missing}"


def test_import_scan_sees_from_imports_and_notebooks():
    modules = imported_modules()
    assert {"torch", "numpy", "matplotlib", "PIL", "ipywidgets", "pandas"} <= set(modules)
    assert any(name.endswith(".ipynb") for name in modules["pandas"])
