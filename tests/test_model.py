"""The mask predictor: LLaDA names, save/load, RoPE overrides, bidirectionality, GQA, bad input."""

from __future__ import annotations

import pytest
import torch

from minillada.modeling.model import LLaDAConfig, LLaDAModelLM
from minillada.rope.laws import compute_rope

TINY = dict(vocab_size=40, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=48,
            max_sequence_length=16, rope_theta=30.0, mask_token_id=39)


def tiny_model(**overrides) -> LLaDAModelLM:
    torch.manual_seed(0)
    return LLaDAModelLM(LLaDAConfig(**{**TINY, **overrides})).eval()


def random_ids(shape=(2, 24), seed=1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY["vocab_size"], shape, generator=generator)


def config_fields(model: LLaDAModelLM) -> dict:
    """The saved configuration, less the path it was loaded from."""
    return {k: v for k, v in model.config.to_dict().items() if k != "_name_or_path"}


def test_weight_names_and_shapes_are_llada_s():
    model = tiny_model()
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    expected = {"model.transformer.wte.weight": (40, 32), "model.transformer.ln_f.weight": (32,),
                "model.transformer.ff_out.weight": (40, 32)}
    for i in range(2):
        block = f"model.transformer.blocks.{i}."
        expected |= {block + "attn_norm.weight": (32,), block + "q_proj.weight": (32, 32),
                     block + "k_proj.weight": (16, 32), block + "v_proj.weight": (16, 32),
                     block + "attn_out.weight": (32, 32), block + "ff_norm.weight": (32,),
                     block + "ff_proj.weight": (48, 32), block + "up_proj.weight": (48, 32),
                     block + "ff_out.weight": (32, 48)}
    assert shapes == expected
    head, embedding = model.model.transformer.ff_out.weight, model.model.transformer.wte.weight
    assert head.data_ptr() != embedding.data_ptr()  # untied


def test_qkv_bias_option_adds_exactly_three_biases_per_block():
    names = set(tiny_model(include_qkv_bias=True).state_dict()) - set(tiny_model().state_dict())
    assert names == {f"model.transformer.blocks.{i}.{p}_proj.bias" for i in range(2) for p in "qkv"}


def test_save_load_round_trip_gives_equal_logits(tmp_path):
    model, ids = tiny_model(), random_ids()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = LLaDAModelLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert config_fields(loaded) == config_fields(model)


def test_rope_override_at_load_changes_rope_and_nothing_else(tmp_path):
    model, ids = tiny_model(), random_ids()
    model.save_pretrained(tmp_path)
    loaded = LLaDAModelLM.from_pretrained(
        tmp_path, rope_variant="diffusion_ntk", rope_target_len=64
    )
    expected, _ = compute_rope("diffusion_ntk", 8, 30.0, 16, 64)
    torch.testing.assert_close(loaded.model.rotary.inv_freq, expected, rtol=0, atol=0)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    before = config_fields(model)
    changed = {k for k, v in config_fields(loaded).items() if before[k] != v}
    assert changed == {"rope_variant", "rope_target_len"}
    with torch.no_grad():
        assert not torch.allclose(loaded(ids).logits, model(ids).logits)
        model.set_rope("diffusion_ntk", target_len=64)  # the same swap in place
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_set_rope_is_saved_with_the_model(tmp_path):
    model = tiny_model()
    model.set_rope("yarn", target_len=64, params={"beta_fast": 16.0})
    model.save_pretrained(tmp_path)
    loaded = LLaDAModelLM.from_pretrained(tmp_path)
    assert (loaded.config.rope_variant, loaded.config.rope_target_len) == ("yarn", 64)
    assert loaded.model.rotary.params == {"beta_fast": 16.0}
    with pytest.raises(ValueError, match="unknown RoPE variant 'ntk2'"):
        model.set_rope("ntk2")
    assert model.config.rope_variant == "yarn"  # a refused swap leaves the model as it was


