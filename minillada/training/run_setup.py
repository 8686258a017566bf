"""What a run starts from, built from its (prepared) config: the tokenizer, the model, the
optimizer and the rows of each corpus split. The trainer builds each once; notebook 00 builds a
model the same way.

- `run_tokenizer`: a released checkpoint's own tokenizer (roles from its config.json), an extend
  init's, or the BPE tokenizer trained on the run's corpus (pretrain).
- `build_model`: a fresh model seeded by the run's seed (pretrain), or the init's model with the
  RoPE variant set for seq_len, in float32 master weights (extend). `starting_model` places it
  on the runtime's device and FSDP2-shards it under torchrun; a released checkpoint is read one
  shard per rank (`released.sharded_load`); under context parallelism it is given shards of
  rows (`modeling.context_parallel`).
- `build_optimizer`: AdamW, weight decay on matrices only.
- `split_rows`: a split's rows, packed whole in every process (`batches.packed_rows`) or on
  demand from the memory-mapped token cache (`packed_corpus.PackedCorpus`, `rows_on_demand`).
"""

from __future__ import annotations

import torch

from minillada.data.corpus import get_tokenizer, load_tokenizer
from minillada.data.token_cache import token_cache, token_stream, tokenized_split
from minillada.modeling.context_parallel import apply_context_parallel
from minillada.modeling.distributed import Runtime, shard_model
from minillada.modeling.model import LLaDAConfig, LLaDAModelLM
from minillada.released.model_files import model_folder, read_model_config
from minillada.released.sharded_load import load_released_model
from minillada.released.token_roles import load_released_tokenizer
from minillada.training.batches import Rows, packed_rows
from minillada.training.config import TrainConfig
from minillada.training.packed_corpus import PackedCorpus
from minillada.training.presets import get_preset


def run_tokenizer(config: TrainConfig):
    """The tokenizer the run trains with (a `transformers` fast tokenizer)."""
    if get_preset(config.preset).released:  # the checkpoint's own, roles from its config.json
        return load_released_tokenizer(model_folder(config.init))[0]
    if config.stage == "extend":
        folder = model_folder(config.init)
        return load_tokenizer(folder, vocab_size=read_model_config(folder)["vocab_size"])
    return get_tokenizer(config.model["vocab_size"], corpus=config.corpus,
                         split_seed=config.split_seed)


def build_model(config: TrainConfig, tokenizer) -> LLaDAModelLM:
    """A fresh model (pretrain, seeded) or the init model with the RoPE variant for seq_len."""
    if config.stage == "extend":  # float32 master weights whatever the init's dtype
        model = LLaDAModelLM.from_pretrained(model_folder(config.init), dtype=torch.float32)
        model.config.attention_backend = config.attention_backend
        model.set_rope(config.rope, target_len=config.seq_len, params=config.rope_params)
        return model
    fields = {**config.model, "max_sequence_length": config.seq_len,
              "attention_backend": config.attention_backend}
    if len(tokenizer) > fields["vocab_size"]:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens > vocab_size {fields['vocab_size']}"
        )
    torch.manual_seed(config.seed)
    return LLaDAModelLM(LLaDAConfig(
        **fields, mask_token_id=tokenizer.mask_token_id, eos_token_id=tokenizer.eod_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    ))


def starting_model(config: TrainConfig, tokenizer, runtime: Runtime,
                   param_dtype: torch.dtype | None) -> LLaDAModelLM:
    """The model the run trains, on the runtime's device: `build_model`'s, FSDP2-sharded under
    torchrun (parameters in `param_dtype` where given); a released checkpoint's, each rank
    reading its own shard in float32; given shards of rows under context parallelism."""
    if get_preset(config.preset).released:
        model = load_released_model(model_folder(config.init), runtime, param_dtype)
        model.config.attention_backend = config.attention_backend
        model.set_rope(config.rope, target_len=config.seq_len, params=config.rope_params)
    else:
        model = build_model(config, tokenizer).to(runtime.device)
        if runtime.distributed:
            shard_model(model, runtime, param_dtype)
    model.config.activation_checkpointing = config.activation_checkpointing
    if runtime.context is not None:
        apply_context_parallel(model, runtime.context)
    return model


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (embeddings, projections), not on norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def split_rows(tokenizer, config: TrainConfig, split: str,
               runtime: Runtime) -> Rows | PackedCorpus:
    """The rows of one corpus split; rank 0 fills the token cache, then the others read it."""
    if runtime.is_main:
        token_cache(tokenizer, config.corpus, config.split_seed, split)
    runtime.barrier()
    if config.rows_on_demand:
        stream = token_stream(tokenizer, config.corpus, config.split_seed, split)
        return PackedCorpus(stream, config.seq_len, config.packing, tokenizer.eod_token_id,
                            tokenizer.pad_token_id, config.restart_positions)
    docs = tokenized_split(tokenizer, config.corpus, config.split_seed, split)
    return packed_rows(docs, config, tokenizer)
