"""Where a training process runs: one process, or `torchrun` ranks with FSDP2 sharding (and
context parallelism: a data x context mesh), and the collectives the trainer needs (`all_sum`,
`all_mean`)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from minillada.modeling.context_parallel import ContextParallel
from minillada.modeling.model import LLaDAModelLM


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: rank, world size, device, whether torchrun launched it, and its
    context-parallel group (None: each rank holds whole rows).

    The ranks form a data x context mesh: the `context` degree ranks of one data-parallel
    group (consecutive ranks, on one node where possible) share its rows, each holding a shard of
    every row; `data_world` groups read different rows."""

    rank: int
    world: int
    device: torch.device
    distributed: bool
    context: ContextParallel | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def context_degree(self) -> int:
        return self.context.degree if self.context is not None else 1

    @property
    def data_rank(self) -> int:
        """This rank's data-parallel group: which rows of a step it works on."""
        return self.rank // self.context_degree

    @property
    def data_world(self) -> int:
        """The number of data-parallel groups (world / context degree)."""
        return self.world // self.context_degree

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent (the torchrun agent) dies.
    torchrun stops its workers on SIGTERM/SIGINT, but a SIGKILL-ed torchrun cannot: without this
    its workers would keep training (and hold the GPU and the run folder) as orphans."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # best effort: a sandbox may refuse prctl
    if os.getppid() != parent or parent == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def check_context_parallel(context_parallel: int, world: int) -> None:
    """ValueError naming both unless `context_parallel` ranks divide the `world`'s."""
    if context_parallel == 1:
        return
    if world == 1:
        raise ValueError(f"context_parallel {context_parallel} splits each row over "
                         f"{context_parallel} processes: launch with torchrun --nproc_per_node "
                         f"{context_parallel} (or a multiple); this is one process")
    if world % context_parallel:
        raise ValueError(f"context_parallel {context_parallel} must divide the world size "
                         f"{world} (each group of {context_parallel} ranks shares its rows)")


def start_runtime(context_parallel: int = 1) -> Runtime:
    """A process group (nccl on GPU, gloo on CPU) when launched by torchrun, else one process;
    with `context_parallel` > 1 a data x context mesh whose context groups share rows.
    A torchrun worker dies with its torchrun (`die_with_parent`)."""
    cuda = torch.cuda.is_available()
    check_context_parallel(context_parallel, int(os.environ.get("WORLD_SIZE", 1)))
    if "RANK" not in os.environ:
        return Runtime(0, 1, torch.device("cuda" if cuda else "cpu"), False)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # set by torchrun for its workers
        die_with_parent()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    world, context = dist.get_world_size(), None
    if context_parallel > 1:
        mesh = init_device_mesh(device.type, (world // context_parallel, context_parallel),
                                mesh_dim_names=("data", "context"))
        context = ContextParallel(mesh.get_group("context"), context_parallel,
                                  mesh.get_local_rank("context"))
    return Runtime(dist.get_rank(), world, device, True, context)


def stop_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.barrier()  # destroying a gloo group while a peer still talks to it can crash
        dist.destroy_process_group()


def shard_model(model: LLaDAModelLM, runtime: Runtime, param_dtype: torch.dtype | None) -> None:
    """FSDP2 as torchtitan applies it: `fully_shard` each block, then the root (embedding, final
    norm and head); bf16 parameters with fp32 gradient reduction when `param_dtype` is given.
    The parameters are sharded over every rank, context-parallel ones included (their states
    are the same; sharding them over the whole world divides the memory by it)."""
    mesh = init_device_mesh(runtime.device.type, (runtime.world,))
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    blocks = model.model.transformer.blocks
    for index, block in enumerate(blocks):
        # The root all-gathers the last block again right after forward: keep it unsharded.
        fully_shard(block, mesh=mesh, mp_policy=policy,
                    reshard_after_forward=index < len(blocks) - 1)
    # The root's inputs are token ids, except the loss weights of the chunked loss, which must
    # stay float32 (FSDP2 would cast every floating input to param_dtype).
    root_policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32,
                                       cast_forward_inputs=False)
    fully_shard(model, mesh=mesh, mp_policy=root_policy)


def from_main(value: Any, runtime: Runtime) -> Any:
    """Rank 0's `value` (any picklable object) on every rank; the value itself in one process."""
    if not runtime.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(value: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum of a tensor over ranks (the tensor itself in one process)."""
    value = value.detach().clone()
    if runtime.distributed:
        dist.all_reduce(value)
    return value


def all_mean(value: torch.Tensor, runtime: Runtime) -> float:
    """Mean over the data-parallel groups of a scalar that each group's context-parallel ranks
    hold parts of (a loss: each its tokens' part of the sum); without context parallelism, the
    mean over ranks."""
    return float(all_sum(value, runtime)) / runtime.data_world

