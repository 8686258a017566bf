"""Presets: scale-matched to LLaDA-8B, and every stage builds a valid training run."""

from __future__ import annotations

import json

import pytest

from minillada.presets import PRESETS, get_preset
from minillada.rope import critical_dim
from minillada.train import make_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_critical_dimension_is_half_the_rotary_dim_like_llada_8b(name):
    preset = get_preset(name)
    train_len = preset.train_len
    assert critical_dim(128, 5e5, 4096) == 64  # LLaDA-8B, the scale the presets match
    assert critical_dim(preset.head_dim, preset.rope_theta, train_len) == preset.head_dim // 2
    assert (preset.target_len, preset.eval_max_len) == (16 * train_len, 32 * train_len)
    assert preset.eval_lengths[0] == train_len and preset.eval_lengths[-1] == 32 * train_len


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_stage_builds_a_valid_run(name, tmp_path):
    preset = get_preset(name)
    pretrain = make_config(name, "pretrain", tmp_path / "pretrain")
    assert pretrain.seq_len == preset.train_len
    assert pretrain.model["d_model"] == preset.model["d_model"]
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(preset.model))
    extend = make_config(name, "extend", tmp_path / "extend", init=str(tmp_path))
    assert extend.seq_len == preset.target_len and extend.model == {}
    for config in (pretrain, extend):
        assert config.batch_size % config.micro_batch_size == 0
        assert config.warmup_steps < config.steps


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_evaluation_grid(name):
    grid = get_preset(name).evaluation
    assert all(0 <= depth <= 100 for depth in grid.depths)
    assert min(grid.repeats, grid.mc, grid.windows) >= 1


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match=r"preset 'laptop'; choose one of \['cpu', 'gpu', 'smoke'"):
        get_preset("laptop")
