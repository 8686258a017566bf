"""What a training run is: `TrainConfig`, a plain value built by `make_config(preset, stage, out,
**overrides)` and validated before any work, and the learning-rate and task-fraction schedules
(pure functions of the step).

Building or validating a TrainConfig touches neither the hardware nor the disk. What a run needs
from this machine happens once, in `prepare_run`, which the trainer, `minillada train` and the
study call before a run: the files it reads are checked (`check_run_files`: the corpus, and the
init folder of an extend run), its attention backend must train here (`check_attention_device`)
and `dtype="auto"` is resolved for this machine (`resolved_dtype`), so the run's config.json and
the study's run digests hold the concrete dtype.

Stages: `pretrain` trains a fresh model on documents packed to T_train; `extend` loads a pretrained
model (`init`), sets its RoPE variant for the target length (`seq_len`) and post-trains on
documents packed to that length with a packing strategy (UltraLLaDA).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minillada.common.names import (
    ATTENTION_BACKEND_NAMES,
    KEY_KINDS,
    PACKING_NAMES,
    STAGES,
    STDLIB,
    T_PER,
    TASK_NAMES,
)
from minillada.modeling.model_shape import check_model_shape, model_fields
from minillada.released.model_files import model_folder, read_model_config, weight_files
from minillada.rope.laws import ROPE_VARIANTS
from minillada.training.field_types import check_values
from minillada.training.precision import check_dtype_name, choose_precision
from minillada.training.presets import get_preset
from minillada.training.tracking import check_tracker

# This module imports no torch (nor data, model, ...) until `prepare_run` resolves the dtype or
# checks a released checkpoint, so `minillada train` refuses a bad config at once.
LOGS = ("jsonl", "tensorboard")  # TrainConfig.log: where the metrics go besides metrics.jsonl
# The model fields of an init that must match the preset it is extended at.
MATCHED_MODEL_FIELDS = ("vocab_size", "d_model", "n_heads", "n_layers", "mlp_hidden_size",
                        "rope_theta", "max_sequence_length")


@functools.cache
def train_config_types() -> dict[str, Any]:
    """TrainConfig field -> annotation."""
    return typing.get_type_hints(TrainConfig)


def model_config_types() -> dict[str, Any]:
    """The fields of `modeling.model.LLaDAConfig` (its __init__ parameters) -> annotation."""
    return {name: annotation for name, (annotation, _) in model_fields().items()}


def check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig overrides with their names and types checked (no torch): ValueError naming an
    unknown field, or the field, the value and the expected type."""
    return check_values(overrides, train_config_types(), "TrainConfig")


