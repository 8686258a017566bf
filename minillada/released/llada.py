"""Bridge to real checkpoints: RoPE-scaled Hugging Face configs and LLaDA-format weights.

- `scaled_rope_config(config, variant, target_len)`: a LLaDA (or any RoPE) Hugging Face config dict
  set up for a context-extension variant, e.g. LLaDA-8B at 128K under diffusion-aware NTK.
- `load_llada_checkpoint(path)`: a directory in LLaDA's own format (config.json with LLaDA field
  names, model.safetensors or shards listed in model.safetensors.index.json with LLaDA weight
  names) loaded into `modeling.model.LLaDAModelLM`, with every name and shape checked first.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from minillada.modeling.model import LLaDAConfig, LLaDAModelLM
from minillada.released.model_files import check_model_type, read_model_config, weight_files
from minillada.rope.analysis import rope_summary, to_hf_rope_parameters
from minillada.rope.laws import ROPE_VARIANTS, compute_rope, get_variant


def base_only_variants() -> tuple[str, ...]:
    """The variants that only change rope_theta: expressible in any config, LLaDA's released
    code included (read from the registry when called: a variant added is one of them)."""
    return tuple(name for name, variant in ROPE_VARIANTS.items() if variant.base_only)


def rope_geometry(config: Mapping[str, Any]) -> dict[str, Any]:
    """Rotary dim, base and training length of a LLaDA-style or Llama-style config dict.

    LLaDA names: d_model, n_heads, max_sequence_length, rope_theta. Hugging Face names:
    hidden_size, num_attention_heads, head_dim, partial_rotary_factor, max_position_embeddings and
    rope_theta (rope_theta and partial_rotary_factor at the top level, or inside
    `rope_parameters` as transformers >= 5 and LLaDA2-style configs write them; both places
    given must agree). The rotary dim is head_dim * partial_rotary_factor.
    """
    if "d_model" in config:
        dims, heads, train_len = config["d_model"], config.get("n_heads"), config.get(
            "max_sequence_length")
        head_dim = dims // heads if heads else None
    else:
        heads = config.get("num_attention_heads")
        head_dim = config.get("head_dim") or (
            config["hidden_size"] // heads if heads and "hidden_size" in config else None)
        train_len = config.get("max_position_embeddings")
    parameters = config.get("rope_parameters") or {}
    base = _either_place(config, parameters, "rope_theta")
    missing = [name for name, value in (("head dim", head_dim), ("rope_theta", base),
                                        ("training length", train_len)) if value is None]
    if missing:
        raise ValueError(f"config lacks {', '.join(missing)}: expected LLaDA fields (d_model, "
                         "n_heads, max_sequence_length, rope_theta) or Hugging Face fields "
                         "(hidden_size, num_attention_heads, max_position_embeddings, rope_theta)")
    factor = _either_place(config, parameters, "partial_rotary_factor")
    factor = 1.0 if factor is None else factor
    rotary_dim = head_dim * factor
    if not (isinstance(factor, (int, float)) and 0 < factor <= 1 and rotary_dim == int(rotary_dim)
            and int(rotary_dim) % 2 == 0):
        raise ValueError(f"partial_rotary_factor {factor!r} must lie in (0, 1] and make the "
                         f"rotary dim head_dim ({head_dim}) x factor an even integer")
    return {"head_dim": int(rotary_dim), "base": float(base), "train_len": int(train_len)}


def _either_place(config: Mapping[str, Any], parameters: Mapping[str, Any], name: str) -> Any:
    """`name` from the config's top level or its `rope_parameters` (None in neither);
    ValueError naming both values when the two places disagree."""
    top, inside = config.get(name), parameters.get(name)
    if top is not None and inside is not None and top != inside:
        raise ValueError(f"config has {name} {top!r} at the top level and {inside!r} in "
                         "rope_parameters; keep one")
    return top if top is not None else inside


def _current_scaling(config: Mapping[str, Any]) -> str | None:
    """The name of a RoPE scaling already present in the config, or None."""
    for key in ("rope_scaling", "rope_parameters"):
        parameters = config.get(key) or {}
        kind = parameters.get("rope_type", parameters.get("type", "default"))
        if kind != "default":
            return f"{key}.rope_type={kind!r}"
    if config.get("rope_variant", "default") != "default":
        return f"rope_variant={config['rope_variant']!r}"
    return None


def scaled_rope_config(config: Mapping[str, Any], variant: str, target_len: int,
                       params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `config` whose RoPE serves `target_len` under `variant` (see `minillada.rope`).

    Base-only variants (default, ntk, ntk_critical, diffusion_ntk) set `rope_theta` (and
    `rope_parameters.rope_theta` where present) to the new base: LLaDA's released modeling code
    reads nothing else, so this is how LongLLaDA and UltraLLaDA run LLaDA-8B. Other variants
    (linear, yarn, ...) need per-pair frequencies: a Hugging Face config gets transformers'
    `rope_parameters` (or legacy `rope_scaling`); a LLaDA config gets minillada's `rope_variant`,
    `rope_target_len` and `rope_params`, which only `load_llada_checkpoint` understands.
    The training length and the original base must be the config's own: a config that is already
    scaled is refused, so factors are never applied twice.
    """
    params = dict(params or {})
    geometry = rope_geometry(config)
    existing = _current_scaling(config)
    if existing is not None:
        raise ValueError(f"config already has a RoPE scaling ({existing}); pass the original "
                         "config so the variant is computed from the pre-training base")
    compute_rope(variant, geometry["head_dim"], geometry["base"], geometry["train_len"],
                 target_len, params)  # validates variant, lengths and parameters
    scaled = copy.deepcopy(dict(config))
    if get_variant(variant).base_only:
        summary = rope_summary(variant, **geometry, target_len=target_len, params=params)
        new_base = summary["new_base"] if summary["new_base"] is not None else geometry["base"]
        if isinstance(scaled.get("rope_parameters"), dict):
            scaled["rope_parameters"]["rope_theta"] = new_base
        if "rope_theta" in scaled or "rope_parameters" not in scaled:
            scaled["rope_theta"] = new_base
    elif "d_model" in scaled:
        scaled.update(rope_variant=variant, rope_target_len=target_len, rope_params=params)
    else:
        hf = to_hf_rope_parameters(variant, geometry["base"], geometry["train_len"], target_len,
                                   params, head_dim=geometry["head_dim"])
        if "rope_parameters" in scaled:  # the rotary dim stays where the config keeps it
            kept = {k: v for k, v in scaled["rope_parameters"].items()
                    if k == "partial_rotary_factor"}
            scaled["rope_parameters"] = {**hf, **kept}
        else:
            hf.pop("rope_theta")
            scaled["rope_scaling"] = hf
    return scaled


