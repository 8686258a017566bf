"""`minillada eval`: evaluate a checkpoint; one tidy CSV and one figure (PNG) per task in --out.

Tasks: `loss` (the paired masked-diffusion loss grid, the primary metric), `ppl` (LongLLaDA's
chunked perplexity at each length, with LLaDA's unbiased bound beside it) and the retrieval tasks
of `minillada.data.tasks` (passkey, niah, ...), scored by generation and, with --likelihood, by
likelihood against distractors. Several RoPE variants (--rope a,b,c) are evaluated on the same
windows, masks and samples; the first is the reference of paired differences. Retrieval grids are
resumable: rerunning the same command skips the cells already in `<task>.jsonl`.

    minillada eval --checkpoint runs/cpu/pretrain --tasks loss,ppl,niah,passkey \\
        --lengths 256,512,1024 --rope default,ntk_critical,diffusion_ntk --out runs/eval
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from minillada.common.folders import check_writable, output_folder
from minillada.common.names import KEY_KINDS, STDLIB, TASK_NAMES
from minillada.evals.generation import GenerationSettings
from minillada.released.model_files import model_folder, read_model_config, weight_files
from minillada.rope.laws import ROPE_VARIANTS  # the registry loads without torch
from minillada.training.presets import PRESETS, get_preset

if TYPE_CHECKING:  # torch, transformers and the evaluations load in `run`, after the checks
    from transformers import PreTrainedTokenizerFast

    from minillada.evals.models import ModelAtLength

CORPUS_TASKS = ("loss", "ppl")
WEIGHT_DTYPES = ("bfloat16", "float16", "float32")  # the dtype the weights are loaded in
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def positive_int(flag: str) -> Callable[[str], int]:
    """argparse type: an integer >= 1, else an error naming `flag` and the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
        return value
    return parse


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def _numbers(kind: type, flag: str = "", positive: bool = False) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in _names(text)]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
        if positive and any(value < 1 for value in values):
            raise argparse.ArgumentTypeError(
                f"{flag} must be positive integers, got {text!r}")
        if any(not math.isfinite(value) for value in values):
            raise argparse.ArgumentTypeError(f"{flag} must be finite numbers, got {text!r}")
        return values
    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="evaluate a checkpoint: loss grid, PPL, retrieval grids (CSV + figures)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="checkpoint directory (config.json + safetensors + tokenizer.json, "
                        "LLaDA format), or a minillada run folder (its model/)")
    parser.add_argument("--out", type=Path, required=True, help="folder for CSVs and figures")
    parser.add_argument("--tasks", type=_names, default=["loss", "ppl", "passkey", "niah"],
                        help="comma-separated: loss, ppl and retrieval tasks "
                        "(minillada.data.tasks)")
    parser.add_argument("--lengths", type=_numbers(int, "--lengths", positive=True),
                        help="comma-separated lengths (default: the preset's evaluation lengths)")
    parser.add_argument("--rope", type=_names, default=["default"],
                        help="comma-separated RoPE variants (first = reference); default: default")
    parser.add_argument("--target-len", type=positive_int("--target-len"),
                        help="target length of extending variants (default: each eval length)")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS),
                        help="grids and Monte-Carlo sizes (default: cpu)")
    parser.add_argument("--depths", type=_numbers(float, "--depths"),
                        help="needle depths in percent")
    parser.add_argument("--repeats", type=positive_int("--repeats"),
                        help="samples per (task, length, depth)")
    parser.add_argument("--mc", type=positive_int("--mc"),
                        help="Monte-Carlo draws per window or answer")
    parser.add_argument("--windows", type=positive_int("--windows"),
                        help="held-out windows per length (loss, ppl)")
    parser.add_argument("--chunk", type=positive_int("--chunk"),
                        help="PPL chunk size (default: the preset's)")
    parser.add_argument("--gen-length", default="auto",
                        help="tokens to generate, or 'auto': the answer length rounded up to "
                        "whole steps at the rate of block/steps (default auto)")
    parser.add_argument("--block-length", type=positive_int("--block-length"), default=32)
    parser.add_argument("--steps", type=positive_int("--steps"), default=16)
    parser.add_argument("--likelihood", action="store_true",
                        help="also score retrieval by likelihood against distractor answers")
    parser.add_argument("--batch-size", type=positive_int("--batch-size"), default=8)
    parser.add_argument("--key-kind", choices=KEY_KINDS,
                        help="retrieval keys (minillada.data.keys.KeySpace; default: those a "
                        "minillada run was trained with, from its config.json; number for "
                        "other checkpoints)")
    parser.add_argument("--key-digits", type=positive_int("--key-digits"),
                        help="digits of number and code keys (default: as --key-kind; 5 for "
                        "other checkpoints)")
    parser.add_argument("--corpus", default=STDLIB,
                        help="corpus whose test split gives the loss/PPL windows and the NIAH "
                        "haystack (default stdlib)")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="the corpus split seed the model was trained with (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda[:N] or auto: cuda when available (default auto)")
    parser.add_argument("--dtype", default="float32", choices=WEIGHT_DTYPES,
                        help="weights' dtype (bfloat16 for LLaDA-8B on a GPU; default float32)")
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class Plan:
    """Everything `run` needs, checked before the model is loaded."""

    tasks: list[str]
    lengths: list[int]
    depths: list[float]
    repeats: int
    mc: int
    windows: int
    chunk: int
    settings: GenerationSettings
    fit_gen_length: bool


