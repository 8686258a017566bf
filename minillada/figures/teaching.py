"""The walkthrough's pictures (notebook 00): what a learner needs to see once.

- `plot_packing_masks`: the attention mask of each packing strategy, with the RoPE positions a
  row's tokens get (continuous, as in the study's extend runs, or restarting at each document).
- `sampling_trace` + `plot_sampling_trace`: LLaDA's sampler unmasking a sequence step by step.
- `plot_retrieval_prompt`: where the needle, the question and the answer lie in one retrieval
  prompt, and what the model answered.
- `attention_from` + `plot_answer_attention`: where a model looks when it answers (the answer
  slot's attention over the prompt), with who answered what.
- `plot_relative_distances`: the relative distances attention trains on, causal [0, T) against
  bidirectional (-T, T).
- `plot_swept_angles`: the angle each rotary pair sweeps over those distances at T_train and at
  the target, unchanged and under a RoPE variant.

Each draws on given matplotlib axes in the study's style (`minillada.figures.plots`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from minillada.data.packing import pack_documents
from minillada.data.tasks import TaskSample
from minillada.figures.plots import (
    PACKING_LABELS,
    SPAN_COLORS,
    VARIANT_COLORS,
    VARIANT_LABELS,
)
from minillada.modeling.diffusion import generate
from minillada.rope.formulas import critical_dim, default_inv_freq
from minillada.rope.laws import compute_rope

Decode = Callable[[Sequence[int]], str]
CROSS_DOCUMENT = (0.82, 0.82, 0.82)  # attention across a document boundary
BLOCKED = (1.0, 1.0, 1.0)


def shown_token(text: str, width: int = 6) -> str:
    """A token's text in a small cell: spaces as ␣, newlines as ↵, a reserved token
    `<|key107|>` as `key107`, cut to `width` characters."""
    if text.startswith("<|") and text.endswith("|>"):
        text = text[2:-2]
    text = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return text if len(text) <= width else text[:width - 1] + "…"


# ----------------------------------------------------------------------------- packing


def plot_packing_masks(docs: Sequence[Sequence[int]], seq_len: int, eod_token_id: int,
                       strategies: Sequence[str] = ("direct", "eod", "adaptive")) -> Figure:
    """One column per strategy: the first packed row's attention mask (query rows, key columns;
    a document's own cells in its color, attention across documents gray, blocked white) above
    its tokens' documents and RoPE positions, continuous and restarting at each document."""
    colors = sns.color_palette("Set2", len(docs))
    fig, axes = plt.subplots(2, len(strategies), figsize=(5.2 * len(strategies), 6.6),
                             height_ratios=[seq_len, 3.2], squeeze=False, layout="constrained")
    for column, name in enumerate(strategies):
        continuous, restarting = (pack_documents(docs, seq_len, name, eod_token_id=eod_token_id,
                                                 restart_positions=restart)
                                  for restart in (False, True))
        doc_ids, tokens = restarting.doc_ids[0], restarting.tokens[0]
        same = doc_ids[:, None] == doc_ids[None, :]
        # the mask the model builds from what the strategy gives it (None: full attention)
        allowed = (torch.ones_like(same) if restarting.strategy.attention_doc_ids(doc_ids) is None
                   else same)
        image = np.array([[colors[int(doc_ids[k])] if same[q, k] else CROSS_DOCUMENT
                           if allowed[q, k] else BLOCKED for k in range(seq_len)]
                          for q in range(seq_len)])
        mask_ax, strip_ax = axes[0, column], axes[1, column]
        mask_ax.imshow(image, interpolation="nearest")
        mask_ax.set(title=PACKING_LABELS[name], xlabel="key token", ylabel="query token",
                    xticks=[], yticks=[])
        rows = np.stack([doc_ids.numpy(), continuous.positions[0].numpy(),
                         restarting.positions[0].numpy()])
        labels = [["E" if int(t) == eod_token_id else str(int(d)) for t, d in zip(
            tokens, doc_ids, strict=True)], *[[str(int(p)) for p in row] for row in rows[1:]]]
        sns.heatmap(np.broadcast_to(doc_ids.numpy(), rows.shape), ax=strip_ax, cbar=False,
                    annot=np.array(labels), fmt="", annot_kws={"fontsize": "x-small"},
                    cmap=ListedColormap(colors), vmin=-0.5, vmax=len(docs) - 0.5,
                    linewidths=0.5, linecolor="white")
        strip_ax.set_yticks([0.5, 1.5, 2.5], ["document (E: EOD)", "position: continuous",
                                              "position: restarting"] if column == 0 else [],
                            rotation=0)
        strip_ax.set(xticks=[], xlabel=f"the {seq_len} tokens of the first packed row")
    legend = [Patch(color=colors[i], label=f"document {i}") for i in range(len(docs))]
    legend += [Patch(color=CROSS_DOCUMENT, label="attends across documents"),
               Patch(facecolor=BLOCKED, edgecolor="gray", label="blocked by the document mask")]
    fig.legend(handles=legend, loc="outside lower center", ncols=len(legend), frameon=False)
    return fig


