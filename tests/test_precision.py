"""dtype 'auto': the pure decision per branch, the probe cache, and this machine's resolution."""

from __future__ import annotations

import json
import platform

import pytest

from minillada.training import precision
from minillada.training.precision import MatmulProbe, resolve_precision

FAST_BF16 = MatmulProbe(float32=180e9, bfloat16=410e9)  # an AVX512-BF16 EPYC, measured
EMULATED_BF16 = MatmulProbe(float32=112e9, bfloat16=0.2e9)  # an AVX2-only EPYC, measured
EQUAL = MatmulProbe(float32=100e9, bfloat16=110e9)  # below the 1.2x margin


@pytest.mark.parametrize(
    ("requested", "device", "native", "probe", "expected"),
    [
        ("auto", "cuda", True, None, "bfloat16"),
        ("auto", "cuda", False, None, "float32"),
        ("float32", "cuda", True, None, "float32"),
        ("auto", "cpu", True, FAST_BF16, "bfloat16"),
        ("auto", "cpu", True, EQUAL, "float32"),
        ("auto", "cpu", True, None, "float32"),
        ("auto", "cpu", False, EMULATED_BF16, "float32"),
        ("auto", "mps", True, None, "float32"),
        ("bfloat16", "cpu", False, EMULATED_BF16, "bfloat16"),  # explicit wins, with a warning
        ("float32", "cpu", True, FAST_BF16, "float32"),
    ],
)
def test_resolution_per_branch(requested, device, native, probe, expected):
    choice = resolve_precision(requested, device, native, probe)
    assert choice.dtype == expected
    assert choice.requested == requested
    assert choice.reason


@pytest.mark.parametrize("probe", [None, FAST_BF16, EQUAL, EMULATED_BF16,
                                   MatmulProbe(1e9, 1e15)])
def test_auto_never_picks_bf16_on_a_cpu_without_native_bf16(probe):
    """Even a probe claiming bf16 is 10^6x faster cannot make 'auto' pick emulated bf16."""
    assert resolve_precision("auto", "cpu", False, probe).dtype == "float32"


def test_explicit_bf16_warns_when_slower_and_not_when_faster():
    slow = resolve_precision("bfloat16", "cpu", False, EMULATED_BF16)
    assert slow.warning is not None and "float32" in slow.warning and "0.2" in slow.warning
    assert resolve_precision("bfloat16", "cpu", True, FAST_BF16).warning is None
    assert resolve_precision("float32", "cpu", False, EMULATED_BF16).warning is None


@pytest.mark.parametrize("bad", ["bf16", "fp32", "", None, "float16"])
def test_unknown_dtype_names_the_value(bad):
    with pytest.raises(ValueError, match=r"unknown dtype .*choose one of auto, float32, bfloat16"):
        resolve_precision(bad, "cpu", True, FAST_BF16)


def test_native_bf16_flags():
    assert precision.cpu_has_native_bf16(frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert precision.cpu_has_native_bf16(frozenset({"amx_bf16", "amx_tile"}))
    assert not precision.cpu_has_native_bf16(frozenset({"avx2", "fma", "avx512f"}))
    assert not precision.cpu_has_native_bf16(frozenset())


def test_probe_is_cached_per_machine_key_and_measured_in_alternation(tmp_path, monkeypatch):
    calls = []
    load = iter([1.0, 1.0, 0.01, 1.0, 1.0, 1.0] * 10)  # a passing load during one bf16 round

    def fake_flops(name, **_):
        calls.append(name)
        return {"float32": 100e9, "bfloat16": 250e9}[name] * next(load)

    monkeypatch.setattr(precision, "matmul_flops", fake_flops)
    cache = tmp_path / "probe.json"
    first = precision.cpu_matmul_probe(cache)
    second = precision.cpu_matmul_probe(cache)
    assert first == second == MatmulProbe(100e9, 250e9)  # best of each: the load passed
    assert calls == ["float32", "bfloat16"] * 3  # measured once, in alternation
    entries = json.loads(cache.read_text())
    assert len(entries) == 1
    (key,) = entries
    # Another thread count (another key) adds an entry and never replaces this one.
    monkeypatch.setattr(precision, "machine_info", lambda: {
        "cpu": "x", "cpu_capability": "y", "threads": 1, "torch": "z"})
    precision.cpu_matmul_probe(cache)
    assert len(calls) == 12 and set(json.loads(cache.read_text())) == {key, "x|y|1|z"}
    cache.write_text("{not json")
    precision.cpu_matmul_probe(cache)
    assert len(calls) == 18  # a corrupt cache is measured again, not an error
    cache.write_text(json.dumps({"key": "old single-entry format", "float32": 1, "bfloat16": 1}))
    precision.cpu_matmul_probe(cache)
    assert len(calls) == 24 and "key" not in json.loads(cache.read_text())


def test_this_machine_resolves_consistently():
    choice = precision.choose_precision("auto", "cpu")
    assert choice.dtype in ("float32", "bfloat16")
    if not precision.cpu_has_native_bf16():
        assert choice.dtype == "float32"


def test_matmul_flops_is_positive_and_named():
    assert precision.matmul_flops("float32", size=64, repeats=2) > 0
    with pytest.raises(ValueError, match="float16"):
        precision.matmul_flops("float16")


def test_machine_line_names_capability_and_threads():
    line = precision.describe_machine({"cpu": "X", "cpu_capability": "AVX2", "native_bf16": False,
                                       "threads": 2, "torch": "2.13.0"})
    assert line == "X (AVX2, native bf16 no), 2 threads, torch 2.13.0"


def test_cpu_model_names_family_and_model_numbers():
    text = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
            "model name\t: AMD EPYC\n\nprocessor\t: 1\ncpu family\t: 25\nmodel\t\t: 17\n"
            "model name\t: other\n")
    assert precision.cpu_model(text) == "AMD EPYC family 26 model 2"
    assert precision.cpu_model("model name\t: Some CPU\n") == "Some CPU"
    assert precision.cpu_model("") == (platform.processor() or platform.machine())
