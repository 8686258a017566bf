"""RoPE variants: exact against transformers and the papers' numbers, invariants, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import PretrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from minillada.rope.analysis import (
    angle_coverage,
    attention_decay_bound,
    from_hf_rope_parameters,
    rope_summary,
    to_hf_rope_parameters,
)
from minillada.rope.checks import KNOWN_MODELS
from minillada.rope.formulas import critical_dim, default_inv_freq, ntk_scale
from minillada.rope.laws import ROPE_VARIANTS, UNTARGETED, compute_rope
from minillada.rope.rotary import RotaryEmbedding, apply_rotary

LLADA = KNOWN_MODELS["llada-8b"]


def hf_reference(head_dim: int, train_len: int, max_len: int, rope_parameters: dict, seq_len=None):
    config = PretrainedConfig()
    config.head_dim = head_dim
    config.hidden_size = head_dim * 4
    config.num_attention_heads = 4
    config.max_position_embeddings = max_len
    config.rope_parameters = dict(rope_parameters)
    fn = ROPE_INIT_FUNCTIONS[rope_parameters["rope_type"]]
    return fn(config, "cpu", seq_len)


CONFIGS = [(64, 500.0, 128, 2048), (128, 500000.0, 4096, 32768), (32, 10000.0, 256, 1024)]


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-6) -> None:
    rel = ((actual.double() - expected.double()).abs() / expected.double().abs()).max().item()
    assert rel <= rtol, rel


@pytest.mark.parametrize(("head_dim", "base", "train_len", "target_len"), CONFIGS)
@pytest.mark.parametrize("variant", ["linear", "yarn", "llama3", "longrope"])
def test_matches_transformers(variant, head_dim, base, train_len, target_len):
    params = {}
    if variant == "longrope":
        generator = torch.Generator().manual_seed(head_dim)
        params = {
            "long_factor": (1 + 3 * torch.rand(head_dim // 2, generator=generator)).tolist(),
            "short_factor": (1 + 0.1 * torch.rand(head_dim // 2, generator=generator)).tolist(),
        }
    ours, our_factor = compute_rope(variant, head_dim, base, train_len, target_len, params)
    hf_params = to_hf_rope_parameters(variant, base, train_len, target_len, params)
    # LongRoPE picks its long factors from the run-time length, as our target length does.
    theirs, their_factor = hf_reference(
        head_dim, train_len, target_len, hf_params, seq_len=target_len
    )
    assert_close_rel(ours, theirs)
    assert our_factor == pytest.approx(their_factor, rel=1e-6)


@pytest.mark.parametrize(("head_dim", "base", "train_len", "target_len"), CONFIGS)
@pytest.mark.parametrize("factor", [1.0, 2.0, 4.0])
def test_dynamic_matches_transformers(head_dim, base, train_len, target_len, factor):
    hf_params = to_hf_rope_parameters("dynamic", base, train_len, params={"factor": factor})
    for seq_len in (train_len // 2, train_len, target_len):
        ours, _ = compute_rope("dynamic", head_dim, base, train_len, seq_len, {"factor": factor})
        theirs, _ = hf_reference(head_dim, train_len, train_len, hf_params, seq_len=seq_len)
        assert_close_rel(ours, theirs)


def test_diffusion_yarn_is_yarn_on_the_bidirectional_span():
    ours, our_factor = compute_rope("diffusion_yarn", 64, 500.0, 128, 2048)
    hf_params = to_hf_rope_parameters("diffusion_yarn", 500.0, 128, 2048)
    assert hf_params["original_max_position_embeddings"] == 256
    theirs, their_factor = hf_reference(64, 256, 2048, hf_params)
    assert_close_rel(ours, theirs)
    assert our_factor == pytest.approx(their_factor)
    plain, _ = compute_rope("yarn", 64, 500.0, 128, 2048)
    assert not torch.equal(ours, plain)  # a wider span moves the ramp


@pytest.mark.parametrize(
    ("target", "expected"), [(8192, 3.40), (16384, 13.60), (24576, 30.60), (32768, 54.40)]
)
def test_llada_critical_ntk_table(target, expected):
    assert critical_dim(LLADA["head_dim"], LLADA["base"], LLADA["train_len"]) == 64
    scale = ntk_scale(LLADA["head_dim"], LLADA["base"], LLADA["train_len"], target)
    assert scale == pytest.approx(expected, rel=0.005)


@pytest.mark.parametrize(
    ("target", "expected"),
    [(8192, 3.53), (16384, 12.54), (32768, 44.54), (65536, 158.2), (131072, 561.9)],
)
def test_llada_diffusion_ntk_table(target, expected):
    assert critical_dim(LLADA["head_dim"], LLADA["base"], LLADA["train_len"], span=2.0) == 70
    summary = rope_summary("diffusion_ntk", target_len=target, **LLADA)
    assert summary["critical_dim"] == 70
    assert summary["scale"] == pytest.approx(expected, rel=0.005)
    assert summary["new_base"] == pytest.approx(expected * LLADA["base"], rel=0.005)


@pytest.mark.parametrize(("variant", "span"), [("ntk_critical", 1.0), ("diffusion_ntk", 2.0)])
def test_critical_pair_period_equals_the_target_span(variant, span):
    head_dim, base, train_len, target = 64, 500.0, 128, 2048
    inv_freq, _ = compute_rope(variant, head_dim, base, train_len, target)
    d_c = critical_dim(head_dim, base, train_len, span)
    # Pair d_c/2 has exponent d_c/d: its period under the new base is exactly span * T'.
    period = 2 * math.pi / inv_freq[d_c // 2].double()
    assert period.item() == pytest.approx(span * target, rel=1e-5)


def test_critical_dim_override_is_used():
    summary = rope_summary("diffusion_ntk", target_len=65536, params={"critical_dim": 72}, **LLADA)
    assert summary["critical_dim"] == 72
    expected = (2 * 65536 / (2 * math.pi)) ** (128 / 72) / LLADA["base"]
    assert summary["scale"] == pytest.approx(expected)


def test_default_and_factor_one_variants_agree():
    default, _ = compute_rope("default", 64, 500.0, 128)
    for variant in ("linear", "ntk", "dynamic", "yarn", "diffusion_yarn", "llama3"):
        inv_freq, factor = compute_rope(variant, 64, 500.0, 128, 128)
        torch.testing.assert_close(inv_freq, default, rtol=1e-6, atol=0)
        assert factor == 1.0


def test_closed_forms():
    default, _ = compute_rope("default", 64, 500.0, 128)
    expected = torch.tensor([500.0 ** (-2 * n / 64) for n in range(32)], dtype=torch.float64)
    assert_close_rel(default, expected)
    linear, _ = compute_rope("linear", 64, 500.0, 128, 512)
    assert_close_rel(linear, expected / 4)
    ntk, _ = compute_rope("ntk", 64, 500.0, 128, 512)
    new_base = 500.0 * 4 ** (64 / 62)
    assert_close_rel(ntk, torch.tensor([new_base ** (-2 * n / 64) for n in range(32)]).double())


def test_summary_fields_and_inapplicable_nulls():
    row = rope_summary("linear", 64, 500.0, 128, 2048)
    assert set(row) == {
        "method", "head_dim", "base", "train_len", "target_len",
        "critical_dim", "scale", "new_base", "attention_factor",
    }  # fmt: skip
    assert row["scale"] == 16 and row["critical_dim"] is None and row["new_base"] is None


# ----------------------------------------------------------------------------- rotary module


def test_rotation_matches_complex_multiplication():
    head_dim, length = 16, 10
    rotary = RotaryEmbedding(head_dim, 100.0, 32)
    x = torch.randn(1, 2, length, head_dim, dtype=torch.float64)
    cos, sin = rotary(torch.arange(length))
    ours = apply_rotary(x, cos, sin)
    half = head_dim // 2
    z = torch.complex(x[..., :half], x[..., half:])
    angles = torch.arange(length)[:, None].double() * rotary.inv_freq.double()
    rotated = z * torch.polar(torch.ones_like(angles), angles)
    torch.testing.assert_close(
        ours, torch.cat((rotated.real, rotated.imag), -1), rtol=1e-5, atol=1e-5
    )


def test_scores_depend_only_on_relative_position_and_norms_are_kept():
    rotary = RotaryEmbedding(32, 500.0, 64, "diffusion_ntk", target_len=1024)
    q, k = torch.randn(32), torch.randn(32)

    def score(m: int, n: int) -> float:
        cos, sin = rotary(torch.tensor([m, n]))
        rq = apply_rotary(q.expand(1, 1, 2, 32), cos, sin)[0, 0, 0]
        rk = apply_rotary(k.expand(1, 1, 2, 32), cos, sin)[0, 0, 1]
        return (rq @ rk).item()

    assert score(5, 2) == pytest.approx(score(905, 902), abs=1e-3)
    cos, sin = rotary(torch.arange(100))
    x = torch.randn(2, 3, 100, 32)
    torch.testing.assert_close(apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1))


def test_attention_factor_scales_cos_and_sin_and_dtype_is_kept():
    rotary = RotaryEmbedding(64, 500.0, 128, "yarn", target_len=2048)
    cos, sin = rotary(torch.arange(8)[None])
    assert cos.dtype == torch.float32 and cos.shape == (1, 8, 64)
    assert (cos[0, 0] == rotary.attention_factor).all()
    x = torch.randn(1, 2, 8, 64, dtype=torch.bfloat16)
    assert apply_rotary(x, cos, sin).dtype == torch.bfloat16


def test_dynamic_module_follows_the_actual_length():
    rotary = RotaryEmbedding(32, 100.0, 64, "dynamic")
    default = RotaryEmbedding(32, 100.0, 64)
    short = torch.arange(64)
    torch.testing.assert_close(rotary(short), default(short))
    long = torch.arange(256)
    expected, _ = compute_rope("dynamic", 32, 100.0, 64, 256)
    torch.testing.assert_close(rotary(long)[0][1, :16], torch.cos(expected), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- analysis helpers


def test_angle_coverage_doubles_under_bidirectional_attention():
    inv_freq, _ = compute_rope("default", 64, 500.0, 128)
    causal = angle_coverage(inv_freq, 128, bidirectional=False)
    both = angle_coverage(inv_freq, 128, bidirectional=True)
    assert (causal[:4] == 1).all()
    slow = causal < 0.5
    torch.testing.assert_close(both[slow], 2 * causal[slow])


def test_decay_bound_starts_at_its_maximum_and_decays():
    inv_freq, _ = compute_rope("default", 64, 10000.0, 128)
    bound = attention_decay_bound(inv_freq, 1000)
    assert bound[0].item() == pytest.approx((1 + 32) / 2)  # mean of j for j = 1..32
    assert bound[500:].max() < bound[0] / 2


# ----------------------------------------------------------------------------- HF bridge


@pytest.mark.parametrize("variant", ["linear", "yarn", "llama3", "dynamic"])
def test_hf_round_trip(variant):
    hf = to_hf_rope_parameters(variant, 500.0, 128, 2048)
    # transformers' dynamic NTK reads T from max_position_embeddings, the others from the dict.
    back = from_hf_rope_parameters(
        hf, max_position_embeddings=128 if variant == "dynamic" else 2048
    )
    assert back["variant"] == variant and back["base"] == 500.0 and back["train_len"] == 128
    ours, _ = compute_rope(variant, 64, back["base"], back["train_len"], 2048, back["params"])
    expected, _ = compute_rope(variant, 64, 500.0, 128, 2048)
    torch.testing.assert_close(ours, expected)


def test_base_only_variants_export_as_new_rope_theta():
    hf = to_hf_rope_parameters("diffusion_ntk", 500000.0, 4096, 131072, head_dim=128)
    assert hf["rope_type"] == "default"
    assert hf["rope_theta"] == pytest.approx(561.9 * 500000, rel=0.005)
    with pytest.raises(ValueError, match="head_dim"):
        to_hf_rope_parameters("ntk", 500.0, 128, 2048)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": "ntk_magic"}, r"unknown RoPE variant 'ntk_magic'.*diffusion_ntk"),
        ({"head_dim": 63}, "positive even integer, got 63"),
        ({"head_dim": 0}, "positive even integer, got 0"),
        ({"base": 1.0}, "base must be a finite number > 1, got 1.0"),
        ({"variant": "linear", "params": {"factor": 0.5}}, "finite number >= 1, got 0.5"),
        ({"variant": "yarn", "target_len": 64}, "target_len must be >= train_len"),
        ({"variant": "ntk", "params": {"beta_fast": 3}}, r"unknown parameter\(s\) \['beta_fast'\]"),
        ({"variant": "longrope"}, r"needs parameter\(s\) \['long_factor', 'short_factor'\]"),
        ({"variant": "diffusion_ntk", "params": {"critical_dim": 99}}, "critical_dim must be"),
        ({"variant": "diffusion_ntk", "params": {"span": -1}}, "span must be a finite number > 0"),
    ],
)
def test_bad_input_names_the_value(kwargs, message):
    args = {
        "variant": "default",
        "head_dim": 64,
        "base": 500.0,
        "train_len": 128,
        "target_len": 256,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        compute_rope(**args)


@pytest.mark.parametrize("variant", sorted(ROPE_VARIANTS))
def test_every_variant_gives_valid_frequencies_that_never_speed_up_the_slowest_pair(variant):
    d, b, t = 64, 500.0, 128
    target = None if variant in UNTARGETED else 4 * t
    params = ({"long_factor": [1.0 + 3.0 * n / (d // 2 - 1) for n in range(d // 2)],
               "short_factor": [1.0] * (d // 2)} if variant == "longrope" else {})
    inv_freq, factor = compute_rope(variant, d, b, t, target, params)
    original = default_inv_freq(d, b)
    assert inv_freq.dtype == torch.float32 and inv_freq.shape == (d // 2,)
    assert torch.isfinite(inv_freq).all() and (inv_freq > 0).all() and factor > 0
    assert (inv_freq[1:] <= inv_freq[:-1] * (1 + 1e-6)).all()  # pair n+1 turns no faster than n
    if target is None:
        assert torch.equal(inv_freq, original) and factor == 1.0  # no target: RoPE unchanged
    else:  # extending to 4x T slows the slowest pair, and speeds none up
        assert inv_freq[-1] < original[-1] and (inv_freq <= original * (1 + 1e-6)).all()
