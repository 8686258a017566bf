"""The study's runs and tables, cached: each is computed once and reused while its inputs hold.

The notebooks call these so that `make reproduce` after an interruption continues where it
stopped and a re-run with unchanged inputs recomputes nothing:

- A training run lives in `runs/<preset>/<name>-<digest>`, the digest covering every field of its
  TrainConfig that changes the trajectory (and, for `extend`, the digest of the model it starts
  from). A finished run (its exported `model/`) is reused; an interrupted one resumes from its
  latest checkpoint; a changed config gets a new folder.
- A result table is a CSV beside a JSON file holding the inputs it was computed from (including
  the fingerprints of the models it read; `minillada.results.cached_table`); it is recomputed
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

from minillada import data, tasks
from minillada.checkpoint import model_folder, saved_config
from minillada.config import RUN_CONTROL_FIELDS, TrainConfig, make_config
from minillada.evals.leakage import cross_document_attention, multi_document_rows
from minillada.evals.models import ModelAtLength, fixed_model, rope_variants
from minillada.evals.perplexity import paired_loss_grid, ppl_at_lengths
from minillada.evals.retrieval import GenerationSettings, run_retrieval_grid
from minillada.model import LLaDAModelLM
from minillada.packing import pack_documents
from minillada.parameters import preset_folder
from minillada.presets import Preset, get_preset
from minillada.results import cached_grid, cached_table, digest
from minillada.train import train

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
    logs), with `init` replaced by the fingerprint of the model it names."""
    fields = json.loads(json.dumps(dataclasses.asdict(config)))
    fields = {k: v for k, v in fields.items() if k not in RUN_CONTROL_FIELDS}
    if config.init is not None:
        fields["init"] = model_fingerprint(config.init)
    return fields


def run_folder(runs_dir: str | os.PathLike, name: str, config: TrainConfig) -> Path:
    """`runs_dir/<name>-<digest of the trajectory fields>`."""
    return Path(runs_dir) / f"{name}-{digest(trajectory_fields(config))}"


def ensure_trained(preset: str, stage: str, name: str, runs_dir: str | os.PathLike,
                   **overrides: Any) -> Path:
    """The exported model of the run `make_config(preset, stage, ..., **overrides)` describes:
    reused when finished, resumed when interrupted, trained otherwise. Returns its run folder."""
    probe = make_config(preset, stage, Path(runs_dir) / name, **overrides)
    out = run_folder(runs_dir, name, probe)
    if (out / "model" / "config.json").is_file():
        return out
    train(dataclasses.replace(probe, out=str(out)), resume="auto")
    return out


def load_model(run: str | os.PathLike) -> LLaDAModelLM:
    """The exported model of a run (or a model folder), in eval mode."""
    model = LLaDAModelLM.from_pretrained(model_folder(run))
    return model.eval()


# ---------------------------------------------------------------------------------------------
# What the study notebooks share
# ---------------------------------------------------------------------------------------------

# The training-free methods compared in notebook 03 (UltraLLaDA's and LongLLaDA's baselines).
TRAINING_FREE = ("default", "linear", "ntk", "dynamic", "yarn", "ntk_critical", "diffusion_ntk",
                 "diffusion_yarn")


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


