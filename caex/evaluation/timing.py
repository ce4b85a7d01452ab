"""Wall-clock cost of a saliency method, measured the same way for every method (paper Table V).

Each method sees the same images in the same batch size on the same device.
The first batch pays for the warm-up (lazy initialisation, kernel selection,
caches): its maps are kept but its time is not counted (a lone batch is run a
second time for the clock). Asynchronous devices are synchronised around each
batch, and the figure is the median over batches of milliseconds per image,
which a single slow batch cannot move.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

SaliencyFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def synchronize(device: torch.device) -> None:
    """Wait for queued work so the clock measures computation, not kernel launches (any accelerator: CUDA,
    MPS, XPU, ...; the CPU computes synchronously)."""
    if device.type == "cpu":
        return
    backend = getattr(torch, device.type, None)
    if device.type == "mps" or backend is None or not hasattr(backend, "synchronize"):
        torch.accelerator.synchronize()  # MPS's synchronize takes no device
    else:
        backend.synchronize(device)


@dataclass(frozen=True)
class TimedSaliency:
    maps: torch.Tensor  # [N, H, W]
    ms_per_image: float  # median over batches
    batch_ms_per_image: list[float]  # the timed batches (the first, warm-up batch left out)


def timed_saliency(fn: SaliencyFn, images: torch.Tensor, targets: torch.Tensor, *, batch_size: int,
                   device: torch.device, warmup: bool = True,
                   on_batch: Callable[[int], None] | None = None) -> TimedSaliency:
    """Run ``fn(images, targets) -> [b, H, W]`` batch by batch, timing each batch.

    With ``warmup`` the first batch's time is left out (until 2026-12-07 that batch was computed once more
    before timing, which cost a third of the run at the default 32 images in batches of 16).
    ``on_batch(n_images)`` is called after every batch (a progress bar's ``update``).
    """
    maps, per_image = [], []
    for start in range(0, len(images), batch_size):
        batch, target = images[start:start + batch_size], targets[start:start + batch_size]
        batch_maps, ms = _timed_call(fn, batch, target, device)
        maps.append(batch_maps)
        per_image.append(ms / len(batch))
        if on_batch is not None:
            on_batch(len(batch))
    if warmup and len(per_image) > 1:
        per_image = per_image[1:]
    elif warmup and per_image:  # a single batch: the clock needs a second, warm run
        per_image = [_timed_call(fn, images, targets, device)[1] / len(images)]
    return TimedSaliency(maps=torch.cat(maps) if maps else images.new_zeros((0, *images.shape[-2:])),
                         ms_per_image=statistics.median(per_image) if per_image else float("nan"),
                         batch_ms_per_image=per_image)


def _timed_call(fn: SaliencyFn, images: torch.Tensor, targets: torch.Tensor,
                device: torch.device) -> tuple[torch.Tensor, float]:
    """``fn``'s maps and the milliseconds it took, with the device's queue drained on both sides."""
    synchronize(device)
    began = time.perf_counter()
    maps = fn(images, targets)
    synchronize(device)
    return maps, (time.perf_counter() - began) * 1000
