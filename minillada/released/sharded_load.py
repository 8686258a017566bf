"""A released LLaDA checkpoint as the trainer's model: float32 master weights whatever the stored
dtype, and under FSDP2 each rank reading only its shard.

One process loads the whole model (`llada.load_llada_checkpoint` in float32). Under torchrun the
model is built on the meta device (no memory), sharded by `distributed.shard_model` (FSDP2 splits
every parameter along dim 0 into world chunks of `torch.chunk`'s sizes), materialised empty on the
rank's device, and each rank copies in the rows of its chunk, read from the safetensors files by
slice: a rank's host memory holds one parameter's shard at a time, never the model. The weights
are float32 whatever the files hold (LLaDA-8B's are bf16): AdamW updates float32 masters, and
FSDP2's mixed precision (bf16 compute, float32 reduction) casts a copy for compute.
"""

from __future__ import annotations

import os

import torch
from safetensors import safe_open

from minillada.modeling.distributed import Runtime, shard_model
from minillada.modeling.model import LLaDAModelLM
from minillada.released.llada import checkpoint_tensors, load_llada_checkpoint

MASTER_DTYPE = torch.float32


def shard_rows(size: int, rank: int, world: int) -> range:
    """The dim-0 rows FSDP2 keeps on `rank` of a parameter with `size` rows: torch.chunk's split,
    ceil(size / world) rows per rank, the last ranks' shorter or empty."""
    per_rank = -(-size // world)
    return range(min(size, rank * per_rank), min(size, (rank + 1) * per_rank))


def load_released_model(path: str | os.PathLike, runtime: Runtime,
                        param_dtype: torch.dtype | None) -> LLaDAModelLM:
    """The checkpoint at `path` in float32 on `runtime.device`; under torchrun FSDP2-sharded
    (`param_dtype`: the compute dtype of `shard_model`), each rank reading only its rows. The
    RoPE is the config's; set the run's with `set_rope` afterwards."""
    if not runtime.distributed:
        return load_llada_checkpoint(path, dtype=MASTER_DTYPE).to(runtime.device)
    config, stored_in = checkpoint_tensors(path)
    if config.tie_word_embeddings:
        raise ValueError(f"{path}: a weight-tied checkpoint loads in one process only; "
                         "sharded loading needs a separate output head (LLaDA-8B has one)")
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    shard_model(model, runtime, param_dtype)
    model.to_empty(device=runtime.device)
    for name, param in model.named_parameters():
        rows = shard_rows(param.shape[0], runtime.rank, runtime.world)
        local = param.to_local()
        if local.shape[0] != len(rows):
            raise RuntimeError(f"{name}: FSDP2 holds {local.shape[0]} rows on rank "
                               f"{runtime.rank}, torch.chunk's split says {len(rows)}")
        with safe_open(stored_in[name], framework="pt") as handle, torch.no_grad():
            local.copy_(handle.get_slice(name)[rows.start:rows.stop])
    model.set_rope(config.rope_variant, config.rope_target_len, config.rope_params)  # the
    # rotary table is a buffer that `to_empty` left uninitialised
    return model
