"""`minillada reproduce` on a folder of tiny notebooks made here (one kernel start per test)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from minillada.cli import main
from minillada.commands.reproduce import (
    computes_everything,
    find_study_notebooks,
    reused_committed_tables,
    select_notebooks,
)

PARAMETERS = 'preset = "unset"\nfigures_dir = "unset"\noutput_dir = "unset"'


def write_notebook(path: Path, source: str) -> None:
    """A notebook with a tagged parameters cell followed by `source`."""
    parameters = new_code_cell(PARAMETERS)
    parameters.metadata["tags"] = ["parameters"]
    notebook = new_notebook(cells=[parameters, new_code_cell(source)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, path)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "00_walkthrough.ipynb", 'raise RuntimeError("00 must not run")')
    write_notebook(
        folder / "01_echo.ipynb",
        "from pathlib import Path\n"
        "Path(figures_dir, 'echo.txt').write_text(f'{preset} {Path.cwd()} {output_dir}')",
    )
    # Numbers past the study's 02-05: nothing to train before them.
    write_notebook(folder / "06_fail.ipynb", 'raise RuntimeError("boom")')
    write_notebook(folder / "07_after.ipynb", "from pathlib import Path\n"
                                              "Path(figures_dir, 'after.txt').write_text('ran')")
    (folder / "notes.ipynb").write_text("{}")  # not a study notebook: never read
    return folder


def run(study: Path, *options: str) -> int:
    root = study.parent
    return main(["reproduce", "--no-estimate", "--notebook-dir", str(study),
                 "--executed", str(root / "out"),
                 "--figures", str(root / "figures"), "--results", str(root / "results"),
                 "--runs", str(root / "runs"), *options])


def test_parameters_reach_the_notebook_and_the_executed_copy_is_written(study, capsys):
    assert run(study, "--preset", "smoke", "--notebooks", "01") == 0
    root = study.parent
    # A design other than cpu-seeds writes into figures/<design>, as the notebooks do themselves.
    echoed = (root / "figures" / "smoke" / "echo.txt").read_text().split()
    assert echoed == ["smoke", str(study), str(root / "out")]  # run from its own folder
    executed = nbformat.read(root / "out" / "01_echo.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'preset = "smoke"' in injected[0].source
    assert "runs_dir" not in injected[0].source  # only the parameters the notebook declares
    assert executed.metadata.papermill.parameters["preset"] == "smoke"
    assert "01_echo.ipynb done in" in capsys.readouterr().out
    assert sorted(p.name for p in (root / "out").iterdir()) == ["01_echo.ipynb"]


def test_a_failing_notebook_stops_the_run_and_is_named(study, capsys):
    assert run(study, "--notebooks", "06,07") == 1
    error = capsys.readouterr().err
    assert "06_fail.ipynb failed" in error and "RuntimeError: boom" in error
    assert (study.parent / "out" / "06_fail.ipynb").exists()
    assert not (study.parent / "figures" / "after.txt").exists()


def test_discovery_skips_the_walkthrough_and_other_files(study):
    assert list(find_study_notebooks(study)) == ["01", "06", "07"]
    assert select_notebooks(find_study_notebooks(study), "07, 01") == [
        study / "01_echo.ipynb", study / "07_after.ipynb"
    ]


def test_bad_selection_and_folders_fail_before_any_work(study, tmp_path, capsys):
    assert run(study, "--notebooks", "01,04") == 2
    assert capsys.readouterr().err == (
        "minillada reproduce: error: unknown notebook number(s) ['04']; available: 01,06,07\n")
    assert run(study, "--notebooks", ",") == 2
    assert "available" in capsys.readouterr().err
    assert not (study.parent / "out").exists()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_study_notebooks(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no study notebook"):
        find_study_notebooks(tmp_path / "empty")
    with pytest.raises(SystemExit):
        run(study, "--preset", "huge")


def test_study_folder_is_the_checkout_inside_it_and_minillada_study_elsewhere(tmp_path):
    from minillada.commands.reproduce import checkout_root, default_notebook_dir, default_study_dir

    root = checkout_root()
    assert root is not None and (root / "pyproject.toml").is_file()  # tests run from a checkout
    assert default_study_dir(root / "notebooks") == root
    assert default_study_dir(tmp_path) == tmp_path / "minillada-study"
    assert default_notebook_dir() == root / "notebooks"


def test_notebook_parameters_are_checked_before_any_work(study, capsys):
    assert run(study, "--notebooks", "01", "-p", "presett=smoke") == 2
    error = capsys.readouterr().err
    assert "-p presett: no selected notebook declares it" in error
    assert run(study, "--notebooks", "01", "-p", "figures_dir=/tmp/x") == 2
    assert "set it with --figures instead" in capsys.readouterr().err
    assert run(study, "--notebooks", "01", "-p", "no value") == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert not (study.parent / "out").exists()


def test_unknown_injected_names_are_refused():
    from minillada.claims.notebook_parameters import (
        check_parameters,
        parse_assignment,
        unknown_parameters,
    )

    namespace = {"preset": "smoke", "presett": "smoke", "In": [], "_i1": "", "get_ipython": 0,
                 "check_parameters": check_parameters, "pytest": pytest}  # imports are not
    assert unknown_parameters(namespace, ["preset", "seed"]) == ["presett"]
    with pytest.raises(ValueError, match=r"\['presett'\]; this notebook takes preset, seed"):
        check_parameters(namespace, ["preset", "seed"])
    assert parse_assignment("variants=[default, ntk]") == ("variants", ["default", "ntk"])
    assert parse_assignment("repeats=5") == ("repeats", 5)


def test_designs_other_than_the_committed_one_write_into_their_own_folders(tmp_path):
    from minillada.claims.design import preset_folder
    from minillada.claims.study import Study

    assert preset_folder("../figures", "cpu-seeds") == Path("../figures")
    assert preset_folder("../figures", "cpu") == Path("../figures/cpu")
    assert preset_folder(tmp_path / "figures" / "smoke", "smoke") == tmp_path / "figures" / "smoke"
    study = Study.create("smoke", tmp_path / "runs", tmp_path / "results", tmp_path / "figures")
    assert (study.runs, study.results, study.figures, study.committed_results) == (
        tmp_path / "runs" / "smoke", tmp_path / "results" / "smoke",
        tmp_path / "figures" / "smoke", tmp_path / "results")
    again = Study.create("smoke", tmp_path / "runs", study.results, study.figures)
    assert (again.results, again.figures) == (study.results, study.figures)  # never doubled
    assert again.committed_results == tmp_path / "results"
    committed = Study.create("cpu-seeds", tmp_path / "runs", tmp_path / "results",
                             tmp_path / "figures")
    assert (committed.results, committed.figures, committed.runs) == (
        tmp_path / "results", tmp_path / "figures", tmp_path / "runs" / "cpu")
    one = Study.create("cpu", tmp_path / "runs", tmp_path / "results", tmp_path / "figures")
    assert one.runs == committed.runs  # one preset, one folder of runs: shared


def test_only_a_run_that_computes_everything_times_the_next_estimate(tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    assert computes_everything(runs, results, "cpu")  # nothing there yet
    (results / "smoke" / "b1").mkdir(parents=True)
    (results / "smoke" / "b1" / "base_ppl.csv.inputs.json").write_text("{}")
    assert computes_everything(runs, results, "cpu")  # another design's tables
    (results / "b11").mkdir()
    (results / "b11" / "ppl.csv.inputs.json").write_text("{}")  # a committed table, reused
    assert not computes_everything(runs, results, "cpu")
    (results / "b11" / "ppl.csv.inputs.json").unlink()
    (runs / "cpu" / "base-1" / "model").mkdir(parents=True)
    (runs / "cpu" / "base-1" / "model" / "config.json").write_text("{}")
    assert not computes_everything(runs, results, "cpu")
    assert computes_everything(runs, results, "smoke")


def test_a_run_that_reused_committed_tables_does_not_time_the_next_estimate(tmp_path):
    committed, own = tmp_path / "results", tmp_path / "results" / "cpu"
    (committed / "b11").mkdir(parents=True)
    (committed / "b11" / "ppl.csv.inputs.json").write_text('{"model": "abc"}')
    assert not reused_committed_tables(own, committed)  # nothing computed yet
    (own / "b11").mkdir(parents=True)
    (own / "b11" / "ppl.csv.inputs.json").write_text('{"model": "other"}')  # another CPU's model
    assert not reused_committed_tables(own, committed)
    (own / "b11" / "loss.csv.inputs.json").write_text("{}")  # no committed twin
    assert not reused_committed_tables(own, committed)
    (own / "b11" / "ppl.csv.inputs.json").write_text('{"model": "abc"}')  # a bit-identical model
    assert reused_committed_tables(own, committed)
    assert not reused_committed_tables(committed, committed)  # the committed design itself
