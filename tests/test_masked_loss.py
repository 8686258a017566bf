"""The masked-only, chunked loss: LLaDA's loss and its gradients, without the logits of the row."""

from __future__ import annotations

import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker

from minillada.modeling.diffusion import diffusion_loss, forward_process
from minillada.modeling.masked_loss import chunked_cross_entropy, diffusion_loss_weights
from minillada.modeling.model import LLaDAConfig, LLaDAModelLM

CONFIG = dict(vocab_size=97, d_model=32, n_heads=4, n_layers=2, mlp_hidden_size=48,
              max_sequence_length=16)


def noised_batch(batch: int, length: int, vocab: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, vocab, (batch, length), generator=generator)
    noised = forward_process(tokens, 0, generator=generator)
    row_tokens = torch.tensor([length, 5, length][:batch])  # an SFT-style normaliser among them
    return tokens, noised, row_tokens


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_loss_and_gradients_equal_the_full_row_loss(chunk):
    torch.manual_seed(0)
    model = LLaDAModelLM(LLaDAConfig(**CONFIG))
    tokens, noised, row_tokens = noised_batch(3, 24, CONFIG["vocab_size"])
    full = diffusion_loss(model(noised.noisy_ids).logits.float(), tokens, noised.masked,
                          noised.p_mask, row_tokens=row_tokens)
    full_grads = torch.autograd.grad(full, list(model.parameters()))
    weights = diffusion_loss_weights(noised.masked, noised.p_mask, row_tokens)
    chunked = model(noised.noisy_ids, scored=noised.masked, labels=tokens[noised.masked],
                    label_weights=weights, loss_chunk=chunk).loss
    chunked_grads = torch.autograd.grad(chunked, list(model.parameters()))
    assert chunked.item() == pytest.approx(full.item(), rel=1e-6)
    for name, a, b in zip(dict(model.named_parameters()), chunked_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


def test_scored_logits_are_the_rows_of_the_full_logits():
    torch.manual_seed(0)
    model = LLaDAModelLM(LLaDAConfig(**CONFIG)).eval()
    ids = torch.randint(0, CONFIG["vocab_size"], (2, 20))
    scored = torch.zeros(2, 20, dtype=torch.bool)
    scored[0, 3:9], scored[1, 15:] = True, True
    with torch.no_grad():
        full, part = model(ids).logits, model(ids, scored=scored).logits
    assert part.shape == (11, CONFIG["vocab_size"])
    torch.testing.assert_close(part, full[scored], rtol=1e-6, atol=1e-6)


def test_no_masked_position_still_reaches_the_head():
    """A micro-batch without a masked token gives 0 with a (zero) gradient on the head: every
    rank of a sharded model then reduces the same gradients."""
    hidden = torch.randn(0, 8, requires_grad=True)
    weight = torch.randn(11, 8, requires_grad=True)
    loss = chunked_cross_entropy(hidden, weight, torch.zeros(0, dtype=torch.long), torch.zeros(0))
    loss.backward()
    assert loss.item() == 0.0 and weight.grad is not None and not weight.grad.any()


def loss_step_peak_bytes(length: int, vocab: int, masked_count: int, chunk: int | None) -> int:
    """Peak bytes allocated by one loss + backward at the head (inputs excluded): the trainer's
    full-row path (chunk None) or the chunked masked-only one."""
    d_model = 16
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, length, d_model, generator=generator, requires_grad=True)
    weight = torch.randn(vocab, d_model, generator=generator, requires_grad=True)
    tokens = torch.randint(0, vocab, (1, length), generator=generator)
    masked = torch.zeros(1, length, dtype=torch.bool)
    masked[0, torch.randperm(length, generator=generator)[:masked_count]] = True
    p_mask = torch.full((1, length), 0.5)
    row_tokens = torch.tensor([length])
    tracker = MemTracker()
    tracker.track_external(hidden, weight)
    with tracker:
        if chunk is None:
            logits = torch.nn.functional.linear(hidden, weight)
            loss = diffusion_loss(logits.float(), tokens, masked, p_mask, row_tokens=row_tokens)
        else:
            loss = chunked_cross_entropy(hidden[masked], weight, tokens[masked],
                                         diffusion_loss_weights(masked, p_mask, row_tokens), chunk)
        loss.backward()
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    return peak - 2 * (hidden.numel() + weight.numel()) * 4  # the inputs and their gradients


def test_peak_memory_grows_with_the_masked_count_not_vocabulary_times_row():
    """Bytes per extra token of the row, per extra masked token and per extra vocabulary entry,
    from the peak of one loss step (d_model 16, float32)."""
    chunk, d_model, vocab = 64, 16, 512
    base = loss_step_peak_bytes(2048, vocab, 256, chunk)
    per_row_token = (loss_step_peak_bytes(8192, vocab, 256, chunk) - base) / 6144
    per_masked_token = (loss_step_peak_bytes(2048, vocab, 1024, chunk) - base) / 768
    per_vocab_entry = (loss_step_peak_bytes(2048, 4 * vocab, 256, chunk) - base) / (3 * vocab)
    assert per_row_token < 4 * d_model * 4  # masks and the hidden states' gradient: O(d)
    assert per_masked_token < 4 * d_model * 4  # the gathered hidden state and its gradient
    assert per_vocab_entry < 16 * chunk  # one chunk of logits, never the row's
    full = loss_step_peak_bytes(2048, vocab, 256, None)
    full_per_row_token = (loss_step_peak_bytes(4096, vocab, 256, None) - full) / 2048
    assert full_per_row_token > 8 * vocab > 50 * per_row_token  # today's path: vocabulary x row
    assert full > 40 * base


def test_bad_input_is_named():
    hidden, weight = torch.randn(3, 8), torch.randn(5, 8)
    targets, weights = torch.zeros(3, dtype=torch.long), torch.ones(3)
    with pytest.raises(ValueError, match="chunk must be a positive integer, got 0"):
        chunked_cross_entropy(hidden, weight, targets, weights, chunk=0)
    with pytest.raises(ValueError, match=r"must be \[N, d\] and \[V, d\]"):
        chunked_cross_entropy(hidden, torch.randn(5, 7), targets, weights)
    with pytest.raises(ValueError, match=r"must be \[N\] = \[3\]"):
        chunked_cross_entropy(hidden, weight, targets[:2], weights)
    masked = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="row_tokens must be"):
        diffusion_loss_weights(masked, torch.ones(2, 4), torch.tensor([4, 0]))
    model = LLaDAModelLM(LLaDAConfig(**CONFIG))
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="scored must be a bool tensor of shape"):
        model(ids, scored=torch.ones(1, 4))
    with pytest.raises(ValueError, match="labels and label_weights go together"):
        model(ids, scored=torch.ones(1, 4, dtype=torch.bool), labels=torch.zeros(4).long())
