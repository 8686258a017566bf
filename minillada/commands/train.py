"""`minillada train`: pre-train a mini LLaDA, or post-train it (or a released LLaDA checkpoint,
`--preset llada-8b`) at the target length; `--dry-run` prints the per-GPU memory instead.

    minillada train --preset cpu --stage pretrain --out runs/cpu/pretrain
    minillada train --preset cpu --stage extend --init runs/cpu/pretrain --rope diffusion_ntk \
        --packing adaptive --out runs/cpu/extend-adaptive
    torchrun --nproc_per_node=2 -m minillada train --preset smoke --stage pretrain --out ...
    minillada train --preset llada-8b --stage extend --dry-run --world-size 8 --target-len 131072 \
        --gpu-memory 80 --out runs/llada8b-128k
    torchrun --nproc_per_node=8 -m minillada train --preset llada-8b --stage extend \
        --init /path/to/LLaDA-8B-Base --corpus books.jsonl --out runs/llada8b-64k
    torchrun --nproc_per_node=8 -m minillada train --preset llada-8b --stage extend \
        --init /path/to/LLaDA-8B-Base --corpus books.jsonl --target-len 131072 \
        --context-parallel 2 --out runs/llada8b-128k
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

from minillada.common.folders import check_writable
from minillada.common.names import STAGES
from minillada.training.config import check_overrides, make_config, prepare_run
from minillada.training.presets import PRESETS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="pre-train a mini LLaDA or extend its context window by post-training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                        help="smoke, cpu or gpu (default cpu)")
    parser.add_argument("--stage", default="pretrain", choices=STAGES,
                        help="pretrain or extend (default pretrain)")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, metrics, model/)")
    parser.add_argument("--init", help="extend: the pretrained run folder or model folder")
    parser.add_argument("--rope", help="extend: RoPE variant set for the target length")
    parser.add_argument("--packing", help="direct, eod, adaptive or adaptive_eod")
    parser.add_argument("--target-len", type=int, dest="seq_len",
                        help="training sequence length (default: the preset's T_train for "
                        "pretrain, its target length for extend)")
    parser.add_argument("--corpus", help="'stdlib' (default), a folder of .txt or a .jsonl file")
    parser.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--seed", type=int, help="seed of init, data order and masks")
    parser.add_argument("--context-parallel", type=int, dest="context_parallel", metavar="N",
                        help="split each row along the sequence over N ranks (torchrun; N "
                        "divides the number of processes): attention over the whole row from "
                        "gathered keys and values, for rows past one GPU's memory (default 1)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run's latest intact checkpoint (an error if the "
                        "folder holds no run)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any TrainConfig field; VALUE is JSON when it parses "
                        "(e.g. --set lr=1e-3 --set tasks='[\"passkey\"]' "
                        "--set model.include_qkv_bias=true); repeatable")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the per-GPU memory of one step of this run on paper "
                        "(minillada.training.memory_plan) and train nothing; without --init, a "
                        "released recipe plans for its preset's model (llada-8b: LLaDA-8B)")
    parser.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 1)),
                        help="--dry-run: the number of GPUs (default $WORLD_SIZE or 1)")
    parser.add_argument("--gpu-memory", type=float, metavar="GIB",
                        help="--dry-run: each GPU's memory in GiB (an H100 80 GB reports 79.6, "
                        "an H200 140.4): also print, for this and the usual row lengths, the "
                        "smallest context-parallel degree that fits")
    parser.set_defaults(func=run)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """FIELD=VALUE pairs -> overrides; `model.FIELD` goes into the model dict."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name or name == "model." or name.startswith("."):
            raise ValueError(f"--set expects FIELD=VALUE, got {pair!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if name in ("preset", "stage", "out"):
            raise ValueError(f"--set {name}: give it as --{name}, got {pair!r}")
        if name.startswith("model."):
            overrides.setdefault("model", {})[name.removeprefix("model.")] = value
        else:
            overrides[name] = value
    return overrides


class _HeldRecords(logging.Handler):
    """Keeps log records for later."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run(args: argparse.Namespace) -> int:
    if args.gpu_memory is not None and not args.dry_run:
        raise ValueError(f"--gpu-memory {args.gpu_memory:g} plans a --dry-run only (the smallest "
                         "context-parallel degree that fits); add --dry-run, or set the run's "
                         "degree with --context-parallel N")
    overrides = parse_overrides(args.set)
    for name in ("init", "rope", "packing", "seq_len", "corpus", "steps", "seed",
                 "context_parallel"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.quiet:
        overrides["progress"] = False
    check_overrides(overrides)  # names and types, before torch loads
    if args.dry_run:
        print(memory_report(args.preset, args.stage, args.world_size, overrides,
                            args.gpu_memory))
        return 0
    check_writable(args.out, "--out")
    rank = int(os.environ.get("RANK", 0))
    level = logging.INFO if rank == 0 else logging.WARNING
    # Log lines of the validation (the precision chosen) are held back: a refused config prints
    # its one error line only, an accepted one prints them once logging is set up.
    held = _HeldRecords()
    root = logging.getLogger()
    root.addHandler(held)
    root.setLevel(min(root.level or level, level))
    try:  # the values, then the files the run reads and this machine's dtype
        config = prepare_run(make_config(args.preset, args.stage, args.out, **overrides))
    finally:
        root.removeHandler(held)
    from minillada.training.trainer import train

    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    for record in held.records:
        if record.levelno >= level:
            logging.getLogger(record.name).handle(record)
    model_dir = train(config, resume=args.resume)
    if rank == 0:
        print(model_dir)
    return 0


def planned_model(config) -> tuple[dict[str, Any], str]:
    """The sizes of the model a run trains, and where they come from: its init's config.json,
    the pretrain model fields, or (a released recipe without init) its preset's model."""
    from minillada.released.llada import llada_config
    from minillada.released.model_files import model_folder, read_model_config
    from minillada.training.presets import get_preset

    if config.init is not None:
        folder = model_folder(config.init)
        fields = llada_config(read_model_config(folder))
        names = ("vocab_size", "d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size")
        return {name: getattr(fields, name) for name in names}, str(folder)
    if config.stage == "pretrain":
        return config.model, f"preset {config.preset!r} pretrain model"
    if get_preset(config.preset).released:
        return get_preset(config.preset).model, f"preset {config.preset!r} model"
    raise ValueError("--dry-run of stage 'extend' needs --init (its model's sizes), except for a "
                     "released recipe (its preset's model)")


def memory_report(preset: str, stage: str, world_size: int, overrides: dict[str, Any],
                  gpu_memory: float | None = None) -> str:
    """`--dry-run`: the run's settings and its per-GPU memory plan at the worst masking; with
    `gpu_memory` (GiB), the smallest context-parallel degree that fits each row length."""
    from minillada.training.config import TrainConfig, stage_settings
    from minillada.training.memory_plan import (
        PLANNED_LENGTHS,
        fit_table,
        model_plan,
        param_counts,
        plan_table,
        smallest_context_parallel,
    )

    if world_size < 1:
        raise ValueError(f"--world-size must be >= 1, got {world_size}")
    if gpu_memory is not None and not gpu_memory > 0:
        raise ValueError(f"--gpu-memory must be a positive number of GiB, got {gpu_memory}")
    config = TrainConfig(preset=preset, stage=stage, out="dry-run",
                         **stage_settings(preset, stage, **overrides))
    if world_size % config.context_parallel:
        raise ValueError(f"context_parallel {config.context_parallel} must divide --world-size "
                         f"{world_size}")
    dims, source = planned_model(config)
    settings = dict(activation_checkpointing=config.activation_checkpointing,
                    rows=config.micro_batch_size, loss_chunk=config.loss_chunk)
    plan = model_plan(dims, config.seq_len, world_size, context_parallel=config.context_parallel,
                      **settings)
    sizes = {k: dims[k] for k in ("d_model", "mlp_hidden_size", "vocab_size", "n_heads")}
    params = param_counts(dims["n_layers"], n_kv_heads=dims.get("n_kv_heads"), **sizes)["total"]
    lines = [
        f"{preset} {stage}: {params / 1e9:.3f} B parameters ({source}); {world_size} GPU(s), "
        f"{config.micro_batch_size} row(s) of {config.seq_len} tokens per data-parallel group "
        f"per micro-batch, context parallelism {config.context_parallel}, activation "
        f"checkpointing {'on' if config.activation_checkpointing else 'off'}, loss "
        + (f"in chunks of {config.loss_chunk} masked tokens" if config.loss_chunk
           else "over the full row"),
        "per GPU at the worst step (every token masked), on paper (minillada.training.memory_plan; "
        "not measured), GiB:", "", plan_table([plan])]
    if gpu_memory is None:
        return "\n".join(lines)
    lengths = sorted({*PLANNED_LENGTHS, config.seq_len})
    degree, fitting = smallest_context_parallel(dims, config.seq_len, world_size, gpu_memory,
                                                **settings)
    if degree is None:
        verdict = (f"{config.seq_len} tokens per row do not fit {world_size} GPUs of "
                   f"{gpu_memory:g} GiB at any context-parallel degree (at "
                   f"{fitting['inputs']['context_parallel']}: {fitting['total_gib']:.1f} GiB per "
                   "GPU): use more GPUs or a shorter row")
    else:
        verdict = (f"{config.seq_len} tokens per row fit {world_size} GPUs of {gpu_memory:g} GiB "
                   f"with --context-parallel {degree} at the least ({fitting['total_gib']:.1f} "
                   f"GiB per GPU, {world_size // degree} data-parallel group(s))"
                   + ("" if plan["total_gib"] <= gpu_memory else
                      f"; this run's context parallelism {config.context_parallel} needs "
                      f"{plan['total_gib']:.1f} GiB"))
    return "\n".join([*lines, "", f"the smallest context-parallel degree that fits each row "
                       f"length on {world_size} GPUs of {gpu_memory:g} GiB, on paper:", "",
                       fit_table(dims, lengths, world_size, gpu_memory, **settings), "",
                       verdict])
