"""The faithful export checked against LLaDA's own modeling code, not the package's reading of it.

    .venv/bin/python benchmarks/check_official_llada.py --modeling-dir /tmp/llada-official \\
        --official-python /tmp/llada-tf438/bin/python --json benchmarks/results/official_llada.json

Needs, outside the repository (nothing of LLaDA's code is vendored):
- `--modeling-dir`: a folder with GSAI-ML/LLaDA-8B-Base's `modeling_llada.py` and
  `configuration_llada.py`, downloaded by the user;
- `--official-python`: the interpreter of a side venv with torch and transformers 4.38 (tested:
  4.38.2). LLaDA's code does not load under transformers >= 5, so the package's venv cannot run it.

What it does: builds the tests' toy released checkpoint (`tests/llada_checkpoint.py`) with the
official modeling files beside its weights, post-trains it two steps with the llada-8b recipe at
toy size (rows of 64 tokens, 4x its 16; diffusion_ntk), which exports it with the scaled
`rope_theta`. A subprocess under the official python loads, with
`AutoModel.from_pretrained(folder, trust_remote_code=True, torch_dtype=float32)`, the original,
the export and a control (the export with the original `rope_theta` written back), and runs the
same token batches (2 rows at each `--lengths`). Their logits are compared with the package's:
`load_llada_checkpoint` of the original; for the export and the control, the trained model with
its weights rounded to bf16 (what the export stores).

Prints, per model and length, max |logit difference| and top-1 agreement. Exit status 0 when the
original and the export agree (max |diff| <= 1e-4, top-1 1.0) and the control does not
(max |diff| > 1e-2: the check can fail); 1 otherwise; 2 when the inputs are unusable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_FILES = ("modeling_llada.py", "configuration_llada.py")
AGREE_ATOL = 1e-4  # float32 forward against float32 forward: rounding only
CONTROL_MIN_DIFF = 1e-2  # the original base at 64-96 tokens moves logits by O(1)
ROWS = 2
# The llada-8b recipe at toy size, as tests/test_released.py runs it: rows of 64 tokens (4x the
# checkpoint's 16), float32, per-document attention (CPU), two steps.
TOY_RUN = dict(seq_len=64, steps=2, batch_size=2, micro_batch_size=1, warmup_steps=1, lr=2e-5,
               loss_chunk=16, dtype="float32", attention_backend="per_document", val_rows=2,
               val_every=2, save_every=2, progress=False)


class CheckError(Exception):
    """An input the check cannot use (the message says which and why)."""


def official_files(modeling_dir: Path) -> dict[str, str]:
    """File name -> sha256 of LLaDA's modeling files in `modeling_dir`; CheckError naming any
    missing."""
    missing = [name for name in OFFICIAL_FILES if not (modeling_dir / name).is_file()]
    if missing:
        raise CheckError(f"--modeling-dir {str(modeling_dir)!r} lacks {', '.join(missing)}: "
                         f"download {' and '.join(OFFICIAL_FILES)} from the Hugging Face repo "
                         "GSAI-ML/LLaDA-8B-Base into it")
    return {name: hashlib.sha256((modeling_dir / name).read_bytes()).hexdigest()
            for name in OFFICIAL_FILES}


def official_versions(python: str) -> dict[str, str]:
    """torch and transformers versions of the interpreter `python`; CheckError when it cannot run,
    cannot import them, or has transformers >= 5 (where LLaDA's code fails to load)."""
    probe = ("import json, torch, transformers; print(json.dumps({'torch': torch.__version__, "
             "'transformers': transformers.__version__}))")
    try:
        done = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                              env=_official_env(), timeout=300)
    except OSError as error:
        raise CheckError(f"--official-python {python!r} cannot run: {error}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CheckError(f"--official-python {python!r} cannot import torch and transformers "
                         f"({last}): make a venv with `pip install torch transformers==4.38.2 "
                         "safetensors`")
    versions = json.loads(done.stdout.strip().splitlines()[-1])
    if int(versions["transformers"].split(".")[0]) >= 5:
        raise CheckError(f"--official-python {python!r} has transformers "
                         f"{versions['transformers']}; LLaDA's modeling code needs transformers 4 "
                         "(tested: 4.38.2)")
    return versions


