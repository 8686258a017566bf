"""The walkthrough and the study notebooks 02-05 execute headless through papermill at the smoke
preset with tiny parameters (recommenders-style), and write the figures and result files they
promise. One shared runs folder: notebook 02 trains the base model, the others reuse it."""

from __future__ import annotations

import json
import math
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
        ["02_pretrain_curves", "02_base_passkey"],
        ["02_base_ppl.csv", "02_base_passkey.csv", "02_base_summary.json"],
    ),
    "03_training_free_extension": (
        {"variants": ["default", "ntk_critical", "diffusion_ntk"],
         "retrieval_variants": ["default", "diffusion_ntk"]},
        ["03_loss_grid", "03_ppl", "03_retrieval_heatmaps", "03_local_perception"],
        ["03_loss_grid.csv", "03_ppl.csv", "03_retrieval.csv", "03_training_free_summary.json"],
    ),
    "04_masking_ablation": (
        {"packings": ["direct", "adaptive"], "leakage_rows": 2},
        ["04_training_curves", "04_leakage", "04_retrieval_heatmaps"],
        ["04_leakage.csv", "04_loss_grid.csv", "04_ppl.csv", "04_retrieval.csv",
         "04_masking_summary.json"],
    ),
    "05_long_context_eval": (
        {"tasks": ["niah"], "task_depths": [50.0]},
        ["05_loss_ppl", "05_passkey_heatmaps", "05_retrieval_by_length"],
        ["05_loss.csv", "05_ppl.csv", "05_passkey.csv", "05_ruler.csv", "summary.md"],
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
    # One base model for every notebook; 04's adaptive run is the one 00 and 05 reuse.
    assert runs == ["base", "extend-diffusion_ntk-adaptive", "extend-diffusion_ntk-direct",
                    "extend-ntk_critical-eod"]


def test_summary_reports_the_numbers_of_the_result_tables(study):
    summary = (study / "results" / "smoke" / "summary.md").read_text()
    assert "reported: UltraLLaDA" in summary and "ours: mini-UltraLLaDA" in summary
    # The main table's PPL at T_train is exp(mean chunk loss) of 05_ppl.csv at T_train.
    ppl = pd.read_csv(study / "results" / "smoke" / "05_ppl.csv")
    t_train = int(ppl["length"].min())
    header, _, *rows = [line for line in summary.splitlines() if line.startswith("| ")]
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    row = next(r for r in rows if r.startswith("| PPL at T_train |"))
    cells = dict(zip(columns, (cell.strip() for cell in row.strip("|").split("|")), strict=True))
    for name in ("base (direct)", "mini-UltraLLaDA"):
        loss = ppl[(ppl["model"] == name) & (ppl["length"] == t_train)]["loss"].mean()
        assert cells[f"ours: {name}"] == f"{math.exp(loss):.2f}", name
    # The base model's passkey line is the mean exact match of 02_base_passkey.csv.
    passkey = pd.read_csv(study / "results" / "smoke" / "02_base_passkey.csv")
    base = json.loads((study / "results" / "smoke" / "02_base_summary.json").read_text())
    assert base["passkey_exact"] == round(100 * passkey["exact"].mean(), 2)
    assert f"{base['passkey_exact']}% exact over {len(passkey)} samples" in summary
    findings = summary.split("## Findings")[1].strip().splitlines()
    assert len(findings) == 3 and all("; verdict: " in line for line in findings)
