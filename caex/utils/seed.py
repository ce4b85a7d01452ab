"""Reproducibility: every random choice in caex takes a seed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def seed_weights(seed: int) -> None:
    """Seed torch's global generator (all devices), which weight initialisation and dropout draw from; callers
    do so inside :func:`global_rng_kept`, so the user's stream is theirs again afterwards. Every other draw in
    caex uses a private generator, and Python's and NumPy's global states are left alone."""
    torch.manual_seed(seed)


@contextlib.contextmanager
def global_rng_kept(device: torch.device) -> Iterator[None]:
    """Give torch's global generator (the CPU's, and a CUDA ``device``'s) back as it was after the block: training
    seeds it, and a notebook's next ``torch.rand`` would otherwise repeat after every run."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A private generator, so one component's draws never shift another's."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def keyed_generator(*key: int) -> torch.Generator:
    """A private generator whose seed mixes all of ``key`` (no correlated streams for nearby keys), so
    draws that are a pure function of e.g. ``(seed, rank, iteration)`` need no state to checkpoint."""
    seed = int(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(1, dtype=np.uint64)[0])
    return torch_generator(seed & 0x7FFF_FFFF_FFFF_FFFF)