def check_model_fields(model: Mapping[str, Any]) -> dict[str, Any]:
    """`model` (LLaDAConfig fields) with names and types checked."""
    return check_values(model, model_config_types(), "model (LLaDAConfig)", prefix="model.")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run. Defaults are LLaDA's where LLaDA states one.

    Build one with `make_config(preset, stage, out, **overrides)`: TrainConfig defaults, then the
    preset's stage settings, then the overrides. Retrieval levers (docs/recipe.md): the
    model's `include_qkv_bias` (preset model dims, pretrain only), `task_fraction` of synthetic
    retrieval rows (`tasks`), held for `task_curriculum_hold` steps and then moving linearly to
    `task_fraction_final` by step `task_curriculum_steps` (a curriculum), `answer_only_fraction`
    of those rows where only the answer may be masked (SFT-style; moving to
    `answer_only_fraction_final` along the same curriculum), `stratified_t`, `grad_clip`, and
    the lr schedule.
    """

    # what and where
    preset: str = "smoke"
    stage: str = "pretrain"
    out: str = "runs/smoke/pretrain"
    init: str | None = None  # extend: a pretrained run folder or exported model folder
    corpus: str = STDLIB  # data.corpus.load_corpus source
    split_seed: int = 0  # train/held-out document split (evaluations use the same split)
    seed: int = 0  # model init, data order, masks, task rows
    model: dict[str, Any] = field(default_factory=dict)  # LLaDAConfig fields (pretrain)
    # sequences
    seq_len: int = 32  # T_train for pretrain, the target length for extend
    packing: str = "eod"  # a PACKING_STRATEGIES name
    restart_positions: bool = True  # RoPE positions restart at each document
    rope: str = "default"  # extend: the RoPE variant set for seq_len
    rope_params: dict[str, Any] = field(default_factory=dict)
    attention_backend: str = "per_document"
    activation_checkpointing: bool = False  # recompute blocks in backward (long sequences)
    # > 0: the loss runs the head on the masked positions only, this many at a time, recomputing
    # their logits in backward (modeling.masked_loss); 0: logits of every position, then the loss
    loss_chunk: int = 0
    # pack each step's rows on demand from a memory-mapped token cache (data.token_cache)
    # instead of packing the whole corpus in every process; the rows are the same
    rows_on_demand: bool = False
    # > 1: each row split along the sequence over this many ranks (torchrun), attention over the
    # whole row from gathered keys and values (modeling.context_parallel); the step's rows are
    # shared out over world size / context_parallel data-parallel groups
    context_parallel: int = 1
    # optimisation (LLaDA: AdamW, weight decay 0.1, warmup-stable-decay lr)
    steps: int = 100
    batch_size: int = 8  # global rows per optimizer step
    micro_batch_size: int = 8  # rows per forward/backward on one rank
    lr: float = 4e-4
    schedule: str = "wsd"  # an LR_SCHEDULES name
    warmup_steps: int = 10
    decay_fraction: float = 0.2  # wsd: the last fraction of steps decays linearly
    min_lr_ratio: float = 0.1  # final lr / lr
    weight_decay: float = 0.1  # on matrices only (nanoGPT)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    # objective (LLaDA: t ~ U[0, 1] per sequence, p = (1 - eps) t + eps, 1 % random lengths)
    eps: float = 1e-3
    t_per: str = "sequence"  # or "document": one t per packed document
    stratified_t: bool = False  # antithetic t across the global batch
    random_length_fraction: float = 0.01
    # synthetic retrieval rows (off by default, as in LLaDA pre-training)
    tasks: tuple[str, ...] = ("passkey",)
    task_fraction: float = 0.0
    task_fraction_final: float | None = None  # None: constant task_fraction
    task_curriculum_steps: int | None = None  # None: the whole run
    # steps held at the starting fractions before the linear curriculum begins
    task_curriculum_hold: int = 0
    answer_only_fraction: float = 0.0
    # None: constant answer_only_fraction; else it moves to this value along the same curriculum
    answer_only_fraction_final: float | None = None
    task_key_digits: int = 5  # digits of passkey / NIAH numbers in task rows
    task_key_kind: str = "number"  # KEY_KINDS (minillada.data.tasks.KeySpace)
    # None: a task row is one retrieval document of seq_len tokens. (lo, hi): retrieval documents
    # of U{lo..hi} tokens packed under `packing` with corpus text and other retrieval documents
    # (distractors with other keys) into each task row: the extend stage's mix.
    task_lengths: tuple[int, int] | None = None
    # task_lengths rows: further retrieval documents (other keys) may be packed beside the
    # first; False: one retrieval document per row, the rest natural documents
    task_distractors: bool = True
    # validation, checkpoints, precision
    val_every: int = 50
    val_rows: int = 16  # held-out corpus rows, masked with a fixed seed
    val_task_rows: int = 0  # held-out task rows, answer fully masked: answer accuracy
    save_every: int = 50
    keep_checkpoints: int = 2
    # auto: bf16 where this machine runs it fast, else float32 (training.precision), resolved
    # by `prepare_run`, so the run's config.json and the study's digest hold the result.
    # bf16 is autocast on a CPU or one GPU, the FSDP2 parameter policy on GPUs.
    dtype: str = "auto"
    progress: bool = True
    # jsonl: metrics.jsonl only; tensorboard: also <out>/tensorboard/ (needs `pip install
    # tensorboard`, the `tracking` extra; minillada.training.tracking)
    log: str = "jsonl"

    def __post_init__(self) -> None:
        """Each value checked against its field's type (a list for a tuple field becomes a
        tuple, an int for a float field a float): a plain value, no hardware, no disk."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in check_values(given, train_config_types(), "TrainConfig").items():
            if value is not given[name]:
                object.__setattr__(self, name, value)  # list -> tuple, int -> float
        check_dtype_name(self.dtype)

    def validate(self) -> None:
        """Raise ValueError naming the first bad value, before any work (the values only: the
        files a run reads are `check_run_files`'s)."""
        choices = {
            "stage": (self.stage, STAGES),
            "packing": (self.packing, PACKING_NAMES),
            "rope": (self.rope, tuple(ROPE_VARIANTS)),
            "attention_backend": (self.attention_backend, ATTENTION_BACKEND_NAMES),
            "schedule": (self.schedule, tuple(LR_SCHEDULES)),
            "t_per": (self.t_per, T_PER),
            "log": (self.log, LOGS),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        unknown_tasks = [task for task in self.tasks if task not in TASK_NAMES]
        if unknown_tasks:
            raise ValueError(f"unknown task(s) {unknown_tasks}; choose from {list(TASK_NAMES)}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        for name in ("steps", "batch_size", "micro_batch_size", "save_every", "val_every",
                     "keep_checkpoints", "context_parallel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.task_key_digits < 1:
            raise ValueError(f"task_key_digits must be >= 1, got {self.task_key_digits}")
        if self.task_key_kind not in KEY_KINDS:
            raise ValueError(f"unknown task_key_kind {self.task_key_kind!r}; choose one of "
                             f"{', '.join(KEY_KINDS)}")
        if self.task_lengths is not None:
            low, high = self.task_lengths
            if not 1 <= low < high <= self.seq_len:
                raise ValueError(f"task_lengths {list(self.task_lengths)} must be (lo, hi) with "
                                 f"1 <= lo < hi <= seq_len ({self.seq_len})")
        span = self.task_curriculum_steps or self.steps
        if not 0 <= self.task_curriculum_hold < span:
            raise ValueError(f"task_curriculum_hold must lie in [0, task_curriculum_steps or "
                             f"steps = {span}), got {self.task_curriculum_hold}")
        for name in ("warmup_steps", "val_rows", "val_task_rows", "loss_chunk"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        fractions = ("decay_fraction", "min_lr_ratio", "random_length_fraction", "task_fraction",
                     "answer_only_fraction")
        for name in (*fractions, "task_fraction_final", "answer_only_fraction_final"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must lie in (0, 1), got {self.eps}")
        if self.lr <= 0 or self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError(
                f"need lr > 0, grad_clip >= 0, weight_decay >= 0; got lr {self.lr}, "
                f"grad_clip {self.grad_clip}, weight_decay {self.weight_decay}"
            )
        released = get_preset(self.preset).released
        if released and self.stage != "extend":
            raise ValueError(f"preset {self.preset!r} post-trains a released LLaDA checkpoint: "
                             "use stage 'extend' with init (the checkpoint's folder)")
        if released and not ROPE_VARIANTS[self.rope].base_only:  # before training, not at export
            allowed = [name for name, variant in ROPE_VARIANTS.items() if variant.base_only]
            raise ValueError(f"rope {self.rope!r} sets per-pair frequencies, which LLaDA's "
                             f"released format (one rope_theta) cannot hold; preset "
                             f"{self.preset!r} exports in it: choose one of {', '.join(allowed)}")
        if self.stage == "extend":
            if self.init is None:
                raise ValueError("stage 'extend' needs init: a pretrained run or model folder")
            if self.model:
                raise ValueError(
                    f"stage 'extend' takes the model from init; drop model overrides {self.model}"
                )
        elif self.rope != "default":
            raise ValueError(
                f"stage 'pretrain' trains at T_train with rope 'default', got rope {self.rope!r}"
            )
        else:
            self._check_model()

    def _check_model(self) -> None:
        """The model fields (pretrain): known LLaDAConfig names of the right types, whose shapes
        build a model (LLaDAConfig's own checks; no model is built)."""
        fields = check_model_fields(self.model)
        try:
            check_model_shape({**fields, "max_sequence_length": self.seq_len,
                               "attention_backend": self.attention_backend})
        except ValueError as error:
            raise ValueError(f"model: {error}") from None

def make_config(preset: str, stage: str, out: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """TrainConfig for `stage` at `preset`: defaults < preset stage settings < overrides (a preset
    `task_lengths` whose longest document is the row length follows an overridden `seq_len`).

    Raises ValueError naming unknown fields or a value of the wrong type (checked against
    TrainConfig's annotations, as the preset's values) or a value `validate` refuses. A plain
    value: its files are checked and its dtype resolved by `prepare_run`.
    """
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise ValueError(f"out must be a folder path (a non-empty str or os.PathLike), got "
                         f"{out!r}")
    config = TrainConfig(preset=preset, stage=stage, out=str(out),
                         **stage_settings(preset, stage, **overrides))
    config.validate()
    return config


def prepare_run(config: TrainConfig) -> TrainConfig:
    """The config a run trains with, on this machine: its values validated, the files it reads
    checked (`check_run_files`) and its dtype resolved (`resolved_dtype`). What the trainer,
    `minillada train` and the study call before a run; a prepared config comes back unchanged."""
    config.validate()
    check_run_files(config)
    check_attention_device(config)
    check_tracker(config.log)
    return resolved_dtype(config)


def check_attention_device(config: TrainConfig) -> None:
    """FlexAttention trains on CUDA only: on a CPU it runs eagerly and has no backward. A run
    with `attention_backend` "flex" on a machine without CUDA is refused in one line, naming the
    backend that trains there (the same attention)."""
    if config.attention_backend != "flex":
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError("attention_backend 'flex' trains on CUDA only (FlexAttention has no "
                         "backward on a CPU) and this machine has no CUDA device: add --set "
                         "attention_backend=per_document (the same attention, one SDPA call "
                         "per document)")


def resolved_dtype(config: TrainConfig) -> TrainConfig:
    """`config` with dtype "auto" made this machine's float32 or bfloat16
    (`training.precision.choose_precision`: torch loads; a CPU probes its matmuls once, cached);
    an explicit bfloat16 is logged, with a warning where it is slower than float32."""
    if config.dtype == "float32":
        return config
    chosen = choose_precision(config.dtype).dtype
    return config if chosen == config.dtype else dataclasses.replace(config, dtype=chosen)


def check_run_files(config: TrainConfig) -> None:
    """The files a run reads, before any work: a corpus given as a path must exist, and an
    extend run's init must be a model folder (FileNotFoundError naming it) at the run's preset:
    a minillada run's model dims must be the preset's, a released checkpoint (the `llada-8b`
    recipe) must hold LLaDA's config fields, every weight's name and shape, its own tokenizer and
    token roles; every weight file must be a readable safetensors file. ValueError or
    FileNotFoundError naming the problem."""
    if config.corpus != STDLIB and not Path(config.corpus).exists():
        raise FileNotFoundError(f"corpus {config.corpus!r} does not exist")
    if config.stage != "extend":
        return
    folder = model_folder(config.init)  # FileNotFoundError naming it
    fields = read_model_config(folder)  # JSON and LLaDA's model_type, before torch loads
    if get_preset(config.preset).released:
        _check_released_init(folder, fields)
    else:
        _check_init_matches_preset(folder, fields, config.preset)
    weight_files(folder)  # a missing, truncated or garbage weight file, named


def _check_released_init(folder: Path, fields: Mapping[str, Any]) -> None:
    """A released-format init: LLaDA's config fields, every weight's name and shape, its own
    tokenizer and token roles (ValueError or FileNotFoundError naming the problem)."""
    from minillada.released.export import modeling_files
    from minillada.released.llada import checkpoint_tensors
    from minillada.released.token_roles import load_released_tokenizer

    config, _ = checkpoint_tensors(folder)
    modeling_files(fields, folder)
    tokenizer, _ = load_released_tokenizer(folder)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"the tokenizer in {str(folder)!r} has {len(tokenizer)} tokens, more "
                         f"than the model's vocabulary {config.vocab_size}")


def _check_init_matches_preset(folder: Path, saved: Mapping[str, Any], preset_name: str) -> None:
    """An init's model dims (its config.json `saved`) must be the preset's: ValueError naming
    every field that differs (saved value vs preset value). Fields the saved config lacks are
    not compared."""
    preset = get_preset(preset_name)
    expected = {**preset.model, "max_sequence_length": preset.train_len}
    differ = [f"{name} {saved[name]!r} vs {expected[name]!r}" for name in MATCHED_MODEL_FIELDS
              if name in saved and name in expected and saved[name] != expected[name]]
    if differ:
        raise ValueError(
            f"init {str(folder)!r} was not trained at preset {preset_name!r}: "
            f"{', '.join(differ)} (saved vs preset); extend it at its own preset (a released "
            "LLaDA checkpoint: --preset llada-8b)")


def stage_settings(preset: str, stage: str, **overrides: Any) -> dict[str, Any]:
    """The TrainConfig fields `make_config` layers over the defaults (the preset's stage settings,
    then the overrides), names and types checked; nothing else is validated."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    chosen = get_preset(preset)
    # Paths may be given as Path objects, like `out`; every other value must fit its annotation.
    overrides = {name: str(value) if name in ("init", "corpus") and isinstance(value, os.PathLike)
                 else value for name, value in overrides.items()}
    overrides = check_overrides(overrides)
    preset_stage = getattr(chosen, stage)
    default_len = chosen.train_len if stage == "pretrain" else chosen.target_len
    settings = {"seq_len": default_len, **preset_stage, **overrides}
    # Retrieval documents that reach the preset's row length follow an overridden row length.
    lengths = preset_stage.get("task_lengths")
    if lengths and lengths[1] == default_len and "task_lengths" not in overrides:
        if lengths[0] >= settings["seq_len"]:  # name what the user set, not the derived field
            raise ValueError(
                f"seq_len {settings['seq_len']} (--target-len) is too short for the preset's "
                f"retrieval documents of at least {lengths[0]} tokens: choose a seq_len above "
                f"{lengths[0]}, or set task_lengths=[lo, hi] with lo < hi <= "
                f"{settings['seq_len']}")
        settings["task_lengths"] = (lengths[0], settings["seq_len"])
    # Model fields merge (preset dims < stage < overrides); extend takes init's model, so any
    # model override there is left for validate() to reject.
    base_model = chosen.model if stage == "pretrain" else {}
    settings["model"] = {**base_model, **preset_stage.get("model", {}),
                         **overrides.get("model", {})}
    return check_overrides(settings)  # the preset's values too


# Fields that do not change the trajectory: a run may resume with other values for them.
# Activation checkpointing recomputes the same values: memory, not the trajectory. Context
# parallelism, like the world size, splits the same sums over ranks: float rounding only.
RUN_CONTROL_FIELDS = frozenset({"out", "save_every", "keep_checkpoints", "val_every", "progress",
                                "activation_checkpointing", "log", "context_parallel"})


def incompatible_fields(saved: Mapping[str, Any], config: TrainConfig) -> list[str]:
    """Names of the trajectory fields whose values differ between a checkpoint and `config`. A
    field the saved config lacks was added since, with a default that keeps the old behaviour:
    it counts as that default."""
    current = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists, like saved
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    saved = {**json.loads(json.dumps(defaults)), **saved}
    names = sorted(set(saved) | set(current))
    return [n for n in names if n not in RUN_CONTROL_FIELDS and saved.get(n) != current.get(n)]


# ---------------------------------------------------------------------------------------------
# Schedules: pure functions of the step
# ---------------------------------------------------------------------------------------------


def _warmup_cosine(
    step: int, steps: int, warmup: int, decay_fraction: float, floor: float
) -> float:
    """Linear warmup, then cosine from 1 to `floor` over the remaining steps."""
    progress = (step - warmup + 1) / max(1, steps - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _warmup_stable_decay(
    step: int, steps: int, warmup: int, decay_fraction: float, floor: float
) -> float:
    """Linear warmup, constant, then linear decay to `floor` over the last `decay_fraction`."""
    decay_steps = max(1, round(decay_fraction * steps))
    decayed = (step - (steps - decay_steps) + 1) / decay_steps
    return 1.0 - (1.0 - floor) * min(1.0, max(0.0, decayed))


LR_SCHEDULES = {"cosine": _warmup_cosine, "wsd": _warmup_stable_decay}


def lr_at(config: TrainConfig, step: int) -> float:
    """Learning rate of (0-based) `step`: warmup (step + 1) / warmup_steps, then the schedule."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    shape = LR_SCHEDULES[config.schedule]
    return config.lr * shape(
        step, config.steps, config.warmup_steps, config.decay_fraction, config.min_lr_ratio
    )


def curriculum_progress(config: TrainConfig, step: int) -> float:
    """How far the retrieval curriculum is at `step`, in [0, 1]: 0 for the first
    task_curriculum_hold steps, then linear to 1 at step task_curriculum_steps - 1 (default: the
    run's last step), then 1."""
    hold, span = config.task_curriculum_hold, config.task_curriculum_steps or config.steps
    return min(1.0, max(0, step - hold) / max(1, span - hold - 1))


def task_fraction_at(config: TrainConfig, step: int) -> float:
    """Fraction of task rows at `step`: task_fraction, moving to task_fraction_final (when set)
    along `curriculum_progress`."""
    if config.task_fraction_final is None:
        return config.task_fraction
    progress = curriculum_progress(config, step)
    return config.task_fraction + (config.task_fraction_final - config.task_fraction) * progress


def answer_only_fraction_at(config: TrainConfig, step: int) -> float:
    """Share of answer-only (SFT-style) rows among the task rows at `step`:
    answer_only_fraction, moving to answer_only_fraction_final (when set) along
    `curriculum_progress`."""
    if config.answer_only_fraction_final is None:
        return config.answer_only_fraction
    progress = curriculum_progress(config, step)
    return config.answer_only_fraction + (
        config.answer_only_fraction_final - config.answer_only_fraction) * progress

