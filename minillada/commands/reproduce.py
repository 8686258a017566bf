"""`minillada reproduce`: run the study notebooks in order through papermill.

The study notebooks are `notebooks/0[1-9]_*.ipynb` (00 is the walkthrough, not part of the
reproduction). Each runs with its own folder as working directory, as in JupyterLab, and receives
the parameters every study notebook declares in its `parameters` cell:

    preset       name of a design in minillada.claims.design (its training preset, bases,
                 seeds, arms)
    figures_dir  absolute path of the folder for its figures
    output_dir   absolute path of the folder for the executed notebooks
    runs_dir     absolute path of the training runs (the notebooks use runs_dir/<training preset>)
    results_dir  absolute path of the folder for result tables and results/summary.md

A notebook receives only the parameters it declares. Before the notebooks, every training run of
the design (its bases, then its post-training runs) is trained or reused, with a progress bar over
the runs and its ETA; an interrupted reproduction continues with the run it stopped in. Everything
is written under one study folder (`--out`): the repository when run inside its checkout, else
`./minillada-study`. The committed design `cpu-seeds` writes to figures/ and results/ there; other
designs write to figures/<design>/ and results/<design>/, so a smoke or one-seed run never
overwrites the committed study (and reuses its tables where its models are bit-identical). The
notebooks are read from the checkout's notebooks/ or, for an installed package, from the copy the
wheel installs (`<prefix>/share/minillada/notebooks`).

Executed copies keep the notebook's name in `output_dir`; a failed run stops the reproduction with
a message naming the notebook, whose executed copy holds the traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import minillada
from minillada.claims.design import COMMITTED_DESIGN, DESIGNS, get_design, preset_folder
from minillada.claims.notebook_parameters import parse_assignment
from minillada.common.folders import check_writable

FLAG_OF_PARAMETER = {"output_dir": "executed", "figures_dir": "figures", "runs_dir": "runs",
                     "results_dir": "results"}
STUDY_NOTEBOOK = re.compile(r"^(0[1-9])_.+\.ipynb$")
KERNEL = "python3"


def checkout_root() -> Path | None:
    """The source checkout this package runs from (editable install or the repository itself)."""
    root = Path(minillada.__file__).resolve().parent.parent
    return root if (root / "notebooks").is_dir() and (root / "pyproject.toml").is_file() else None


def default_notebook_dir() -> Path:
    """The checkout's notebooks/, else the copy installed with the wheel."""
    root = checkout_root()
    return root / "notebooks" if root else Path(sys.prefix, "share", "minillada", "notebooks")


def default_study_dir(cwd: Path | None = None) -> Path:
    """The checkout when `cwd` lies inside it, else `cwd/minillada-study`."""
    cwd = (cwd or Path.cwd()).resolve()
    root = checkout_root()
    return root if root is not None and cwd.is_relative_to(root) else cwd / "minillada-study"


def find_study_notebooks(folder: Path) -> dict[str, Path]:
    """The study notebooks in `folder`, keyed by their two-digit number, in order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"notebook folder {str(folder)!r} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        match = STUDY_NOTEBOOK.match(path.name)
        if match is None:
            continue
        number = match.group(1)
        if number in found:
            raise ValueError(f"two study notebooks numbered {number}: {found[number].name}, "
                             f"{path.name}")
        found[number] = path
    if not found:
        raise FileNotFoundError(f"no study notebook (0[1-9]_*.ipynb) in {str(folder)!r}")
    return found


def select_notebooks(available: dict[str, Path], selection: str | None) -> list[Path]:
    """The notebooks named by a comma-separated list of numbers ("01,03"), or all of them."""
    if selection is None:
        return list(available.values())
    numbers = [part.strip() for part in selection.split(",") if part.strip()]
    unknown = [n for n in numbers if n not in available]
    if unknown or not numbers:
        raise ValueError(f"unknown notebook number(s) {unknown or selection!r}; "
                         f"available: {','.join(available)}")
    return [available[n] for n in sorted(set(numbers))]


def run_notebook(notebook: Path, executed: Path, parameters: dict[str, object]) -> float:
    """Execute `notebook` into `executed` with `parameters`; returns the wall time in seconds."""
    import papermill  # heavy import (nbclient, jupyter): only when a run is asked for

    start = time.perf_counter()
    declared = papermill.inspect_notebook(str(notebook))
    papermill.execute_notebook(
        str(notebook),
        str(executed),
        parameters={name: value for name, value in parameters.items() if name in declared},
        kernel_name=KERNEL,
        language="python",
        cwd=str(notebook.parent),
        progress_bar=True,
    )
    return time.perf_counter() - start


def notebook_overrides(notebooks: list[Path], assignments: list[str],
                       reserved: set[str]) -> dict[str, object]:
    """`-p NAME=VALUE` pairs checked against the parameters the selected notebooks declare."""
    if not assignments:
        return {}
    overrides = dict(parse_assignment(text) for text in assignments)  # syntax first: no papermill
    for name in overrides:
        if name in reserved:
            flag = FLAG_OF_PARAMETER.get(name, name)
            raise ValueError(f"-p {name}: set it with --{flag} instead")
    import papermill

    declared = {name for notebook in notebooks
                for name in papermill.inspect_notebook(str(notebook))}
    for name in overrides:
        if name not in declared:
            raise ValueError(f"-p {name}: no selected notebook declares it; they take "
                             f"{', '.join(sorted(declared - reserved))}")
    return overrides


def _describe(error: Exception) -> str:
    """One line for a failed run: the failing cell's error, or the error papermill raised."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError):
        return f"cell {error.exec_count} raised {error.ename}: {error.evalue}"
    return f"{type(error).__name__}: {error}"


