"""A LLaDA checkpoint in the released format at toy size, for the tests: config.json with the
official keys, `model.transformer...` weights (bf16 safetensors shards with an index when asked), a
tokenizer with LLaDA's special tokens and roles, the modeling files its `auto_map` names, and
`reference_logits`, LLaDA's forward written out from the raw tensors and config.json (rope_theta
read where LLaDA's modeling code reads it): the stand-in for the official modeling code, which
benchmarks/check_official_llada.py runs on the same checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# The fields of GSAI-ML/LLaDA-8B-Base's config.json that matter here, as that file spells them.
LLADA_8B = {
    "activation_type": "silu", "alibi": False, "architectures": ["LLaDAModelLM"],
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                 "AutoModel": "modeling_llada.LLaDAModelLM"},
    "block_type": "llama", "d_model": 4096, "embedding_size": 126464, "eos_token_id": 126081,
    "include_bias": False, "include_qkv_bias": False, "layer_norm_type": "rms",
    "mask_token_id": 126336, "max_sequence_length": 4096, "mlp_hidden_size": 12288,
    "model_type": "llada", "n_heads": 32, "n_kv_heads": 32, "n_layers": 32,
    "pad_token_id": 126081, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
    "rope_theta": 500000.0, "vocab_size": 126464, "weight_tying": False,
}



TINY = {**LLADA_8B, "d_model": 32, "n_heads": 4, "n_kv_heads": 2, "n_layers": 2,
        "mlp_hidden_size": 48, "vocab_size": 40, "embedding_size": 40, "max_sequence_length": 16,
        "rope_theta": 50.0, "mask_token_id": 39, "eos_token_id": 38, "pad_token_id": 38}


def tiny_weights(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    d, head = config["d_model"], config["d_model"] // config["n_heads"]
    kv, hidden, vocab = config["n_kv_heads"] * head, config["mlp_hidden_size"], config["vocab_size"]

    def randn(*shape):
        return torch.randn(*shape, generator=generator) / math.sqrt(shape[-1])

    weights = {"model.transformer.wte.weight": torch.randn(vocab, d, generator=generator),
               "model.transformer.ln_f.weight": 1 + 0.1 * randn(d),
               "model.transformer.ff_out.weight": randn(vocab, d)}
    for i in range(config["n_layers"]):
        block = f"model.transformer.blocks.{i}."
        weights.update({
            block + "attn_norm.weight": 1 + 0.1 * randn(d),
            block + "q_proj.weight": randn(d, d), block + "k_proj.weight": randn(kv, d),
            block + "v_proj.weight": randn(kv, d), block + "attn_out.weight": randn(d, d),
            block + "ff_norm.weight": 1 + 0.1 * randn(d),
            block + "ff_proj.weight": randn(hidden, d), block + "up_proj.weight": randn(hidden, d),
            block + "ff_out.weight": randn(d, hidden),
        })
    return weights


# The metadata torch's safetensors files carry: transformers' loader (LLaDA's code included)
# refuses a file without it.
SAFETENSORS_METADATA = {"format": "pt"}


def write_checkpoint(path, config: dict, weights: dict[str, torch.Tensor], shards: int = 1):
    """A checkpoint directory in LLaDA's released format (sharded with an index when shards > 1),
    every safetensors file with SAFETENSORS_METADATA."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if shards == 1:
        save_file(weights, path / "model.safetensors", metadata=SAFETENSORS_METADATA)
        return path
    names, weight_map = sorted(weights), {}
    for shard in range(shards):
        file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: weights[name].contiguous() for name in names[shard::shards]}
        save_file(part, path / file, metadata=SAFETENSORS_METADATA)
        weight_map.update(dict.fromkeys(part, file))
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    return path