def test_full_attention_is_permutation_equivariant_with_positions_permuted():
    model, ids = tiny_model(init_std=0.3), random_ids((1, 24))  # sharp attention, visible RoPE
    order = torch.randperm(24, generator=torch.Generator().manual_seed(3))
    positions = torch.arange(24)[None]
    with torch.no_grad():
        logits = model(ids).logits
        permuted = model(ids[:, order], positions=positions[:, order]).logits
        torch.testing.assert_close(permuted, logits[:, order], rtol=1e-5, atol=1e-5)
        # Without permuting the positions the result changes: the model does use positions.
        assert (model(ids[:, order]).logits - logits[:, order]).abs().max() > 0.1


def test_attention_is_bidirectional_a_late_token_changes_early_logits():
    model, ids = tiny_model(), random_ids((1, 24))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % TINY["vocab_size"]
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits[0, 0], model(changed).logits[0, 0])


def test_gqa_shapes_and_backends_agree():
    ids = random_ids((2, 20))
    doc_ids = torch.tensor([[0] * 7 + [1] * 13, [2] * 15 + [-1] * 5])
    outputs = []
    for backend in ("per_document", "dense"):
        model = tiny_model(attention_backend=backend)
        block = model.model.transformer.blocks[0]
        assert (block.k_proj.out_features, block.q_proj.out_features) == (16, 32)
        with torch.no_grad():
            outputs.append(model(ids, doc_ids=doc_ids).logits)
    assert outputs[0].shape == (2, 20, 40)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


def test_bf16_autocast_runs_and_stays_close_to_fp32():
    model, ids = tiny_model(), random_ids()
    with torch.no_grad():
        reference = model(ids).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(ids, doc_ids=torch.zeros_like(ids)).logits
            cos, sin = model.model.rotary(torch.arange(24))
    assert cos.dtype == sin.dtype == torch.float32  # RoPE angles stay in fp32
    assert logits.dtype == torch.bfloat16
    assert (logits.float() - reference).abs().max() < 0.05 * reference.abs().max()


def test_bad_input_is_named():
    model = tiny_model()
    ids = random_ids((1, 8))
    with pytest.raises(ValueError, match="token id 40 is outside the vocabulary"):
        model(torch.tensor([[1, 40, 2]]))
    with pytest.raises(ValueError, match="token id -3 is outside"):
        model(torch.tensor([[-3, 1]]))
    with pytest.raises(ValueError, match=r"input_ids must be an integer tensor \[B, L\]"):
        model(ids[0])
    with pytest.raises(ValueError, match=r"positions shape \(1, 7\) must equal"):
        model(ids, positions=torch.arange(7)[None])
    with pytest.raises(ValueError, match=r"doc_ids shape \(2, 8\) must equal"):
        model(ids, doc_ids=torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="not made of contiguous runs"):
        model(ids, doc_ids=torch.tensor([[0, 0, 1, 1, 0, 0, 2, 2]]))


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(d_model=30), "d_model .30. must split into n_heads"),
    (dict(n_kv_heads=3), r"n_heads \(4\) must be a multiple of n_kv_heads \(3\)"),
    (dict(attention_backend="magic"), "unknown attention_backend 'magic'; known: per_document"),
    (dict(mask_token_id=40), r"mask_token_id 40 is outside the vocabulary \[0, 40\)"),
])
def test_bad_config_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        LLaDAConfig(**{**TINY, **overrides})


def test_activation_checkpointing_gives_the_same_gradients():
    ids = random_ids()
    doc_ids = torch.tensor([[0] * 10 + [1] * 14, [2] * 7 + [3] * 7 + [-1] * 10])
    grads, calls = [], []
    for checkpointing in (False, True):
        model = tiny_model(activation_checkpointing=checkpointing)
        model.train()
        calls.append(0)
        block = model.model.transformer.blocks[0]
        forward = block.forward

        def counted(*args, forward=forward):
            calls[-1] += 1
            return forward(*args)

        block.forward = counted  # forward hooks do not fire again when a checkpoint recomputes
        model(ids, doc_ids=doc_ids).logits.square().mean().backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    assert calls == [1, 2]  # checkpointed: the block runs again in backward
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        assert (grad - grads[1][name]).abs().max() <= 1e-6, name
    assert tiny_model(activation_checkpointing=True).config.activation_checkpointing is True
