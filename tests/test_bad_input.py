"""Bad input, table-driven: every command and the Python API refuse it with one clear line naming
the field or flag, the value and what is allowed, before any work, writing nothing (and fast:
every check of `minillada train` and `eval` runs before torch loads, which these tests check
instead of a wall time that other jobs on the machine stretch). `pytest -s
tests/test_bad_input.py` prints the measured times; benchmarks/bench_rejections.py measures them
alone, with the CPU time of each refusal."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMES: list[tuple[str, str, float]] = []  # (case, kind, seconds to fail)
UNWRITABLE = "/proc/minillada-nowhere"  # no process may create anything in /proc, root neither

# (id, argv, text the one-line error holds: the bad value). {name} is a folder of `make_folders`.
# Each runs in a subprocess that must refuse it without importing torch.
CLI_CASES = [
    ("train-lr-abc", ["train", "--set", "lr=abc"], "lr must be a number, got 'abc'"),
    ("train-betas-short", ["train", "--set", "betas=[0.9]"],
     "betas must be a list of 2 numbers, got [0.9]"),
    ("train-model-int", ["train", "--set", "model=5"], "model must be a dict (JSON object), got 5"),
    ("train-seed-abc", ["train", "--set", "seed=abc"], "seed must be an integer, got 'abc'"),
    ("train-steps-float", ["train", "--set", "steps=2.5"], "steps must be an integer, got 2.5"),
    ("train-steps-bool", ["train", "--set", "steps=true"], "steps must be an integer, got True"),
    ("train-lr-nan", ["train", "--set", "lr=NaN"], "lr must be a finite number, got nan"),
    ("train-unknown-field", ["train", "--set", "learning_rate=1"],
     "unknown TrainConfig field(s) ['learning_rate']"),
    ("train-set-no-equals", ["train", "--set", "lr"], "--set expects FIELD=VALUE, got 'lr'"),
    ("train-set-no-name", ["train", "--set", "=3"], "--set expects FIELD=VALUE, got '=3'"),
    ("train-set-preset", ["train", "--set", "preset=gpu"], "give it as --preset, got 'preset=gpu'"),
    ("train-tasks-int", ["train", "--set", "tasks=5"], "tasks must be a list of strings, got 5"),
    ("train-tasks-item", ["train", "--set", "tasks=[1]"], "tasks[0] must be a string, got 1"),
    ("train-bool-int", ["train", "--set", "restart_positions=1"],
     "restart_positions must be a bool (true or false), got 1"),
    ("train-dict-list", ["train", "--set", "rope_params=[1]"], "rope_params must be a dict"),
    ("train-optional-float", ["train", "--set", "task_fraction_final=abc"],
     "task_fraction_final must be a number or null (None), got 'abc'"),
    ("train-dtype-int", ["train", "--set", "dtype=5"], "dtype must be a string, got 5"),
    ("train-preset", ["train", "--preset", "tiny"], "invalid choice: 'tiny'"),
    ("train-stage", ["train", "--stage", "finetune"], "invalid choice: 'finetune'"),
    ("train-steps-flag", ["train", "--steps", "x"], "invalid int value: 'x'"),
    ("train-target-len", ["train", "--target-len", "1.5"], "invalid int value: '1.5'"),
    ("eval-mc", ["eval", "--mc", "0"], "argument --mc: must be a positive integer, got '0'"),
    ("eval-windows", ["eval", "--windows", "0"], "argument --windows: must be a positive integer"),
    ("eval-chunk", ["eval", "--chunk", "0"], "argument --chunk: must be a positive integer"),
    ("eval-batch-size", ["eval", "--batch-size", "0"],
     "argument --batch-size: must be a positive integer, got '0'"),
    ("eval-repeats", ["eval", "--repeats", "-1"], "argument --repeats: must be a positive integer"),
    ("eval-lengths", ["eval", "--lengths", "128,0"], "--lengths must be positive integers"),
    ("eval-depths-nan", ["eval", "--depths", "50,nan"], "--depths must be finite numbers"),
    ("eval-depths-range", ["eval", "--depths", "120"], "percentages in [0, 100]; got [120.0]"),
    ("eval-tasks", ["eval", "--tasks", "sudoku"], "unknown task(s) ['sudoku']"),
    ("eval-rope", ["eval", "--rope", "ntk2"], "unknown RoPE variant(s) ['ntk2']"),
    ("eval-preset", ["eval", "--preset", "tiny"], "invalid choice: 'tiny'"),
    ("eval-dtype", ["eval", "--dtype", "float8"], "invalid choice: 'float8'"),
    ("eval-gen-length", ["eval", "--gen-length", "abc"], "--gen-length must be an integer or"),
    ("eval-corpus", ["eval", "--corpus", "/no/such.jsonl"], "corpus '/no/such.jsonl' does not"),
    ("eval-checkpoint", ["eval", "--checkpoint", "/no/such/dir"],
     "checkpoint directory '/no/such/dir' does not exist"),
    ("rope-target-len", ["rope", "--model", "llada-8b", "--target-len", "0"], "got 0"),
    ("rope-method", ["rope", "--model", "llada-8b", "--target-len", "99", "--method", "foo"],
     "unknown --method 'foo'"),
    ("rope-head-dim", ["rope", "--head-dim", "7", "--base", "1e4", "--train-len", "10",
                       "--target-len", "99"], "positive even integer, got 7"),
    ("rope-factor", ["rope", "--model", "llada-8b", "--target-len", "99", "--factor", "0.5"],
     "factor must be a finite number >= 1, got 0.5"),
    ("rope-model", ["rope", "--model", "gpt5", "--target-len", "99"], "invalid choice: 'gpt5'"),
    ("rope-missing", ["rope", "--target-len", "99"], "give --model or all of --head-dim"),
    ("reproduce-preset", ["reproduce", "--preset", "tiny"], "invalid choice: 'tiny'"),
    ("gate-design", ["gate", "--design", "tiny"], "invalid choice: 'tiny'"),
    ("gate-bases-word", ["gate", "--bases", "x"],
     "expected comma-separated base seeds, got 'x'"),
    ("gate-bases-foreign", ["gate", "--bases", "101,7"],
     "--bases [7] are not bases of design 'cpu-gated'; its bases are 101, 102"),
    ("reproduce-notebooks", ["reproduce", "--notebooks", "99"],
     "unknown notebook number(s) ['99']"),
    ("reproduce-dir", ["reproduce", "--notebook-dir", "/no/such"],
     "notebook folder '/no/such' does not exist"),
    ("reproduce-p", ["reproduce", "-p", "foo"],
     "-p expects NAME=VALUE with a Python name, got 'foo'"),
    ("reproduce-reserved", ["reproduce", "-p", "output_dir=x"],
     "-p output_dir: set it with --executed instead"),
    ("train-model-typo", ["train", "--preset", "smoke", "--set", "model.n_layer=3"],
     "unknown model (LLaDAConfig) field(s) ['model.n_layer']; known: ['activation_checkpointing'"),
    ("train-model-zero", ["train", "--preset", "smoke", "--set", "model.n_layers=0"],
     "model: n_layers must be a positive integer, got 0"),
    ("train-model-type", ["train", "--preset", "smoke", "--set", "model.d_model=abc"],
     "model.d_model must be an integer, got 'abc'"),
    ("train-packing", ["train", "--preset", "smoke", "--set", "packing=zigzag"],
     "unknown packing 'zigzag'; choose one of direct"),
    ("train-lr-negative", ["train", "--preset", "smoke", "--set", "lr=-1"], "got lr -1.0"),
    ("train-fraction", ["train", "--preset", "smoke", "--set", "task_fraction=1.5"],
     "task_fraction must lie in [0, 1], got 1.5"),
    ("train-corpus", ["train", "--preset", "smoke", "--corpus", "/no/such.jsonl"],
     "corpus '/no/such.jsonl' does not exist"),
    ("train-extend-no-init", ["train", "--preset", "smoke", "--stage", "extend"],
     "stage 'extend' needs init"),
    ("train-extend-missing", ["train", "--preset", "smoke", "--stage", "extend", "--init",
                              "/no/such/run"], "no model at '/no/such/run'"),
    ("train-extend-mismatch", ["train", "--preset", "smoke", "--stage", "extend", "--init",
                               "{init}"], "was not trained at preset 'smoke': vocab_size 4096 vs "
     "512, d_model 512 vs 64, n_heads 8 vs 2, n_layers 8 vs 2, mlp_hidden_size 1536 vs 128, "
     "rope_theta 2000.0 vs 110.0, max_sequence_length 256 vs 64 (saved vs preset)"),
    ("eval-no-tokenizer", ["eval", "--checkpoint", "{no_tokenizer}", "--tasks", "loss"],
     "no tokenizer.json in checkpoint directory '{no_tokenizer}'"),
    ("eval-no-weights", ["eval", "--checkpoint", "{no_weights}", "--tasks", "loss"],
     "no model.safetensors or model.safetensors.index.json in {no_weights}"),
    ("train-extend-target-len", ["train", "--preset", "smoke", "--stage", "extend",
                                 "--target-len", "32"],
     "seq_len 32 (--target-len) is too short for the preset's retrieval documents of at least 64 "
     "tokens: choose a seq_len above 64, or set task_lengths=[lo, hi] with lo < hi <= 32"),
    ("train-init-truncated", ["train", "--preset", "smoke", "--stage", "extend", "--init",
                              "{init_truncated}"],
     "{init_truncated}/model/model.safetensors is not a readable safetensors file"),
    ("train-init-garbage", ["train", "--preset", "smoke", "--stage", "extend", "--init",
                            "{init_garbage}"],
     "{init_garbage}/model/model.safetensors is not a readable safetensors file"),
    ("train-out-unwritable", ["train", "--preset", "smoke", "--out", UNWRITABLE + "/run"],
     f"--out '{UNWRITABLE}/run' is not writable: cannot create anything in '/proc'"),
    ("train-out-under-a-file", ["train", "--preset", "smoke", "--out", "{a_file}/run"],
     "--out '{a_file}/run' cannot be a folder: '{a_file}' is a file"),
    ("eval-checkpoint-truncated", ["eval", "--checkpoint", "{checkpoint_truncated}"],
     "{checkpoint_truncated}/model.safetensors is not a readable safetensors file"),
    ("eval-checkpoint-garbage", ["eval", "--checkpoint", "{checkpoint_garbage}"],
     "{checkpoint_garbage}/model.safetensors is not a readable safetensors file"),
    ("eval-device", ["eval", "--checkpoint", "{checkpoint}", "--device", "nope"],
     "unknown --device 'nope'; choose cpu, cuda, cuda:N or auto"),
    ("eval-out-unwritable", ["eval", "--checkpoint", "{checkpoint}", "--out", UNWRITABLE],
     f"--out '{UNWRITABLE}' is not writable"),
    ("eval-model-type", ["eval", "--checkpoint", "{olmo}"],
     "{olmo}/config.json has model_type 'olmo'; minillada implements LLaDA's architecture only: "
     "model_type 'llada'"),
    ("eval-broken-config", ["eval", "--checkpoint", "{broken_config}"],
     "{broken_config}/config.json is not valid JSON (Expecting ':' delimiter at line 1 column "),
    ("train-init-model-type", ["train", "--preset", "llada-8b", "--stage", "extend", "--init",
                               "{olmo}"], "{olmo}/config.json has model_type 'olmo'"),
    ("train-context-parallel", ["train", "--preset", "smoke", "--context-parallel", "0"],
     "context_parallel must be >= 1, got 0"),
    ("train-dry-run-gpu-memory", ["train", "--preset", "llada-8b", "--stage", "extend",
                                  "--dry-run", "--gpu-memory", "0"],
     "--gpu-memory must be a positive number of GiB, got 0.0"),
    ("train-gpu-memory-without-dry-run", ["train", "--preset", "llada-8b", "--stage", "extend",
                                         "--gpu-memory", "80"],
     "--gpu-memory 80 plans a --dry-run only"),
    ("prepare-no-source", ["prepare"], "one of the arguments --tokenizer --preset is required"),
    ("prepare-corpus", ["prepare", "--preset", "smoke", "--corpus", "/no/such.jsonl"],
     "corpus '/no/such.jsonl' does not exist"),
    ("prepare-tokenizer", ["prepare", "--tokenizer", "/no/such/model"],
     "no model at '/no/such/model'"),
    ("prepare-no-tokenizer-json", ["prepare", "--tokenizer", "{no_weights}"],
     "no tokenizer.json in '{no_weights}'"),
    ("prepare-vocab-size", ["prepare", "--tokenizer", "{checkpoint}", "--vocab-size", "512"],
     "--vocab-size sizes the BPE tokenizer of --preset"),
    ("train-init-broken-config", ["train", "--preset", "smoke", "--stage", "extend", "--init",
                                  "{broken_config}"], "{broken_config}/config.json is not valid "
     "JSON"),
    ("reproduce-out-unwritable", ["reproduce", "--preset", "smoke", "--notebooks", "01",
                                  "--out", UNWRITABLE], f"--out '{UNWRITABLE}/"),
    ("reproduce-figures-unwritable", ["reproduce", "--preset", "smoke", "--notebooks", "01",
                                      "--figures", UNWRITABLE],
     f"--figures '{UNWRITABLE}' is not writable"),
]


def make_folders(root: Path) -> dict[str, Path]:
    """What the cases name: inits and checkpoints (config.json, weights, tokenizer.json) with one
    fault each, a healthy checkpoint and a plain file (the checks read files only, so nothing is
    trained)."""
    import numpy as np
    from safetensors.numpy import save_file

    from minillada.training.presets import get_preset

    def model(folder: Path, config: dict, weights: bytes | None, tokenizer: bool = False) -> Path:
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
        if weights is not None:
            (folder / "model.safetensors").write_bytes(weights)
        if tokenizer:
            (folder / "tokenizer.json").write_text("{}")  # checked for presence only
        return folder

    save_file({"w": np.zeros(64, dtype=np.float32)}, root / "valid.safetensors")
    valid = (root / "valid.safetensors").read_bytes()
    garbage = b"not a safetensors file " * 8
    smoke = get_preset("smoke")
    smoke_model = {**smoke.model, "max_sequence_length": smoke.train_len, "model_type": "llada"}
    llada = {"model_type": "llada"}  # what the eval checks read of a config before torch
    (root / "a-file").write_text("a file, not a folder")
    folders = {
        "init": model(root / "gpu-init" / "model",
                      {**get_preset("gpu").model, "model_type": "llada"}, valid).parent,
        "init_truncated": model(root / "init-truncated" / "model", smoke_model,
                                valid[:-10]).parent,
        "init_garbage": model(root / "init-garbage" / "model", smoke_model, garbage).parent,
        "no_tokenizer": model(root / "no-tokenizer", llada, valid),
        "no_weights": model(root / "no-weights", llada, None),
        "checkpoint": model(root / "checkpoint", llada, valid, tokenizer=True),
        "checkpoint_truncated": model(root / "checkpoint-truncated", llada, valid[:-10],
                                      tokenizer=True),
        "checkpoint_garbage": model(root / "checkpoint-garbage", llada, garbage, tokenizer=True),
        "olmo": model(root / "olmo", {**llada, "model_type": "olmo"}, valid, tokenizer=True),
        "broken_config": model(root / "broken-config", llada, valid, tokenizer=True),
        "a_file": root / "a-file",
    }
    (folders["broken_config"] / "config.json").write_text('{"model_type": "llada", "d_model"')
    return folders


def complete_argv(argv: list[str], out: Path, folders: dict[str, Path]) -> list[str]:
    """`argv` with its {folders} filled in and the required arguments it lacks (a checkpoint,
    an out folder)."""
    argv = [arg.format(**folders) for arg in argv]
    if argv[0] == "eval" and "--checkpoint" not in argv:
        argv += ["--checkpoint", str(out.parent)]
    if argv[0] in ("train", "eval", "reproduce", "gate") and "--out" not in argv:
        argv += ["--out", str(out)]
    return argv


# Runs the command line and prints whether torch was imported (stdout) beside the error (stderr).
REFUSE = ("import sys, atexit\n"
          "atexit.register(lambda: print('TORCH', 'torch' in sys.modules))\n"
          "from minillada.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


def refuse(argv: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run `minillada ARGV` in a fresh process in `cwd`: (the process, seconds to exit)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", REFUSE, *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    return done, time.perf_counter() - start


def _check_line(command: str, code: int, stderr: str, expected: str) -> None:
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"minillada {command}: error: "), lines[0]
    assert expected in lines[0], lines[0]


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    if not TIMES:
        return
    print(f"\n{'case':<28} {'kind':<16} seconds")
    for name, kind, seconds in TIMES:
        print(f"{name:<28} {kind:<16} {seconds:6.2f}")
    for kind in sorted({k for _, k, _ in TIMES}):
        values = [s for _, k, s in TIMES if k == kind]
        print(f"{kind}: {len(values)} cases, median {statistics.median(values):.2f} s, "
              f"max {max(values):.2f} s")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return make_folders(tmp_path_factory.mktemp("bad"))


def _listing(*roots: Path) -> set[Path]:
    return {path for root in roots for path in root.rglob("*")}


@pytest.mark.parametrize(("argv", "expected"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_without_torch_or_a_trace(argv, expected, folders, tmp_path, request):
    out = tmp_path / "out"
    before = _listing(tmp_path, folders["init"].parent)
    done, seconds = refuse(complete_argv(argv, out, folders), tmp_path)
    TIMES.append((request.node.callspec.id, "cli, no torch", seconds))
    _check_line(argv[0], done.returncode, done.stderr, expected.format(**folders))
    assert "TORCH False" in done.stdout, "the check imported torch"
    assert _listing(tmp_path, folders["init"].parent) == before, "a refused command wrote"


def test_cli_module_entry_point_fails_the_same(tmp_path, request):
    """`python -m minillada` itself (no wrapper): one line, exit 2."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "minillada", "train", "--set", "lr=abc",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    TIMES.append(("python -m minillada", "cli, no torch", time.perf_counter() - start))
    _check_line("train", done.returncode, done.stderr, "lr must be a number, got 'abc'")
    assert not out.exists()


