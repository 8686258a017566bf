"""What tests/test_context_parallel.py runs on two gloo ranks (torch.multiprocessing): a context
parallel group of both, the rows of every step split between them."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch.distributed.tensor import DTensor

from minillada.modeling.attention import build_document_mask, masked_attention
from minillada.modeling.distributed import Runtime, start_runtime, stop_runtime
from minillada.training import trainer
from minillada.training.config import TrainConfig


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def on_two_ranks(function: Callable[..., None], *args: Any) -> None:
    """`function(runtime, *args)` on two gloo processes forming one context-parallel group."""
    mp.spawn(_rank, args=(free_port(), function, args), nprocs=2)


def _rank(rank: int, port: int, function: Callable[..., None], args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    runtime = start_runtime(context_parallel=2)
    try:
        function(runtime, *args)
    finally:
        stop_runtime(runtime)


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A parameter or gradient whole (a collective under FSDP2: every rank calls it)."""
    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().clone()


def recorded_run(config: TrainConfig, runtime: Runtime, record: Path) -> None:
    """Train `config`, saving (rank 0) every parameter's gradient at the first optimizer step
    and every parameter after it."""
    run = trainer.Trainer(config, runtime)
    seen: dict[str, dict[str, torch.Tensor]] = {}

    def before_step(optimizer, args, kwargs) -> None:
        if "grads" not in seen:
            seen["grads"] = {n: whole(p.grad) for n, p in run.model.named_parameters()}

    def after_step(optimizer, args, kwargs) -> None:
        if "params" not in seen:
            seen["params"] = {n: whole(p) for n, p in run.model.named_parameters()}

    run.optimizer.register_step_pre_hook(before_step)
    run.optimizer.register_step_post_hook(after_step)
    try:
        run.run()
    finally:
        run.close()
    if runtime.is_main:
        torch.save(seen, record)


def interrupted_then_resumed(config: TrainConfig, runtime: Runtime, stop_at: int) -> None:
    """Train `config`, stopped (as by a kill) when `stop_at` steps are done and checkpointed,
    then resume it to its end."""
    real_step = trainer.Trainer.train_step

    def stopping_step(self):
        if self.step == stop_at:
            raise KeyboardInterrupt
        return real_step(self)

    trainer.Trainer.train_step = stopping_step
    run = trainer.Trainer(config, runtime)
    try:
        run.run()
    except KeyboardInterrupt:
        pass
    finally:
        run.close()
        trainer.Trainer.train_step = real_step
    resumed = trainer.Trainer(config, runtime, resume=True)
    try:
        resumed.run()
    finally:
        resumed.close()


def sharded_attention(runtime: Runtime, cases: list[tuple[dict[str, torch.Tensor], str]],
                      result: Path) -> None:
    """For each case (q, k, v [B, H, L, D], doc_ids [B, L], weights like q; a backend): the
    attention of this rank's shard of the queries over the whole row, its output times `weights`
    summed and back-propagated. Rank 0 saves, per case, the output and the gradients of q, k and
    v, each gathered back into whole rows."""
    context = runtime.context

    def shard(tensor: torch.Tensor) -> torch.Tensor:  # along L of [B, H, L, D]
        return context.shard(tensor.transpose(1, 2), 0.0).transpose(1, 2)

    def rows(tensor: torch.Tensor, length: int) -> torch.Tensor:
        return context.unshard(tensor.transpose(1, 2), length).transpose(1, 2)

    results = []
    for inputs, backend in cases:
        q, k, v = (shard(inputs[name]).requires_grad_() for name in "qkv")
        mask = build_document_mask(context.shard(inputs["doc_ids"], -1), backend, context)
        out = masked_attention(q, k, v, mask)
        (out * shard(inputs["weights"])).sum().backward()
        length = inputs["doc_ids"].shape[1]
        results.append({"out": rows(out, length),
                        **{name: rows(t.grad, length) for name, t in zip("qkv", (q, k, v),
                                                                         strict=True)}})
    if runtime.is_main:
        torch.save(results, result)
