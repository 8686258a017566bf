"""Each model evaluated in its training layout: separators, positions and document masks laid
out as its training rows laid them out, logits given back for the tokens passed in."""

from __future__ import annotations

import torch

from minillada.evals.layout import LaidOutModel, Layout
from minillada.modeling.model import LLaDAConfig, LLaDAModelLM

EOD = 3


def tiny() -> LLaDAModelLM:
    torch.manual_seed(0)
    config = LLaDAConfig(vocab_size=40, d_model=32, n_heads=4, n_layers=2, mlp_hidden_size=64,
                         max_sequence_length=16)
    return LLaDAModelLM(config).eval()


class Recorder:
    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, tokens, positions=None, doc_ids=None):
        self.calls.append((tokens, positions, doc_ids))
        return self.model(tokens, positions=positions, doc_ids=doc_ids)


def test_arrange_inserts_separators_and_lays_out_positions_and_documents():
    ids = torch.arange(10, 20)[None]
    sep = LaidOutModel(None, Layout("adaptive_eod", restart_positions=False), EOD)
    tokens, keep, positions, docs = sep.arrange(ids, [3, 99])  # the last length is open
    assert tokens[0].tolist() == [10, 11, 12, EOD, 13, 14, 15, 16, 17, 18, 19, EOD]
    assert torch.equal(tokens[0, keep], ids[0])
    assert positions[0].tolist() == list(range(12))
    assert docs[0].tolist() == [0] * 4 + [1] * 8
    plain = LaidOutModel(None, Layout(restart_positions=True), EOD)
    tokens, keep, positions, docs = plain.arrange(ids, [3, 5])
    assert torch.equal(tokens, ids) and positions[0].tolist() == [0, 1, 2, *range(7)]


def test_a_base_layout_on_one_document_is_the_model_itself():
    model = tiny()
    ids = torch.randint(5, 40, (2, 12))
    laid = LaidOutModel(model, Layout.of_run({"stage": "pretrain"}), EOD)
    with torch.no_grad():
        assert torch.equal(laid.documents([12])(ids).logits, model(ids).logits)


def test_an_eod_model_sees_its_document_end_with_eod():
    recorder = Recorder(tiny())
    laid = LaidOutModel(recorder, Layout.of_run({"stage": "extend", "packing": "eod",
                                                 "restart_positions": False}), EOD)
    ids = torch.randint(5, 40, (1, 8))
    with torch.no_grad():
        logits = laid.documents([8])(ids).logits
    tokens, _, doc_ids = recorder.calls[-1]
    assert tokens[0].tolist() == [*ids[0].tolist(), EOD] and doc_ids is None
    assert logits.shape == (1, 8, 40)


def test_a_block_diagonal_model_ignores_the_decoys_before_its_document():
    model = tiny()
    laid = LaidOutModel(model, Layout.of_run({"stage": "extend", "packing": "adaptive",
                                              "restart_positions": False}), EOD)
    decoys, own = torch.randint(5, 40, (1, 6)), torch.randint(5, 40, (1, 7))
    with torch.no_grad():
        packed = laid.documents([3, 3, 7])(torch.cat([decoys, own], dim=1)).logits[:, 6:]
        alone = model(own).logits
    # RoPE is relative: the document alone at positions 0.. gives the same logits.
    assert torch.allclose(packed, alone, atol=1e-5)
    direct = LaidOutModel(model, Layout.of_run({"stage": "extend", "packing": "direct",
                                                "restart_positions": False}), EOD)
    with torch.no_grad():
        seen = direct.documents([3, 3, 7])(torch.cat([decoys, own], dim=1)).logits[:, 6:]
    assert not torch.allclose(seen, alone, atol=1e-3)  # full attention reads the decoys
