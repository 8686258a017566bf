"""The study's one figure style, and the plots of its results.

Every figure of the study calls `use_style()`, colors a RoPE variant with `VARIANT_COLORS` (the same
color in every figure) and is written by `save_figure`. Plot functions draw on a given matplotlib
`Axes` and return it, so notebooks and the widget compose them into panels (`panels`): retrieval
heatmaps, lines against the length, training curves, and the across-run estimates of a claim
(`estimate_figure`). The RoPE analysis plots are in `figures.rope_plots`.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from minillada.common.atomic import atomic_write_bytes
from minillada.rope.laws import ROPE_VARIANTS

# ----------------------------------------------------------------------------- style

DPI = 150

# Each RoPE variant's fixed color, marker and label (its record in rope.laws.ROPE_VARIANTS).
VARIANT_COLORS: dict[str, str] = {name: v.color for name, v in ROPE_VARIANTS.items()}
VARIANT_MARKERS: dict[str, str] = {name: v.marker for name, v in ROPE_VARIANTS.items()}
VARIANT_LABELS: dict[str, str] = {name: v.label for name, v in ROPE_VARIANTS.items()}
# The causal and bidirectional spans share the colors of the laws that stand for them.
SPAN_COLORS: dict[str, str] = {
    "causal": VARIANT_COLORS["ntk_critical"],
    "bidirectional": VARIANT_COLORS["diffusion_ntk"],
}


def use_style() -> None:
    """Apply the study's seaborn theme (white grid, colorblind palette, readable sizes)."""
    sns.set_theme(
        context="notebook",
        style="whitegrid",
        palette=list(VARIANT_COLORS.values()),
        rc={
            "figure.constrained_layout.use": True,
            "savefig.dpi": DPI,
            "axes.titlesize": "medium",
            "axes.titleweight": "bold",
            "legend.fontsize": "small",
            "legend.framealpha": 0.9,
        },
    )


def panels(
    count: int, columns: int | None = None, width: float = 6.0, height: float = 4.2
) -> tuple[Figure, list[Axes]]:
    """A figure with `count` axes of `width` x `height` inches each, in rows of `columns`
    (default: all in one row)."""
    columns = count if columns is None else columns
    if count < 1 or columns < 1:
        raise ValueError(f"panels needs count >= 1 and columns >= 1, got {count} and {columns}")
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows),
                             squeeze=False, layout="constrained")
    for extra in axes.flat[count:]:
        extra.remove()
    return fig, list(axes.flat[:count])


def legend_outside(ax: Axes) -> None:
    """The legend to the right of the axes, for plots whose curves fill the whole frame."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


STRICT_FIGURES = "MINILLADA_STRICT_FIGURES"  # set to 1: save_figure refuses a flawed layout


def layout_problems(fig: Figure) -> list[str]:
    """What a reader would notice in `fig`'s layout: a title, axis label, tick label or legend
    that sticks out of the figure, and a legend drawn over the data of an axes (over a point of
    a line or a scatter, or a bar). Empty when none."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox.padded(1.0)
    problems = []
    for ax in fig.axes:
        texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label,
                 *_drawn_tick_labels(ax.xaxis), *_drawn_tick_labels(ax.yaxis)]
        for text in texts:
            if not text.get_visible() or not text.get_text().strip():
                continue
            box = text.get_window_extent(renderer)
            if box.width and not (frame.x0 <= box.x0 and box.x1 <= frame.x1
                                  and frame.y0 <= box.y0 and box.y1 <= frame.y1):
                problems.append(f"{text.get_text()[:40]!r} sticks out of the figure")
    legends = [(ax.get_legend(), [ax]) for ax in fig.axes] + [(legend, fig.axes)
                                                              for legend in fig.legends]
    for legend, axes in legends:
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        if any(_covers(box, ax, renderer) for ax in axes):
            problems.append(f"a legend ({legend.get_texts()[0].get_text()[:30]!r}, ...) covers "
                            "data")
    return problems


def _drawn_tick_labels(axis: Any) -> list[Any]:
    """The tick labels of `axis` inside its view limits (the others are not drawn)."""
    low, high = sorted(axis.get_view_interval())
    return [label for location, label in zip(axis.get_ticklocs(), axis.get_ticklabels(),
                                             strict=False)
            if low - 1e-9 * abs(high - low) <= location <= high + 1e-9 * abs(high - low)]


