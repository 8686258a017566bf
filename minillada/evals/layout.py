"""Each model evaluated in the document layout it was trained with.

A post-training arm saw documents in one layout: with or without an end-of-document token after
each document (`eod` packings), attention inside each document or across the row (`adaptive`), RoPE
positions running over the row or restarting at each document. An evaluation prompt holds one or
more documents (the last one continues into the answer); `LaidOutModel` shows it to the model as
that model's training rows showed documents, so that no arm is scored on a format it never saw
(an EOD-trained model's answers were always followed by EOD). Logits come back aligned with the
tokens given, the inserted separators dropped; with `scored`, only those tokens' logits
(`diffusion.scored_logits`), the scored positions mapped through the layout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from minillada.data.packing import PackingStrategy, get_strategy
from minillada.modeling.diffusion import scored_logits


@dataclass(frozen=True)
class Layout:
    """Documents laid out as rows packed under `packing` show them (its separator, its attention
    mask: `data.packing.PackingStrategy`), positions restarting at each document or not."""

    packing: str = "direct"
    restart_positions: bool = True

    def __post_init__(self) -> None:
        get_strategy(self.packing)  # ValueError naming an unknown packing

    @property
    def strategy(self) -> PackingStrategy:
        return get_strategy(self.packing)

    @classmethod
    def of_run(cls, saved: Mapping[str, Any]) -> Layout:
        """The layout of a run's saved TrainConfig: an extend run's packing and positions; a
        pre-trained base saw its retrieval rows as single documents without a separator (as
        `direct` packing shows a row of one document)."""
        if saved.get("stage") != "extend":
            return cls()
        return cls(saved["packing"], bool(saved.get("restart_positions", True)))


@dataclass(frozen=True)
class _Logits:
    logits: torch.Tensor


class LaidOutModel:
    """`model` seen through `layout`: `documents(lengths)` gives the callable for sequences whose
    first documents have `lengths[:-1]` tokens and whose last document takes the rest."""

    def __init__(self, model: Any, layout: Layout, eod_token_id: int) -> None:
        self.model, self.layout, self.eod_token_id = model, layout, eod_token_id

    def __getattr__(self, name: str) -> Any:
        if name == "model":
            raise AttributeError(name)
        return getattr(self.model, name)

    def documents(self, lengths: Sequence[int]) -> Callable[..., Any]:
        """The model for sequences laid out as documents of `lengths` (the last one open)."""
        if not lengths or any(length < 1 for length in lengths):
            raise ValueError(f"document lengths must be positive, got {list(lengths)}")

        def run(input_ids: torch.Tensor, scored: torch.Tensor | None = None,
                **_: Any) -> _Logits:
            tokens, keep, positions, doc_ids = self.arrange(input_ids, lengths)
            inputs = dict(positions=positions,
                          doc_ids=self.layout.strategy.attention_doc_ids(doc_ids))
            if scored is None:
                return _Logits(self.model(tokens, **inputs).logits[:, keep])
            # The scored tokens where `arrange` put them; `keep` is increasing, so the logits
            # come back in `scored`'s row-major order. Separators are never scored.
            laid_out = torch.zeros(tokens.shape, dtype=torch.bool, device=tokens.device)
            laid_out[:, keep] = scored.to(tokens.device)
            return _Logits(scored_logits(self.model, tokens, laid_out, **inputs))
        run.supports_scored = True  # the model inside may not; scored_logits then falls back
        return run

    def arrange(self, input_ids: torch.Tensor, lengths: Sequence[int]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens with separators, the indices of the given tokens in them, positions,
        doc ids), each [B, L'] but the indices [L]."""
        batch, total = input_ids.shape
        sizes = [*lengths[:-1], total - sum(lengths[:-1])]
        if sizes[-1] < 1:
            raise ValueError(f"a sequence of {total} tokens cannot hold documents {list(lengths)}")
        device, parts, keep, ids, positions = input_ids.device, [], [], [], []
        start = written = 0
        separator = input_ids.new_full((batch, 1), self.eod_token_id)
        for doc, size in enumerate(sizes):
            extra = int(self.layout.strategy.separator)
            parts += [input_ids[:, start:start + size]] + ([separator] if extra else [])
            keep.append(torch.arange(written, written + size))
            ids.append(torch.full((size + extra,), doc))
            first = 0 if self.layout.restart_positions else written
            positions.append(torch.arange(first, first + size + extra))
            start, written = start + size, written + size + extra
        rows = [torch.cat(pieces).to(device)[None].expand(batch, -1) for pieces in (positions, ids)]
        return torch.cat(parts, dim=1), torch.cat(keep).to(device), *rows
