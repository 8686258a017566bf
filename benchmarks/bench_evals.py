"""Speed of the evaluation runners at a preset's model size (untrained weights; speed does not
depend on what the weights know, nor on what the tokens say).

Measures evaluated tokens per second (tokens through the model, prompt + generation, summed over
forward passes) of the PPL runner, the paired loss grid and the NIAH grid runner at each length,
then prices full NIAH grids (lengths x depths x repeats) from the per-sample times and lists the
largest that fit the time budget. Run on an otherwise idle machine, or repeat and report "under
load":

    .venv/bin/python benchmarks/bench_evals.py --preset cpu --budget 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from minillada.evals.models import fixed_model
from minillada.evals.perplexity import paired_loss_grid, ppl_at_lengths
from minillada.evals.retrieval import GenerationSettings, run_retrieval_grid
from minillada.modeling.model import LLaDAConfig, LLaDAModelLM
from minillada.training.precision import machine_report
from minillada.training.presets import get_preset

ANSWER_TOKENS = 5  # a 5-digit key, one token per digit


def synthetic_sample(vocab: int):
    """Random prompt tokens with a random answer: the shape of a NIAH sample, for timing only."""

    def make(task: str, length: int, depth: float, seed: int) -> SimpleNamespace:
        generator = torch.Generator().manual_seed(seed)
        prompt = torch.randint(4, vocab, (length,), generator=generator).tolist()
        answer = torch.randint(4, vocab, (ANSWER_TOKENS,), generator=generator).tolist()
        return SimpleNamespace(prompt_ids=prompt, answer_ids=answer, answer_text="x",
                               metadata={})

    return make


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--lengths", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for one NIAH grid")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    lengths = args.lengths or list(preset.eval_lengths)
    vocab = preset.model["vocab_size"]
    torch.manual_seed(0)
    model = LLaDAModelLM(LLaDAConfig(**preset.model, mask_token_id=vocab - 1,
                                     eos_token_id=vocab - 2)).eval()
    models = {"default": fixed_model(model)}
    print(machine_report())
    print(f"preset {preset.name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          f"parameters, {args.threads} threads, lengths {lengths}")

    documents = [torch.randint(4, vocab - 2, (max(lengths),)).tolist() for _ in range(2)]
    print("\nPPL (chunk 64, mc 8, 2 windows) and loss grid (mc 4, 2 windows)")
    print(f"{'length':>7} {'ppl s':>8} {'ppl tok/s':>10} {'loss s':>8} {'loss tok/s':>11}")
    for length in lengths:
        _, ppl_s = timed(lambda n=length: ppl_at_lengths(
            models, documents, [n], mask_token_id=vocab - 1, eod_token_id=vocab - 2, mc=8,
            max_windows=2, batch_size=args.batch_size))
        _, loss_s = timed(lambda n=length: paired_loss_grid(
            models, documents, [n], mask_token_id=vocab - 1, eod_token_id=vocab - 2, mc=4,
            max_windows=2, batch_size=args.batch_size))
        # chunk_ppl and elbo each run 8 draws per window; the loss grid 4 noised copies.
        print(f"{length:>7} {ppl_s:>8.2f} {2 * 2 * 8 * length / ppl_s:>10.0f} "
              f"{loss_s:>8.2f} {2 * 4 * length / loss_s:>11.0f}")

    settings = {"paper (32/32/16)": GenerationSettings(),
                "fitted (6/6/3)": GenerationSettings().fitted_to(ANSWER_TOKENS)}
    per_sample: dict[str, dict[int, float]] = {name: {} for name in settings}
    print(f"\nNIAH generation, one batch of {args.batch_size} prompts per length")
    print(f"{'settings':>17} {'length':>7} {'s/sample':>9} {'tok/s':>8}")
    for name, setting in settings.items():
        for length in lengths:
            with tempfile.TemporaryDirectory() as folder:
                _, seconds = timed(lambda n=length, s=setting, f=folder: run_retrieval_grid(
                    models, synthetic_sample(vocab - 2), lambda ids: "", tasks=["niah"],
                    lengths=[n], depths=[50], repeats=args.batch_size, settings=s,
                    results_path=Path(f) / "grid.jsonl", mask_token_id=vocab - 1,
                    batch_size=args.batch_size))
            per_sample[name][length] = seconds / args.batch_size
            tokens = args.batch_size * setting.steps * (length + setting.gen_length)
            print(f"{name:>17} {length:>7} {per_sample[name][length]:>9.3f} "
                  f"{tokens / seconds:>8.0f}")

    print(f"\nFull NIAH grids over lengths {lengths} (estimated from the times above)")
    print(f"{'settings':>17} {'depths':>7} {'repeats':>8} {'samples':>8} {'seconds':>8}")
    for name, times in per_sample.items():
        one_pass = sum(times.values())  # one sample at every length
        for depths in (11, 6, 5, 3):
            for repeats in (1, 2, 3, 5, 10):
                seconds = one_pass * depths * repeats
                mark = "  <= budget" if seconds <= args.budget else ""
                print(f"{name:>17} {depths:>7} {repeats:>8} {depths * repeats * len(lengths):>8} "
                      f"{seconds:>8.0f}{mark}")


if __name__ == "__main__":
    main()
