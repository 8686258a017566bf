"""Every command of README.md runs as written: the fenced bash blocks are read, each command line
is classified (run, or skipped for a stated reason; a line no rule knows fails the test, so a new
README command must be handled here) and run at the smoke preset, its output folders redirected
into a temporary folder. Commands that the README chains (pre-train, then extend, then evaluate)
share that folder, so the base model is trained once."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# (what a line starts with or contains, why it is not run here)
SKIPS = [
    (lambda t: t[0] == "make", "make sets up .venv and runs the whole study or test suite"),
    (lambda t: t[0].endswith("torchrun"), "FSDP2 over 2 processes (tests/test_fsdp.py covers it)"),
    (lambda t: "--preset" in t and t[t.index("--preset") + 1] == "gpu", "needs a GPU"),
    (lambda t: any(a.startswith("/path/to/") for a in t), "needs a real LLaDA checkpoint"),
    (lambda t: "--preset" in t and t[t.index("--preset") + 1] == "llada-8b"
     and "--dry-run" not in t, "needs a post-trained LLaDA-8B"),
    (lambda t: t[0] == "conda", "conda is not part of the test environment"),
]
RUNS = ("papermill", "minillada")  # .venv/bin/<name>


def commands(readme: str) -> list[list[str]]:
    """The command lines of the ```bash blocks, continuation lines joined, comments dropped."""
    lines: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                lines.append(tokens)
    return lines


def classify(tokens: list[str]) -> str:
    """'run', or the reason a line is skipped; raises for a line no rule knows."""
    for matches, reason in SKIPS:
        if matches(tokens):
            return reason
    if tokens[0].startswith(".venv/bin/") and tokens[0].removeprefix(".venv/bin/") in RUNS:
        return "run"
    raise AssertionError("README command not handled by tests/test_readme.py: "
                         f"{shlex.join(tokens)}")


def rewrite(tokens: list[str], tmp: Path) -> list[str]:
    """The line at the smoke preset, with every folder it writes under `tmp`."""
    out = [str(BIN / tokens[0].removeprefix(".venv/bin/"))]
    for previous, token in itertools.pairwise(tokens):
        if (previous, token) in (("--preset", "cpu"), ("preset", "cpu")):
            token = "smoke"
        elif token.startswith("runs/"):
            token = str(tmp / token)
        elif token.startswith("/tmp/"):
            token = str(tmp / token.removeprefix("/tmp/"))
        out.append(token)
    command = tokens[0].removeprefix(".venv/bin/")
    if command == "minillada" and out[1] in ("train", "eval") and "--preset" not in out:
        out += ["--preset", "smoke"]
    if command == "minillada" and out[1] == "reproduce" and "--out" not in out:
        out += ["--out", str(tmp / "study")]  # runs, figures, results and executed notebooks
    if command == "papermill" and "runs_dir" not in out:
        out += ["-p", "runs_dir", str(tmp / "study" / "runs")]  # shared with reproduce
    return out


def test_every_readme_line_is_classified():
    lines = commands((ROOT / "README.md").read_text())
    verdicts = [classify(tokens) for tokens in lines]
    assert verdicts.count("run") >= 8 and len(set(verdicts)) >= 4  # the rules still see lines
    with pytest.raises(AssertionError, match="not handled"):
        classify([".venv/bin/something-new"])
    assert rewrite([".venv/bin/minillada", "train", "--preset", "cpu", "--out", "runs/x"],
                   Path("/t")) == [str(BIN / "minillada"), "train", "--preset", "smoke", "--out",
                                   "/t/runs/x"]


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MINILLADA_CACHE": str(tmp_path / "cache")}
    ran = []
    for tokens in commands((ROOT / "README.md").read_text()):
        if classify(tokens) != "run":
            continue
        command = rewrite(tokens, tmp_path)
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout[-3000:]}\n" \
                                     f"{done.stderr[-3000:]}"
        ran.append((shlex.join(tokens[:3]), round(time.perf_counter() - start, 1)))
    print(ran)
    assert (tmp_path / "figures" / "smoke" / "03_loss_grid.png").is_file()  # -p figures_dir /tmp/..
    assert (tmp_path / "study" / "figures" / "smoke" / "02_pretrain_curves.png").is_file()
    assert (tmp_path / "runs" / "my-eval" / "passkey.csv").is_file()
