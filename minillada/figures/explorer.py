"""The RoPE explorer's figure: the numbers of one configuration (`explorer_data`) and the four
panels of notebook 01's positional analysis (`minillada.figures.plots`) on one persistent figure
(`ExplorerFigure`), rendered to PNG. The controls around it are `minillada.figures.widgets`.

Speed (target: a redraw in well under 0.3 s on a laptop core). An `ExplorerFigure` builds its four
panels once, on a plain Agg `Figure` with a fixed layout (no pyplot, no constrained layout), and a
redraw only moves its artists (`Line2D.set_data`, limits, titles; legends are rebuilt, which is
cheap) and encodes the canvas as a fast-compressed PNG. The decay panel evaluates RoFormer's bound
at up to `DECAY_SAMPLES` distances per log bin instead of at every distance up to 2 T' (the
notebook's figure keeps the exact mean; the two agree within 0.005 of the bound at m = 0,
see tests; curves are cached per configuration).

A configuration that cannot be drawn (a target shorter than T_train, no critical pair) raises
ValueError in `explorer_data`; `ExplorerFigure.mark_stale` greys the last drawing out under a
"stale" banner until a valid one is drawn.
"""

from __future__ import annotations

import functools
import io
import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, LogLocator, NullFormatter, NullLocator
from PIL import Image

from minillada.figures import plots, rope_plots
from minillada.rope.analysis import angle_coverage
from minillada.rope.formulas import critical_dim, default_inv_freq
from minillada.rope.laws import compute_rope

SCALE_FACTORS = (2, 4, 8, 16, 32)  # fewest target lengths of the effective-scale panel, in T_train
PREVIEW_DPI = 90
FIGURE_SIZE = (15.6, 8.6)  # inches: two columns of [axes | legend], two rows
DECAY_BINS = 40
DECAY_SAMPLES = 256  # distances per log bin at which the decay bound is evaluated
PNG_COMPRESS_LEVEL = 1  # zlib level: 6 (the default) costs ~3x the time for ~15% fewer bytes


def format_base(base: float) -> str:
    """The one spelling of a base, on the slider and in the legend: 500000, 1e+06."""
    return f"{base:g}"


# ----------------------------------------------------------------------------- data


def decay_bound_samples(
    inv_freq: np.ndarray, max_distance: int, bins: int = DECAY_BINS,
    samples: int | None = DECAY_SAMPLES,
) -> tuple[np.ndarray, np.ndarray]:
    """(bin centers, mean normalized decay bound per bin), the curve of
    `rope_plots.plot_decay_bound`.

    Same log bins of distances 1 .. max_distance as `rope_plots._log_bin_mean`; a bin holding more
    than `samples` distances is averaged over `samples` evenly spread ones (None: over all of
    them).
    """
    edges = np.unique(np.geomspace(1, max_distance + 1, bins + 1).astype(int))
    theta = np.asarray(inv_freq, dtype=np.float64)
    bound_at_0 = np.arange(1, len(theta) + 1).mean()  # |S_j| = j + 1 at m = 0
    centers, means = np.sqrt(edges[:-1] * (edges[1:] - 1)), []
    for low, high in itertools.pairwise(edges):
        if samples is None or high - low <= samples:
            distance = np.arange(low, high, dtype=np.float64)
        else:  # midpoints of `samples` equal strata of [low, high), rounded to integers
            distance = np.floor(low + (np.arange(samples) + 0.5) * (high - low) / samples)
        sums = np.cumsum(np.exp(1j * distance[:, None] * theta[None, :]), axis=1)
        means.append(np.abs(sums).mean(axis=1).mean() / bound_at_0)
    return centers, np.array(means)


def scale_targets(train_len: int, target_len: int) -> list[int]:
    """Target lengths of the effective-scale panel: 2 T .. 32 T in powers of two, extended to the
    selected target T' (always one of them)."""
    factors = {*SCALE_FACTORS}
    factor = 2
    while factor * train_len < target_len:
        factor *= 2
        factors.add(factor)
    return sorted({f * train_len for f in factors} | {target_len})


@functools.lru_cache(maxsize=64)
def _decay_curve(
    variant: str, head_dim: int, base: float, train_len: int, target_len: int
) -> tuple[np.ndarray, np.ndarray]:
    frequencies, _ = compute_rope(variant, head_dim, base, train_len, target_len)
    return decay_bound_samples(frequencies.double().numpy(), 2 * target_len)


