"""Prove the CUDA path in one run: FlexAttention, FSDP2 over nccl, the gpu preset, LLaDA-8B memory.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json

One command runs every section (the FSDP2 and memory sections launch `torchrun
--nproc_per_node=1` themselves, as subprocesses); about 5-8 minutes on one H200. Each section fails
on its own (status `error`, with the traceback tail) without stopping the others, and the report is
rewritten atomically after every section, so a run cut short keeps what it finished.

- `flex`: FlexAttention (compiled block mask, `device=` given) against the per-document path on
  the same packed batch (adaptive and adaptive_eod packings of `minillada.data.packing`, 8K and 32K
  tokens per row, bf16, LLaDA-8B heads): max abs difference of outputs and of the q, k, v
  gradients, each backend's error against an fp32 per-document reference (flex passes when its
  error is at most twice the per-document path's own bf16 error), mask build, forward and
  forward+backward times (median), peak memory above the inputs.
- `fsdp`: the trainer's step on one process (bf16 autocast) and under torchrun with FSDP2 over nccl
  (bf16 parameters, fp32 reduction): first-step losses equal within 1e-3, tokens/s of both; the
  same FSDP2 step with activation checkpointing.
- `train`: `--steps` (50) steps of the gpu preset's pretrain stage, then of its extend stage from
  that model (per_document and flex backends): tokens/s, MFU, peak GPU memory. MFU = model FLOPs/s
  over the measured bf16 matmul peak; model FLOPs per token are bench_train's 6 N + 12 n_layers
  d_model L (N: matmul parameters, head included), where L is the whole row: an upper bound on
  the attention work under block-diagonal packing.
- `memory`: the LLaDA-8B plans on paper (`minillada.training.memory_plan`, always: 64K with the
  full-row loss; 32K, 64K and 128K on 8 GPUs with the chunked loss), and measured under FSDP2
  (one process, the trainer's policy) at LLaDA-8B width with 1 and 2 layers: bytes per parameter
  of weights, gradients and AdamW states, and peak activation bytes per token with and without
  activation checkpointing, with the full-row and the chunked loss (slopes over two sequence
  lengths), extrapolated to 32 layers.
- `context_parallel` (only where several GPUs exist; `--quick` on CPU: 2 gloo processes): under
  torchrun over every GPU, the trainer's step with the rows whole (context parallelism 1) and
  split over all of them (the gpu preset's pretrain at 16K tokens per row, adaptive packing):
  first-step losses equal within 1e-3 (bf16), tokens/s of both; and the peak memory of one
  forward and backward at LLaDA-8B width (2 layers, a 32K row, checkpointing, the chunked loss)
  whole and split, beside `memory_plan`'s allocated bytes for the same (its ratio shows whether
  the plan's context-parallel terms hold).

Without CUDA, the CUDA-only sections report `skipped: no CUDA` (the context-parallel one, on one
GPU, that it needs several); `--quick` shrinks every size so the whole path runs in seconds (on
CPU: the train section at the smoke preset and, under gloo, the FSDP2 and context-parallel
sections; flex backward and the memory measurements need CUDA).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _folder in (Path(__file__).resolve().parent, ROOT):  # this checkout's package, then helpers
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import torch  # noqa: E402
from bench_attention import random_doc_ids  # noqa: E402
from bench_train import matmul_peak, model_flops_per_token  # noqa: E402

from minillada.common.atomic import atomic_write_text  # noqa: E402
from minillada.data.packing import pack_documents  # noqa: E402
from minillada.modeling.attention import build_document_mask, masked_attention  # noqa: E402
from minillada.modeling.context_parallel import apply_context_parallel  # noqa: E402
from minillada.modeling.diffusion import diffusion_loss  # noqa: E402
from minillada.modeling.distributed import shard_model, start_runtime, stop_runtime  # noqa: E402
from minillada.modeling.masked_loss import diffusion_loss_weights  # noqa: E402
from minillada.modeling.model import LLaDAConfig, LLaDAModelLM  # noqa: E402
from minillada.training.checkpoint import export_model  # noqa: E402
from minillada.training.config import TrainConfig, make_config  # noqa: E402
from minillada.training.memory_plan import GIB, LLADA_8B, llada_8b_plans, model_plan  # noqa: E402
from minillada.training.presets import get_preset  # noqa: E402
from minillada.training.run_setup import (  # noqa: E402
    build_optimizer,
    run_token_cache,
    run_tokenizer,
)
from minillada.training.trainer import Trainer  # noqa: E402

SECTIONS = ("flex", "fsdp", "train", "memory", "context_parallel")
PACKINGS = ("adaptive", "adaptive_eod")
LOSS_TOLERANCE = 1e-3  # FSDP2 step vs plain step, bf16
TINY = dict(vocab_size=2048, d_model=256, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=768)

SIZES = {
    "full": dict(flex_lengths=(8192, 32768), flex_rows=2, flex_heads=32, flex_head_dim=128,
                 flex_mean_doc=2048, repeats=5, preset="gpu", fsdp_steps=8, train_steps=50,
                 memory_dims=LLADA_8B, memory_tokens=(2048, 4096), memory_loss_chunk=512,
                 cp_seq_len=16384, cp_memory_tokens=32768, timeout_s=420),
    "quick": dict(flex_lengths=(256, 512), flex_rows=2, flex_heads=2, flex_head_dim=16,
                  flex_mean_doc=64, repeats=2, preset="smoke", fsdp_steps=3, train_steps=3,
                  memory_dims=TINY, memory_tokens=(128, 256), memory_loss_chunk=32,
                  cp_seq_len=250, cp_memory_tokens=256, timeout_s=240),
}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Median wall time of `repeats` calls of fn (after the caller's warm-up), synchronised."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def peak_memory(device: torch.device, into: dict[str, Any], key: str = "peak_memory_bytes"):
    """into[key] = peak CUDA bytes allocated above the bytes allocated on entry (None on CPU)."""
    if device.type != "cuda":
        into[key] = None
        yield
        return
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    yield
    sync(device)
    into[key] = torch.cuda.max_memory_allocated(device) - base


def packed_doc_ids(strategy: str, seq_len: int, rows: int, mean_doc: int, seed: int = 0):
    """doc_ids [rows, seq_len] of random-length documents (bench_attention's uniform cut points,
    mean length ~mean_doc) packed by minillada.data.packing under `strategy`."""
    total = rows * seq_len
    lengths = torch.unique_consecutive(random_doc_ids(total, max(1, total // mean_doc), seed),
                                       return_counts=True)[1].tolist()
    docs = [[4] * length for length in lengths]
    return pack_documents(docs, seq_len, strategy, eod_token_id=1).doc_ids[:rows]


def compare_attention(doc_ids: torch.Tensor, heads: int, head_dim: int, dtype: torch.dtype,
                      device: torch.device, backward: bool = True, repeats: int = 3,
                      seed: int = 0) -> dict[str, Any]:
    """flex vs per_document attention on one batch: differences, errors vs fp32, times, memory."""
    doc_ids = doc_ids.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    batch, length = doc_ids.shape
    reference = [torch.randn(batch, heads, length, head_dim, device=device, generator=generator)
                 for _ in range(3)]
    upstream = torch.randn(batch, heads, length, head_dim, device=device, generator=generator)

    def run(backend: str, cast: torch.dtype) -> tuple[torch.Tensor, ...]:
        q, k, v = (x.detach().to(cast).requires_grad_(backward) for x in reference)
        mask = build_document_mask(doc_ids, backend)
        out = masked_attention(q, k, v, mask)
        if not backward:
            return (out.detach().float(),)
        grads = torch.autograd.grad(out, (q, k, v), upstream.to(cast))
        return tuple(t.detach().float() for t in (out, *grads))

    names = ("out", "dq", "dk", "dv") if backward else ("out",)
    results, first_call_s = {}, {}
    for backend in ("flex", "per_document"):  # also the warm-up (flex compiles here)
        sync(device)
        start = time.perf_counter()
        results[backend] = run(backend, dtype)
        sync(device)
        first_call_s[backend] = time.perf_counter() - start
    exact = run("per_document", torch.float32)
    result: dict[str, Any] = {"shape": [batch, heads, length, head_dim], "dtype": str(dtype),
                              "documents": int(sum(len(row.unique()) for row in doc_ids.cpu())),
                              "max_abs_diff": {}, "flex_error": {}, "per_document_error": {}}
    for i, name in enumerate(names):
        flex, per_doc = results["flex"][i], results["per_document"][i]
        result["max_abs_diff"][name] = float((flex - per_doc).abs().max())
        result["flex_error"][name] = float((flex - exact[i]).abs().max())
        result["per_document_error"][name] = float((per_doc - exact[i]).abs().max())
    result["ok"] = all(result["flex_error"][n] <= 2 * result["per_document_error"][n] + 1e-6
                       for n in names)
    del results, exact
    for backend in ("flex", "per_document"):
        q, k, v = (x.detach().to(dtype).requires_grad_(backward) for x in reference)
        mask = build_document_mask(doc_ids, backend)
        graphs = _compiled_graphs()
        timings: dict[str, Any] = {"first_call_s": first_call_s[backend]}
        timings["prepare_s"] = median_seconds(
            lambda backend=backend: build_document_mask(doc_ids, backend), repeats, device)

        def forward(q=q, k=k, v=v, mask=mask):
            with torch.no_grad():
                return masked_attention(q, k, v, mask)

        def forward_backward(q=q, k=k, v=v, mask=mask):
            torch.autograd.grad(masked_attention(q, k, v, mask), (q, k, v), upstream.to(dtype))

        with peak_memory(device, timings, "forward_peak_bytes"):
            timings["forward_s"] = median_seconds(forward, repeats, device)
        if backward:
            with peak_memory(device, timings, "forward_backward_peak_bytes"):
                timings["forward_backward_s"] = median_seconds(forward_backward, repeats, device)
        # 0 unless torch.compile recompiled inside the timed calls (then the times include it).
        timings["graphs_compiled_while_timed"] = _compiled_graphs() - graphs
        result[backend] = timings
    return result


def _compiled_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def trainer_steps(config, runtime, steps: int, warmup: int) -> tuple[Trainer, dict[str, Any]]:
    """Run `steps` trainer steps; losses, grad norms, tokens/s after `warmup` steps, peak memory."""
    trainer = Trainer(config, runtime)
    records: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    with peak_memory(runtime.device, result):
        for _ in range(steps):
            records.append(trainer.train_step())
    step_tokens = [r["tokens"] - (records[i - 1]["tokens"] if i else 0)
                   for i, r in enumerate(records)]
    step_seconds = [t / r["tokens_per_s"] for t, r in zip(step_tokens, records, strict=True)]
    warmup = min(warmup, steps - 1)
    timed_tokens, timed_seconds = sum(step_tokens[warmup:]), sum(step_seconds[warmup:])
    result.update({
        "steps": steps, "warmup_steps": warmup, "losses": [r["loss"] for r in records],
        "grad_norms": [r["grad_norm"] for r in records], "seq_len": config.seq_len,
        "tokens_per_step": step_tokens[-1],
        "tokens_per_s": timed_tokens / timed_seconds if timed_seconds else None,
        "first_step_s": step_seconds[0],
        "flops_per_token": model_flops_per_token(trainer, config.seq_len),
        "n_params": sum(p.numel() for p in trainer.model.parameters()),
    })
    return trainer, result


def fsdp_config(preset: str, out: str, steps: int, **overrides):
    settings = dict(steps=steps, dtype="bfloat16", progress=False, random_length_fraction=0.0,
                    val_rows=0, val_task_rows=0, save_every=10**6, val_every=10**6)
    return make_config(preset, "pretrain", out, **{**settings, **overrides})


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "skipped": reason, "table": [["", "skipped", reason]]}


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f} GiB"


def run_worker(task: str, ctx: dict[str, Any], folder: Path, nproc: int = 1) -> dict[str, Any]:
    """Run `--worker task` under `torchrun --nproc_per_node=nproc` and return its JSON result."""
    out = folder / f"{task}.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", str(Path(__file__).resolve()), "--worker", task,
               "--worker-dir", str(folder), "--worker-out", str(out), "--steps",
               str(ctx["sizes"]["fsdp_steps"])]
    if ctx["quick"]:
        command.append("--quick")
    done = subprocess.run(command, capture_output=True, text=True,
                          timeout=ctx["sizes"]["timeout_s"])
    if done.returncode or not out.is_file():
        raise RuntimeError(f"torchrun worker {task!r} exited with {done.returncode}:\n"
                           f"{(done.stdout + done.stderr)[-4000:]}")
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------
# Sections: each takes the run context and returns its part of the report
# ---------------------------------------------------------------------------------------------


def section_flex(ctx: dict[str, Any]) -> dict[str, Any]:
    device, sizes = ctx["device"], ctx["sizes"]
    if device.type != "cuda":
        return skipped("no CUDA")  # eager flex on CPU has no backward (tests cover its forward)
    cases, table = [], []
    for length in ctx["flex_lengths"]:
        for strategy in PACKINGS:
            doc_ids = packed_doc_ids(strategy, length, sizes["flex_rows"], sizes["flex_mean_doc"],
                                     seed=length)
            case = {"packing": strategy, "seq_len": length, **compare_attention(
                doc_ids, sizes["flex_heads"], sizes["flex_head_dim"], torch.bfloat16, device,
                repeats=sizes["repeats"])}
            cases.append(case)
            torch.cuda.empty_cache()
            flex, per_doc = case["flex"], case["per_document"]
            table.append([f"{strategy} L={length}", "ok" if case["ok"] else "fail",
                          f"max|diff| out {case['max_abs_diff']['out']:.2e} dq "
                          f"{case['max_abs_diff']['dq']:.2e}; fwd+bwd flex "
                          f"{flex['forward_backward_s'] * 1e3:.1f} ms vs per_doc "
                          f"{per_doc['forward_backward_s'] * 1e3:.1f} ms; peak "
                          f"{gib(flex['forward_backward_peak_bytes'])} vs "
                          f"{gib(per_doc['forward_backward_peak_bytes'])}"])
    return {"status": "ok" if all(c["ok"] for c in cases) else "fail", "cases": cases,
            "table": table}


def section_fsdp(ctx: dict[str, Any]) -> dict[str, Any]:
    device, sizes = ctx["device"], ctx["sizes"]
    if device.type != "cuda" and not ctx["quick"]:
        return skipped("no CUDA")  # the point is nccl; --quick runs it under gloo on CPU
    steps = sizes["fsdp_steps"]
    with tempfile.TemporaryDirectory(prefix="gpu_check_fsdp_") as tmp:
        runtime = start_runtime()
        trainer, plain = trainer_steps(fsdp_config(sizes["preset"], f"{tmp}/plain", steps),
                                       runtime, steps, warmup=min(2, steps - 1))
        del trainer
        if device.type == "cuda":
            torch.cuda.empty_cache()
        worker = run_worker("fsdp", ctx, Path(tmp))
    sharded, checkpointed = worker["fsdp"], worker["fsdp_activation_checkpointing"]
    loss_diff = abs(plain["losses"][0] - sharded["losses"][0])
    ac_diff = abs(sharded["losses"][0] - checkpointed["losses"][0])
    ok = loss_diff <= LOSS_TOLERANCE and ac_diff <= LOSS_TOLERANCE
    ratio = sharded["tokens_per_s"] / plain["tokens_per_s"]
    return {
        "status": "ok" if ok else "fail", "backend": worker["backend"], "plain": plain,
        "fsdp": sharded, "fsdp_activation_checkpointing": checkpointed,
        "first_loss_abs_diff": loss_diff, "activation_checkpointing_loss_abs_diff": ac_diff,
        "tolerance": LOSS_TOLERANCE, "tokens_per_s_ratio": ratio,
        "table": [[f"{sizes['preset']} pretrain, {worker['backend']}", "ok" if ok else "fail",
                   f"|loss diff| {loss_diff:.2e} (AC {ac_diff:.2e}, tol {LOSS_TOLERANCE}); "
                   f"tokens/s plain {plain['tokens_per_s']:.0f}, FSDP2 "
                   f"{sharded['tokens_per_s']:.0f} (x{ratio:.3f})"]],
    }


def section_train(ctx: dict[str, Any]) -> dict[str, Any]:
    device, sizes = ctx["device"], ctx["sizes"]
    if device.type != "cuda" and not ctx["quick"]:
        return skipped("no CUDA")
    steps, preset = ctx["steps"], sizes["preset"]
    # MFU against a GPU's peak only: a CPU's bf16 matmul peak at --quick sizes says little.
    peak = ctx["machine"]["bf16_matmul_peak_flops"] if device.type == "cuda" else None
    warmup = min(5, steps - 1)
    common = dict(steps=steps, dtype="bfloat16", progress=False, random_length_fraction=0.0,
                  val_rows=0, val_task_rows=0, save_every=10**6, val_every=10**6)
    runs: dict[str, Any] = {}
    runtime = start_runtime()
    with tempfile.TemporaryDirectory(prefix="gpu_check_train_") as tmp:
        config = make_config(preset, "pretrain", f"{tmp}/pretrain", **common)
        trainer, runs["pretrain"] = trainer_steps(config, runtime, steps, warmup)
        export_model(trainer.model, trainer.tokenizer, Path(tmp) / "pretrain" / "model", runtime)
        del trainer
        for backend in ("per_document", "flex"):
            name = f"extend_{backend}"
            if backend == "flex" and device.type != "cuda":
                runs[name] = skipped("no CUDA (flex has no CPU backward)")
                continue
            config = make_config(preset, "extend", f"{tmp}/{name}", init=f"{tmp}/pretrain",
                                 attention_backend=backend, **common)
            runs[name] = trainer_steps(config, runtime, steps, warmup)[1]
            if device.type == "cuda":
                torch.cuda.empty_cache()
    table = []
    for name, run in runs.items():
        if run.get("status") == "skipped":
            table.append([name, "skipped", run["skipped"]])
            continue
        run["mfu"] = run["tokens_per_s"] * run["flops_per_token"] / peak if peak else None
        table.append([f"{name} L={run['seq_len']}", "ok",
                      f"{run['tokens_per_s']:.0f} tokens/s, MFU "
                      f"{'-' if run['mfu'] is None else format(run['mfu'], '.1%')}, peak "
                      f"{gib(run['peak_memory_bytes'])}, loss {run['losses'][0]:.3f} -> "
                      f"{run['losses'][-1]:.3f}"])
    return {"status": "ok", "preset": preset, "steps": steps, "runs": runs,
            "mfu_peak_flops": peak, "table": table}


def section_memory(ctx: dict[str, Any]) -> dict[str, Any]:
    plans = llada_8b_plans(65536)
    table = [[f"plan 64K W={p['world_size']} AC={'on' if p['activation_checkpointing'] else 'off'}",
              "plan", f"{p['total_gib']:.1f} GiB per GPU"] for p in plans]
    chunk = get_preset("llada-8b").extend["loss_chunk"]  # the recipe's
    chunked = [model_plan(LLADA_8B, length, 8, True, loss_chunk=chunk)
               for length in (32768, 65536, 131072)]
    table += [[f"plan {p['inputs']['seq_len'] // 1024}K W=8 AC=on loss chunk {chunk}", "plan",
               f"{p['total_gib']:.1f} GiB per GPU"] for p in chunked]
    result: dict[str, Any] = {"status": "ok", "plan_llada_8b_64k": plans,
                              "plan_llada_8b_8_gpus_chunked_loss": chunked}
    if ctx["device"].type != "cuda":
        result["measured"] = {"status": "skipped", "skipped": "no CUDA"}
        table.append(["measured", "skipped", "no CUDA"])
    else:
        with tempfile.TemporaryDirectory(prefix="gpu_check_memory_") as tmp:
            measured = run_worker("memory", ctx, Path(tmp))
        result["measured"] = {"status": "ok", **measured}
        for ac, value in measured["extrapolated_32_layers_per_1k_tokens"].items():
            table.append([f"measured {ac}", "ok", f"{gib(value)} per 1K tokens at 32 layers"])
        for ac, value in measured["chunked_head_bytes_per_token"].items():
            table.append([f"measured chunked loss {ac}", "ok",
                          f"head + loss {value:.0f} B per token (plan "
                          f"{chunked[0]['head_bytes_per_token']:.0f})"])
        bpp = measured["bytes_per_param"]
        table.append(["measured bytes/param", "ok", ", ".join(f"{k} {v:.2f}"
                                                              for k, v in bpp.items())])
    result["table"] = table
    return result


def section_context_parallel(ctx: dict[str, Any]) -> dict[str, Any]:
    device, sizes = ctx["device"], ctx["sizes"]
    gpus = torch.cuda.device_count()
    if device.type == "cuda" and gpus < 2:
        return skipped(f"needs 2 or more GPUs, found {gpus}: context parallelism splits each row "
                       "over several")
    if device.type != "cuda" and not ctx["quick"]:
        return skipped("no CUDA (--quick runs it on 2 gloo processes on CPU)")
    nproc = 2 ** (min(gpus, 8).bit_length() - 1) if device.type == "cuda" else 2
    with tempfile.TemporaryDirectory(prefix="gpu_check_cp_") as tmp:
        config = context_parallel_config(sizes, f"{tmp}/prepare", nproc, 1, 1)
        # torchrun's ranks only read a token cache: this process prepares it
        run_token_cache(run_tokenizer(config), config, start_runtime())
        worker = run_worker("context_parallel", ctx, Path(tmp), nproc)
    whole, split = worker["whole_rows"], worker["split_rows"]
    loss_diff = abs(whole["losses"][0] - split["losses"][0])
    ok = loss_diff <= LOSS_TOLERANCE
    ratio = split["tokens_per_s"] / whole["tokens_per_s"]
    table = [[f"{sizes['preset']} pretrain L={whole['seq_len']}, CP {nproc} of {nproc} "
              f"{worker['backend']}", "ok" if ok else "fail",
              f"|loss diff| {loss_diff:.2e} (tol {LOSS_TOLERANCE}); tokens/s whole rows "
              f"{whole['tokens_per_s']:.0f}, split {split['tokens_per_s']:.0f} (x{ratio:.3f})"]]
    for degree, row in worker["memory"].items():
        table.append([f"memory CP {degree}", "ok" if row["measured_bytes"] is not None else
                      "skipped", f"peak {gib(row['measured_bytes'])}, plan "
                      f"{gib(row['planned_bytes'])} allocated"])
    return {"status": "ok" if ok else "fail", "backend": worker["backend"], "gpus": nproc,
            "whole_rows": whole, "split_rows": split, "first_loss_abs_diff": loss_diff,
            "tolerance": LOSS_TOLERANCE, "tokens_per_s_ratio": ratio,
            "memory": worker["memory"], "table": table}


SECTION_FUNCTIONS = {"flex": section_flex, "fsdp": section_fsdp, "train": section_train,
                     "memory": section_memory, "context_parallel": section_context_parallel}


# ---------------------------------------------------------------------------------------------
# torchrun workers
# ---------------------------------------------------------------------------------------------


def worker_fsdp(sizes: dict[str, Any], folder: Path, steps: int, runtime) -> dict[str, Any]:
    preset = sizes["preset"]
    _, sharded = trainer_steps(fsdp_config(preset, f"{folder}/fsdp", steps), runtime, steps,
                               warmup=min(2, steps - 1))
    ac_steps = min(2, steps)
    _, checkpointed = trainer_steps(
        fsdp_config(preset, f"{folder}/fsdp_ac", ac_steps, activation_checkpointing=True),
        runtime, ac_steps, warmup=ac_steps - 1)
    import torch.distributed as dist

    return {"backend": dist.get_backend(), "world_size": runtime.world, "fsdp": sharded,
            "fsdp_activation_checkpointing": checkpointed}


def _memory_loss(model: LLaDAModelLM, tokens: int, vocab: int, device,
                 loss_chunk: int = 0) -> torch.Tensor:
    """The trainer's loss on one row of `tokens` tokens, 4 documents, every token masked: over
    the full row, or (loss_chunk > 0) on the masked tokens in chunks (`masked_loss`)."""
    ids = torch.randint(4, vocab, (1, tokens), device=device)
    doc_ids = torch.arange(tokens, device=device)[None] * 4 // tokens
    ones = torch.ones_like(ids, dtype=torch.bool)
    if loss_chunk:
        weights = diffusion_loss_weights(ones, ones.float(), torch.tensor([tokens], device=device))
        return model(ids, doc_ids=doc_ids, scored=ones, labels=ids[ones], label_weights=weights,
                     loss_chunk=loss_chunk).loss
    logits = model(ids, doc_ids=doc_ids).logits
    return diffusion_loss(logits.float(), ids, ones, ones.float())


def worker_memory(sizes: dict[str, Any], runtime) -> dict[str, Any]:
    """Under FSDP2 (the trainer's bf16 policy): bytes/param and activation bytes per token."""
    dims, device = dict(sizes["memory_dims"]), runtime.device
    token_counts = sizes["memory_tokens"]
    grid, states, per_token = [], [], {}
    for n_layers in (1, 2):
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.manual_seed(0)
        with torch.device(device):
            model = LLaDAModelLM(LLaDAConfig(**{**dims, "n_layers": n_layers},
                                             max_sequence_length=max(token_counts)))
        shard_model(model, runtime, torch.bfloat16)
        model.train()
        n_params = sum(p.numel() for p in model.parameters())
        weights = torch.cuda.memory_allocated(device) - base
        optimizer = build_optimizer(model, TrainConfig())
        _memory_loss(model, token_counts[0], dims["vocab_size"], device).backward()
        with_grads = torch.cuda.memory_allocated(device)
        optimizer.step()
        with_states = torch.cuda.memory_allocated(device)
        states.append({"n_layers": n_layers, "n_params": n_params, "weights": weights / n_params,
                       "gradients": (with_grads - base - weights) / n_params,
                       "adamw": (with_states - with_grads) / n_params})
        for ac, loss_chunk in itertools.product((False, True), (0, sizes["memory_loss_chunk"])):
            model.config.activation_checkpointing = ac
            for tokens in token_counts:
                optimizer.zero_grad(set_to_none=False)
                row: dict[str, Any] = {"n_layers": n_layers, "activation_checkpointing": ac,
                                       "loss_chunk": loss_chunk, "tokens": tokens}
                with peak_memory(device, row):
                    _memory_loss(model, tokens, dims["vocab_size"], device,
                                 loss_chunk).backward()
                grid.append(row)
            low, high = grid[-2:]
            per_token[(n_layers, ac, loss_chunk)] = (
                (high["peak_memory_bytes"] - low["peak_memory_bytes"])
                / (high["tokens"] - low["tokens"]))
        del model, optimizer
    extrapolated, per_layer, head, chunked_head = {}, {}, {}, {}
    for ac in (False, True):
        key = "with_ac" if ac else "without_ac"
        per_layer[key] = per_token[2, ac, 0] - per_token[1, ac, 0]
        head[key] = per_token[1, ac, 0] - per_layer[key]
        chunked_head[key] = per_token[1, ac, sizes["memory_loss_chunk"]] - per_layer[key]
        extrapolated[key] = 1024 * (LLADA_8B["n_layers"] * per_layer[key] + head[key])
    return {"dims": dims, "grid": grid, "states": states,
            "bytes_per_param": {k: states[-1][k] for k in ("weights", "gradients", "adamw")},
            "layer_bytes_per_token": per_layer, "head_bytes_per_token": head,
            "chunked_head_bytes_per_token": chunked_head,
            "extrapolated_32_layers_per_1k_tokens": extrapolated}


def context_parallel_config(sizes: dict[str, Any], out: str, world: int, degree: int,
                            steps: int):
    """The context-parallel comparison's run: the preset's pretrain at `cp_seq_len` tokens per
    row, adaptive packing, one row per data-parallel group per micro-batch."""
    cuda = torch.cuda.is_available()
    return fsdp_config(sizes["preset"], out, steps, seq_len=sizes["cp_seq_len"],
                       packing="adaptive", batch_size=world, micro_batch_size=1,
                       context_parallel=degree,
                       attention_backend="flex" if cuda else "per_document",
                       dtype="bfloat16" if cuda else "float32")


def _sharded_memory_loss(model: LLaDAModelLM, tokens: int, vocab: int, runtime,
                         loss_chunk: int) -> torch.Tensor:
    """`_memory_loss` on this rank's shard of the row under context parallelism."""
    device, context = runtime.device, runtime.context
    ids = torch.randint(4, vocab, (1, tokens), device=device)
    doc_ids = torch.arange(tokens, device=device)[None] * 4 // tokens
    weights = torch.full(ids.shape, 1.0 / tokens, device=device)  # every token masked
    ids, doc_ids, weights = (context.shard(t, fill) for t, fill in ((ids, 0), (doc_ids, -1),
                                                                     (weights, 0.0)))
    scored = doc_ids >= 0
    return model(ids, doc_ids=doc_ids, scored=scored, labels=ids[scored],
                 label_weights=weights[scored], loss_chunk=loss_chunk).loss


def cp_memory(sizes: dict[str, Any], runtime) -> dict[str, Any]:
    """Peak memory of one forward and backward at `memory_dims` width (2 layers, a
    `cp_memory_tokens` row, checkpointing, the chunked loss) with the row whole and split over
    every rank, above what was allocated before it, beside the plan's allocated bytes (CUDA
    only; None elsewhere)."""
    dims = {**sizes["memory_dims"], "n_layers": 2}
    tokens, chunk = sizes["cp_memory_tokens"], sizes["memory_loss_chunk"]
    results = {}
    for degree in (1, runtime.world):
        plan = model_plan(dims, tokens, runtime.world, True, loss_chunk=chunk,
                          context_parallel=degree)
        row: dict[str, Any] = {"planned_bytes": plan["allocated_bytes"],
                               "planned_total_bytes": plan["total_bytes"]}
        if runtime.device.type != "cuda":
            row["measured_bytes"] = None
        else:
            gc.collect()  # the trainer steps' runs before this one, freed
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(runtime.device)
            base = torch.cuda.memory_allocated(runtime.device)
            torch.manual_seed(0)
            with torch.device(runtime.device):
                model = LLaDAModelLM(LLaDAConfig(**dims, max_sequence_length=tokens,
                                                 attention_backend="flex",
                                                 activation_checkpointing=True))
            shard_model(model, runtime, torch.bfloat16)
            optimizer = build_optimizer(model, TrainConfig())
            model.train()
            if degree > 1:
                apply_context_parallel(model, runtime.context)
                loss = _sharded_memory_loss(model, tokens, dims["vocab_size"], runtime, chunk)
            else:
                loss = _memory_loss(model, tokens, dims["vocab_size"], runtime.device, chunk)
            loss.backward()
            optimizer.step()
            sync(runtime.device)
            row["measured_bytes"] = torch.cuda.max_memory_allocated(runtime.device) - base
            del model, optimizer, loss
        results[str(degree)] = row
    return results


def worker_context_parallel(sizes: dict[str, Any], folder: Path, steps: int,
                            runtime) -> dict[str, Any]:
    """The trainer's steps with whole rows and with rows split over every rank, then
    `cp_memory`."""
    whole_runtime = dataclasses.replace(runtime, context=None)
    warmup = min(2, steps - 1)
    _, whole = trainer_steps(context_parallel_config(sizes, f"{folder}/whole", runtime.world, 1,
                                                     steps), whole_runtime, steps, warmup)
    _, split = trainer_steps(context_parallel_config(sizes, f"{folder}/split", runtime.world,
                                                     runtime.world, steps), runtime, steps,
                             warmup)
    import torch.distributed as dist

    return {"backend": dist.get_backend(), "world_size": runtime.world, "whole_rows": whole,
            "split_rows": split, "memory": cp_memory(sizes, runtime)}


def worker_main(args: argparse.Namespace) -> None:
    sizes = SIZES["quick" if args.quick else "full"]
    degree = int(os.environ.get("WORLD_SIZE", 1)) if args.worker == "context_parallel" else 1
    runtime = start_runtime(context_parallel=degree)
    try:
        if args.worker == "fsdp":
            result = worker_fsdp(sizes, Path(args.worker_dir), args.steps, runtime)
        elif args.worker == "context_parallel":
            result = worker_context_parallel(sizes, Path(args.worker_dir), args.steps, runtime)
        else:
            result = worker_memory(sizes, runtime)
        if runtime.is_main:
            atomic_write_text(Path(args.worker_out), json.dumps(result))
    finally:
        stop_runtime(runtime)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def machine_info(device: torch.device, quick: bool) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
        "gpu": None, "gpu_count": torch.cuda.device_count(), "gpu_memory_bytes": None,
        "gpu_capability": None, "nccl": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory,
                    gpu_capability=f"{props.major}.{props.minor}",
                    nccl=".".join(map(str, torch.cuda.nccl.version())))
    size = 8192 if device.type == "cuda" and not quick else 512
    info["bf16_matmul_peak_size"] = size
    info["bf16_matmul_peak_device"] = device.type
    info["bf16_matmul_peak_flops"] = matmul_peak(torch.bfloat16, size, 20 if device.type == "cuda"
                                                 else 3, device)
    return info