def _covers(box: Any, ax: Axes, renderer: Any) -> bool:
    """Whether the display box `box` lies over a data point of `ax`: a point of a line, of a
    scatter, or a bar."""
    points = [line.get_transform().transform(line.get_xydata()) for line in ax.get_lines()
              if len(line.get_xydata())]
    points += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections
               if isinstance(c, PathCollection) and len(c.get_offsets())]
    if any(((xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0)
            & (xy[:, 1] < box.y1)).any() for xy in points):
        return True
    return any(bar.get_window_extent(renderer).overlaps(box) for container in ax.containers
               for bar in getattr(container, "patches", ()))


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write `fig` as PNG at `path` atomically (temp file, then rename) and return the path.

    The file carries no software-version metadata, so the same figure gives the same bytes. With
    the environment variable MINILLADA_STRICT_FIGURES=1 (the test suite's notebooks) a figure
    with `layout_problems` is refused, naming them.
    """
    path = Path(path)
    if path.suffix != ".png":
        raise ValueError(f"save_figure writes PNG files; {str(path)!r} does not end in .png")
    if os.environ.get(STRICT_FIGURES) == "1":
        problems = layout_problems(fig)
        if problems:
            raise ValueError(f"figure {path.name}: " + "; ".join(problems))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return atomic_write_bytes(path, buffer.getvalue())


def format_tokens(count: float) -> str:
    """Token counts as on the papers' axes: 512, 4K, 128K, 1M."""
    for unit, suffix in ((2**20, "M"), (2**10, "K")):
        if count >= unit and count % unit == 0:
            return f"{int(count // unit)}{suffix}"
    return f"{count:g}"


TOKENS_FORMATTER = FuncFormatter(lambda value, _: format_tokens(value))

# ----------------------------------------------------------------------------- evaluation plots

PACKING_LABELS: dict[str, str] = {
    "direct": "direct packing",
    "eod": "EOD-separated packing",
    "adaptive": "adaptive packing (document mask)",
    "adaptive_eod": "adaptive + EOD packing",
    "direct_restart": "direct packing, positions restart",
    "eod_restart": "EOD-separated packing, positions restart",
}
RETRIEVAL_METRICS: dict[str, str] = {"exact": "exact match, %", "value": "NeedleBench score, 0-100"}


def display_name(name: str) -> str:
    """A human name for a model label: RoPE variants and packings by name ("diffusion_ntk +
    adaptive" -> "diffusion-aware NTK (UltraLLaDA) + adaptive packing (document mask)")."""
    parts = [VARIANT_LABELS.get(part, PACKING_LABELS.get(part, part)) for part in name.split(" + ")]
    return " + ".join(parts)


def note_axis_origin(ax: Axes) -> Axes:
    """Say so on a linear y axis that does not start at 0 (it magnifies small differences)."""
    low, high = ax.get_ylim()
    if ax.get_yscale() == "linear" and 0 < low < high:
        ax.text(0.01, 0.01, "y axis does not start at 0", transform=ax.transAxes, fontsize="small",
                fontstyle="italic", color="dimgray", ha="left", va="bottom")
    return ax


def _variant_style(name: str) -> dict[str, object]:
    """Color, marker and label of a RoPE variant; other names (checkpoints) get the palette's."""
    if name in VARIANT_COLORS:
        return {"color": VARIANT_COLORS[name], "marker": VARIANT_MARKERS[name],
                "label": VARIANT_LABELS[name]}
    return {"marker": "o", "label": display_name(name)}


def _samples_per_cell(counts: pd.DataFrame) -> str:
    low, high = int(counts.min().min()), int(counts.max().max())
    return f"{low} samples per cell" if low == high else f"{low}-{high} samples per cell"


def plot_score_heatmap(ax: Axes, frame: pd.DataFrame, title: str, value: str = "exact",
                       train_len: int | None = None, chance: float | None = None) -> Axes:
    """Mean `value` in % (`exact`: exact match; `value`: NeedleBench score) per needle depth (rows,
    0% at the top) and context length (columns), NeedleBench's red-to-green scale, the number of
    samples per cell in the title; a labelled dashed line separates lengths up to `train_len`,
    and `chance` (the metric's chance level, %) is marked on the colour bar."""
    scale = 100.0 if value == "exact" else 1.0
    frame = frame.assign(_shown=scale * frame[value])
    table = frame.pivot_table(index="depth", columns="length", values="_shown", aggfunc="mean")
    counts = frame.pivot_table(index="depth", columns="length", values="_shown", aggfunc="size")
    unit = RETRIEVAL_METRICS.get(value, value)
    sns.heatmap(table, ax=ax, vmin=0, vmax=100, cmap="RdYlGn", annot=True, fmt=".0f",
                annot_kws={"fontsize": "x-small"}, cbar_kws={"label": unit}, linewidths=0.5)
    ax.set_xticklabels([format_tokens(length) for length in table.columns])
    ax.set_yticklabels([f"{depth:g}%" for depth in table.index], rotation=0)
    handles = []
    if train_len is not None:
        inside = int((table.columns <= train_len).sum())
        if 0 < inside < len(table.columns):
            handles.append(ax.axvline(inside, color="black", linestyle="--", linewidth=1.5,
                                      label=f"lengths up to {format_tokens(train_len)} left of it"))
    if chance is not None:
        ax.collections[0].colorbar.ax.axhline(chance, color="black", linestyle=":", linewidth=2)
        handles.append(plt.Line2D([], [], color="black", linestyle=":", linewidth=2,
                                  label=f"chance = {chance:.3g}% (on the colour bar)"))
    if handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=2,
                  fontsize="x-small", frameon=False)
    ax.set(title=f"{display_name(title)}\n{unit}, {_samples_per_cell(counts)}",
           xlabel="context length (tokens)", ylabel="needle depth")
    return ax


