"""`minillada train`: pre-train a mini LLaDA, or post-train it at the target length.

    minillada train --preset cpu --stage pretrain --out runs/cpu/pretrain
    minillada train --preset cpu --stage extend --init runs/cpu/pretrain --rope diffusion_ntk \
        --packing adaptive --out runs/cpu/extend-adaptive
    torchrun --nproc_per_node=2 -m minillada train --preset smoke --stage pretrain --out ...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

from minillada.config import STAGES, make_config  # torch loads only when a config is accepted
from minillada.folders import check_writable
from minillada.presets import PRESETS


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
    parser.add_argument("--resume", action="store_true",
                        help="continue the run's latest intact checkpoint (an error if the "
                        "folder holds no run)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any TrainConfig field; VALUE is JSON when it parses "
                        "(e.g. --set lr=1e-3 --set tasks='[\"passkey\"]' "
                        "--set model.include_qkv_bias=true); repeatable")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
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
    overrides = parse_overrides(args.set)
    for name in ("init", "rope", "packing", "seq_len", "corpus", "steps", "seed"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.quiet:
        overrides["progress"] = False
    check_writable(args.out, "--out")
    rank = int(os.environ.get("RANK", 0))
    level = logging.INFO if rank == 0 else logging.WARNING
    # Log lines of the validation (the precision chosen) are held back: a refused config prints
    # its one error line only, an accepted one prints them once logging is set up.
    held = _HeldRecords()
    root = logging.getLogger()
    root.addHandler(held)
    root.setLevel(min(root.level or level, level))
    try:
        config = make_config(args.preset, args.stage, args.out, **overrides)
    finally:
        root.removeHandler(held)
    from minillada.train import train

    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    for record in held.records:
        if record.levelno >= level:
            logging.getLogger(record.name).handle(record)
    model_dir = train(config, resume=args.resume)
    if rank == 0:
        print(model_dir)
    return 0
