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
    PLANNED_LENGTHS,
    fit_table,
    inference_plan,
    llada_8b_plans,
    memory_plan,
    model_plan,
    param_counts,
    plan_table,
    smallest_context_parallel,
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
    assert plan["backward_bytes"] == 16 * 152  # one layer's gradients in flight
    assert plan["gathered_kv_bytes"] == 0  # no context parallelism
    allocated = 3360 + 1848 + 4864 + 2176 + 16 * 152
    assert plan["allocated_bytes"] == allocated
    # CUDA's context, NCCL's buffers for FSDP's group (2 GPUs), 10 % fragmentation
    assert plan["reserve_bytes"] == GIB + GIB // 2 + 0.1 * allocated
    assert plan["total_bytes"] == allocated + plan["reserve_bytes"]
    checkpointed = memory_plan(420, 2, 4, seq_len=16, world_size=2,
                                         activation_checkpointing=True, **dims)
    assert checkpointed["activation_bytes"] == {"layers": 16 * 2 * 8, "recompute": 16 * 152,
                                                "head": 16 * 136}
    assert checkpointed["allocated_bytes"] == 3360 + 1848 + 256 + 2432 + 2176 + 16 * 152
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


def test_context_parallelism_divides_the_tokens_and_adds_the_whole_rows_keys():
    dims = dict(mlp_hidden_size=8, vocab_size=10, n_heads=2, n_kv_heads=1)
    one, two = (memory_plan(420, 2, 4, seq_len=15, world_size=2, activation_checkpointing=True,
                            context_parallel=degree, **dims) for degree in (1, 2))
    assert (one["tokens_per_gpu"], two["tokens_per_gpu"]) == (15, 8)  # 15 padded to 16, halved
    assert two["activation_bytes"]["layers"] == 8 * 2 * 8
    assert two["backward_bytes"] == 8 * two["layer_bytes_per_token"]
    # the whole padded row's k and v (d_kv 2, bf16): the recomputed layer's, their gradient and
    # a collective's buffer
    assert two["gathered_kv_bytes"] == 3 * 4 * 2 * 16
    no_ac = memory_plan(420, 2, 4, seq_len=15, world_size=2, activation_checkpointing=False,
                        context_parallel=2, **dims)
    assert no_ac["gathered_kv_bytes"] == (2 + 2) * 4 * 2 * 16  # every layer's, and two more
    assert two["reserve_bytes"] == GIB + 2 * (GIB // 2) + 0.1 * two["allocated_bytes"]
    assert two["sharded_bytes"] == one["sharded_bytes"]  # FSDP still shards over every GPU
    with pytest.raises(ValueError, match="context_parallel 3 must divide the world size 2"):
        memory_plan(420, 2, 4, 16, 2, True, context_parallel=3, **dims)


def llada_8b_recipe(length: int, world: int = 8, degree: int = 1) -> dict:
    """The llada-8b recipe's plan: one row per data-parallel group, checkpointing, the loss in
    chunks of 2048, every token masked."""
    return model_plan(LLADA_8B, length, world, True, loss_chunk=2048, context_parallel=degree)


def test_past_one_gpu_context_parallelism_fits_128k_on_80_gb_and_512k_on_141_gb():
    """On paper, 8 GPUs: each length's smallest fitting degree (docs/gpu.md's tables)."""
    recipe = dict(activation_checkpointing=True, loss_chunk=2048)
    fits = {gib: {length: smallest_context_parallel(LLADA_8B, length, 8, gib, **recipe)[0]
                  for length in PLANNED_LENGTHS} for gib in (80, 141)}
    assert fits == {80: {32768: 1, 65536: 1, 131072: 4, 262144: 8, 524288: None},
                    141: {32768: 1, 65536: 1, 131072: 1, 262144: 2, 524288: 8}}
    totals = {(length, degree): llada_8b_recipe(length, degree=degree)["total_gib"]
              for length, degree in ((131072, 1), (131072, 4), (262144, 2), (524288, 8))}
    assert totals == pytest.approx({(131072, 1): 115.8, (131072, 4): 59.3, (262144, 2): 129.5,
                                    (524288, 8): 100.3}, abs=0.05)
    full_row = model_plan(LLADA_8B, 65536, 8, True)["total_gib"]
    assert full_row > 141  # the full-row loss: 64K fits no GPU


def test_docs_gpu_md_shows_the_plans_tables():
    """docs/gpu.md's context-parallel tables are `fit_table` and `plan_table` of the code."""
    gpu_md = (ROOT / "docs" / "gpu.md").read_text()
    recipe = dict(activation_checkpointing=True, loss_chunk=2048)
    for gib in (80, 141):
        table = fit_table(LLADA_8B, PLANNED_LENGTHS, 8, gib, **recipe)
        assert table in gpu_md, table
    chosen = [llada_8b_recipe(length, degree=degree) for length, degree in (
        (32768, 1), (65536, 1), (131072, 1), (131072, 4), (262144, 2), (262144, 8), (524288, 8))]
    assert plan_table(chosen) in gpu_md, plan_table(chosen)
    readme = (ROOT / "README.md").read_text()
    whole = [f"{llada_8b_recipe(length)['total_gib']:.1f}" for length in (32768, 65536, 131072)]
    assert f"{whole[0]}, {whole[1]} and {whole[2]} GiB at 32K, 64K and 128K" in readme
    for length, degree in ((131072, 4), (262144, 2), (524288, 8)):
        total = f"({llada_8b_recipe(length, degree=degree)['total_gib']:.1f} GiB"
        assert f"with N = {degree} " in readme and total in readme, (length, degree)


def test_docs_gpu_md_states_the_plans_own_numbers():
    """docs/gpu.md's 64K full-row table and the totals its prose quotes come from the code."""
    text = (ROOT / "docs" / "gpu.md").read_text()
    gpu_md = " ".join(text.replace("\\\n", " ").split())  # prose and command lines joined
    plans = llada_8b_plans(65536)
    assert plan_table(plans) in text, plan_table(plans)
    eight = next(p for p in plans if p["world_size"] == 8 and p["activation_checkpointing"])
    one = next(p for p in plans if p["world_size"] == 1 and p["activation_checkpointing"])
    assert f"That is {sum(one['sharded_bytes'].values()) / GIB:.1f} GiB in total" in gpu_md
    assert f"It comes to {eight['activation_bytes']['head'] / GIB:.1f} GiB for a 64K row" in gpu_md
    assert f"The total is {eight['total_gib']:.1f} GiB per GPU at 8 GPUs" in gpu_md
    whole = [f"{llada_8b_recipe(length)['total_gib']:.1f}" for length in (32768, 65536, 131072)]
    assert (f"32K and 64K fit an 80 GB H100 ({whole[0]} and {whole[1]} GiB) and 128K needs "
            f"{whole[2]} GiB") in gpu_md
    split = {length: f"{llada_8b_recipe(length, degree=degree)['total_gib']:.1f}"
             for length, degree in ((131072, 4), (262144, 2), (524288, 8))}
    assert f"**128K on 8 x H100 80 GB** ({split[131072]} GiB per GPU, 2" in gpu_md
    assert f"**256K and 512K on 8 x H200 141 GB** ({split[262144]} and {split[524288]}" in gpu_md
    assert "--target-len 131072 --context-parallel 4" in gpu_md
    assert "`--target-len 262144 --context-parallel 2`" in gpu_md
    assert "`--target-len 524288 --context-parallel 8`" in gpu_md
    assert "**Status: not run on a GPU yet.**" in gpu_md


def test_dry_run_prints_the_plan_of_the_run_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--preset", "llada-8b", "--stage", "extend", "--dry-run",
                     "--world-size", "8", "--target-len", "131072", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8.016 B parameters (preset 'llada-8b' model)" in printed
    assert ("| 8 | 1 | 131072 | on | 2048 | 14.9 | 8.5 | 32.0 | 21.0 | 21.0 | 6.4 | 0.0 | 11.9 | "
            "**115.8** |") in printed
    assert not out.exists()
    released = write_released_checkpoint(tmp_path / "LLaDA-tiny")
    assert cli.main(["train", "--preset", "llada-8b", "--stage", "extend", "--dry-run",
                     "--init", str(released), "--target-len", "64", "--out", str(out),
                     "--set", "activation_checkpointing=false", "--set", "loss_chunk=0"]) == 0
    printed = capsys.readouterr().out
    assert f"({released})" in printed and "| 1 | 1 | 64 | off | full row |" in printed
    assert cli.main(["train", "--preset", "smoke", "--stage", "extend", "--dry-run", "--out",
                     str(out)]) == 2
    assert "--dry-run of stage 'extend' needs --init" in capsys.readouterr().err


@pytest.mark.parametrize(("length", "gib", "says"), [
    (131072, 80, "131072 tokens per row fit 8 GPUs of 80 GiB with --context-parallel 4 at the "
                 "least (59.3 GiB per GPU, 2 data-parallel group(s)); this run's context "
                 "parallelism 1 needs 115.8 GiB"),
    (262144, 141, "262144 tokens per row fit 8 GPUs of 141 GiB with --context-parallel 2 at the "
                  "least (129.5 GiB per GPU, 4 data-parallel group(s))"),
    (524288, 141, "524288 tokens per row fit 8 GPUs of 141 GiB with --context-parallel 8"),
    (524288, 80, "524288 tokens per row do not fit 8 GPUs of 80 GiB at any context-parallel "
                 "degree (at 8: 100.3 GiB per GPU)"),
])
def test_dry_run_names_the_smallest_context_parallel_degree_that_fits(length, gib, says, capsys):
    assert cli.main(["train", "--preset", "llada-8b", "--stage", "extend", "--dry-run",
                     "--world-size", "8", "--target-len", str(length), "--gpu-memory", str(gib),
                     "--out", "unused"]) == 0
    printed = capsys.readouterr().out
    assert says in printed
    assert fit_table(LLADA_8B, PLANNED_LENGTHS, 8, gib, activation_checkpointing=True,
                     loss_chunk=2048) in printed


def test_dry_run_refuses_a_degree_that_does_not_divide_the_gpus(capsys):
    assert cli.main(["train", "--preset", "llada-8b", "--stage", "extend", "--dry-run",
                     "--world-size", "8", "--context-parallel", "3", "--out", "unused"]) == 2
    assert "context_parallel 3 must divide --world-size 8" in capsys.readouterr().err


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