def plot_lines(ax: Axes, frame: pd.DataFrame, x: str, y: str, title: str, ylabel: str,
               hue: str = "rope", error: str | tuple[str, str] | None = None,
               train_len: int | None = None,
               xlabel: str | None = None, log_x: bool = True, log_y: bool = False,
               chance: float | None = None, ylim: tuple[float, float] | None = None) -> Axes:
    """One line of `y` against `x` per `hue` value (RoPE variants in their fixed colors, other
    labels by `display_name`), with ±`error` bars when given (a pair of columns: the interval's
    low and high ends, e.g. Wilson intervals), T_train and the `chance` level
    (%) drawn and labelled; `x` in tokens on a log2 axis by default, `y` on a log axis with
    `log_y`, `ylim` when given; a linear y axis that does not start at 0 says so."""
    for name, group in frame.groupby(hue, sort=False):
        group = group.sort_values(x)
        if isinstance(error, tuple):
            # Rounding can put a Wilson end a hair inside its point estimate (k = 0 or n).
            bars = np.clip([group[y] - group[error[0]], group[error[1]] - group[y]], 0, None)
        else:
            bars = None if error is None else group[error]
        ax.errorbar(group[x], group[y], yerr=bars,
                    capsize=3, linewidth=1.8, markersize=6, **_variant_style(str(name)))
    if train_len is not None:
        ax.axvline(train_len, color="black", linestyle="--", linewidth=1,
                   label=f"T_train = {format_tokens(train_len)}")
    if chance is not None:
        ax.axhline(chance, color="dimgray", linestyle=":", linewidth=1.5,
                   label=f"chance = {chance:.3g}%")
    if log_x:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(TOKENS_FORMATTER)
        ax.xaxis.set_minor_formatter(NullFormatter())
    if log_y:
        ax.set_yscale("log")
        ylabel = f"{ylabel} (log scale)"
    ax.set(title=title, xlabel=xlabel or f"{x} (tokens)", ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    note_axis_origin(ax)
    ax.legend()
    return ax


def training_curves(ax: Axes, metrics: pd.DataFrame, column: str, title: str, ylabel: str, *,
                    hue: str, label: str = "{}", smooth: int | None = None, scale: float = 1.0,
                    chance: float | None = None, ylim: tuple[float, float] | None = None) -> Axes:
    """`column` of training runs' metrics (rows of `training.checkpoint.read_metrics`, a `hue`
    column naming each run's group) against the step: one line per `hue` value, the mean over
    its runs at every step where the column was logged, times `scale`. Without `smooth` the
    points are marked (validation metrics, logged every val_every steps); with it, a rolling
    mean over that many steps (the noisy training loss). `label` formats each legend entry
    ({} the hue value, {runs} how many runs the line averages); `chance` (%) is drawn dotted;
    a linear y axis that does not start at 0 says so."""
    for name, group in metrics.groupby(hue, sort=False):
        logged = group.dropna(subset=[column]) if column in group else group.iloc[:0]
        if logged.empty:
            continue
        curve = logged.groupby("step")[column].mean() * scale
        if smooth is not None:
            curve = curve.rolling(smooth, min_periods=1).mean()
        runs = int(group.groupby("step").size().max())  # every run logs every step once
        ax.plot(curve.index, curve.values, label=label.format(name, runs=runs),
                **({} if smooth is not None else {"marker": "o", "markersize": 3}))
    if chance is not None:
        ax.axhline(chance, color="dimgray", linestyle=":", label=f"chance = {chance:.3g}%")
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    note_axis_origin(ax)
    ax.legend()
    return ax


@dataclass(frozen=True)
class EstimatePanel:
    """One panel of `estimate_figure`: across-run estimates (`report.Claim.estimates` entries,
    one row each), its title and x label, and the reference lines to draw: `chance` (%),
    `zero` for differences, a non-inferiority `margin`."""

    estimates: Mapping[str, Mapping[str, Any]]
    title: str
    xlabel: str
    chance: float | None = None
    zero: bool = False
    margin: float | None = None


def plot_estimates(ax: Axes, panel: EstimatePanel) -> Axes:
    """Draw `panel` on `ax`: every run's own value as a dot (one marker per base), the mean over
    bases as a bar with its 95% interval across runs, and the range one new run falls in as a
    thin line. Labels its artists for the one legend `estimate_figure` draws."""
    labels = list(panel.estimates)
    bases = sorted({run["base"] for e in panel.estimates.values() for run in e["per_run"]})
    markers = dict(zip(bases, "osD^vP*Xhp", strict=False))
    for row, label in enumerate(labels):
        entry = panel.estimates[label]
        ax.plot(entry["run_range"], [row - 0.3] * 2, color="silver", linewidth=3,
                solid_capstyle="butt", label="95% of single runs" if row == 0 else None)
        low, high = entry["ci"]
        ax.errorbar(entry["mean"], row, xerr=[[entry["mean"] - low], [high - entry["mean"]]],
                    fmt="|", color="black", markersize=14, capsize=5, linewidth=2,
                    label="mean over bases (95% across runs)" if row == 0 else None)
        for run in entry["per_run"]:
            ax.scatter(run["value"], row + 0.22, marker=markers.get(run["base"], "o"),
                       color="tab:blue", alpha=0.7, s=28)
    for base, marker in markers.items():
        ax.scatter([], [], marker=marker, color="tab:blue", label=f"a run on base {base}")
    if panel.chance is not None:
        ax.axvline(panel.chance, color="dimgray", linestyle=":",
                   label=f"chance = {panel.chance:.3g}%")
    if panel.zero:
        ax.axvline(0, color="dimgray", linestyle="--", linewidth=1)
    if panel.margin is not None:
        ax.axvline(panel.margin, color="tab:red", linestyle=":",
                   label=f"non-inferiority margin {panel.margin:g}")
    ax.set_yticks(range(len(labels)), [display_name(label) for label in labels])
    ax.set_ylim(len(labels) - 0.5, -0.6)
    ax.set(title=panel.title, xlabel=panel.xlabel)
    return ax


def estimate_figure(*panels: EstimatePanel, width: float = 9.5) -> Figure:
    """The panels stacked in one column, each as tall as its rows, under one shared legend:
    long row labels and per-base markers fit whatever the number of rows or panels."""
    if not panels:
        raise ValueError("estimate_figure needs at least one EstimatePanel")
    heights = [0.42 * len(panel.estimates) + 1.1 for panel in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, sum(heights) + 1.0), squeeze=False,
                             layout="constrained", height_ratios=heights)
    legend: dict[str, Any] = {}
    for ax, panel in zip(axes.flat, panels, strict=True):
        plot_estimates(ax, panel)
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=3)
    return fig
