"""The designs: which runs a study trains, from which seeds, with which prompts."""

from __future__ import annotations

import pytest

from minillada.claims.design import ARMS, COMMITTED_DESIGN, DESIGNS, Design, Run, cross, get_design


def test_the_committed_design_is_the_frozen_one():
    design = get_design(COMMITTED_DESIGN)
    assert design.bases == (11, 12, 13, 14, 15) and len(design.runs) == 33
    # every packing arm on five bases (claim 4 needs five), the rest on three
    assert all(design.bases_of(arm) == design.bases for arm in ("adaptive", "direct", "eod"))
    for arm in ("direct_restart", "eod_restart", "default_rope", "short_retrieval"):
        assert design.bases_of(arm) == (11, 12, 13)
    assert {r.seed for r in design.runs} == {21, 22}
    assert design.eval_seed != design.selection_seed


def test_arms_are_the_extend_stage_with_their_changes():
    from minillada.training.config import check_overrides

    preset = get_design("cpu").preset
    assert ARMS["eod_restart"].train_overrides(preset) == {
        "rope": "diffusion_ntk", "packing": "eod", "restart_positions": True}
    assert ARMS["short_retrieval"].train_overrides(preset)["task_lengths"] == (64, 128)
    assert ARMS["default_rope"].train_overrides(preset)["rope"] == "default"
    for arm in ARMS.values():  # every arm's fields are TrainConfig fields of the right types
        for design in DESIGNS.values():
            check_overrides(arm.train_overrides(design.preset))


def test_the_extend_stage_packs_with_continuous_positions():
    from minillada.training.presets import get_preset

    for name in ("smoke", "cpu", "gpu"):
        assert get_preset(name).extend["restart_positions"] is False


def test_bad_designs_are_refused_with_the_value_named():
    runs = cross(("adaptive",), (1,), (2,))
    with pytest.raises(ValueError, match=r"unknown arm\(s\) \['nope'\]"):
        Design("x", "smoke", (1,), (Run("nope", 1, 2),), 1, 2, 4, 1, 4)
    with pytest.raises(ValueError, match=r"runs on bases \[3\] not in \(1,\)"):
        Design("x", "smoke", (1,), (Run("adaptive", 3, 2),), 1, 2, 4, 1, 4)
    with pytest.raises(ValueError, match="eval_seed and selection_seed must differ"):
        Design("x", "smoke", (1,), runs, 5, 5, 4, 1, 4)
    with pytest.raises(ValueError, match=r"loss_bases 2 must lie in \[1, 1\]"):
        Design("x", "smoke", (1,), runs, 1, 2, 4, 2, 4)
    with pytest.raises(ValueError, match="unknown preset 'huge'; choose one of smoke, cpu"):
        get_design("huge")
    with pytest.raises(ValueError, match=r"gated 2 must lie in \[0, 1\]"):
        Design("x", "smoke", (1,), runs, 1, 2, 4, 1, 4, gated=2)
    with pytest.raises(ValueError, match=r"loss_bases 3 must lie in \[1, 2\]"):
        Design("x", "smoke", (1, 2, 3), runs, 1, 2, 4, 3, 4, gated=2)  # 2 bases studied
    assert sorted(DESIGNS) == ["cpu", "cpu-gated", "cpu-seeds", "gpu", "smoke"]


def test_the_gated_design_is_the_pre_registered_one():
    """docs/science.md, "The gated design": candidates 101-115 in order, the first five that
    pass studied, ten arms on each with post-training seed 23, prompts of seeds 33 and 43."""
    design = get_design("cpu-gated")
    assert design.bases == tuple(range(101, 116)) and design.gated == 5
    assert design.arms == ("adaptive", "direct", "eod", "default_rope", "short_retrieval",
                           "natural_adaptive", "natural_direct", "natural_eod",
                           "single_adaptive", "single_direct")
    assert all(design.bases_of(arm) == design.bases for arm in design.arms)
    assert {r.seed for r in design.runs} == {23}
    assert (design.eval_seed, design.selection_seed, design.loss_bases) == (33, 43, 5)
    preset = design.preset
    assert ARMS["natural_eod"].train_overrides(preset)["task_fraction"] == 0.0
    assert ARMS["natural_eod"].train_overrides(preset)["packing"] == "eod"
    assert ARMS["single_direct"].train_overrides(preset)["task_distractors"] is False
    # the default reproduction is its first candidate, with its seed and prompts
    one = get_design("cpu")
    assert set(one.runs) <= set(design.runs) and one.bases == (101,)
    assert (one.preset_name, one.eval_seed, one.selection_seed) == ("cpu", 33, 43)
