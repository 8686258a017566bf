"""The RoPE explorer: sliders for base, head dim, T_train and target length and a variant menu that
redraw the positional-analysis plots of notebook 01 (`minillada.plots`) for any configuration.

The plots are rendered to PNG and shown in an `ipywidgets.Image`, not in an `Output` widget:
nbclient (behind papermill) mimics Output widgets by sending comm messages on the shell channel
while it waits there for the cell's reply, which now and then loses that reply and hangs a headless
run (jupyter/nbclient#312). An Image widget needs no such traffic.
"""

from __future__ import annotations

import io

import ipywidgets as widgets
import matplotlib.pyplot as plt

from minillada import plots

TRAIN_LENGTHS = tuple(2**k for k in range(5, 16))  # 32 .. 32K
TARGET_LENGTHS = tuple(2**k for k in range(6, 18))  # 64 .. 128K
SCALE_FACTORS = (2, 4, 8, 16, 32)  # target lengths of the effective-scale panel, in T_train
PREVIEW_DPI = 90


def render_explorer(
    head_dim: int, base: float, train_len: int, target_len: int, variant: str
) -> bytes:
    """The four panels of the explorer for one configuration, as PNG bytes.

    Raises ValueError for a configuration that cannot be drawn (a target shorter than T_train,
    no critical pair, an unknown variant).
    """
    if target_len < train_len:
        raise ValueError(f"target length {target_len} is shorter than T_train {train_len}")
    fig, axes = plots.panels(4, columns=2, width=7.0, height=4.6)
    try:
        plots.plot_periods(axes[0], head_dim, base, train_len, "periods per dimension",
                           variant=variant, target_len=target_len)
        plots.plot_angle_coverage(axes[1], head_dim, base, train_len, "angle coverage of T_train")
        plots.plot_effective_scale(axes[2], head_dim, base, train_len,
                                   [f * train_len for f in SCALE_FACTORS],
                                   "effective base scale", highlight=variant)
        plots.plot_decay_bound(axes[3], head_dim, base, train_len, target_len,
                               f"decay bound at T' = {plots.format_tokens(target_len)}",
                               variants=sorted({"default", variant}))
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=PREVIEW_DPI)
    finally:
        plt.close(fig)  # never shown inline: the Image widget shows it
    return buffer.getvalue()


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


def rope_explorer(
    head_dim: int = 128,
    base: float = 500000.0,
    train_len: int = 4096,
    target_len: int = 65536,
    variant: str = "diffusion_ntk",
) -> widgets.Widget:
    """The explorer widget, starting at the given configuration (default: LLaDA-8B to 64K).

    Display it (last expression of a cell); it redraws whenever a control changes.
    """
    if variant not in plots.PARAMETER_FREE_VARIANTS:
        raise ValueError(
            f"unknown variant {variant!r}; the explorer offers {plots.PARAMETER_FREE_VARIANTS}"
        )
    if head_dim % 8 or not 16 <= head_dim <= 256:
        raise ValueError(f"head_dim must be a multiple of 8 in [16, 256], got {head_dim}")
    if not 10 <= base <= 1e7:
        raise ValueError(f"base must be in [10, 1e7], got {base}")
    controls = {
        "base": widgets.FloatLogSlider(value=base, base=10, min=1, max=7, step=0.05,
                                       description="base b"),
        "head_dim": widgets.IntSlider(value=head_dim, min=16, max=256, step=8,
                                      description="head dim d"),
        "train_len": _length_slider("T_train", TRAIN_LENGTHS, train_len),
        "target_len": _length_slider("target T'", TARGET_LENGTHS, target_len),
        "variant": widgets.Dropdown(
            options=[(plots.VARIANT_LABELS[v], v) for v in plots.PARAMETER_FREE_VARIANTS],
            value=variant, description="variant"),
    }
    for control in controls.values():
        control.continuous_update = False  # redraw on release: a drawing takes about a second
        control.style = {"description_width": "110px"}
        control.layout = widgets.Layout(width="420px")
    message = widgets.HTML()
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))

    def redraw(_change: object = None) -> None:
        try:
            image.value = render_explorer(**{name: c.value for name, c in controls.items()})
            message.value = ""
        except ValueError as error:  # shown to the user; the last good drawing stays
            message.value = f"<b>cannot draw this configuration:</b> {error}"

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    column = list(controls.values())
    return widgets.VBox([widgets.HBox([widgets.VBox(column[:3]), widgets.VBox(column[3:])]),
                         message, image])
