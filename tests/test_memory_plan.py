"""The per-GPU memory plan on paper (training.memory_plan) and `minillada train --dry-run`."""

from __future__ import annotations

from pathlib import Path

import pytest
from llada_checkpoint import write_released_checkpoint

from minillada import cli
from minillada.training.memory_plan import (
    CHUNK_BYTES_PER_LOGIT,
    GIB,
    LLADA_8B,
    inference_plan,
    llada_8b_plans,
    memory_plan,
    model_plan,
    param_counts,
)

ROOT = Path(__file__).resolve().parents[1]


def test_memory_plan_closed_form():
    dims = dict(mlp_hidden_size=8, vocab_size=10, n_heads=2, n_kv_heads=2)
    counts = param_counts(2, 4, **dims)
    assert counts == {"block": 168, "root": 84, "total": 420}
    plan = memory_plan(420, 2, 4, seq_len=16, world_size=2,
                                 activation_checkpointing=False, **dims)
    assert plan["bytes_per_param"] == {"weights": 4, "gradients": 4, "adamw": 8, "total": 16}
    assert plan["sharded_bytes"] == {"weights": 840, "gradients": 840, "adamw": 1680}
    assert plan["layer_bytes_per_token"] == 2 * (7 * 4 + 2 * 4 + 4 * 8) + 4 * 2 + 8 == 152
    assert plan["head_bytes_per_token"] == 4 * 4 + 12 * 10 == 136
    assert plan["transient_bytes"] == 2 * (84 + 2 * 168) + 6 * 168 == 1848
    assert plan["activation_bytes"] == {"layers": 16 * 2 * 152, "recompute": 0, "head": 16 * 136}
    assert plan["activation_bytes_per_1k_tokens"] == 1024 * (2 * 152 + 136)
    assert plan["total_bytes"] == 3360 + 1848 + 4864 + 2176
    checkpointed = memory_plan(420, 2, 4, seq_len=16, world_size=2,
                                         activation_checkpointing=True, **dims)
    assert checkpointed["activation_bytes"] == {"layers": 16 * 2 * 8, "recompute": 16 * 152,
                                                "head": 16 * 136}
    assert checkpointed["total_bytes"] == 3360 + 1848 + 256 + 2432 + 2176
    with pytest.raises(ValueError, match="masked_fraction"):
        memory_plan(420, 2, 4, 16, 2, False, masked_fraction=2.0, **dims)


def test_llada_8b_has_8b_parameters_and_sharding_divides_the_states():
    assert param_counts(**LLADA_8B)["total"] == pytest.approx(8.02e9, rel=1e-3)
    plans = {(p["world_size"], p["activation_checkpointing"]): p
             for p in llada_8b_plans(65536)}
    one, eight = plans[1, True], plans[8, True]
    assert eight["sharded_bytes"]["adamw"] * 8 == pytest.approx(one["sharded_bytes"]["adamw"])
    assert eight["activation_bytes"] == one["activation_bytes"]  # FSDP shards no activations
    assert plans[8, False]["total_bytes"] > plans[8, True]["total_bytes"]


def test_the_chunked_loss_replaces_vocabulary_per_token_by_one_chunk():
    dims = dict(mlp_hidden_size=8, vocab_size=10, n_heads=2, n_kv_heads=2)
    plan = memory_plan(420, 2, 4, seq_len=16, world_size=2, activation_checkpointing=False,
                       masked_fraction=0.5, loss_chunk=3, **dims)
    assert plan["head_bytes_per_token"] == 4 * 4 * 0.5 + 2 * 4
    assert plan["loss_chunk_bytes"] == CHUNK_BYTES_PER_LOGIT * 3 * 10
    assert plan["activation_bytes"]["head"] == 16 * 16 + 14 * 30
    with pytest.raises(ValueError, match="loss_chunk must be >= 0"):
        memory_plan(420, 2, 4, 16, 2, False, loss_chunk=-1, **dims)


