"""Presets: scale-matched to LLaDA-8B, and every stage builds a valid training run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.numpy import save_file

from minillada.evals.models import fixed_model
from minillada.evals.perplexity import ppl_at_lengths
from minillada.rope.formulas import critical_dim
from minillada.training.config import check_run_files, lr_at, make_config
from minillada.training.presets import PRESETS, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_critical_dimension_is_half_the_rotary_dim_like_llada_8b(name):
    preset = get_preset(name)
    train_len = preset.train_len
    assert critical_dim(128, 5e5, 4096) == 64  # LLaDA-8B, the scale the presets match
    assert critical_dim(preset.head_dim, preset.rope_theta, train_len) == preset.head_dim // 2
    assert (preset.target_len, preset.eval_max_len) == (16 * train_len, 32 * train_len)
    assert preset.eval_lengths[0] == train_len and preset.eval_lengths[-1] == 32 * train_len


@pytest.mark.parametrize("name", sorted(n for n, p in PRESETS.items() if not p.released))
def test_every_stage_builds_a_valid_run(name, tmp_path):
    """(A released recipe has no pretrain stage: tests/test_released.py.)"""
    preset = get_preset(name)
    pretrain = make_config(name, "pretrain", tmp_path / "pretrain")
    assert pretrain.seq_len == preset.train_len
    assert pretrain.model["d_model"] == preset.model["d_model"]
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({**preset.model,
                                                               "model_type": "llada"}))
    save_file({}, tmp_path / "model" / "model.safetensors")  # the check reads its header only
    extend = make_config(name, "extend", tmp_path / "extend", init=str(tmp_path))
    check_run_files(extend)  # an init of the preset's own dims
    assert extend.seq_len == preset.target_len and extend.model == {}
    for config in (pretrain, extend):  # the schedule reaches its peak, then ends at its floor
        assert lr_at(config, config.warmup_steps - 1) == pytest.approx(config.lr)
        assert lr_at(config, config.steps - 1) == pytest.approx(config.lr * config.min_lr_ratio)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_evaluation_grid_runs_at_t_train(name):
    """The preset's PPL chunk and Monte-Carlo draws run the PPL protocol at T_train: a model with
    uniform logits scores PPL = vocabulary size exactly, under both estimators."""
    preset, grid = get_preset(name), get_preset(name).evaluation
    vocab, length = 16, preset.train_len

    def uniform(input_ids, positions=None, doc_ids=None):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, vocab))

    documents = [list(range(4, 14)) * (length // 10 + 1)]
    table = ppl_at_lengths({"uniform": fixed_model(uniform)}, documents, [length],
                           mask_token_id=0, eod_token_id=1, chunk=grid.chunk, mc=grid.mc,
                           max_windows=1)
    assert table["value"].tolist() == pytest.approx([vocab, vocab])  # chunk_ppl and elbo
    assert set(table["mc"]) == {grid.mc}


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError,
                       match=r"preset 'laptop'; choose one of \['cpu', 'gpu', 'llada-8b', 'smoke'"):
        get_preset("laptop")
