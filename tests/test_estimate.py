"""Expected wall times: scaling an earlier reproduction's timings by measured throughput."""

from __future__ import annotations

import json

import pytest

from minillada.claims.reproduction_time import (
    TIMINGS_FILE,
    TRAINING,
    estimate_reproduction,
    read_timings,
    write_timings,
)
from minillada.training.walltime import format_duration, remaining_seconds

NOTEBOOKS = ["01_rope.ipynb", "02_pretrain_base.ipynb", "03_free.ipynb"]


def test_scaled_by_the_throughput_ratio():
    timings = {"tokens_per_s": 6000.0, "notebooks": {"01_rope.ipynb": 10.0,
                                                     "02_pretrain_base.ipynb": 1200.0}}
    expected = estimate_reproduction(NOTEBOOKS, 3000.0, timings, pretrain_tokens=10**6)
    assert expected.seconds == {"01_rope.ipynb": 20.0, "02_pretrain_base.ipynb": 2400.0,
                                "03_free.ipynb": None}
    assert expected.total == 2420.0 and not expected.complete
    assert "6000 then, 3000 tokens/s now" in expected.basis


def test_another_design_scales_by_its_bases_and_runs(tmp_path):
    from minillada.claims.design import get_design

    many, one = get_design("cpu-seeds"), get_design("cpu")
    write_timings(tmp_path, {"02_pretrain_base.ipynb": 100.0, "04_mask.ipynb": 660.0},
                           6000.0, "cpu X", "bfloat16", many, (500.0, 3300.0))
    timings = read_timings(tmp_path)
    assert (timings["design"], timings["bases"], timings["runs"]) == ("cpu-seeds", 5, 33)
    expected = estimate_reproduction(["02_pretrain_base.ipynb", "04_mask.ipynb"],
                                              6000.0, timings, 10**6, one)
    # one base of five, five runs of 33
    assert expected.seconds[TRAINING] == pytest.approx(500 / 5 + 3300 * 5 / 33)
    assert expected.seconds["02_pretrain_base.ipynb"] == pytest.approx(20.0)
    assert expected.seconds["04_mask.ipynb"] == pytest.approx(100.0)


def test_without_timings_only_pretraining_is_estimated():
    expected = estimate_reproduction(NOTEBOOKS, 2000.0, None, pretrain_tokens=8_000_000)
    assert expected.seconds[TRAINING] == 4000.0
    assert expected.seconds["01_rope.ipynb"] is None
    with pytest.raises(ValueError, match="tokens_per_s must be > 0, got 0"):
        estimate_reproduction(NOTEBOOKS, 0.0, None, pretrain_tokens=1)


def test_timings_round_trip_and_merge(tmp_path):
    write_timings(tmp_path, {"01_rope.ipynb": 10.04}, 5000.0, "cpu X", "float32")
    write_timings(tmp_path, {"02_pretrain_base.ipynb": 99.0}, 4000.0, "cpu X", "float32")
    timings = read_timings(tmp_path)
    assert timings["notebooks"] == {"01_rope.ipynb": 10.0, "02_pretrain_base.ipynb": 99.0}
    assert timings["tokens_per_s"] == 4000.0 and timings["dtype"] == "float32"
    (tmp_path / TIMINGS_FILE).write_text(json.dumps({"notebooks": {}}))
    assert read_timings(tmp_path) is None  # no throughput: unusable, not an error
    (tmp_path / TIMINGS_FILE).write_text("{trunc")
    assert read_timings(tmp_path) is None


@pytest.mark.parametrize(("seconds", "text"), [(45, "45 s"), (720, "12 min"), (11520, "3.2 h")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_remaining_and_bad_durations():
    assert remaining_seconds(100, 40, 0.5) == 30.0
    with pytest.raises(ValueError, match="steps_done 5 exceeds steps_total 4"):
        remaining_seconds(4, 5, 1.0)
    with pytest.raises(ValueError, match="finite"):
        format_duration(float("inf"))