def reference_logits(weights: dict[str, torch.Tensor], config: dict, ids: torch.Tensor,
                     base: float | None = None) -> torch.Tensor:
    """LLaDA's forward written out from the raw tensors, in float64: RMSNorm, bidirectional
    attention with half-split RoPE, SwiGLU (ff_proj is the gate), untied output head."""
    w = {name: tensor.double() for name, tensor in weights.items()}
    heads, kv_heads = config["n_heads"], config["n_kv_heads"]
    head = config["d_model"] // heads
    base = config["rope_theta"] if base is None else base
    inv_freq = base ** -(torch.arange(0, head, 2, dtype=torch.float64) / head)
    angles = torch.arange(ids.shape[1], dtype=torch.float64)[:, None] * inv_freq
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rms(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + config["rms_norm_eps"]) * weight

    def rotate(x):
        first, second = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-second, first], -1) * sin

    def split(x, n):
        return x.view(*x.shape[:2], n, head).transpose(1, 2)

    x = w["model.transformer.wte.weight"][ids]
    for i in range(config["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        h = rms(x, w[p + "attn_norm.weight"])
        q = rotate(split(h @ w[p + "q_proj.weight"].T, heads))
        k = rotate(split(h @ w[p + "k_proj.weight"].T, kv_heads))
        v = split(h @ w[p + "v_proj.weight"].T, kv_heads)
        k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
        attention = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head), dim=-1) @ v
        x = x + attention.transpose(1, 2).reshape(x.shape) @ w[p + "attn_out.weight"].T
        h = rms(x, w[p + "ff_norm.weight"])
        gated = F.silu(h @ w[p + "ff_proj.weight"].T) * (h @ w[p + "up_proj.weight"].T)
        x = x + gated @ w[p + "ff_out.weight"].T
    return rms(x, w["model.transformer.ln_f.weight"]) @ w["model.transformer.ff_out.weight"].T


# LLaDA's special tokens (LLaDA-8B: <|startoftext|> 126080, <|endoftext|> 126081, <|eot_id|>
# 126348, <|mdm_mask|> 126336), appended after the BPE vocabulary as in LLaDA's tokenizer. Its
# tokenizer files name no mask and no pad token: config.json does.
LLADA_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>", "<|eot_id|>", "<|mdm_mask|>")
MODELING_FILES = ("configuration_llada.py", "modeling_llada.py")  # what auto_map names
WORDS = ("river", "stone", "light", "paper", "garden", "window", "number", "market", "letter",
         "silver", "morning", "island", "winter", "bridge", "orange", "forest")


def corpus_texts(count: int = 80, seed: int = 0) -> list[str]:
    """Documents of 20-200 words, seeded."""
    generator = torch.Generator().manual_seed(seed)
    texts = []
    for _ in range(count):
        size = int(torch.randint(20, 200, (1,), generator=generator))
        picks = torch.randint(len(WORDS), (size,), generator=generator).tolist()
        texts.append(" ".join(WORDS[i] for i in picks) + ".")
    return texts


def write_corpus(path: Path, count: int = 80) -> Path:
    """A .jsonl corpus of `corpus_texts`."""
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in corpus_texts(count)))
    return path


def llada_tokenizer(bpe_size: int = 320) -> PreTrainedTokenizerFast:
    """Byte-level BPE of `bpe_size` entries trained on `corpus_texts`, then LLaDA's specials."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus_texts(), trainers.BpeTrainer(
        vocab_size=bpe_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|startoftext|>",
                                        eos_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(LLADA_SPECIAL_TOKENS[2:])})
    return tokenizer


def released_config(tokenizer: PreTrainedTokenizerFast, vocab_size: int = 336) -> dict:
    """TINY's sizes with LLaDA-8B's keys, its token roles at the tokenizer's ids."""
    ids = dict(zip(LLADA_SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(
        list(LLADA_SPECIAL_TOKENS)), strict=True))
    return {**TINY, "n_kv_heads": 4, "vocab_size": vocab_size, "embedding_size": vocab_size,
            "mask_token_id": ids["<|mdm_mask|>"], "eos_token_id": ids["<|endoftext|>"],
            "pad_token_id": ids["<|endoftext|>"], "torch_dtype": "bfloat16"}


def write_released_checkpoint(path: Path, shards: int = 3, seed: int = 0,
                              config_changes: dict | None = None) -> Path:
    """A released-format checkpoint folder: config.json, bf16 shards with an index, the
    tokenizer files and the modeling files of `auto_map` (placeholders: only copied)."""
    tokenizer = llada_tokenizer()
    config = {**released_config(tokenizer), **(config_changes or {})}
    weights = {name: tensor.to(torch.bfloat16)
               for name, tensor in tiny_weights(config, seed).items()}
    write_checkpoint(path, config, weights, shards)
    tokenizer.save_pretrained(path)
    for name in MODELING_FILES:
        (path / name).write_text(f"# {name}: LLaDA's modeling code would be here\n")
    return path


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint folder, as stored."""
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else ["model.safetensors"])
    return {name: tensor for file in files for name, tensor in load_file(path / file).items()}


def official_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    """The logits LLaDA's modeling code gives for a checkpoint folder: its stored tensors and
    config.json as they are (rope_theta included), no other field read."""
    return reference_logits(read_weights(path), json.loads((path / "config.json").read_text()),
                            ids)
