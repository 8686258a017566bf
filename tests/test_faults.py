"""Faults: a kill -9 anywhere, damaged checkpoints, a pointer out of the run, two trainers on one
folder, a killed torchrun, a resume on another world size, a resume of nothing."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from minillada import cli
from minillada.training import trainer
from minillada.training.checkpoint import RunInUseError, RunLock, latest_checkpoint, read_metrics
from minillada.training.config import make_config
from minillada.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(steps=4, batch_size=4, micro_batch_size=2, warmup_steps=1, save_every=2,
            val_every=2, val_rows=4, val_task_rows=2, task_fraction=0.5, progress=False)
# Runs the CLI with Trainer.train_step patched: at step FAULT_STEP, SIGKILL itself (kill) or
# touch FAULT_READY and sleep (hang).
HELPER = """
import os, signal, sys, time
from minillada import cli
from minillada.training import trainer
real = trainer.Trainer.train_step
def train_step(self):
    if self.step == int(os.environ["FAULT_STEP"]):
        if os.environ["FAULT"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        open(os.environ["FAULT_READY"], "w").close()
        time.sleep(600)
    return real(self)
trainer.Trainer.train_step = train_step
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def cli_args(out: Path, settings: dict) -> list[str]:
    sets = [f"--set={k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in settings.items()]
    return ["train", "--preset", "smoke", "--stage", "pretrain", "--out", str(out), *sets]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def helper(tmp_path: Path) -> str:
    path = tmp_path / "fault_helper.py"
    path.write_text(HELPER)
    return str(path)


def prepared() -> None:
    """The smoke runs' token cache, prepared in this process: torchrun's ranks only read it."""
    assert cli.main(["prepare", "--preset", "smoke", "--quiet"]) == 0


def torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}"]


def steps(out: Path) -> list[int]:
    return [r["step"] for r in read_metrics(out)]


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(out)]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # a zombie no one reaped has stopped running


