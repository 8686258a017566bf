"""Documents -> fixed-length packed sequences, under UltraLLaDA's packing strategies.

Documents are laid end to end in corpus order (each followed by an end-of-document token under the
`eod` strategies) and the stream is cut every `seq_len` tokens: short documents share a sequence,
long ones continue into the next sequences as consecutive chunks. The last sequence is padded with
`pad_token_id` and doc id -1, so no token is lost; losses must ignore doc id -1.

| strategy       | separator | attention                                 |
|----------------|-----------|-------------------------------------------|
| `direct`       | no        | full (documents see each other)           |
| `eod`          | yes       | full                                      |
| `adaptive`     | no        | block-diagonal (each document sees itself) |
| `adaptive_eod` | yes       | block-diagonal                            |

Positions restart at 0 at every document start and at every sequence start (a chunk of a long
document starts again at 0, so positions never exceed seq_len - 1); `restart_positions=False` gives
0 .. seq_len-1 in every sequence instead.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import torch

from minillada.modeling.attention import PAD_DOC_ID


@dataclass(frozen=True)
class PackingStrategy:
    """`separator`: an EOD token ends every document; `block_diagonal`: attention stays inside
    each document (the model gets doc ids), else it spans the whole sequence."""

    name: str
    separator: bool
    block_diagonal: bool

    def attention_doc_ids(self, doc_ids: torch.Tensor) -> torch.Tensor | None:
        """What the model's `doc_ids` argument gets for rows laid out under this strategy: the
        document ids under a block-diagonal mask, None (full attention) otherwise. The one place
        that decides it, for training, evaluation and the pictures alike."""
        return doc_ids if self.block_diagonal else None


PACKING_STRATEGIES: dict[str, PackingStrategy] = {
    s.name: s
    for s in (
        PackingStrategy("direct", separator=False, block_diagonal=False),
        PackingStrategy("eod", separator=True, block_diagonal=False),
        PackingStrategy("adaptive", separator=False, block_diagonal=True),
        PackingStrategy("adaptive_eod", separator=True, block_diagonal=True),
    )
}


@dataclass(frozen=True)
class PackedSequences:
    """`tokens`, `doc_ids` (global document index, separators belong to the preceding document,
    -1 = padding) and `positions`, each LongTensor [N, seq_len]."""

    tokens: torch.Tensor
    doc_ids: torch.Tensor
    positions: torch.Tensor
    strategy: PackingStrategy
    eod_token_id: int | None


def get_strategy(strategy: str) -> PackingStrategy:
    if strategy not in PACKING_STRATEGIES:
        raise ValueError(
            f"unknown packing strategy {strategy!r}; choices: {', '.join(PACKING_STRATEGIES)}"
        )
    return PACKING_STRATEGIES[strategy]


def _validate(docs: Sequence[Sequence[int]], seq_len: int, strategy: PackingStrategy,
              eod_token_id: int | None, pad_token_id: int) -> None:
    if not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
    if strategy.separator and eod_token_id is None:
        raise ValueError(f"strategy {strategy.name!r} separates documents: pass eod_token_id")
    for name, token in (("eod_token_id", eod_token_id), ("pad_token_id", pad_token_id)):
        if token is not None and (not isinstance(token, int) or token < 0):
            raise ValueError(f"{name} must be a non-negative integer, got {token!r}")
    if isinstance(docs, (str, bytes)) or any(isinstance(doc, (str, bytes)) for doc in docs):
        raise ValueError("docs must be token-id sequences (lists of non-negative integers), got "
                         "text; tokenize it first (minillada.data.corpus.tokenize_documents)")
    if len(docs) == 0:
        raise ValueError("no documents to pack: the document list is empty")
    empty = [i for i, doc in enumerate(docs) if len(doc) == 0]
    if empty:
        raise ValueError(f"document(s) {empty[:10]} are empty; every document needs a token")


def _first_bad_token(docs: Sequence[Sequence[object]]) -> str:
    """Where the first token that is not a non-negative integer is (only called on failure)."""
    for index, doc in enumerate(docs):
        for position, token in enumerate(doc):
            if isinstance(token, bool) or not isinstance(token, numbers.Integral) or token < 0:
                return f"document {index} holds {token!r} at position {position}"
    return "every document holds integers, but not of one integer type"


def pack_documents(
    docs: Sequence[Sequence[int]],
    seq_len: int,
    strategy: str,
    eod_token_id: int | None = None,
    pad_token_id: int = 0,
    restart_positions: bool = True,
) -> PackedSequences:
    """Pack `docs` (lists of token ids) into ceil(total / seq_len) sequences (see module doc)."""
    chosen = get_strategy(strategy)
    _validate(docs, seq_len, chosen, eod_token_id, pad_token_id)
    separator = [eod_token_id] if chosen.separator else []
    try:
        stream = torch.tensor(list(chain.from_iterable([*doc, *separator] for doc in docs)))
    except (TypeError, ValueError):
        stream = None  # not numbers: named below
    if stream is None or stream.dtype != torch.int64 or int(stream.min()) < 0:
        raise ValueError(f"token ids must be non-negative integers; {_first_bad_token(docs)}")
    lengths = torch.tensor([len(doc) + len(separator) for doc in docs])
    doc_ids = torch.repeat_interleave(torch.arange(len(docs)), lengths)

    padding = -len(stream) % seq_len
    tokens = torch.cat([stream, stream.new_full((padding,), pad_token_id)]).view(-1, seq_len)
    doc_ids = torch.cat([doc_ids, doc_ids.new_full((padding,), PAD_DOC_ID)]).view(-1, seq_len)
    column = torch.arange(seq_len).expand_as(doc_ids)
    if restart_positions:
        starts = torch.ones_like(doc_ids, dtype=torch.bool)
        starts[:, 1:] = doc_ids[:, 1:] != doc_ids[:, :-1]
        run_start = torch.where(starts, column, 0).cummax(dim=1).values
        positions = column - run_start
    else:
        positions = column.clone()
    return PackedSequences(tokens, doc_ids, positions, chosen, eod_token_id)


def unpack(packed: PackedSequences) -> list[list[int]]:
    """The documents exactly as given to `pack_documents`: padding and separators dropped."""
    real = packed.doc_ids.flatten() != PAD_DOC_ID
    tokens, doc_ids = packed.tokens.flatten()[real], packed.doc_ids.flatten()[real]
    lengths = torch.bincount(doc_ids).tolist()
    documents = [doc.tolist() for doc in tokens.split(lengths)]
    return [doc[:-1] for doc in documents] if packed.strategy.separator else documents
