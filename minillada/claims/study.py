"""The study's runs and tables, cached: each is computed once and reused while its inputs hold.

The notebooks call these so that `make reproduce` after an interruption continues where it
stopped and a re-run with unchanged inputs recomputes nothing:

- A training run lives in `runs/<preset>/<name>-<digest>`, the digest covering every field of its
  TrainConfig that changes the trajectory (and, for `extend`, the digest of the model it starts
  from). A finished run (its exported `model/`) is reused; an interrupted one resumes from its
  latest checkpoint; a changed config gets a new folder.
- A result table is a CSV beside a JSON file holding the inputs it was computed from (including
  the fingerprints of the models it read; `table_cache.cached_table`); it is recomputed
  when those inputs change, and both files are written atomically.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from minillada.claims.design import ARMS, COMMITTED_DESIGN, Design, Run, get_design, preset_folder
from minillada.claims.gate import GATE, Gate, GateResult, judge, record_gate
from minillada.claims.report import recipe_mismatch
from minillada.claims.table_cache import cached_grid, cached_table, digest, provenance
from minillada.common.atomic import atomic_write_text
from minillada.data.corpus import corpus_fingerprint, load_tokenizer
from minillada.data.keys import KeySpace, key_space, trained_keys
from minillada.data.packing import pack_documents
from minillada.data.tasks import SampleMaker, TaskSample, min_task_length, sample_maker
from minillada.data.token_cache import split_documents
from minillada.evals.layout import LaidOutModel, Layout
from minillada.evals.leakage import cross_document_attention, multi_document_rows
from minillada.evals.models import ModelAtLength, fixed_model, rope_variants
from minillada.evals.perplexity import paired_loss_grid, ppl_at_lengths
from minillada.evals.retrieval import (
    GenerationSettings,
    LikelihoodScoring,
    cell_sample,
    run_retrieval_grid,
)
from minillada.modeling.model import LLaDAModelLM
from minillada.released.model_files import model_folder
from minillada.training.checkpoint import saved_config
from minillada.training.config import (
    RUN_CONTROL_FIELDS,
    TrainConfig,
    make_config,
    prepare_run,
    stage_settings,
)
from minillada.training.precision import cpu_model
from minillada.training.presets import Preset
from minillada.training.trainer import train

# Bumped when evaluation code computes other numbers from the same inputs, so that cached tables
# are recomputed: 2 = one seed hash for all draws (seeds.derived_seed) and leakage over rows
# with two or more documents; 3 = NIAH haystacks from the run's corpus, word keys.
EVALUATION_VERSION = 3


def model_fingerprint(path: str | os.PathLike) -> str:
    """Hash of a model folder's config and weight files: identifies what a table was made from."""
    folder = model_folder(path)
    files = sorted([folder / "config.json", *folder.glob("*.safetensors")])
    sha = hashlib.sha256()
    for file in files:
        sha.update(file.name.encode())
        sha.update(file.read_bytes())
    return sha.hexdigest()[:16]


def trajectory_fields(config: TrainConfig) -> dict[str, Any]:
    """The config fields that change what a run computes (not where it writes or how often it
    logs) and differ from TrainConfig's defaults, with `init` replaced by the fingerprint of the
    model it names. Leaving defaults out keeps a run's digest when a new field (with a default
    that reproduces the old behaviour) is added."""
    fields = json.loads(json.dumps(dataclasses.asdict(config)))
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
    fields = {k: v for k, v in fields.items()
              if k not in RUN_CONTROL_FIELDS and (k == "dtype" or v != defaults[k])}
    if config.init is not None:
        fields["init"] = model_fingerprint(config.init)
    return fields


def recipe_digest(preset: str) -> str:
    """The digest of `preset`'s pre-training recipe (its pretrain stage's settings, no seed):
    what a gate table row names as the recipe a base was trained with."""
    return digest(stage_settings(preset, "pretrain"))


def machine_cpu() -> str:
    """This machine's CPU and the instructions torch uses on it, "AMD EPYC family 25 model 1
    (AVX2)": what a base's training depends on besides its seed."""
    import torch

    return f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()})"


