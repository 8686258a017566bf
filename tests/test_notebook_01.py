"""Notebook 01 runs headless through papermill at the smoke preset, writes its figures and prints
the LLaDA-8B lambda tables of LongLLaDA and UltraLLaDA."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import nbformat
import papermill
import pytest

from minillada.figures import plots, rope_plots
from minillada.figures.widgets import rope_explorer
from minillada.rope.formulas import critical_dim, ntk_scale
from minillada.rope.laws import ROPE_VARIANTS
from minillada.training.presets import get_preset

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_rope_positional_analysis.ipynb"
FIGURES = ("01_rope_periods", "01_angle_coverage", "01_effective_scale", "01_decay_bound")
# (method, target length) -> lambda, as published (LongLLaDA; UltraLLaDA), to 2 decimals or 1.
LLADA_LAMBDAS = {
    ("ntk_critical", 8192): "3.40",
    ("ntk_critical", 16384): "13.60",
    ("ntk_critical", 24576): "30.60",
    ("ntk_critical", 32768): "54.40",
    ("diffusion_ntk", 8192): "3.53",
    ("diffusion_ntk", 16384): "12.54",
    ("diffusion_ntk", 32768): "44.54",
    ("diffusion_ntk", 65536): "158.2",
    ("diffusion_ntk", 131072): "561.9",
}


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> tuple[nbformat.NotebookNode, Path]:
    root = tmp_path_factory.mktemp("nb01")
    with pytest.MonkeyPatch.context() as patch:  # the kernel refuses a figure with a flawed layout
        patch.setenv("MINILLADA_STRICT_FIGURES", "1")
        _execute(root)
    return nbformat.read(root / "executed.ipynb", as_version=4), root


def _execute(root: Path) -> None:
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(root / "executed.ipynb"),
        parameters={"preset": "smoke", "figures_dir": str(root / "figures"),
                    "output_dir": str(root / "output")},
        kernel_name="python3",
        cwd=str(NOTEBOOK.parent),
        progress_bar=False,
        execution_timeout=120,  # a hung cell fails the test instead of blocking the suite
    )


def table_rows(notebook: nbformat.NotebookNode, tag: str) -> dict[tuple[str, int], list[str]]:
    """The printed DataFrame of the cell tagged `tag`: (method, target_len) -> remaining columns."""
    (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    (text,) = [o["data"]["text/plain"] for o in cell.outputs if o.get("output_type") ==
               "execute_result"]
    header, *lines = text.splitlines()
    assert header.split() == ["method", "critical_dim", "target_len", "scale", "new_base"]
    rows = {}
    for line in lines:
        _, method, d_crit, target, *rest = line.split()
        rows[method, int(target)] = [d_crit, *rest]
    return rows


def test_notebook_metadata_and_parameters_cell():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert notebook.metadata.kernelspec.name == "python3"
    assert notebook.metadata.kernelspec.language == "python"
    assert notebook.metadata.language_info.name == "python"
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and 'preset = "cpu"' in tagged[0].source
    assert not any(c.get("outputs") for c in notebook.cells if c.cell_type == "code")


def test_figures_are_written(executed):
    _, root = executed
    for name in FIGURES:
        data = (root / "figures" / "smoke" / f"{name}.png").read_bytes()  # a non-cpu preset
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 1000 and height >= 500 and len(data) > 30_000, name
    written = sorted(path.name for path in (root / "figures" / "smoke").iterdir())
    assert written == sorted(f"{name}.png" for name in FIGURES)  # no temporary file left behind


def test_llada_table_holds_the_published_lambdas(executed):
    rows = table_rows(executed[0], "llada-lambda-table")
    for (method, target), published in LLADA_LAMBDAS.items():
        d_crit, scale, _ = rows[method, target]
        assert d_crit == {"ntk_critical": "64", "diffusion_ntk": "70"}[method]
        decimals = len(published.split(".")[1])
        assert f"{float(scale):.{decimals}f}" == published, (method, target, scale)


def test_mini_table_follows_the_closed_form(executed):
    smoke = get_preset("smoke")  # the notebook's preset: targets 16x and 32x T_train
    d, base, train = smoke.head_dim, smoke.rope_theta, smoke.train_len
    rows = table_rows(executed[0], "mini-lambda-table")
    assert sorted(rows) == sorted((m, t) for m in ("ntk_critical", "diffusion_ntk")
                                  for t in (16 * train, 32 * train))
    for (method, target), (d_crit, scale, new_base) in rows.items():
        span = 2.0 if method == "diffusion_ntk" else 1.0
        expected_d_crit = 2 * math.ceil(d / 2 * math.log(span * train / (2 * math.pi), base))
        expected = (span * target / (2 * math.pi)) ** (d / expected_d_crit) / base
        assert int(d_crit) == expected_d_crit
        assert float(scale) == pytest.approx(expected, abs=0.006)
        assert float(new_base) == pytest.approx(expected * base, abs=0.06)


# ----------------------------------------------------------------------------- the package parts


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("default", lambda d, b, t, s: 1.0),
        ("ntk", lambda d, b, t, s: s ** (d / (d - 2))),  # the NTK-aware base multiplier
        ("ntk_critical", lambda d, b, t, s: ntk_scale(d, b, t, s * t)),
        ("diffusion_ntk", lambda d, b, t, s: ntk_scale(d, b, t, s * t, span=2.0)),
        # PI divides theta_c by s: the base scale doing that is s^(d / d_c).
        ("linear", lambda d, b, t, s: s ** (d / critical_dim(d, b, t))),
        # YaRN's beta_slow = 1 boundary is the critical pair: fully interpolated, like PI.
        ("yarn", lambda d, b, t, s: s ** (d / critical_dim(d, b, t))),
    ],
)
def test_effective_scale_is_lambda_for_base_changes_and_matches_pi_otherwise(variant, expected):
    for d, b, t in ((128, 500000.0, 4096), (64, 500.0, 128), (32, 30.0, 32)):
        factors = (2, 8, 32)
        curve = rope_plots.effective_scale_curve(variant, d, b, t, [f * t for f in factors])
        assert curve == pytest.approx([expected(d, b, t, f) for f in factors], rel=1e-5)


def test_effective_scale_needs_a_critical_pair():
    with pytest.raises(ValueError, match="every pair already turns a full period"):
        # every pair turns within T
        rope_plots.effective_scale_curve("ntk", 16, 10.0, 32768, [65536])


def test_save_figure_is_atomic_and_stable(tmp_path):
    plots.use_style()
    fig, (ax,) = plots.panels(1)
    ax.plot([0, 1], [1, 0])
    first = plots.save_figure(fig, tmp_path / "sub" / "line.png").read_bytes()
    assert plots.save_figure(fig, tmp_path / "sub" / "line.png").read_bytes() == first
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["line.png"]
    with pytest.raises(ValueError, match=r"does not end in \.png"):
        plots.save_figure(fig, tmp_path / "line.svg")
    with pytest.raises(ValueError, match="count >= 1"):
        plots.panels(0)


def test_every_variant_has_one_fixed_style():
    assert set(plots.VARIANT_COLORS) == set(ROPE_VARIANTS)
    assert set(plots.VARIANT_MARKERS) == set(plots.VARIANT_LABELS) == set(ROPE_VARIANTS)
    assert len(set(plots.VARIANT_COLORS.values())) == len(ROPE_VARIANTS)


def test_explorer_draws_redraws_and_explains_bad_settings():
    explorer = rope_explorer(head_dim=32, base=30.0, train_len=32, target_len=512)
    boxes, message, image = explorer.children
    controls = {c.description: c for box in boxes.children for c in box.children}
    assert list(controls) == ["base b", "head dim d", "T_train", "target T'", "variant", "view"]
    assert controls["view"].value == "law"  # the RoPE law first; the shipped models on demand
    assert controls["variant"].value == "diffusion_ntk" and controls["target T'"].value == 512
    first = image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and message.value == ""
    controls["variant"].value = "linear"
    assert image.value != first and message.value == ""
    drawn = image.value
    controls["T_train"].value = 1024  # longer than the 512 target: not drawable
    assert "shorter than T_train 1024" in message.value
    assert image.value != drawn  # the last drawing, greyed out under a stale banner
    controls["T_train"].value = 32
    assert message.value == "" and image.value == drawn
    with pytest.raises(ValueError, match="unknown variant 'longrope'"):
        rope_explorer(variant="longrope")
    with pytest.raises(ValueError, match="power of two"):
        rope_explorer(train_len=100)