def _official_env() -> dict[str, str]:
    """The environment of the official python: no PYTHONPATH (only its own packages), offline."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def build_and_export(work: Path, modeling_dir: Path, seed: int) -> tuple[Path, Path, Any, Any]:
    """(original folder, export folder, the package's model of the original, the trained model
    rounded to bf16): the tests' toy released checkpoint with the official modeling files, then
    two steps of the llada-8b recipe, which export it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from llada_checkpoint import write_corpus, write_released_checkpoint

    from minillada.modeling.distributed import Runtime
    from minillada.released.llada import load_llada_checkpoint
    from minillada.training.config import make_config
    from minillada.training.trainer import Trainer

    os.environ["MINILLADA_CACHE"] = str(work / "cache")  # the tokenized corpus stays in `work`
    original = write_released_checkpoint(work / "LLaDA-tiny", seed=seed)
    for name in OFFICIAL_FILES:  # the fixture's placeholders become the real files
        shutil.copy2(modeling_dir / name, original / name)
    config = make_config("llada-8b", "extend", work / "run", init=str(original),
                         corpus=str(write_corpus(work / "corpus.jsonl")), seed=seed, **TOY_RUN)
    trainer = Trainer(config, Runtime(rank=0, world=1, device=torch.device("cpu"),
                                      distributed=False))
    try:
        exported = trainer.run()
        trained = trainer.model.eval()
    finally:
        trainer.close()
    # The export stores bf16 weights: the package's model as exported is its float32 masters
    # rounded to bf16 (the RoPE stays the one it trained with, not read back from config.json).
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.copy_(parameter.bfloat16().float())
    return original, exported, load_llada_checkpoint(original), trained


def with_rope_theta(folder: Path, into: Path, rope_theta: float) -> Path:
    """A copy of the checkpoint `folder` whose config.json has `rope_theta`."""
    shutil.copytree(folder, into)
    fields = json.loads((into / "config.json").read_text())
    (into / "config.json").write_text(json.dumps({**fields, "rope_theta": rope_theta}, indent=2))
    return into


