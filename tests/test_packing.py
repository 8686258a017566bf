"""Packing: exact layouts, lossless round trips, document isolation in the real model, bad input."""

from __future__ import annotations

import random

import pytest
import torch

from minillada.data.packing import PACKING_STRATEGIES, pack_documents, unpack
from minillada.modeling.model import LLaDAConfig, LLaDAModelLM

EOD, PAD = 98, 99


def random_corpus(seed: int, n_docs: int = 30, max_len: int = 40) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(97) for _ in range(rng.randint(1, max_len))] for _ in range(n_docs)]


def test_exact_layout_of_a_small_corpus():
    docs = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    packed = pack_documents(docs, seq_len=4, strategy="adaptive_eod", eod_token_id=EOD,
                            pad_token_id=PAD)
    assert packed.tokens.tolist() == [[1, 2, 3, EOD], [4, 5, 6, 7], [8, 9, 10, EOD],
                                      [11, EOD, PAD, PAD]]
    assert packed.doc_ids.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1], [2, 2, -1, -1]]
    # The chunk of document 1 in the third sequence starts again at position 0.
    assert packed.positions.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 0, 1]]
    assert packed.strategy.attention_doc_ids(packed.doc_ids) is packed.doc_ids

    direct = pack_documents(docs, seq_len=5, strategy="direct", pad_token_id=PAD)
    assert direct.tokens.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, PAD, PAD, PAD, PAD]]
    assert direct.positions.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 4], [0, 0, 1, 2, 3]]
    assert direct.strategy.attention_doc_ids(direct.doc_ids) is None
    flat = pack_documents(docs, 5, "direct", restart_positions=False)
    assert flat.positions.tolist() == [list(range(5))] * 3


@pytest.mark.parametrize("strategy", list(PACKING_STRATEGIES))
@pytest.mark.parametrize(("seed", "seq_len"), [(0, 16), (1, 64), (2, 7)])
def test_no_token_is_lost_or_duplicated(strategy, seed, seq_len):
    docs = random_corpus(seed)
    packed = pack_documents(docs, seq_len, strategy, eod_token_id=EOD, pad_token_id=PAD)
    assert unpack(packed) == docs
    separators = len(docs) if PACKING_STRATEGIES[strategy].separator else 0
    real = int((packed.doc_ids != -1).sum())
    assert real == sum(map(len, docs)) + separators
    assert 0 <= packed.tokens.numel() - real < seq_len  # padding only to fill the last sequence
    assert (packed.tokens[packed.doc_ids == -1] == PAD).all()
    assert int(packed.positions.max()) < seq_len
    for tensor in (packed.tokens, packed.doc_ids, packed.positions):
        assert tensor.dtype == torch.long and tensor.shape == packed.tokens.shape


def isolation_logits(strategy: str, second_doc: list[int]) -> torch.Tensor:
    """Logits at the first document's tokens when it is packed with `second_doc`."""
    torch.manual_seed(0)
    config = LLaDAConfig(vocab_size=100, d_model=32, n_heads=4, n_layers=2, mlp_hidden_size=64,
                         max_sequence_length=32, rope_theta=30.0, init_std=0.3)
    model = LLaDAModelLM(config).eval()
    first_doc = list(range(10, 22))
    packed = pack_documents([first_doc, second_doc], 32, strategy, eod_token_id=EOD,
                            pad_token_id=PAD)
    with torch.no_grad():
        logits = model(packed.tokens, positions=packed.positions,
                       doc_ids=packed.strategy.attention_doc_ids(packed.doc_ids)).logits
    return logits[packed.doc_ids == 0]


@pytest.mark.parametrize(("strategy", "isolated"), [
    ("adaptive", True), ("adaptive_eod", True), ("eod", False), ("direct", False),
])
def test_a_document_sees_another_only_without_block_diagonal_mask(strategy, isolated):
    before = isolation_logits(strategy, [30, 31, 32, 33, 34, 35, 36, 37])
    after = isolation_logits(strategy, [60, 61, 62, 63, 64, 65, 66, 67])
    if isolated:
        torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    else:
        assert (after - before).abs().max() > 1e-3


def test_bad_input_is_named():
    docs = [[1, 2, 3]]
    with pytest.raises(ValueError, match="unknown packing strategy 'eos'; choices: direct, eod, "
                                         "adaptive, adaptive_eod"):
        pack_documents(docs, 8, "eos")
    with pytest.raises(ValueError, match="seq_len must be an integer >= 2, got 1"):
        pack_documents(docs, 1, "direct")
    with pytest.raises(ValueError, match="strategy 'adaptive_eod' separates documents: pass "
                                         "eod_token_id"):
        pack_documents(docs, 8, "adaptive_eod")
    with pytest.raises(ValueError, match="document list is empty"):
        pack_documents([], 8, "direct")
    with pytest.raises(ValueError, match=r"document\(s\) \[1\] are empty"):
        pack_documents([[1], []], 8, "direct")
    with pytest.raises(ValueError, match="token ids must be non-negative integers"):
        pack_documents([[1, -2]], 8, "direct")
    with pytest.raises(ValueError, match="pad_token_id must be a non-negative integer, got -1"):
        pack_documents(docs, 8, "direct", pad_token_id=-1)
