"""Inputs that used to train or export silently wrong, now refused or read right: a config of
another architecture, a partial rotary factor kept inside `rope_parameters`, a base-only RoPE
variant exported with the original base, FlexAttention on a CPU, a per-pair variant found only
at export; and a run refused after it started leaves no folder behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from llada_checkpoint import LLADA_8B, TINY, write_corpus, write_released_checkpoint

from minillada.modeling.model import LLaDAModelLM
from minillada.released.export import exported_config
from minillada.released.llada import base_only_variants, llada_config, rope_geometry
from minillada.released.llada import scaled_rope_config as scaled
from minillada.released.model_files import read_model_config
from minillada.rope.formulas import default_inv_freq
from minillada.rope.laws import ROPE_VARIANTS, RopeVariant, compute_rope, rope_linear
from minillada.training import trainer
from minillada.training.config import check_run_files, make_config, prepare_run
from minillada.training.trainer import train


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


# ------------------------------------------------------------------------------ model_type


def test_a_config_of_another_architecture_is_refused_naming_its_model_type(tmp_path):
    with pytest.raises(ValueError, match="config has model_type 'olmo'; minillada implements "
                                         "LLaDA's architecture only: model_type 'llada'"):
        llada_config({**TINY, "model_type": "olmo"})  # LLaDA's field names, another model
    with pytest.raises(ValueError, match="config has no model_type"):
        llada_config({k: v for k, v in TINY.items() if k != "model_type"})
    released = write_released_checkpoint(tmp_path / "olmo", config_changes={"model_type": "olmo"})
    config = make_config("llada-8b", "extend", tmp_path / "run", init=str(released))
    with pytest.raises(ValueError, match=f"{released}/config.json has model_type 'olmo'"):
        check_run_files(config)
    assert not (tmp_path / "run").exists()


def test_a_broken_config_json_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llada", "d_model": 32,')
    with pytest.raises(ValueError, match=f"{tmp_path}/config.json is not valid JSON "
                                         r"\(Expecting property name"):
        read_model_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{tmp_path}/config.json holds a JSON list, not an "
                                         "object"):
        read_model_config(tmp_path)
    (tmp_path / "config.json").write_bytes(b'{"model_type": "\xff"}')
    with pytest.raises(ValueError, match=r"config.json is not valid JSON \(not UTF-8\)"):
        read_model_config(tmp_path)


# ------------------------------------------------------------------------------ rotary dim

# A LLaDA2-style (Hugging Face) config: head dim 128, half of it rotary, the factor kept inside
# rope_parameters as transformers >= 5 writes it (sizes illustrative).
LLADA2 = {"model_type": "llada2_moe", "hidden_size": 2048, "num_attention_heads": 16,
          "head_dim": 128, "max_position_embeddings": 8192,
          "rope_parameters": {"rope_type": "default", "rope_theta": 600000.0,
                              "partial_rotary_factor": 0.5}}
TOP_LEVEL = {**LLADA2, "partial_rotary_factor": 0.5,
             "rope_parameters": {"rope_type": "default", "rope_theta": 600000.0}}


def test_partial_rotary_factor_counts_wherever_the_config_keeps_it():
    half = {"head_dim": 64, "base": 600000.0, "train_len": 8192}
    assert rope_geometry(LLADA2) == rope_geometry(TOP_LEVEL) == half
    inside = scaled(LLADA2, "diffusion_ntk", 65536)["rope_parameters"]
    top = scaled(TOP_LEVEL, "diffusion_ntk", 65536)["rope_parameters"]
    assert inside["rope_theta"] == top["rope_theta"]
    assert inside["partial_rotary_factor"] == 0.5
    # NTK's base is a law of the rotary dim: b s^(d/(d-2)) with d = 64, not 128
    ntk = scaled(LLADA2, "ntk", 65536)["rope_parameters"]["rope_theta"]
    assert ntk == pytest.approx(600000.0 * 8 ** (64 / 62), rel=1e-9)
    full = {**LLADA2, "rope_parameters": {"rope_type": "default", "rope_theta": 600000.0}}
    assert scaled(full, "ntk", 65536)["rope_parameters"]["rope_theta"] == pytest.approx(
        600000.0 * 8 ** (128 / 126), rel=1e-9)
    yarn = scaled(LLADA2, "yarn", 32768)["rope_parameters"]
    assert (yarn["rope_type"], yarn["partial_rotary_factor"]) == ("yarn", 0.5)  # kept
    with pytest.raises(ValueError, match=r"partial_rotary_factor 0\.25 at the top level and 0\.5 "
                                         r"in rope_parameters; keep one"):
        rope_geometry({**LLADA2, "partial_rotary_factor": 0.25})
    with pytest.raises(ValueError, match=r"partial_rotary_factor 0\.3 must lie in"):
        rope_geometry({**TOP_LEVEL, "partial_rotary_factor": 0.3})


# ------------------------------------------------------------------------------ base-only RoPE


def _triple_base(head_dim, base, train_len, target_len):
    """A base-only law without a closed form in `rope_summary`."""
    return default_inv_freq(head_dim, 3 * base), 1.0


@pytest.fixture
def with_new_variants(monkeypatch):
    """The registry with a new base-only variant, and one declared base-only that is not."""
    monkeypatch.setitem(ROPE_VARIANTS, "triple_base", RopeVariant(
        "triple_base", _triple_base, "3x base", "#000000", "o", "default"))
    monkeypatch.setitem(ROPE_VARIANTS, "mislabelled_pi", RopeVariant(
        "mislabelled_pi", rope_linear, "PI declared base-only", "#000000", "o", "default"))


def test_every_base_only_variant_exports_the_base_of_its_own_frequencies(with_new_variants):
    head_dim = LLADA_8B["d_model"] // LLADA_8B["n_heads"]
    variants = [v for v in base_only_variants() if v not in ("default", "mislabelled_pi")]
    assert {"ntk", "ntk_critical", "diffusion_ntk", "triple_base"} <= set(variants)
    model = LLaDAModelLM(llada_config(TINY))
    for variant in variants:
        inv_freq, _ = compute_rope(variant, head_dim, 500000.0, 4096, 65536)
        theta = scaled(LLADA_8B, variant, 65536)["rope_theta"]
        # LLaDA's code reads only rope_theta: its default frequencies must be the variant's
        torch.testing.assert_close(default_inv_freq(head_dim, theta), inv_freq, rtol=1e-5,
                                   atol=0, msg=variant)
        model.set_rope(variant, target_len=64)
        exported = exported_config(TINY, model)["rope_theta"]
        inv_freq, _ = compute_rope(variant, 8, TINY["rope_theta"], 16, 64)
        torch.testing.assert_close(default_inv_freq(8, exported), inv_freq, rtol=1e-5, atol=0,
                                   msg=variant)
    assert scaled(LLADA_8B, "triple_base", 65536)["rope_theta"] == pytest.approx(1.5e6, rel=1e-6)
    with pytest.raises(ValueError, match=r"'mislabelled_pi' is declared base-only .* but its "
                                         r"frequencies are no single base's"):
        scaled(LLADA_8B, "mislabelled_pi", 65536)


# ------------------------------------------------------------------------------ refused runs


def test_flex_attention_on_a_cpu_is_refused_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: FlexAttention trains here")
    released = write_released_checkpoint(tmp_path / "LLaDA-tiny")
    corpus = write_corpus(tmp_path / "corpus.jsonl")
    config = make_config("llada-8b", "extend", tmp_path / "run", init=str(released),
                         corpus=str(corpus), seq_len=64)  # the recipe's flex backend
    with pytest.raises(ValueError, match=r"attention_backend 'flex' trains on CUDA only .* add "
                                         r"--set attention_backend=per_document"):
        prepare_run(config)
    done = subprocess.run(
        [sys.executable, "-m", "minillada", "train", "--preset", "llada-8b", "--stage", "extend",
         "--init", str(released), "--corpus", str(corpus), "--target-len", "64", "--out",
         str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == [
        "minillada train: error: attention_backend 'flex' trains on CUDA only (FlexAttention has "
        "no backward on a CPU) and this machine has no CUDA device: add --set "
        "attention_backend=per_document (the same attention, one SDPA call per document)"]
    assert not (tmp_path / "run").exists()


def test_a_per_pair_variant_is_refused_before_a_released_run_trains(tmp_path):
    with pytest.raises(ValueError, match="rope 'yarn' sets per-pair frequencies, which LLaDA's "
                                         r"released format \(one rope_theta\) cannot hold"):
        make_config("llada-8b", "extend", tmp_path / "run", init="x", rope="yarn")


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(tmp_path, monkeypatch):
    def refused_step(self):
        raise ValueError("a task row cannot be built at this length")

    monkeypatch.setattr(trainer.Trainer, "train_step", refused_step)
    released = write_released_checkpoint(tmp_path / "LLaDA-tiny")
    corpus = write_corpus(tmp_path / "corpus.jsonl")

    def config(out):
        return make_config("llada-8b", "extend", out, init=str(released), corpus=str(corpus),
                           seq_len=64, attention_backend="per_document", dtype="float32",
                           steps=2, val_rows=2, progress=False)

    with pytest.raises(ValueError, match="a task row cannot be built"):
        train(config(tmp_path / "new" / "run"))
    assert not (tmp_path / "new" / "run").exists()  # no config.json, no run.lock
    (tmp_path / "kept").mkdir()  # a folder the run did not create is left as it was
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="a task row cannot be built"):
        train(config(tmp_path / "kept"))
    assert (tmp_path / "kept" / "notes.txt").read_text() == "mine"
    assert json.loads((tmp_path / "kept" / "config.json").read_text())["steps"] == 2
