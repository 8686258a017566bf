"""The instrument gate (docs/science.md, "The gated design"): its pre-registered numbers, its
verdict on a gate table, the gate table kept of every base, and a gated study that takes the
first bases that pass, in order, and names every one it judged."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from minillada.claims import design as design_module
from minillada.claims import study
from minillada.claims.design import Design, cross
from minillada.claims.gate import GATE, Gate, GateResult, judge, passing_bases, record_gate

FAST = dict(steps=2, batch_size=2, micro_batch_size=2, warmup_steps=1, save_every=1,
            val_every=2, val_rows=2, progress=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_the_gate_is_the_pre_registered_one():
    assert (GATE.exact_min, GATE.slot_min, GATE.min_samples) == (90.0, 95.0, 200)
    assert (GATE.split, GATE.prompt_seed, GATE.repeats) == ("validation", 51, 8)
    assert GATE.lengths(128) == [64, 96, 128] and len(GATE.depths) == 10
    assert GATE.depths[0] == 0 and GATE.depths[-1] == 100
    assert GATE.samples == 240
    # where a task's prompt does not fit the shortest length, the others get more repeats
    assert GATE.lengths(128, shortest=80) == [96, 128] and GATE.repeats_for(2) == 10
    assert GATE.repeats_for(1) == 20 and GATE.repeats_for(3) == 8
    with pytest.raises(ValueError, match=r"no gate length \(\[64, 96, 128\]\) holds a prompt "
                                         "of 200 tokens"):
        GATE.lengths(128, shortest=200)
    with pytest.raises(ValueError, match="60 prompts per task is under the pre-registered "
                                         "minimum of 200"):
        Gate(repeats=2)


def gate_table(hits: list[list[int]], task: str = "niah", other: int = 0) -> pd.DataFrame:
    """Generated answers with the slot hits `hits` (one list per prompt), plus `other` passkey
    prompts all right and one likelihood row that the gate ignores."""
    rows = [{"method": "generate", "task": task, "exact": float(all(h)),
             "slots": json.dumps(h)} for h in hits]
    rows += [{"method": "generate", "task": "passkey", "exact": 1.0, "slots": "[1]"}] * other
    rows += [{"method": "likelihood", "task": task, "exact": 0.0, "slots": None}]
    return pd.DataFrame(rows)


def test_judge_passes_at_the_thresholds_and_fails_below_them():
    at_threshold = gate_table([[1]] * 180 + [[0]] * 20, other=3)  # exactly 90 %
    result = judge(at_threshold, 7, "niah", Gate(exact_min=90, slot_min=90))
    assert result.passed and (result.exact, result.n, result.slots) == (90.0, 200, (90.0,))
    assert result.reported == {"passkey": 100.0}
    assert result.exact_ci == (85.06, 93.43)  # Wilson 95 %: 0.9 -> [0.8506, 0.9343]
    assert "base 7 passes the gate: niah 90.0 % [85.1, 93.4] (n = 200)" in result.line()
    # 94 % exact, but the first slot at 94 % < 95 %: a slot decides
    two_slots = gate_table([[1, 1]] * 188 + [[0, 1]] * 12)
    failed = judge(two_slots, 8, "niah")
    assert not failed.passed and failed.slots == (94.0, 100.0) and failed.exact == 94.0
    assert "FAILS the gate" in failed.line()
    assert judge(gate_table([[1, 1]] * 196 + [[0, 1]] * 4), 8, "niah").passed
    with pytest.raises(ValueError, match="base 9: 199 niah prompts in its gate table, fewer "
                                         "than the gate's 200"):
        judge(gate_table([[1]] * 199), 9, "niah")


def result(base: int, passed: bool) -> GateResult:
    value = 95.0 if passed else 10.0
    return GateResult(base, "niah", passed, value, (value - 3, value + 3), (value,), 240, {})


def test_the_gate_table_keeps_every_base_and_every_cpu(tmp_path):
    path = tmp_path / "gate.csv"
    on_amd = {"cpu": "AMD (AVX2)", "dtype": "float32", "recipe": "r1"}
    record_gate(path, [result(102, False), result(101, True)], on_amd)
    table = record_gate(path, [result(102, True)], on_amd)  # judged again here: replaced
    assert table["base"].tolist() == [101, 102] and table["passed"].tolist() == [True, True]
    on_intel = {"cpu": "Intel (AVX512)", "dtype": "bfloat16", "recipe": "r1"}
    table = record_gate(path, [result(101, False)], on_intel)  # another CPU: kept beside it
    assert table[["base", "cpu"]].values.tolist() == [[101, "AMD (AVX2)"],
                                                      [101, "Intel (AVX512)"],
                                                      [102, "AMD (AVX2)"]]
    assert pd.read_csv(path).equals(table)
    assert json.loads(table["slots"][0]) == [95.0]
    assert passing_bases(table, (103, 102, 101), 1) == (102,)
    assert passing_bases(table, (101, 102, 103), 5) == (101, 102)


def gated_smoke(monkeypatch, gated: int) -> Design:
    chosen = Design("smoke-gated", "smoke", bases=(1, 2, 3),
                    runs=cross(("adaptive",), (1, 2, 3), (1,)), eval_seed=31,
                    selection_seed=41, loss_windows=4, loss_bases=1, selection_samples=6,
                    gated=gated)
    monkeypatch.setitem(design_module.DESIGNS, chosen.name, chosen)
    return chosen


@pytest.mark.slow
def test_a_gated_study_gates_real_bases_and_records_each(tmp_path, monkeypatch):
    gated_smoke(monkeypatch, gated=1)
    gated = study.Study.create("smoke-gated", tmp_path / "runs", tmp_path / "results",
                               tmp_path / "figures", pretrain_overrides=FAST)
    table = gated.gate(1)
    judged = table[(table["task"] == gated.retrieval_task) & (table["method"] == "generate")]
    assert len(judged) >= GATE.min_samples
    assert (judged["steps"] == judged["gen_length"]).all()  # one token a step
    assert set(judged["length"]) <= {32, 48, 64}  # within the smoke window of 64
    # two training steps retrieve nothing: every candidate fails, none is studied, all listed
    assert gated.bases() == {}
    listed = pd.read_csv(gated.results / "gate.csv")
    assert listed["base"].tolist() == [1, 2, 3] and not listed["passed"].any()
    assert (listed["recipe"] == study.recipe_digest("smoke")).all()
    assert listed["cpu"].str.contains(r"\(").all()


def test_a_gated_study_takes_the_first_bases_that_pass_and_stops(tmp_path, monkeypatch):
    gated_smoke(monkeypatch, gated=1)
    gated = study.Study.create("smoke-gated", tmp_path / "runs", tmp_path / "results",
                               tmp_path / "figures")
    judged = []
    monkeypatch.setattr(study.Study, "base", lambda self, seed: tmp_path / f"base-{seed}")
    monkeypatch.setattr(study.Study, "gate", lambda self, seed: seed)
    monkeypatch.setattr(study.Study, "retrieval_task", "niah")
    monkeypatch.setattr(study, "saved_config", lambda path: {"dtype": "float32"})
    monkeypatch.setattr(study, "judge", lambda table, seed, task: judged.append(seed)
                        or result(seed, passed=seed == 2))
    assert gated.bases() == {2: tmp_path / "base-2"}
    assert judged == [1, 2]  # base 3 is never trained: the first passing base suffices
    listed = pd.read_csv(gated.results / "gate.csv")
    assert listed[["base", "passed"]].values.tolist() == [[1, False], [2, True]]
