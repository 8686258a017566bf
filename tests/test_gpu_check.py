"""benchmarks/gpu_check.py on CPU: arguments, the report with the CUDA sections skipped, and its
flex comparison (forward only: CPU flex has no backward). The plan on paper: test_memory_plan.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_check

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA report")


@pytest.mark.parametrize(("argv", "named"), [
    (["--skip", "bogus"], "bogus"),
    (["--steps", "0"], "'0'"),
    (["--steps", "many"], "many"),
    (["--lengths", "8"], "8"),
])
def test_bad_arguments_are_named(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(argv)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_out_must_not_be_a_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path)])
    assert "is a folder" in capsys.readouterr().err


@no_cuda
def test_report_without_cuda_skips_the_cuda_sections(tmp_path, capsys):
    out = tmp_path / "results" / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report) >= {"schema", "command", "date", "quick", "machine", "sections", "seconds"}
    machine = report["machine"]
    for key in ("gpu", "torch", "cuda", "bf16_matmul_peak_flops", "cpu_count"):
        assert key in machine
    assert machine["gpu"] is None and machine["bf16_matmul_peak_flops"] > 0
    assert list(report["sections"]) == list(gpu_check.SECTIONS)
    for name in ("flex", "fsdp", "train"):
        assert report["sections"][name] == {**report["sections"][name], "status": "skipped",
                                            "skipped": "no CUDA"}
    assert report["sections"]["context_parallel"]["skipped"] == (
        "no CUDA (--quick runs it on 2 gloo processes on CPU)")
    memory = report["sections"]["memory"]
    assert memory["status"] == "ok" and memory["measured"]["skipped"] == "no CUDA"
    assert [(p["world_size"], p["activation_checkpointing"]) for p in memory["plan_llada_8b_64k"]] \
        == [(w, ac) for ac in (False, True) for w in (1, 2, 4, 8)]
    table = capsys.readouterr().out
    assert "skipped | no CUDA" in table and "plan 64K W=8 AC=on" in table
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, nothing left behind


@no_cuda
def test_quick_report_marks_skip_and_keeps_other_sections(tmp_path):
    out = tmp_path / "q.json"
    assert gpu_check.main(["--quick", "--skip", "fsdp", "train", "context_parallel", "--out",
                           str(out)]) == 0  # each section is tested on its own below
    sections = json.loads(out.read_text())["sections"]
    assert sections["fsdp"]["skipped"] == sections["train"]["skipped"] == "--skip"
    assert sections["context_parallel"]["skipped"] == "--skip"
    assert sections["flex"]["skipped"] == "no CUDA"
    assert json.loads(out.read_text())["quick"] is True


@no_cuda
@pytest.mark.slow
def test_quick_train_section_runs_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "q.json"
    assert gpu_check.main(["--quick", "--skip", "fsdp", "flex", "memory", "context_parallel",
                           "--out", str(out)]) == 0
    runs = json.loads(out.read_text())["sections"]["train"]["runs"]
    assert runs["pretrain"]["steps"] == 3 and runs["pretrain"]["tokens_per_s"] > 0
    assert runs["extend_per_document"]["seq_len"] == 1024
    assert runs["extend_flex"]["status"] == "skipped"


@no_cuda
@pytest.mark.slow
def test_quick_context_parallel_section_splits_rows_over_two_gloo_processes(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("MINILLADA_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "q.json"
    assert gpu_check.main(["--quick", "--skip", "flex", "fsdp", "train", "memory", "--out",
                           str(out)]) == 0
    section = json.loads(out.read_text())["sections"]["context_parallel"]
    assert section["status"] == "ok" and section["gpus"] == 2 and section["backend"] == "gloo"
    # rows of 250 tokens (padded to 252 on 2 ranks): the same first loss, split or whole
    assert section["whole_rows"]["seq_len"] == section["split_rows"]["seq_len"] == 250
    assert section["first_loss_abs_diff"] <= 1e-5
    assert {row["measured_bytes"] for row in section["memory"].values()} == {None}  # CUDA only
    plans = [section["memory"][degree]["planned_bytes"] for degree in ("1", "2")]
    assert plans[1] < plans[0]


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("strategy", gpu_check.PACKINGS)
def test_flex_block_mask_forward_matches_per_document_on_packed_rows(strategy):
    doc_ids = gpu_check.packed_doc_ids(strategy, 256, rows=2, mean_doc=48)
    assert doc_ids.shape == (2, 256) and len(doc_ids[0].unique()) > 2
    result = gpu_check.compare_attention(doc_ids, heads=2, head_dim=16, dtype=torch.float32,
                                         device=torch.device("cpu"), backward=False, repeats=1)
    assert result["max_abs_diff"]["out"] <= 1e-5 and result["ok"]
    assert result["flex"]["forward_s"] > 0 and result["flex"]["forward_peak_bytes"] is None


def test_the_memory_section_measures_the_same_loss_both_ways():
    """`_memory_loss` (run by the memory worker on a GPU): the full-row and the chunked loss of
    the same row agree (here on CPU, float32)."""
    from minillada.modeling.model import LLaDAConfig, LLaDAModelLM

    torch.manual_seed(0)
    model = LLaDAModelLM(LLaDAConfig(**gpu_check.TINY, max_sequence_length=64))
    losses = []
    for loss_chunk in (0, 32):
        torch.manual_seed(1)  # the same row
        losses.append(gpu_check._memory_loss(model, 96, 2048, torch.device("cpu"), loss_chunk))
    assert losses[1].item() == pytest.approx(losses[0].item(), rel=1e-5)