# ----------------------------------------------------------------------------- the sampler


@torch.no_grad()
def sampling_trace(model, prompt_ids: torch.Tensor, gen_length: int, block_length: int,
                   steps: int, *, mask_token_id: int) -> torch.Tensor:
    """The generated positions of one prompt ([1, Lp]) before each of the sampler's forward
    passes and at the end: LongTensor [passes + 1, gen_length] (`diffusion.generate`, which
    sees `model` only through a wrapper that records what it is given)."""
    prompt_length = prompt_ids.shape[1]
    states: list[torch.Tensor] = []

    def recording(input_ids: torch.Tensor, **kwargs):
        states.append(input_ids[0, prompt_length:].clone())
        return model(input_ids, **kwargs)

    final = generate(recording, prompt_ids, gen_length, block_length, steps,
                     mask_token_id=mask_token_id)
    return torch.stack([*states, final[0, prompt_length:]])


def plot_sampling_trace(ax: Axes, trace: torch.Tensor, decode: Decode, mask_token_id: int,
                        block_length: int) -> Axes:
    """Rows: the sequence before each forward pass (and at the end); columns: generated
    positions. A committed token shows its text, colored by the pass that committed it; a
    still-masked one is blank; dashed lines separate the blocks decoded left to right."""
    masked = (trace == mask_token_id).numpy()
    committed_at = np.where(masked, len(trace), np.arange(len(trace))[:, None]).min(axis=0)
    colors = np.where(masked, np.nan, committed_at[None, :].astype(float))
    text = np.array([["" if masked[s, p] else shown_token(decode([int(trace[s, p])]))
                      for p in range(trace.shape[1])] for s in range(len(trace))])
    sns.heatmap(colors, ax=ax, annot=text, fmt="", cmap="viridis_r", vmin=0, vmax=len(trace) - 1,
                annot_kws={"fontsize": "x-small"}, linewidths=0.5, linecolor="white",
                cbar_kws={"label": "committed at pass"})
    ax.grid(False)
    for edge in range(block_length, trace.shape[1], block_length):
        ax.axvline(edge, color="black", linestyle="--", linewidth=1.5)
    ax.set(xlabel="generated position (white: still masked)",
           ylabel="forward pass (last row: the output)",
           title=f"LLaDA's sampler: {trace.shape[1]} masks, blocks of {block_length} left to "
                 f"right, the most confident prediction committed first")
    ax.set_yticks(np.arange(len(trace)) + 0.5, [str(i) for i in range(len(trace))], rotation=0)
    return ax


# ----------------------------------------------------------------------------- retrieval


