"""The RoPE explorer: sliders for base, head dim, T_train and target length and a variant menu that
redraw the positional-analysis plots of notebook 01 (`minillada.plots`) for any configuration."""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib.pyplot as plt

from minillada import plots

TRAIN_LENGTHS = tuple(2**k for k in range(5, 16))  # 32 .. 32K
TARGET_LENGTHS = tuple(2**k for k in range(6, 18))  # 64 .. 128K
SCALE_FACTORS = (2, 4, 8, 16, 32)  # target lengths of the effective-scale panel, in T_train


def _length_slider(description: str, options: tuple[int, ...], value: int) -> widgets.Widget:
    if value not in options:
        raise ValueError(
            f"{description} must be a power of two in [{options[0]}, {options[-1]}], got {value}"
        )
    return widgets.SelectionSlider(
        description=description,
        options=[(plots.format_tokens(n), n) for n in options],
        value=value,
        continuous_update=False,
    )


def draw_explorer(
    head_dim: int, base: float, train_len: int, target_len: int, variant: str
) -> None:
    """Draw the four panels for one configuration (the explorer's callback)."""
    if target_len < train_len:
        print(f"target length {target_len} is shorter than T_train {train_len}: pick a longer one")
        return
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
    except ValueError as error:  # e.g. no critical pair for this base and length
        plt.close(fig)
        print(f"cannot draw this configuration: {error}")
        return
    plt.show()


def rope_explorer(
    head_dim: int = 128,
    base: float = 500000.0,
    train_len: int = 4096,
    target_len: int = 65536,
    variant: str = "diffusion_ntk",
) -> widgets.Widget:
    """The explorer widget, starting at the given configuration (default: LLaDA-8B to 64K).

    Display it (last expression of a cell); it redraws on every change of a control.
    """
    if variant not in plots.PARAMETER_FREE_VARIANTS:
        raise ValueError(
            f"unknown variant {variant!r}; the explorer offers {plots.PARAMETER_FREE_VARIANTS}"
        )
    if head_dim % 8 or not 16 <= head_dim <= 256:
        raise ValueError(f"head_dim must be a multiple of 8 in [16, 256], got {head_dim}")
    if not 10 <= base <= 1e7:
        raise ValueError(f"base must be in [10, 1e7], got {base}")
    style = {"description_width": "110px"}
    layout = widgets.Layout(width="420px")
    controls = {
        "base": widgets.FloatLogSlider(value=base, base=10, min=1, max=7, step=0.05,
                                       description="base b", continuous_update=False),
        "head_dim": widgets.IntSlider(value=head_dim, min=16, max=256, step=8,
                                      description="head dim d", continuous_update=False),
        "train_len": _length_slider("T_train", TRAIN_LENGTHS, train_len),
        "target_len": _length_slider("target T'", TARGET_LENGTHS, target_len),
        "variant": widgets.Dropdown(
            options=[(plots.VARIANT_LABELS[v], v) for v in plots.PARAMETER_FREE_VARIANTS],
            value=variant, description="variant"),
    }
    for control in controls.values():
        control.style, control.layout = style, layout
    output = widgets.interactive_output(draw_explorer, controls)
    column = list(controls.values())
    return widgets.VBox([widgets.HBox([widgets.VBox(column[:3]), widgets.VBox(column[3:])]),
                         output])
