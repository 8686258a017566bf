"""The study cache: finished runs are reused, changed configs get new folders, tables are
recomputed exactly when their inputs change."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from minillada.claims import study, table_cache
from minillada.evals.leakage import multi_document_rows
from minillada.training import trainer
from minillada.training.checkpoint import read_metrics

FAST = dict(steps=2, batch_size=2, micro_batch_size=2, warmup_steps=1, save_every=1,
            val_every=2, val_rows=2, progress=False)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_cached_table_recomputes_only_when_inputs_change(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame({"length": [1, 2], "value": [0.5, 0.25]})

    path = tmp_path / "t.csv"
    first = table_cache.cached_table(path, {"mc": 2}, compute)
    again = table_cache.cached_table(path, {"mc": 2}, compute)
    pd.testing.assert_frame_equal(first, again)
    assert len(calls) == 1
    table_cache.cached_table(path, {"mc": 3}, compute)
    assert len(calls) == 2
    # A table whose inputs file is missing (an interrupted write) is recomputed.
    path.with_name("t.csv.inputs.json").unlink()
    table_cache.cached_table(path, {"mc": 3}, compute)
    assert len(calls) == 3


def test_cached_table_keeps_the_old_file_when_compute_fails(tmp_path):
    path = tmp_path / "t.csv"
    table_cache.cached_table(path, {"v": 1}, lambda: pd.DataFrame({"a": [1]}))

    def broken():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        table_cache.cached_table(path, {"v": 2}, broken)
    assert pd.read_csv(path)["a"].tolist() == [1]
    assert not path.with_name("t.csv.inputs.json").exists()  # not mistaken for v=2 results


def test_runs_are_reused_resumed_and_separated_by_config(tmp_path, monkeypatch):
    base = study.ensure_trained("smoke", "pretrain", "base", tmp_path, **FAST)
    assert (base / "model" / "config.json").is_file()
    calls = []
    real_train = trainer.train
    monkeypatch.setattr(study, "train", lambda *a, **k: calls.append(a) or real_train(*a, **k))
    assert study.ensure_trained("smoke", "pretrain", "base", tmp_path, **FAST) == base
    assert calls == []  # finished: reused
    other = study.ensure_trained("smoke", "pretrain", "base", tmp_path, **{**FAST, "lr": 1e-3})
    assert other != base and len(calls) == 1
    # Only run-control fields differ: the same folder.
    assert study.ensure_trained("smoke", "pretrain", "base", tmp_path,
                                **{**FAST, "val_every": 1}) == base

    extended = study.ensure_trained("smoke", "extend", "ext", tmp_path, init=str(base),
                                    **{**FAST, "seq_len": 128, "task_lengths": (64, 128)})
    # An interrupted run (model not yet exported) resumes from its checkpoint.
    checkpoints = sorted((extended / "checkpoints").glob("step_*"))
    assert checkpoints
    shutil.rmtree(extended / "model")
    assert study.ensure_trained("smoke", "extend", "ext", tmp_path, init=str(base),
                                **{**FAST, "seq_len": 128, "task_lengths": (64, 128)}) == extended
    assert (extended / "model" / "config.json").is_file()
    assert [r["step"] for r in read_metrics(extended)] == [1, 2]


def test_cached_grid_resumes_its_partial_rows_and_separates_inputs(tmp_path):
    seen = []

    def run(partial):
        seen.append(partial)
        return pd.DataFrame({"x": [1]})

    table_cache.cached_grid(tmp_path / "g.csv", {"a": 1}, run)
    table_cache.cached_grid(tmp_path / "g.csv", {"a": 2}, run)
    assert seen[0] != seen[1] and all(p.parent == tmp_path / ".partial" for p in seen)
    assert seen[0].name.startswith("g-") and seen[0].suffix == ".jsonl"


def test_leakage_keeps_only_rows_with_two_or_more_real_documents():
    doc_ids = torch.tensor([
        [0, 0, 0, 0, 0, 0],  # one document (id 0)
        [3, 3, 3, 3, -1, -1],  # one document that is not id 0, then padding
        [4, 4, 5, 5, 5, -1],  # two documents, then padding
        [-1, -1, -1, -1, -1, -1],  # padding only
        [6, 6, 6, 7, 8, 8],  # three documents
    ])
    assert multi_document_rows(doc_ids).tolist() == [2, 4]
    assert multi_document_rows(doc_ids, minimum=3).tolist() == [4]


def test_a_notebook_summary_is_written_and_read_in_one_place(tmp_path):
    made = study.Study.create("smoke", tmp_path / "runs", tmp_path / "results",
                              tmp_path / "figures")
    assert made.summary("02_base") is None  # notebook 02 has not run
    summary = {"bases": {"1": {"steps": 3, "dtype": "float32"}}, "keys": "10 numbers"}
    path = made.write_summary("02_base", summary)
    assert path == tmp_path / "results" / "smoke" / "02_base_summary.json"
    assert path.read_text() == json.dumps(summary, indent=1)  # the committed files' format
    assert made.summary("02_base") == summary