def announce_estimate(design: str, notebooks: list[Path], results: Path,
                      committed: Path) -> tuple[float, str]:
    """Measure this machine's training throughput, print the expected wall time of the run and
    of each notebook; returns (tokens/s, resolved dtype) for the timings file. The timings of an
    earlier reproduction of this design, else of another design of the same preset, scaled to
    this design's runs (`reproduction_time.estimate_reproduction`)."""
    from minillada.claims import reproduction_time
    from minillada.training.config import make_config
    from minillada.training.precision import describe_machine
    from minillada.training.throughput import probe_throughput
    from minillada.training.walltime import format_duration

    chosen = get_design(design)
    print(f"machine: {describe_machine()}", flush=True)
    tokens_per_s, dtype = probe_throughput(chosen.preset_name)
    config = make_config(chosen.preset_name, "pretrain", "unused")
    pretrain_tokens = config.steps * config.batch_size * config.seq_len * len(chosen.bases)
    # This design's last reproduction, else the committed one's, else another design's of the
    # same preset (scaled to this design's runs).
    timings = next(filter(None, (reproduction_time.read_timings(folder) for folder in (
        results, committed, *(committed / name for name, other in DESIGNS.items()
                              if other.preset_name == chosen.preset_name)))), None)
    expected = reproduction_time.estimate_reproduction([n.name for n in notebooks], tokens_per_s,
                                              timings, pretrain_tokens, chosen)
    parts = ", ".join(f"{name if name == reproduction_time.TRAINING else name[:2]} "
                      f"{format_duration(s) if s is not None else '?'}"
                      for name, s in expected.seconds.items())
    lower = "" if expected.complete else "at least "
    print(f"expected wall time from scratch: {lower}{format_duration(expected.total)} "
          f"({parts}); {dtype} at {tokens_per_s:.0f} tokens/s; from {expected.basis}", flush=True)
    return tokens_per_s, dtype


def computes_everything(runs: Path, results: Path, preset: str) -> bool:
    """True when no trained model of `preset` lies in `runs` and no result table in `results` is
    cached (`*.inputs.json`): only such a reproduction times what the next estimate scales. A
    fresh clone holds the committed tables, which it reuses for bit-identical models."""
    own = (path for path in results.rglob("*.inputs.json")
           if path.relative_to(results).parts[0] not in DESIGNS)  # not another design's folder
    return not any(runs.glob(f"{preset}/*/model/config.json")) and not any(own)


def reused_committed_tables(results: Path, committed: Path) -> bool:
    """True when a table in `results` was taken from the committed study (a twin with the same
    inputs: the same models, retrained bit-identically on the same kind of CPU); such a run did
    not time the evaluation, so it must not become the basis of the next reproduction_time."""
    if results.resolve() == committed.resolve():
        return False
    for stamp in results.rglob("*.inputs.json"):
        twin = committed / stamp.relative_to(results)
        if twin.is_file() and twin.read_bytes() == stamp.read_bytes():
            return True
    return False