# --------------------------------------------------------------------------- the Python API


def _api_cases():
    from minillada.data.packing import pack_documents
    from minillada.data.tasks import make_task_sample
    from minillada.modeling.model import LLaDAConfig
    from minillada.rope.laws import compute_rope
    from minillada.training.config import TrainConfig, make_config
    from minillada.training.presets import get_preset

    smoke = lambda **kw: make_config("smoke", "pretrain", "unused", **kw)  # noqa: E731
    return {
        "make_config-lr-str": (lambda: smoke(lr="abc"), ValueError,
                               "lr must be a number, got 'abc' (str)"),
        "make_config-steps-bool": (lambda: smoke(steps=True), ValueError,
                                   "steps must be an integer, got True (bool)"),
        "make_config-steps-float": (lambda: smoke(steps=2.5), ValueError,
                                    "steps must be an integer, got 2.5"),
        "make_config-betas-short": (lambda: smoke(betas=(0.9,)), ValueError,
                                    "betas must be a list of 2 numbers, got (0.9,)"),
        "make_config-betas-str": (lambda: smoke(betas=("a", 0.9)), ValueError,
                                  "betas[0] must be a number, got 'a'"),
        "make_config-model-int": (lambda: smoke(model=5), ValueError,
                                  "model must be a dict (JSON object), got 5"),
        "make_config-model-typo": (lambda: smoke(model={"n_layer": 2}), ValueError,
                                   "unknown model (LLaDAConfig) field(s) ['model.n_layer']"),
        "make_config-model-zero": (lambda: smoke(model={"d_model": 0}), ValueError,
                                   "d_model must be a positive integer, got 0"),
        "make_config-model-qkv": (lambda: smoke(model={"include_qkv_bias": "yes"}), ValueError,
                                  "model.include_qkv_bias must be a bool (true or false)"),
        "make_config-unknown": (lambda: smoke(learning_rate=1.0), ValueError,
                                "unknown TrainConfig field(s) ['learning_rate']"),
        "make_config-preset": (lambda: make_config("tiny", "pretrain", "x"), ValueError,
                               "unknown preset 'tiny'"),
        "make_config-stage": (lambda: make_config("smoke", "finetune", "x"), ValueError,
                              "unknown stage 'finetune'"),
        "make_config-inf": (lambda: smoke(grad_clip=float("inf")), ValueError,
                            "grad_clip must be a finite number, got inf"),
        "TrainConfig-seed-str": (lambda: TrainConfig(seed="1"), ValueError,
                                 "seed must be an integer, got '1' (str)"),
        "TrainConfig-optional": (lambda: TrainConfig(task_curriculum_steps=1.5), ValueError,
                                 "task_curriculum_steps must be an integer or null (None)"),
        "TrainConfig-dtype": (lambda: TrainConfig(dtype="float16"), ValueError,
                              "unknown dtype 'float16'"),
        "LLaDAConfig-layers": (lambda: LLaDAConfig(n_layers=0), ValueError,
                               "n_layers must be a positive integer, got 0"),
        "LLaDAConfig-theta": (lambda: LLaDAConfig(rope_theta=-1.0), ValueError,
                              "rope_theta must be > 0, got -1.0"),
        "get_preset": (lambda: get_preset("tiny"), ValueError,
                       "unknown preset 'tiny'; choose one of ['cpu', 'gpu', 'llada-8b', 'smoke']"),
        "compute_rope-variant": (lambda: compute_rope("ntk2", 16, 1e4, 64, 128), ValueError,
                                 "ntk2"),
        "compute_rope-head-dim": (lambda: compute_rope("default", 7, 1e4, 64), ValueError,
                                  "got 7"),
        "pack_documents-empty": (lambda: pack_documents([], 8, "eod", eod_token_id=1),
                                 ValueError, "no documents to pack"),
        "pack_documents-seq-len": (lambda: pack_documents([[1, 2]], 1, "eod", eod_token_id=0),
                                   ValueError, "seq_len must be an integer >= 2, got 1"),
        "pack_documents-strategy": (lambda: pack_documents([[1, 2]], 4, "zigzag"), ValueError,
                                    "unknown packing strategy 'zigzag'"),
        "pack_documents-negative": (lambda: pack_documents([[1, 2], [3, -4]], 4, "direct"),
                                    ValueError, "token ids must be non-negative integers; "
                                    "document 1 holds -4 at position 1"),
        "pack_documents-float": (lambda: pack_documents([[1.5, 2]], 4, "direct"), ValueError,
                                 "document 0 holds 1.5 at position 0"),
        "pack_documents-text": (lambda: pack_documents("def f(): pass", 4, "direct"),
                                ValueError, "docs must be token-id sequences (lists of "
                                "non-negative integers), got text; tokenize it first"),
        "make_task_sample-none": (lambda: make_task_sample(None, "passkey", 100), ValueError,
                                  "tokenizer must be a Hugging Face tokenizer"),
        "make_config-out-none": (lambda: make_config("smoke", "pretrain", None), ValueError,
                                 "out must be a folder path (a non-empty str or os.PathLike), "
                                 "got None"),
        "make_config-target-len": (lambda: make_config("smoke", "extend", "x", seq_len=32),
                                   ValueError, "seq_len 32 (--target-len) is too short for the "
                                   "preset's retrieval documents of at least 64 tokens"),
    }