def test_llada_8b_at_128k_fits_an_h200_with_the_chunked_loss_and_checkpointing():
    """On paper: 8 GPUs, one row per GPU, every token masked (docs/gpu.md's table)."""
    totals = {length: model_plan(LLADA_8B, length, 8, True, loss_chunk=2048)["total_gib"]
              for length in (32768, 65536, 131072)}
    assert totals == pytest.approx({32768: 40.8, 65536: 54.8, 131072: 82.9}, abs=0.05)
    full_row = model_plan(LLADA_8B, 65536, 8, True)["total_gib"]
    assert full_row == pytest.approx(143.6, abs=0.05) and full_row > 130  # > one H200


def test_dry_run_prints_the_plan_of_the_run_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "llada-8b", "--stage", "extend", "--dry-run",
                     "--world-size", "8", "--target-len", "131072", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8.016 B parameters (preset 'llada-8b' model)" in printed
    assert "| 8 | 131072 | on | 2048 | 14.9 | 8.5 | 32.0 | 21.0 | 6.4 | **82.9** |" in printed
    assert not out.exists()
    released = write_released_checkpoint(tmp_path / "LLaDA-tiny")
    assert cli.main(["train", "--preset", "llada-8b", "--stage", "extend", "--dry-run",
                     "--init", str(released), "--target-len", "64", "--out", str(out),
                     "--set", "activation_checkpointing=false", "--set", "loss_chunk=0"]) == 0
    printed = capsys.readouterr().out
    assert f"({released})" in printed and "| 1 | 64 | off | full row |" in printed
    assert cli.main(["train", "--preset", "smoke", "--stage", "extend", "--dry-run", "--out",
                     str(out)]) == 2
    assert "--dry-run of stage 'extend' needs --init" in capsys.readouterr().err


def test_inference_plan_counts_logits_only_where_scored():
    dims = dict(n_layers=2, d_model=4, mlp_hidden_size=8, vocab_size=10, n_heads=2, n_kv_heads=2)
    plan = inference_plan(dims, tokens=16, scored=3)
    assert plan == {"weights": 2 * 420, "layer": 2 * (6 * 4 + 3 * 8) * 16, "logits": 2 * 10 * 3,
                    "scored_float64": 8 * 10 * 3, "total": 840 + 1536 + 60 + 240}
    whole_row = inference_plan(dims, tokens=16, scored=3, whole_row_logits=True)
    assert whole_row["logits"] == 2 * 10 * 16 and whole_row["total"] == 840 + 1536 + 320 + 240
    with pytest.raises(ValueError, match="scored must lie in"):
        inference_plan(dims, tokens=16, scored=17)
    at_128k = {whole: inference_plan(LLADA_8B, 131072, 32, whole_row_logits=whole)["total"] / GIB
               for whole in (False, True)}  # NIAH, batch 1
    assert at_128k == pytest.approx({False: 30.0, True: 60.8}, abs=0.05)


def test_docs_quote_the_inference_plan():
    """docs/gpu.md's table (NIAH, one block of 32 per row) and the README's NIAH figure."""
    gpu_md, readme = ((ROOT / name).read_text() for name in ("docs/gpu.md", "README.md"))
    for row, batch in ((32768, 1), (65536, 1), (131072, 1), (32768, 8)):
        plan, whole_row = (inference_plan(LLADA_8B, row * batch, 32 * batch, whole_row_logits=w)
                           for w in (False, True))
        cells = [plan["weights"], plan["layer"], plan["logits"] + plan["scored_float64"]]
        line = (f"| {row // 1024}K | {batch} | " + " | ".join(f"{c / GIB:.1f}" for c in cells)
                + f" | **{plan['total'] / GIB:.1f}** | {whole_row['total'] / GIB:.1f} |")
        assert line in gpu_md, line
    at_128k = inference_plan(LLADA_8B, 131072, 32)["total"] / GIB
    assert f"NIAH at 128K, batch 1, about {at_128k:.0f} GiB" in readme
