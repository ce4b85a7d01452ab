"""Reproducibility: every random choice in caex takes a seed."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) in one call."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
