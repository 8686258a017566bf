"""The released-checkpoint path end to end under FSDP2 on two gloo ranks (torchrun): each rank
loads only its shard of a toy bf16 checkpoint, post-trains it with its own tokenizer like one
process does, and the export re-loads in LLaDA's forward with the package's logits."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from llada_checkpoint import official_logits, write_corpus, write_released_checkpoint

from minillada import cli
from minillada.released.llada import load_llada_checkpoint
from minillada.training.checkpoint import read_metrics
from minillada.training.config import make_config
from minillada.training.trainer import train

SETTINGS = dict(seq_len=64, steps=2, batch_size=2, micro_batch_size=1, warmup_steps=1,
                lr=2e-5, loss_chunk=16, dtype="float32", attention_backend="per_document",
                val_rows=2, val_every=2, save_every=2, progress=False)

# Run by torchrun on every rank: check that the rank holds only its rows of each weight, read
# from the checkpoint in float32, and that the loss weights stay float32 under a bf16 policy;
# then post-train through the CLI.
WORKER = """
import sys, torch
from safetensors.torch import load_file
from minillada import cli
from minillada.modeling.distributed import start_runtime
from minillada.released.sharded_load import load_released_model, shard_rows

init, out, *overrides = sys.argv[1:]
runtime = start_runtime()
model = load_released_model(init, runtime, None)
stored = {}
for name in ("model-00001-of-00003", "model-00002-of-00003", "model-00003-of-00003"):
    stored.update(load_file(f"{init}/{name}.safetensors"))
held = 0
for name, param in model.named_parameters():
    rows = shard_rows(param.shape[0], runtime.rank, runtime.world)
    local = param.to_local()
    assert local.dtype == torch.float32, name
    assert torch.equal(local, stored[name][rows.start:rows.stop].float()), name
    held += local.numel()
total = sum(t.numel() for t in stored.values())
assert held < 0.55 * total, (held, total)
del model

# Under a bf16 FSDP2 policy (the GPU's) the chunked loss still gets its weights in float32.
import minillada.modeling.model as modeling
from minillada.modeling.distributed import shard_model
seen, chunked = [], modeling.chunked_cross_entropy
modeling.chunked_cross_entropy = lambda *args: seen.append(args[3].dtype) or chunked(*args)
tiny = modeling.LLaDAModelLM(modeling.LLaDAConfig(vocab_size=97, d_model=32, n_heads=4,
                                                  n_layers=2, mlp_hidden_size=48))
shard_model(tiny, runtime, torch.bfloat16)
ids, scored = torch.randint(0, 97, (1, 8)), torch.ones(1, 8, dtype=torch.bool)
tiny(ids, scored=scored, labels=ids[scored], label_weights=torch.full((8,), 1 / 3),
     loss_chunk=4).loss.backward()
assert seen == [torch.float32], seen
modeling.chunked_cross_entropy = chunked
sys.exit(cli.main(["train", "--preset", "llada-8b", "--stage", "extend", "--init", init,
                   "--out", out, "--quiet", *overrides]))
"""


@pytest.mark.slow
def test_two_gloo_ranks_post_train_a_released_checkpoint_like_one_process(tmp_path, monkeypatch):
    released = write_released_checkpoint(tmp_path / "LLaDA-tiny")
    corpus = str(write_corpus(tmp_path / "corpus.jsonl"))
    env = {**os.environ, "MINILLADA_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    overrides = [f"--set={name}={str(value).lower() if isinstance(value, bool) else value}"
                 for name, value in SETTINGS.items() if name != "seq_len"]
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    monkeypatch.setenv("MINILLADA_CACHE", env["MINILLADA_CACHE"])  # the same token cache
    # torchrun's ranks read a token cache prepared once, in one process
    assert cli.main(["prepare", "--corpus", corpus, "--tokenizer", str(released), "--quiet"]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(worker), str(released), str(tmp_path / "fsdp"),
               "--corpus", corpus, "--target-len", "64", *overrides]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    train(make_config("llada-8b", "extend", tmp_path / "single", init=str(released),
                      corpus=corpus, **SETTINGS))
    sharded, single = read_metrics(tmp_path / "fsdp"), read_metrics(tmp_path / "single")
    assert [r["step"] for r in sharded] == [1, 2]
    for name in ("loss", "grad_norm", "val_loss"):
        want = [r[name] for r in single if name in r]
        assert [r[name] for r in sharded if name in r] == pytest.approx(want, rel=1e-4), name

    ids = torch.randint(0, 324, (2, 80), generator=torch.Generator().manual_seed(5))
    exported = tmp_path / "fsdp" / "model"
    with torch.no_grad():
        package = load_llada_checkpoint(exported)(ids).logits
        one_process = load_llada_checkpoint(tmp_path / "single" / "model")(ids).logits
    torch.testing.assert_close(official_logits(exported, ids), package.double(), atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(package, one_process, atol=2e-2, rtol=2e-2)  # bf16 rounding
