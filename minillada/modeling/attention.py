"""Bidirectional attention restricted to each token's own document (block-diagonal masks).

`doc_ids` is a LongTensor [B, L] of contiguous runs, one id per document; token i may attend to
token j iff doc_ids[b, i] == doc_ids[b, j]. Padding (doc id -1) is treated as one more document:
padding tokens attend only among themselves, so their outputs stay finite and never reach a real
token. `doc_ids=None` means full attention.

Every backend in `ATTENTION_BACKENDS` gives the same outputs and gradients:

- `per_document`: one SDPA call per group of equal-length documents, cost ~ sum of squared
  document lengths; the CPU default. Never builds an L x L mask.
- `dense`: SDPA with a dense [B, 1, L, L] boolean mask; the reference, cost ~ L^2.
- `flex`: FlexAttention with a block-sparse mask, compiled on CUDA. On CPU it runs eagerly, which
  builds the L x L mask and scores and has no backward: there it serves only to test the backend.

A backend first `prepare`s the mask from the queries' and the keys' doc_ids (once per forward
pass; a model shares it across layers via `build_document_mask`), then `attend`s with it. The two
are the same tensor in one process; under context parallelism (`modeling.context_parallel`) the
queries are this rank's shard of the row and the keys the whole row, gathered from every rank
before each attention (`KeyGather`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

PAD_DOC_ID = -1


@dataclass(frozen=True)
class AttentionBackend:
    """A way to compute document-masked attention: `prepare(query_doc_ids, key_doc_ids) -> mask
    state` once, then `attend(q, k, v, state) -> output` per layer."""

    name: str
    prepare: Callable[[torch.Tensor, torch.Tensor], Any]
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], torch.Tensor]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask=None) -> torch.Tensor:
    """Bidirectional SDPA; k/v may have fewer heads than q (grouped-query attention)."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, enable_gqa=k.shape[1] != q.shape[1]
    )


# ----------------------------------------------------------------------------- per_document


def _document_runs(doc_ids: torch.Tensor) -> list[dict[int, tuple[int, int]]]:
    """Per row, {doc id: (start, length)} of its contiguous runs."""
    rows = []
    for ids in doc_ids.cpu():
        values, lengths = torch.unique_consecutive(ids, return_counts=True)
        starts = torch.cumsum(lengths, 0) - lengths
        rows.append({int(v): (int(a), int(n)) for v, a, n in zip(values, starts, lengths,
                                                                  strict=True)})
    return rows


def _prepare_per_document(query_doc_ids: torch.Tensor, key_doc_ids: torch.Tensor
                          ) -> dict[tuple[int, int], list[tuple[int, int, int]]]:
    """Each query run and the key run of its document, grouped by their lengths:
    {(query length, key length): [(row, query start, key start), ...]}."""
    groups: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    key_runs = (_document_runs(key_doc_ids) if key_doc_ids is not query_doc_ids
                else None)
    for row, runs in enumerate(_document_runs(query_doc_ids)):
        keys = runs if key_runs is None else key_runs[row]
        for doc, (start, length) in runs.items():
            key_start, key_length = keys[doc]
            groups[length, key_length].append((row, start, key_start))
    return dict(groups)


def _gather_runs(x: torch.Tensor, runs: list[tuple[int, int]], length: int) -> torch.Tensor:
    """[len(runs), H, length, D]: the runs (row, start) of x [B, H, L, D] stacked."""
    if len(runs) == 1:  # a view: no copy
        row, start = runs[0]
        return x[row : row + 1, :, start : start + length]
    return torch.stack([x[row, :, start : start + length] for row, start in runs])


def _attend_per_document(q, k, v, groups) -> torch.Tensor:
    # Equal-length documents (often whole-row chunks of long documents) share one SDPA call.
    pieces: dict[tuple[int, int], torch.Tensor] = {}
    for (length, key_length), runs in groups.items():
        queries = [(row, start) for row, start, _ in runs]
        keys = [(row, key_start) for row, _, key_start in runs]
        out = _sdpa(_gather_runs(q, queries, length), _gather_runs(k, keys, key_length),
                    _gather_runs(v, keys, key_length))
        pieces.update(zip(queries, out.unbind(0), strict=True))
    rows: list[list[torch.Tensor]] = [[] for _ in range(q.shape[0])]
    for row, start in sorted(pieces):
        rows[row].append(pieces[row, start])
    return torch.stack([torch.cat(row, dim=1) for row in rows])


# ----------------------------------------------------------------------------- dense


def _prepare_dense(query_doc_ids: torch.Tensor, key_doc_ids: torch.Tensor) -> torch.Tensor:
    return (query_doc_ids[:, :, None] == key_doc_ids[:, None, :])[:, None]  # [B, 1, Lq, Lk]


# ----------------------------------------------------------------------------- flex


@cache
def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    return torch.compile(fn, dynamic=False)


def _prepare_flex(query_doc_ids: torch.Tensor, key_doc_ids: torch.Tensor):
    def same_document(b, h, q_idx, kv_idx):
        return query_doc_ids[b, q_idx] == key_doc_ids[b, kv_idx]

    # Eager create_block_mask evaluates the full L x L mask; compiled (CUDA) it works block-wise.
    build = _compiled(create_block_mask) if query_doc_ids.is_cuda else create_block_mask
    (batch, queries), keys = query_doc_ids.shape, key_doc_ids.shape[1]
    return build(same_document, batch, None, queries, keys, device=query_doc_ids.device)