def run_keys(checkpoint: Path) -> tuple[str, int] | None:
    """The key kind and digits a minillada run trained its retrieval rows with
    (`data.keys.trained_keys` of the run's config.json, in `checkpoint` or above its model
    folder), or None (no such run, or no retrieval rows)."""
    from minillada.data.keys import trained_keys
    from minillada.training.checkpoint import saved_config

    for folder in (checkpoint, checkpoint.parent):
        try:
            fields = saved_config(folder)
        except (OSError, ValueError):
            continue
        trained = trained_keys(fields) if isinstance(fields, dict) else None
        if trained is not None:
            return trained
    return None


def resolve_keys(args: argparse.Namespace) -> None:
    """Fill --key-kind and --key-digits left unset from the run's training, else number / 5, and
    say which keys were chosen and why."""
    if args.key_kind is not None and args.key_digits is not None:
        return
    trained = run_keys(args.checkpoint)
    kind, digits = trained or ("number", 5)
    if args.key_kind is None and args.key_digits is None:
        source = "as the run was trained, its config.json" if trained else "the default"
    else:
        source = "the rest " + ("as the run was trained" if trained else "by default")
    if args.key_kind is None:
        args.key_kind = kind
    if args.key_digits is None:
        args.key_digits = digits if args.key_kind == kind else 5
    shape = f"{args.key_digits}-digit " if args.key_kind in ("number", "code") else ""
    print(f"keys: {shape}{args.key_kind}s ({source})")


def make_plan(args: argparse.Namespace) -> Plan:
    """Validate the command line (names, numbers, device, checkpoint files, --out); raise before
    any work, and before torch loads. A run folder as --checkpoint becomes its model/."""
    preset = get_preset(args.preset)
    grid = preset.evaluation
    known = (*CORPUS_TASKS, *TASK_NAMES)
    unknown = [task for task in args.tasks if task not in known]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(known)}")
    bad_ropes = [variant for variant in args.rope if variant not in ROPE_VARIANTS]
    if bad_ropes:
        raise ValueError(f"unknown RoPE variant(s) {bad_ropes}; known: {', '.join(ROPE_VARIANTS)}")
    if args.corpus != STDLIB and not Path(args.corpus).exists():
        raise FileNotFoundError(f"corpus {args.corpus!r} does not exist")
    fit = args.gen_length == "auto"
    try:
        gen_length = args.block_length if fit else int(args.gen_length)
    except ValueError:
        raise ValueError(
            f"--gen-length must be an integer or 'auto', got {args.gen_length!r}") from None
    lengths = args.lengths or list(preset.eval_lengths)
    depths = args.depths or list(grid.depths)
    chunk = args.chunk or grid.chunk
    if "ppl" in args.tasks and min(lengths) <= chunk:
        raise ValueError(f"ppl scores the last chunk of {chunk} tokens given the rest: "
                         f"every length must exceed it, got {lengths}")
    outside = [depth for depth in depths if not 0 <= depth <= 100]
    if outside:
        raise ValueError(f"--depths are percentages in [0, 100]; got {outside}")
    if not DEVICE.fullmatch(args.device):
        raise ValueError(f"unknown --device {args.device!r}; choose cpu, cuda, cuda:N or auto")
    if not args.checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(args.checkpoint)!r} does not exist")
    args.checkpoint = model_folder(args.checkpoint)  # a run folder: its model/
    read_model_config(args.checkpoint)  # JSON, and LLaDA's architecture
    weight_files(args.checkpoint)
    if not (args.checkpoint / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer.json in checkpoint directory {str(args.checkpoint)!r}: evaluation "
            "needs the tokenizer the model was trained with (saved next to its weights)")
    settings = GenerationSettings(gen_length, args.block_length, args.steps)
    if fit:
        settings.fitted_to(1)  # fail now if the rate block/steps is not a whole number
    check_writable(args.out, "--out")
    return Plan(tasks=args.tasks, lengths=lengths, depths=depths,
                repeats=args.repeats or grid.repeats, mc=args.mc or grid.mc,
                windows=args.windows or grid.windows, chunk=chunk, settings=settings,
                fit_gen_length=fit)


