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

# Per notebook: tiny parameters, the figures and the result files it must write (the smoke
# design: bases 1 and 2, post-training seed 1, every arm on base 1).
CASES = {
    "02_pretrain_base": (
        {},
        ["02_pretrain_curves", "02_base_retrieval"],
        ["b1/base_ppl.csv", "b1/gate.csv", "b2/gate.csv", "gate.csv", "02_base_summary.json"],
    ),
    "03_training_free_extension": (
        {"variants": ["default", "ntk_critical", "diffusion_ntk"]},
        ["03_loss_grid", "03_ppl", "03_retrieval_heatmaps", "03_local_perception",
         "03_training_free_claim"],
        ["b1/loss_grid.csv", "b1/ppl.csv", "b2/local_perception.csv", "b2/loss_claim.csv",
         "b2/selection.csv", "03_training_free_summary.json"],
    ),
    "04_masking_ablation": (
        {"leakage_rows": 2},
        ["04_training_curves", "04_retrieval", "04_leakage", "04_position_restart"],
        ["b1/adaptive-s1/passkey-1024.csv", "b2/direct-s1/decoys2-1024.csv",
         "b1/eod_restart-s1/leakage-1024.csv", "04_masking_summary.json"],
    ),
    "05_long_context_eval": (
        {},
        ["05_headline", "05_comparators", "05_ppl"],
        ["b2/base/passkey-2048.csv", "b1/free/passkey-1024.csv", "b1/adaptive-s1/passkey-2048.csv",
         "b2/adaptive-s1/niah_multikey-1024.csv", "b1/default_rope-s1/passkey-1024.csv",
         "b1/ppl_models.csv", "summary.md", "claims.json"],
    ),
    "00_walkthrough": (
        {},
        ["00_periods", "00_relative_distances", "00_swept_angles", "00_packing_masks",
         "00_walkthrough_loss", "00_sampler", "00_retrieval_attention", "00_retrieval_prompt"],
        ["00_walkthrough_loss.csv", "00_walkthrough_retrieval.csv"],
    ),
}


def declared_in_check_cell(path: Path) -> list[str]:
    """The names the cell after the parameters cell passes to check_parameters."""
    cells = nbformat.read(path, as_version=4).cells
    index = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    source = cells[index + 1].source
    assert source.startswith("from minillada.claims.notebook_parameters import "
                             "check_parameters"), path.name
    listed = source.split("check_parameters(globals(), [", 1)[1].split("])", 1)[0]
    return [name.strip().strip('"') for name in listed.split(",")]


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("0*.ipynb")), ids=lambda p: p.stem)
def test_every_notebook_checks_exactly_the_parameters_it_declares(path):
    assert declared_in_check_cell(path) == list(papermill.inspect_notebook(str(path)))


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("0*.ipynb")), ids=lambda p: p.stem)
def test_no_notebook_holds_two_identical_code_cells(path):
    sources = [cell.source.strip() for cell in nbformat.read(path, as_version=4).cells
               if cell.cell_type == "code"]
    repeated = sorted({source for source in sources if sources.count(source) > 1})
    assert not repeated, f"{path.name} repeats code cell(s): {repeated}"


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
                                  "preset, figures_dir, output_dir, llada_targets")
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "smoke").exists()  # nothing ran


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    (root / "out").mkdir()
    with pytest.MonkeyPatch.context() as patch:  # the kernels inherit the test token cache
        patch.setenv("MINILLADA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        patch.setenv("PYTHONPATH", str(NOTEBOOKS.parent))  # the kernels import this checkout
        patch.setenv("MINILLADA_STRICT_FIGURES", "1")  # a figure with a flawed layout fails
        for name, (parameters, _, _) in CASES.items():
            papermill.execute_notebook(
                str(NOTEBOOKS / f"{name}.ipynb"), str(root / "out" / f"{name}.ipynb"),
                parameters={"preset": "smoke", "figures_dir": str(root / "figures"),
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
    # One pre-training run per base and one post-training run per (arm, base, seed) of the
    # design, whichever notebook needed it first; 00 and 05 reuse 04's adaptive runs.
    assert runs == ["base", "base", *sorted(
        ["extend-adaptive"] * 2 + ["extend-direct"] * 2 + ["extend-eod"] * 2
        + ["extend-direct_restart", "extend-eod_restart", "extend-default_rope",
           "extend-short_retrieval"])]


def test_summary_and_claims_are_rendered_from_the_result_tables(study):
    results = study / "results" / "smoke"
    claims = json.loads((results / "claims.json").read_text())
    assert [c["id"] for c in claims] == ["direct_extrapolation", "training_free",
                                         "post_trained_retrieval", "rope_law", "long_rows",
                                         "packing_adaptive", "packing_eod"]
    # Two bases cannot decide a claim: every verdict says so.
    assert all(c["verdict"] == "unclear" and "cannot decide" in c["note"] for c in claims)
    assert all(c["provenance"]["corpus_sha256"] for c in claims)
    # Each run's number is the exact-match rate of its own result table.
    headline = next(c for c in claims if c["id"] == "post_trained_retrieval")
    for run in headline["estimates"]["mini-UltraLLaDA @ 1024"]["per_run"]:
        table = pd.read_csv(results / f"b{run['base']}/adaptive-s{run['seed']}/passkey-1024.csv")
        assert run["value"] == pytest.approx(100 * table["exact"].mean())
        assert run["n"] == len(table)
    for run in headline["estimates"]["base (direct) @ 2048"]["per_run"]:
        table = pd.read_csv(results / f"b{run['base']}/base/passkey-2048.csv")
        assert run["value"] == pytest.approx(100 * table["exact"].mean())
    summary = (results / "summary.md").read_text()
    assert all(f"**{c['verdict']}**: {c['claim']}" in summary for c in claims)
    base = json.loads((results / "02_base_summary.json").read_text())["bases"]
    retrieval = pd.read_csv(results / "b1/gate.csv")
    retrieval = retrieval[retrieval["method"] == "generate"]
    assert (retrieval["steps"] == retrieval["gen_length"]).all()  # one token a step
    gate = pd.read_csv(results / "gate.csv").set_index("base")
    assert base["1"]["gate"] == ("passes" if gate.loc[1, "passed"] else
                                 "FAILS: outside the study's population")
    for task, rows in retrieval.groupby("task"):
        entry = base["1"][f"{task} exact inside T_train"]
        assert entry.startswith(f"{100 * rows['exact'].mean():.1f}%")
        assert f"(n={len(rows)})" in entry


def test_the_walkthrough_shows_the_phenomenon_with_the_shipped_models(study):
    """In its window the shipped base retrieves, at 16x with RoPE unchanged it does not, and
    mini-UltraLLaDA does again; the sampler's picture holds real tokens, not blanks."""
    table = pd.read_csv(study / "results" / "smoke" / "00_walkthrough_retrieval.csv")
    right = table.groupby("model", sort=False)["exact"].agg(["sum", "size"])
    inside, direct, ultra = right.itertuples()
    assert inside.Index.startswith("base, inside") and inside.sum >= inside.size - 1
    assert direct.Index.startswith("base at 16x") and direct.sum <= 1
    assert ultra.Index.startswith("mini-UltraLLaDA") and ultra.sum >= ultra.size - 1
    executed = nbformat.read(study / "out" / "00_walkthrough.ipynb", as_version=4)
    printed = "".join(output.get("text", "") for cell in executed.cells
                      for output in cell.get("outputs", []))
    sampled = printed.split("output: ", 1)[1].split(" | ", 1)[0]
    assert sum(character.isalnum() for character in sampled) >= 8  # readable text, not blanks
