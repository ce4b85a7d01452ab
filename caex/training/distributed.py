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

from caex.errors import OtherRankFailed, TrainingError
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


def _env_number(name: str, default: str, what: str) -> int:
    """``int(os.environ[name])``, or a one-line error naming the variable: torchrun sets them, a user may too."""
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise TrainingError(f"{name}={value!r}: not {what}; start distributed runs with torchrun") from None


def local_device(device: str | torch.device | None = "auto") -> torch.device:
    """``device`` resolved for this process: under ``torchrun`` an accelerator (CUDA, XPU, ...) is this rank's
    own (``LOCAL_RANK``), so nothing of one rank lands on another's. The CPU and MPS (one per machine) are
    shared."""
    resolved = resolve_device(device)
    under_torchrun = "LOCAL_RANK" in os.environ or _env_number("WORLD_SIZE", "1", "a number of processes") > 1
    if resolved.type not in ("cpu", "mps") and under_torchrun:
        return torch.device(resolved.type, _env_number("LOCAL_RANK", "0", "a process number"))
    return resolved


def backend_for(device: torch.device) -> str:
    """The collective backend torch pairs with ``device``'s type; gloo where it names none."""
    try:
        return dist.get_default_backend_for_device(device)
    except (RuntimeError, ValueError, AttributeError):
        return "gloo"


def init_distributed(device: str | torch.device | None = "auto") -> DistContext:
    """Join the process group ``torchrun`` describes, or run alone when it describes none."""
    world_size = _env_number("WORLD_SIZE", "1", "a number of processes")
    if world_size <= 1:
        return DistContext(0, 1, resolve_device(device))
    if "RANK" not in os.environ:
        raise TrainingError(f"WORLD_SIZE={world_size} but RANK is not set; start distributed runs with torchrun")
    rank = _env_number("RANK", "0", "a process number")
    resolved = local_device(device)
    set_device = getattr(getattr(torch, resolved.type, None), "set_device", None)
    if resolved.index is not None and set_device is not None:
        set_device(resolved)
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


def max_over_ranks(values: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Element-wise maximum of integer ``values`` over all ranks (a collective: every rank must call it), on this
    rank's device: NCCL reduces GPU tensors only, and a flag made on the CPU failed the first check of every
    multi-GPU run."""
    if not context.distributed:
        return values
    values = values.to(device=context.device, dtype=torch.int64, copy=True)  # a copy for the in-place reduction
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def any_rank(mask: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Element-wise OR of a boolean ``mask`` over all ranks (a collective: every rank must call it)."""
    return max_over_ranks(mask, context).bool()


def mean_over_ranks(values: torch.Tensor, context: DistContext) -> torch.Tensor:
    """``values`` averaged over all ranks (a collective); gloo has no AVG, so a sum divided by the world size."""
    if not context.distributed:
        return values
    total = values.to(device=context.device, copy=True)
    dist.all_reduce(total)
    return total / context.world_size


def raise_together(error: BaseException | None, context: DistContext) -> None:
    """Raise on every rank when any rank failed (a collective: every rank must call it).

    A rank that left alone would leave the others waiting in their next collective until ``torchrun`` kills
    them. Each distinct message is raised by the first rank that has it; the other ranks raise
    :class:`OtherRankFailed`, which the CLI does not print (the failing rank prints its own), so the job says each
    thing once.
    """
    if not context.distributed:
        if error is not None:
            raise error
        return
    messages = gather_objects(None if error is None else str(error), context)
    if error is not None and messages.index(str(error)) == context.rank:
        raise error
    failed = next((rank for rank, message in enumerate(messages) if message is not None), None)
    if failed is not None:
        raise OtherRankFailed(f"rank {failed} failed: {messages[failed]}")