def run(args: argparse.Namespace) -> int:
    plan = make_plan(args)
    resolve_keys(args)
    import torch

    from minillada.data.keys import key_space
    from minillada.data.tasks import sample_maker
    from minillada.data.token_cache import split_documents
    from minillada.evals.models import rope_variants
    from minillada.figures import plots
    from minillada.released.llada import load_llada_checkpoint

    device = _device(args.device)
    model = load_llada_checkpoint(args.checkpoint, dtype=getattr(torch, args.dtype)).to(device)
    tokenizer = _tokenizer(args.checkpoint)
    args.keys = key_space(tokenizer, args.key_kind, args.key_digits)
    # The retrieval samples: these keys, NIAH haystacks from --corpus's test split.
    args.make_sample = sample_maker(tokenizer, key_kind=args.key_kind,
                                    key_digits=args.key_digits, corpus=args.corpus, split="test",
                                    split_seed=args.split_seed)
    models = rope_variants(model, args.rope, args.target_len)
    for task in plan.tasks:  # a retrieval length too short for the task fails before any work
        if task not in CORPUS_TASKS:
            args.make_sample(task, min(plan.lengths), 50.0, 0)
    train_len = model.config.max_sequence_length
    plots.use_style()
    summaries = []
    with output_folder(args.out):  # a refusal inside the tasks leaves no empty --out behind
        for task in plan.tasks:
            if task in CORPUS_TASKS:
                documents = split_documents(tokenizer, "test", args.corpus, args.split_seed)
                run_task = _loss_task if task == "loss" else _ppl_task
                summaries.append(run_task(models, documents, plan, args, model.config,
                                          train_len))
            else:
                summaries.append(_retrieval_task(task, models, tokenizer, plan, args,
                                                 model.config, train_len))
    print("\n".join(summaries))
    print(f"wrote {', '.join(f'{task}.csv, {task}.png' for task in plan.tasks)} in {args.out}")
    return 0


def _device(name: str) -> str:
    """The device `name` (checked by make_plan) means on this machine: auto is cuda when
    available; a CUDA device this machine lacks is a ValueError naming it."""
    import torch

    count = torch.cuda.device_count()
    if name == "auto":
        return "cuda" if count else "cpu"
    index = int(name.partition(":")[2] or 0)
    if name.startswith("cuda") and index >= count:
        raise ValueError(f"--device {name}: this machine has {count} CUDA device(s); choose "
                         "cpu or auto" + (f", or cuda:N with N < {count}" if count else ""))
    return name