# ----------------------------------------------------------------------------------------------
# Loading LLaDA-format checkpoints
# ----------------------------------------------------------------------------------------------

LLADA_REQUIRED_FIELDS = ("d_model", "n_heads", "n_layers", "vocab_size", "max_sequence_length",
                         "rope_theta")
# Options of LLaDA's (OLMo-derived) configuration that the minillada model does not implement:
# field -> the only value it may have (a missing field is taken to have it).
LLADA_FIXED_FIELDS = {
    "block_type": "llama", "activation_type": "silu", "layer_norm_type": "rms", "rope": True,
    "alibi": False, "include_bias": False, "bias_for_layer_norm": False,
    "layer_norm_with_affine": True, "attention_layer_norm": False, "input_emb_norm": False,
    "scale_logits": False, "block_group_size": 1,
}


def _n_kv_heads(fields: Mapping[str, Any]) -> int:
    """LLaDA's effective number of key/value heads: `n_kv_heads` (null: `n_heads`), or 1 with
    `multi_query_attention: true`, n_heads with `false`; a disagreeing pair is refused."""
    n_heads, n_kv_heads = fields["n_heads"], fields.get("n_kv_heads")
    multi_query = fields.get("multi_query_attention")
    if multi_query is None:
        return n_heads if n_kv_heads is None else n_kv_heads
    if not isinstance(multi_query, bool):
        raise ValueError(f"multi_query_attention must be true, false or null, got {multi_query!r}")
    implied = 1 if multi_query else n_heads
    if n_kv_heads is not None and n_kv_heads != implied:
        raise ValueError(f"multi_query_attention={multi_query} means n_kv_heads = {implied}, but "
                         f"the config has n_kv_heads = {n_kv_heads}; set only one of the two")
    return implied


def _mlp_hidden_size(fields: Mapping[str, Any]) -> int:
    """`mlp_hidden_size`, or LLaDA's fallback `mlp_ratio * d_model` when it is null or absent."""
    if fields.get("mlp_hidden_size") is not None:
        return fields["mlp_hidden_size"]
    ratio = fields.get("mlp_ratio")
    if ratio is None:
        raise ValueError("config has no mlp_hidden_size (null or absent) and no mlp_ratio; LLaDA "
                         "then uses mlp_ratio * d_model: give mlp_hidden_size or mlp_ratio")
    d_model = fields["d_model"]
    real = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (ratio, d_model))
    hidden = ratio * d_model if real else None
    if hidden is None or not float(hidden).is_integer() or hidden < 1:
        raise ValueError(f"mlp_hidden_size is null, so it is mlp_ratio * d_model = {ratio!r} * "
                         f"{d_model!r}, which must be a positive integer")
    return int(hidden)


