"""Rows packed on demand from the memory-mapped token cache are the rows `packed_rows` builds."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from llada_checkpoint import llada_tokenizer, write_corpus

from minillada.data.corpus import load_corpus, split_corpus, tokenize_documents
from minillada.data.packing import PACKING_STRATEGIES
from minillada.data.token_cache import TokenStream, token_cache, token_stream, tokenized_split
from minillada.training.batches import packed_rows
from minillada.training.config import TrainConfig
from minillada.training.packed_corpus import PackedCorpus


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path / "cache"))


def test_the_token_cache_is_written_as_np_save_writes_it(tmp_path):
    tokenizer = llada_tokenizer()
    corpus = str(write_corpus(tmp_path / "corpus.jsonl"))
    folder = token_cache(tokenizer, corpus, 0, "train")
    texts = split_corpus(load_corpus(corpus)).train
    docs = [doc for doc in tokenize_documents(tokenizer, texts) if doc]
    expected = io.BytesIO()
    np.save(expected, np.fromiter((t for doc in docs for t in doc), dtype=np.int32))
    assert (folder / "tokens.npy").read_bytes() == expected.getvalue()
    stream = token_stream(tokenizer, corpus, 0, "train")
    assert isinstance(stream.tokens, np.memmap) and not stream.tokens.flags.writeable
    assert [doc.tolist() for doc in tokenized_split(tokenizer, corpus, 0, "train")] == docs
    assert [stream.tokens[a:b].tolist() for a, b in zip(stream.offsets, stream.offsets[1:],
                                                         strict=False)] == docs
    empty = token_stream(tokenizer, str(write_corpus(tmp_path / "one.jsonl", 1)), 0, "test")
    assert len(empty.tokens) == 0 and empty.offsets.tolist() == [0]


@pytest.mark.parametrize("strategy", sorted(PACKING_STRATEGIES))
@pytest.mark.parametrize("restart", [True, False])
def test_rows_on_demand_equal_packed_rows(strategy, restart):
    generator = np.random.default_rng(0)
    docs = [generator.integers(4, 50, size=int(n), dtype=np.int32)
            for n in generator.integers(1, 40, size=30)]
    offsets = np.cumsum([0, *map(len, docs)]).astype(np.int64)
    stream = TokenStream(np.concatenate(docs), offsets)
    config = TrainConfig(seq_len=16, packing=strategy, restart_positions=restart)
    tokenizer = type("Roles", (), {"eod_token_id": 2, "pad_token_id": 3})()
    expected = packed_rows(docs, config, tokenizer)
    on_demand = PackedCorpus(stream, 16, strategy, eod_token_id=2, pad_token_id=3,
                             restart_positions=restart)
    assert len(on_demand) == len(expected)
    order = torch.from_numpy(generator.permutation(len(expected)))
    for index in (order, slice(2, 5), torch.tensor([], dtype=torch.long)):
        got, want = on_demand.select(index), expected.select(index)
        for name, a, b in zip(("tokens", "doc_ids", "positions", "maskable"), got.tensors(),
                              want.tensors(), strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b), name


def test_bad_input_is_named():
    stream = TokenStream(np.arange(4, 10, dtype=np.int32), np.array([0, 3, 6]))
    with pytest.raises(ValueError, match="pass eod_token_id"):
        PackedCorpus(stream, 4, "eod", eod_token_id=None, pad_token_id=0)
    with pytest.raises(ValueError, match=r"document\(s\) \[1\] are empty"):
        PackedCorpus(TokenStream(stream.tokens, np.array([0, 3, 3, 6])), 4, "direct", None, 0)
    with pytest.raises(ValueError, match="no documents to pack"):
        PackedCorpus(TokenStream(stream.tokens[:0], np.array([0])), 4, "direct", None, 0)
    with pytest.raises(IndexError, match=r"row numbers must lie in \[0, 2\), got \[2\]"):
        PackedCorpus(stream, 4, "direct", None, 0).select(torch.tensor([2]))
