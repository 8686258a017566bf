"""The rotary module: cos/sin tables of any registered RoPE variant (`minillada.rope`) and their
application to queries and keys in the half-split `rotate_half` layout, computed in float32."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from minillada.rope.laws import ROPE_VARIANTS, compute_rope


class RotaryEmbedding(nn.Module):
    """cos/sin tables for any registered variant; `forward(positions)` -> (cos, sin), float32,
    shape [..., L, head_dim], attention factor included. Dynamic NTK recomputes its frequencies for
    the actual length (max position + 1)."""

    def __init__(
        self,
        head_dim: int,
        base: float,
        train_len: int,
        variant: str = "default",
        target_len: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.head_dim, self.base, self.train_len = head_dim, float(base), train_len
        self.variant, self.target_len, self.params = variant, target_len, dict(params or {})
        inv_freq, self.attention_factor = compute_rope(
            variant, head_dim, base, train_len, target_len, self.params
        )
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _frequencies(self, positions: torch.Tensor) -> torch.Tensor:
        variant = ROPE_VARIANTS[self.variant]
        if not variant.running_length:
            return self.inv_freq
        seq_len = int(positions.max()) + 1 if positions.numel() else 1
        inv_freq, _ = variant.law(
            self.head_dim, self.base, self.train_len, seq_len, **self.params
        )
        return inv_freq.to(self.inv_freq.device)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self._frequencies(positions)
        angles = positions.to(torch.float32)[..., None] * inv_freq.float()
        angles = torch.cat((angles, angles), dim=-1)  # half-split layout: pair n is (n, n + d/2)
        return angles.cos() * self.attention_factor, angles.sin() * self.attention_factor

    def extra_repr(self) -> str:
        return (
            f"variant={self.variant}, head_dim={self.head_dim}, base={self.base}, "
            f"train_len={self.train_len}, target_len={self.target_len}"
        )


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, L, D] by cos/sin of shape [B, L, D] or [L, D]; fp32 math, x's dtype out."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    rotated = x.float() * cos + rotate_half(x.float()) * sin
    return rotated.to(x.dtype)