@dataclass(frozen=True)
class ExplorerData:
    """Everything the four panels draw for one configuration (see `explorer_data`)."""

    head_dim: int
    base: float
    train_len: int
    target_len: int
    variant: str
    dims: np.ndarray
    periods: np.ndarray
    variant_periods: np.ndarray
    d_crit: int
    d_crit_2t: int
    coverage: dict[str, np.ndarray]
    scale_targets: list[int]
    scales: dict[str, np.ndarray]
    decay: dict[str, tuple[np.ndarray, np.ndarray]]


def explorer_data(
    head_dim: int, base: float, train_len: int, target_len: int, variant: str
) -> ExplorerData:
    """The explorer's numbers for one configuration; raises ValueError for one that cannot be
    drawn (a target shorter than T_train, no critical pair, an unknown variant)."""
    if variant not in rope_plots.PARAMETER_FREE_VARIANTS:
        raise ValueError(
            f"unknown variant {variant!r}; the explorer offers {rope_plots.PARAMETER_FREE_VARIANTS}"
        )
    if target_len < train_len:
        raise ValueError(f"target length {target_len} is shorter than T_train {train_len}")
    inv_freq = default_inv_freq(head_dim, base)
    targets = scale_targets(train_len, target_len)
    scales = {v: rope_plots.effective_scale_curve(v, head_dim, base, train_len, targets)
              for v in rope_plots.PARAMETER_FREE_VARIANTS}  # raises when there is no critical pair
    decay = {name: _decay_curve(name, head_dim, float(base), train_len, target_len)
             for name in sorted({"default", variant})}
    variant_freq, _ = compute_rope(variant, head_dim, base, train_len, target_len)
    return ExplorerData(
        head_dim=head_dim, base=float(base), train_len=train_len, target_len=target_len,
        variant=variant, dims=np.arange(0, head_dim, 2),
        periods=2 * math.pi / inv_freq.double().numpy(),
        variant_periods=2 * math.pi / variant_freq.double().numpy(),
        d_crit=critical_dim(head_dim, base, train_len),
        d_crit_2t=critical_dim(head_dim, base, train_len, 2.0),
        coverage={law: angle_coverage(inv_freq, train_len, law == "bidirectional").numpy()
                  for law in ("causal", "bidirectional")},
        scale_targets=targets, scales=scales, decay=decay,
    )


# ----------------------------------------------------------------------------- figure

_STYLE: dict[str, Any] | None = None


def _style() -> dict[str, Any]:
    """The study's rcParams (`plots.use_style`), captured once without changing the global ones."""
    global _STYLE
    if _STYLE is None:
        with mpl.rc_context():
            plots.use_style()
            _STYLE = dict(mpl.rcParams)
        _STYLE["figure.constrained_layout.use"] = False
    return _STYLE


# Panel rectangles in inches from the lower left, (left, bottom, width, height), one per quadrant
# of the figure; the legend of each panel sits right of it, in the quadrant's remaining 2.7 in.
_PANEL_INCHES = ((1.0, 4.95, 3.8, 3.25), (8.8, 4.95, 3.8, 3.25),
                 (1.0, 0.65, 3.8, 3.25), (8.8, 0.65, 3.8, 3.25))
TITLE_Y = 1.02  # titles at a set height: no title layout pass on each draw
LEGEND_CACHE_SIZE = 48  # rendered legends kept (about 0.2 MB each)


def _vline(ax, color: str, style: str) -> Line2D:
    return ax.axvline(1, color=color, linestyle=style, linewidth=2 if style == ":" else 1)


def _hline(ax, color: str, style: str) -> Line2D:
    return ax.axhline(1, color=color, linestyle=style, linewidth=1.5 if style == "--" else 1)


def _legend_key(handles: list[Line2D]) -> tuple:
    """Everything a legend's pixels depend on (its anchor is fixed)."""
    return tuple((h.get_label(), h.get_color(), h.get_alpha(), h.get_linestyle(), h.get_linewidth(),
                  h.get_marker(), h.get_markersize(), str(h.get_markerfacecolor()),
                  str(h.get_markeredgecolor())) for h in handles)


