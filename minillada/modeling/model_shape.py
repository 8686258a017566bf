"""The fields of a LLaDA model and the checks that they build one, without torch.

`modeling.model.LLaDAConfig` lists the fields (its `__init__` parameters, with their types and
defaults) and runs `check_model_shape` when it is built; `minillada train` checks `--set
model.FIELD=VALUE` against the same list and the same checks before torch loads. The list is read
from model.py's source (ast) because importing that module loads torch and transformers (seconds).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minillada.common.names import ATTENTION_BACKEND_NAMES

SIZES = ("vocab_size", "d_model", "n_heads", "n_layers", "mlp_hidden_size", "max_sequence_length")
TOKEN_IDS = ("mask_token_id", "eos_token_id", "pad_token_id", "bos_token_id")


@functools.cache
def model_fields() -> dict[str, tuple[Any, Any]]:
    """LLaDAConfig's fields: `__init__` parameter -> (annotation, default), as model.py writes
    them (`**kwargs` left out)."""
    tree = ast.parse(Path(__file__).with_name("model.py").read_text())
    config = next(node for node in tree.body
                  if isinstance(node, ast.ClassDef) and node.name == "LLaDAConfig")
    init = next(node for node in config.body
                if isinstance(node, ast.FunctionDef) and node.name == "__init__")
    parameters = init.args.args[1:]  # without self
    defaults = [None] * (len(parameters) - len(init.args.defaults)) + init.args.defaults
    names = {"Any": Any}  # what the annotations name besides builtins; the source is ours
    return {parameter.arg: (eval(ast.unparse(parameter.annotation), names),
                            None if default is None else ast.literal_eval(default))
            for parameter, default in zip(parameters, defaults, strict=True)}


def check_model_shape(fields: Mapping[str, Any]) -> None:
    """ValueError naming a field that cannot build a model: sizes must be positive integers,
    rope_theta > 0, d_model must split into n_heads heads of an even size (RoPE rotates pairs),
    n_kv_heads (None: n_heads) must divide n_heads, the attention backend must exist and token
    ids must lie in the vocabulary. Fields absent from `fields` take LLaDAConfig's defaults."""
    values = {name: default for name, (_, default) in model_fields().items()} | dict(fields)
    for name in SIZES:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not values["rope_theta"] > 0:
        raise ValueError(f"rope_theta must be > 0, got {values['rope_theta']!r}")
    d_model, n_heads = values["d_model"], values["n_heads"]
    if d_model % n_heads or (d_model // n_heads) % 2:
        raise ValueError(f"d_model ({d_model}) must split into n_heads ({n_heads}) heads of an "
                         "even size (RoPE rotates pairs)")
    n_kv_heads = n_heads if values["n_kv_heads"] is None else values["n_kv_heads"]
    if not isinstance(n_kv_heads, int) or not 1 <= n_kv_heads <= n_heads:
        raise ValueError(f"n_kv_heads must be an integer in [1, n_heads = {n_heads}], "
                         f"got {n_kv_heads!r}")
    if n_heads % n_kv_heads:
        raise ValueError(f"n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
    if values["attention_backend"] not in ATTENTION_BACKEND_NAMES:
        raise ValueError(f"unknown attention_backend {values['attention_backend']!r}; "
                         f"known: {', '.join(ATTENTION_BACKEND_NAMES)}")
    vocab_size = values["vocab_size"]
    for name in TOKEN_IDS:
        token = values[name]
        if token is not None and not 0 <= token < vocab_size:
            raise ValueError(f"{name} {token} is outside the vocabulary [0, {vocab_size})")
