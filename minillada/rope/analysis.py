"""What a RoPE configuration does: the calculator's summary row (critical dimension, scale, new
base), the angle coverage of the trained positions, RoFormer's long-term decay bound, and the
bridge to and from Hugging Face `rope_parameters` dicts."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from minillada.rope.formulas import (
    critical_dim,
    default_inv_freq,
    dynamic_ntk_base,
    ntk_base,
    ntk_scale,
    resolve_factor,
)
from minillada.rope.laws import (
    ROPE_VARIANTS,
    compute_rope,
    get_variant,
    target_or_train_len,
    variant_parameters,
)


def rope_summary(
    variant: str,
    head_dim: int,
    base: float,
    train_len: int,
    target_len: int | None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row of the RoPE calculator.

    Keys: method, head_dim, base, train_len, target_len, critical_dim, scale, new_base,
    attention_factor. `scale` is lambda for the critical-dimension laws and the extension factor s
    otherwise; `new_base` is set for dynamic NTK and every variant that only changes the base
    (`single_base` of its own frequencies). None where not applicable.
    """
    params = dict(params or {})
    inv_freq, attention_factor = compute_rope(variant, head_dim, base, train_len, target_len,
                                              params)
    target = target_or_train_len(train_len, target_len)
    d_c = scale = new_base = None
    if variant in ("ntk_critical", "diffusion_ntk"):
        span = params.get("span", 2.0) if variant == "diffusion_ntk" else 1.0
        d_c = params.get("critical_dim") or critical_dim(head_dim, base, train_len, span)
        scale = ntk_scale(head_dim, base, train_len, target, span, d_c)
        new_base = scale * base
    elif variant == "dynamic":
        scale = params.get("factor", 1.0)
        new_base = dynamic_ntk_base(head_dim, base, train_len, target, scale)
    elif variant != "default":
        scale = resolve_factor(train_len, target_len, params.get("factor"))
        if variant == "ntk":
            new_base = ntk_base(head_dim, base, scale)
    if variant != "default" and get_variant(variant).base_only:
        new_base = single_base(variant, inv_freq, attention_factor, head_dim, new_base)
    return {
        "method": variant,
        "head_dim": head_dim,
        "base": float(base),
        "train_len": train_len,
        "target_len": target_len,
        "critical_dim": d_c,
        "scale": scale,
        "new_base": new_base,
        "attention_factor": attention_factor,
    }


def single_base(variant: str, inv_freq: torch.Tensor, attention_factor: float, head_dim: int,
                closed_form: float | None = None) -> float | None:
    """The rope_theta b whose frequencies b^(-2n/d) are `inv_freq`, a base-only variant's own
    output: its `closed_form` where that reproduces them to float32 rounding, else the base the
    slowest pair pins (b = theta_last^(-d/(d-2)), exact to float32's). ValueError naming the
    variant when it is declared base-only but no single base (or an attention factor) gives its
    frequencies. A rotary dim of 2 has one pair, theta_0 = 1 whatever the base: `closed_form`."""
    if head_dim == 2:
        return closed_form
    derived = float(inv_freq.double()[-1]) ** (-head_dim / (head_dim - 2))
    for candidate in (closed_form, derived):
        if candidate is not None and attention_factor == 1.0 and torch.allclose(
                default_inv_freq(head_dim, candidate), inv_freq, rtol=1e-5, atol=0.0):
            return float(candidate)
    raise ValueError(f"RoPE variant {variant!r} is declared base-only (hf_rope_type 'default') "
                     f"but its frequencies are no single base's (attention factor "
                     f"{attention_factor}): give it its transformers rope_type")


# ----------------------------------------------------------------------------- analysis helpers


def angle_coverage(inv_freq: torch.Tensor, train_len: int, bidirectional: bool) -> torch.Tensor:
    """Share of a full period that the trained relative positions cover, per pair, capped at 1.

    Causal attention trains offsets in [0, T): a range of T-1; bidirectional attention trains
    (-T, T): a range of 2(T-1). Coverage = min(1, range * theta / 2pi).
    """
    span = 2 * (train_len - 1) if bidirectional else train_len - 1
    return (span * inv_freq.double() / (2 * math.pi)).clamp(max=1.0)


