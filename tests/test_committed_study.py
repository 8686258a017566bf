"""Nothing moves under the study's feet: the runs a design trains keep their folders (their
digests), and every committed table is still what the study would read for its inputs, so a
reproduction reuses it instead of recomputing it. Neither depends on where the package's modules
live."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from minillada.claims import report, study
from minillada.claims.both_rules import both_rules_markdown
from minillada.claims.design import ARMS
from minillada.claims.table_cache import digest
from minillada.data.keys import CODE_BASE, KeySpace
from minillada.training.config import make_config
from minillada.training.presets import get_preset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
INIT = "d7c4e44e79419096"  # the fingerprint an extend run's init stands for below
# digest(trajectory_fields(config)) of the cpu preset's runs (base seed 101, post-training seed
# 23) for the gated recipe of docs/science.md: the run folders runs/cpu/<name>-<digest> that
# finished runs are found in, pinned so that no refactor moves them.
RUN_DIGESTS = {
    ("bfloat16", "base"): "38a4fc350b",
    ("bfloat16", "adaptive"): "525ee653cc",
    ("bfloat16", "direct"): "05cdfae361",
    ("bfloat16", "eod"): "992b9b52ec",
    ("bfloat16", "default_rope"): "4562628517",
    ("bfloat16", "short_retrieval"): "fd9eef34de",
    ("float32", "base"): "fa7127452c",
    ("float32", "adaptive"): "f5c45dea61",
    ("float32", "direct"): "c7d5c63a62",
    ("float32", "eod"): "d45ba29f49",
    ("float32", "default_rope"): "d281d68202",
    ("float32", "short_retrieval"): "83f9d75395",
}


@pytest.mark.parametrize(("dtype", "run"), sorted(RUN_DIGESTS))
def test_a_runs_digest_is_unchanged(dtype, run, monkeypatch):
    monkeypatch.setattr(study, "model_fingerprint", lambda path: INIT)
    if run == "base":
        config = make_config("cpu", "pretrain", "runs/cpu/base", seed=101, dtype=dtype)
    else:
        overrides = ARMS[run].train_overrides(get_preset("cpu"))
        config = make_config("cpu", "extend", f"runs/cpu/extend-{run}", init="runs/cpu/base",
                             seed=23, dtype=dtype, **overrides)
    assert digest(study.trajectory_fields(config)) == RUN_DIGESTS[dtype, run]


def keys_of(kind: str, digits: int, size: int) -> KeySpace:
    """A key space with the committed table's (kind, digits, size)."""
    count = CODE_BASE * digits if kind == "code" else 0 if kind == "number" else size
    keys = KeySpace(kind, digits, tuple(f"<|key{i:03d}|>" for i in range(count)))
    assert keys.size == size
    return keys


def read_again(committed: study.Study, name: str, inputs: dict) -> pd.DataFrame:
    """The committed table `name` as the study asks for it, with the settings and candidates its
    inputs name (each candidate standing for its model fingerprint)."""
    candidates = {label: study.Candidate(Path(c["model"]), c["rope"], c["target_len"])
                  for label, c in inputs["candidates"].items()}
    if "tasks" in inputs:
        committed.__dict__["keys"] = keys_of(*inputs["keys"])
        return committed.retrieval(name, candidates, inputs["tasks"], inputs["lengths"],
                                   inputs["depths"], inputs["repeats"], decoys=inputs["decoys"],
                                   seed=inputs["seed"])
    if "documents" in inputs:
        return committed.loss_grid(name, candidates, inputs["lengths"], inputs["windows"],
                                   inputs["mc"], inputs["documents"])
    if "elbo" in inputs:
        return committed.ppl(name, candidates, inputs["lengths"], inputs["elbo"])
    return committed.leakage(name, candidates, inputs["length"], inputs["rows"])


def test_every_committed_table_is_reused_for_its_inputs(tmp_path, monkeypatch):
    results = tmp_path / "results"
    for base in sorted(RESULTS.glob("b1[0-9]")):
        shutil.copytree(base, results / base.name)
    stamps = sorted(results.rglob("*.csv.inputs.json"))
    assert len(stamps) >= 150  # five bases' tables
    monkeypatch.setattr(study, "model_fingerprint", lambda path: str(path))

    def recompute(*args, **kwargs):
        raise AssertionError("a committed table would be recomputed: its inputs changed")

    for evaluation in ("paired_loss_grid", "ppl_at_lengths", "run_retrieval_grid",
                       "cross_document_attention", "ensure_trained", "load_model"):
        monkeypatch.setattr(study, evaluation, recompute)  # nor trains nor loads a model
    committed = study.Study.create("cpu-seeds", tmp_path / "runs", results, tmp_path / "figures")
    for stamp in stamps:
        table = stamp.with_name(stamp.name.removesuffix(".inputs.json"))
        name = table.relative_to(results).with_suffix("").as_posix()
        inputs = json.loads(stamp.read_text())
        reread = read_again(committed, name, inputs)
        assert json.loads(stamp.read_text()) == inputs, name  # the stamp stands
        pd.testing.assert_frame_equal(reread, pd.read_csv(RESULTS / table.relative_to(results)))


def test_the_committed_claims_round_trip_and_render_the_readme(tmp_path):
    claims = report.load_claims(RESULTS / "claims.json")
    written = report.record_claims(tmp_path / "claims.json", claims)
    assert (tmp_path / "claims.json").read_bytes() == (RESULTS / "claims.json").read_bytes()
    readme = (ROOT / "README.md").read_text()
    assert report.readme_with_results(readme, written) == readme


def test_the_committed_verdicts_under_both_rules_are_rendered_from_claims_json():
    claims = report.load_claims(RESULTS / "claims.json")
    assert (RESULTS / "both_rules.md").read_text() == both_rules_markdown(claims)