def official_logits(python: str, folders: dict[str, Path], batches: list[torch.Tensor],
                    work: Path) -> dict[str, dict[str, Any]]:
    """Name -> {"rope_theta", "dtype", "logits": one tensor per batch} from LLaDA's code loading
    each folder under `python` (this script's `--worker` mode)."""
    request = {"folders": {name: str(folder) for name, folder in folders.items()},
               "batches": str(work / "batches.pt"), "logits": str(work / "official_logits.pt")}
    torch.save(batches, request["batches"])
    (work / "request.json").write_text(json.dumps(request))
    # Remote code is copied into HF_MODULES_CACHE: kept in `work`, not the user's cache.
    env = {**_official_env(), "HF_MODULES_CACHE": str(work / "hf_modules")}
    done = subprocess.run([python, str(Path(__file__).resolve()), "--worker",
                           str(work / "request.json")], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise CheckError(f"LLaDA's modeling code failed under {python!r}:\n{done.stderr[-3000:]}")
    return torch.load(request["logits"])


def worker(request_file: Path) -> None:
    """Under the official python: load each folder with LLaDA's code in float32 and save its
    logits for every batch. Any missing, unexpected or mismatched weight is an error."""
    from transformers import AutoModel

    request = json.loads(request_file.read_text())
    batches = torch.load(request["batches"])
    results = {}
    for name, folder in request["folders"].items():
        model, info = AutoModel.from_pretrained(folder, trust_remote_code=True,
                                                torch_dtype=torch.float32,
                                                output_loading_info=True)
        problems = {key: value for key, value in info.items() if value}
        if problems:
            raise SystemExit(f"{folder}: LLaDA's code did not load every weight: {problems}")
        model.eval()
        with torch.no_grad():
            logits = [model(input_ids=ids).logits for ids in batches]
        results[name] = {"rope_theta": float(model.config.rope_theta),
                         "dtype": str(next(model.parameters()).dtype),
                         "class": f"{type(model).__module__}.{type(model).__name__}",
                         "logits": logits}
    torch.save(results, request["logits"])


def compare(official: torch.Tensor, package: torch.Tensor) -> dict[str, float]:
    """max |difference| of the logits and the share of positions with the same top-1 token."""
    return {"max_abs_diff": float((official.double() - package.double()).abs().max()),
            "top1_agreement": float((official.argmax(-1) == package.argmax(-1)).double().mean())}


def run_check(modeling_dir: Path, python: str, lengths: list[int], seed: int) -> dict[str, Any]:
    """The whole check (see the module doc); a JSON-able report with "passed"."""
    from minillada.released.token_roles import load_released_tokenizer

    hashes = official_files(modeling_dir)
    versions = official_versions(python)
    with tempfile.TemporaryDirectory(prefix="official-llada-") as temporary:
        work = Path(temporary)
        original, exported, package_original, trained = build_and_export(work, modeling_dir, seed)
        fields = json.loads((exported / "config.json").read_text())
        original_theta = fields["minillada_post_training"]["original_rope_theta"]
        folders = {"original": original, "export": exported,
                   "control": with_rope_theta(exported, work / "control", original_theta)}
        copied = all((exported / name).read_bytes() == (modeling_dir / name).read_bytes()
                     for name in OFFICIAL_FILES)
        generator = torch.Generator().manual_seed(seed)
        vocab = len(load_released_tokenizer(original)[0])  # every token id, the specials too
        batches = [torch.randint(0, vocab, (ROWS, length), generator=generator)
                   for length in lengths]
        official = official_logits(python, folders, batches, work)
        with torch.no_grad():
            package = {"original": [package_original(ids).logits for ids in batches],
                       "export": [trained(ids).logits for ids in batches]}
        package["control"] = package["export"]  # the control must NOT reproduce them
    models: dict[str, Any] = {}
    for name, loaded in official.items():
        models[name] = {"rope_theta": loaded["rope_theta"], "dtype": loaded["dtype"],
                        "class": loaded["class"], "by_length": {
                            str(length): compare(got, want) for length, got, want in zip(
                                lengths, loaded["logits"], package[name], strict=True)}}
    agree = all(row["max_abs_diff"] <= AGREE_ATOL and row["top1_agreement"] == 1.0
                for name in ("original", "export") for row in models[name]["by_length"].values())
    control_fails = all(row["max_abs_diff"] > CONTROL_MIN_DIFF
                        for row in models["control"]["by_length"].values())
    return {"official": {**versions, "files_sha256": hashes}, "seed": seed, "lengths": lengths,
            "rows": ROWS, "rope_theta": {"original": original_theta,
                                         "export": fields["rope_theta"]},
            "export_carries_official_files": copied, "models": models,
            "thresholds": {"agree_atol": AGREE_ATOL, "control_min_diff": CONTROL_MIN_DIFF},
            "passed": agree and control_fails and copied}


def print_report(report: dict[str, Any]) -> None:
    official = report["official"]
    print(f"official python: torch {official['torch']}, transformers {official['transformers']}")
    print(f"rope_theta: original {report['rope_theta']['original']}, "
          f"export {report['rope_theta']['export']}")
    print(f"{'model':<9} {'rope_theta':>12} {'tokens':>6} {'max |diff|':>11} {'top-1':>6}")
    for name, model in report["models"].items():
        for length, row in model["by_length"].items():
            print(f"{name:<9} {model['rope_theta']:>12.6g} {length:>6} "
                  f"{row['max_abs_diff']:>11.3g} {row['top1_agreement']:>6.3f}")
    print("passed" if report["passed"] else "FAILED")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modeling-dir", type=Path,
                        help="folder with LLaDA's modeling_llada.py and configuration_llada.py")
    parser.add_argument("--official-python",
                        help="python of a venv with torch and transformers 4.38")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 96])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # the subprocess's mode
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.modeling_dir is None or args.official_python is None:
        parser.error("--modeling-dir and --official-python are required")
    try:
        report = run_check(args.modeling_dir, args.official_python, args.lengths, args.seed)
    except CheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
