"""The study's one figure style, and the plots of the RoPE positional analysis (notebook 01).

Every figure of the study calls `use_style()`, colors a RoPE variant with `VARIANT_COLORS` (the same
color in every figure) and is written by `save_figure`. Plot functions draw on a given matplotlib
`Axes` and return it, so notebooks and the widget compose them into panels (`panels`).

Conventions of the RoPE plots: d = rotary dim, b = base, T = training length; a dimension index
i = 2n is the first of pair n, so the critical dimension d_c = 2 * ceil((d/2) log_b(T / 2pi)) is
drawn at i = d_c, the first pair whose period exceeds the trained span. "Causal" (span T) is the
baseline LongLLaDA law, "bidirectional" (span 2T) UltraLLaDA's diffusion-aware law.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from minillada.atomic import atomic_write_bytes
from minillada.rope import ROPE_VARIANTS, compute_rope, critical_dim, default_inv_freq
from minillada.rope_analysis import angle_coverage, attention_decay_bound

# ----------------------------------------------------------------------------- style

DPI = 150

# Each RoPE variant's fixed color, marker and label (its record in minillada.rope.ROPE_VARIANTS).
VARIANT_COLORS: dict[str, str] = {name: v.color for name, v in ROPE_VARIANTS.items()}
VARIANT_MARKERS: dict[str, str] = {name: v.marker for name, v in ROPE_VARIANTS.items()}
VARIANT_LABELS: dict[str, str] = {name: v.label for name, v in ROPE_VARIANTS.items()}
# The causal and bidirectional spans share the colors of the laws that stand for them.
SPAN_COLORS: dict[str, str] = {
    "causal": VARIANT_COLORS["ntk_critical"],
    "bidirectional": VARIANT_COLORS["diffusion_ntk"],
}

# Variants whose frequencies follow from (d, b, T, T') alone; longrope needs searched factors.
PARAMETER_FREE_VARIANTS: tuple[str, ...] = tuple(
    name for name, v in ROPE_VARIANTS.items() if not v.parameters[1])


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


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DPI) -> Path:
    """Write `fig` as PNG at `path` atomically (temp file, then rename) and return the path.

    The file carries no software-version metadata, so the same figure gives the same bytes.
    """
    path = Path(path)
    if path.suffix != ".png":
        raise ValueError(f"save_figure writes PNG files; {str(path)!r} does not end in .png")
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

# ----------------------------------------------------------------------------- RoPE plots


def _mark_critical_dims(ax: Axes, head_dim: int, base: float, train_len: int) -> None:
    """Vertical lines at the baseline (span T) and diffusion-aware (span 2T) critical dims."""
    for span, law, name in ((1, "causal", "d_crit"), (2, "bidirectional", "d'_crit")):
        d_c = critical_dim(head_dim, base, train_len, span)
        ax.axvline(d_c, color=SPAN_COLORS[law], linestyle=":", linewidth=2,
                   label=f"{name} = {d_c} ({law} span {span}T)")


def plot_periods(
    ax: Axes,
    head_dim: int,
    base: float,
    train_len: int,
    title: str,
    variant: str | None = None,
    target_len: int | None = None,
) -> Axes:
    """Period 2pi/theta_n of every pair against T and 2T, critical dims marked (log scale).

    With `variant` and `target_len`, also draws that variant's periods and the target length.
    """
    dims = np.arange(0, head_dim, 2)
    periods = 2 * math.pi / default_inv_freq(head_dim, base).double().numpy()
    ax.plot(dims, periods, marker=".", color=VARIANT_COLORS["default"],
            label=f"original periods (base {base:g})")
    if variant is not None:
        inv_freq, _ = compute_rope(variant, head_dim, base, train_len, target_len)
        ax.plot(dims, 2 * math.pi / inv_freq.double().numpy(), marker=".",
                color=VARIANT_COLORS[variant], label=f"{VARIANT_LABELS[variant]}")
    if target_len is not None:
        ax.axhline(target_len, color="black", linestyle="-.", linewidth=1,
                   label=f"T' = {format_tokens(target_len)}")
    ax.axhline(train_len, color=SPAN_COLORS["causal"], linestyle="--",
               label=f"T_train = {format_tokens(train_len)}")
    ax.axhline(2 * train_len, color=SPAN_COLORS["bidirectional"], linestyle="--",
               label=f"2 T_train = {format_tokens(2 * train_len)}")
    _mark_critical_dims(ax, head_dim, base, train_len)
    ax.set(yscale="log", xlim=(-1, head_dim), title=title,
           xlabel="dimension index i = 2n", ylabel="period 2π / θ_n (tokens)")
    ax.yaxis.set_major_locator(LogLocator(base=2, numticks=12))
    ax.yaxis.set_major_formatter(TOKENS_FORMATTER)
    if variant is None:
        ax.legend(loc="lower right")  # periods grow to the upper right
    else:
        legend_outside(ax)  # the variant's steeper curve can cross any corner
    return ax


def plot_angle_coverage(ax: Axes, head_dim: int, base: float, train_len: int, title: str) -> Axes:
    """Per dimension, the share of a full period that trained relative positions cover:
    causal offsets [0, T) versus bidirectional offsets (-T, T)."""
    dims = np.arange(0, head_dim, 2)
    inv_freq = default_inv_freq(head_dim, base)
    for law, bidirectional, offsets in (("causal", False, "[0, T)"),
                                        ("bidirectional", True, "(-T, T)")):
        coverage = angle_coverage(inv_freq, train_len, bidirectional).numpy()
        ax.plot(dims, coverage, marker=".", color=SPAN_COLORS[law],
                label=f"{law}: offsets in {offsets}")
    _mark_critical_dims(ax, head_dim, base, train_len)
    ax.set(xlim=(-1, head_dim), ylim=(0, 1.05), title=title, xlabel="dimension index i = 2n",
           ylabel="share of a full period covered")
    ax.legend(loc="lower left")
    return ax


def effective_scale_curve(
    variant: str, head_dim: int, base: float, train_len: int, target_lens: Sequence[int]
) -> np.ndarray:
    """The effective base scale of `variant` at each target length (see `_effective_base_scale`)."""
    return np.array([
        _effective_base_scale(variant, head_dim, base, train_len, target) for target in target_lens
    ])


def _effective_base_scale(
    variant: str, head_dim: int, base: float, train_len: int, target_len: int
) -> float:
    """lambda_eff = (theta_c / theta'_c)^(d / d_c) at the baseline critical pair n_c = d_c / 2.

    A base change b -> lambda*b divides theta_c by lambda^(d_c/d), so lambda_eff is exactly lambda
    for ntk, dynamic, ntk_critical and diffusion_ntk, and for every other variant it is the base
    scale that would stretch the critical pair as much as that variant does.
    """
    d_c = critical_dim(head_dim, base, train_len)
    if not 0 < d_c < head_dim:
        raise ValueError(
            f"no critical pair: d_crit = {d_c} is outside (0, {head_dim}) for base {base:g} "
            f"and T_train {train_len}"
        )
    inv_freq, _ = compute_rope(variant, head_dim, base, train_len, target_len)
    theta = default_inv_freq(head_dim, base).double()[d_c // 2]
    return float((theta / inv_freq.double()[d_c // 2]) ** (head_dim / d_c))


def plot_effective_scale(
    ax: Axes,
    head_dim: int,
    base: float,
    train_len: int,
    target_lens: Sequence[int],
    title: str,
    variants: Sequence[str] = PARAMETER_FREE_VARIANTS,
    highlight: str | None = None,
) -> Axes:
    """Effective base scale lambda versus target length for each variant (log-log)."""
    for variant in variants:
        scales = effective_scale_curve(variant, head_dim, base, train_len, target_lens)
        emphasis = {} if highlight in (None, variant) else {"alpha": 0.35}
        # Hollow markers keep coinciding curves visible on top of each other.
        ax.plot(target_lens, scales, marker=VARIANT_MARKERS[variant], markersize=9,
                markerfacecolor="none", markeredgewidth=1.6, color=VARIANT_COLORS[variant],
                label=VARIANT_LABELS[variant], **emphasis)
    ax.set(xscale="log", yscale="log", title=title, xlabel="target length T' (tokens)",
           ylabel="effective base scale λ (new base / base)")
    ax.set_xticks(list(target_lens))
    ax.xaxis.set_major_formatter(TOKENS_FORMATTER)
    ax.xaxis.set_minor_formatter(NullFormatter())
    legend_outside(ax)
    return ax


def _log_bin_mean(values: torch.Tensor, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of values[1:] over about `bins` log-spaced bins of the distance, at each bin's
    geometric center: the raw bound oscillates too fast to read on a log axis."""
    edges = np.unique(np.geomspace(1, len(values), bins + 1).astype(int))
    means = np.add.reduceat(values.numpy(), edges[:-1]) / np.diff(edges)
    return np.sqrt(edges[:-1] * (edges[1:] - 1)), means


def plot_decay_bound(
    ax: Axes,
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int,
    title: str,
    variants: Sequence[str] = PARAMETER_FREE_VARIANTS,
    max_distance: int | None = None,
    bins: int = 40,
) -> Axes:
    """RoFormer's long-term decay: upper bound (2/d) sum_j |S_j| of the attention score versus
    relative distance, for each variant's frequencies at `target_len` (attention factors left out:
    they rescale every distance alike). Normalized by its value at distance 0 and averaged over
    log-spaced bins of the distance."""
    max_distance = max_distance if max_distance is not None else 2 * target_len
    for variant in variants:
        inv_freq, _ = compute_rope(variant, head_dim, base, train_len, target_len)
        bound = attention_decay_bound(inv_freq, max_distance)
        distance, means = _log_bin_mean(bound / bound[0], bins)
        ax.plot(distance, means, color=VARIANT_COLORS[variant], label=VARIANT_LABELS[variant],
                linewidth=2.2 if variant in ("ntk_critical", "diffusion_ntk") else 1.4)
    ax.axvline(train_len, color="black", linestyle="--", linewidth=1,
               label=f"T_train = {format_tokens(train_len)}")
    ax.axvline(target_len, color="black", linestyle="-.", linewidth=1,
               label=f"T' = {format_tokens(target_len)}")
    ax.set(xscale="log", xlim=(1, max_distance), title=title,
           xlabel="relative distance m (tokens)", ylabel="decay bound / bound at m = 0 (bin mean)")
    ax.xaxis.set_major_locator(LogLocator(base=4))
    ax.xaxis.set_major_formatter(TOKENS_FORMATTER)
    legend_outside(ax)
    return ax


# ----------------------------------------------------------------------------- evaluation plots

import pandas as pd  # noqa: E402 (only the evaluation plots below take tables)

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