API_NAMES = [
    "make_config-lr-str", "make_config-steps-bool", "make_config-steps-float",
    "make_config-betas-short", "make_config-betas-str", "make_config-model-int",
    "make_config-model-typo", "make_config-model-zero", "make_config-model-qkv",
    "make_config-unknown", "make_config-preset", "make_config-stage", "make_config-inf",
    "TrainConfig-seed-str", "TrainConfig-optional", "TrainConfig-dtype", "LLaDAConfig-layers",
    "LLaDAConfig-theta", "get_preset", "compute_rope-variant", "compute_rope-head-dim",
    "pack_documents-empty", "pack_documents-seq-len", "pack_documents-strategy",
    "pack_documents-negative", "pack_documents-float", "pack_documents-text",
    "make_task_sample-none", "make_config-out-none", "make_config-target-len",
]


@pytest.mark.parametrize("name", API_NAMES)
def test_api_refuses(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a refusal writes nothing, not even a folder named "None"
    call, error, message = _api_cases()[name]
    with pytest.raises(error) as raised:
        call()
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not list(tmp_path.iterdir())


def test_api_cases_are_all_listed():
    assert sorted(_api_cases()) == sorted(API_NAMES)


def test_values_are_converted_where_they_enter(tmp_path):
    from minillada.training.config import TrainConfig, make_config

    config = TrainConfig(tasks="passkey", betas=[0.9, 0.99], lr=1)
    assert config.tasks == ("passkey",)  # one name, not its letters
    assert config.betas == (0.9, 0.99) and isinstance(config.lr, float)
    made = make_config("smoke", "pretrain", tmp_path, tasks=["niah", "passkey"], lr=2)
    assert made.tasks == ("niah", "passkey") and made.lr == 2.0
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "a"}\n')
    assert make_config("smoke", "pretrain", tmp_path, corpus=corpus).corpus == str(corpus)


