"""The teaching models that ship with the package (`released.examples`): written whole from a
run, read back by name, refused clearly when unknown or missing."""

from __future__ import annotations

import json

import pytest
import torch

from minillada.data.corpus import get_tokenizer
from minillada.released.examples import (
    example_folder,
    example_provenance,
    load_example,
    write_example,
)
from minillada.training.config import make_config
from minillada.training.run_setup import build_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A smoke-preset model folder as a run exports it (float32 weights, tokenizer)."""
    folder = tmp_path_factory.mktemp("run") / "model"
    tokenizer = get_tokenizer(512)
    model = build_model(make_config("smoke", "pretrain", str(folder.parent), seed=3), tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_an_example_is_written_whole_in_bf16_and_read_back_in_float32(model_dir, tmp_path):
    written = write_example(model_dir, "base", {"run": "base-abc", "seed": 3}, tmp_path)
    assert sorted(p.name for p in written.iterdir()) == [
        "config.json", "model.safetensors", "provenance.json", "tokenizer.json",
        "tokenizer_config.json"]
    assert not list(tmp_path.glob(".*"))  # no staging folder left behind
    size = (written / "model.safetensors").stat().st_size
    assert size < 0.6 * (model_dir / "model.safetensors").stat().st_size  # bf16: half the bytes
    model, tokenizer = load_example("base", tmp_path)
    original = type(model).from_pretrained(model_dir).eval()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for mine, theirs in zip(model.parameters(), original.parameters(), strict=True):
        assert torch.equal(mine, theirs.to(torch.bfloat16).float())  # rounded once, to bf16
    assert example_provenance("base", tmp_path) == {"run": "base-abc", "seed": 3}
    assert tokenizer.mask_token_id == model.config.mask_token_id
    # written again: replaced whole
    write_example(model_dir, "base", {"run": "base-def"}, tmp_path)
    assert json.loads((written / "provenance.json").read_text()) == {"run": "base-def"}


def test_unknown_and_missing_examples_are_refused_by_name(tmp_path, model_dir):
    with pytest.raises(ValueError, match="unknown example model 'huge'; choose one of base, ultra"):
        example_folder("huge")
    with pytest.raises(ValueError, match="unknown example model 'huge'"):
        write_example(model_dir, "huge", {}, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"the example model 'ultra' is not in .*"
                                                r"claims\.teaching_models\.ship writes it"):
        load_example("ultra", tmp_path)


def test_the_shipped_models_name_the_gated_recipe_that_made_them():
    from minillada.claims.design import ARMS
    from minillada.claims.gate import GATE
    from minillada.claims.study import recipe_digest, trajectory_fields
    from minillada.claims.table_cache import digest
    from minillada.released.examples import EXAMPLES_DIR
    from minillada.training.presets import get_preset

    total = sum(path.stat().st_size for path in EXAMPLES_DIR.rglob("*") if path.is_file())
    assert total < 20 * 2**20  # under 20 MB, both models
    base, ultra = example_provenance("base"), example_provenance("ultra")
    config = make_config(base["preset"], "pretrain", "runs/cpu/base", seed=base["seed"],
                         dtype=base["dtype"])
    assert digest(trajectory_fields(config)) == base["digest"]  # the run of that recipe and seed
    assert base["recipe"] == recipe_digest(base["preset"])
    gate = base["gate"]
    assert gate["passed"] and gate["n"] >= GATE.min_samples and gate["base"] == base["seed"]
    assert gate["exact"] >= GATE.exact_min and min(gate["slots"]) >= GATE.slot_min
    assert ultra["base_digest"] == base["digest"] and ultra["stage"] == "extend"
    arm = ARMS[ultra["arm"]].train_overrides(get_preset(ultra["preset"]))
    assert (ultra["rope"], ultra["packing"]) == (arm["rope"], arm["packing"])
    assert ultra["seq_len"] == get_preset(ultra["preset"]).target_len


def test_the_shipped_base_retrieves_in_its_window():
    from minillada.figures.shipped import shipped_retrieval

    table = shipped_retrieval(example_provenance("base")["seq_len"], "default")
    in_window = table[table["model"].str.startswith("base")]
    assert in_window["exact"].sum() >= len(in_window) - 1, in_window
