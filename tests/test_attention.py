"""Document-masked attention: every backend against a per-document reference, cost, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minillada.modeling import attention
from minillada.modeling.attention import ATTENTION_BACKENDS, document_attention

# Row 0: three documents; row 1: a long document then padding; row 2: two equal-length documents
# (grouped into one SDPA call by per_document); row 3: one document.
DOC_IDS = torch.tensor([
    [0] * 5 + [1] * 17 + [2] * 10,
    [3] * 26 + [-1] * 6,
    [4] * 16 + [5] * 16,
    [6] * 32,
])


def qkv(heads=4, kv_heads=2, seed=0, shape=(4, 32)):
    generator = torch.Generator().manual_seed(seed)
    batch, length = shape
    return [torch.randn(batch, h, length, 8, generator=generator, requires_grad=True)
            for h in (heads, kv_heads, kv_heads)]


def per_document_reference(q, k, v, doc_ids):
    """Attention computed separately on each run of each row, from the definition."""
    out = torch.zeros_like(q)
    repeat = q.shape[1] // k.shape[1]
    for row in range(q.shape[0]):
        for doc in doc_ids[row].unique():
            cols = (doc_ids[row] == doc).nonzero().flatten()
            qd = q[row][:, cols]
            kd, vd = (x[row][:, cols].repeat_interleave(repeat, dim=0) for x in (k, v))
            weights = torch.softmax(qd @ kd.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
            out[row][:, cols] = weights @ vd
    return out


@pytest.mark.parametrize("backend", ["per_document", "dense"])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_outputs_and_gradients_match_the_reference(backend, kv_heads):
    q, k, v = qkv(kv_heads=kv_heads)
    expected = per_document_reference(q, k, v, DOC_IDS)
    out = document_attention(q, k, v, DOC_IDS, backend=backend)
    assert (out - expected).abs().max() <= 1e-5
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), upstream)
    expected_grads = torch.autograd.grad(expected, (q, k, v), upstream)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert (grad - expected_grad).abs().max() <= 1e-5


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_forward_matches_dense_on_cpu():
    q, k, v = (x.detach() for x in qkv())
    dense = document_attention(q, k, v, DOC_IDS, backend="dense")
    assert (document_attention(q, k, v, DOC_IDS, backend="flex") - dense).abs().max() <= 1e-5


@pytest.mark.parametrize("backend", list(ATTENTION_BACKENDS))
def test_no_doc_ids_is_full_attention(backend):
    q, k, v = (x.detach() for x in qkv(kv_heads=4))
    full = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(document_attention(q, k, v, None, backend), full)
    one_document = torch.zeros(4, 32, dtype=torch.long)
    torch.testing.assert_close(document_attention(q, k, v, one_document, "per_document"), full)


def test_documents_are_isolated_and_padding_stays_finite_and_private():
    q, k, v = (x.detach() for x in qkv())
    out = document_attention(q, k, v, DOC_IDS)
    assert torch.isfinite(out).all()
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 5:22] += 3.0  # document 1 of row 0
    v2[0, :, 5:22] -= 3.0
    k2[1, :, 26:] = 100.0  # the padding of row 1
    v2[1, :, 26:] = 100.0
    changed = document_attention(q, k2, v2, DOC_IDS)
    untouched = torch.ones(4, 32, dtype=torch.bool)
    untouched[0, 5:22] = untouched[1, 26:] = False
    assert torch.equal(changed.transpose(1, 2)[untouched], out.transpose(1, 2)[untouched])
    assert not torch.allclose(changed[0, :, 5:22], out[0, :, 5:22])


def test_per_document_cost_is_the_sum_of_squared_document_lengths(monkeypatch):
    """Every score matrix per_document asks SDPA for, summed, is sum(len^2): no L x L anywhere."""
    scores, sdpa = [], F.scaled_dot_product_attention

    def counting_sdpa(q, k, v, attn_mask=None, enable_gqa=False):
        assert attn_mask is None
        scores.append(q.shape[0] * q.shape[-2] * k.shape[-2])
        return sdpa(q, k, v, enable_gqa=enable_gqa)

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting_sdpa)
    q, k, v = (x.detach() for x in qkv())
    document_attention(q, k, v, DOC_IDS)
    lengths = [5, 17, 10, 26, 6, 16, 16, 32]  # the runs of DOC_IDS, padding included
    assert sum(scores) == sum(n * n for n in lengths) == 2662
    assert len(scores) == 7  # the two 16-token documents share one call


def test_bad_input_is_named():
    q, k, v = (x.detach() for x in qkv())
    with pytest.raises(ValueError, match="unknown attention backend 'sparse'; known: per_document"):
        document_attention(q, k, v, DOC_IDS, backend="sparse")
    with pytest.raises(ValueError, match="row 0 is not made of contiguous runs"):
        document_attention(q, k, v, torch.tensor([[0] * 10 + [1] * 10 + [0] * 12] * 4))
    with pytest.raises(ValueError, match="doc_ids must be >= -1"):
        document_attention(q, k, v, torch.full((4, 32), -2))
    with pytest.raises(ValueError, match=r"doc_ids must be an integer tensor \[B, L\]"):
        document_attention(q, k, v, DOC_IDS.float())
    with pytest.raises(ValueError, match=r"doc_ids shape \(4, 31\) does not match"):
        document_attention(q, k, v, DOC_IDS[:, :31])
    with pytest.raises(ValueError, match=r"q heads \(3\) must be a multiple of k/v heads \(2\)"):
        document_attention(q[:, :3], k, v, DOC_IDS)
    with pytest.raises(ValueError, match=r"q, k, v must be \[B, H, L, D\]"):
        document_attention(q, k[:, :, :31], v[:, :, :31], DOC_IDS)
