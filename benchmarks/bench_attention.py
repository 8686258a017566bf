"""Document-masked attention on CPU: per-document SDPA versus the dense-mask reference.

    .venv/bin/python benchmarks/bench_attention.py --lengths 4096 16384 --docs 8 --seeds 0 1 2

One sequence of L tokens holding `--docs` documents of random lengths (one layout per seed: uniform
random cut points, so the expected sum of squared lengths is 2 L^2 / (docs + 1)) under the adaptive
(block-diagonal) mask; q, k, v of shape [1, heads, L, head_dim] in float32. Each case (length,
backend, forward or forward+backward) runs in its own subprocess so that its peak memory is its
own: peak = max RSS (getrusage) after the timed calls minus max RSS after building the inputs.
Times are the median of `--repeats` calls after one warm-up call. Prints one table; the ratio is
dense time / per-document time, beside the FLOP ratio L^2 / sum(len^2) that bounds it for equally
efficient kernels. Not a test (the CPU may be shared: repeat and compare).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from minillada.modeling.attention import document_attention
from minillada.training.precision import machine_report


def random_doc_ids(length: int, n_docs: int, seed: int) -> torch.Tensor:
    """[1, length] doc ids: n_docs contiguous documents with uniformly random cut points."""
    generator = torch.Generator().manual_seed(seed)
    cuts = torch.randperm(length - 1, generator=generator)[: n_docs - 1] + 1
    lengths = torch.diff(torch.cat([torch.tensor([0]), cuts.sort().values, torch.tensor([length])]))
    return torch.repeat_interleave(torch.arange(n_docs), lengths)[None]


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_case(length: int, backend: str, backward: bool, seed: int, args) -> dict:
    """Time one case in this process; returns seconds per call and peak extra memory (MiB)."""
    torch.manual_seed(seed)
    doc_ids = random_doc_ids(length, args.docs, seed)
    q, k, v = (torch.randn(1, args.heads, length, args.head_dim, requires_grad=backward)
               for _ in range(3))
    baseline = max_rss_mib()
    times = []
    for _ in range(args.repeats + 1):  # the first call is a warm-up
        start = time.perf_counter()
        out = document_attention(q, k, v, doc_ids, backend=backend)
        if backward:
            out.sum().backward()
        times.append(time.perf_counter() - start)
        del out
    return {"seconds": statistics.median(times[1:]), "peak_mib": max_rss_mib() - baseline,
            "doc_lengths": torch.unique_consecutive(doc_ids, return_counts=True)[1].tolist()}


def measure_in_subprocess(length: int, backend: str, backward: bool, seed: int, args) -> dict:
    command = [sys.executable, __file__, "--case", str(length), backend, str(int(backward)),
               str(seed), "--docs", str(args.docs), "--heads", str(args.heads), "--head-dim",
               str(args.head_dim), "--repeats", str(args.repeats)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 16384])
    parser.add_argument("--docs", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--case", nargs=4, metavar=("LENGTH", "BACKEND", "BACKWARD", "SEED"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        length, backend, backward, seed = args.case
        print(json.dumps(run_case(int(length), backend, bool(int(backward)), int(seed), args)))
        return

    print(machine_report())
    print(f"{args.docs} documents, {args.heads} heads x {args.head_dim}, float32, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    header = ("L", "seed", "pass", "per_doc s", "dense s", "ratio", "FLOP ratio", "per_doc MiB",
              "dense MiB")
    print(" | ".join(header))
    for length in args.lengths:
        for seed in args.seeds:
            for backward in (False, True):
                per_doc = measure_in_subprocess(length, "per_document", backward, seed, args)
                dense = measure_in_subprocess(length, "dense", backward, seed, args)
                flop_ratio = length**2 / sum(n * n for n in per_doc["doc_lengths"])
                row = (length, seed, "fwd+bwd" if backward else "fwd",
                       f"{per_doc['seconds']:.3f}", f"{dense['seconds']:.3f}",
                       f"{dense['seconds'] / per_doc['seconds']:.1f}x", f"{flop_ratio:.1f}x",
                       f"{per_doc['peak_mib']:.0f}", f"{dense['peak_mib']:.0f}")
                print(" | ".join(map(str, row)), flush=True)


if __name__ == "__main__":
    main()
