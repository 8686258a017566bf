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
- `run_token_cache`: the run's token cache (`data.token_cache`), keyed by the corpus bytes and
  the tokenizer: prepared by one process itself, by `minillada prepare` for torchrun (refused
  there, naming `prepare_command(config)`, when missing, stale or damaged).
- `split_rows`: a split's rows, packed whole in every process (`batches.packed_rows`) or on
  demand from the memory-mapped token cache (`packed_corpus.PackedCorpus`, `rows_on_demand`).
"""

from __future__ import annotations

import shlex
from pathlib import Path

import torch

from minillada.common.names import STDLIB
from minillada.data.corpus import get_tokenizer, load_tokenizer
from minillada.data.token_cache import (
    DamagedTokenCacheError,
    MissingTokenCacheError,
    TokenStream,
    documents_of,
    split_arrays,
    token_cache,
)
from minillada.modeling.context_parallel import apply_context_parallel
from minillada.modeling.distributed import Runtime, from_main, shard_model
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


def prepare_command(config: TrainConfig) -> str:
    """The `minillada prepare` command line that prepares this run's token cache."""
    corpus = [] if config.corpus == STDLIB else ["--corpus", config.corpus]
    if config.stage == "extend":  # the init's own tokenizer
        source = ["--tokenizer", str(model_folder(config.init))]
    else:  # the BPE tokenizer trained on the corpus at the model's vocabulary
        preset = get_preset(config.preset)
        source = ["--preset", config.preset]
        if config.model["vocab_size"] != preset.model["vocab_size"]:
            source += ["--vocab-size", str(config.model["vocab_size"])]
    seed = ["--split-seed", str(config.split_seed)] if config.split_seed else []
    return shlex.join(["minillada", "prepare", *corpus, *source, *seed])


def run_token_cache(tokenizer, config: TrainConfig, runtime: Runtime) -> Path:
    """The run's token cache folder, its files checked. One process prepares a missing cache
    itself; torchrun's ranks only read one that `minillada prepare` prepared (rank 0 checks it
    and tells the others its folder, or every rank refuses naming the command to run)."""
    command = prepare_command(config)
    try:
        found = (token_cache(tokenizer, config.corpus, config.split_seed,
                             build=not runtime.distributed) if runtime.is_main else None)
        problem = None
    except MissingTokenCacheError as missing:
        found, problem = None, (f"{missing}; under torchrun every rank reads one cache, prepared "
                                f"once in one process: run `{command}` first")
    except DamagedTokenCacheError as damaged:
        found, problem = None, f"{damaged}: `{command}`"
    found, problem = from_main((found, problem), runtime)
    if problem is not None:
        raise ValueError(problem)
    return Path(found)


def split_rows(cache: Path, tokenizer, config: TrainConfig, split: str) -> Rows | PackedCorpus:
    """The rows of one corpus split of the run's token cache folder: packed whole in every
    process, or on demand from its memory-mapped tokens (`rows_on_demand`)."""
    if config.rows_on_demand:
        stream = TokenStream(*split_arrays(cache / split))
        return PackedCorpus(stream, config.seq_len, config.packing, tokenizer.eod_token_id,
                            tokenizer.pad_token_id, config.restart_positions)
    return packed_rows(documents_of(cache / split), config, tokenizer)
