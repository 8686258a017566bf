"""Which precision a run computes in: bfloat16 where this machine runs it fast, float32 elsewhere.

`dtype="auto"` (the default of every preset) resolves per machine:

- CUDA: bfloat16 when the GPU supports it (Ampere and later), else float32.
- CPU: bfloat16 only when the CPU has native bf16 instructions (AVX512_BF16 or AMX-BF16) *and* a
  short matmul probe measures bf16 at least `BF16_MARGIN` times faster than float32. Without
  native bf16, PyTorch emulates it: on an AVX2-only EPYC a bf16 matmul ran at 0.2 GFLOP/s against
  112 GFLOP/s in float32, so bf16 autocast would slow training down about 500-fold.

`resolve_precision` is the pure decision; `choose_precision` gathers this machine's facts (CPU
flags, a probe cached per machine in the minillada cache folder), decides and logs once.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from minillada.common.names import DTYPE_NAMES

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

BF16_MARGIN = 1.2  # bf16 must beat float32 by this factor in the probe to be chosen on a CPU
PROBE_SIZE = 256  # matmul side: about 0.2 s in emulated bf16 at 0.2 GFLOP/s


@dataclass(frozen=True)
class MatmulProbe:
    """Measured FLOP/s of a square matmul per dtype name on one device."""

    float32: float
    bfloat16: float

    @property
    def bf16_speedup(self) -> float:
        return self.bfloat16 / self.float32


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved precision: `dtype` is 'float32' or 'bfloat16'; `warning` is set when an
    explicit request goes against what the probe measured."""

    requested: str
    dtype: str
    reason: str
    warning: str | None = None


def check_dtype_name(name: object) -> str:
    """`name` if it is one of DTYPE_NAMES; ValueError naming it otherwise."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_NAMES)}")
    return str(name)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype a resolved dtype name ('float32' or 'bfloat16') computes in."""
    import torch

    if name not in ("float32", "bfloat16"):
        raise ValueError(f"dtype {name!r} is not resolved; choose float32 or bfloat16 (auto "
                         "resolves through choose_precision)")
    return getattr(torch, name)


def resolve_precision(requested: str, device_type: str, native_bf16: bool,
                      probe: MatmulProbe | None = None) -> PrecisionChoice:
    """Resolve `requested` ('auto', 'float32' or 'bfloat16') for a device.

    `native_bf16`: the device computes bf16 natively (CUDA: `torch.cuda.is_bf16_supported()`;
    CPU: AVX512_BF16 or AMX-BF16 flags). `probe` is only consulted on a CPU. 'auto' on a CPU yields
    bfloat16 iff native_bf16 and probe.bf16_speedup >= BF16_MARGIN; it never yields bfloat16
    without native bf16, whatever a probe says.
    """
    check_dtype_name(requested)
    if device_type == "cuda":
        if requested != "auto":
            return PrecisionChoice(requested, requested, f"{requested} requested")
        if native_bf16:
            return PrecisionChoice(requested, "bfloat16", "CUDA device with bf16 support")
        return PrecisionChoice(requested, "float32", "CUDA device without bf16 support")
    if device_type != "cpu":
        if requested == "auto":
            return PrecisionChoice(requested, "float32", f"{device_type}: float32 by default")
        return PrecisionChoice(requested, requested, f"{requested} requested")

    measured = (f"probe: bf16 {probe.bfloat16 / 1e9:.1f} vs float32 {probe.float32 / 1e9:.1f} "
                f"GFLOP/s" if probe is not None else "no probe")
    bf16_fast = native_bf16 and probe is not None and probe.bf16_speedup >= BF16_MARGIN
    if requested == "auto":
        if bf16_fast:
            return PrecisionChoice(requested, "bfloat16", f"CPU with native bf16; {measured}")
        why = "CPU without native bf16" if not native_bf16 else "bf16 not faster on this CPU"
        return PrecisionChoice(requested, "float32", f"{why}; {measured}")
    warning = None
    if requested == "bfloat16" and not bf16_fast:
        warning = (f"dtype bfloat16 was requested, but this CPU "
                   f"{'has no native bf16' if not native_bf16 else 'does not run bf16 faster'} "
                   f"({measured}); float32 (dtype auto) would be faster")
    return PrecisionChoice(requested, requested, f"{requested} requested; {measured}", warning)