def train_design(design: str, runs: Path, pretrain_overrides: dict, extend_overrides: dict,
                 results: Path, figures: Path, post_training: bool = True) -> tuple[float, float]:
    """Train (or reuse) the runs of `design`: the bases first, each judged by the instrument
    gate before any post-training (`Study.gate_results`, one line per base; a gated design's
    candidates until enough pass), then, with `post_training`, the runs of the bases in use
    with a progress bar over them (else the bases alone, all that notebooks 02 and 03 read).
    `results`, `figures`: the study's root folders, as the notebooks' `Study.create` takes them.
    Each run resumes where an interruption left it. Returns the seconds spent on the bases
    (their gates included) and on the post-training runs."""
    from tqdm.auto import tqdm

    from minillada.claims.study import Study

    study = Study.create(design, runs, results, figures, pretrain_overrides, extend_overrides)
    start = time.perf_counter()
    for result in study.gate_results.values():
        print(f"reproduce: {result.line()}", flush=True)
    for seed in study.outside_population:
        print(f"reproduce: base {seed} is outside the study's population (it fails the "
              "instrument gate, docs/science.md): every number it enters below is labelled so",
              flush=True)
    bases_seconds = time.perf_counter() - start
    jobs = ([r for r in study.design.runs if r.base in study.bases()] if post_training else [])
    start = time.perf_counter()
    with tqdm(jobs, desc=f"training runs of {design}", unit="run", disable=not jobs) as bar:
        for job in bar:
            bar.set_postfix_str(f"{job.arm}, base {job.base}, seed {job.seed}")
            study.run(job)
    return bases_seconds, time.perf_counter() - start


def reproduce(args: argparse.Namespace) -> int:
    notebook_dir = Path(args.notebook_dir) if args.notebook_dir else default_notebook_dir()
    notebooks = select_notebooks(find_study_notebooks(notebook_dir), args.notebooks)
    design = get_design(args.preset)
    own = "" if design.name == COMMITTED_DESIGN else design.name
    study = Path(args.out).resolve() if args.out else default_study_dir()
    output = Path(args.executed or study / "notebooks" / "output" / own).resolve()
    # The notebooks write a design other than the committed one into figures/<design>, ...
    root_figures = Path(args.figures or study / "figures").resolve()
    root_results = Path(args.results or study / "results").resolve()
    figures = preset_folder(root_figures, design.name)
    results = preset_folder(root_results, design.name)
    runs = Path(args.runs or study / "runs").resolve()
    parameters = {"preset": design.name, "figures_dir": str(figures), "output_dir": str(output),
                  "runs_dir": str(runs), "results_dir": str(results)}
    parameters.update(notebook_overrides(notebooks, args.parameter, set(parameters)))
    for flag, folder in (("--executed", output), ("--figures", root_figures),
                         ("--results", root_results), ("--runs", runs)):  # before any is made
        check_writable(folder, flag if getattr(args, flag[2:]) else "--out")
    print(f"reproducing {len(notebooks)} notebook(s) of design {design.name!r} (preset "
          f"{design.preset_name!r}: {len(design.bases)} base(s), {len(design.runs)} post-training "
          f"run(s)); executed copies in {output}, figures in {figures}")
    committed = preset_folder(root_results, COMMITTED_DESIGN)
    if args.dry_run:
        announce_estimate(design.name, notebooks, results, committed)
        print("dry run: nothing was run or written")
        return 0
    for folder in (output, figures, results, runs):
        folder.mkdir(parents=True, exist_ok=True)
    throughput = (announce_estimate(design.name, notebooks, results, committed)
                  if args.estimate else None)
    from_scratch = computes_everything(runs, results, design.preset_name)
    training = None
    numbers = {STUDY_NOTEBOOK.match(n.name).group(1) for n in notebooks}
    if numbers & {"02", "03", "04", "05"}:
        training = train_design(design.name, runs,
                                dict(parameters.get("pretrain_overrides") or {}),
                                dict(parameters.get("extend_overrides") or {}), root_results,
                                root_figures, post_training=bool(numbers & {"04", "05"}))
        print(f"training: {sum(training) / 60:.1f} min", flush=True)
    seconds_per_notebook: dict[str, float] = {}
    for index, notebook in enumerate(notebooks, start=1):
        executed = output / notebook.name
        print(f"[{index}/{len(notebooks)}] {notebook.name}", flush=True)
        try:
            seconds = run_notebook(notebook, executed, parameters)
        except Exception as error:
            print(f"reproduce: {notebook.name} failed: {_describe(error)}\n"
                  f"reproduce: its executed copy (with the traceback) is {executed}",
                  file=sys.stderr)
            return 1
        print(f"[{index}/{len(notebooks)}] {notebook.name} done in {seconds:.1f} s", flush=True)
        seconds_per_notebook[notebook.name] = seconds
        if throughput is not None and from_scratch and not reused_committed_tables(results,
                                                                                   committed):
            from minillada.claims.reproduction_time import write_timings
            from minillada.training.precision import describe_machine

            write_timings(results, seconds_per_notebook, throughput[0], describe_machine(),
                          throughput[1], design, training)
    _quote_claims_in_readme(study / "README.md", results / "claims.json", design.name)
    _place_against_committed(results / "claims.json", committed / "claims.json", design.name)
    total = sum(seconds_per_notebook.values()) + sum(training or (0.0,))
    print(f"reproduce: done in {total / 60:.1f} min; wrote "
          f"{_listing(figures)} figures in {figures}, {_listing(results)} result files in "
          f"{results}" + (f" (summary: {results / 'summary.md'})"
                          if (results / "summary.md").exists() else ""))
    return 0


