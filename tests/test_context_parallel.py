"""Context parallelism on two gloo ranks equals one process: attention over the whole row from
each rank's shard (documents cut by a chunk boundary included), and post-training a released
checkpoint (the loss, every gradient, the AdamW step, the export); a resume under it is
bit-exact."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from context_parallel_ranks import (
    interrupted_then_resumed,
    on_two_ranks,
    recorded_run,
    sharded_attention,
)
from llada_checkpoint import read_weights, write_corpus, write_released_checkpoint

from minillada.modeling.attention import build_document_mask, masked_attention
from minillada.modeling.context_parallel import padded_length, row_order, shard_index
from minillada.modeling.distributed import Runtime, check_context_parallel
from minillada.training.checkpoint import read_metrics
from minillada.training.config import incompatible_fields, make_config
from minillada.training.trainer import Trainer

# ------------------------------------------------------------------------------ the layout


def test_each_rank_holds_chunk_i_and_2n_minus_1_minus_i():
    assert padded_length(13, 2) == 16 and padded_length(16, 2) == 16 and padded_length(1, 4) == 8
    assert shard_index(16, 2, 0).tolist() == [0, 1, 2, 3, 12, 13, 14, 15]
    assert shard_index(16, 2, 1).tolist() == [4, 5, 6, 7, 8, 9, 10, 11]
    for degree in (1, 2, 3, 4):
        held = torch.cat([shard_index(50, degree, rank) for rank in range(degree)])
        assert sorted(held.tolist()) == list(range(padded_length(50, degree)))  # each once
        # the gathered shards, their chunks put back in row order, are the row
        chunks = held.view(2 * degree, -1)
        assert torch.equal(chunks[row_order(degree)].flatten(), torch.arange(len(held)))
    with pytest.raises(ValueError, match=r"rank must lie in \[0, 2\), got 2"):
        shard_index(16, 2, 2)


def test_a_context_parallel_degree_must_divide_the_world():
    check_context_parallel(1, 1)
    check_context_parallel(2, 8)
    with pytest.raises(ValueError, match="context_parallel 2 splits each row over 2 processes: "
                                         "launch with torchrun"):
        check_context_parallel(2, 1)
    with pytest.raises(ValueError, match="context_parallel 4 must divide the world size 6"):
        check_context_parallel(4, 6)
    with pytest.raises(ValueError, match="context_parallel must be >= 1, got 0"):
        make_config("smoke", "pretrain", "x", context_parallel=0)
    config = make_config("smoke", "pretrain", "x", context_parallel=2)
    with pytest.raises(ValueError, match="context_parallel 2 but the runtime's context degree is "
                                         "1"):
        Trainer(config, Runtime(0, 1, torch.device("cpu"), False))
    # the same sums split over other ranks: a run may resume with another degree
    saved = json.loads(json.dumps(dataclasses.asdict(config)))  # as config.json holds it
    assert incompatible_fields(saved, make_config("smoke", "pretrain", "x")) == []


# ------------------------------------------------------------------------------ attention

B, H, H_KV, L, D = 2, 4, 2, 13, 8
# Row 0: documents of 5, 6 and 2 tokens. With 2 ranks the row is padded to 16 and cut at 4, 8
# and 12: rank 0 holds 0-3 and 12-15, rank 1 4-11, so every document is cut by a chunk
# boundary and the first and last are split between the ranks. Row 1: a document over both
# ranks and padding.
DOC_IDS = torch.tensor([[0] * 5 + [1] * 6 + [2] * 2, [0] * 2 + [1] * 9 + [-1] * 2])


def attention_inputs(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    real = (DOC_IDS >= 0)[:, None, :, None]  # padding outputs are never used: weight 0
    return {"q": draw(B, H, L, D), "k": draw(B, H_KV, L, D), "v": draw(B, H_KV, L, D),
            "doc_ids": DOC_IDS, "weights": draw(B, H, L, D) * real}


def whole_row(inputs: dict[str, torch.Tensor], backend: str) -> dict[str, torch.Tensor]:
    q, k, v = (inputs[name].clone().requires_grad_() for name in "qkv")
    out = masked_attention(q, k, v, build_document_mask(inputs["doc_ids"], backend))
    (out * inputs["weights"]).sum().backward()
    return {"out": out.detach(), "q": q.grad, "k": k.grad, "v": v.grad}


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """The cases below, run once on two ranks."""
    changed = attention_inputs(0)
    for name in "kv":  # other keys and values for document 1 of row 0 (positions 5-10)
        changed[name] = changed[name].clone()
        changed[name][0, :, 5:11] += 3.0
    cases = [(attention_inputs(0), "per_document"), (attention_inputs(0), "dense"),
             (changed, "per_document")]
    result = tmp_path_factory.mktemp("attention") / "sharded.pt"
    on_two_ranks(sharded_attention, cases, result)
    return cases, torch.load(result)


@pytest.mark.parametrize("case", [0, 1], ids=["per_document", "dense"])
def test_sharded_attention_equals_the_whole_row(sharded, case):
    cases, results = sharded
    want, got = whole_row(*cases[case]), results[case]
    real = DOC_IDS >= 0
    for name in ("out", "q", "k", "v"):
        # float64: the same sums over the same keys (the gradients of k and v summed over the
        # ranks that attended to them); padding queries' outputs are no token's.
        torch.testing.assert_close(got[name].transpose(1, 2)[real],
                                   want[name].transpose(1, 2)[real], rtol=1e-12, atol=1e-12)


def test_a_document_cut_by_a_chunk_boundary_sees_only_itself(sharded):
    _, results = sharded
    before, after = results[0]["out"], results[2]["out"]
    document_1 = torch.zeros(B, L, dtype=torch.bool)
    document_1[0, 5:11] = True
    moved = (after - before).abs().amax(dim=(1, 3))  # [B, L]: how far each query's output moved
    assert (moved[document_1] > 1e-3).all()  # document 1 sees its own new keys, on both ranks
    assert torch.equal(moved[~document_1 & (DOC_IDS >= 0)],
                       torch.zeros(int((~document_1 & (DOC_IDS >= 0)).sum()),
                                   dtype=moved.dtype))  # no other document sees them


# ------------------------------------------------------------------------------ training

SETTINGS = dict(seq_len=62, steps=2, batch_size=2, micro_batch_size=1, warmup_steps=1, lr=1e-3,
                dtype="float32", attention_backend="per_document", val_rows=2, val_every=2,
                save_every=1, progress=False)
# Chunked loss over adaptive packing with continuous positions (the llada-8b recipe), and the
# full-row loss over eod packing (full attention) with positions restarted per document. Rows of
# 62 tokens are padded to 64 on two ranks.
RECIPES = {"chunked_adaptive": dict(loss_chunk=16),
           "full_row_eod": dict(loss_chunk=0, packing="eod", restart_positions=True)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each recipe post-trained on two context-parallel ranks and in one process; the first
    also stopped after step 1 and resumed on the two ranks."""
    root = tmp_path_factory.mktemp("cp-runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINILLADA_CACHE", str(root / "cache"))
        init = write_released_checkpoint(root / "LLaDA-tiny")
        corpus = str(write_corpus(root / "corpus.jsonl"))

        def config(name: str, **extra):
            return make_config("llada-8b", "extend", root / name, init=str(init), corpus=corpus,
                               **SETTINGS, **extra)

        one_process = Runtime(0, 1, torch.device("cpu"), False)
        for name, recipe in RECIPES.items():
            recorded_run(config(f"one-{name}", **recipe), one_process, root / f"one-{name}.pt")
        on_two_ranks(_cp_runs, {name: config(f"cp-{name}", context_parallel=2, **recipe)
                                for name, recipe in RECIPES.items()},
                     config("cp-resumed", context_parallel=2, **RECIPES["chunked_adaptive"]),
                     root)
    return root


