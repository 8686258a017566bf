"""Per-GPU memory of one training step, on paper: what `minillada train --dry-run` prints and
benchmarks/gpu_check.py compares with what a GPU measures.

The terms follow the trainer's FSDP2 policy (`distributed.shard_model`): float32 parameters,
gradients and AdamW moments sharded over the world size, bf16 compute; activations are per GPU
(FSDP shards parameters, not rows), for the tokens a GPU holds: a whole row, or under context
parallelism of degree N its 1/N of the row (`modeling.context_parallel`), plus the keys and
values of the whole row that its attention gathers. `memory_plan` gives every term; its
docstring says where each comes from. Beyond the tensors it counts, it reserves CUDA's context,
NCCL's buffers and the allocator's fragmentation. Numbers are plans until gpu_check.py's
`memory.measured` confirms them on a GPU. `smallest_context_parallel` and `fit_table` answer
which degree a row length needs on given GPUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GIB = 2**30
# LLaDA-8B-Base (its config.json): 32 layers, d_model 4096, 32 heads (no GQA), SwiGLU 12288,
# vocabulary 126464.
LLADA_8B = dict(vocab_size=126464, d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32,
                mlp_hidden_size=12288)
# Bytes per element of one chunk of the chunked loss (`masked_loss`): bf16 logits and their fp32
# copy in forward; in backward the recomputed pair, the fp32 log-softmax and its gradient, the
# bf16 gradient of the logits. benchmarks/bench_loss.py measures 10 in float32 on CPU (no bf16
# copies); the bf16 pair adds 4.
CHUNK_BYTES_PER_LOGIT = 14
# What a GPU holds beyond the tensors counted (assumptions until a GPU measures them): CUDA's
# context with the cuBLAS/cuDNN workspaces, NCCL's buffers per process group (FSDP's over the
# world; context parallelism's), and the caching allocator's fragmentation over the allocated.
CUDA_CONTEXT_BYTES = GIB
NCCL_BYTES_PER_GROUP = GIB // 2
FRAGMENTATION = 0.10
# The row lengths `fit_table` answers for besides a run's own.
PLANNED_LENGTHS = (32768, 65536, 131072, 262144, 524288)


def param_counts(n_layers: int, d_model: int, mlp_hidden_size: int, vocab_size: int,
                 n_heads: int, n_kv_heads: int | None = None) -> dict[str, int]:
    """Parameters of one block, of the root (embedding, final norm, head) and in total."""
    kv = d_model * (n_kv_heads or n_heads) // n_heads
    block = 2 * d_model * d_model + 2 * d_model * kv + 3 * d_model * mlp_hidden_size + 2 * d_model
    root = 2 * vocab_size * d_model + d_model
    return {"block": block, "root": root, "total": n_layers * block + root}


def memory_plan(n_params: int, n_layers: int, d_model: int, seq_len: int, world_size: int,
                activation_checkpointing: bool, *, mlp_hidden_size: int, vocab_size: int,
                n_heads: int, n_kv_heads: int | None = None, rows: int = 1,
                masked_fraction: float = 1.0, loss_chunk: int = 0,
                context_parallel: int = 1) -> dict[str, Any]:
    """Per-GPU memory (bytes) of one training step under the trainer's FSDP2 policy, on paper.

    Policy (`train.shard_model`): fp32 parameters sharded over `world_size`, computed in bf16
    (MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)), fp32 gradients sharded, AdamW's
    two fp32 moments sharded: 4 + 4 + 8 = 16 bytes per parameter / world_size. Transient: the
    bf16 unsharded root (embedding + head, kept for the whole step) and two blocks (current and
    prefetched), plus the unsharded gradient of the largest unit in bf16 and its fp32 copy for
    the reduce-scatter (6 bytes per parameter): FSDP's communication buffers.

    Tokens per GPU: `rows` rows of `seq_len`; with `context_parallel` N, a row padded to a
    multiple of 2N and split over N ranks, each holding 1/N of it. Activations per token (FSDP
    shards parameters, not rows), bf16, per layer as this model saves them: 2 (7 d + 2 d_kv +
    4 m) + 4 H + 8 bytes (block input, both norm outputs and inputs, q, k, v, attention output
    and its flattened copy, gate, silu, up, product; the attention log-sum-exp and the two
    norms' rstd in fp32). With activation checkpointing a layer keeps only its input (2 d) and
    one layer is recomputed at a time (+ one layer's full set). Backward temporaries: the
    gradients of one layer's activations in flight, as large as its saved set (+ one layer's
    full set, with or without checkpointing).

    The head and loss, with the masked fraction f of tokens (f = 1 is the worst step, t near 1):
    - `loss_chunk` 0 (the full-row loss, `logits.float()` then cross-entropy over the masked
      tokens): ln_f input and output (4 d) plus the larger of the forward transient, bf16 logits
      with their fp32 copy (6 V), and the backward one, the saved fp32 log-softmax of the masked
      tokens, its gradient and the gradient of its input (12 V f), per token;
    - `loss_chunk` c > 0 (`masked_loss`): the gathered hidden states of the masked tokens and
      their ln_f output (4 d f) and the gradient of the row's hidden states (2 d) per token,
      plus one chunk of logits whatever the row: 14 c V bytes (`CHUNK_BYTES_PER_LOGIT`).

    Gathered keys and values (context parallelism only): the whole padded row's bf16 k and v,
    4 d_kv bytes per row token, per layer. With checkpointing three such sets at most (the
    recomputed layer's, their gradient, a collective's buffer); without, every layer's saved
    set and two more.

    Reserve: CUDA's context (`CUDA_CONTEXT_BYTES`), NCCL's buffers per process group (FSDP's
    over the world when there are several GPUs, and the context-parallel group's:
    `NCCL_BYTES_PER_GROUP`), and the allocator's fragmentation (`FRAGMENTATION` of everything
    above). `total_bytes` is what the GPU must hold.
    """
    if min(n_params, n_layers, d_model, seq_len, world_size, rows, context_parallel) < 1:
        raise ValueError("n_params, n_layers, d_model, seq_len, world_size, rows and "
                         "context_parallel must be >= 1")
    if world_size % context_parallel:
        raise ValueError(f"context_parallel {context_parallel} must divide the world size "
                         f"{world_size}")
    if not 0.0 <= masked_fraction <= 1.0:
        raise ValueError(f"masked_fraction must lie in [0, 1], got {masked_fraction}")
    if loss_chunk < 0:
        raise ValueError(f"loss_chunk must be >= 0 (0: the full-row loss), got {loss_chunk}")
    kv = d_model * (n_kv_heads or n_heads) // n_heads
    root = 2 * vocab_size * d_model + d_model
    block = (n_params - root) / n_layers
    chunks = 2 * context_parallel if context_parallel > 1 else 1
    row_tokens = rows * (-(-seq_len // chunks) * chunks)  # padded to 2N chunks
    tokens = row_tokens // context_parallel
    layer_bytes = 2 * (7 * d_model + 2 * kv + 4 * mlp_hidden_size) + 4 * n_heads + 8
    saved_per_layer = 2 * d_model if activation_checkpointing else layer_bytes
    recompute = layer_bytes if activation_checkpointing else 0
    if loss_chunk:
        head_bytes = 4 * d_model * masked_fraction + 2 * d_model
        loss_chunk_bytes = CHUNK_BYTES_PER_LOGIT * min(loss_chunk, tokens) * vocab_size
    else:
        head_bytes = 4 * d_model + vocab_size * max(6.0, 12.0 * masked_fraction)
        loss_chunk_bytes = 0
    per_token = n_layers * saved_per_layer + recompute + head_bytes
    bytes_per_param = {"weights": 4, "gradients": 4, "adamw": 8}
    sharded = {name: size * n_params / world_size for name, size in bytes_per_param.items()}
    transient = 2 * (root + 2 * block) + 6 * max(root, block)
    activations = {"layers": tokens * n_layers * saved_per_layer, "recompute": tokens * recompute,
                   "head": tokens * head_bytes + loss_chunk_bytes}
    backward = tokens * layer_bytes
    gathered_sets = 0 if context_parallel == 1 else (
        3 if activation_checkpointing else n_layers + 2)
    gathered_kv = gathered_sets * 4 * kv * row_tokens
    allocated = (sum(sharded.values()) + transient + sum(activations.values()) + backward
                 + gathered_kv)
    groups = (world_size > 1) + (context_parallel > 1)
    reserve = CUDA_CONTEXT_BYTES + groups * NCCL_BYTES_PER_GROUP + FRAGMENTATION * allocated
    total = allocated + reserve
    return {
        "bytes_per_param": {**bytes_per_param, "total": sum(bytes_per_param.values())},
        "sharded_bytes": sharded, "transient_bytes": transient, "activation_bytes": activations,
        "backward_bytes": backward, "gathered_kv_bytes": gathered_kv,
        "activation_bytes_per_1k_tokens": 1024 * per_token,
        "layer_bytes_per_token": layer_bytes, "head_bytes_per_token": head_bytes,
        "loss_chunk_bytes": loss_chunk_bytes, "tokens_per_gpu": tokens,
        "allocated_bytes": allocated, "reserve_bytes": reserve,
        "total_bytes": total, "total_gib": total / GIB,
        "inputs": {"n_params": n_params, "n_layers": n_layers, "d_model": d_model,
                   "seq_len": seq_len, "world_size": world_size,
                   "activation_checkpointing": activation_checkpointing, "rows": rows,
                   "masked_fraction": masked_fraction, "loss_chunk": loss_chunk,
                   "context_parallel": context_parallel},
    }


def model_plan(dims: dict[str, Any], seq_len: int, world_size: int,
               activation_checkpointing: bool, rows: int = 1, loss_chunk: int = 0,
               masked_fraction: float = 1.0, context_parallel: int = 1) -> dict[str, Any]:
    """`memory_plan` of a model given by its LLaDA config fields (`LLADA_8B`'s names)."""
    sizes = {name: dims[name] for name in ("d_model", "mlp_hidden_size", "vocab_size",
                                           "n_heads")}
    n_kv_heads = dims.get("n_kv_heads") or dims["n_heads"]
    n_params = param_counts(dims["n_layers"], n_kv_heads=n_kv_heads, **sizes)["total"]
    return memory_plan(n_params, dims["n_layers"], seq_len=seq_len, world_size=world_size,
                       activation_checkpointing=activation_checkpointing, rows=rows,
                       masked_fraction=masked_fraction, loss_chunk=loss_chunk,
                       n_kv_heads=n_kv_heads, context_parallel=context_parallel, **sizes)


def llada_8b_plans(seq_len: int = 65536, worlds: tuple[int, ...] = (1, 2, 4, 8),
                   loss_chunk: int = 0) -> list[dict]:
    """memory_plan of LLaDA-8B post-training at seq_len, one row per GPU per step, without and
    with activation checkpointing."""
    return [{"world_size": world, "activation_checkpointing": ac,
             **model_plan(LLADA_8B, seq_len, world, ac, loss_chunk=loss_chunk)}
            for ac in (False, True) for world in worlds]


def context_parallel_degrees(world_size: int) -> list[int]:
    """The context-parallel degrees a world of `world_size` GPUs can run: its divisors."""
    return [degree for degree in range(1, world_size + 1) if world_size % degree == 0]


def smallest_context_parallel(dims: dict[str, Any], seq_len: int, world_size: int,
                              gpu_gib: float, **settings: Any) -> tuple[int | None, dict]:
    """(the smallest context-parallel degree whose plan fits GPUs of `gpu_gib` GiB, its plan),
    or (None, the plan at the largest degree) when none does. `settings`: `model_plan`'s
    activation_checkpointing, rows, loss_chunk, masked_fraction."""
    if gpu_gib <= 0:
        raise ValueError(f"the GPU memory must be a positive number of GiB, got {gpu_gib}")
    plan: dict[str, Any] = {}
    for degree in context_parallel_degrees(world_size):
        plan = model_plan(dims, seq_len, world_size, context_parallel=degree, **settings)
        if plan["total_gib"] <= gpu_gib:
            return degree, plan
    return None, plan


def fit_table(dims: dict[str, Any], lengths: Sequence[int], world_size: int, gpu_gib: float,
              **settings: Any) -> str:
    """A markdown table: for each row length, the smallest context-parallel degree that fits
    `world_size` GPUs of `gpu_gib` GiB on paper, its tokens per GPU, data-parallel groups and
    total per GPU; or that none does (with the total at the largest degree)."""
    lines = [f"| tokens per row | smallest CP that fits {world_size} x {gpu_gib:g} GiB | tokens "
             "per GPU | data-parallel groups | **total per GPU (GiB)** |",
             "|---:|---:|---:|---:|---:|"]
    for length in lengths:
        degree, plan = smallest_context_parallel(dims, length, world_size, gpu_gib, **settings)
        largest = plan["inputs"]["context_parallel"]
        fits = (f"{degree}" if degree is not None else
                f"none (CP {largest}: {plan['total_gib']:.1f} GiB)")
        lines.append(f"| {length} | {fits} | {plan['tokens_per_gpu']} | "
                     f"{world_size // largest} | **{plan['total_gib']:.1f}** |")
    return "\n".join(lines)


def plan_table(plans: Sequence[dict[str, Any]]) -> str:
    """A markdown table of plans, one row each, in GiB per GPU."""
    lines = ["| GPUs | CP | tokens per GPU | AC | loss chunk | states / W | transient | layers | "
             "recompute | backward | head + loss | gathered K, V | reserve | **total** |",
             "|---:|---:|---:|:--:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for plan in plans:
        inputs, act = plan["inputs"], plan["activation_bytes"]
        cells = [sum(plan["sharded_bytes"].values()), plan["transient_bytes"], act["layers"],
                 act["recompute"], plan["backward_bytes"], act["head"], plan["gathered_kv_bytes"],
                 plan["reserve_bytes"]]
        lines.append(
            f"| {inputs['world_size']} | {inputs['context_parallel']} | {plan['tokens_per_gpu']} | "
            f"{'on' if inputs['activation_checkpointing'] else 'off'} | "
            f"{inputs['loss_chunk'] or 'full row'} | "
            + " | ".join(f"{cell / GIB:.1f}" for cell in cells)
            + f" | **{plan['total_gib']:.1f}** |")
    return "\n".join(lines)


def inference_plan(dims: dict[str, Any], tokens: int, scored: int, *,
                   whole_row_logits: bool = False) -> dict[str, float]:
    """GPU memory (bytes) of one evaluation forward pass in bf16 without gradients, on paper.

    `tokens` is rows x row length, `scored` the positions whose logits are used (the current
    block of each row for the sampler, the masked tokens for a loss or likelihood). Terms: the
    weights (2 bytes per parameter); one layer's transients at a time (the block input and
    output, the norm output, q, k, v and the attention output, and the gate, up and product of
    the MLP: 2 (6 d + 3 m) per token); the head's bf16 logits at the scored positions only
    (2 V each, `diffusion.scored_logits`), or at every position with `whole_row_logits` (a
    model without `supports_scored`, computing the whole row's); and the float64 copy the
    sampler or the loss takes of the scored positions (8 V each).
    """
    if not 0 <= scored <= tokens:
        raise ValueError(f"scored must lie in [0, tokens = {tokens}], got {scored}")
    sizes = {name: dims[name] for name in ("d_model", "mlp_hidden_size", "vocab_size",
                                           "n_heads")}
    n_params = param_counts(dims["n_layers"], n_kv_heads=dims.get("n_kv_heads"), **sizes)["total"]
    d_model, hidden, vocab = dims["d_model"], dims["mlp_hidden_size"], dims["vocab_size"]
    terms = {"weights": 2.0 * n_params, "layer": 2.0 * (6 * d_model + 3 * hidden) * tokens,
             "logits": 2.0 * vocab * (tokens if whole_row_logits else scored),
             "scored_float64": 8.0 * vocab * scored}
    return {**terms, "total": sum(terms.values())}
