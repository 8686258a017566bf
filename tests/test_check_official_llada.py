"""benchmarks/check_official_llada.py refuses unusable inputs with a message saying what to do.
The check itself needs LLaDA's modeling files and a transformers-4 venv, which the tests lack;
docs/gpu.md gives its measured run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import check_official_llada as check


def fake_python(folder: Path, body: str) -> str:
    """An executable standing in for an interpreter: runs the shell `body`, whatever its args."""
    path = folder / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_a_modeling_dir_without_the_official_files_is_named(tmp_path, capsys):
    (tmp_path / "modeling_llada.py").write_text("# downloaded\n")
    code = check.main(["--modeling-dir", str(tmp_path), "--official-python", sys.executable])
    assert code == 2
    assert "lacks configuration_llada.py: download" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # both are required
        check.main(["--modeling-dir", str(tmp_path)])


@pytest.mark.parametrize(("body", "message"), [
    ("echo \"ModuleNotFoundError: No module named 'transformers'\" >&2; exit 1",
     "cannot import torch and transformers (ModuleNotFoundError: No module named 'transformers')"),
    ("echo '{\"torch\": \"2.13.0\", \"transformers\": \"5.0.0\"}'",
     "has transformers 5.0.0; LLaDA's modeling code needs transformers 4"),
])
def test_an_official_python_without_transformers_4_is_refused(tmp_path, body, message):
    with pytest.raises(check.CheckError, match=re.escape(message)):
        check.official_versions(fake_python(tmp_path, body))
    with pytest.raises(check.CheckError, match="cannot run"):
        check.official_versions(str(tmp_path / "missing"))


def test_transformers_4_is_accepted(tmp_path):
    python = fake_python(tmp_path, "echo '{\"torch\": \"2.13.0\", \"transformers\": \"4.38.2\"}'")
    assert check.official_versions(python) == {"torch": "2.13.0", "transformers": "4.38.2"}
