"""Single-process or ``torchrun`` DistributedDataParallel, decided from the environment.

Under ``torchrun --nproc-per-node N`` the variables ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` are set; each process then trains on its own data stream
(the pair sampler is seeded with the rank), gradients are averaged by DDP, and
only rank 0 writes files. Each accelerator's own backend (NCCL on CUDA, XCCL
on XPU), gloo on CPU and wherever torch names none.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from caex.errors import TrainingError
from caex.utils.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device
    owns_process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def local_device(device: str | torch.device | None = "auto") -> torch.device:
    """``device`` resolved for this process: under ``torchrun`` an accelerator (CUDA, XPU, ...) is this rank's
    own (``LOCAL_RANK``), so nothing of one rank lands on another's. The CPU and MPS (one per machine) are
    shared."""
    resolved = resolve_device(device)
    under_torchrun = "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1
    if resolved.type not in ("cpu", "mps") and under_torchrun:
        return torch.device(resolved.type, int(os.environ.get("LOCAL_RANK", "0")))
    return resolved


def backend_for(device: torch.device) -> str:
    """The collective backend torch pairs with ``device``'s type; gloo where it names none."""
    try:
        return dist.get_default_backend_for_device(device)
    except (RuntimeError, ValueError, AttributeError):
        return "gloo"


def init_distributed(device: str | torch.device | None = "auto") -> DistContext:
    """Join the process group ``torchrun`` describes, or run alone when it describes none."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(0, 1, resolve_device(device))
    if "RANK" not in os.environ:
        raise TrainingError(f"WORLD_SIZE={world_size} but RANK is not set; start distributed runs with torchrun")
    rank = int(os.environ["RANK"])
    resolved = local_device(device)
    backend_module = getattr(torch, resolved.type, None)
    if resolved.index is not None and hasattr(backend_module, "set_device"):
        backend_module.set_device(resolved)
    owns = not dist.is_initialized()
    if owns:
        backend = backend_for(resolved)
        try:
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        except (RuntimeError, ValueError) as exc:
            raise TrainingError(f"cannot join the {backend} process group of {world_size} ranks: {exc}") from None
    return DistContext(rank, world_size, resolved, owns)


def shutdown(context: DistContext) -> None:
    """Leave the process group if this context created it."""
    if context.owns_process_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()


def gather_objects(obj: Any, context: DistContext) -> list[Any]:
    """Every rank's ``obj`` (picklable, small: e.g. RNG states) on every rank; ``[obj]`` alone."""
    if not context.distributed:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def any_rank(mask: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Element-wise OR of a boolean ``mask`` over all ranks (a collective: every rank must call it)."""
    if not context.distributed:
        return mask
    flags = mask.to(torch.int32)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags.bool()


def broadcast_flags(*flags: bool, context: DistContext) -> tuple[bool, ...]:
    """Rank 0's ``flags`` on every rank, in one message (so all ranks take the same branches)."""
    if not context.distributed:
        return flags
    holder = [list(flags)]
    dist.broadcast_object_list(holder, src=0)
    return tuple(bool(flag) for flag in holder[0])