def test_set_tasks_is_one_task(tmp_path):
    from minillada.commands.train import parse_overrides
    from minillada.training.config import check_overrides

    assert check_overrides(parse_overrides(["tasks=passkey"])) == {"tasks": ("passkey",)}
    assert check_overrides(parse_overrides(['tasks=["niah","passkey"]'])) == {
        "tasks": ("niah", "passkey")}


def test_every_preset_passes_its_own_type_checks(tmp_path):
    from minillada.training.config import check_overrides
    from minillada.training.presets import PRESETS

    for preset in PRESETS.values():
        for stage in ("pretrain", "extend"):
            check_overrides(getattr(preset, stage))


def test_torch_free_names_match_the_modules():
    import inspect

    from minillada.common import names
    from minillada.data import packing, tasks
    from minillada.modeling import attention, model_shape
    from minillada.modeling.model import LLaDAConfig

    assert tuple(tasks.TASKS) == names.TASK_NAMES
    builders = {name: getattr(task, "func", task) for name, task in tasks.TASKS.items()}
    assert tuple(n for n, b in builders.items() if b is tasks.niah) == names.HAYSTACK_TASKS
    assert set(names.KEY_TASKS) == {n for n, b in builders.items() if b in (tasks.niah,
                                                                          tasks.passkey)}
    assert tuple(packing.PACKING_STRATEGIES) == names.PACKING_NAMES
    assert tuple(attention.ATTENTION_BACKENDS) == names.ATTENTION_BACKEND_NAMES
    # LLaDAConfig's fields as read from model.py's source: its real signature.
    signature = inspect.signature(LLaDAConfig.__init__).parameters.values()
    assert model_shape.model_fields() == {
        p.name: (inspect.get_annotations(LLaDAConfig.__init__, eval_str=True)[p.name], p.default)
        for p in signature if p.name not in ("self", "kwargs")}


def test_samples_take_the_niah_haystack_from_their_corpus_split(monkeypatch):
    """`minillada eval --corpus`, the study and the trainer all build samples this way."""
    from minillada.data import tasks

    seen = []
    monkeypatch.setattr(tasks, "make_task_sample", lambda tokenizer, task, length, depth, seed,
                        **params: seen.append((task, params)))
    make = tasks.sample_maker(None, key_kind="code", key_digits=2, corpus="/data/my.jsonl",
                              split="test", split_seed=3)
    for task in ("niah", "niah_multikey", "passkey"):
        make(task, 100, 50.0, 0)
    haystack = {"haystack": "/data/my.jsonl", "haystack_split": "test", "haystack_split_seed": 3}
    keys = {"key_digits": 2, "key_kind": "code"}
    assert seen == [("niah", {**keys, **haystack}), ("niah_multikey", {**keys, **haystack}),
                    ("passkey", keys)]