def plot_retrieval_prompt(ax: Axes, sample: TaskSample, prediction: str | float, decode: Decode,
                          train_len: int) -> Axes:
    """The prompt as a bar of its tokens: filler, the needles (the queried one in red), the
    question, then the answer slot; the needle's and the question's text written beside them,
    the last T_train tokens before the answer marked, and the model's answer (`prediction` as a
    retrieval table holds it: an empty answer reads back from CSV as NaN) against the truth."""
    prediction = prediction.strip() if isinstance(prediction, str) else ""
    meta, prompt_length = sample.metadata, len(sample.prompt_ids)
    spans = list(zip(meta["needle_starts"], meta["needle_ends"], strict=True))
    question_start = meta["filler_tokens"] + sum(end - start for start, end in spans)
    parts = [((0, prompt_length), "0.85", "filler"),
             ((question_start, prompt_length), SPAN_COLORS["causal"], "question"),
             ((prompt_length, sample.length), "black", "answer slot")]
    parts += [((start, end), "tab:red" if i == 0 else "tab:orange",
               "queried needle" if i == 0 else "other needle")
              for i, (start, end) in enumerate(spans)]
    for (start, end), color, label in parts:  # a needle gets at least a visible sliver
        ax.broken_barh([(start, max(end - start, sample.length / 300))], (0, 1), color=color,
                       label=label)
    ax.axvspan(max(0, prompt_length - train_len), prompt_length, ymin=0.0, ymax=1.0,
               facecolor="none", edgecolor="black", linestyle=":", linewidth=1.5,
               label=f"the last T_train = {train_len} tokens")
    needle = decode(sample.prompt_ids[spans[0][0]:spans[0][1]]).strip()
    question = decode(sample.prompt_ids[question_start:]).strip()
    ax.annotate(f"needle: {needle!r}", xy=(spans[0][0], 1), xytext=(0.02, 1.9),
                textcoords=("axes fraction", "data"), fontsize="small",
                arrowprops={"arrowstyle": "->", "color": "tab:red"})
    ax.annotate(f"question: {question!r}", xy=(question_start, 0), xytext=(0.02, -1.0),
                textcoords=("axes fraction", "data"), fontsize="small",
                arrowprops={"arrowstyle": "->", "color": SPAN_COLORS["causal"]})
    verdict = "right" if prediction == sample.answer_text.strip() else "wrong"
    answered = repr(prediction) if prediction else "nothing but blanks"
    ax.set_title(f"{sample.task} at {sample.length} tokens, needle at {sample.depth:.0f}% depth: "
                 f"the model answered {answered}, the answer is {sample.answer_text!r} "
                 f"({verdict})")
    ax.set(xlim=(0, sample.length), ylim=(-1.6, 2.6), yticks=[], xlabel="token position")
    ax.legend(loc="upper right", ncols=3, fontsize="x-small")
    return ax


@torch.no_grad()
def attention_from(model, ids: torch.Tensor, queries: Sequence[int]) -> np.ndarray:
    """Where the model looks: the attention [layers, L] that the positions `queries` of one
    sequence `ids` ([1, L], full attention) pay to every position, averaged over heads and
    queries, recomputed from each block's input (`LLaDABlock.attention_probs`); each layer's
    row sums to 1."""
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError(f"ids must be one sequence [1, L], got shape {tuple(ids.shape)}")
    if not queries or not all(0 <= q < ids.shape[1] for q in queries):
        raise ValueError(f"queries {list(queries)} must be positions in [0, {ids.shape[1]})")
    rows: list[np.ndarray] = []

    def record(block, args):
        x, cos, sin, _ = args
        probs = block.attention_probs(x, cos, sin)  # [1, H, L, L]
        rows.append(probs[0][:, list(queries)].mean(dim=(0, 1)).float().cpu().numpy())

    hooks = [block.register_forward_pre_hook(record) for block in model.model.transformer.blocks]
    try:
        model(ids)
    finally:
        for hook in hooks:
            hook.remove()
    return np.stack(rows)


def plot_answer_attention(ax: Axes, sample: TaskSample, attention: np.ndarray, prediction: str,
                          who: str, train_len: int) -> Axes:
    """One case of the retrieval story: the attention the answer slot pays to each prompt token
    (mean over layers, in % of its attention), the queried needle shaded red, the question in
    its color, the last T_train tokens outlined; the title says who answered what, and whether
    it is right. The spans are labelled for one legend per figure (`fig.legend`)."""
    meta, prompt_length = sample.metadata, len(sample.prompt_ids)
    start, end = meta["needle_starts"][0], meta["needle_ends"][0]
    question_start = meta["filler_tokens"] + sum(
        e - s for s, e in zip(meta["needle_starts"], meta["needle_ends"], strict=True))
    shown = 100 * attention.mean(axis=0)[:prompt_length]
    ax.fill_between(np.arange(prompt_length), shown, color="0.35", linewidth=0, step="mid",
                    label="attention of the answer slot")
    ax.axvspan(start - 0.5, end - 0.5 + max(1, prompt_length / 300), color="tab:red", alpha=0.35,
               label="queried needle")
    ax.axvspan(question_start - 0.5, prompt_length - 0.5, color=SPAN_COLORS["causal"], alpha=0.25,
               label="question")
    ax.axvspan(max(0, prompt_length - train_len), prompt_length, facecolor="none",
               edgecolor="black", linestyle=":", linewidth=1.2,
               label=f"the last T_train = {train_len} tokens")
    on_needle = float(shown[start:end].sum())
    verdict = "right" if prediction.strip() == sample.answer_text.strip() else "wrong"
    ax.set_title(f"{who}: answered {prediction.strip()!r} ({verdict}), {on_needle:.0f}% of its "
                 "attention on the needle", loc="left", fontsize="small")
    ax.set(xlim=(0, sample.length), ylim=(0, max(1.05 * shown.max(), 1e-3)),
           xlabel=f"prompt position ({sample.length} tokens)", ylabel="attention, %")
    return ax


