"""LLaDA-8B bridge: RoPE-scaled configs; LLaDA-format checkpoints vs a hand-written forward."""

from __future__ import annotations

import json

import pytest
import torch
from llada_checkpoint import LLADA_8B, TINY, reference_logits, tiny_weights, write_checkpoint

from minillada.released.llada import load_llada_checkpoint, rope_geometry, scaled_rope_config

# --------------------------------------------------------------------------------- RoPE configs


@pytest.mark.parametrize(("variant", "lambdas"), [
    # LongLLaDA's and UltraLLaDA's scales for LLaDA-8B (docs/science.md, RoPE section).
    ("ntk_critical", {8192: 3.40, 16384: 13.60, 24576: 30.60, 32768: 54.40}),
    ("diffusion_ntk", {8192: 3.53, 16384: 12.54, 32768: 44.54, 65536: 158.2, 131072: 561.9}),
])
def test_llada_8b_rope_theta_for_each_target(variant, lambdas):
    for target, scale in lambdas.items():
        scaled = scaled_rope_config(LLADA_8B, variant, target)
        assert scaled["rope_theta"] / 500000.0 == pytest.approx(scale, rel=2e-3)
        assert scaled["max_sequence_length"] == 4096  # T_train stays the pre-training length
    assert LLADA_8B["rope_theta"] == 500000.0  # the input is not modified


def test_per_pair_variants_in_llada_and_hugging_face_configs():
    llada = scaled_rope_config(LLADA_8B, "yarn", 32768, {"beta_fast": 16.0})
    assert llada["rope_theta"] == 500000.0
    assert (llada["rope_variant"], llada["rope_target_len"]) == ("yarn", 32768)
    assert llada["rope_params"] == {"beta_fast": 16.0}
    llama = {"hidden_size": 4096, "num_attention_heads": 32, "max_position_embeddings": 8192,
             "rope_theta": 500000.0}
    scaled = scaled_rope_config(llama, "linear", 32768)
    assert scaled["rope_scaling"] == {"rope_type": "linear", "factor": 4.0,
                                      "original_max_position_embeddings": 8192}
    modern = {"hidden_size": 2048, "num_attention_heads": 16, "head_dim": 128,
              "max_position_embeddings": 4096,
              "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}
    scaled = scaled_rope_config(modern, "diffusion_ntk", 32768)
    assert "rope_theta" not in scaled
    assert scaled["rope_parameters"]["rope_theta"] == pytest.approx(500000.0 * 44.54, rel=2e-3)
    assert rope_geometry(modern) == {"head_dim": 128, "base": 500000.0, "train_len": 4096}


def test_rope_config_bad_input():
    with pytest.raises(ValueError, match="already has a RoPE scaling"):
        scaled_rope_config(scaled_rope_config(LLADA_8B, "yarn", 8192), "ntk", 8192)
    with pytest.raises(ValueError, match="lacks rope_theta"):
        scaled_rope_config({"d_model": 64, "n_heads": 2, "max_sequence_length": 32}, "ntk", 64)
    with pytest.raises(ValueError, match="unknown RoPE variant"):
        scaled_rope_config(LLADA_8B, "ntk-by-parts", 8192)
    with pytest.raises(ValueError, match="target_len must be >= train_len"):
        scaled_rope_config(LLADA_8B, "diffusion_ntk", 2048)


# ----------------------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("shards", [1, 3])
def test_loaded_checkpoint_matches_hand_written_forward(tmp_path, shards):
    weights = tiny_weights(TINY)
    path = write_checkpoint(tmp_path / "llada", TINY, weights, shards)
    model = load_llada_checkpoint(path)
    ids = torch.randint(0, 40, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits
    torch.testing.assert_close(logits.double(), reference_logits(weights, TINY, ids),
                               atol=1e-4, rtol=1e-4)


def test_a_weight_tied_checkpoint_uses_its_embedding_as_the_head(tmp_path):
    weights = tiny_weights(TINY)
    head = weights.pop("model.transformer.ff_out.weight")  # LLaDA stores a tied head once
    path = write_checkpoint(tmp_path / "tied", TINY | {"weight_tying": True}, weights)
    model = load_llada_checkpoint(path)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    ids = torch.randint(0, 40, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(ids).logits
    tied = weights | {"model.transformer.ff_out.weight": weights["model.transformer.wte.weight"]}
    torch.testing.assert_close(logits.double(), reference_logits(tied, TINY, ids),
                               atol=1e-4, rtol=1e-4)
    untied = write_checkpoint(tmp_path / "untied", TINY | {"weight_tying": True},
                              weights | {"model.transformer.ff_out.weight": head})
    with pytest.raises(ValueError, match=r"unexpected: model\.transformer\.ff_out\.weight"):
        load_llada_checkpoint(untied)  # a tied config with a separate head is refused


def test_rope_override_at_load_time(tmp_path):
    weights = tiny_weights(TINY)
    path = write_checkpoint(tmp_path / "llada", TINY, weights)
    model = load_llada_checkpoint(path, rope_variant="diffusion_ntk", rope_target_len=64)
    new_base = scaled_rope_config(TINY, "diffusion_ntk", 64)["rope_theta"]
    ids = torch.randint(0, 40, (1, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(ids).logits
    torch.testing.assert_close(logits.double(), reference_logits(weights, TINY, ids, new_base),
                               atol=1e-4, rtol=1e-4)


def test_checkpoint_bad_input_is_named(tmp_path):
    weights = tiny_weights(TINY)
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_llada_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        load_llada_checkpoint(tmp_path)

    renamed = dict(weights)
    renamed["model.transformer.blocks.0.gate_proj.weight"] = renamed.pop(
        "model.transformer.blocks.0.ff_proj.weight")
    path = write_checkpoint(tmp_path / "renamed", TINY, renamed)
    with pytest.raises(ValueError, match=r"missing: model\.transformer\.blocks\.0\.ff_proj\.weight"
                       r".*unexpected: model\.transformer\.blocks\.0\.gate_proj\.weight"):
        load_llada_checkpoint(path)

    reshaped = dict(weights, **{"model.transformer.ln_f.weight": torch.ones(31)})
    path = write_checkpoint(tmp_path / "reshaped", TINY, reshaped)
    with pytest.raises(ValueError, match=r"ln_f\.weight: \(31,\) \(expected \(32,\)\)"):
        load_llada_checkpoint(path)

    path = write_checkpoint(tmp_path / "sharded", TINY, weights, shards=2)
    shard = next(path.glob("model-00002-*"))
    shard.write_bytes(shard.read_bytes()[:-4])  # cut short: its header names more bytes
    with pytest.raises(ValueError, match=f"{shard} is not a readable safetensors file"):
        load_llada_checkpoint(path)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="missing from"):
        load_llada_checkpoint(path)

    path = write_checkpoint(tmp_path / "alibi", {**TINY, "alibi": True}, weights)
    with pytest.raises(ValueError, match=r"unsupported LLaDA option.*alibi"):
        load_llada_checkpoint(path)