@dataclass
class Study:
    """One preset and seed of the study, its folders, and cached runs and evaluations.

    Every notebook builds one from its parameters (`create`: runs in runs_dir/<preset>; figures
    and results in figures_dir and results_dir at the default preset cpu, in their <preset>
    subfolder otherwise: `minillada.parameters.preset_folder`); `base()` is the pre-trained model
    (trained once, shared by all notebooks), `extension()` a post-training run, and the
    evaluation methods return tidy tables cached in `results` under the name given.
    """

    preset: Preset
    seed: int
    runs: Path
    results: Path
    figures: Path
    trained_base: Path | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(cls, preset: str, seed: int, runs_dir: str | os.PathLike,
               results_dir: str | os.PathLike, figures_dir: str | os.PathLike) -> Study:
        study = cls(get_preset(preset), seed, Path(runs_dir) / preset,
                    preset_folder(results_dir, preset), preset_folder(figures_dir, preset))
        for folder in (study.runs, study.results, study.figures):
            folder.mkdir(parents=True, exist_ok=True)
        return study

    # -- runs ----------------------------------------------------------------------------------

    def base(self, **overrides: Any) -> Path:
        """The pre-trained base model's run (the preset's pretrain stage + overrides): trained
        here unless finished (and, the first time, the BPE tokenizer with it). The tokenizer and
        the held-out documents below are this run's."""
        self.trained_base = ensure_trained(self.preset.name, "pretrain", "base", self.runs,
                                           seed=self.seed, **overrides)
        return self.trained_base

    def _base_run(self) -> Path:
        if self.trained_base is None:
            raise RuntimeError("call study.base() first: it trains (or reuses) the base model, "
                               "whose tokenizer and corpus split the evaluations use")
        return self.trained_base

    def extension(self, base: Path, rope: str, packing: str, seed: int | None = None,
                  **overrides: Any) -> Path:
        """A post-training run of `base` at the target length with a RoPE variant and packing
        (seed: the study's unless given)."""
        return ensure_trained(self.preset.name, "extend", f"extend-{rope}-{packing}", self.runs,
                              init=str(base), rope=rope, packing=packing,
                              seed=self.seed if seed is None else seed, **overrides)

    @functools.cached_property
    def tokenizer(self):
        """The base run's tokenizer (never trains anything: see `base()`)."""
        return data.load_tokenizer(model_folder(self._base_run()))

    @functools.cached_property
    def test_documents(self) -> list[list[int]]:
        saved = saved_config(self._base_run())
        return data.split_documents(self.tokenizer, "test", saved["corpus"], saved["split_seed"])

    @functools.cached_property
    def keys(self) -> tasks.KeySpace:
        """The keys the base model was trained to retrieve (its task_key_kind and digits)."""
        saved = saved_config(self._base_run())
        return tasks.key_space(self.tokenizer, saved.get("task_key_kind", "number"),
                               saved["task_key_digits"])

    @functools.cached_property
    def retrieval_task(self) -> str:
        """The study's retrieval task: `niah` (a needle in held-out corpus text) when the base
        model was trained on it, else the first task it was trained on."""
        trained = saved_config(self._base_run())["tasks"]
        return "niah" if "niah" in trained else trained[0]

    def sample_maker(self, distractor: bool = False):
        """make_sample(task, length, depth, seed) for retrieval grids, with the base run's keys
        and a held-out (test split) haystack; `distractor`: `tasks.make_distractor_sample`."""
        saved = saved_config(self._base_run())

        def make(task: str, length: int, depth: float, seed: int) -> tasks.TaskSample:
            params = {"key_digits": self.keys.digits, "key_kind": self.keys.kind,
                      **tasks.haystack_params(task, saved["corpus"], "test", saved["split_seed"])}
            if distractor:
                return tasks.make_distractor_sample(
                    self.tokenizer, task, length, depth, seed,
                    eod_token_id=self.tokenizer.eod_token_id, **params)
            return tasks.make_task_sample(self.tokenizer, task, length, depth, seed, **params)
        return make

    # -- evaluations ---------------------------------------------------------------------------

    def _inputs(self, candidates: Mapping[str, Candidate], **settings: Any) -> dict[str, Any]:
        return {"candidates": {label: c.identity() for label, c in candidates.items()},
                "seed": self.seed, "evaluation_version": EVALUATION_VERSION, **settings}

    def loss_grid(self, name: str, candidates: Mapping[str, Candidate],
                  lengths: Sequence[int]) -> pd.DataFrame:
        """`paired_loss_grid` on the test split: every candidate, the same windows and masks."""
        grid = self.preset.evaluation
        inputs = self._inputs(candidates, lengths=list(lengths), mc=grid.mc, windows=grid.windows)
        return cached_table(self.results / f"{name}.csv", inputs, lambda: paired_loss_grid(
            {label: c.at_length() for label, c in candidates.items()}, self.test_documents,
            lengths, mask_token_id=self.tokenizer.mask_token_id,
            eod_token_id=self.tokenizer.eod_token_id, mc=grid.mc, seed=self.seed,
            max_windows=grid.windows))

    def ppl(self, name: str, candidates: Mapping[str, Candidate], lengths: Sequence[int],
            elbo: bool = False) -> pd.DataFrame:
        """`ppl_at_lengths` (LongLLaDA's chunk PPL, and LLaDA's bound with `elbo`)."""
        grid = self.preset.evaluation
        inputs = self._inputs(candidates, lengths=list(lengths), mc=grid.mc, windows=grid.windows,
                              chunk=grid.chunk, elbo=elbo)
        return cached_table(self.results / f"{name}.csv", inputs, lambda: ppl_at_lengths(
            {label: c.at_length() for label, c in candidates.items()}, self.test_documents,
            lengths, mask_token_id=self.tokenizer.mask_token_id,
            eod_token_id=self.tokenizer.eod_token_id, chunk=grid.chunk, mc=grid.mc,
            seed=self.seed, max_windows=grid.windows, elbo=elbo))

    def retrieval(self, name: str, candidates: Mapping[str, Candidate], tasks: Sequence[str],
                  lengths: Sequence[int], depths: Sequence[float], repeats: int,
                  distractor: bool = False) -> pd.DataFrame:
        """`run_retrieval_grid` with UltraLLaDA's sampler settings fitted to the answer, on the
        base run's keys (`keys`); `distractor`: each prompt starts with another document of the
        task carrying another key (`tasks.make_distractor_sample`; column `distractor_hit`)."""
        settings = GenerationSettings()
        inputs = self._inputs(candidates, tasks=list(tasks), lengths=list(lengths),
                              depths=list(depths), repeats=repeats,
                              keys=[self.keys.kind, self.keys.digits, self.keys.size],
                              distractor=distractor, settings=dataclasses.asdict(settings))
        return cached_grid(self.results / f"{name}.csv", inputs, lambda partial: (
            run_retrieval_grid(
                {label: c.at_length() for label, c in candidates.items()},
                self.sample_maker(distractor),
                lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True),
                tasks=tasks, lengths=lengths, depths=depths, repeats=repeats,
                settings=settings, fit_gen_length=True, results_path=partial,
                mask_token_id=self.tokenizer.mask_token_id, seed=self.seed)))

    def leakage(self, name: str, candidates: Mapping[str, Candidate], length: int,
                rows: int) -> pd.DataFrame:
        """`cross_document_attention` on `rows` held-out rows of `length` tokens packed with
        `adaptive` (documents marked, positions restarting) that hold two or more documents,
        every candidate unmasked."""
        inputs = self._inputs(candidates, length=length, rows=rows)

        def compute() -> pd.DataFrame:
            packed = pack_documents(self.test_documents, length, "adaptive",
                                    eod_token_id=self.tokenizer.eod_token_id,
                                    pad_token_id=self.tokenizer.pad_token_id)
            several = multi_document_rows(packed.doc_ids)[:rows]
            frames = [cross_document_attention(c.at_length()(length), packed.tokens[several],
                                               packed.positions[several],
                                               packed.doc_ids[several]).assign(model=label)
                      for label, c in candidates.items()]
            return pd.concat(frames, ignore_index=True)

        return cached_table(self.results / f"{name}.csv", inputs, compute)