# ----------------------------------------------------------------------------- RoPE


def plot_relative_distances(axes: Sequence[Axes], train_len: int) -> Sequence[Axes]:
    """Three panels: the relative distance query - key of every pair a causal model attends
    (key <= query: [0, T)) and a bidirectional one (every key: (-T, T)), then how many pairs
    of a T-token row train each distance."""
    query, key = np.meshgrid(np.arange(train_len), np.arange(train_len), indexing="ij")
    distance = (query - key).astype(float)
    for ax, law in zip(axes[:2], ("causal", "bidirectional"), strict=True):
        shown = np.where(key <= query, distance, np.nan) if law == "causal" else distance
        image = ax.imshow(shown, cmap="RdBu_r", vmin=-train_len, vmax=train_len,
                          interpolation="nearest")
        span = "[0, T)" if law == "causal" else "(-T, T)"
        ax.set(title=f"{law}: distances in {span}", xlabel="key position",
               ylabel="query position")
        ax.grid(False)
    plt.colorbar(image, ax=list(axes[:2]), label="relative distance query - key", shrink=0.8)
    offsets = np.arange(-(train_len - 1), train_len)
    pairs = {"bidirectional": train_len - np.abs(offsets),
             "causal": np.where(offsets >= 0, train_len - offsets, 0)}
    for law, count in pairs.items():
        axes[2].fill_between(offsets, count, step="mid", alpha=0.45, color=SPAN_COLORS[law],
                             label=f"{law}: {np.count_nonzero(count)} distances")
    axes[2].set(title=f"pairs per distance in one row of T = {train_len}",
                xlabel="relative distance query - key", ylabel="(query, key) pairs")
    axes[2].legend(loc="upper left")
    return axes


def swept_turns(inv_freq: torch.Tensor, length: int) -> np.ndarray:
    """Turns (angle / 2 pi) each pair sweeps over the relative distances (-L, L) of a
    bidirectional row of `length` tokens: 2 (L - 1) theta_n / 2 pi."""
    return (2 * (length - 1) * inv_freq.double() / (2 * math.pi)).numpy()


def plot_swept_angles(ax: Axes, head_dim: int, base: float, train_len: int, target_len: int,
                      variant: str = "diffusion_ntk") -> Axes:
    """Per rotary pair, the turns it sweeps at T_train (what training showed), at the target
    with the same frequencies (direct extrapolation: angles never trained) and with `variant`'s
    frequencies; one full turn and the bidirectional critical dimension are marked."""
    dims = np.arange(0, head_dim, 2)
    original = default_inv_freq(head_dim, base)
    scaled, _ = compute_rope(variant, head_dim, base, train_len, target_len)
    curves = [(swept_turns(original, train_len), "black", f"trained: T_train = {train_len}"),
              (swept_turns(original, target_len), VARIANT_COLORS["default"],
               f"T' = {target_len}, unchanged"),
              (swept_turns(scaled, target_len), VARIANT_COLORS[variant],
               f"T' = {target_len}, {VARIANT_LABELS[variant]}")]
    for turns, color, label in curves:
        ax.plot(dims, turns, marker=".", color=color, label=label)
    trained, unchanged = curves[0][0], curves[1][0]
    # A pair that turned fully in training has met every angle; the others only their arc.
    ax.fill_between(dims, trained, unchanged, where=trained < 1, color=VARIANT_COLORS["default"],
                    alpha=0.2, label="angles never trained on")
    ax.axhline(1.0, color="dimgray", linestyle=":", label="one full turn")
    d_crit = critical_dim(head_dim, base, train_len, span=2.0)
    ax.axvline(d_crit, color=SPAN_COLORS["bidirectional"], linestyle="--",
               label=f"d'_crit = {d_crit} (bidirectional)")
    ax.set(yscale="log", xlim=(-1, head_dim), xlabel="dimension index i = 2n",
           ylabel="turns swept over (-L, L)", title="the angle each rotary pair sweeps")
    ax.legend(loc="lower left", fontsize="x-small")  # the curves fall to the lower right
    return ax