def attention_decay_bound(inv_freq: torch.Tensor, max_distance: int) -> torch.Tensor:
    """RoFormer's long-term decay bound (2/d) * sum_j |S_j|, S_j = sum_{k<=j} exp(i m theta_k),
    for relative distances m = 0 .. max_distance (shape [max_distance + 1])."""
    distance = torch.arange(max_distance + 1, dtype=torch.float64)[:, None]
    phases = torch.polar(torch.ones(()).double(), distance * inv_freq.double()[None, :])
    return phases.cumsum(dim=1).abs().mean(dim=1)


# ----------------------------------------------------------------------------- Hugging Face bridge

# Variants transformers implements under their own name.
_HF_NATIVE = {name for name, v in ROPE_VARIANTS.items() if v.hf_rope_type == name} - {"default"}


def to_hf_rope_parameters(
    variant: str,
    base: float,
    train_len: int,
    target_len: int | None = None,
    params: dict[str, Any] | None = None,
    head_dim: int | None = None,
) -> dict[str, Any]:
    """A transformers `rope_parameters` dict that reproduces `variant`.

    Base-only variants (ntk, ntk_critical, diffusion_ntk) become `rope_type: default` with the new
    `rope_theta` (they need `head_dim`); diffusion_yarn becomes yarn with
    `original_max_position_embeddings = span * T` and an explicit factor.
    """
    params = dict(params or {})
    record = get_variant(variant)
    if variant == "default":
        return {"rope_type": "default", "rope_theta": float(base)}
    if record.base_only:
        if head_dim is None:
            raise ValueError(
                f"{variant} changes rope_theta by a law of the head dim: pass head_dim"
            )
        summary = rope_summary(variant, head_dim, base, train_len, target_len, params)
        return {"rope_type": "default", "rope_theta": summary["new_base"]}
    if variant == "diffusion_yarn":
        span = params.pop("span", 2.0)
        factor = resolve_factor(train_len, target_len, params.pop("factor", None))
        out = {
            "rope_type": "yarn",
            "rope_theta": float(base),
            "factor": factor,
            "original_max_position_embeddings": span * train_len,
            **params,
        }
        return out
    out = {"rope_type": variant, "rope_theta": float(base), **_with_defaults(variant, params)}
    if variant != "dynamic":
        out["factor"] = resolve_factor(train_len, target_len, params.get("factor"))
        out["original_max_position_embeddings"] = train_len
    else:
        out.setdefault("factor", 1.0)
    return out


def _with_defaults(variant: str, params: dict[str, Any]) -> dict[str, Any]:
    """The variant's parameters with its defaults filled in (None defaults left out)."""
    signature = inspect.signature(ROPE_VARIANTS[variant].law).parameters.values()
    defaults = {p.name: p.default for p in signature if p.kind is p.KEYWORD_ONLY}
    merged = {k: v for k, v in defaults.items() if v is not inspect.Parameter.empty} | params
    return {k: v for k, v in merged.items() if v is not None}


def from_hf_rope_parameters(
    rope_parameters: dict[str, Any], max_position_embeddings: int
) -> dict[str, Any]:
    """Inverse of `to_hf_rope_parameters` for transformers' native types.

    Returns {variant, base, train_len, params}; train_len is `original_max_position_embeddings`
    when present, else `max_position_embeddings`.
    """
    rope_parameters = dict(rope_parameters)
    variant = rope_parameters.pop("rope_type", rope_parameters.pop("type", "default"))
    if variant != "default" and variant not in _HF_NATIVE:
        raise ValueError(
            f"rope_type {variant!r} has no minillada equivalent; "
            f"known: default, {', '.join(sorted(_HF_NATIVE))}"
        )
    base = float(rope_parameters.pop("rope_theta"))
    train_len = int(
        rope_parameters.pop("original_max_position_embeddings", max_position_embeddings)
    )
    rope_parameters.pop("partial_rotary_factor", None)
    accepted, _ = variant_parameters(variant)
    params = {k: v for k, v in rope_parameters.items() if k in accepted and v is not None}
    return {"variant": variant, "base": base, "train_len": train_len, "params": params}
