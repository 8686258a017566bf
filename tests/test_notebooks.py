"""The walkthrough and the study notebooks 02-05 execute headless through papermill at the smoke
preset with tiny parameters (recommenders-style), and write the figures and result files they
promise. One shared runs folder: notebook 02 trains the base model, the others reuse it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# Per notebook: tiny parameters, the figures and the result files it must write.
CASES = {
    "02_pretrain_base": (
        {"retrieval_repeats": 1},
        ["02_pretrain_curves", "02_base_retrieval"],
        ["02_base_ppl.csv", "02_base_retrieval.csv", "02_base_summary.json"],
    ),
    "03_training_free_extension": (
        {"variants": ["default", "ntk_critical", "diffusion_ntk"]},
        ["03_loss_grid", "03_ppl", "03_retrieval_heatmaps", "03_retrieval_by_length",
         "03_local_perception"],
        ["03_loss_grid.csv", "03_ppl.csv", "03_retrieval.csv", "03_training_free_summary.json"],
    ),
    "04_masking_ablation": (
        {"packings": ["direct", "adaptive"], "seeds": [0], "leakage_rows": 2},
        ["04_training_curves", "04_leakage", "04_retrieval"],
        ["04_leakage.csv", "04_loss_grid.csv", "04_retrieval.csv", "04_interference.csv",
         "04_masking_summary.json"],
    ),
    "05_long_context_eval": (
        {"tasks": ["niah_multikey"], "task_depths": [50.0]},
        ["05_ppl", "05_headline"],
        ["05_ppl.csv", "05_headline.csv", "05_control.csv", "summary.md",
         "claims.json"],
    ),
    "00_walkthrough": ({}, ["00_periods", "00_walkthrough_loss"], ["00_walkthrough_loss.csv"]),
}


def declared_in_check_cell(path: Path) -> list[str]:
    """The names the cell after the parameters cell passes to check_parameters."""
    cells = nbformat.read(path, as_version=4).cells
    index = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    source = cells[index + 1].source
    assert source.startswith("from minillada.parameters import check_parameters"), path.name
    listed = source.split("check_parameters(globals(), [", 1)[1].split("])", 1)[0]
    return [name.strip().strip('"') for name in listed.split(",")]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("0*.ipynb")), ids=lambda p: p.stem)
def test_every_notebook_checks_exactly_the_parameters_it_declares(path):
    assert declared_in_check_cell(path) == list(papermill.inspect_notebook(str(path)))


def test_a_mistyped_parameter_stops_the_notebook_at_once_listing_the_parameters(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOKS.parent))  # the kernel imports this checkout
    start = time.perf_counter()
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(NOTEBOOKS / "01_rope_positional_analysis.ipynb"), str(tmp_path / "01.ipynb"),
            parameters={"presett": "smoke", "preset": "smoke", "figures_dir": str(tmp_path)},
            kernel_name="python3", language="python", cwd=str(NOTEBOOKS), progress_bar=False)
    assert time.perf_counter() - start < 30
    assert error.value.ename == "ValueError"
    assert error.value.evalue == ("unknown notebook parameter(s) ['presett']; this notebook takes "
                                  "preset, figures_dir, output_dir, seed, llada_targets")
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "smoke").exists()  # nothing ran


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    (root / "out").mkdir()
    with pytest.MonkeyPatch.context() as patch:  # the kernels inherit the test token cache
        patch.setenv("MINILLADA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        patch.setenv("PYTHONPATH", str(NOTEBOOKS.parent))  # the kernels import this checkout
        for name, (parameters, _, _) in CASES.items():
            papermill.execute_notebook(
                str(NOTEBOOKS / f"{name}.ipynb"), str(root / "out" / f"{name}.ipynb"),
                parameters={"preset": "smoke", "seed": 0, "figures_dir": str(root / "figures"),
                            "output_dir": str(root / "out"), "runs_dir": str(root / "runs"),
                            "results_dir": str(root / "results"), **parameters},
                kernel_name="python3", language="python", cwd=str(NOTEBOOKS), progress_bar=False)
    return root


@pytest.mark.parametrize("name", list(CASES))
def test_notebook_writes_its_figures_and_results(study, name):
    _, figures, results = CASES[name]
    for figure in figures:
        path = study / "figures" / "smoke" / f"{figure}.png"  # not figures/: a non-cpu preset
        assert path.stat().st_size > 10_000, path
    for result in results:
        path = study / "results" / "smoke" / result
        assert path.is_file(), path
        if path.suffix == ".csv":
            assert len(pd.read_csv(path)) > 0, path
    executed = nbformat.read(study / "out" / f"{name}.ipynb", as_version=4)
    tags = [cell.metadata.get("tags", []) for cell in executed.cells]
    assert ["parameters"] in tags and ["injected-parameters"] in tags


def test_runs_are_shared_and_reused(study):
    runs = sorted(p.name.rsplit("-", 1)[0] for p in (study / "runs" / "smoke").iterdir())
    # One base model for every notebook; 04's adaptive runs (with and without retrieval rows)
    # are the ones 00 and 05 reuse.
    assert runs == ["base", "extend-diffusion_ntk-adaptive", "extend-diffusion_ntk-adaptive",
                    "extend-diffusion_ntk-direct"]


def test_summary_and_claims_are_rendered_from_the_result_tables(study):
    results = study / "results" / "smoke"
    claims = json.loads((results / "claims.json").read_text())
    assert [c["id"] for c in claims] == ["direct_extrapolation", "training_free",
                                         "post_trained_retrieval", "packing"]
    assert all(c["verdict"] in ("reproduced", "refuted", "unclear") for c in claims)
    # The headline claim's numbers are the exact-match rates of 05_headline.csv.
    headline = pd.concat([pd.read_csv(results / "05_headline.csv"),
                          pd.read_csv(results / "05_control.csv")])
    claim = next(c for c in claims if c["id"] == "post_trained_retrieval")
    for key, value in claim["values"].items():
        model, length = key.rsplit(" @ ", 1)
        rows = headline[(headline["model"] == model) & (headline["length"] == int(length))]
        assert value == round(100 * rows["exact"].mean(), 2) and claim["n"][key] == len(rows)
    summary = (results / "summary.md").read_text()
    assert all(f"**{c['verdict']}**: {c['claim']}" in summary for c in claims)
    base = json.loads((results / "02_base_summary.json").read_text())
    retrieval = pd.read_csv(results / "02_base_retrieval.csv")
    for task, rows in retrieval.groupby("task"):
        assert base[f"{task} exact inside T_train"].startswith(f"{100 * rows['exact'].mean():.1f}%")
        assert f"(n={len(rows)})" in base[f"{task} exact inside T_train"]
