"""Rotary position embeddings (RoPE) and every context-extension variant the study compares.

Notation: d = rotary dim (the head dim here), b = base (`rope_theta`), T = pre-training length
(`train_len`), T' = target length (`target_len`), s = T'/T unless a `factor` is given.
Pair n = 0 .. d/2-1 rotates by theta_n * position with theta_n = b^(-2n/d); its period is
2*pi*b^(2n/d).

Every variant is one `RopeVariant` record in `ROPE_VARIANTS` (adding a variant is adding one
record): its law, a pure function

    law(head_dim, base, train_len, target_len, **params) -> (inv_freq [d/2] float32, attn_factor)

whose keyword-only arguments are its parameters, its label, color and marker in every figure,
whether it is set for a target length, and the transformers `rope_type` that reproduces it. The
attention factor multiplies both cos and sin (YaRN's and LongRoPE's temperature). `compute_rope`
validates arguments and parameter names before calling the law.

torch is imported by the laws that build tensors, not by this module: the registry (names,
parameters, labels) loads in milliseconds, so `minillada train`, `eval` and `rope` refuse a bad
variant or number before torch loads (seconds). The closed forms the laws share (the critical
dimension, lambda, NTK bases): `rope.formulas`; checks of numbers: `rope.checks`; the rotary
module: `rope.rotary`; summaries, coverage, decay and the Hugging Face bridge: `rope.analysis`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from minillada.rope.checks import check_param_values, check_rope_values
from minillada.rope.formulas import (
    critical_dim,
    default_inv_freq,
    dynamic_ntk_base,
    ntk_base,
    ntk_scale,
    resolve_factor,
    yarn_attention_factor,
)

if TYPE_CHECKING:
    import torch

RopeFunction = Callable[..., "tuple[torch.Tensor, float]"]


# ----------------------------------------------------------------------------- the variants


def rope_default(
    head_dim: int, base: float, train_len: int, target_len: int | None
) -> tuple[torch.Tensor, float]:
    """Direct extrapolation: unchanged frequencies, positions simply run past T."""
    return default_inv_freq(head_dim, base), 1.0


def rope_linear(
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int | None,
    *,
    factor: float | None = None,
) -> tuple[torch.Tensor, float]:
    """Position interpolation (PI): theta_n / s."""
    s = resolve_factor(train_len, target_len, factor)
    return default_inv_freq(head_dim, base) / s, 1.0


def rope_ntk(
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int | None,
    *,
    factor: float | None = None,
) -> tuple[torch.Tensor, float]:
    """Fixed NTK-aware scaling: base b * s^(d/(d-2))."""
    s = resolve_factor(train_len, target_len, factor)
    return default_inv_freq(head_dim, ntk_base(head_dim, base, s)), 1.0


def rope_dynamic(
    head_dim: int, base: float, train_len: int, target_len: int | None, *, factor: float = 1.0
) -> tuple[torch.Tensor, float]:
    """Dynamic NTK for a sequence of `target_len` tokens: b * (s*L'/T - (s-1))^(d/(d-2)).

    Here `target_len` is the current sequence length (the rotary module passes it at run time) and
    `factor` is transformers' dynamic factor s (default 1); it equals `default` when L' <= T.
    """
    seq_len = target_len if target_len is not None else train_len
    return default_inv_freq(
        head_dim, dynamic_ntk_base(head_dim, base, train_len, seq_len, factor)
    ), 1.0


def _yarn(
    head_dim: int,
    base: float,
    original_len: float,
    factor: float,
    beta_fast: float,
    beta_slow: float,
    attention_factor: float | None,
    mscale: float | None,
    mscale_all_dim: float | None,
    truncate: bool,
) -> tuple[torch.Tensor, float]:
    """YaRN's per-pair ramp between interpolation (theta/s) and extrapolation (theta)."""
    import torch

    def correction_index(rotations: float) -> float:
        # c(r) = d * ln(L0 / (2 pi r)) / (2 ln b): the pair that turns r times over L0 positions.
        return head_dim * math.log(original_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_index(beta_fast), correction_index(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # a one-pair ramp would divide by zero
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolated = default_inv_freq(head_dim, base)
    inv_freq = extrapolated / factor * ramp + extrapolated * (1 - ramp)
    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = yarn_attention_factor(factor, mscale) / yarn_attention_factor(
                factor, mscale_all_dim
            )
        else:
            attention_factor = yarn_attention_factor(factor)
    return inv_freq, float(attention_factor)


def rope_yarn(
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int | None,
    *,
    factor: float | None = None,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    attention_factor: float | None = None,
    mscale: float | None = None,
    mscale_all_dim: float | None = None,
    truncate: bool = True,
) -> tuple[torch.Tensor, float]:
    """YaRN: pairs with more than beta_fast turns over T keep theta, pairs with fewer than beta_slow
    turns get theta/s, a linear ramp in between; correction index c(r) = d ln(T/(2pi r))/(2 ln b),
    low = floor(c(beta_fast)), high = ceil(c(beta_slow)); attention factor 0.1 ln s + 1."""
    s = resolve_factor(train_len, target_len, factor)
    return _yarn(
        head_dim,
        base,
        train_len,
        s,
        beta_fast,
        beta_slow,
        attention_factor,
        mscale,
        mscale_all_dim,
        truncate,
    )


def rope_diffusion_yarn(
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int | None,
    *,
    factor: float | None = None,
    span: float = 2.0,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    attention_factor: float | None = None,
    truncate: bool = True,
) -> tuple[torch.Tensor, float]:
    """Diffusion-aware YaRN (minillada's own variant): YaRN whose correction range is computed on
    the bidirectional span, i.e. c(r) uses L0 = span * T instead of T. The interpolation factor
    stays s = T'/T, because the span grows by the same ratio as the length."""
    s = resolve_factor(train_len, target_len, factor)
    return _yarn(
        head_dim,
        base,
        span * train_len,
        s,
        beta_fast,
        beta_slow,
        attention_factor,
        None,
        None,
        truncate,
    )


def rope_llama3(
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int | None,
    *,
    factor: float | None = None,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
) -> tuple[torch.Tensor, float]:
    """Llama 3.1: wavelengths above T/low_freq_factor get theta/s, below T/high_freq_factor keep
    theta, and the band between is interpolated smoothly in T/wavelength."""
    import torch

    s = resolve_factor(train_len, target_len, factor)
    inv_freq = default_inv_freq(head_dim, base)
    wavelength = 2 * math.pi / inv_freq
    smooth = (train_len / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * inv_freq / s + smooth * inv_freq
    long_waves = wavelength > train_len / low_freq_factor
    short_waves = wavelength < train_len / high_freq_factor
    scaled = torch.where(long_waves, inv_freq / s, smoothed)
    return torch.where(short_waves, inv_freq, scaled), 1.0


def rope_longrope(
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int | None,
    *,
    long_factor: list[float],
    short_factor: list[float],
    factor: float | None = None,
    attention_factor: float | None = None,
) -> tuple[torch.Tensor, float]:
    """LongRoPE: theta_n / r_n with searched per-pair rescale factors r (`long_factor` beyond T,
    `short_factor` within); attention factor sqrt(1 + ln s / ln T)."""
    import torch

    for name, values in (("long_factor", long_factor), ("short_factor", short_factor)):
        if len(values) != head_dim // 2:
            raise ValueError(
                f"longrope {name} has {len(values)} entries; it needs head_dim/2 = {head_dim // 2}"
            )
    s = resolve_factor(train_len, target_len, factor)
    if attention_factor is None:
        attention_factor = 1.0 if s <= 1 else math.sqrt(1 + math.log(s) / math.log(train_len))
    use_long = target_len is not None and target_len > train_len
    rescale = torch.tensor(long_factor if use_long else short_factor, dtype=torch.float32)
    return default_inv_freq(head_dim, base) / rescale, float(attention_factor)


def rope_ntk_critical(
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int | None,
    *,
    critical_dim: int | None = None,
) -> tuple[torch.Tensor, float]:
    """LongLLaDA's critical-dimension NTK: new base lambda * b with
    d_c = 2 ceil((d/2) log_b(T/2pi)) and lambda = b^-1 (T'/2pi)^(d/d_c); lambda < 1 at T' = T
    (see `ntk_scale`)."""
    target = target_or_train_len(train_len, target_len)
    scale = ntk_scale(head_dim, base, train_len, target, 1.0, critical_dim)
    return default_inv_freq(head_dim, scale * base), 1.0


def rope_diffusion_ntk(
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int | None,
    *,
    span: float = 2.0,
    critical_dim: int | None = None,
) -> tuple[torch.Tensor, float]:
    """UltraLLaDA's diffusion-aware NTK: the critical-dimension law on the bidirectional span,
    T_cap = span*T and T_Ecap = span*T' (span 2 by default); lambda < 1 at T' = T (see
    `ntk_scale`)."""
    target = target_or_train_len(train_len, target_len)
    scale = ntk_scale(head_dim, base, train_len, target, span, critical_dim)
    return default_inv_freq(head_dim, scale * base), 1.0


def target_or_train_len(train_len: int, target_len: int | None) -> int:
    return target_len if target_len is not None else train_len


@dataclass(frozen=True)
class RopeVariant:
    """Everything the package knows about one variant.

    `law` computes its frequencies (its keyword-only arguments are the variant's parameters);
    `label`, `color` (seaborn's colorblind palette) and `marker` show it in every figure;
    `targeted`: set for a target length (direct extrapolation is not; dynamic NTK takes the
    running length instead: `running_length`, recomputed at every forward); `hf_rope_type`: the
    transformers `rope_type` that reproduces it ("default" with a new rope_theta for the
    variants that only change the base; diffusion-aware YaRN is YaRN on the span 2T).
    """

    name: str
    law: RopeFunction
    label: str
    color: str
    marker: str
    hf_rope_type: str
    targeted: bool = True
    running_length: bool = False

    @property
    def base_only(self) -> bool:
        """Whether the variant only changes the base (one rope_theta holds it: LLaDA's released
        format, transformers' rope_type "default")."""
        return self.hf_rope_type == "default"

    @property
    def parameters(self) -> tuple[set[str], set[str]]:
        """(accepted, required) parameter names: the law's keyword-only arguments."""
        kwonly = [p for p in inspect.signature(self.law).parameters.values()
                  if p.kind is p.KEYWORD_ONLY]
        return {p.name for p in kwonly}, {p.name for p in kwonly if p.default is p.empty}


# The baseline critical-dimension law is blue and the diffusion-aware law vermillion in every
# figure. Markers tell apart curves that coincide (PI, llama3 and YaRN stretch the critical pair
# alike; dynamic NTK at its full length is fixed NTK).
ROPE_VARIANTS: dict[str, RopeVariant] = {variant.name: variant for variant in (
    RopeVariant("default", rope_default, "direct extrapolation", "#949494", "o", "default",
                targeted=False),
    RopeVariant("linear", rope_linear, "PI (linear)", "#ca9161", "s", "linear"),
    RopeVariant("ntk", rope_ntk, "NTK-aware", "#56b4e9", "^", "default"),
    RopeVariant("dynamic", rope_dynamic, "dynamic NTK", "#cc78bc", "v", "dynamic",
                targeted=False, running_length=True),
    RopeVariant("yarn", rope_yarn, "YaRN", "#029e73", "D", "yarn"),
    RopeVariant("llama3", rope_llama3, "Llama 3", "#fbafe4", "P", "llama3"),
    RopeVariant("longrope", rope_longrope, "LongRoPE", "#ece133", "X", "longrope"),
    RopeVariant("ntk_critical", rope_ntk_critical, "critical-dim NTK (LongLLaDA)", "#0173b2", "o",
                "default"),
    RopeVariant("diffusion_ntk", rope_diffusion_ntk, "diffusion-aware NTK (UltraLLaDA)",
                "#d55e00", "o", "default"),
    RopeVariant("diffusion_yarn", rope_diffusion_yarn, "diffusion-aware YaRN", "#de8f05", "D",
                "yarn"),
)}
UNTARGETED = frozenset(name for name, variant in ROPE_VARIANTS.items() if not variant.targeted)


# ----------------------------------------------------------------------------- validation


def variant_parameters(variant: str) -> tuple[set[str], set[str]]:
    """(accepted, required) parameter names of a variant: its law's keyword-only arguments."""
    return get_variant(variant).parameters


def get_variant(variant: str) -> RopeVariant:
    """The record of `variant`; ValueError naming it and the known ones."""
    if variant not in ROPE_VARIANTS:
        raise ValueError(
            f"unknown RoPE variant {variant!r}; known variants: {', '.join(ROPE_VARIANTS)}"
        )
    return ROPE_VARIANTS[variant]


def validate_rope_args(
    variant: str,
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int | None,
    params: dict[str, Any],
) -> None:
    """Raise ValueError naming the bad value and what is allowed."""
    record = get_variant(variant)
    check_rope_values(head_dim, base, train_len, target_len)
    if variant in ("ntk", "dynamic") and head_dim <= 2:
        raise ValueError(f"{variant} needs a rotary dim above 2 (exponent d/(d-2)), got {head_dim}")
    if record.targeted and target_len is not None and target_len < train_len:
        raise ValueError(
            f"{variant} extends the context: target_len must be >= train_len ({train_len}), "
            f"got {target_len}"
        )
    accepted, required = record.parameters
    unknown = set(params) - accepted
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for RoPE variant {variant!r}; "
            f"allowed: {sorted(accepted) or 'none'}"
        )
    missing = required - set(params)
    if missing:
        raise ValueError(f"RoPE variant {variant!r} needs parameter(s) {sorted(missing)}")
    check_param_values(params, head_dim)
    if variant in ("ntk_critical", "diffusion_ntk") and params.get("critical_dim") is None:
        span = params.get("span", 2.0) if variant == "diffusion_ntk" else 1.0
        try:
            critical_dim(head_dim, base, train_len, span)
        except ValueError as error:
            raise ValueError(f"{variant}: {error}") from None


def compute_rope(variant: str, head_dim: int, base: float, train_len: int,
                 target_len: int | None = None,
                 params: dict[str, Any] | None = None) -> tuple[torch.Tensor, float]:
    """Validated entry point: (inv_freq, attention_factor) of `variant`."""
    params = dict(params or {})
    validate_rope_args(variant, head_dim, base, train_len, target_len, params)
    return ROPE_VARIANTS[variant].law(head_dim, float(base), train_len, target_len, **params)
