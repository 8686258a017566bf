"""Trained models that ship with the package, for teaching (notebook 00 and the RoPE explorer):
`base`, the `cpu` recipe's first base that passed the study's instrument gate, and `ultra`, its
mini-UltraLLaDA extension (diffusion-aware NTK RoPE and adaptive packing, post-trained at 16x
T_train). Each is a folder in the package's released format (bf16 safetensors, config.json, the
tokenizer) with `provenance.json` beside it: the run it was exported from and that run's digest,
the recipe, the seeds, the CPU it was trained on and, for the base, the gate it passed. They are
read from the installed package, never downloaded: `load_example("base")`.

`write_example` exports a finished run into that format (`claims.teaching_models.ship` writes
both with their provenance).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and transformers load in the functions that need them
    from transformers import PreTrainedTokenizerFast

    from minillada.modeling.model import LLaDAModelLM

EXAMPLES = ("base", "ultra")
EXAMPLES_DIR = Path(__file__).with_name("examples")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def example_folder(name: str, folder: str | os.PathLike = EXAMPLES_DIR) -> Path:
    """The folder of the shipped model `name` (one of `EXAMPLES`)."""
    if name not in EXAMPLES:
        raise ValueError(f"unknown example model {name!r}; choose one of {', '.join(EXAMPLES)}")
    path = Path(folder) / name
    if not (path / "provenance.json").is_file():
        raise FileNotFoundError(f"the example model {name!r} is not in {str(path)!r}: "
                                "claims.teaching_models.ship writes it from a finished run")
    return path


def example_provenance(name: str, folder: str | os.PathLike = EXAMPLES_DIR) -> dict[str, Any]:
    """What made the shipped model `name` (its provenance.json)."""
    return json.loads((example_folder(name, folder) / "provenance.json").read_text())


def load_example(name: str, folder: str | os.PathLike = EXAMPLES_DIR
                 ) -> tuple[LLaDAModelLM, PreTrainedTokenizerFast]:
    """The shipped model `name` in float32, in eval mode, and its tokenizer."""
    import torch

    from minillada.data.corpus import load_tokenizer
    from minillada.modeling.model import LLaDAModelLM

    path = example_folder(name, folder)
    model = LLaDAModelLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, load_tokenizer(path, model.config.vocab_size)


def write_example(model_dir: str | os.PathLike, name: str, provenance: Mapping[str, Any],
                  folder: str | os.PathLike = EXAMPLES_DIR) -> Path:
    """Export the model in `model_dir` (a run's `model/` folder) as the example `name`: its
    weights in bf16, its config and tokenizer, and `provenance`. Written into a temporary folder
    and moved into place, so that a crash never leaves half an example."""
    import torch

    from minillada.modeling.model import LLaDAModelLM

    if name not in EXAMPLES:
        raise ValueError(f"unknown example model {name!r}; choose one of {', '.join(EXAMPLES)}")
    source, target = Path(model_dir), Path(folder) / name
    staging = target.with_name(f".{name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model = LLaDAModelLM.from_pretrained(source, dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(staging)
    for file in TOKENIZER_FILES:
        shutil.copy2(source / file, staging / file)
    (staging / "provenance.json").write_text(json.dumps(dict(provenance), indent=1) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
