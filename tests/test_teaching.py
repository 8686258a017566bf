"""The walkthrough's pictures draw true numbers: the sampler's trace is what `generate` did, and
the swept angles follow the RoPE laws (the figures themselves: tests/test_notebooks.py)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from minillada.figures.teaching import (
    attention_from,
    plot_answer_attention,
    sampling_trace,
    shown_token,
    swept_turns,
)
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
    assert shown_token(" return\n") == "␣retu…"
    assert shown_token("\tx") == "⇥x"
    assert shown_token("<|key107|>") == "key107"  # a key token reads as its name
    assert shown_token("<|endoftext|>") == "endof…"


@pytest.fixture(scope="module")
def tiny_model():
    from minillada.data.corpus import get_tokenizer
    from minillada.training.config import make_config
    from minillada.training.run_setup import build_model

    tokenizer = get_tokenizer(512)
    return build_model(make_config("smoke", "pretrain", "unused", seed=5), tokenizer).eval()


def test_attention_from_is_each_layers_attention_averaged_over_queries(tiny_model):
    ids = torch.randint(5, 500, (1, 24), generator=torch.Generator().manual_seed(0))
    both = attention_from(tiny_model, ids, [20, 23])
    assert both.shape == (tiny_model.config.n_layers, 24)
    assert both.sum(axis=1) == pytest.approx(1.0, abs=1e-5)
    one, other = (attention_from(tiny_model, ids, [q]) for q in (20, 23))
    assert both == pytest.approx((one + other) / 2, abs=1e-6)
    with pytest.raises(ValueError, match=r"queries \[24\] must be positions in \[0, 24\)"):
        attention_from(tiny_model, ids, [24])
    with pytest.raises(ValueError, match=r"ids must be one sequence \[1, L\], got shape \(2, 24\)"):
        attention_from(tiny_model, ids.expand(2, -1), [0])


def test_the_attention_picture_keeps_its_labels_and_legend_off_the_data():
    import matplotlib.pyplot as plt

    from minillada.figures import plots

    sample = SimpleNamespace(
        prompt_ids=list(range(40)), answer_ids=[7], answer_text="<|key007|>", length=41,
        metadata={"needle_starts": [10], "needle_ends": [14], "filler_tokens": 30})
    attention = np.full((2, 41), 1 / 41)
    fig, axes = plots.panels(2, columns=1, width=8, height=2.2)
    for ax in axes:
        plot_answer_attention(ax, sample, attention, "<|key007|>", "a base, in its window", 32)
    legend = fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    for ax in axes:
        assert "answered '<|key007|>' (right), 10% of its attention on the needle" in \
            ax.get_title(loc="left")
        for text in (ax.title, ax._left_title, ax.xaxis.label, ax.yaxis.label):
            box = text.get_window_extent(renderer)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1, text.get_text()
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    plt.close(fig)
