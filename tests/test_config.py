"""TrainConfig is a plain value: building and validating one touches neither the hardware nor the
disk; `prepare_run` checks the files a run reads and resolves its dtype, once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from minillada.training import config as config_module
from minillada.training.config import TrainConfig, make_config, prepare_run
from minillada.training.precision import PrecisionChoice

ROOT = Path(__file__).resolve().parents[1]
# Runs in a fresh interpreter: after the imports, an audit hook records every file the process
# opens, so a config that read a checkpoint, a tokenizer or the precision probe's cache, or
# loaded torch to probe a matmul, is caught however it did it.
BUILD_WITHOUT_IO = """
import json, sys
from minillada.training.config import TrainConfig, make_config

init, corpus = sys.argv[1], sys.argv[2]
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
built = [TrainConfig(), TrainConfig(dtype="bfloat16", corpus=corpus),
         TrainConfig(preset="llada-8b", stage="extend", init=init, rope="diffusion_ntk")]
made = make_config("llada-8b", "extend", "out", init=init, corpus=corpus)
made.validate()
by_configs = list(opened)
open(init + "/config.json").close()  # the hook sees what a config would have opened
print(json.dumps({"opened": by_configs, "hook works": opened[-1].endswith("config.json"),
                  "torch": "torch" in sys.modules, "dtypes": [c.dtype for c in (*built, made)]}))
"""


def test_a_config_is_built_and_validated_without_hardware_or_disk(tmp_path):
    init = tmp_path / "released"  # a released checkpoint's folder: nothing of it may be read
    init.mkdir()
    (init / "config.json").write_text("{}")
    done = subprocess.run([sys.executable, "-c", BUILD_WITHOUT_IO, str(init),
                           str(tmp_path / "corpus.jsonl")], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    # (the llada-8b recipe asks for bfloat16 itself)
    assert seen == {"opened": [], "hook works": True, "torch": False,
                    "dtypes": ["auto", "bfloat16", "auto", "bfloat16"]}


def test_the_constructor_never_probes_and_prepare_run_resolves_once(monkeypatch, tmp_path):
    calls = []

    def choose(requested="auto", device_type=None):
        calls.append(requested)
        return PrecisionChoice(requested, "bfloat16", "pinned by the test")

    def refuse(*args, **kwargs):
        raise AssertionError("a TrainConfig probed the machine")

    monkeypatch.setattr(config_module, "choose_precision", refuse)
    config = make_config("smoke", "pretrain", tmp_path)
    assert config.dtype == "auto" and TrainConfig(**json.loads(json.dumps(
        {"preset": "smoke", "dtype": "auto"}))).dtype == "auto"
    monkeypatch.setattr(config_module, "choose_precision", choose)
    prepared = prepare_run(config)
    assert (prepared.dtype, calls) == ("bfloat16", ["auto"])
    assert prepared == TrainConfig(**{**config.__dict__, "dtype": "bfloat16"})
    float32 = make_config("smoke", "pretrain", tmp_path, dtype="float32")
    assert prepare_run(float32) is float32 and calls == ["auto"]  # nothing to resolve


def test_prepare_run_checks_the_files_the_values_do_not(tmp_path):
    config = make_config("smoke", "pretrain", tmp_path, corpus=str(tmp_path / "none.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"none\.jsonl' does not exist"):
        prepare_run(config)
    extend = make_config("smoke", "extend", tmp_path, init=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no model at"):
        prepare_run(extend)