def _attend_flex(q, k, v, block_mask) -> torch.Tensor:
    # Eager FlexAttention materialises the scores (and has no CPU backward): compile on CUDA only.
    attend = _compiled(flex_attention) if q.is_cuda else flex_attention
    return attend(q, k, v, block_mask=block_mask, enable_gqa=k.shape[1] != q.shape[1])


ATTENTION_BACKENDS: dict[str, AttentionBackend] = {
    "per_document": AttentionBackend("per_document", _prepare_per_document, _attend_per_document),
    "dense": AttentionBackend("dense", _prepare_dense, _sdpa),
    "flex": AttentionBackend("flex", _prepare_flex, _attend_flex),
}


# ----------------------------------------------------------------------------- public entry points


class KeyGather(Protocol):
    """Context parallelism as attention sees it: `gather(local, dim)` is the whole row, in row
    order, from this rank's shard along `dim` (differentiable; `modeling.context_parallel`)."""

    def gather(self, local: torch.Tensor, dim: int) -> torch.Tensor: ...


@dataclass(frozen=True)
class DocumentMask:
    """A document mask prepared once for queries of shape `shape` = (B, L) and `key_length`
    keys; with `keys` (context parallelism) each attention first gathers the whole row's keys
    and values from the rank's shard."""

    backend: AttentionBackend
    state: Any
    shape: tuple[int, int]
    key_length: int
    keys: KeyGather | None = None


def validate_doc_ids(doc_ids: torch.Tensor) -> None:
    """Raise ValueError unless doc_ids is an integer [B, L] tensor whose ids form contiguous runs
    in every row (a document id never reappears after another document starts)."""
    if doc_ids.dim() != 2 or doc_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(
            f"doc_ids must be an integer tensor [B, L], got {doc_ids.dtype} of shape "
            f"{tuple(doc_ids.shape)}"
        )
    if doc_ids.numel() and int(doc_ids.min()) < PAD_DOC_ID:
        raise ValueError(
            f"doc_ids must be >= {PAD_DOC_ID} (-1 = padding), got {int(doc_ids.min())}"
        )
    runs = (doc_ids[:, 1:] != doc_ids[:, :-1]).sum(dim=1) + 1
    ordered = doc_ids.sort(dim=1).values
    distinct = (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1) + 1
    broken = (runs != distinct).nonzero()
    if len(broken):
        row = int(broken[0])
        raise ValueError(
            f"doc_ids row {row} is not made of contiguous runs: a document id reappears after "
            f"another document starts ({doc_ids[row].tolist()[:64]}...)"
        )


def build_document_mask(
    doc_ids: torch.Tensor | None, backend: str = "per_document", keys: KeyGather | None = None
) -> DocumentMask | None:
    """Validate doc_ids and prepare the backend's mask once (None: full attention).

    With `keys` (context parallelism) doc_ids [B, L] are this rank's shard of the rows (None: one
    document per row); each query then attends to the keys of its document anywhere in the
    whole row, whose doc ids are gathered here once.
    """
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(
            f"unknown attention backend {backend!r}; known: {', '.join(ATTENTION_BACKENDS)}"
        )
    if doc_ids is None and keys is None:
        return None
    if doc_ids is None:
        raise ValueError("context parallelism needs doc_ids: the shard's padding is a document "
                         "of its own (pass zeros for one document per row)")
    validate_doc_ids(doc_ids)
    key_doc_ids = doc_ids if keys is None else keys.gather(doc_ids, dim=1)
    chosen = ATTENTION_BACKENDS[backend]
    return DocumentMask(chosen, chosen.prepare(doc_ids, key_doc_ids), tuple(doc_ids.shape),
                        key_doc_ids.shape[1], keys)


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: DocumentMask | None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + mask) v for q [B, H, L, D] and k, v [B, H_kv, L, D] (under
    context parallelism this rank's shard of each; the mask's `keys` gathers the whole row's)."""
    if (
        q.dim() != 4
        or k.shape != v.shape
        or (q.shape[0], *q.shape[2:]) != (k.shape[0], *k.shape[2:])
    ):
        raise ValueError(
            f"q, k, v must be [B, H, L, D] with equal B, L, D; got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"q heads ({q.shape[1]}) must be a multiple of k/v heads ({k.shape[1]})")
    if mask is None:
        return _sdpa(q, k, v)
    if mask.shape != (q.shape[0], q.shape[2]):
        raise ValueError(
            f"doc_ids shape {mask.shape} does not match q's (B, L) = {(q.shape[0], q.shape[2])}"
        )
    if mask.keys is not None:  # one collective for both
        k, v = mask.keys.gather(torch.stack((k, v)), dim=3).unbind(0)
    if k.shape[2] != mask.key_length:
        raise ValueError(f"k and v hold {k.shape[2]} positions; the mask was built for "
                         f"{mask.key_length}")
    return mask.backend.attend(q, k, v, mask.state)


def document_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    doc_ids: torch.Tensor | None = None,
    backend: str = "per_document",
) -> torch.Tensor:
    """Bidirectional attention where each token sees only its own document (see module doc)."""
    return masked_attention(q, k, v, build_document_mask(doc_ids, backend))