def _quote_claims_in_readme(readme: Path, claims: Path, preset: str) -> None:
    """At the committed design, the README's results block quotes the claims just written."""
    from minillada.claims import report

    if preset != COMMITTED_DESIGN or not claims.is_file() or not readme.is_file():
        return
    text = readme.read_text()
    if report.README_START in text:
        readme.write_text(report.readme_with_results(text, report.load_claims(claims)))
        print(f"reproduce: {readme} quotes {claims}")


def _place_against_committed(claims: Path, committed: Path, design: str) -> None:
    """A design other than the committed one says which of its numbers fall outside the range
    where 95 % of the committed study's single runs fall: a reproduction, or a drift."""
    from minillada.claims import report

    if design == COMMITTED_DESIGN or not claims.is_file() or not committed.is_file():
        return
    table = report.committed_comparison(report.load_claims(claims), report.load_claims(committed))
    if table.empty:
        return
    summaries = [folder / "02_base_summary.json" for folder in (claims.parent, committed.parent)]
    mismatch = report.recipe_mismatch(*(json.loads(p.read_text()) if p.is_file() else None
                                        for p in summaries))
    if mismatch:
        print(f"reproduce: {mismatch}", flush=True)
    outside = table[~table["inside"]]
    print(f"reproduce: {int(table['inside'].sum())} of {len(table)} numbers of this run lie inside "
          f"the committed multi-seed range ({committed})"
          + ("" if outside.empty else "; outside: " + "; ".join(
              f"{row['claim']} / {row['quantity']} = {row['this run']:.3g} (committed "
              f"{row['committed range']})" for _, row in outside.iterrows())), flush=True)


def _listing(folder: Path) -> int:
    return sum(1 for path in folder.iterdir() if path.is_file())


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="run the study notebooks through papermill",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="cpu", choices=sorted(DESIGNS),
                        help="the study design (minillada/claims/design.py): smoke (minutes), "
                        "cpu (one base and seed, the default), cpu-seeds (the committed "
                        "multi-seed study, hours), cpu-gated (the gated study, many hours: "
                        "--dry-run estimates them) or gpu")
    parser.add_argument("--notebooks", default=None, metavar="NN[,NN...]",
                        help="comma-separated notebook numbers, e.g. 01,03 (default: all)")
    parser.add_argument("--notebook-dir", default=None,
                        help="folder of the study notebooks (default: the checkout's notebooks/, "
                        "or the copy installed with the package)")
    parser.add_argument("--out", help="study folder for everything below (default: the "
                        "repository when run inside it, else ./minillada-study)")
    parser.add_argument("--executed", help="executed notebooks (default: OUT/notebooks/output, "
                        "OUT/notebooks/output/<design> for designs other than cpu-seeds)")
    parser.add_argument("--figures", help="figures (default: OUT/figures); designs other than "
                        "cpu-seeds write into its <design> subfolder")
    parser.add_argument("--results", help="result tables (default: OUT/results); designs other "
                        "than cpu-seeds write into its <design> subfolder")
    parser.add_argument("--runs", help="training runs, by preset; finished runs are reused "
                        "(default: OUT/runs)")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                        help="a notebook parameter (VALUE read as YAML, e.g. -p "
                        "'variants=[default, ntk]'), given to the notebooks that declare it; "
                        "an undeclared NAME stops the run before it starts; repeatable")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the expected wall time and what would run, then stop")
    parser.add_argument("--no-estimate", dest="estimate", action="store_false",
                        help="skip the throughput probe and the expected wall time printed "
                        "before the work (a few seconds)")
    parser.set_defaults(func=reproduce)

