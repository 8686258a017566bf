"""The walkthrough's pictures draw true numbers: the sampler's trace is what `generate` did, and
the swept angles follow the RoPE laws (the figures themselves: tests/test_notebooks.py)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from minillada.figures.teaching import sampling_trace, shown_token, swept_turns
from minillada.modeling.diffusion import generate, transfer_schedule
from minillada.rope.formulas import critical_dim, default_inv_freq
from minillada.rope.laws import compute_rope

MASK = 0


def confident_model(input_ids, positions=None, doc_ids=None):
    """Context-free random logits per position whose argmax is never the mask token."""
    batch, length = input_ids.shape
    table = torch.randn(length, 12, generator=torch.Generator().manual_seed(length)) * 3
    table[:, MASK] = -1e4
    return SimpleNamespace(logits=table.expand(batch, length, -1))


def test_the_trace_is_the_samplers_own_passes():
    prompt = torch.tensor([[5, 6, 7]])
    trace = sampling_trace(confident_model, prompt, gen_length=8, block_length=4, steps=4,
                           mask_token_id=MASK)
    output = generate(confident_model, prompt, 8, 4, 4, mask_token_id=MASK)
    assert trace.shape == (4 + 1, 8)  # before each of the 4 passes, and the output
    assert (trace[0] == MASK).all() and torch.equal(trace[-1], output[0, 3:])
    masked = (trace == MASK).sum(dim=1).tolist()
    committed = [a - b for a, b in itertools.pairwise(masked)]
    assert committed == [n for block in transfer_schedule(8, 4, 4) for n in block]
    assert (trace[:3, 4:] == MASK).all()  # the second block waits for the first


def test_the_critical_pair_sweeps_one_turn_at_the_target_under_diffusion_ntk():
    d, b, t, target = 32, 110.0, 64, 1024
    d_crit = critical_dim(d, b, t, span=2.0)
    scaled, _ = compute_rope("diffusion_ntk", d, b, t, target)
    # Its period is stretched to the span 2 T', which (-T', T') covers but for one step.
    assert swept_turns(scaled, target)[d_crit // 2] == pytest.approx((target - 1) / target)
    original = swept_turns(default_inv_freq(d, b), t)
    assert original[d_crit // 2] < 1 <= original[d_crit // 2 - 1]  # the first pair short of a turn


def test_tokens_fit_their_cells():
    assert shown_token(" return\n") == "␣ret…"
    assert shown_token("\tx") == "⇥x"
