"""The trainer: one loop for a single process and for `torchrun` + FSDP2, with exact resume.

    minillada train --preset cpu --stage pretrain --out runs/cpu/pretrain
    minillada train --preset cpu --stage extend --init runs/cpu/pretrain --rope diffusion_ntk \
        --packing adaptive --out runs/cpu/extend-adaptive
    torchrun --nproc_per_node=2 -m minillada train --preset smoke --stage pretrain --out ...

Stages: `pretrain` trains a fresh model on documents packed to T_train; `extend` loads a pretrained
model (`init`), sets its RoPE variant for the target length (`seq_len`) and post-trains on
documents packed to that length with a packing strategy (UltraLLaDA).

One optimizer step s, identical on every rank and for any world size:

1. The global batch: `batch_size` rows. Corpus rows come in a seeded order per epoch, read from a
   cursor (the data-loader position); a fraction `task_fraction(s)` of rows are synthetic
   retrieval rows instead, and a fraction `random_length_fraction` of steps is cut to a random
   length in [1, seq_len] (LLaDA's 1 %).
2. LLaDA's forward process masks the whole global batch with a generator seeded by (seed, s); each
   rank then keeps its contiguous slice of rows and runs it in micro-batches.
3. loss = sum over micro-batches of diffusion_loss * rows / local rows: the mean over the local
   rows; FSDP averages gradients over ranks, so the gradient is that of the global mean.
4. Clip the global gradient norm, set lr(s), AdamW step.

Every random draw comes from a generator seeded by (seed, purpose, step, ...), never from global
RNG state: a resumed run redraws exactly what an uninterrupted one draws, whatever the world size.
A checkpoint therefore holds the model, the optimizer, the step, the corpus cursor and the token
count (the learning rate is a pure function of the step).

Run folder:

    config.json          this TrainConfig
    metrics.jsonl        one line per step: step, loss, lr, grad_norm, tokens, tokens_per_s, ...
                         (+ val_loss, val_task_* at validation steps)
    checkpoints/step_NNNNNN/state.pt, checkpoints/latest (the name of the newest complete one)
    model/               the final model (save_pretrained) and its tokenizer
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import shutil
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from tqdm.auto import tqdm

from minillada import data
from minillada.attention import ATTENTION_BACKENDS
from minillada.diffusion import NoisedBatch, diffusion_loss, forward_process, mask_exactly
from minillada.model import LLaDAConfig, LLaDAModelLM
from minillada.packing import PACKING_STRATEGIES, pack_documents
from minillada.presets import get_preset
from minillada.rope import ROPE_VARIANTS

log = logging.getLogger(__name__)

STAGES = ("pretrain", "extend")
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
T_PER = ("sequence", "document")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run. Defaults are LLaDA's where LLaDA states one.

    Build one with `make_config(preset, stage, out, **overrides)`: TrainConfig defaults, then the
    preset's stage settings, then the overrides. Retrieval levers (see MINI_STUDY_NOTES): the
    model's `include_qkv_bias` (preset model dims, pretrain only), `task_fraction` of synthetic
    retrieval rows (`tasks`), decaying linearly to `task_fraction_final` over
    `task_curriculum_steps` (a curriculum), `answer_only_fraction` of those rows where only the
    answer may be masked (SFT-style), `stratified_t`, `grad_clip`, and the lr schedule.
    """

    # what and where
    preset: str = "smoke"
    stage: str = "pretrain"
    out: str = "runs/smoke/pretrain"
    init: str | None = None  # extend: a pretrained run folder or exported model folder
    corpus: str = "stdlib"  # data.load_corpus source
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
    answer_only_fraction: float = 0.0
    task_key_digits: int = 5  # digits of passkey / NIAH numbers in task rows
    # validation, checkpoints, precision
    val_every: int = 50
    val_rows: int = 16  # held-out corpus rows, masked with a fixed seed
    val_task_rows: int = 0  # held-out task rows, answer fully masked: answer accuracy
    save_every: int = 50
    keep_checkpoints: int = 2
    dtype: str = "float32"  # or bfloat16: autocast (CPU, or one GPU), FSDP2 policy (GPUs)
    progress: bool = True

    def validate(self) -> None:
        """Raise ValueError (FileNotFoundError for paths) naming every problem, before any work."""
        choices = {
            "stage": (self.stage, STAGES),
            "packing": (self.packing, tuple(PACKING_STRATEGIES)),
            "rope": (self.rope, tuple(ROPE_VARIANTS)),
            "attention_backend": (self.attention_backend, tuple(ATTENTION_BACKENDS)),
            "schedule": (self.schedule, tuple(LR_SCHEDULES)),
            "dtype": (self.dtype, tuple(PRECISIONS)),
            "t_per": (self.t_per, T_PER),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        unknown_tasks = [task for task in self.tasks if task not in data.TASKS]
        if unknown_tasks:
            raise ValueError(f"unknown task(s) {unknown_tasks}; choose from {list(data.TASKS)}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        for name in ("steps", "batch_size", "micro_batch_size", "save_every", "val_every",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.task_key_digits < 1:
            raise ValueError(f"task_key_digits must be >= 1, got {self.task_key_digits}")
        for name in ("warmup_steps", "val_rows", "val_task_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        fractions = ("decay_fraction", "min_lr_ratio", "random_length_fraction", "task_fraction",
                     "answer_only_fraction")
        for name in (*fractions, "task_fraction_final"):
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
        if self.stage == "extend":
            if self.init is None:
                raise ValueError("stage 'extend' needs init: a pretrained run or model folder")
            model_folder(self.init)  # FileNotFoundError naming it
            if self.model:
                raise ValueError(
                    f"stage 'extend' takes the model from init; drop model overrides {self.model}"
                )
        elif self.rope != "default":
            raise ValueError(
                f"stage 'pretrain' trains at T_train with rope 'default', got rope {self.rope!r}"
            )
        if self.corpus != "stdlib" and not Path(self.corpus).exists():
            raise FileNotFoundError(f"corpus {self.corpus!r} does not exist")


def make_config(preset: str, stage: str, out: str | os.PathLike, **overrides: Any) -> TrainConfig:
    """TrainConfig for `stage` at `preset`: defaults < preset stage settings < overrides.

    Raises ValueError naming unknown fields; the result is validated.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    chosen = get_preset(preset)
    stage_settings = getattr(chosen, stage)
    settings = {"seq_len": chosen.train_len if stage == "pretrain" else chosen.target_len,
                **stage_settings, **overrides}
    # Model fields merge (preset dims < stage < overrides); extend takes init's model, so any
    # model override there is left for validate() to reject.
    base_model = chosen.model if stage == "pretrain" else {}
    settings["model"] = {**base_model, **stage_settings.get("model", {}),
                         **overrides.get("model", {})}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
    if "tasks" in settings:
        settings["tasks"] = tuple(settings["tasks"])
    if "betas" in settings:
        settings["betas"] = tuple(settings["betas"])
    config = TrainConfig(preset=preset, stage=stage, out=str(out), **settings)
    config.validate()
    return config


# Fields that do not change the trajectory: a run may resume with other values for them.
RUN_CONTROL_FIELDS = frozenset({"out", "save_every", "keep_checkpoints", "val_every", "progress"})


def incompatible_fields(saved: Mapping[str, Any], config: TrainConfig) -> list[str]:
    """Names of the trajectory fields whose values differ between a checkpoint and `config`."""
    current = json.loads(json.dumps(dataclasses.asdict(config)))  # tuples -> lists, like saved
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


def task_fraction_at(config: TrainConfig, step: int) -> float:
    """Fraction of task rows at `step`: linear from task_fraction to task_fraction_final over
    task_curriculum_steps (default the whole run), then constant."""
    if config.task_fraction_final is None:
        return config.task_fraction
    span = config.task_curriculum_steps or config.steps
    progress = min(1.0, step / max(1, span - 1))
    return config.task_fraction + (config.task_fraction_final - config.task_fraction) * progress


def derived_seed(seed: int, *parts: Any) -> int:
    """A stable 63-bit seed for one purpose (e.g. "mask", step); independent of PYTHONHASHSEED."""
    words = [zlib.crc32(str(part).encode()) for part in (seed, *parts)]
    return int(np.random.SeedSequence(words).generate_state(2, np.uint64)[0] >> np.uint64(1))


# ---------------------------------------------------------------------------------------------
# Data: tokenized corpus (cached), packed rows, task rows, the global batch of a step
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """Rows of equal length: tokens, document ids (-1 = padding), positions, and which tokens
    the forward process may mask."""

    tokens: torch.Tensor
    doc_ids: torch.Tensor
    positions: torch.Tensor
    maskable: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.tokens, self.doc_ids, self.positions, self.maskable

    def select(self, index: slice | torch.Tensor) -> Rows:
        return Rows(*(t[index] for t in self.tensors()))

    def cut(self, length: int) -> Rows:
        return Rows(*(t[:, :length] for t in self.tensors()))

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        return Rows(*(torch.cat(ts) for ts in zip(*(p.tensors() for p in parts), strict=True)))


def tokenized_split(tokenizer, corpus: str, split_seed: int, split: str) -> list[np.ndarray]:
    """The documents of one split (`train`, `validation` or `test`) of `corpus` as token arrays,
    tokenized once and cached (keyed by corpus, split seed and the tokenizer's exact vocabulary
    and rules). Documents that tokenize to nothing are dropped."""
    if split not in data.CorpusSplit._fields:
        raise ValueError(f"unknown split {split!r}; choose one of {data.CorpusSplit._fields}")
    fingerprint = zlib.crc32(tokenizer.backend_tokenizer.to_str().encode())
    source = str(Path(corpus).resolve()) if corpus != "stdlib" else corpus
    key = f"{zlib.crc32(source.encode()):08x}-{fingerprint:08x}-{split_seed}-{split}"
    folder = data.cache_dir() / "tokens" / key
    if not (folder / "offsets.npy").is_file():
        texts = getattr(data.split_corpus(data.load_corpus(corpus), seed=split_seed), split)
        docs = [doc for doc in data.tokenize_documents(tokenizer, texts) if doc]
        offsets = np.cumsum([0] + [len(doc) for doc in docs]).astype(np.int64)
        tokens = np.fromiter((t for doc in docs for t in doc), dtype=np.int32, count=offsets[-1])
        temporary = folder.with_name(f".{key}.{os.getpid()}")
        temporary.mkdir(parents=True, exist_ok=True)
        np.save(temporary / "tokens.npy", tokens)
        np.save(temporary / "offsets.npy", offsets)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(temporary, folder)
    tokens, offsets = np.load(folder / "tokens.npy"), np.load(folder / "offsets.npy")
    return [tokens[a:b] for a, b in itertools.pairwise(offsets)]


def packed_rows(docs: list[np.ndarray], config: TrainConfig, tokenizer) -> Rows:
    """Documents packed into rows of seq_len under the configured strategy (int32 storage)."""
    packed = pack_documents(
        [doc.tolist() for doc in docs], config.seq_len, config.packing,
        eod_token_id=tokenizer.eod_token_id, pad_token_id=tokenizer.pad_token_id,
        restart_positions=config.restart_positions,
    )
    return Rows(
        packed.tokens.int(), packed.doc_ids.int(), packed.positions.int(), packed.doc_ids >= 0
    )


def task_row(tokenizer, task: str, length: int, depth: float, seed: int, answer_only: bool,
             key_digits: int = 5) -> Rows:
    """One synthetic retrieval sample of exactly `length` tokens, one document; maskable: every
    token, or only the answer (SFT-style) when `answer_only`."""
    sample = data.make_task_sample(tokenizer, task, length=length, depth=depth, seed=seed,
                                   key_digits=key_digits)
    ids = torch.tensor([*sample.prompt_ids, *sample.answer_ids], dtype=torch.int32)
    if len(ids) != length:
        raise ValueError(f"task {task!r} gave {len(ids)} tokens for length {length}")
    maskable = torch.ones(length, dtype=torch.bool)
    if answer_only:
        maskable[: len(sample.prompt_ids)] = False
    return Rows(ids[None], torch.zeros(1, length, dtype=torch.int32),
                torch.arange(length, dtype=torch.int32)[None], maskable[None])


class BatchSource:
    """The global batch of each step, a pure function of (seed, step) and the corpus cursor.

    Corpus rows are read in a fresh seeded permutation per epoch; `cursor` counts the corpus rows
    consumed so far and is the data-loader position saved in checkpoints.
    """

    def __init__(self, rows: Rows, config: TrainConfig, tokenizer) -> None:
        if len(rows) == 0:
            raise ValueError(f"the corpus {config.corpus!r} gave no training rows")
        self.rows, self.config, self.tokenizer = rows, config, tokenizer
        self.cursor = 0
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def _corpus_rows(self, count: int) -> Rows:
        picked = []
        for position in range(self.cursor, self.cursor + count):
            epoch, index = divmod(position, len(self.rows))
            if epoch != self._epoch:
                rng = np.random.default_rng(derived_seed(self.config.seed, "order", epoch))
                self._epoch, self._order = epoch, rng.permutation(len(self.rows))
                if epoch > 0:
                    log.info("corpus epoch %d starts (%d rows per epoch)", epoch, len(self.rows))
            picked.append(int(self._order[index]))
        self.cursor += count
        return self.rows.select(torch.tensor(picked, dtype=torch.long))

    def batch(self, step: int) -> tuple[Rows, int]:
        """The global rows of `step` and how many of them are task rows."""
        config = self.config
        rng = np.random.default_rng(derived_seed(config.seed, "batch", step))
        cut = rng.random() < config.random_length_fraction
        length = int(rng.integers(1, config.seq_len + 1)) if cut else config.seq_len
        # A cut step has no task rows: a cut retrieval row would lose its answer.
        is_task = rng.random(config.batch_size) < (0.0 if cut else task_fraction_at(config, step))
        corpus = self._corpus_rows(int((~is_task).sum()))
        if not is_task.any():
            return corpus.cut(length), 0
        parts, corpus_index = [], 0
        for row, task_flag in enumerate(is_task):
            if task_flag:
                task = config.tasks[int(rng.integers(len(config.tasks)))]
                parts.append(task_row(
                    self.tokenizer, task, length, float(rng.uniform(0.0, 100.0)),
                    derived_seed(config.seed, "task", step, row),
                    bool(rng.random() < config.answer_only_fraction), config.task_key_digits,
                ))
            else:
                parts.append(corpus.select(slice(corpus_index, corpus_index + 1)))
                corpus_index += 1
        return Rows.concat(parts), int(is_task.sum())


def row_tokens(rows: Rows) -> torch.Tensor:
    """The loss normaliser of each row: its length L (LLaDA pre-training), or for an answer-only
    row its number of answer tokens (LLaDA SFT), so that a 5-token answer weighs like a row."""
    return torch.where(answer_only_rows(rows), rows.maskable.sum(dim=1), rows.tokens.shape[1])


def answer_only_rows(rows: Rows) -> torch.Tensor:
    """[B] bool: rows where some real token is not maskable (SFT-style task rows)."""
    return (~rows.maskable & (rows.doc_ids >= 0)).any(dim=1)


def noise(rows: Rows, config: TrainConfig, mask_token_id: int, generator_seed: int) -> NoisedBatch:
    """LLaDA's forward process on `rows` with a generator seeded by `generator_seed`; answer-only
    rows are masked as LLaDA's SFT estimator does (`diffusion.mask_exactly`)."""
    generator = torch.Generator().manual_seed(generator_seed)
    noised = forward_process(
        rows.tokens.long(), mask_token_id, eps=config.eps, generator=generator,
        doc_ids=rows.doc_ids.long(), t_per=config.t_per, stratified=config.stratified_t,
        maskable=rows.maskable,
    )
    sft = answer_only_rows(rows)
    if not sft.any():
        return noised
    masked, p_mask = mask_exactly(rows.maskable[sft], generator)
    all_masked, all_p = noised.masked.clone(), noised.p_mask.clone()
    all_masked[sft], all_p[sft] = masked, p_mask
    noisy = torch.where(all_masked, mask_token_id, rows.tokens.long())
    return NoisedBatch(noisy, all_masked, all_p)


# ---------------------------------------------------------------------------------------------
# Distributed setup and FSDP2
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: rank, world size, device, and whether torchrun launched it."""

    rank: int
    world: int
    device: torch.device
    distributed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def start_runtime() -> Runtime:
    """A process group (nccl on GPU, gloo on CPU) when launched by torchrun, else one process."""
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ:
        return Runtime(0, 1, torch.device("cuda" if cuda else "cpu"), False)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Runtime(dist.get_rank(), dist.get_world_size(), device, True)


def stop_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.barrier()  # destroying a gloo group while a peer still talks to it can crash
        dist.destroy_process_group()


def shard_model(model: LLaDAModelLM, runtime: Runtime, param_dtype: torch.dtype | None) -> None:
    """FSDP2 as torchtitan applies it: `fully_shard` each block, then the root (embedding, final
    norm and head); bf16 parameters with fp32 gradient reduction when `param_dtype` is given."""
    mesh = init_device_mesh(runtime.device.type, (runtime.world,))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    blocks = model.model.transformer.blocks
    for index, block in enumerate(blocks):
        # The root all-gathers the last block again right after forward: keep it unsharded.
        fully_shard(block, mesh=mesh, mp_policy=policy,
                    reshard_after_forward=index < len(blocks) - 1)
    fully_shard(model, mesh=mesh, mp_policy=policy)


def all_sum(value: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum of a tensor over ranks (the tensor itself in one process)."""
    value = value.detach().clone()
    if runtime.distributed:
        dist.all_reduce(value)
    return value


def all_mean(value: torch.Tensor, runtime: Runtime) -> float:
    """Mean of a scalar over ranks."""
    return float(all_sum(value, runtime)) / runtime.world


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def model_folder(path: str | os.PathLike) -> Path:
    """The exported model inside a run folder, or `path` itself if it holds a config.json."""
    path = Path(path)
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no model at {str(path)!r} (no config.json in it or in model/)")


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint of a run folder (named by checkpoints/latest), or None."""
    pointer = out / "checkpoints" / "latest"
    return out / "checkpoints" / pointer.read_text().strip() if pointer.is_file() else None


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def save_checkpoint(out: Path, state: dict[str, Any], keep: int) -> Path:
    """Write `state` to checkpoints/step_NNNNNN/state.pt atomically: into a temporary folder,
    renamed into place, then `latest` re-pointed (itself atomic). A crash at any moment leaves the
    previous `latest` complete. Keeps the newest `keep` checkpoints."""
    root = out / "checkpoints"
    name = f"step_{state['step']:06d}"
    temporary = root / f".{name}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    torch.save(state, temporary / "state.pt")
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(temporary, final)
    _atomic_write_text(root / "latest", name)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old)
    return final


def load_checkpoint(folder: Path) -> dict[str, Any]:
    return torch.load(folder / "state.pt", map_location="cpu", weights_only=True)


def export_model(model: LLaDAModelLM, tokenizer, folder: Path, runtime: Runtime) -> None:
    """save_pretrained the full (gathered) model and the tokenizer into `folder`, atomically."""
    state = get_model_state_dict(model, options=_FULL)  # a collective under FSDP
    if runtime.is_main:
        plain = LLaDAModelLM(model.config)
        plain.load_state_dict(state)
        temporary = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        plain.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(temporary, folder)
    runtime.barrier()


# ---------------------------------------------------------------------------------------------
# Model, optimizer, metrics
# ---------------------------------------------------------------------------------------------


def build_model(config: TrainConfig, tokenizer) -> LLaDAModelLM:
    """A fresh model (pretrain, seeded) or the init model with the RoPE variant for seq_len."""
    if config.stage == "extend":
        model = LLaDAModelLM.from_pretrained(model_folder(config.init))
        model.config.attention_backend = config.attention_backend
        model.set_rope(config.rope, target_len=config.seq_len, params=config.rope_params)
        return model
    fields = {**config.model, "max_sequence_length": config.seq_len,
              "attention_backend": config.attention_backend}
    if len(tokenizer) > fields["vocab_size"]:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens > vocab_size {fields['vocab_size']}"
        )
    torch.manual_seed(config.seed)
    return LLaDAModelLM(LLaDAConfig(
        **fields, mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eod_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    ))


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (embeddings, projections), not on norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


class MetricsLog:
    """metrics.jsonl: one JSON object per line, appended by rank 0."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop lines past `step` (written after the checkpoint a run resumes from)."""
        if self.path.is_file():
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= step]
            _atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def append(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]


def read_metrics(out: str | os.PathLike) -> list[dict[str, Any]]:
    """The metrics of a run folder, one dict per step."""
    return MetricsLog(Path(out) / "metrics.jsonl").read()


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


class Trainer:
    """State of one run; `run()` trains to config.steps and returns the exported model folder."""

    def __init__(self, config: TrainConfig, runtime: Runtime, resume: bool = False) -> None:
        config.validate()
        if config.batch_size % runtime.world or config.val_rows % runtime.world \
                or config.val_task_rows % runtime.world:
            raise ValueError(
                f"batch_size ({config.batch_size}), val_rows ({config.val_rows}) and "
                f"val_task_rows ({config.val_task_rows}) must be multiples of the world size "
                f"({runtime.world})"
            )
        self.config, self.runtime = config, runtime
        self.out = Path(config.out)
        resume_from = self._check_resume(resume)
        self.tokenizer = self._tokenizer()
        self.block_diagonal = PACKING_STRATEGIES[config.packing].block_diagonal
        self.model = build_model(config, self.tokenizer).to(runtime.device)
        self.model.config.activation_checkpointing = config.activation_checkpointing
        self.mask_token_id = self.model.config.mask_token_id
        precision = PRECISIONS[config.dtype]
        fsdp_precision = runtime.distributed and runtime.device.type == "cuda"
        if runtime.distributed:
            shard_model(self.model, runtime, precision if fsdp_precision else None)
        use_autocast = precision != torch.float32 and not fsdp_precision
        self.autocast = (torch.autocast(runtime.device.type, dtype=precision) if use_autocast
                         else nullcontext())
        self.optimizer = build_optimizer(self.model, config)
        self.source = BatchSource(self._rows("train"), config, self.tokenizer)
        self.val_rows = self._val_rows()
        self.metrics = MetricsLog(self.out / "metrics.jsonl")
        self.step, self.tokens = 0, 0
        if resume_from is not None:
            self._restore(resume_from)

    # -- setup ---------------------------------------------------------------------------------

    def _check_resume(self, resume: bool) -> Path | None:
        """The checkpoint to resume from; errors for a clash, before any work is done."""
        checkpoint = latest_checkpoint(self.out)
        if checkpoint is None:
            if resume:
                log.info("no checkpoint in %s: starting from step 0", self.out)
            return None
        if not resume:
            raise ValueError(
                f"{self.out} already holds a run (checkpoint {checkpoint.name}); pass resume "
                "(--resume) to continue it, or choose another out folder"
            )
        saved = json.loads((checkpoint.parent.parent / "config.json").read_text())
        differing = incompatible_fields(saved, self.config)
        if differing:
            details = ", ".join(f"{n}: {saved.get(n)!r} -> {getattr(self.config, n, None)!r}"
                                for n in differing)
            raise ValueError(f"cannot resume {self.out}: config differs in {details}")
        return checkpoint

    def _tokenizer(self):
        if self.config.stage == "extend":
            folder = model_folder(self.config.init)
            vocab = json.loads((folder / "config.json").read_text())["vocab_size"]
            return data.load_tokenizer(folder, vocab_size=vocab)
        return data.get_tokenizer(self.config.model["vocab_size"], corpus=self.config.corpus,
                                  split_seed=self.config.split_seed)

    def _rows(self, split: str) -> Rows:
        config = self.config
        if self.runtime.is_main:  # rank 0 fills the token cache, then the others read it
            tokenized_split(self.tokenizer, config.corpus, config.split_seed, split)
        self.runtime.barrier()
        docs = tokenized_split(self.tokenizer, config.corpus, config.split_seed, split)
        return packed_rows(docs, config, self.tokenizer)

    def _val_rows(self) -> Rows | None:
        config = self.config
        if config.val_rows == 0:
            return None
        rows = self._rows("validation")
        if len(rows) < config.val_rows:
            log.info("only %d held-out rows of %d tokens: validating on %d, not val_rows %d",
                     len(rows), config.seq_len, len(rows) - len(rows) % self.runtime.world,
                     config.val_rows)
        # Seeded by split_seed, not seed: runs with different seeds validate on the same rows.
        rng = np.random.default_rng(derived_seed(config.split_seed, "val_rows"))
        count = min(config.val_rows, len(rows) - len(rows) % self.runtime.world)
        return rows.select(torch.from_numpy(rng.permutation(len(rows))[:count]))

    def _restore(self, checkpoint: Path) -> None:
        state = load_checkpoint(checkpoint)
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
        self.step, self.tokens = state["step"], state["tokens"]
        self.source.cursor = state["corpus_cursor"]
        if self.runtime.is_main:
            self.metrics.truncate_after(self.step)
        log.info("resumed %s at step %d", self.out, self.step)

    # -- one step ------------------------------------------------------------------------------

    def _local(self, rows: Rows, noised: NoisedBatch) -> Iterator[tuple[Rows, NoisedBatch, float]]:
        """This rank's contiguous slice of the global rows in micro-batches, each with its weight
        rows / local rows."""
        per_rank = len(rows) // self.runtime.world
        start = self.runtime.rank * per_rank
        size = self.config.micro_batch_size
        for first in range(start, start + per_rank, size):
            index = slice(first, min(first + size, start + per_rank))
            part = NoisedBatch(*(t[index] for t in noised))
            yield rows.select(index), part, (index.stop - index.start) / per_rank

    def _loss(self, rows: Rows, noised: NoisedBatch) -> torch.Tensor:
        device = self.runtime.device
        with self.autocast:
            logits = self.model(
                noised.noisy_ids.to(device),
                positions=rows.positions.long().to(device),
                doc_ids=rows.doc_ids.long().to(device) if self.block_diagonal else None,
            ).logits
        return diffusion_loss(logits.float(), rows.tokens.long().to(device),
                              noised.masked.to(device), noised.p_mask.to(device),
                              row_tokens=row_tokens(rows).to(device))

    def train_step(self) -> dict[str, Any]:
        config, step = self.config, self.step
        started = time.perf_counter()
        rows, task_rows = self.source.batch(step)
        noised = noise(rows, config, self.mask_token_id, derived_seed(config.seed, "mask", step))
        self.model.train()
        loss = torch.zeros((), device=self.runtime.device)
        for part_rows, part_noised, weight in self._local(rows, noised):
            micro_loss = self._loss(part_rows, part_noised) * weight
            micro_loss.backward()
            loss += micro_loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), config.grad_clip if config.grad_clip > 0 else math.inf
        )
        if isinstance(grad_norm, DTensor):
            grad_norm = grad_norm.full_tensor()
        lr = lr_at(config, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        step_tokens = int((rows.doc_ids >= 0).sum())
        self.tokens += step_tokens
        self.step += 1
        seconds = time.perf_counter() - started
        return {"step": self.step, "loss": all_mean(loss, self.runtime), "lr": lr,
                "grad_norm": float(grad_norm), "tokens": self.tokens,
                "tokens_per_s": step_tokens / seconds, "seq_len": rows.tokens.shape[1],
                "task_rows": task_rows}

    # -- validation ----------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Held-out masked-diffusion loss (fixed rows and masks); with val_task_rows, the answer
        accuracy on held-out task rows whose answer is fully masked (one forward pass)."""
        self.model.eval()
        results: dict[str, float] = {}
        if self.val_rows is not None:
            noised = noise(self.val_rows, self.config, self.mask_token_id,
                           derived_seed(self.config.split_seed, "val_mask"))
            total = sum(self._loss(r, n) * w for r, n, w in self._local(self.val_rows, noised))
            results["val_loss"] = all_mean(total, self.runtime)
        if self.config.val_task_rows:
            results.update(self._validate_tasks())
        self.model.train()
        return results

    def _validate_tasks(self) -> dict[str, float]:
        config = self.config
        rows = Rows.concat([
            task_row(self.tokenizer, config.tasks[i % len(config.tasks)], config.seq_len,
                     100.0 * i / max(1, config.val_task_rows - 1),
                     derived_seed(config.split_seed, "val_task", i), answer_only=True,
                     key_digits=config.task_key_digits)
            for i in range(config.val_task_rows)
        ])
        # Mask the whole answer: noised with t = 1 over the maskable (answer) tokens.
        noisy = torch.where(rows.maskable, self.mask_token_id, rows.tokens).long()
        counts = torch.zeros(3)  # correct answer tokens, answer tokens, exactly right answers
        placeholder = NoisedBatch(noisy, rows.maskable, torch.ones(noisy.shape))
        for part_rows, part, _ in self._local(rows, placeholder):
            with self.autocast:
                logits = self.model(part.noisy_ids.to(self.runtime.device),
                                    positions=part_rows.positions.long().to(self.runtime.device),
                                    doc_ids=None).logits  # one document per task row
            hit = (logits.argmax(-1).cpu() == part_rows.tokens) | ~part_rows.maskable
            counts += torch.tensor([float((hit & part_rows.maskable).sum()),
                                    float(part_rows.maskable.sum()), float(hit.all(dim=1).sum())])
        correct, answer_tokens, exact = all_sum(counts.to(self.runtime.device), self.runtime)
        return {"val_task_token_acc": float(correct / answer_tokens),
                "val_task_exact": float(exact) / config.val_task_rows}

    # -- run -----------------------------------------------------------------------------------

    def _save(self) -> None:
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer, options=_FULL)
        if self.runtime.is_main:
            save_checkpoint(self.out, {
                "step": self.step, "tokens": self.tokens, "corpus_cursor": self.source.cursor,
                "model": model_state, "optimizer": optimizer_state,
            }, self.config.keep_checkpoints)
        self.runtime.barrier()

    def run(self) -> Path:
        config, runtime = self.config, self.runtime
        if runtime.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(self.out / "config.json",
                               json.dumps(dataclasses.asdict(config), indent=2) + "\n")
        runtime.barrier()
        bar = tqdm(total=config.steps, initial=self.step, desc=f"{config.stage} {config.preset}",
                   disable=not (config.progress and runtime.is_main), dynamic_ncols=True)
        while self.step < config.steps:
            record = self.train_step()
            if self.step % config.val_every == 0 or self.step == config.steps:
                record.update(self.validate())
            if runtime.is_main:
                self.metrics.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}",
                            tok_s=f"{record['tokens_per_s']:.0f}")
            if self.step % config.save_every == 0 or self.step == config.steps:
                self._save()
        bar.close()
        export_model(self.model, self.tokenizer, self.out / "model", runtime)
        return self.out / "model"


def train(config: TrainConfig, resume: bool = False) -> Path:
    """Train the run `config` describes (continue its latest checkpoint with `resume`); returns
    the exported model folder.

    Launched by torchrun, every rank calls this and the model is FSDP2-sharded over them.
    """
    config.validate()
    runtime = start_runtime()
    try:
        return Trainer(config, runtime, resume).run()
    finally:
        stop_runtime(runtime)