def format_table(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = [f"gpu_check: {machine['gpu'] or 'no GPU'}, torch {machine['torch']}, CUDA "
             f"{machine['cuda']}, bf16 matmul peak {machine['bf16_matmul_peak_flops'] / 1e12:.1f} "
             f"TFLOP/s ({machine['bf16_matmul_peak_device']})"]
    rows = [("section", "case", "status", "result")]
    for name, section in report["sections"].items():
        for case, status, detail in section.get("table") or [["", section["status"],
                                                               section.get("error", "")[-200:]]]:
            rows.append((name, case, status, detail))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines += [" | ".join([*(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)),
                          row[3]]) for row in rows]
    return "\n".join(lines)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu_check.json",
                        help="the JSON report (default benchmarks/results/gpu_check.json)")
    parser.add_argument("--skip", nargs="+", default=[], choices=SECTIONS, metavar="SECTION",
                        help=f"sections to skip, of: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: exercise the whole path in seconds (CPU where possible)")
    parser.add_argument("--steps", type=positive_int,
                        help="train section: steps per stage (default 50; --quick 3)")
    parser.add_argument("--lengths", type=positive_int, nargs="+",
                        help="flex section: tokens per row (default 8192 32768; --quick 256 512)")
    parser.add_argument("--worker", choices=("fsdp", "memory", "context_parallel"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--worker-dir", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.out.is_dir():
        parser.error(f"--out {str(args.out)!r} is a folder; give the path of a .json file")
    if args.lengths and min(args.lengths) < 16:
        parser.error(f"--lengths {min(args.lengths)} is too short; flex needs >= 16 tokens")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the sections, print the table, write the report; 0 unless a section failed."""
    args = parse_args(argv)
    if args.worker:
        worker_main(args)
        return 0
    sizes = SIZES["quick" if args.quick else "full"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    ctx = {"device": device, "sizes": sizes, "quick": args.quick,
           "steps": args.steps or sizes["train_steps"],
           "flex_lengths": tuple(args.lengths or sizes["flex_lengths"])}
    report: dict[str, Any] = {
        "schema": 1, "command": [Path(sys.argv[0]).name, *(argv if argv is not None
                                                            else sys.argv[1:])],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick, "machine": machine_info(device, args.quick), "sections": {},
    }
    ctx["machine"] = report["machine"]
    for name in SECTIONS:
        if name in args.skip:
            section = skipped("--skip")
        else:
            section_start = time.perf_counter()
            try:
                section = SECTION_FUNCTIONS[name](ctx)
            except Exception as error:  # one failing section must not lose the others
                section = {"status": "error", "error": f"{type(error).__name__}: {error}",
                           "traceback": traceback.format_exc()[-6000:]}
                print(f"[gpu_check] section {name} failed:\n{section['traceback']}",
                      file=sys.stderr, flush=True)
            section["seconds"] = time.perf_counter() - section_start
        report["sections"][name] = section
        report["seconds"] = time.perf_counter() - started
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
        print(f"[gpu_check] {name}: {section['status']} ({report['seconds']:.0f} s so far)",
              flush=True)
    print(format_table(report))
    print(f"report: {args.out} ({report['seconds']:.0f} s)")
    return 0 if all(s["status"] in ("ok", "skipped") for s in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