def llada_config(fields: Mapping[str, Any]) -> LLaDAConfig:
    """A `LLaDAConfig` from a LLaDA config.json dict (or one minillada wrote).

    Refuses another model_type and architecture options minillada does not implement, naming
    them. The embedding table
    size is `embedding_size` when the checkpoint pads it beyond `vocab_size`, as OLMo does.
    Null fields mean what LLaDA's configuration code makes of them: `bias_for_layer_norm: null`
    takes `include_bias` (false), `mlp_hidden_size: null` is `mlp_ratio * d_model`, and
    `n_kv_heads` follows `multi_query_attention` (true: 1 key/value head, i.e. multi-query
    attention, which the model runs as grouped-query attention with one group).
    """
    check_model_type(fields)
    missing = [name for name in LLADA_REQUIRED_FIELDS if name not in fields]
    if missing:
        raise ValueError(f"config lacks LLaDA field(s) {missing}; required: "
                         f"{list(LLADA_REQUIRED_FIELDS)}")
    fields = dict(fields)
    if fields.get("bias_for_layer_norm") is None:  # LLaDA: null inherits include_bias
        fields["bias_for_layer_norm"] = fields.get("include_bias", False)
    fields["mlp_hidden_size"] = _mlp_hidden_size(fields)
    fields["n_kv_heads"] = _n_kv_heads(fields)
    unsupported = {name: fields[name] for name, allowed in LLADA_FIXED_FIELDS.items()
                   if fields.get(name, allowed) != allowed}
    if unsupported:
        allowed = {name: LLADA_FIXED_FIELDS[name] for name in unsupported}
        raise ValueError(f"unsupported LLaDA option(s) {unsupported}; minillada implements "
                         f"only {allowed}")
    accepted = set(inspect.signature(LLaDAConfig.__init__).parameters) - {"self", "kwargs"}
    kwargs = {name: value for name, value in fields.items() if name in accepted}
    kwargs["vocab_size"] = max(fields["vocab_size"], fields.get("embedding_size") or 0)
    kwargs["tie_word_embeddings"] = _weight_tying(fields)
    return LLaDAConfig(**kwargs)


def _weight_tying(fields: Mapping[str, Any]) -> bool:
    """LLaDA's `weight_tying` (the output head is the input embedding's transpose), or the
    `tie_word_embeddings` a minillada config.json holds; both given must agree."""
    values = {name: fields[name] for name in ("weight_tying", "tie_word_embeddings")
              if fields.get(name) is not None}
    for name, value in values.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
    if len(set(values.values())) > 1:
        raise ValueError(f"weight_tying={values['weight_tying']} and tie_word_embeddings="
                         f"{values['tie_word_embeddings']} disagree; give one of them")
    return any(values.values())


def _check_weights(found: Mapping[str, tuple[int, ...]],
                   expected: Mapping[str, tuple[int, ...]], path: Path) -> None:
    """Raise ValueError naming missing, unexpected and mis-shaped weights."""
    problems = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(f"{name}: {found[name]} (expected {expected[name]})"
                    for name in set(found) & set(expected) if found[name] != expected[name])
    for title, names in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if names:
            shown = ", ".join(names[:6]) + (f" ... ({len(names)} in all)" if len(names) > 6 else "")
            problems.append(f"{title}: {shown}")
    if problems:
        raise ValueError(f"weights in {path} do not fit the LLaDA model of its config.json; "
                         + "; ".join(problems))


def checkpoint_tensors(path: str | Path) -> tuple[LLaDAConfig, dict[str, Path]]:
    """The model config of a LLaDA-format checkpoint directory and the file holding each stored
    tensor, with every name and shape checked against the config (no tensor is read)."""
    path = Path(path)
    fields = read_model_config(path)
    files = weight_files(path)
    config = llada_config(fields)
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if config.tie_word_embeddings:  # the head is the embedding: stored once, as wte
        expected.pop("model.transformer.ff_out.weight")
    found: dict[str, tuple[int, ...]] = {}
    stored_in: dict[str, Path] = {}
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is no dict)
                found[name] = tuple(handle.get_slice(name).get_shape())
                stored_in[name] = file
    _check_weights(found, expected, path)
    return config, stored_in


def load_llada_checkpoint(path: str | Path, *, rope_variant: str | None = None,
                          rope_target_len: int | None = None,
                          rope_params: Mapping[str, Any] | None = None,
                          dtype: torch.dtype = torch.float32) -> LLaDAModelLM:
    """Load a LLaDA-format checkpoint directory into `LLaDAModelLM` (eval mode, on CPU).

    Names and shapes of every tensor are checked against the config before any tensor is read;
    `rope_variant` (with `rope_target_len`, `rope_params`) overrides the RoPE at load time.
    """
    config, stored_in = checkpoint_tensors(path)
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    state = {}
    for file in sorted(set(stored_in.values())):
        with safe_open(file, framework="pt") as handle:
            state.update({name: handle.get_tensor(name).to(dtype) for name in handle.keys()})  # noqa: SIM118
    model.load_state_dict(state, assign=True, strict=not config.tie_word_embeddings)
    if config.tie_word_embeddings:
        model.get_output_embeddings().weight = model.get_input_embeddings().weight
    variant = rope_variant or config.rope_variant
    if rope_variant is None:
        rope_target_len, rope_params = config.rope_target_len, config.rope_params
    model.set_rope(variant, target_len=rope_target_len, params=dict(rope_params or {}))
    return model.eval()
