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
