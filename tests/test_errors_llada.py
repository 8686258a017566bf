"""LLaDA config.json fields that are null or multi-query: read as LLaDA's own code reads them."""

from __future__ import annotations

import pytest
import torch

from minillada.modeling.model import LLaDAModelLM
from minillada.released.llada import llada_config

# A small config in LLaDA's spelling (the fields of GSAI-ML/LLaDA-8B-Base's config.json that
# minillada reads, at toy sizes).
BASE = {
    "activation_type": "silu", "alibi": False, "block_type": "llama", "d_model": 32,
    "include_bias": False, "include_qkv_bias": False, "layer_norm_type": "rms",
    "max_sequence_length": 16, "mlp_hidden_size": 48, "mlp_ratio": 4, "model_type": "llada",
    "n_heads": 4, "n_kv_heads": 4, "n_layers": 1, "rope": True, "rope_theta": 50.0,
    "vocab_size": 40,
    "weight_tying": False, "multi_query_attention": None, "bias_for_layer_norm": False,
}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"bias_for_layer_norm": None}, "mlp_hidden_size", 48),  # null: include_bias (false)
        ({"mlp_hidden_size": None}, "mlp_hidden_size", 4 * 32),  # null: mlp_ratio * d_model
        ({"mlp_hidden_size": None, "mlp_ratio": 3}, "mlp_hidden_size", 96),
        ({"mlp_hidden_size": None, "mlp_ratio": 2.5}, "mlp_hidden_size", 80),
        ({"multi_query_attention": True, "n_kv_heads": None}, "n_kv_heads", 1),
        ({"multi_query_attention": True, "n_kv_heads": 1}, "n_kv_heads", 1),
        ({"multi_query_attention": False, "n_kv_heads": None}, "n_kv_heads", 4),
        ({"multi_query_attention": False, "n_kv_heads": 4}, "n_kv_heads", 4),
        ({"multi_query_attention": None, "n_kv_heads": 2}, "n_kv_heads", 2),
        ({"multi_query_attention": None, "n_kv_heads": None}, "n_kv_heads", 4),
    ],
)
def test_null_and_multi_query_fields_follow_llada(changes, field, value):
    fields = BASE | changes
    config = llada_config(fields)
    assert getattr(config, field) == value
    assert fields == BASE | changes  # the input dict is not modified


def test_an_absent_mlp_hidden_size_is_null():
    fields = {k: v for k, v in BASE.items() if k != "mlp_hidden_size"}
    assert llada_config(fields).mlp_hidden_size == 128


def test_multi_query_attention_builds_one_key_value_head():
    config = llada_config(BASE | {"multi_query_attention": True, "n_kv_heads": None})
    model = LLaDAModelLM(config).eval()
    block = model.model.transformer.blocks[0]
    head_dim = 32 // 4
    assert block.k_proj.weight.shape == (head_dim, 32) == block.v_proj.weight.shape
    assert model(torch.tensor([[1, 2, 3, 4]])).logits.shape == (1, 4, 40)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"multi_query_attention": True, "n_kv_heads": 4},
            r"multi_query_attention=True means n_kv_heads = 1, but the config has "
            r"n_kv_heads = 4; set only one of the two",
        ),
        (
            {"multi_query_attention": False, "n_kv_heads": 2},
            r"multi_query_attention=False means n_kv_heads = 4, but the config has n_kv_heads = 2",
        ),
        (
            {"multi_query_attention": "yes"},
            r"multi_query_attention must be true, false or null, got 'yes'",
        ),
        (
            {"mlp_hidden_size": None, "mlp_ratio": None},
            r"no mlp_hidden_size \(null or absent\) and no mlp_ratio",
        ),
        (
            {"mlp_hidden_size": None, "mlp_ratio": 0},
            r"mlp_ratio \* d_model = 0 \* 32, which must be a positive integer",
        ),
        (
            {"mlp_hidden_size": None, "mlp_ratio": 0.01},
            r"mlp_ratio \* d_model = 0\.01 \* 32, which must be a positive integer",
        ),
        (
            {"bias_for_layer_norm": True},
            r"unsupported LLaDA option\(s\) \{'bias_for_layer_norm': True\}.*"
            r"\{'bias_for_layer_norm': False\}",
        ),
        (
            {"bias_for_layer_norm": None, "include_bias": True},
            r"unsupported LLaDA option\(s\) \{'include_bias': True, 'bias_for_layer_norm': True\}",
        ),
        (
            {"weight_tying": True, "tie_word_embeddings": False},
            r"weight_tying=True and tie_word_embeddings=False disagree; give one of them",
        ),
        (
            {"weight_tying": "no"},
            r"weight_tying must be true or false, got 'no'",
        ),
        (
            {"n_kv_heads": 0},
            r"n_kv_heads must be an integer in \[1, n_heads = 4\], got 0",
        ),
        (
            {"n_kv_heads": 8},
            r"n_kv_heads must be an integer in \[1, n_heads = 4\], got 8",
        ),
    ],
)
def test_bad_llada_fields_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        llada_config(BASE | changes)
