"""Peak memory of the loss step at a long row: today's full-row loss vs the chunked masked-only one.

    .venv/bin/python benchmarks/bench_loss.py --length 16384 --vocab 8192 --d-model 256

One loss + backward at the output head, from the final hidden states of one row (a leaf standing
in for the trunk's output) to the gradients of the hidden states and of the head, in float32 on
CPU, for several masked counts:
- `full`: the trainer's default path, logits of every position, `logits.float()`, then
  `diffusion.diffusion_loss` over the masked ones;
- `chunked`: `masked_loss.chunked_cross_entropy` on the masked positions, `--chunk` at a time.

Peak bytes are the tensors alive at the worst moment (torch's MemTracker: what a GPU caching
allocator would have to hold), above the inputs and their gradients. Prints a markdown table and,
with --json, the numbers. Not a test (tests/test_masked_loss.py checks the same law at toy size).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.distributed._tools.mem_tracker import MemTracker

from minillada.modeling.diffusion import diffusion_loss
from minillada.modeling.masked_loss import chunked_cross_entropy, diffusion_loss_weights
from minillada.training.precision import describe_machine

MIB = 2**20


def loss_step(method: str, length: int, vocab: int, d_model: int, masked_count: int,
              chunk: int, seed: int = 0) -> dict[str, float]:
    """Peak bytes above the inputs and seconds of one loss + backward."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(1, length, d_model, generator=generator, requires_grad=True)
    weight = (torch.randn(vocab, d_model, generator=generator) / d_model**0.5).requires_grad_()
    tokens = torch.randint(0, vocab, (1, length), generator=generator)
    masked = torch.zeros(1, length, dtype=torch.bool)
    masked[0, torch.randperm(length, generator=generator)[:masked_count]] = True
    p_mask = torch.full((1, length), masked_count / length)
    row_tokens = torch.tensor([length])
    tracker = MemTracker()
    tracker.track_external(hidden, weight)
    started = time.perf_counter()
    with tracker:
        if method == "full":
            logits = F.linear(hidden, weight)
            loss = diffusion_loss(logits.float(), tokens, masked, p_mask, row_tokens=row_tokens)
            del logits
        else:
            loss = chunked_cross_entropy(hidden[masked], weight, tokens[masked],
                                         diffusion_loss_weights(masked, p_mask, row_tokens), chunk)
        loss.backward()
    seconds = time.perf_counter() - started
    inputs = 2 * (hidden.numel() + weight.numel()) * 4  # the inputs and their gradients
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"] - inputs
    return {"method": method, "masked": masked_count, "peak_bytes": peak, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=16384)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1 / 64, 1 / 8, 1 / 2, 1.0])
    parser.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    args = parser.parse_args()
    print(describe_machine())
    rows = [loss_step(method, args.length, args.vocab, args.d_model, round(f * args.length),
                      args.chunk)
            for f in args.fractions for method in ("full", "chunked")]
    row_vocab = args.length * args.vocab
    print(f"\nrow {args.length} tokens, vocabulary {args.vocab}, d_model {args.d_model}, chunk "
          f"{args.chunk}, float32; peak above the inputs\n")
    print("| masked tokens | full: MiB | full: B per row token x vocab | chunked: MiB | "
          "full / chunked |")
    print("|---:|---:|---:|---:|---:|")
    for full, chunked in zip(rows[::2], rows[1::2], strict=True):
        print(f"| {full['masked']} | {full['peak_bytes'] / MIB:.1f} | "
              f"{full['peak_bytes'] / row_vocab:.2f} | {chunked['peak_bytes'] / MIB:.1f} | "
              f"{full['peak_bytes'] / chunked['peak_bytes']:.0f}x |")
    low, high = rows[-3], rows[-1]  # the chunked path at the two largest masked counts
    slope = (high["peak_bytes"] - low["peak_bytes"]) / (high["masked"] - low["masked"])
    print(f"\nchunked: {slope:.0f} B per extra masked token ({slope / args.d_model:.1f} x d_model)"
          f"; seconds full {sum(r['seconds'] for r in rows[::2]):.1f}, chunked "
          f"{sum(r['seconds'] for r in rows[1::2]):.1f} (all counts)")
    if args.json:
        print(json.dumps({"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
