"""Named scales (`smoke`, `cpu`, `gpu`) that every notebook and command reads, and `llada-8b`,
the post-training recipe of a released LLaDA checkpoint (`released`: no pretrain stage).

Each preset is scale-matched to LLaDA-8B (its RoPE critical dimension at half the rotary dim),
post-trains at 16x T_train and evaluates up to 32x, as UltraLLaDA does (4K -> 64K -> 128K). Its
training stages (`pretrain`, `extend`) hold `training.config.TrainConfig` fields layered over the
LLaDA defaults; `make_config(preset, stage, out, **overrides)` builds the run. `evaluation` is the
grid every evaluation reads. Why each choice, and what was measured: docs/recipe.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EvalGrid:
    """Evaluation grid: NIAH depths (percent) and repeats per cell of the heatmaps, Monte-Carlo
    draws per likelihood estimate, held-out windows per length, the PPL chunk (LongLLaDA scores
    64-token chunks at T_train 4K; the mini models keep a chunk well inside their shorter
    window), the samples per (model, length) of the headline retrieval table (`headline_depths`,
    10 depths), of the base model's in-window check per task and of the local-perception
    prompts per length."""

    depths: tuple[float, ...] = tuple(float(depth) for depth in range(0, 101, 10))
    repeats: int = 1
    mc: int = 8
    windows: int = 8
    chunk: int = 64
    headline_samples: int = 100
    base_samples: int = 200
    local_samples: int = 50

    @property
    def headline_depths(self) -> list[float]:
        return [round(100 * i / 9, 2) for i in range(10)]

    @property
    def headline_repeats(self) -> int:
        return -(-self.headline_samples // len(self.headline_depths))

    @property
    def local_repeats(self) -> int:
        """Repeats per headline depth of the local-perception prompts at each length."""
        return -(-self.local_samples // len(self.headline_depths))


@dataclass(frozen=True)
class Preset:
    """One scale of the study: the mini model, its pre-training window and the extension target."""

    name: str
    model: dict[str, Any]
    train_len: int
    extend_factor: int = 16
    eval_factor: int = 32
    pretrain: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    extend: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields
    evaluation: EvalGrid = EvalGrid()
    # The retrieval documents (task_lengths) of the comparator that keeps them within T_train.
    short_task_lengths: tuple[int, int] = (0, 0)
    extra: dict[str, Any] = field(default_factory=dict)
    # A recipe for a released checkpoint: no pretrain stage; extend takes any LLaDA-format init
    # (its own sizes, tokenizer and token roles) and exports in LLaDA's released format.
    released: bool = False

    @property
    def head_dim(self) -> int:
        return self.model["d_model"] // self.model["n_heads"]

    @property
    def rope_theta(self) -> float:
        return float(self.model["rope_theta"])

    @property
    def target_len(self) -> int:
        return self.train_len * self.extend_factor

    @property
    def eval_max_len(self) -> int:
        return self.train_len * self.eval_factor

    @property
    def eval_lengths(self) -> tuple[int, ...]:
        """Powers of two from T_train to eval_max_len."""
        lengths, length = [], self.train_len
        while length <= self.eval_max_len:
            lengths.append(length)
            length *= 2
        return tuple(lengths)


# The retrieval rows of the cpu and gpu recipes, in both stages: passkey in noise and NIAH in
# corpus text, keys one reserved token of 128 (one copy circuit, chance 0.78 %), half of the rows
# answer-only (LLaDA's SFT) once the warm-up is over (docs/recipe.md).
KEY_TASKS: dict[str, Any] = dict(tasks=("passkey", "niah"), task_key_kind="token",
                                 task_key_digits=1, answer_only_fraction=0.5)
# The pre-training warm-up that makes every base copy keys in its window (docs/recipe.md, "The
# gated recipe"): retrieval rows only, all answer-only, for the first 250 steps (the copy circuit
# forms at about step 100-150 in such rows, and not at all in 800 steps of mixed rows), then
# linearly over steps 250-550 to 30 % retrieval rows, half of them answer-only.
RETRIEVAL_WARMUP: dict[str, Any] = dict(
    task_fraction=1.0, task_fraction_final=0.3, answer_only_fraction=1.0,
    answer_only_fraction_final=0.5, task_curriculum_hold=250, task_curriculum_steps=550)

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        model=dict(vocab_size=512, d_model=64, n_heads=2, n_layers=2, mlp_hidden_size=128,
                   rope_theta=110.0, max_sequence_length=64),
        train_len=64,
        pretrain=dict(steps=40, batch_size=8, micro_batch_size=8, lr=3e-3, warmup_steps=4,
                      val_every=20, val_rows=16, val_task_rows=4, save_every=20,
                      # NIAH needs 85 tokens with this vocabulary: passkey only.
                      tasks=("passkey",), task_key_digits=1, task_fraction=0.5,
                      answer_only_fraction=0.5),
        extend=dict(steps=4, batch_size=2, micro_batch_size=2, lr=1e-3, warmup_steps=1,
                    packing="adaptive", restart_positions=False, rope="diffusion_ntk",
                    val_every=4, val_rows=2,
                    save_every=4, tasks=("passkey",), task_key_digits=1,
                    task_fraction=0.5, answer_only_fraction=0.5, task_lengths=(64, 1024)),
        evaluation=EvalGrid(depths=(0.0, 50.0, 100.0), repeats=1, mc=2, windows=2, chunk=16,
                            headline_samples=10, base_samples=20, local_samples=10),
        short_task_lengths=(62, 64),  # a passkey sample needs 61 tokens at vocabulary 512
    ),
    "cpu": Preset(
        name="cpu",
        model=dict(vocab_size=2048, d_model=256, n_heads=4, n_layers=4, mlp_hidden_size=768,
                   rope_theta=500.0, max_sequence_length=128),
        train_len=128,
        pretrain=dict(
            steps=1200, batch_size=32, micro_batch_size=32, lr=1e-3, warmup_steps=40,
            val_every=100, val_rows=64, val_task_rows=64, save_every=100,
            model=dict(include_qkv_bias=True, tie_word_embeddings=True), stratified_t=True,
            **{**KEY_TASKS, **RETRIEVAL_WARMUP},
        ),
        # The mini study's departure from the paper: retrieval documents of 128..2048 tokens
        # packed with corpus text and distractor documents (other keys) into 90 % of the rows
        # (50 % left 16x retrieval at 67 %); 64 steps, as 16 do not relearn code keys even in
        # the window (docs/recipe.md).
        extend=dict(steps=64, batch_size=8, micro_batch_size=4, lr=5e-4, warmup_steps=2,
                    packing="adaptive", restart_positions=False, rope="diffusion_ntk",
                    val_every=16, val_rows=8,
                    save_every=16, **KEY_TASKS, task_fraction=0.9,
                    task_lengths=(128, 2048)),
        # Heatmap cells of 10 samples; 8 paired windows per loss; 100 samples per headline cell.
        evaluation=EvalGrid(depths=(0.0, 25.0, 50.0, 75.0, 100.0), repeats=10, mc=2, windows=8,
                            chunk=32),
        short_task_lengths=(64, 128),
    ),
    "gpu": Preset(
        name="gpu",
        model=dict(vocab_size=4096, d_model=512, n_heads=8, n_layers=8, mlp_hidden_size=1536,
                   rope_theta=2000.0, max_sequence_length=256),
        train_len=256,
        # The cpu recipe at a larger scale (untested on a GPU yet): retrieval rows in both stages.
        pretrain=dict(steps=10000, batch_size=64, micro_batch_size=64, lr=1e-3, warmup_steps=500,
                      val_every=500, val_rows=256, val_task_rows=256, save_every=1000,
                      model=dict(include_qkv_bias=True, tie_word_embeddings=True),
                      **{**KEY_TASKS, **RETRIEVAL_WARMUP, "task_curriculum_hold": 1000,
                         "task_curriculum_steps": 2500}),
        extend=dict(steps=300, batch_size=16, micro_batch_size=16, lr=3e-4, warmup_steps=30,
                    packing="adaptive", restart_positions=False, rope="diffusion_ntk",
                    val_every=50, val_rows=32,
                    save_every=100, **KEY_TASKS, task_fraction=0.9,
                    task_lengths=(256, 4096)),
        short_task_lengths=(128, 256),
    ),
    # UltraLLaDA's post-training of a released LLaDA-8B (docs/science.md; docs/gpu.md for the
    # memory): diffusion-aware NTK for the target, adaptive packing with positions over the row,
    # LLaDA's loss on the masked positions only, in chunks; 600 steps of 64 x 64K tokens (4M).
    # The paper gives no learning rate: 2e-5 is a choice (--set lr=...), as are steps and rows.
    # `model` holds LLaDA-8B's sizes for the scale checks; a run takes them from its init.
    "llada-8b": Preset(
        name="llada-8b",
        model=dict(vocab_size=126464, d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32,
                   mlp_hidden_size=12288, rope_theta=500000.0, max_sequence_length=4096),
        train_len=4096,
        released=True,
        extend=dict(steps=600, batch_size=64, micro_batch_size=1, lr=2e-5, warmup_steps=30,
                    packing="adaptive", restart_positions=False, rope="diffusion_ntk",
                    attention_backend="flex", activation_checkpointing=True, loss_chunk=2048,
                    rows_on_demand=True, dtype="bfloat16", random_length_fraction=0.0,
                    task_fraction=0.0, val_every=50, val_rows=8, val_task_rows=0,
                    save_every=50),
    ),
}


def get_preset(name: str) -> Preset:
    """Return the preset called `name`; raises ValueError listing the known presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
