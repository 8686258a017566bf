"""A post-trained released checkpoint written back in LLaDA's released format, faithfully.

- config.json: the init's own fields, with `rope_theta` the base the run trained with (the
  base-only variants: default, ntk, ntk_critical, diffusion_ntk) where LLaDA's modeling code reads
  it, and `max_sequence_length` the run's row length (LLaDA's code reads it only to size its
  rotary cache; minillada reads it as the training length a later extension starts from);
  `minillada_post_training` records the variant and the original values. A variant with per-pair
  frequencies (yarn, linear, ...) has no field in LLaDA's code and is refused.
- weights: bf16 safetensors shards of at most `max_shard_bytes` and model.safetensors.index.json,
  LLaDA's tensor names; gathered one tensor at a time (a collective under FSDP2), written by rank 0.
- the init's tokenizer files, generation config and the modeling files its `auto_map` names,
  copied, so that `AutoModel.from_pretrained(folder, trust_remote_code=True)` loads it as it
  loads LLaDA-8B.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor

from minillada.common.atomic import atomic_folder
from minillada.modeling.distributed import Runtime
from minillada.modeling.model import LLaDAModelLM
from minillada.released.llada import base_only_variants, scaled_rope_config
from minillada.released.model_files import read_model_config

EXPORT_DTYPE = torch.bfloat16
DEFAULT_SHARD_BYTES = 5 * 10**9  # LLaDA-8B: 4 shards of bf16
# Files beside the weights that a loader of the released format reads, copied when present.
COMPANION_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                   "chat_template.jinja", "generation_config.json")


def modeling_files(fields: Mapping[str, Any], folder: Path) -> list[Path]:
    """The Python files `auto_map` names ("modeling_llada.LLaDAModelLM" -> modeling_llada.py);
    FileNotFoundError naming those missing from `folder`."""
    modules = {reference.split(".")[0] for reference in (fields.get("auto_map") or {}).values()}
    files = [folder / f"{module}.py" for module in sorted(modules)]
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise FileNotFoundError(f"config.json's auto_map names {missing}, missing from "
                                f"{str(folder)!r}: the released format needs them beside the "
                                "weights")
    return files


def exported_config(fields: Mapping[str, Any], model: LLaDAModelLM) -> dict[str, Any]:
    """The init's config.json `fields` with the RoPE the model trained with (see module doc)."""
    config = model.config
    variant, target = config.rope_variant, config.rope_target_len
    if variant not in base_only_variants():
        raise ValueError(f"rope variant {variant!r} sets per-pair frequencies, which LLaDA's "
                         f"modeling code cannot read; the released format takes "
                         f"{', '.join(base_only_variants())} (one rope_theta)")
    exported = (dict(fields) if variant == "default"
                else scaled_rope_config(fields, variant, target, config.rope_params))
    exported["minillada_post_training"] = {
        "rope_variant": variant, "rope_target_len": target, "rope_params": config.rope_params,
        "original_rope_theta": fields["rope_theta"],
        "original_max_sequence_length": fields["max_sequence_length"]}
    exported["max_sequence_length"] = target or fields["max_sequence_length"]
    return exported


def shard_plan(sizes: Mapping[str, int], max_shard_bytes: int) -> dict[str, str]:
    """Tensor name -> shard file: names in order, a new shard whenever the next tensor would
    take the current one past `max_shard_bytes` (a larger tensor gets a shard of its own)."""
    groups: list[list[str]] = [[]]
    filled = 0
    for name, size in sizes.items():
        if groups[-1] and filled + size > max_shard_bytes:
            groups.append([])
            filled = 0
        groups[-1].append(name)
        filled += size
    count = len(groups)
    return {name: f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            for i, group in enumerate(groups) for name in group}


def _stored_tensors(model: LLaDAModelLM) -> dict[str, torch.Tensor]:
    """What the released format stores: the state dict, without the head when it is tied."""
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("model.transformer.ff_out.weight")
    return state


def _gathered(state: Mapping[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """Each tensor whole, in bf16 on the CPU, one at a time (under FSDP2 one all-gather per
    tensor: every rank must iterate)."""
    for name, tensor in state.items():
        whole = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        yield name, whole.detach().to("cpu", EXPORT_DTYPE)


def export_released(model: LLaDAModelLM, init: str | os.PathLike, folder: Path,
                    runtime: Runtime, max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> None:
    """Write `model` (trained from the released checkpoint `init`) into `folder`, atomically."""
    init = Path(init)
    fields = read_model_config(init)
    config = exported_config(fields, model)  # refuses a variant before any collective
    companions = modeling_files(fields, init) + [init / name for name in COMPANION_FILES
                                                 if (init / name).is_file()]
    state = _stored_tensors(model)
    itemsize = torch.empty((), dtype=EXPORT_DTYPE).element_size()
    sizes = {name: tensor.numel() * itemsize for name, tensor in state.items()}
    plan = shard_plan(sizes, max_shard_bytes)
    if not runtime.is_main:
        for _ in _gathered(state):  # the collectives rank 0 writes from
            pass
        runtime.barrier()
        return
    names = list(plan)
    last_of_shard = {name for name, following in zip(names, [*names[1:], None], strict=True)
                     if following is None or plan[following] != plan[name]}
    with atomic_folder(folder) as temporary:
        shard: dict[str, torch.Tensor] = {}
        for name, tensor in _gathered(state):
            shard[name] = tensor
            if name in last_of_shard:
                save_file(shard, temporary / plan[name], metadata={"format": "pt"})
                shard = {}
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": plan}
        (temporary / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        (temporary / "config.json").write_text(json.dumps(config, indent=2))
        for file in companions:
            shutil.copy2(file, temporary / file.name)
    runtime.barrier()
