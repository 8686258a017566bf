"""The models under comparison.

Evaluations compare `ModelAtLength`s: a label maps to a callable that, given the evaluation length,
returns a ready model. A model is any callable `model(input_ids, positions=None, doc_ids=None)
.logits`. `rope_variants` gives one set of weights under several RoPE variants: each variant is
its own `RopeSetting` object that sets its RoPE on the shared weights at every call, so two
variants are never one object, and using them in any order gives each its own RoPE.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from minillada.evals.layout import LaidOutModel
from minillada.rope.laws import UNTARGETED, validate_rope_args

Model = Callable[..., Any]
ModelAtLength = Callable[[int], Model]


def fixed_model(model: Model) -> ModelAtLength:
    """The same model at every evaluation length."""
    return lambda length: model


class RopeSetting:
    """A model (`module`, an `LLaDAModelLM`) with one RoPE variant: every call first sets that
    variant on the module (when another one is set), then runs it.

    Other attributes (`config`, `device`, `parameters`, `model`, ...) are the module's; the RoPE
    this object stands for is `rope_variant`, `rope_target_len`, `rope_params` (the module's
    config shows whichever variant ran last).
    """

    def __init__(self, module: torch.nn.Module, variant: str, target_len: int | None,
                 params: Mapping[str, Any] | None = None) -> None:
        self.module = module
        self.rope_variant, self.rope_target_len = variant, target_len
        self.rope_params = dict(params or {})

    def apply(self) -> torch.nn.Module:
        """Set this RoPE on the module (a no-op when it is already set); returns the module."""
        config = self.module.config
        current = (config.rope_variant, config.rope_target_len, dict(config.rope_params or {}))
        if current != (self.rope_variant, self.rope_target_len, self.rope_params):
            self.module.set_rope(self.rope_variant, target_len=self.rope_target_len,
                                 params=dict(self.rope_params))
        return self.module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name == "module":  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.module, name)

    def __repr__(self) -> str:
        return (f"RopeSetting({self.rope_variant!r}, target_len={self.rope_target_len}, "
                f"params={self.rope_params})")


def rope_variants(model: torch.nn.Module, variants: Sequence[str], target_len: int | None = None,
                  params: Mapping[str, Mapping[str, Any]] | None = None,
                  ) -> dict[str, ModelAtLength]:
    """Label -> the weights of `model` under a RoPE variant set for the evaluation length.

    Extending variants are set for `target_len`, or, when it is None, for the evaluation length
    itself (never below T_train), as LongLLaDA scales per length; `default` (direct extrapolation)
    and `dynamic` take no target. `params` maps a variant to its parameters. Each call returns a
    new `RopeSetting` (one shared set of weights, never two names for one object).
    """
    params = dict(params or {})
    unknown = set(params) - set(variants)
    if unknown:
        raise ValueError(f"params given for {sorted(unknown)}, not among {list(variants)}")
    config = model.config
    train_len = config.max_sequence_length
    for variant in variants:  # fail on a bad variant, target or parameter before any work
        target = None if variant in UNTARGETED else (target_len or train_len)
        validate_rope_args(variant, config.d_model // config.n_heads, config.rope_theta,
                           train_len, target, dict(params.get(variant, {})))

    def at_length(variant: str) -> ModelAtLength:
        def configured(length: int) -> RopeSetting:
            target = None
            if variant not in UNTARGETED:
                target = target_len if target_len is not None else max(length, train_len)
            return RopeSetting(model, variant, target, params.get(variant, {}))
        return configured

    return {variant: at_length(variant) for variant in variants}


def rope_columns(model: Model, label: str) -> dict[str, Any]:
    """Columns naming the model under test: its label and, when it has one, its RoPE setting
    (of the model inside a `LaidOutModel`)."""
    if isinstance(model, LaidOutModel):
        model = model.model
    if isinstance(model, RopeSetting):
        return {"model": label, "rope": model.rope_variant,
                "rope_target_len": model.rope_target_len}
    config = getattr(model, "config", None)
    return {"model": label, "rope": getattr(config, "rope_variant", label),
            "rope_target_len": getattr(config, "rope_target_len", None)}


def check_lengths(lengths: Sequence[int], minimum: int, what: str) -> list[int]:
    """`lengths` as a list, or ValueError unless every one is an integer above `minimum`."""
    bad = [n for n in lengths if not isinstance(n, int) or n <= minimum]
    if not lengths or bad:
        raise ValueError(f"lengths must be integers above {what} ({minimum}); got {list(lengths)}")
    return list(lengths)
