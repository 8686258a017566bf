"""What the shipped models do at a chosen length and RoPE variant (the RoPE explorer's second
view): NIAH on a few prompts, answered one token a step, by the shipped base with the variant
applied without training (`default`: direct extrapolation) and by its mini-UltraLLaDA extension
as post-trained (`released.examples`). Seconds on a laptop CPU up to `MAX_LENGTH` tokens.
"""

from __future__ import annotations

import functools
import io

import matplotlib.pyplot as plt
import pandas as pd
import torch

from minillada.claims.statistics import wilson_interval
from minillada.data.keys import key_space
from minillada.data.tasks import sample_maker
from minillada.evals.retrieval import chance_level
from minillada.figures import plots
from minillada.modeling.diffusion import generate
from minillada.released.examples import example_provenance, load_example

MAX_LENGTH = 4096  # longer prompts take more than seconds on a laptop CPU
DEPTHS = (10.0, 30.0, 50.0, 70.0, 90.0)
TASK = "niah"


@functools.cache
def _shipped(name: str):
    return load_example(name)


def shipped_retrieval(length: int, variant: str, depths: tuple[float, ...] = DEPTHS,
                      seed: int = 0) -> pd.DataFrame:
    """NIAH at `length` tokens, one prompt per depth (percent), held-out haystacks: the shipped
    base under RoPE `variant` for `length` (no training) and mini-UltraLLaDA as post-trained.
    Rows: model, length, depth, answer, truth, exact."""
    recipe = example_provenance("base")
    if not recipe["seq_len"] <= length <= MAX_LENGTH:
        raise ValueError(f"the shipped models are shown at {recipe['seq_len']} to {MAX_LENGTH} "
                         f"tokens, got {length}")
    base, tokenizer = _shipped("base")
    ultra, _ = _shipped("ultra")
    make = sample_maker(tokenizer, key_kind=recipe["task_key_kind"],
                        key_digits=recipe["task_key_digits"], corpus=recipe["corpus"],
                        split="test", split_seed=recipe["split_seed"])
    base.set_rope(variant, target_len=length)  # validated first: a bad variant changes nothing
    try:
        samples = [make(TASK, length, depth, seed) for depth in depths]
        prompts = torch.tensor([list(sample.prompt_ids) for sample in samples])
        steps = len(samples[0].answer_ids)  # one token a step; every key has the same length
        rows = []
        for label, model in ((f"base + {variant} (no training)", base),
                             ("mini-UltraLLaDA (post-trained)", ultra)):
            with torch.no_grad():
                output = generate(model, prompts, gen_length=steps, block_length=steps,
                                  steps=steps, mask_token_id=tokenizer.mask_token_id)
            for sample, answer_ids in zip(samples, output[:, prompts.shape[1]:], strict=True):
                answer = tokenizer.decode(answer_ids)
                rows.append({"model": label, "length": length, "depth": sample.depth,
                             "answer": answer, "truth": sample.answer_text,
                             "exact": answer.strip() == sample.answer_text.strip()})
    finally:
        base.set_rope("default")
    return pd.DataFrame(rows)


def render_shipped(table: pd.DataFrame) -> bytes:
    """PNG: each model's exact match over the prompts of `table` with its Wilson 95 % interval,
    the chance of a uniform guess marked."""
    recipe = example_provenance("base")
    _, tokenizer = _shipped("base")
    chance = chance_level(TASK, key_space(tokenizer, recipe["task_key_kind"],
                                          recipe["task_key_digits"]))
    fig, (ax,) = plots.panels(1, width=7.5, height=2.6)
    for row, (model, scored) in enumerate(table.groupby("model", sort=False)):
        right, n = int(scored["exact"].sum()), len(scored)
        low, high = wilson_interval(right, n)
        ax.barh(row, 100 * right / n,
                color=plots.VARIANT_COLORS["diffusion_ntk"] if "Ultra" in model else "0.55")
        share = right / n
        ax.errorbar(100 * share, row, xerr=[[100 * (share - low)], [100 * (high - share)]],
                    color="black", capsize=3)
        ax.text(101, row, f"{right} of {n}", va="center", fontsize="small")
    ax.axvline(chance, color="black", linestyle=":", label=f"chance {chance:.2g}%")
    ax.set_yticks(range(table["model"].nunique()), list(dict.fromkeys(table["model"])))
    ax.invert_yaxis()  # the models top to bottom in the table's order
    ax.set(xlim=(0, 112), xlabel="NIAH exact match, % (95% Wilson)",
           title=f"the shipped models at {int(table['length'].iloc[0]):,} tokens")
    ax.legend(loc="lower right", fontsize="x-small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=plots.DPI)
    plt.close(fig)
    return buffer.getvalue()
