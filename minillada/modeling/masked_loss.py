"""LLaDA's loss over the masked positions only, a chunk at a time (long rows, large vocabularies).

At 64K-128K tokens and LLaDA's 126K vocabulary the logits of a whole row (and their float32 copy)
outweigh every other activation. Here the output head runs only on the final hidden states of the
masked positions, `chunk` of them at a time, and each chunk's logits are recomputed in backward
instead of stored: the memory of the loss grows with the masked count times d_model, plus one
chunk x vocabulary block, never with row x vocabulary.

    loss = sum_i w_i CE(h_i W^T, y_i),   w_i = 1 / (p_i n_r B)

over the masked positions i (row r, masking probability p_i; n_r the row's normaliser, L or its
answer length; B rows): `diffusion.diffusion_loss` term for term, summed in another order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK = 2048  # masked positions per head call: 2048 x 126464 bf16 logits are 0.5 GiB


def diffusion_loss_weights(masked: Tensor, p_mask: Tensor, row_tokens: Tensor) -> Tensor:
    """w_i = 1 / (p_i n_r B) of each masked position, in `t[masked]` (row-major) order.

    masked [B, L] bool, p_mask [B, L], row_tokens [B] positive (the per-row normaliser of
    `diffusion.diffusion_loss`). Returns float32 [N], N = masked.sum().
    """
    if masked.ndim != 2 or p_mask.shape != masked.shape:
        raise ValueError(f"masked {tuple(masked.shape)} and p_mask {tuple(p_mask.shape)} must be "
                         "the same [B, L] shape")
    if row_tokens.shape != masked.shape[:1] or bool((row_tokens <= 0).any()):
        raise ValueError(f"row_tokens must be [B] = [{masked.shape[0]}] of positive counts, got "
                         f"{row_tokens.tolist()}")
    per_row = row_tokens.to(torch.float32)[:, None].expand_as(masked)
    return 1.0 / (p_mask.float()[masked] * per_row[masked] * masked.shape[0])


def _weighted_chunk_loss(hidden: Tensor, weight: Tensor, targets: Tensor,
                         weights: Tensor) -> Tensor:
    logits = F.linear(hidden, weight)
    return (F.cross_entropy(logits.float(), targets, reduction="none") * weights).sum()


def chunked_cross_entropy(hidden: Tensor, weight: Tensor, targets: Tensor, weights: Tensor,
                          chunk: int = DEFAULT_CHUNK) -> Tensor:
    """sum_i weights_i CE(hidden_i weight^T, targets_i), the CE in float32.

    hidden [N, d] (the final hidden states of the scored positions), weight [V, d] (the output
    head), targets [N], weights [N]. At most `chunk` rows of logits exist at once, in forward and
    in backward (each chunk is recomputed there). N = 0 gives a zero that still reaches `hidden`
    and `weight`, so every rank of a sharded model runs the same backward.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} and weight {tuple(weight.shape)} must be "
                         "[N, d] and [V, d]")
    if targets.shape != hidden.shape[:1] or weights.shape != hidden.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)} and weights {tuple(weights.shape)} must "
                         f"be [N] = [{hidden.shape[0]}]")
    total = None
    for start in range(0, max(1, len(hidden)), chunk):
        part = slice(start, start + chunk)
        loss = checkpoint(_weighted_chunk_loss, hidden[part], weight, targets[part],
                          weights[part], use_reentrant=False)
        total = loss if total is None else total + loss
    return total