def _cp_runs(runtime, configs, resumed, root) -> None:
    for name, config in configs.items():
        recorded_run(config, runtime, root / f"cp-{name}.pt")
    interrupted_then_resumed(resumed, runtime, stop_at=1)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", list(RECIPES))
def test_context_parallel_post_training_equals_one_process(runs, recipe):
    cp, one = read_metrics(runs / f"cp-{recipe}"), read_metrics(runs / f"one-{recipe}")
    assert [r["step"] for r in cp] == [1, 2] and cp[-1]["tokens"] == one[-1]["tokens"]
    # Step 1 starts from the same weights: the loss is the same sum, split over the ranks.
    assert math.isclose(cp[0]["loss"], one[0]["loss"], rel_tol=1e-6)
    for name in ("loss", "grad_norm", "val_loss"):
        want = [r[name] for r in one if name in r]
        assert [r[name] for r in cp if name in r] == pytest.approx(want, rel=1e-5), name
    got, want = torch.load(runs / f"cp-{recipe}.pt"), torch.load(runs / f"one-{recipe}.pt")
    assert set(got["grads"]) == set(want["grads"]) and len(want["grads"]) > 10
    for name, grad in want["grads"].items():
        # float32, partial sums in another order (measured: at most 3e-8 apart)
        torch.testing.assert_close(got["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=name)
        # One AdamW step at lr 1e-3: its first divides each gradient by its own size, so where
        # a gradient is near 0 its rounding moves the step by up to about 1e-3 lr (measured:
        # 5e-7 apart at most).
        torch.testing.assert_close(got["params"][name], want["params"][name], rtol=1e-6,
                                   atol=2e-6, msg=name)
    # The export after 2 steps (bf16, LLaDA's released format): bit-identical on the machines
    # measured; allowed to differ by one bf16 rounding (float32 sums ordered per CPU).
    exported, single = read_weights(runs / f"cp-{recipe}" / "model"), read_weights(
        runs / f"one-{recipe}" / "model")
    assert set(exported) == set(single)
    for name, tensor in single.items():
        torch.testing.assert_close(exported[name].float(), tensor.float(), rtol=2**-7, atol=1e-6,
                                   msg=name)


@pytest.mark.slow
def test_a_resume_under_context_parallelism_is_bit_exact(runs):
    straight, resumed = runs / "cp-chunked_adaptive", runs / "cp-resumed"
    def values(out):  # every value but the wall-clock speed
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(out)]

    assert values(resumed) == values(straight)  # exactly
    a, b = read_weights(straight / "model"), read_weights(resumed / "model")
    assert set(a) == set(b) and all(torch.equal(a[name], b[name]) for name in a)
