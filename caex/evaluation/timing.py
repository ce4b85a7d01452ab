"""Wall-clock cost of a saliency method, measured the same way for every method (paper Table V).

Each method sees the same images in the same batch size on the same device.
The first batch is run once before timing (lazy initialisation, kernel
selection, caches), asynchronous devices are synchronised around each batch,
and the figure is the median over batches of milliseconds per image, which a
single slow batch cannot move.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

SaliencyFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def synchronize(device: torch.device) -> None:
    """Wait for queued work so the clock measures computation, not kernel launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass(frozen=True)
class TimedSaliency:
    maps: torch.Tensor  # [N, H, W]
    ms_per_image: float  # median over batches
    batch_ms_per_image: list[float]


def timed_saliency(fn: SaliencyFn, images: torch.Tensor, targets: torch.Tensor, *, batch_size: int,
                   device: torch.device, warmup: bool = True,
                   on_batch: Callable[[int], None] | None = None) -> TimedSaliency:
    """Run ``fn(images, targets) -> [b, H, W]`` batch by batch, timing each batch.

    ``on_batch(n_images)`` is called after every batch (a progress bar's ``update``).
    """
    if warmup and len(images):
        fn(images[:batch_size], targets[:batch_size])
    maps, per_image = [], []
    for start in range(0, len(images), batch_size):
        batch, target = images[start:start + batch_size], targets[start:start + batch_size]
        synchronize(device)
        began = time.perf_counter()
        maps.append(fn(batch, target))
        synchronize(device)
        per_image.append((time.perf_counter() - began) * 1000 / len(batch))
        if on_batch is not None:
            on_batch(len(batch))
    return TimedSaliency(maps=torch.cat(maps) if maps else images.new_zeros((0, *images.shape[-2:])),
                         ms_per_image=statistics.median(per_image) if per_image else float("nan"),
                         batch_ms_per_image=per_image)
