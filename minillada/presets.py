"""Named scales (`smoke`, `cpu`, `gpu`) that every notebook and command reads.

Scale matching: LLaDA-8B (head dim 128, rope_theta 5e5, T_train 4096) has its critical dimension
at 64 of 128 rotary dims. Each preset picks head dim, base and T_train so that the critical
dimension `2 * ceil((d/2) * log_b(T_train / 2pi))` is again half the rotary dim, then post-trains at
16x T_train and evaluates up to 32x, as UltraLLaDA does (4K -> 64K -> 128K):

- smoke: d 32, base 30,  T_train 32  -> d_crit 16 of 32; extend to 512,  eval to 1024.
- cpu:   d 64, base 500, T_train 128 -> d_crit 32 of 64; extend to 2048, eval to 4096.
- gpu:   d 64, base 2000, T_train 256 -> d_crit 32 of 64; extend to 4096, eval to 8192.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """One scale of the study: the mini model, its pre-training window and the extension target."""

    name: str
    model: dict[str, Any]
    train_len: int
    extend_factor: int = 16
    eval_factor: int = 32
    extra: dict[str, Any] = field(default_factory=dict)

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


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        model=dict(vocab_size=512, d_model=64, n_heads=2, n_layers=2, mlp_hidden_size=128,
                   rope_theta=30.0, max_sequence_length=32),
        train_len=32,
    ),
    "cpu": Preset(
        name="cpu",
        model=dict(vocab_size=2048, d_model=256, n_heads=4, n_layers=4, mlp_hidden_size=768,
                   rope_theta=500.0, max_sequence_length=128),
        train_len=128,
    ),
    "gpu": Preset(
        name="gpu",
        model=dict(vocab_size=4096, d_model=512, n_heads=8, n_layers=8, mlp_hidden_size=1536,
                   rope_theta=2000.0, max_sequence_length=256),
        train_len=256,
    ),
}


def get_preset(name: str) -> Preset:
    """Return the preset called `name`; raises ValueError listing the known presets."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
