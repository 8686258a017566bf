"""`minillada eval` on a smoke-trained checkpoint: one CSV and one figure per task, a summary line
per task, resumable retrieval grids, and bad input named before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from minillada import cli
from minillada.training.config import make_config
from minillada.training.trainer import train

LENGTHS = "128,256"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("eval")
    config = make_config("smoke", "pretrain", root / "pretrain", steps=4, save_every=4,
                         val_every=4, val_rows=2, progress=False)
    return str(train(config))


def evaluate(checkpoint: str, out, *extra: str) -> int:
    lengths = [] if "--lengths" in extra else ["--lengths", LENGTHS]
    return cli.main(["eval", "--checkpoint", checkpoint, "--preset", "smoke", "--out", str(out),
                     *lengths, *extra])


def test_every_task_writes_a_tidy_csv_a_figure_and_a_summary(checkpoint, tmp_path, capsys):
    assert evaluate(checkpoint, tmp_path, "--tasks", "loss,ppl,passkey,niah",
                    "--rope", "default,diffusion_ntk", "--target-len", "256") == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" ")[0] for line in summary] == ["keys:", "loss", "ppl", "passkey:",
                                                         "niah:", "wrote"]
    assert summary[-1] == (f"wrote loss.csv, loss.png, ppl.csv, ppl.png, passkey.csv, "
                           f"passkey.png, niah.csv, niah.png in {tmp_path}")
    for task in ("loss", "ppl", "passkey", "niah"):
        assert (tmp_path / f"{task}.png").stat().st_size > 10_000, task
        table = pd.read_csv(tmp_path / f"{task}.csv")
        assert set(table["model"]) == {"default", "diffusion_ntk"}, task
        assert sorted(set(table["length"])) == [128, 256], task
    niah = pd.read_csv(tmp_path / "niah.csv")
    assert len(niah) == 2 * 2 * 3  # models x lengths x the smoke preset's 3 depths
    assert niah["value"].between(0, 100).all() and niah["exact"].isin([0, 1, True, False]).all()
    loss = pd.read_csv(tmp_path / "loss.csv")
    # Paired: both variants are scored on the same windows at each length.
    counts = loss.groupby(["length", "model"]).size().unstack()
    assert (counts["default"] == counts["diffusion_ntk"]).all()


def test_keys_default_to_those_the_run_was_trained_with(checkpoint, tmp_path, capsys):
    assert evaluate(checkpoint, tmp_path / "own", "--tasks", "passkey") == 0
    out = capsys.readouterr().out
    assert "keys: 1-digit numbers (as the run was trained" in out and "chance 10%" in out
    assert evaluate(checkpoint, tmp_path / "two", "--tasks", "passkey", "--key-digits", "2") == 0
    out = capsys.readouterr().out
    assert "keys: 2-digit numbers (the rest as the run was trained)" in out
    assert "chance 1%" in out
    assert evaluate(checkpoint, tmp_path / "code", "--tasks", "passkey", "--key-kind", "code",
                    "--key-digits", "3") == 0
    out = capsys.readouterr().out
    assert "keys:" not in out and "chance 0.1%" in out


def test_a_rerun_resumes_the_retrieval_grid(checkpoint, tmp_path, capsys):
    assert evaluate(checkpoint, tmp_path, "--tasks", "passkey") == 0
    first = pd.read_csv(tmp_path / "passkey.csv")
    log = (tmp_path / "passkey.jsonl").read_text()
    assert evaluate(checkpoint, tmp_path, "--tasks", "passkey") == 0
    assert (tmp_path / "passkey.jsonl").read_text() == log  # nothing recomputed
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "passkey.csv"), first)


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        (["--tasks", "sudoku"], ValueError, r"unknown task\(s\) \['sudoku'\]"),
        (["--rope", "ntk2"], ValueError, r"unknown RoPE variant\(s\) \['ntk2'\]"),
        (["--depths", "50,120"], ValueError, r"percentages in \[0, 100\]; got \[120.0\]"),
        (["--gen-length", "12", "--block-length", "8"], ValueError,
         "gen_length=12 is not a multiple of block_length=8"),
        (["--corpus", "/no/such.jsonl"], FileNotFoundError, "/no/such.jsonl"),
        (["--tasks", "loss,niah", "--lengths", "64"], ValueError,
         "length=64 is too short for task 'niah'"),
    ],
)
def test_bad_input_is_named_before_any_work(checkpoint, tmp_path, extra, error, message, capsys):
    with pytest.raises(error, match=message):  # --debug: the exception itself
        evaluate(checkpoint, tmp_path / "out", "--debug", *extra)
    assert evaluate(checkpoint, tmp_path / "out", *extra) == 2  # one line, exit 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("minillada eval: error: ")
    assert not (tmp_path / "out").exists()


def test_a_refusal_inside_a_task_leaves_no_out_folder(checkpoint, tmp_path, capsys):
    corpus = tmp_path / "short.jsonl"  # documents far shorter than the window asked for
    corpus.write_text("".join(f'{{"text": "document {i} is short."}}\n' for i in range(400)))
    out = tmp_path / "new" / "out"
    assert evaluate(checkpoint, out, "--tasks", "loss", "--corpus", str(corpus),
                    "--lengths", "4096") == 2
    assert "fewer than one window of length 4096" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # nor the parent the command made


def test_a_run_folder_is_evaluated_through_its_model(checkpoint, tmp_path, capsys):
    run = Path(checkpoint).parent  # what `minillada train --out` made; the model is in model/
    for name, folder in (("run", run), ("model", checkpoint)):
        assert evaluate(str(folder), tmp_path / name, "--tasks", "loss", "--lengths", "128") == 0
    assert "keys: 1-digit numbers (as the run was trained" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "run" / "loss.csv"),
                                  pd.read_csv(tmp_path / "model" / "loss.csv"))


def test_a_checkpoint_without_weights_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llada"}')
    with pytest.raises(FileNotFoundError, match="safetensors"):
        evaluate(str(tmp_path), tmp_path / "out", "--debug", "--tasks", "loss")


def test_the_eval_command_does_not_import_the_trainer():
    code = ("import sys\n"
            "import minillada.commands.eval\n"
            "from minillada import cli\n"
            "try:\n"
            "    cli.main(['eval', '--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "leaked = sorted(m for m in sys.modules if m in ('minillada.training.trainer',"
            " 'minillada.claims.study', 'minillada.training.batches',"
            " 'minillada.modeling.distributed'))\n"
            "print('LEAKED', leaked)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LEAKED []" in done.stdout, done.stdout[-500:]
