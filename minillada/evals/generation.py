"""How a retrieval answer is generated: LLaDA's sampler settings, checked without torch (so that
`minillada eval` refuses a bad --gen-length, --block-length or --steps before torch loads)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationSettings:
    """LLaDA sampler settings for a retrieval answer; defaults are UltraLLaDA's NIAH settings
    (generate 32 tokens, one block of 32, 16 steps, temperature 0, low-confidence remasking)."""

    gen_length: int = 32
    block_length: int = 32
    steps: int = 16
    temperature: float = 0.0
    remasking: str = "low_confidence"

    def __post_init__(self) -> None:
        for name in ("gen_length", "block_length", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length={self.gen_length} is not a multiple of "
                             f"block_length={self.block_length}")
        blocks = self.gen_length // self.block_length
        if self.steps % blocks:
            raise ValueError(f"steps={self.steps} is not divisible by the number of blocks "
                             f"{blocks} (gen_length / block_length)")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.remasking not in ("low_confidence", "random"):
            raise ValueError(f"remasking={self.remasking!r}; choose low_confidence or random")

    def fitted_to(self, answer_length: int,
                  tokens_per_step: int | None = None) -> GenerationSettings:
        """One block just long enough for the answer, rounded up to whole steps, committing
        `tokens_per_step` tokens a step: 1 decodes one token a step (steps = answer length, the
        study's primary decoder); None keeps this setting's rate gen_length / steps (UltraLLaDA's
        NIAH setting: 2)."""
        if tokens_per_step is None:
            rate, remainder = divmod(self.gen_length, self.steps)
            if remainder:
                raise ValueError(f"gen_length={self.gen_length} / steps={self.steps} is not a "
                                 "whole number of tokens per step; cannot keep the rate when "
                                 "shortening")
        elif isinstance(tokens_per_step, bool) or not isinstance(tokens_per_step, int) \
                or tokens_per_step < 1:
            raise ValueError(f"tokens_per_step must be a positive integer, got "
                             f"{tokens_per_step!r}")
        else:
            rate = tokens_per_step
        length = math.ceil(answer_length / rate) * rate
        return GenerationSettings(length, length, length // rate, self.temperature,
                                  self.remasking)