# -- this machine's facts --------------------------------------------------------------------


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where the file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """True for CPUs with AVX512_BF16 or AMX-BF16 instructions (or Arm's bf16 extension)."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name with its family and model numbers, "AMD EPYC family 26 model 2"
    (platform.processor() where /proc/cpuinfo has none). Virtual machines often report a bare
    "AMD EPYC"; the numbers tell its generations apart, whose bf16 kernels train differently."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.split("\n\n")[0].splitlines():  # the first processor describes them all
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name")
    if not name:
        return platform.processor() or platform.machine()
    numbers = [f"{label} {fields[key]}" for key, label in (("cpu family", "family"),
                                                           ("model", "model")) if key in fields]
    return " ".join([name, *numbers])


def machine_info() -> dict[str, object]:
    """What a timing depends on: CPU model and capability, native bf16, threads, torch, GPU."""
    import torch

    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def describe_machine(info: Mapping[str, object] | None = None) -> str:
    """One line naming the machine, printed beside every timing."""
    info = machine_info() if info is None else info
    line = (f"{info['cpu']} ({info['cpu_capability']}, native bf16 "
            f"{'yes' if info['native_bf16'] else 'no'}), {info['threads']} threads, "
            f"torch {info['torch']}")
    return line + (f", GPU {info['gpu']}" if "gpu" in info else "")


def machine_report(size: int = 512) -> str:
    """The machine line plus the measured matmul peak per dtype, printed atop every benchmark
    so that numbers from different machines can be compared."""
    peaks = ", ".join(f"{name} {matmul_flops(name, size=size) / 1e9:.1f}"
                      for name in ("float32", "bfloat16"))
    return f"machine: {describe_machine()}; matmul peak {size}^3 GFLOP/s: {peaks}"


def matmul_flops(dtype_name: str, size: int = PROBE_SIZE, repeats: int = 5,
                 device: str = "cpu", budget_s: float = 2.0) -> float:
    """FLOP/s of a size x size x size matmul in `dtype_name` (best of `repeats`, stopping early
    once `budget_s` is spent so an emulated dtype cannot stall the caller)."""
    import torch

    dtype = getattr(torch, check_dtype_name(dtype_name))
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b  # warm-up
    sync()
    best, spent = math.inf, 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > budget_s:
            break
    return 2 * size**3 / best


def _probe_cache_path() -> Path:
    from minillada.common.folders import cache_dir

    return cache_dir() / "precision-probe.json"


def interleaved_probe(rounds: int = 3) -> MatmulProbe:
    """float32 and bfloat16 matmul FLOP/s, measured in alternation (best of `rounds` each), so
    that a load that comes and goes slows both alike instead of deciding the comparison."""
    measured = {"float32": 0.0, "bfloat16": 0.0}
    for _ in range(rounds):
        for name in measured:
            measured[name] = max(measured[name], matmul_flops(name, repeats=3, budget_s=1.0))
    return MatmulProbe(measured["float32"], measured["bfloat16"])


def cpu_matmul_probe(cache: Path | None = None) -> MatmulProbe:
    """The CPU probe, measured once per machine (CPU model, capability, threads, torch) and cached
    as JSON, one entry per machine key (a run with another thread count never replaces an
    entry: every process of one machine and thread count resolves `auto` alike); a missing or
    unreadable entry is measured again."""
    info = machine_info()
    key = f"{info['cpu']}|{info['cpu_capability']}|{info['threads']}|{info['torch']}"
    cache = _probe_cache_path() if cache is None else cache
    try:
        entries = json.loads(cache.read_text())
        entries = entries if isinstance(entries, dict) and "key" not in entries else {}
    except (OSError, ValueError):
        entries = {}
    try:
        return MatmulProbe(float(entries[key]["float32"]), float(entries[key]["bfloat16"]))
    except (KeyError, TypeError, ValueError):
        pass
    probe = interleaved_probe()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({**entries, key: asdict(probe)}, indent=1))
        temporary.replace(cache)
    except OSError as error:  # a read-only cache folder only costs a probe next time
        log.debug("precision probe not cached: %s", error)
    return probe


@functools.cache
def choose_precision(requested: str = "auto", device_type: str | None = None) -> PrecisionChoice:
    """Resolve `requested` for this machine (device: CUDA when available), logging the decision
    once per process and warning when an explicit bf16 request is slower than float32."""
    import torch

    check_dtype_name(requested)
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        choice = resolve_precision(requested, "cuda", torch.cuda.is_bf16_supported())
    elif device_type == "cpu":
        # The probe is only needed where bf16 is in question.
        native = cpu_has_native_bf16()
        needs_probe = requested == "bfloat16" or (requested == "auto" and native)
        choice = resolve_precision(requested, "cpu", native,
                                   cpu_matmul_probe() if needs_probe else None)
    else:
        choice = resolve_precision(requested, device_type, False)
    log.info("precision: %s (dtype %s: %s)", choice.dtype, requested, choice.reason)
    if choice.warning:
        log.warning(choice.warning)
    return choice