# ------------------------------------------------------------------------------ 1. metrics


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(tmp_path, caplog):
    out, settings = tmp_path / "run", {**FAST, "steps": 6, "save_every": 10}
    done = subprocess.run([sys.executable, helper(tmp_path), *cli_args(out, settings)],
                          env=env(FAULT="kill", FAULT_STEP="3"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert steps(out) == [1, 2, 3] and latest_checkpoint(out) is None
    with (out / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 4, "lo')  # a crash mid-write
    with caplog.at_level(logging.WARNING, logger="minillada.training.checkpoint"):
        assert steps(out) == [1, 2, 3]
    assert "line 4 is damaged" in caplog.text

    # The kill released the lock; the restart (auto: start or resume) logs steps 1..6 once.
    train(make_config("smoke", "pretrain", out, **settings), resume="auto")
    assert steps(out) == [1, 2, 3, 4, 5, 6]
    assert '"lo\n' not in (out / "metrics.jsonl").read_text()


# ------------------------------------------------------------------------------ 2. damage


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    config = make_config("smoke", "pretrain", tmp_path, **FAST)
    train(config)
    straight = losses(tmp_path)
    newest = tmp_path / "checkpoints" / "step_000004"
    shard = newest / "__0_0.distcp"
    damages = {  # file -> how it is damaged
        shard: lambda p: p.write_bytes(os.urandom(p.stat().st_size)),  # garbage, same size
        newest / ".metadata": lambda p: p.write_bytes(p.read_bytes()[:40]),  # truncated
        newest / "trainer_state.json": lambda p: p.write_bytes(b""),  # empty
    }
    for path, damage in damages.items():
        damage(path)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            train(config, resume=True)  # from step_000002: steps 3 and 4 again
        assert str(path.name) in caplog.text and "falling back" in caplog.text, path
        assert steps(tmp_path) == [1, 2, 3, 4]
        assert losses(tmp_path) == straight  # exactly
        assert latest_checkpoint(tmp_path) == newest  # saved again, intact
    # Nothing intact: an error naming the folder, not a silent start from 0.
    for folder in (newest, tmp_path / "checkpoints" / "step_000002"):
        (folder / "trainer_state.json").write_text("{")
    with pytest.raises(ValueError, match=f"no intact checkpoint in {tmp_path / 'checkpoints'}"):
        train(config, resume=True)


# ------------------------------------------------------------------------------ 3. pointer


@pytest.mark.parametrize("pointer", ["../../elsewhere", "/tmp/elsewhere", ".."])
def test_latest_may_only_name_a_checkpoint_inside_the_run(tmp_path, pointer):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text(pointer)
    with pytest.raises(ValueError, match=f"names '{pointer}', not a checkpoint folder inside"):
        latest_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="refusing to follow it"):
        train(make_config("smoke", "pretrain", tmp_path, **FAST), resume=True)


# ------------------------------------------------------------------------------ 4. one writer


def test_one_trainer_per_run_and_a_killed_torchrun_takes_its_worker(tmp_path):
    out, ready = tmp_path / "run", tmp_path / "ready"
    prepared()
    parent = subprocess.Popen(
        [*torchrun(1), helper(tmp_path), *cli_args(out, FAST)],
        env=env(FAULT="hang", FAULT_STEP="1", FAULT_READY=str(ready)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists():
            assert parent.poll() is None and time.monotonic() < deadline, "worker never ran"
            time.sleep(0.2)
        worker = int((out / "run.lock").read_text())
        assert worker != parent.pid and not gone(worker)
        # A second trainer, a resume and a second lock are refused while the first one runs.
        config = make_config("smoke", "pretrain", out, **FAST)
        for resume in (False, True, "auto"):
            with pytest.raises(RunInUseError, match=f"{out} is in use.*pid {worker}"):
                train(config, resume=resume)
        with pytest.raises(RunInUseError):
            RunLock(out)
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphaned = not gone(worker)
    if orphaned:
        os.kill(worker, signal.SIGKILL)  # do not leave it training
    assert not orphaned, "the worker outlived its SIGKILL-ed torchrun"
    # The OS releases the dead worker's lock once its last thread is gone, which can trail the
    # process's disappearance from the process table by a moment on a loaded machine.
    deadline = time.monotonic() + 10
    while True:
        try:
            RunLock(out).close()
            break
        except RunInUseError:
            assert time.monotonic() < deadline, "the dead worker's lock was never released"
            time.sleep(0.1)


# ------------------------------------------------------------------------------ 5. world sizes


@pytest.mark.slow
def test_a_checkpoint_resumes_across_world_sizes(tmp_path, monkeypatch):
    """Saved by 2 gloo processes, resumed by 1, and the other way round: both match an
    uninterrupted run within 1e-5 (as 2 processes match 1, tests/test_fsdp.py)."""
    settings = {**FAST, "packing": "adaptive"}
    train(make_config("smoke", "pretrain", tmp_path / "straight", **settings))
    straight = read_metrics(tmp_path / "straight")

    two_then_one = tmp_path / "two_then_one"
    done = subprocess.run([*torchrun(2), helper(tmp_path), *cli_args(two_then_one, settings)],
                          env=env(FAULT="kill", FAULT_STEP="2"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and latest_checkpoint(two_then_one).name == "step_000002"
    assert {p.name for p in latest_checkpoint(two_then_one).glob("*.distcp")} == {
        "__0_0.distcp", "__1_0.distcp"}  # sharded: each rank wrote its own part
    train(make_config("smoke", "pretrain", two_then_one, **settings), resume=True)

    one_then_two = tmp_path / "one_then_two"
    real_step = trainer.Trainer.train_step

    def crash_in_step_three(self):
        if self.step == 2:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(trainer.Trainer, "train_step", crash_in_step_three)
    with pytest.raises(KeyboardInterrupt):
        train(make_config("smoke", "pretrain", one_then_two, **settings))
    monkeypatch.setattr(trainer.Trainer, "train_step", real_step)
    done = subprocess.run([*torchrun(2), "-m", "minillada", *cli_args(one_then_two, settings),
                           "--resume"], env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    for out in (two_then_one, one_then_two):
        resumed = read_metrics(out)
        assert [r["step"] for r in resumed] == [1, 2, 3, 4], out.name
        for name in ("loss", "grad_norm", "val_loss"):
            values = [r.get(name) for r in resumed]
            assert all(v is None or torch.isfinite(torch.tensor(v)) for v in values)
            # Across world sizes: float32 rounding of reordered reductions (tests/test_fsdp.py).
            want = [r.get(name) for r in straight]
            assert [v is None for v in values] == [v is None for v in want], name
            assert [v for v in values if v is not None] == pytest.approx(
                [v for v in want if v is not None], rel=1e-4), name
        assert resumed[-1]["tokens"] == straight[-1]["tokens"]


# ------------------------------------------------------------------------------ 6. --resume


def test_cli_resume_of_a_folder_without_a_run_is_an_error(tmp_path, capsys):
    out = tmp_path / "nothing"
    assert cli.main([*cli_args(out, FAST), "--resume"]) == 2
    assert f"{out} holds no run to resume" in capsys.readouterr().err
    assert not out.exists()  # nothing left behind, not even the run's lock file


# ------------------------------------------------------------------------------ 7. leftovers


def test_a_resume_removes_what_killed_writes_left(tmp_path):
    """A kill during the `latest` pointer's write (or a save, or the metrics' cut) leaves its
    temporary behind; the next trainer on the folder, holding its lock, removes them."""
    config = make_config("smoke", "pretrain", tmp_path, **{**FAST, "steps": 2})
    train(config)
    checkpoints = tmp_path / "checkpoints"
    stale = [checkpoints / ".latest.4242.0123abcd.tmp", checkpoints / ".step_000004.tmp",
             tmp_path / ".metrics.jsonl.4242.89abcdef.tmp"]
    stale[0].write_text("step_000")  # the pointer, half written
    stale[1].mkdir()
    (stale[1] / "__0_0.distcp").write_bytes(b"\0" * 10)
    stale[2].write_text('{"step": 1')
    kept = sorted(p.name for p in checkpoints.iterdir() if p not in stale)
    train(config, resume=True)
    assert not any(path.exists() for path in stale)
    assert sorted(p.name for p in checkpoints.iterdir()) == kept
    assert latest_checkpoint(tmp_path).name == "step_000002" and steps(tmp_path) == [1, 2]
