"""The built wheel works outside the checkout: installed into a fresh environment, `minillada
reproduce --preset smoke` runs its shipped notebooks from another folder into ./minillada-study
(notebook 02: the shipped copy, its folders and a training run; tests/test_notebooks.py runs all
of them), and the teaching models travel inside it."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"


@pytest.mark.slow
def test_wheel_reproduces_the_smoke_study_from_another_folder(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(ROOT)], check=True,
                   capture_output=True)
    (wheel,) = wheels.glob("minillada-*.whl")
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # pip run for the new interpreter (--python) writes console scripts that start it. It runs
    # before the dependencies are visible there, so it cannot see (and uninstall) this
    # interpreter's own install of minillada.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True)
    # The dependencies come from this interpreter's site-packages, read as a plain path: its own
    # .pth files (among them an editable install of the checkout) are not processed there.
    target = subprocess.run([str(python), "-c", PURELIB], check=True, capture_output=True,
                            text=True).stdout.strip()
    Path(target, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(env_dir / "bin" / "minillada"), "reproduce", "--preset", "smoke",
                           "--no-estimate", "--notebooks", "02"], cwd=elsewhere,
                          capture_output=True, text=True, env=environment, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = elsewhere / "minillada-study"
    located = subprocess.run([str(python), "-c", "import minillada; print(minillada.__file__)"],
                             cwd=elsewhere, capture_output=True, text=True, env=environment)
    assert located.stdout.startswith(str(env_dir))  # the installed copy, not the checkout
    shipped = subprocess.run([str(python), "-c", "from minillada.released.examples import "
                              "example_folder as f; print(f('ultra'))"], cwd=elsewhere,
                             capture_output=True, text=True, env=environment)
    assert shipped.stdout.startswith(str(env_dir)), shipped.stderr  # the teaching models travel
    assert (Path(shipped.stdout.strip()) / "model.safetensors").is_file()
    figures = sorted(p.name[:2] for p in (study / "figures" / "smoke").glob("0*.png"))
    assert set(figures) == {"02"} and len(figures) >= 2
    assert any((study / "results" / "smoke").glob("b*/base_*.csv"))
    assert any((study / "runs" / "smoke").glob("*/model/config.json"))
    assert f"figures in {study / 'figures' / 'smoke'}" in done.stdout
