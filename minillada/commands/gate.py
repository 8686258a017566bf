"""`minillada gate`: train a design's bases where not finished and judge each by the instrument
gate (docs/science.md, "The gated design"): in-window NIAH on 240 validation prompts, one token a
step, exact match >= 90 % and every answer slot >= 95 %. Each base is recorded in the design's
gate.csv (results/<design>/gate.csv, results/gate.csv for the committed design) with the CPU it
was trained on; a line per base says whether it passes.

    minillada gate                        # cpu-gated: candidates 101-115 until five pass
    minillada gate --bases 101,102        # only these (in this order)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from minillada.claims.design import DESIGNS, get_design


def _bases(text: str) -> list[int]:
    try:
        bases = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated base seeds, got {text!r}") from None
    if not bases:
        raise argparse.ArgumentTypeError(f"expected comma-separated base seeds, got {text!r}")
    return bases


def gate(args: argparse.Namespace) -> int:
    design = get_design(args.design)
    unknown = [seed for seed in args.bases or () if seed not in design.bases]
    if unknown:
        raise ValueError(f"--bases {unknown} are not bases of design {design.name!r}; its bases "
                         f"are {', '.join(map(str, design.bases))}")
    from minillada.claims.study import Study  # torch loads here, after the checks

    out = Path(args.out)
    study = Study.create(design.name, out / "runs", out / "results", out / "figures")
    if args.bases:
        results = [study.judge_base(seed) for seed in args.bases]
    else:
        results = list(study.gate_results.values())
    for result in results:
        print(result.line(), flush=True)
    passed = sum(r.passed for r in results)
    print(f"{passed} of {len(results)} bases pass the gate; the table: "
          f"{study.results / 'gate.csv'}", flush=True)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gate", help="train bases and judge each by the instrument gate (gate.csv)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--design", default="cpu-gated", choices=sorted(DESIGNS),
                        help="the study design whose bases are gated (default: cpu-gated)")
    parser.add_argument("--bases", type=_bases, default=None, metavar="SEED[,SEED...]",
                        help="judge only these bases of the design, in this order (default: "
                        "a gated design's candidates until enough pass, else every base)")
    parser.add_argument("--out", default=".", help="study folder holding runs/ and results/ "
                        "(default: the current folder)")
    parser.set_defaults(func=gate)
