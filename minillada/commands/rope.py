"""`minillada rope`: the RoPE calculator (critical dim, lambda, new base, attention factor).

Bad names and numbers are refused (`minillada.rope.checks`) before torch is imported.
"""

from __future__ import annotations

import argparse
import json
import math

from minillada.rope.checks import KNOWN_MODELS, check_param_values, check_rope_values
from minillada.rope.laws import (  # the registry loads without torch
    ROPE_VARIANTS,
    variant_parameters,
)

COLUMNS = ("method", "critical_dim", "scale", "new_base", "attention_factor")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rope",
        help="RoPE calculator: which base or scaling does a model need for a target length?",
        description="Print the critical dimension, scale (lambda or factor), new base and "
        "attention factor of a RoPE extension method. Example: minillada rope --model llada-8b "
        "--method diffusion_ntk --target-len 131072",
    )
    parser.add_argument("--model", choices=sorted(KNOWN_MODELS), help="a known model's RoPE setup")
    parser.add_argument("--head-dim", type=int, help="rotary dim (overrides --model)")
    parser.add_argument("--base", type=float, help="rope_theta (overrides --model)")
    parser.add_argument("--train-len", type=int, help="pre-training length T (overrides --model)")
    parser.add_argument("--target-len", type=int, required=True, help="target length T'")
    parser.add_argument(
        "--method",
        default="all",
        help=f"one of {', '.join(ROPE_VARIANTS)}, or 'all' (one row per variant that needs "
        "no parameter; default)",
    )
    parser.add_argument("--factor", type=float, help="explicit extension factor s (default T'/T)")
    parser.add_argument("--span", type=float, help="diffusion-aware span multiplier (default 2.0)")
    parser.add_argument("--critical-dim", type=int, help="override the critical dimension")
    parser.add_argument("--json", action="store_true", help="print a JSON list of objects")
    parser.set_defaults(func=run, parser=parser)


def _setup(args: argparse.Namespace) -> dict:
    setup = dict(KNOWN_MODELS[args.model]) if args.model else {}
    for key in ("head_dim", "base", "train_len"):
        if getattr(args, key) is not None:
            setup[key] = getattr(args, key)
    missing = [
        f"--{k.replace('_', '-')}" for k in ("head_dim", "base", "train_len") if k not in setup
    ]
    if missing:
        args.parser.error(f"give --model or all of {', '.join(missing)}")
    return setup


def _given_params(args: argparse.Namespace) -> dict:
    given = {"factor": args.factor, "span": args.span, "critical_dim": args.critical_dim}
    return {k: v for k, v in given.items() if v is not None}


def _params_for(method: str, args: argparse.Namespace) -> dict:
    """The options the user gave that this method accepts (others apply to other methods)."""
    accepted, _ = variant_parameters(method)
    return {k: v for k, v in _given_params(args).items() if k in accepted}


def _format(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return (
            f"{value:,.2f}" if abs(value) >= 100 or value == math.floor(value) else f"{value:.4g}"
        )
    return str(value)


def run(args: argparse.Namespace) -> int:
    setup = _setup(args)
    if args.method not in ROPE_VARIANTS and args.method != "all":
        args.parser.error(
            f"unknown --method {args.method!r}; choose 'all' or one of {', '.join(ROPE_VARIANTS)}"
        )
    try:  # the checks that need no torch, before importing it
        check_rope_values(setup["head_dim"], setup["base"], setup["train_len"], args.target_len)
        check_param_values(_given_params(args), setup["head_dim"])
    except ValueError as error:
        args.parser.error(str(error))
    from minillada.rope.analysis import rope_summary

    # A variant that needs a parameter (longrope's searched per-pair factors) has no row in 'all'.
    needing = [name for name in ROPE_VARIANTS if variant_parameters(name)[1]]
    methods = (
        [m for m in ROPE_VARIANTS if m not in needing] if args.method == "all" else [args.method]
    )
    try:
        rows = [
            rope_summary(m, target_len=args.target_len, params=_params_for(m, args), **setup)
            for m in methods
        ]
    except ValueError as error:
        args.parser.error(str(error))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"head_dim={setup['head_dim']}  base={_format(float(setup['base']))}  "
        f"train_len={setup['train_len']}  target_len={args.target_len}"
    )
    table = [COLUMNS] + [tuple(_format(row[c]) for c in COLUMNS) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for line in table:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
    if args.method == "all":
        print(f"({', '.join(needing)}: needs parameters, e.g. searched per-pair factors; use the "
              "Python API)")
    return 0
