"""The RoPE explorer: sliders for base, head dim, T_train and target length and a variant menu that
redraw the positional-analysis plots of notebook 01 (`figures.rope_plots`) for any configuration, on
the persistent figure of `figures.explorer` (whose `ExplorerFigure`, `explorer_data`,
`render_explorer`, `decay_bound_samples`, ... are importable from here too).

The plots are rendered to PNG and shown in an `ipywidgets.Image`, not in an `Output` widget:
nbclient (behind papermill) mimics Output widgets by sending comm messages on the shell channel
while it waits there for the cell's reply, which now and then loses that reply and hangs a headless
run (jupyter/nbclient#312). An Image widget needs no such traffic.

Slider events are coalesced: inside a kernel a change only schedules a redraw `DEBOUNCE_S` later,
and a change that arrives meanwhile replaces it, so a burst of key presses draws the last state
once. Without a running event loop (tests, scripts) a change redraws at once.

A configuration that cannot be drawn (a target shorter than T_train, no critical pair) shows its
error above the image and greys the last drawing out under a "stale" banner until a valid one is
drawn.

The `view` control switches from the RoPE law to what the models that ship with the package do at
the chosen target length and variant (`figures.shipped`: NIAH on five prompts, in seconds); base,
head dim and T_train are then the shipped models' own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import ipywidgets as widgets

from minillada.figures import plots
from minillada.figures.explorer import (
    DECAY_BINS,
    DECAY_SAMPLES,
    ExplorerData,
    ExplorerFigure,
    decay_bound_samples,
    explorer_data,
    format_base,
    render_explorer,
    scale_targets,
)
from minillada.figures.rope_plots import PARAMETER_FREE_VARIANTS

__all__ = [
    "BASES",
    "DEBOUNCE_S",
    "DECAY_BINS",
    "DECAY_SAMPLES",
    "TARGET_LENGTHS",
    "TRAIN_LENGTHS",
    "ExplorerData",
    "ExplorerFigure",
    "decay_bound_samples",
    "explorer_data",
    "format_base",
    "render_explorer",
    "rope_explorer",
    "scale_targets",
]

TRAIN_LENGTHS = tuple(2**k for k in range(5, 16))  # 32 .. 32K
TARGET_LENGTHS = tuple(2**k for k in range(6, 18))  # 64 .. 128K
# Round bases, 10 per decade from 10 to 1e7: the slider shows exactly the value that is drawn.
BASE_MANTISSAS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
BASES = (*(round(m * 10**k, 6) for k in range(1, 7) for m in BASE_MANTISSAS), 1e7)
DEBOUNCE_S = 0.05


class _Coalescer:
    """Calls `action` once for a burst of requests: inside a running event loop (a kernel) a
    request schedules it `delay_s` later and replaces any request still waiting; without one (tests,
    scripts) it calls it at once."""

    def __init__(self, action: Callable[[], None], delay_s: float) -> None:
        self.action, self.delay_s = action, delay_s
        self.pending: asyncio.TimerHandle | None = None

    def request(self, _change: object = None) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.action()
            return
        if self.pending is not None:
            self.pending.cancel()
        self.pending = loop.call_later(self.delay_s, self._fire)

    def _fire(self) -> None:
        self.pending = None
        self.action()


def _length_slider(description: str, options: tuple[int, ...], value: int) -> widgets.Widget:
    if value not in options:
        raise ValueError(
            f"{description} must be a power of two in [{options[0]}, {options[-1]}], got {value}"
        )
    return widgets.SelectionSlider(
        description=description,
        options=[(plots.format_tokens(n), n) for n in options],
        value=value,
    )


def _base_slider(base: float) -> widgets.Widget:
    """Round bases (`BASES`, plus `base` itself), labelled as the legend spells them."""
    values = sorted({*BASES, float(base)})
    return widgets.SelectionSlider(description="base b", value=float(base),
                                   options=[(format_base(b), b) for b in values])


def rope_explorer(
    head_dim: int = 128,
    base: float = 500000.0,
    train_len: int = 4096,
    target_len: int = 65536,
    variant: str = "diffusion_ntk",
    debounce_s: float = DEBOUNCE_S,
) -> widgets.Widget:
    """The explorer widget, starting at the given configuration (default: LLaDA-8B to 64K).

    Display it (last expression of a cell); it redraws when a control is released, once per burst
    of changes `debounce_s` apart. Its `explorer_figure` attribute is the persistent figure.
    """
    if variant not in PARAMETER_FREE_VARIANTS:
        raise ValueError(
            f"unknown variant {variant!r}; the explorer offers {PARAMETER_FREE_VARIANTS}"
        )
    if head_dim % 8 or not 16 <= head_dim <= 256:
        raise ValueError(f"head_dim must be a multiple of 8 in [16, 256], got {head_dim}")
    if not 10 <= base <= 1e7:
        raise ValueError(f"base must be in [10, 1e7], got {base}")
    controls = {
        "base": _base_slider(base),
        "head_dim": widgets.IntSlider(value=head_dim, min=16, max=256, step=8,
                                      description="head dim d"),
        "train_len": _length_slider("T_train", TRAIN_LENGTHS, train_len),
        "target_len": _length_slider("target T'", TARGET_LENGTHS, target_len),
        "variant": widgets.Dropdown(
            options=[(plots.VARIANT_LABELS[v], v) for v in PARAMETER_FREE_VARIANTS],
            value=variant, description="variant"),
        "view": widgets.ToggleButtons(options=[("RoPE law", "law"), ("shipped models", "models")],
                                      value="law", description="view"),
    }
    for control in controls.values():
        control.continuous_update = False  # redraw on release, not on every pixel of a drag
        control.style = {"description_width": "110px"}
        control.layout = widgets.Layout(width="420px")
    message = widgets.HTML()
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
    figure = ExplorerFigure()

    def redraw() -> None:
        if controls["view"].value == "models":
            show_models()
            return
        try:
            data = explorer_data(**{name: c.value for name, c in controls.items()
                                    if name != "view"})
        except ValueError as error:  # shown to the user; the last drawing is greyed out
            message.value = (f"<b style='color:#b00000'>cannot draw this configuration:</b> "
                             f"{error}")
            figure.mark_stale(str(error))
        else:
            figure.draw(data)
            message.value = ""
        image.value = figure.png()

    def show_models() -> None:
        from minillada.figures.shipped import render_shipped, shipped_retrieval

        target, chosen = controls["target_len"].value, controls["variant"].value
        try:
            table = shipped_retrieval(target, chosen)
        except (ValueError, FileNotFoundError) as error:
            message.value = f"<b style='color:#b00000'>cannot run the shipped models:</b> {error}"
            return
        message.value = ("the shipped models (their own base, head dim and T_train): the base with "
                         f"{plots.VARIANT_LABELS[chosen]} applied without training, and "
                         "mini-UltraLLaDA as post-trained")
        image.value = render_shipped(table)

    coalescer = _Coalescer(redraw, debounce_s)
    for control in controls.values():
        control.observe(coalescer.request, names="value")
    redraw()
    column = list(controls.values())
    explorer = widgets.VBox([widgets.HBox([widgets.VBox(column[:3]), widgets.VBox(column[3:])]),
                             message, image])
    explorer.explorer_figure = figure
    return explorer
