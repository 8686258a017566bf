"""The closed forms the RoPE laws share (`minillada.rope.laws`): the default frequencies, the
critical dimension and the base scale lambda derived from it (LongLLaDA; UltraLLaDA on the
bidirectional span), NTK-aware and dynamic NTK bases, YaRN's temperature. Plain numbers in, plain
numbers (or one float32 tensor) out; torch is imported only where a tensor is built.

Notation: d = rotary dim, b = base, T = pre-training length, T' = target length, s = T'/T.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from minillada.rope.checks import check_base, check_critical_dim, check_head_dim

if TYPE_CHECKING:
    import torch


def default_inv_freq(head_dim: int, base: float) -> torch.Tensor:
    """theta_n = base^(-2n/d) for n = 0 .. d/2-1, float32 (computed as transformers does)."""
    import torch

    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (base**exponents)


def critical_dim(head_dim: int, base: float, train_len: int, span: float = 1.0) -> int:
    """Critical dimension d_c = 2 * ceil((d/2) * log_b(span * T / (2 pi))).

    Pairs below d_c complete a full period inside the trained span of relative positions. span = 1
    is the causal/LongLLaDA law; span = 2 is UltraLLaDA's diffusion-aware law, because bidirectional
    attention trains relative positions in (-T, T).

    The law needs 2 pi < span * T <= 2 pi * b, so that 0 < log_b(span * T / (2 pi)) <= 1:
    a shorter span leaves no pair a full period (d_c <= 0), a base below span * T / (2 pi) gives
    every pair a full period (d_c > d). Either raises ValueError naming the bound and the value;
    pass an explicit `d_crit` to `ntk_scale` instead. The ceiling makes d_c at least the exact
    value, which is why `ntk_scale` at T' = T gives lambda < 1.
    """
    check_head_dim(head_dim)
    check_base(base)
    trained = span * train_len
    if not trained > 2 * math.pi:
        raise ValueError(
            f"the critical-dimension law needs span * train_len > 2*pi = {2 * math.pi:.4f} "
            f"(log_b(span * T / 2pi) > 0), got span * train_len = {span} * {train_len} = "
            f"{trained:g}; use a longer train_len or give critical_dim"
        )
    half = head_dim / 2 * math.log(trained / (2 * math.pi)) / math.log(base)
    d_c = 2 * math.ceil(half)
    if d_c > head_dim:
        raise ValueError(
            f"critical dimension 2*ceil((d/2) log_b(span * T / 2pi)) = {d_c} exceeds head_dim = "
            f"{head_dim}: base {base:g} is below span * train_len / 2pi = "
            f"{trained / (2 * math.pi):.4g}, so every pair already turns a full period; use a "
            f"base >= {trained / (2 * math.pi):.4g} or give critical_dim <= {head_dim}"
        )
    return d_c


def ntk_scale(
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int,
    span: float = 1.0,
    d_crit: int | None = None,
) -> float:
    """Base scale lambda = b^-1 * (span * T' / (2 pi))^(d / d_c); the new base is lambda * b.

    It stretches the critical pair's period to exactly span * T'. `d_crit` overrides d_c
    (UltraLLaDA's sweep preferred 73 over the analytic 70 for LLaDA-8B); it must lie in
    [1, head_dim].

    At T' = T the law gives lambda < 1 (= 1 only when the ceiling in d_c is exact): d_c rounds
    (d/2) log_b(span T / 2pi) up, so the "extended" base lambda * b is below the original b.
    LLaDA-8B: lambda = 0.850 (span 1, d_c = 64) and 0.994 (span 2, d_c = 70).
    """
    if d_crit is not None:
        check_critical_dim(d_crit, head_dim)
    d_c = d_crit if d_crit is not None else critical_dim(head_dim, base, train_len, span)
    return (span * target_len / (2 * math.pi)) ** (head_dim / d_c) / base


def resolve_factor(train_len: int, target_len: int | None, factor: float | None) -> float:
    """The extension factor s: `factor` if given, else T'/T, else 1 (no target given)."""
    if factor is not None:
        return float(factor)
    return target_len / train_len if target_len is not None else 1.0


def ntk_base(head_dim: int, base: float, factor: float) -> float:
    """NTK-aware base: b * s^(d/(d-2))."""
    return base * factor ** (head_dim / (head_dim - 2))


def dynamic_ntk_base(
    head_dim: int, base: float, train_len: int, seq_len: int, factor: float
) -> float:
    """Dynamic NTK base: b * (s * L'/T - (s - 1))^(d/(d-2)) with L' = max(seq_len, T)."""
    seq_len = max(seq_len, train_len)
    return base * (factor * seq_len / train_len - (factor - 1)) ** (head_dim / (head_dim - 2))


def yarn_attention_factor(factor: float, mscale: float = 1.0) -> float:
    """YaRN temperature: 0.1 * mscale * ln(s) + 1 for s > 1, else 1."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0
