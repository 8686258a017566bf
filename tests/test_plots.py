"""The study's result plots draw what their tables hold."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from minillada.figures import plots


def metrics(arm: str, seed: int, losses: list[float], val_every: int = 2) -> pd.DataFrame:
    """A run's metrics.jsonl rows: a loss every step, a val_loss every `val_every` steps."""
    steps = np.arange(1, len(losses) + 1)
    val = [loss + 1.0 if step % val_every == 0 else np.nan for step, loss in zip(steps, losses,
                                                                                 strict=True)]
    return pd.DataFrame({"step": steps, "loss": losses, "val_loss": val, "arm": arm,
                         "seed": seed})


def test_training_curves_average_the_runs_of_a_group_at_each_logged_step():
    frame = pd.concat([metrics("a", 1, [4.0, 3.0, 2.0, 1.0]), metrics("a", 2, [6.0, 5.0, 4.0, 3.0]),
                       metrics("b", 1, [2.0, 2.0, 2.0, 2.0])], ignore_index=True)
    fig, (train, held_out) = plots.panels(2)
    plots.training_curves(train, frame, "loss", "loss", "nats", hue="arm",
                          label="{} (runs: {runs})", smooth=2)
    plots.training_curves(held_out, frame, "val_exact", "absent", "%", hue="arm", chance=10.0)
    plots.training_curves(held_out, frame, "val_loss", "held-out", "nats", hue="arm", scale=2)
    (a, b) = train.get_lines()
    assert a.get_label() == "a (runs: 2)" and b.get_label() == "b (runs: 1)"
    # the mean over runs (5, 4, 3, 2), then a 2-step rolling mean
    assert a.get_ydata().tolist() == [5.0, 4.5, 3.5, 2.5] and a.get_marker() == "None"
    chance, val_a, val_b = held_out.get_lines()  # no line for a column never logged
    assert list(chance.get_ydata()) == [10.0, 10.0]
    assert val_a.get_xdata().tolist() == [2, 4] and val_a.get_marker() == "o"
    assert val_a.get_ydata().tolist() == [2 * 5.0, 2 * 3.0]  # logged steps only, scaled
    assert val_b.get_ydata().tolist() == [2 * 3.0, 2 * 3.0]
    assert held_out.get_xlabel() == "step" and held_out.get_title() == "held-out"
    plt.close(fig)


def test_layout_problems_name_what_a_reader_would_notice(tmp_path, monkeypatch):


    fig, (ax,) = plots.panels(1, width=4, height=3)
    ax.plot(range(10), range(10), label="a line")
    ax.set(title="fits", xlabel="step")
    plots.legend_outside(ax)
    assert plots.layout_problems(fig) == []
    ax.set_title("a title far too long for a figure four inches wide, so it runs off both edges")
    ax.legend(loc="upper left")  # over the line's upper points
    ax.plot([0.5], [8.5], "o")
    problems = plots.layout_problems(fig)
    assert "'a title far too long for a figure four i' sticks out of the figure" in problems
    assert "a legend ('a line', ...) covers data" in problems
    monkeypatch.setenv("MINILLADA_STRICT_FIGURES", "1")
    with pytest.raises(ValueError, match=r"figure flawed\.png: 'a title far too long"):
        plots.save_figure(fig, tmp_path / "flawed.png")
    assert not (tmp_path / "flawed.png").exists()
    plt.close(fig)