def _tokenizer(checkpoint: Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved with the checkpoint (make_plan checked that it is there)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(checkpoint)


def _loss_task(models: dict[str, ModelAtLength], documents: Sequence[Sequence[int]], plan: Plan,
               args: argparse.Namespace, config, train_len: int) -> str:
    from minillada.evals.perplexity import paired_loss_grid, paired_summary
    from minillada.figures import plots

    table = paired_loss_grid(models, documents, plan.lengths, mask_token_id=config.mask_token_id,
                             eod_token_id=config.eos_token_id, mc=plan.mc, seed=args.seed,
                             max_windows=plan.windows, batch_size=args.batch_size)
    table.to_csv(args.out / "loss.csv", index=False)
    summary = paired_summary(table)
    fig, (ax,) = plots.panels(1)
    plots.plot_lines(ax, summary, "length", "value", "masked-diffusion loss on held-out windows",
                     "loss (nats per token)", error="se", train_len=train_len)
    plots.save_figure(fig, args.out / "loss.png")
    longest = summary[summary["length"] == max(plan.lengths)]
    parts = [f"{row.model} {row.value:.3f}±{row.se:.3f} (Δ {row.delta:+.3f}±{row.delta_se:.3f})"
             for row in longest.itertuples()]
    return f"loss @ {max(plan.lengths)}: " + "; ".join(parts)


def _ppl_task(models: dict[str, ModelAtLength], documents: Sequence[Sequence[int]], plan: Plan,
              args: argparse.Namespace, config, train_len: int) -> str:
    from minillada.evals.perplexity import paired_summary, ppl_at_lengths
    from minillada.figures import plots

    table = ppl_at_lengths(models, documents, plan.lengths, mask_token_id=config.mask_token_id,
                           eod_token_id=config.eos_token_id, chunk=plan.chunk, mc=plan.mc,
                           seed=args.seed, max_windows=plan.windows, batch_size=args.batch_size)
    table.to_csv(args.out / "ppl.csv", index=False)
    # Documents are averaged as exp(mean loss): the geometric mean of their perplexities.
    summary = paired_summary(table, column="loss").assign(ppl=lambda f: f["value"].map(math.exp))
    fig, axes = plots.panels(2)
    for ax, method in zip(axes, ("chunk_ppl", "elbo"), strict=True):
        plots.plot_lines(ax, summary[summary["method"] == method], "length", "ppl",
                         f"PPL of the last {plan.chunk} tokens ({method})", "perplexity",
                         train_len=train_len)
    plots.save_figure(fig, args.out / "ppl.png")
    longest = summary[(summary["length"] == max(plan.lengths)) & (summary.method == "chunk_ppl")]
    parts = [f"{row.model} {row.ppl:.2f}" for row in longest.itertuples()]
    return f"ppl @ {max(plan.lengths)} (chunk {plan.chunk}): " + "; ".join(parts)


def _retrieval_task(task: str, models: dict[str, ModelAtLength], tokenizer, plan: Plan,
                    args: argparse.Namespace, config, train_len: int) -> str:
    from minillada.claims.statistics import by_needle_distance
    from minillada.evals.retrieval import LikelihoodScoring, chance_level, run_retrieval_grid
    from minillada.figures import plots

    likelihood = None
    if args.likelihood:
        keys = args.keys.words or "0123456789"  # the answer tokens a key is made of
        alphabet = {token for key in keys for token in tokenizer.encode(
            args.keys.answer_prefix + key, add_special_tokens=False)}
        likelihood = LikelihoodScoring(alphabet=tuple(sorted(alphabet)), mc=plan.mc)
    table = run_retrieval_grid(
        models, args.make_sample, lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        tasks=[task], lengths=plan.lengths, depths=plan.depths, repeats=plan.repeats,
        settings=plan.settings, fit_gen_length=plan.fit_gen_length,
        results_path=args.out / f"{task}.jsonl", mask_token_id=config.mask_token_id,
        seed=args.seed, batch_size=args.batch_size, likelihood=likelihood)
    table.to_csv(args.out / f"{task}.csv", index=False)
    generated = table[table["method"] == "generate"]
    labels = list(dict.fromkeys(generated["model"]))
    fig, axes = plots.panels(len(labels) + 1, columns=min(3, len(labels) + 1), width=5.5)
    for ax, label in zip(axes, labels, strict=False):
        plots.plot_score_heatmap(ax, generated[generated["model"] == label], f"{task}: {label}",
                                 train_len=train_len, chance=chance_level(task, args.keys))
    if generated["needle_distance"].notna().any():
        distance = by_needle_distance(generated, bin_width=max(1, train_len // 2))
        plots.plot_lines(axes[-1], distance, "distance", "value",
                         f"{task} by needle distance from the question", "mean score",
                         hue="model", train_len=train_len, xlabel="distance (tokens)",
                         log_x=False)
    else:
        axes[-1].remove()
    plots.save_figure(fig, args.out / f"{task}.png")
    scores = table.groupby(["model", "method"], sort=False)[["value", "exact"]].mean()
    chance = {"generate": chance_level(task, args.keys),
              "likelihood": likelihood and chance_level(task, args.keys, metric="likelihood",
                                                        n_distractors=likelihood.n_distractors)}
    parts = [f"{model} {method} {row.value:.1f} (exact {100 * row.exact:.0f}%, "
             f"chance {chance[method]:.3g}%)" for (model, method), row in scores.iterrows()]
    return f"{task}: " + "; ".join(parts)
