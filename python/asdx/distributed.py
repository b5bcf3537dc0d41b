"""DistributedDataParallel through torchrun: process-group setup and the few collectives asdx needs.

`torchrun --nproc_per_node N -m asdx run fusion ...` starts N copies of the same
command; torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address.
Every rank runs the global stage's training loop (each on its share of the
batches, gradients averaged by DDP); only rank 0 writes run files and logs
progress, and rank 0 alone runs the per-machine stage. Without torchrun
(WORLD_SIZE unset or 1) nothing here does anything: one process, no group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """The first process on its node: it fills the node's feature cache while the others wait."""
        return self.local_rank == 0


def world() -> World:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return World(dist.get_rank(), dist.get_world_size(), local)
    return World()


def launched_by_torchrun(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return int(environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment(device: str = "auto") -> World:
    """Joins the torchrun process group when WORLD_SIZE > 1 (nccl for CUDA devices, else gloo)."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 (torchrun), but this torch build has no torch.distributed.")
    if str(device).strip().lower().startswith("cuda:"):
        raise ValueError(f"device: {device!r} under torchrun would put every rank on one GPU; use --device cuda "
                         "(or auto): each rank takes the GPU of its LOCAL_RANK.")
    use_cuda = torch.cuda.is_available() and not str(device).startswith(("cpu", "mps"))
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return world()


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def broadcast_object(value=None, source: int = 0):
    """Rank `source`'s value on every rank (pickled; for small control data and checkpoints)."""
    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["World", "barrier", "broadcast_object", "init_from_environment", "launched_by_torchrun", "shutdown",
           "world"]
