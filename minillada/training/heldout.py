"""What the trainer validates on, and how the answers are scored.

The held-out rows are seeded by `split_seed`, not `seed`: runs with different seeds validate on the
same rows. `held_out_rows` picks the corpus rows behind `val_loss`; `task_rows` builds the task rows
behind `val_task_token_acc` and `val_task_exact`, whose answer `answer_masked` masks whole (one
forward pass), `answer_counts` scores and `task_scores` turns into the metrics.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from minillada.common.seeds import derived_seed
from minillada.modeling.diffusion import NoisedBatch
from minillada.training.batches import Rows, task_row
from minillada.training.config import TrainConfig

log = logging.getLogger(__name__)


def held_out_rows(rows: Rows, config: TrainConfig, world: int) -> Rows:
    """`val_rows` of the held-out corpus `rows` in a seeded order (fewer where there are fewer, a
    multiple of the world size)."""
    if len(rows) < config.val_rows:
        log.info("only %d held-out rows of %d tokens: validating on %d, not val_rows %d",
                 len(rows), config.seq_len, len(rows) - len(rows) % world, config.val_rows)
    rng = np.random.default_rng(derived_seed(config.split_seed, "val_rows"))
    count = min(config.val_rows, len(rows) - len(rows) % world)
    return rows.select(torch.from_numpy(rng.permutation(len(rows))[:count]))


def task_rows(tokenizer, config: TrainConfig) -> Rows:
    """`val_task_rows` answer-only task rows of seq_len tokens, cycling over `config.tasks`, at
    depths spread evenly over 0-100 %, NIAH haystacks from the validation split."""
    return Rows.concat([
        task_row(tokenizer, config, config.tasks[i % len(config.tasks)], config.seq_len,
                 100.0 * i / max(1, config.val_task_rows - 1),
                 derived_seed(config.split_seed, "val_task", i), answer_only=True,
                 split="validation")
        for i in range(config.val_task_rows)
    ])


def answer_masked(rows: Rows, mask_token_id: int) -> NoisedBatch:
    """`rows` with the whole answer masked: noised with t = 1 over the maskable (answer) tokens."""
    noisy = torch.where(rows.maskable, mask_token_id, rows.tokens).long()
    return NoisedBatch(noisy, rows.maskable, torch.ones(noisy.shape))


def answer_counts(predicted: torch.Tensor, rows: Rows) -> torch.Tensor:
    """[correct answer tokens, answer tokens, exactly right answers] of the `predicted` ids."""
    hit = (predicted == rows.tokens) | ~rows.maskable
    return torch.tensor([float((hit & rows.maskable).sum()), float(rows.maskable.sum()),
                         float(hit.all(dim=1).sum())])


def task_scores(counts: torch.Tensor, config: TrainConfig) -> dict[str, float]:
    """The task metrics of the summed `answer_counts` over all `val_task_rows`."""
    correct, answer_tokens, exact = counts
    return {"val_task_token_acc": float(correct / answer_tokens),
            "val_task_exact": float(exact) / config.val_task_rows}
