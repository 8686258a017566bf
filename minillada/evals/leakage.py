"""Cross-document attention (leakage): how much attention mass crosses document boundaries when
packed rows run without a document mask."""

from __future__ import annotations

import pandas as pd
import torch

from minillada.modeling.diffusion import model_device


def multi_document_rows(doc_ids: torch.Tensor, minimum: int = 2) -> torch.Tensor:
    """Indices of the rows of `doc_ids` [B, L] holding at least `minimum` distinct real documents
    (ids >= 0; padding is -1), in order: the rows on which leakage can be measured."""
    counts = torch.tensor([int(torch.unique(row[row >= 0]).numel()) for row in doc_ids],
                          dtype=torch.long)
    return (counts >= minimum).nonzero().flatten()


@torch.no_grad()
def cross_document_attention(model: torch.nn.Module, tokens: torch.Tensor,
                             positions: torch.Tensor, doc_ids: torch.Tensor) -> pd.DataFrame:
    """Share of attention mass that crosses document boundaries, per layer and row.

    The model runs on packed rows [B, L] with full attention (no document mask), as `direct` and
    `eod` training sees them; at each block the attention probabilities are recomputed from the
    block's input, and for every query the mass on keys of another document is summed, then
    averaged over heads and over the queries of the row (`value`). 0 means every query stays in
    its own document; `uniform` is what attention spread evenly over the row's keys would give
    (each query's share of keys in other documents, averaged), so `value / uniform` is 1 for a
    model blind to boundaries and 0 for one that keeps to its document, whatever the row's mix
    of documents. Padding (doc id -1) is skipped.
    """
    if tokens.shape != doc_ids.shape or tokens.shape != positions.shape or tokens.dim() != 2:
        raise ValueError(f"tokens {tuple(tokens.shape)}, positions {tuple(positions.shape)} and "
                         f"doc_ids {tuple(doc_ids.shape)} must all be the same [B, L]")
    device = model_device(model)
    blocks = model.model.transformer.blocks
    shares: list[torch.Tensor] = []

    def measure(block, args):
        x, cos, sin, _ = args
        probs = block.attention_probs(x, cos, sin)  # [B, H, L, L]
        ids = doc_ids.to(device)
        other = (ids[:, :, None] != ids[:, None, :]).float()  # [B, Lq, Lk]
        crossing = (probs * other[:, None]).sum(-1).mean(1)  # [B, Lq]
        real = (ids >= 0).float()
        shares.append((crossing * real).sum(-1) / real.sum(-1))

    hooks = [block.register_forward_pre_hook(measure) for block in blocks]
    try:
        model(tokens.to(device), positions=positions.to(device), doc_ids=None)
    finally:
        for hook in hooks:
            hook.remove()
    real = doc_ids >= 0
    others = ((doc_ids[:, :, None] != doc_ids[:, None, :]) & real[:, None, :]).float().sum(-1)
    uniform = ((others / real.sum(-1, keepdim=True)) * real).sum(-1) / real.sum(-1)
    return pd.DataFrame([dict(layer=layer, row=row, value=float(value),
                              uniform=float(uniform[row]))
                         for layer, per_row in enumerate(shares)
                         for row, value in enumerate(per_row.tolist())])