def run_folder(runs_dir: str | os.PathLike, name: str, config: TrainConfig) -> Path:
    """`runs_dir/<name>-<digest of the trajectory fields>`."""
    return Path(runs_dir) / f"{name}-{digest(trajectory_fields(config))}"


def ensure_trained(preset: str, stage: str, name: str, runs_dir: str | os.PathLike,
                   **overrides: Any) -> Path:
    """The exported model of the run `make_config(preset, stage, ..., **overrides)` describes on
    this machine (`prepare_run`: its dtype resolved, as its digest holds it): reused when
    finished, resumed when interrupted, trained otherwise. Returns its run folder."""
    config = prepare_run(make_config(preset, stage, Path(runs_dir) / name, **overrides))
    out = run_folder(runs_dir, name, config)  # the digest leaves `out` out
    if (out / "model" / "config.json").is_file():
        return out
    train(dataclasses.replace(config, out=str(out)), resume="auto")
    return out


def load_model(run: str | os.PathLike) -> LLaDAModelLM:
    """The exported model of a run (or a model folder), in eval mode."""
    model = LLaDAModelLM.from_pretrained(model_folder(run))
    return model.eval()


# ---------------------------------------------------------------------------------------------
# What the study notebooks share
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """A model under evaluation: a run's exported model, with `rope` set for `target_len` (None:
    the evaluation length, as LongLLaDA scales per length), or as saved when `rope` is None."""

    run: Path
    rope: str | None = None
    target_len: int | None = None

    def identity(self) -> dict[str, Any]:
        return {"model": model_fingerprint(self.run), "rope": self.rope,
                "target_len": self.target_len}

    def at_length(self) -> ModelAtLength:
        model = load_model(self.run)
        if self.rope is None:
            return fixed_model(model)
        return rope_variants(model, [self.rope], self.target_len)[self.rope]

    def in_layout(self, eod_token_id: int) -> ModelAtLength:
        """`at_length`, each model seen in the document layout its run was trained with
        (`evals.layout`)."""
        layout, at_length = Layout.of_run(saved_config(self.run)), self.at_length()
        return lambda length: LaidOutModel(at_length(length), layout, eod_token_id)


