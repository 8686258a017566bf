"""TrainConfig.log = "tensorboard": the scalars of metrics.jsonl also go to <run>/tensorboard/."""

from __future__ import annotations

import importlib.util

import pytest

from minillada.training.checkpoint import read_metrics
from minillada.training.config import RUN_CONTROL_FIELDS, make_config
from minillada.training.tracking import TensorBoardTracker, open_tracker
from minillada.training.trainer import train

TINY = dict(steps=4, batch_size=2, warmup_steps=1, save_every=4, val_every=2, val_rows=2,
            progress=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_a_tensorboard_run_logs_the_losses_of_metrics_jsonl(tmp_path):
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        pytest.skip("SKIPPED LOUDLY: tensorboard is not installed (pip install tensorboard, or "
                    "the `tracking` extra); TensorBoard logging is untested here")
    assert "log" in RUN_CONTROL_FIELDS  # logging does not change the trajectory or its digest
    out = tmp_path / "run"
    train(make_config("smoke", "pretrain", out, log="tensorboard", **TINY))
    metrics = read_metrics(out)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "val_loss"} <= set(events.Tags()["scalars"])
    logged = [(e.step, e.value) for e in events.Scalars("loss")]
    assert logged == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in metrics]
    validated = [(e.step, e.value) for e in events.Scalars("val_loss")]
    assert validated == [(r["step"], pytest.approx(r["val_loss"], rel=1e-6))
                         for r in metrics if "val_loss" in r]


def test_without_tensorboard_a_run_is_refused_before_it_writes(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None
                        if name == "tensorboard" else real_find_spec(name, *args))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="pip install tensorboard"):
        train(make_config("smoke", "pretrain", out, log="tensorboard", **TINY))
    assert not out.exists()  # refused before the run folder, its config or its lock
    with pytest.raises(ValueError, match="pip install tensorboard"):
        TensorBoardTracker(tmp_path)
    open_tracker("jsonl", tmp_path).append({"step": 1, "loss": 1.0})  # the default needs nothing
    with pytest.raises(ValueError, match="unknown log 'wandb'"):
        make_config("smoke", "pretrain", tmp_path, log="wandb").validate()
