"""Packed rows built on demand from a memory-mapped token stream (corpora of billions of tokens).

`batches.packed_rows` packs a whole split into tensors in every process: about 13 bytes per token
kept, and Python lists of about 90 bytes per token while packing. `PackedCorpus` gives the same
rows (tokens, doc ids, positions, maskable; `pack_documents`' layout: documents end to end in
corpus order, a separator after each under the eod packings, the stream cut every seq_len tokens,
the last row padded) but holds only the documents' offsets: a row is read from the split's
memory-mapped `data.token_cache.TokenStream` when a step selects it, so every process keeps the
rows of its steps, and the token stream once in the shared page cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from minillada.data.packing import get_strategy
from minillada.data.token_cache import TokenStream
from minillada.modeling.attention import PAD_DOC_ID
from minillada.training.batches import Rows


class PackedCorpus:
    """The rows `pack_documents(documents of stream, seq_len, strategy, ...)` gives, on demand:
    `len()` rows, `select(index) -> Rows` (a slice or row numbers), as `batches.Rows` does."""

    def __init__(self, stream: TokenStream, seq_len: int, strategy: str,
                 eod_token_id: int | None, pad_token_id: int,
                 restart_positions: bool = True) -> None:
        chosen = get_strategy(strategy)
        if not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
        if chosen.separator and eod_token_id is None:
            raise ValueError(f"strategy {strategy!r} separates documents: pass eod_token_id")
        lengths = np.diff(stream.offsets)
        if len(lengths) == 0:
            raise ValueError("no documents to pack: the document list is empty")
        if (lengths == 0).any():
            raise ValueError(f"document(s) {np.flatnonzero(lengths == 0)[:10].tolist()} are "
                             "empty; every document needs a token")
        self.stream, self.seq_len = stream, seq_len
        self.separator = int(chosen.separator)
        self.eod_token_id, self.pad_token_id = eod_token_id, pad_token_id
        self.restart_positions = restart_positions
        # Where each document starts in the packed stream (its separator included).
        self.starts = np.concatenate([[0], np.cumsum(lengths + self.separator)])
        self.rows = -(-int(self.starts[-1]) // seq_len)

    def __len__(self) -> int:
        return self.rows

    def _row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, doc ids) of one row, int64 [seq_len]."""
        first = row * self.seq_len
        stream_pos = np.arange(first, min(first + self.seq_len, int(self.starts[-1])))
        doc = np.searchsorted(self.starts, stream_pos, side="right") - 1
        within = stream_pos - self.starts[doc]
        in_document = within < np.diff(self.stream.offsets)[doc]
        tokens = np.full(self.seq_len, self.pad_token_id, dtype=np.int64)
        tokens[:len(doc)] = self.eod_token_id if self.separator else 0
        tokens[:len(doc)][in_document] = self.stream.tokens[
            self.stream.offsets[doc[in_document]] + within[in_document]]
        doc_ids = np.full(self.seq_len, PAD_DOC_ID, dtype=np.int64)
        doc_ids[:len(doc)] = doc
        return tokens, doc_ids

    def select(self, index: slice | torch.Tensor | Sequence[int]) -> Rows:
        """The rows at `index` (row numbers in [0, len), or a slice)."""
        numbers = (range(self.rows)[index] if isinstance(index, slice)
                   else torch.as_tensor(index).tolist())
        if any(not 0 <= n < self.rows for n in numbers):
            raise IndexError(f"row numbers must lie in [0, {self.rows}), got {numbers}")
        tokens = np.empty((len(numbers), self.seq_len), dtype=np.int64)
        doc_ids = np.empty((len(numbers), self.seq_len), dtype=np.int64)
        for i, number in enumerate(numbers):
            tokens[i], doc_ids[i] = self._row(number)
        tokens, doc_ids = torch.from_numpy(tokens), torch.from_numpy(doc_ids)
        column = torch.arange(self.seq_len).expand_as(doc_ids)
        if self.restart_positions:  # `pack_documents`: restart at every run of one doc id
            starts = torch.ones_like(doc_ids, dtype=torch.bool)
            starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
            positions = column - torch.where(starts, column, 0).cummax(dim=1).values
        else:
            positions = column.clone()
        return Rows(tokens.int(), doc_ids.int(), positions.int(), doc_ids >= 0)
