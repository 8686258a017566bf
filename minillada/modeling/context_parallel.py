"""Context parallelism: each row split along the sequence over the N ranks of a group, attention
over the whole row computed from all-gathered keys and values (Llama 3's long-context recipe).

Layout: a row, padded to a multiple of 2N, is cut into 2N equal chunks and rank i holds chunks i
and 2N-1-i side by side (`shard_index`). Under a causal mask this pairing balances the work;
under a bidirectional document mask a query costs its document's length wherever it sits, and
the pairing spreads the row's tail (a short row's padding, the last and often cut document)
over the ranks instead of leaving it to the last one.

Every per-token computation (embedding, RoPE at each token's true position, norms, MLP, the head
and the loss on the masked tokens) runs on the rank's tokens as it would on the whole row.
Attention is the one place a token needs the others: `ContextParallel.gather` brings every
rank's keys and values, in row order, and each local query attends to the keys of its own
document (`modeling.attention`, any backend; a document cut by a chunk boundary is whole in the
gathered keys). The all-gather is torch's functional collective (`all_gather_single`), whose
backward reduce-scatters: the gradient every rank computed for a shard is summed back onto the
rank that holds it.

The padding added to reach a multiple of 2N is a document of its own (doc id -1), never masked
nor scored: the real tokens see exactly the keys they see in one process. The model takes its
group from outside (`apply_context_parallel`); the rows it is given are then shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed._functional_collectives import all_gather_single


def padded_length(length: int, degree: int) -> int:
    """The row length rounded up to a multiple of 2 * degree (2N equal chunks)."""
    chunks = 2 * degree
    return -(-length // chunks) * chunks


def shard_index(length: int, degree: int, rank: int) -> torch.Tensor:
    """The positions of the padded row that `rank` holds, in its local order: chunk `rank`, then
    chunk 2N-1-`rank` (N = degree)."""
    if not 0 <= rank < degree:
        raise ValueError(f"rank must lie in [0, {degree}), got {rank}")
    chunk = padded_length(length, degree) // (2 * degree)
    first, second = rank * chunk, (2 * degree - 1 - rank) * chunk
    return torch.cat([torch.arange(first, first + chunk), torch.arange(second, second + chunk)])


def row_order(degree: int) -> list[int]:
    """For each chunk of the row, in row order, its place among the gathered shards' chunks
    (rank r's shard holds chunks r and 2N-1-r, gathered in rank order)."""
    place = {}
    for rank in range(degree):
        place[rank], place[2 * degree - 1 - rank] = 2 * rank, 2 * rank + 1
    return [place[chunk] for chunk in range(2 * degree)]


@dataclass(frozen=True)
class ContextParallel:
    """This rank's place in its context-parallel group: `degree` ranks share each row and this
    one is `rank` among them (`group`: their process group)."""

    group: dist.ProcessGroup
    degree: int
    rank: int

    def shard(self, rows: torch.Tensor, fill: float | bool) -> torch.Tensor:
        """This rank's shard of `rows` [B, L, ...] along dim 1, padded with `fill` first."""
        length = rows.shape[1]
        padded = torch.full((rows.shape[0], padded_length(length, self.degree), *rows.shape[2:]),
                            fill, dtype=rows.dtype, device=rows.device)
        padded[:, :length] = rows
        return padded[:, shard_index(length, self.degree, self.rank).to(rows.device)]

    def gather(self, local: torch.Tensor, dim: int) -> torch.Tensor:
        """The whole padded row, in row order, from every rank's shard along `dim`, with
        autograd (each shard's gradient is summed back onto its rank)."""
        shards = all_gather_single(local.contiguous(), dim, self.group)  # in rank order
        chunks = shards.chunk(2 * self.degree, dim=dim)
        return torch.cat([chunks[place] for place in row_order(self.degree)], dim=dim)

    def unshard(self, local: torch.Tensor, length: int) -> torch.Tensor:
        """The rows [B, length] from this rank's shard [B, L_local] (no gradient): `shard`
        undone, the padding dropped."""
        return self.gather(local.detach(), dim=1)[:, :length]


def apply_context_parallel(model: torch.nn.Module, context: ContextParallel) -> None:
    """From now on `model` (a `LLaDAModelLM`) is given this rank's shard of each row, and its
    attention gathers the whole row's keys and values over `context`'s group."""
    model.context_parallel = context