@dataclass
class Study:
    """One design of the study (`claims.design`), its folders, and cached runs and evaluations.

    Every notebook builds one from its parameters (`create`: runs in runs_dir/<preset>, shared by
    the designs of one preset; figures and results in figures_dir and results_dir for the
    committed design, in their <design> subfolder otherwise: `claims.design.preset_folder`).
    `base(seed)` is a pre-trained model, `run(Run)` a post-training run of an arm;
    `pretrain_overrides` and `extend_overrides` (TrainConfig fields) reach every notebook alike,
    so they all read the same models. The evaluation methods return tidy tables cached in
    `results` under the name given; `write_summary` and `summary` keep each notebook's summary.
    """

    design: Design
    runs: Path
    results: Path
    figures: Path
    committed_results: Path
    pretrain_overrides: dict[str, Any] = field(default_factory=dict)
    extend_overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, design: str, runs_dir: str | os.PathLike, results_dir: str | os.PathLike,
               figures_dir: str | os.PathLike, pretrain_overrides: Mapping[str, Any] | None = None,
               extend_overrides: Mapping[str, Any] | None = None) -> Study:
        chosen = get_design(design)
        # `minillada reproduce` passes a design's own folder (results/<design>): the committed
        # study's is the one above it.
        root = Path(results_dir)
        if design != COMMITTED_DESIGN and root.name == design:
            root = root.parent
        study = cls(chosen, Path(runs_dir) / chosen.preset_name,
                    preset_folder(results_dir, design), preset_folder(figures_dir, design), root,
                    dict(pretrain_overrides or {}), dict(extend_overrides or {}))
        for folder in (study.runs, study.results, study.figures):
            folder.mkdir(parents=True, exist_ok=True)
        return study

    @property
    def preset(self) -> Preset:
        return self.design.preset

    @property
    def seed(self) -> int:
        """The seed of the prompts and masks that decide the claims."""
        return self.design.eval_seed

    # -- runs ----------------------------------------------------------------------------------

    def base(self, seed: int) -> Path:
        """The run of the base pre-trained with `seed` (the preset's pretrain stage and
        `pretrain_overrides`): trained here unless finished (and, the first time, the BPE
        tokenizer with it)."""
        return ensure_trained(self.preset.name, "pretrain", "base", self.runs, seed=seed,
                              **self.pretrain_overrides)

    def run(self, run: Run) -> Path:
        """The post-training run `run` (its arm over the preset's extend stage and
        `extend_overrides`), from the base of its base seed."""
        arm = ARMS[run.arm]
        overrides = {**arm.train_overrides(self.preset), **self.extend_overrides}
        return ensure_trained(self.preset.name, "extend", f"extend-{arm.name}", self.runs,
                              init=str(self.base(run.base)), seed=run.seed, **overrides)

    def judge_base(self, seed: int) -> GateResult:
        """Base `seed` trained where not finished, judged by the instrument gate on its gate
        table (`gate`) and recorded in the design's `gate.csv` with this machine's CPU."""
        result = judge(self.gate(seed), seed, self.retrieval_task)
        record_gate(self.results / "gate.csv", [result],
                    {"cpu": machine_cpu(), "dtype": saved_config(self.base(seed))["dtype"],
                     "recipe": recipe_digest(self.preset.name)})
        return result

    @functools.cached_property
    def gate_results(self) -> dict[int, GateResult]:
        """The design's bases judged by the gate (`judge_base`), in order: a gated design's
        candidates until `gated` of them pass, else every base."""
        results: dict[int, GateResult] = {}
        for seed in self.design.bases:
            if self.design.gated and sum(r.passed for r in results.values()) >= self.design.gated:
                break
            results[seed] = self.judge_base(seed)
        return results

    @property
    def outside_population(self) -> list[int]:
        """The bases in use that fail the instrument gate (only an ungated design uses them):
        every number they enter comes from a base outside the gated study's population."""
        if self.design.gated:
            return []
        return [seed for seed, result in self.gate_results.items() if not result.passed]

    def bases(self) -> dict[int, Path]:
        """The bases the study uses (base seed -> run), trained where not finished: a gated
        design's first `gated` candidates that pass the gate, else every base of the design."""
        if not self.design.gated:
            return {seed: self.base(seed) for seed in self.design.bases}
        return {seed: self.base(seed) for seed, result in self.gate_results.items()
                if result.passed}

    def runs_of(self, arms: Sequence[str]) -> dict[Run, Path]:
        """The design's runs of `arms` on the bases in use (run -> run folder), trained where
        not finished."""
        bases = self.bases()
        return {run: self.run(run) for run in self.design.runs
                if run.arm in arms and run.base in bases}

    @staticmethod
    def run_name(run: Run) -> str:
        """The folder of a run's result tables: `b<base>/<arm>-s<seed>`."""
        return f"b{run.base}/{run.arm}-s{run.seed}"

    def provenance(self) -> dict[str, Any]:
        """What the claims were computed on: the machine, Python, torch, the package version,
        the corpus's fingerprint and the design."""
        saved = saved_config(self._base_run())
        return {**provenance(), "corpus": saved["corpus"],
                "corpus_sha256": corpus_fingerprint(saved["corpus"]),
                "design": self.design.name}

    def _base_run(self) -> Path:
        """The first base: its tokenizer and corpus split are every base's (the tokenizer is
        trained once per vocabulary and corpus, whatever the seed)."""
        return self.base(self.design.bases[0])

    @functools.cached_property
    def tokenizer(self):
        """The base run's tokenizer (never trains anything: see `base()`)."""
        return load_tokenizer(model_folder(self._base_run()))

    @functools.cached_property
    def test_documents(self) -> list[list[int]]:
        """The held-out test split (never trained on)."""
        return self._documents("test")

    @functools.cached_property
    def held_out_documents(self) -> list[list[int]]:
        """The test and validation splits (neither trained on): the windows of the loss claim."""
        return self._documents("test") + self._documents("validation")

    def _documents(self, split: str) -> list[list[int]]:
        saved = saved_config(self._base_run())
        return split_documents(self.tokenizer, split, saved["corpus"], saved["split_seed"])

    @functools.cached_property
    def keys(self) -> KeySpace:
        """The keys the base model was trained to retrieve (`data.keys.trained_keys`)."""
        trained = trained_keys(saved_config(self._base_run()))
        if trained is None:
            raise ValueError(f"the base run {str(self._base_run())!r} trained on no retrieval "
                             "task: the study retrieves the keys its bases were trained on")
        return key_space(self.tokenizer, *trained)

    @functools.cached_property
    def retrieval_task(self) -> str:
        """The study's retrieval task: `niah` (a needle in held-out corpus text) when the base
        model was trained on it, else the first task it was trained on."""
        trained = saved_config(self._base_run())["tasks"]
        return "niah" if "niah" in trained else trained[0]

    def samples(self, decoys: int = 0, split: str = "test") -> SampleMaker:
        """make_sample(task, length, depth, seed) for retrieval grids (`tasks.sample_maker`),
        with the base run's keys and a held-out haystack of its corpus (the `test` split; the
        gate's prompts: `validation`); `decoys` > 0: packed-context samples
        (`tasks.make_decoy_sample`)."""
        saved = saved_config(self._base_run())
        return sample_maker(self.tokenizer, key_kind=self.keys.kind, key_digits=self.keys.digits,
                            corpus=saved["corpus"], split=split, split_seed=saved["split_seed"],
                            decoys=decoys)

    def retrieval_sample(self, row: Mapping[str, Any], decoys: int = 0) -> TaskSample:
        """The prompt one row of a `retrieval` table (made with `decoys`) was scored on, drawn
        again from the row's cell and seed (`evals.retrieval.cell_sample`)."""
        cell = (row["task"], row["length"], row["depth"], row["repeat"])
        return cell_sample(self.samples(decoys), cell, row["seed"])

    def write_summary(self, notebook: str, summary: Mapping[str, Any]) -> Path:
        """A notebook's summary (key -> value, the lines summary.md lists under the notebook) as
        `<results>/<notebook>_summary.json`, written atomically: the one place and format every
        notebook writes its summary in, and notebook 05 reads (`summary`)."""
        return atomic_write_text(self.results / f"{notebook}_summary.json",
                                 json.dumps(summary, indent=1))

    def summary(self, notebook: str, committed: bool = False) -> dict[str, Any] | None:
        """What `write_summary` wrote for `notebook` (`committed`: in the committed study's
        results), or None where it has not run."""
        path = (self.committed_results if committed else self.results) / f"{notebook}_summary.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def committed_mismatch(self) -> str:
        """Why the committed study's ranges are no test of this design's numbers ("" when
        they are): `report.recipe_mismatch` of notebook 02's summaries."""
        return recipe_mismatch(self.summary("02_base"), self.summary("02_base", committed=True))

    @property
    def population_note(self) -> str:
        """One line on the bases in use and the instrument gate (`outside_population`)."""
        outside = self.outside_population
        if not outside:
            return "every base in use passes the instrument gate (notebook 02)"
        return (f"base(s) {', '.join(map(str, outside))} FAIL the instrument gate (notebook 02): "
                "every number they enter comes from a base outside the study's population")

    # -- evaluations ---------------------------------------------------------------------------

    def _inputs(self, candidates: Mapping[str, Candidate], seed: int,
                **settings: Any) -> dict[str, Any]:
        return {"candidates": {label: c.identity() for label, c in candidates.items()},
                "seed": seed, "evaluation_version": EVALUATION_VERSION, **settings}

    def _table(self, name: str) -> tuple[Path, Path]:
        """Where table `name` goes, and the committed design's table of that name (reused when
        it was computed from the same inputs, as for the same models on the same machine)."""
        return self.results / f"{name}.csv", self.committed_results / f"{name}.csv"

    def loss_grid(self, name: str, candidates: Mapping[str, Candidate], lengths: Sequence[int],
                  windows: int | None = None, mc: int | None = None,
                  documents: str = "test") -> pd.DataFrame:
        """`paired_loss_grid`: every candidate on the same windows and masks. `documents`:
        `test` (the first window of each test document) or `held_out` (consecutive windows of
        the test and validation documents, round-robin); `windows`, `mc`: the preset's grid
        unless given."""
        grid = self.preset.evaluation
        windows, mc = windows or grid.windows, mc or grid.mc
        if documents not in ("test", "held_out"):
            raise ValueError(f"documents must be test or held_out, got {documents!r}")
        inputs = self._inputs(candidates, self.seed, lengths=list(lengths), mc=mc,
                              windows=windows, documents=documents)
        path, fallback = self._table(name)
        return cached_table(path, inputs, lambda: paired_loss_grid(
            {label: c.at_length() for label, c in candidates.items()},
            self.test_documents if documents == "test" else self.held_out_documents, lengths,
            mask_token_id=self.tokenizer.mask_token_id,
            eod_token_id=self.tokenizer.eod_token_id, mc=mc, seed=self.seed,
            max_windows=windows, consecutive=documents == "held_out"), fallback)

    def ppl(self, name: str, candidates: Mapping[str, Candidate], lengths: Sequence[int],
            elbo: bool = False) -> pd.DataFrame:
        """`ppl_at_lengths` (LongLLaDA's chunk PPL, and LLaDA's bound with `elbo`)."""
        grid = self.preset.evaluation
        inputs = self._inputs(candidates, self.seed, lengths=list(lengths), mc=grid.mc,
                              windows=grid.windows, chunk=grid.chunk, elbo=elbo)
        path, fallback = self._table(name)
        return cached_table(path, inputs, lambda: ppl_at_lengths(
            {label: c.at_length() for label, c in candidates.items()}, self.test_documents,
            lengths, mask_token_id=self.tokenizer.mask_token_id,
            eod_token_id=self.tokenizer.eod_token_id, chunk=grid.chunk, mc=grid.mc,
            seed=self.seed, max_windows=grid.windows, elbo=elbo), fallback)

    def retrieval(self, name: str, candidates: Mapping[str, Candidate], tasks: Sequence[str],
                  lengths: Sequence[int], depths: Sequence[float], repeats: int,
                  decoys: int = 0, seed: int | None = None, *, tokens_per_step: int | None = None,
                  split: str = "test", in_layout: bool = True,
                  likelihood: LikelihoodScoring | None = None,
                  paired_depths: bool = False) -> pd.DataFrame:
        """`run_retrieval_grid` on the base run's keys (`keys`), generation fitted to the answer
        and committing `tokens_per_step` tokens a step (None: UltraLLaDA's rate of 2, the
        2026-12-04 study's decoder; 1: the gated study's). Each model is evaluated in its
        training layout (`Candidate.in_layout`) or, without `in_layout`, on the prompt as one
        plain sequence (what a user's prompt is). Prompts come from `split` of the corpus
        (`test`; `validation` for the gate) under `seed` (the design's `eval_seed` unless
        given); `decoys` > 0: packed-context prompts with that many decoy documents
        (`tasks.make_decoy_sample`; column `distractor_hit`); `likelihood`: also scored by
        likelihood; `paired_depths`: every depth of a repeat the same haystack and key. Rows
        hold each answer token's hit (`slots`) and the random copier's chance
        (`copier_chance`)."""
        settings = GenerationSettings()
        seed = self.seed if seed is None else seed
        # Inputs an older table was made without are left out at their old value, so that
        # committed tables stay valid for the calls that made them.
        options = {key: value for key, value, old in (
            ("tokens_per_step", tokens_per_step, None), ("split", split, "test"),
            ("in_layout", in_layout, True),
            ("likelihood", likelihood and dataclasses.asdict(likelihood), None),
            ("paired_depths", paired_depths, False)) if value != old}
        inputs = self._inputs(candidates, seed, tasks=list(tasks), lengths=list(lengths),
                              depths=list(depths), repeats=repeats,
                              keys=[self.keys.kind, self.keys.digits, self.keys.size],
                              decoys=decoys, settings=dataclasses.asdict(settings), **options)
        path, fallback = self._table(name)
        return cached_grid(path, inputs, lambda partial: (
            run_retrieval_grid(
                {label: c.in_layout(self.tokenizer.eod_token_id) if in_layout else c.at_length()
                 for label, c in candidates.items()},
                self.samples(decoys, split),
                lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True),
                tasks=tasks, lengths=lengths, depths=depths, repeats=repeats,
                settings=settings, fit_gen_length=True, tokens_per_step=tokens_per_step,
                copier=self.keys.slot_token_ids(self.tokenizer), likelihood=likelihood,
                paired_depths=paired_depths, results_path=partial,
                mask_token_id=self.tokenizer.mask_token_id, seed=seed)), fallback)

    def gate(self, seed: int, gate: Gate = GATE) -> pd.DataFrame:
        """The gate table of base `seed` (`claims.gate`): its in-window retrieval on every task
        it was trained on, prompts from the validation split under the gate's own seed, one
        token a step; `claims.gate.judge` reads it on `retrieval_task`."""
        trained = saved_config(self.base(seed))["tasks"]
        tasks = [self.retrieval_task, *(t for t in trained if t != self.retrieval_task)]
        shortest = max(min_task_length(self.tokenizer, task, self.keys.digits,
                                       key_kind=self.keys.kind) for task in tasks)
        lengths = gate.lengths(self.preset.train_len, shortest)
        return self.retrieval(f"b{seed}/gate", {"base": Candidate(self.base(seed))}, tasks,
                              lengths, gate.depths, gate.repeats_for(len(lengths)),
                              seed=gate.prompt_seed, split=gate.split, tokens_per_step=1)

    def headline_retrieval(self, prefix: str, candidate: Candidate, length: int,
                           decoys: int = 0, task: str | None = None) -> pd.DataFrame:
        """One model on the headline grid (`task`, the study's retrieval task unless given, at
        `length`, `headline_depths` x `headline_repeats`, label `model`): table
        `<prefix>/<task>-<length>`, or `<prefix>/decoys<decoys>-<length>` with `decoys` packed
        decoy documents; every notebook that asks for the same model, task and length reads the
        same table."""
        grid = self.preset.evaluation
        task = task or self.retrieval_task
        kind = f"decoys{decoys}" if decoys else task
        return self.retrieval(f"{prefix}/{kind}-{length}", {"model": candidate}, [task],
                              [length], grid.headline_depths, grid.headline_repeats,
                              decoys=decoys)

    def leakage(self, name: str, candidates: Mapping[str, Candidate], length: int,
                rows: int) -> pd.DataFrame:
        """`cross_document_attention` on the first `rows` held-out rows of `length` tokens that
        hold two or more documents, each candidate unmasked on the rows packed in its own
        training layout (separators, positions)."""
        inputs = self._inputs(candidates, self.seed, length=length, rows=rows)

        def measure(candidate: Candidate) -> pd.DataFrame:
            layout = Layout.of_run(saved_config(candidate.run))
            packed = pack_documents(self.test_documents, length,
                                    "eod" if layout.strategy.separator else "direct",
                                    eod_token_id=self.tokenizer.eod_token_id,
                                    pad_token_id=self.tokenizer.pad_token_id,
                                    restart_positions=layout.restart_positions)
            several = multi_document_rows(packed.doc_ids)[:rows]
            return cross_document_attention(candidate.at_length()(length),
                                            packed.tokens[several], packed.positions[several],
                                            packed.doc_ids[several])

        path, fallback = self._table(name)
        return cached_table(path, inputs, lambda: pd.concat(
            [measure(c).assign(model=label) for label, c in candidates.items()],
            ignore_index=True), fallback)