class ExplorerFigure:
    """The explorer's four panels on one persistent Agg figure; `draw(data)` moves the artists to
    a configuration, `png()` renders it, `mark_stale(reason)` greys the last drawing out.

    Rendering does the least work that gives the same pixels as a full draw: one panel per quadrant
    of a fixed layout, so only the panels whose inputs changed are cleared and redrawn; tick-label
    and title positions are fixed (no layout pass); invisible minor ticks are not computed; and a
    legend already rendered once with the same entries is pasted from a cache of pixels.
    """

    def __init__(self, dpi: int = PREVIEW_DPI) -> None:
        with mpl.rc_context(_style()):
            self.figure = Figure(figsize=FIGURE_SIZE, dpi=dpi, layout="none")
            FigureCanvasAgg(self.figure)
            width, height = FIGURE_SIZE
            self.axes = [self.figure.add_axes((x / width, y / height, w / width, h / height))
                         for x, y, w, h in _PANEL_INCHES]
            self._build()
            for ax in self.axes:  # whitegrid hides ticks and minor grid lines: skip computing them
                ax.xaxis.set_minor_locator(NullLocator())
                ax.yaxis.set_minor_locator(NullLocator())
                ax.xaxis.set_label_coords(0.5, -0.13)
                ax.yaxis.set_label_coords(-0.2, 0.5)
                ax.set_title(ax.get_title(), y=TITLE_Y)
        self.data: ExplorerData | None = None
        self._keys: list[tuple | None] = [None] * len(self.axes)  # inputs each panel shows
        self._dirty: set[int] = set()
        self._full_draw = True
        self._legends: OrderedDict[tuple, tuple[int, int, np.ndarray]] = OrderedDict()
        self._legend_keys: list[tuple | None] = [None] * len(self.axes)

    def _build(self) -> None:
        periods, coverage, scale, decay = self.axes
        colors, span = plots.VARIANT_COLORS, plots.SPAN_COLORS
        self.periods = {
            "original": periods.plot([], [], marker=".", color=colors["default"])[0],
            "variant": periods.plot([], [], marker=".")[0],
            "target": _hline(periods, "black", "-."),
            "train": _hline(periods, span["causal"], "--"),
            "train_2t": _hline(periods, span["bidirectional"], "--"),
            "d_crit": _vline(periods, span["causal"], ":"),
            "d_crit_2t": _vline(periods, span["bidirectional"], ":"),
        }
        periods.set(yscale="log", xlabel="dimension index i = 2n",
                    ylabel="period 2π / θ_n (tokens)", title="periods per dimension")
        periods.yaxis.set_major_locator(LogLocator(base=2, numticks=12))
        periods.yaxis.set_major_formatter(plots.TOKENS_FORMATTER)
        self.coverage = {
            law: coverage.plot([], [], marker=".", color=span[law])[0]
            for law in ("causal", "bidirectional")
        }
        self.coverage["d_crit"] = _vline(coverage, span["causal"], ":")
        self.coverage["d_crit_2t"] = _vline(coverage, span["bidirectional"], ":")
        coverage.set(ylim=(0, 1.05), title="angle coverage of T_train",
                     xlabel="dimension index i = 2n", ylabel="share of a full period covered")
        self.scales = {
            v: scale.plot([], [], marker=plots.VARIANT_MARKERS[v], markersize=8,
                          markerfacecolor="none", markeredgewidth=1.5, color=colors[v],
                          label=plots.VARIANT_LABELS[v])[0]
            for v in rope_plots.PARAMETER_FREE_VARIANTS
        }
        self.scale_target = _vline(scale, "black", "-.")
        self.scale_point = scale.plot([], [], marker="*", markersize=17, linestyle="none",
                                      markeredgecolor="black", zorder=5)[0]
        scale.set(xscale="log", yscale="log", xlabel="target length T' (tokens)",
                  ylabel="effective base scale λ (new base / base)")
        scale.xaxis.set_major_formatter(plots.TOKENS_FORMATTER)
        scale.xaxis.set_minor_formatter(NullFormatter())
        self.decay = {slot: decay.plot([], [])[0] for slot in ("default", "variant")}
        self.decay["train"] = _vline(decay, "black", "--")
        self.decay["target"] = _vline(decay, "black", "-.")
        decay.set(xscale="log", xlabel="relative distance m (tokens)",
                  ylabel="decay bound / bound at m = 0 (bin mean)")
        decay.xaxis.set_major_locator(LogLocator(base=4))
        decay.xaxis.set_major_formatter(plots.TOKENS_FORMATTER)
        self.veil = Rectangle((0, 0), 1, 1, transform=self.figure.transFigure, color="white",
                              alpha=0.72, zorder=100, visible=False)
        self.figure.patches.append(self.veil)
        self.stale_text = self.figure.text(
            0.5, 0.5, "", ha="center", va="center", fontsize=15, color="#b00000", zorder=101,
            visible=False, bbox={"facecolor": "white", "edgecolor": "#b00000"})

    # ------------------------------------------------------------------ moving the artists

    def draw(self, data: ExplorerData) -> None:
        """Move the artists of every panel whose inputs changed to `data`; clear the stale mark."""
        config = (data.head_dim, data.base, data.train_len, data.target_len, data.variant)
        keys = [config, config[:3], config, config]  # the coverage ignores T' and the variant
        panels = (self._draw_periods, self._draw_coverage, self._draw_scales, self._draw_decay)
        with mpl.rc_context(_style()):
            for index, (key, panel) in enumerate(zip(keys, panels, strict=True)):
                if key != self._keys[index]:
                    panel(data)
                    self._keys[index] = key
                    self._dirty.add(index)
        if self.veil.get_visible():
            self.veil.set_visible(False)
            self.stale_text.set_visible(False)
            self._full_draw = True
        self.data = data

    def _draw_periods(self, data: ExplorerData) -> None:
        lines, ax = self.periods, self.axes[0]
        lines["original"].set_data(data.dims, data.periods)
        lines["original"].set_label(f"original periods (base {format_base(data.base)})")
        lines["variant"].set_data(data.dims, data.variant_periods)
        lines["variant"].set(color=plots.VARIANT_COLORS[data.variant],
                             label=plots.VARIANT_LABELS[data.variant])
        for name, y, label in (("target", data.target_len, "T'"),
                               ("train", data.train_len, "T_train"),
                               ("train_2t", 2 * data.train_len, "2 T_train")):
            lines[name].set_ydata([y, y])
            lines[name].set_label(f"{label} = {plots.format_tokens(y)}")
        self._set_critical_dims(lines, data)
        ax.relim()
        ax.autoscale_view()
        ax.set_xlim(-1, data.head_dim)

    @staticmethod
    def _set_critical_dims(lines: dict[str, Line2D], data: ExplorerData) -> None:
        for name, d_c, text in (("d_crit", data.d_crit, "d_crit = {} (causal, span T)"),
                                ("d_crit_2t", data.d_crit_2t, "d'_crit = {} (bidir., span 2T)")):
            lines[name].set_xdata([d_c, d_c])
            lines[name].set_label(text.format(d_c))

    def _draw_coverage(self, data: ExplorerData) -> None:
        for law, offsets in (("causal", "[0, T)"), ("bidirectional", "(-T, T)")):
            self.coverage[law].set_data(data.dims, data.coverage[law])
            self.coverage[law].set_label(f"{law}: offsets in {offsets}")
        self._set_critical_dims(self.coverage, data)
        self.axes[1].set_xlim(-1, data.head_dim)

    def _draw_scales(self, data: ExplorerData) -> None:
        ax, targets = self.axes[2], data.scale_targets
        for variant, line in self.scales.items():
            line.set_data(targets, data.scales[variant])
            line.set_alpha(None if variant == data.variant else 0.3)
            line.set_zorder(3 if variant == data.variant else 2)
        at_target = data.scales[data.variant][targets.index(data.target_len)]
        self.scale_target.set_xdata([data.target_len, data.target_len])
        self.scale_target.set_label(f"T' = {plots.format_tokens(data.target_len)}")
        self.scale_point.set_data([data.target_len], [at_target])
        self.scale_point.set(color=plots.VARIANT_COLORS[data.variant],
                             label=f"λ_eff at T' = {at_target:.4g}")
        ax.relim()
        ax.autoscale_view()
        step = math.ceil(len(targets) / 7)  # at most 7 labelled ticks, T' among them
        first = targets.index(data.target_len) % step
        ax.xaxis.set_major_locator(FixedLocator(targets[first::step]))
        ax.set_title(f"effective base scale (T_train = {plots.format_tokens(data.train_len)})",
                     y=TITLE_Y)

    def _draw_decay(self, data: ExplorerData) -> None:
        lines, ax = self.decay, self.axes[3]
        curves = [("default", "default")]
        if data.variant != "default":
            curves.append(("variant", data.variant))
        lines["variant"].set_visible(data.variant != "default")
        for slot, variant in curves:
            lines[slot].set_data(*data.decay[variant])
            lines[slot].set(color=plots.VARIANT_COLORS[variant],
                            label=plots.VARIANT_LABELS[variant],
                            linewidth=2.2 if variant in ("ntk_critical", "diffusion_ntk") else 1.4)
        for name, x, label in (("train", data.train_len, "T_train"),
                               ("target", data.target_len, "T'")):
            lines[name].set_xdata([x, x])
            lines[name].set_label(f"{label} = {plots.format_tokens(x)}")
        ax.relim(visible_only=True)
        ax.autoscale_view()
        ax.set_xlim(1, 2 * data.target_len)
        ax.set_title(f"decay bound at T' = {plots.format_tokens(data.target_len)}", y=TITLE_Y)

    def mark_stale(self, reason: str) -> None:
        """Grey the last drawing out under `reason` (until the next `draw`)."""
        self.veil.set_visible(True)
        self.stale_text.set_text(
            f"stale: this drawing is for the last valid configuration\n{reason}")
        self.stale_text.set_visible(True)
        self._full_draw = True

    # ------------------------------------------------------------------ rendering

    def png(self) -> bytes:
        """The figure as PNG bytes (Agg, fast zlib level)."""
        canvas = self.figure.canvas
        with mpl.rc_context(_style()):
            redraw = set(range(len(self.axes))) if self._full_draw else set(self._dirty)
            cached = {i for i in redraw if self._place_legend(i)}
            if self._full_draw:
                canvas.draw()
            else:
                renderer = canvas.get_renderer()
                pixels = np.asarray(renderer.buffer_rgba())
                face = np.round(np.array(mpl.colors.to_rgba(self.figure.get_facecolor())) * 255)
                for index in sorted(redraw):
                    pixels[self._quadrant(index)] = face.astype(np.uint8)
                    self.axes[index].draw(renderer)
            self._paste_legends(redraw, cached)
        self._full_draw, self._dirty = False, set()
        rgba = np.asarray(canvas.buffer_rgba())
        buffer = io.BytesIO()
        Image.fromarray(rgba[..., :3]).save(buffer, format="png",
                                            compress_level=PNG_COMPRESS_LEVEL)
        return buffer.getvalue()

    def _quadrant(self, index: int) -> tuple[slice, slice]:
        """Rows and columns of the canvas that panel `index` and its legend own."""
        height, width = self.figure.canvas.get_width_height(physical=True)[::-1]
        row, column = divmod(index, 2)
        return (slice(row * height // 2, (row + 1) * height // 2),
                slice(column * width // 2, (column + 1) * width // 2))

    def _place_legend(self, index: int) -> bool:
        """Build the legend of panel `index`, or remove it when its pixels are cached (True).
        Under the stale veil every legend is drawn live, to be greyed out with the rest."""
        ax = self.axes[index]
        handles = [h for h in ax.get_lines() if h.get_visible()]
        self._legend_keys[index] = key = (index, _legend_key(handles))
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        if key in self._legends and not self.veil.get_visible():
            self._legends.move_to_end(key)
            return True
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0)
        return False

    def _paste_legends(self, redrawn: set[int], cached: set[int]) -> None:
        """Paste the cached legends; cache the pixels of those just drawn (not under the veil)."""
        pixels = np.asarray(self.figure.canvas.buffer_rgba())
        height = pixels.shape[0]
        for index in sorted(redrawn):
            key = self._legend_keys[index]
            if index in cached:
                top, left, block = self._legends[key]
                pixels[top:top + block.shape[0], left:left + block.shape[1]] = block
            elif not self.veil.get_visible():
                box = self.axes[index].get_legend().get_window_extent(
                    self.figure.canvas.get_renderer())
                top, left = max(int(height - box.y1) - 2, 0), max(int(box.x0) - 2, 0)
                bottom, right = math.ceil(height - box.y0) + 2, math.ceil(box.x1) + 2
                self._legends[key] = (top, left, pixels[top:bottom, left:right].copy())
                while len(self._legends) > LEGEND_CACHE_SIZE:
                    self._legends.popitem(last=False)


def render_explorer(
    head_dim: int, base: float, train_len: int, target_len: int, variant: str
) -> bytes:
    """The four panels of the explorer for one configuration, as PNG bytes (on a fresh figure;
    the widget moves one persistent `ExplorerFigure` instead).

    Raises ValueError for a configuration that cannot be drawn (a target shorter than T_train,
    no critical pair, an unknown variant).
    """
    data = explorer_data(head_dim, base, train_len, target_len, variant)
    figure = ExplorerFigure()
    figure.draw(data)
    return figure.png()
