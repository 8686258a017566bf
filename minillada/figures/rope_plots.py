"""The plots of the RoPE positional analysis (notebook 01 and the explorer), in the study's style
(`figures.plots`).

Conventions: d = rotary dim, b = base, T = training length; a dimension index i = 2n is the first
of pair n, so the critical dimension d_c = 2 * ceil((d/2) log_b(T / 2pi)) is drawn at i = d_c, the
first pair whose period exceeds the trained span. "Causal" (span T) is the baseline LongLLaDA law,
"bidirectional" (span 2T) UltraLLaDA's diffusion-aware law.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.ticker import LogLocator, NullFormatter

from minillada.figures.plots import (
    SPAN_COLORS,
    TOKENS_FORMATTER,
    VARIANT_COLORS,
    VARIANT_LABELS,
    VARIANT_MARKERS,
    format_tokens,
    legend_outside,
)
from minillada.rope.analysis import angle_coverage, attention_decay_bound
from minillada.rope.formulas import critical_dim, default_inv_freq
from minillada.rope.laws import ROPE_VARIANTS, compute_rope

# Variants whose frequencies follow from (d, b, T, T') alone; longrope needs searched factors.
PARAMETER_FREE_VARIANTS: tuple[str, ...] = tuple(
    name for name, v in ROPE_VARIANTS.items() if not v.parameters[1])


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
