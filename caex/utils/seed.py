"""Reproducibility: every random choice in caex takes a seed."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from caex.utils.locks import ForkSafeLock


def seed_weights(seed: int, device: torch.device | None = None) -> None:
    """Seed torch's global generator on the CPU, which weight initialisation draws from (networks are built
    there), and, given ``device``, that accelerator's, which its dropout draws from; no other device's.
    Callers do so inside :func:`global_rng_kept`, so the user's streams are theirs again afterwards. Every other
    draw in caex uses a private generator, and Python's and NumPy's global states are left alone."""
    torch.default_generator.manual_seed(seed)
    backend = _generator_backend(device)
    if backend is not None:
        with backend.device(device) if hasattr(backend, "device") else contextlib.nullcontext():
            backend.manual_seed(seed)  # the current device's: ``device``'s inside the block


@contextlib.contextmanager
def global_rng_kept(device: torch.device) -> Iterator[None]:
    """Give torch's global generators that :func:`seed_weights` may seed (the CPU's, and ``device``'s) back as
    they were after the block: a notebook's next ``torch.rand`` would otherwise repeat after every run.

    caex's sections that seed or draw from the global generators run inside, one at a time in a process (a
    re-entrant lock held for the whole block): two trainings in threads seeded each other's stream, and gave other
    weights than one after the other. So concurrent trainings in one process wait for each other. Draws of the
    user's own in other threads meanwhile are not caex's to guard: they take from the seeded stream."""
    backend = _generator_backend(device)
    if backend is None:
        forked = torch.random.fork_rng(devices=[])
    else:
        index = device.index if device.index is not None else getattr(backend, "current_device", lambda: 0)()
        forked = torch.random.fork_rng(devices=[index], device_type=device.type)
    with _GLOBAL_RNG_LOCK.lock, forked:
        yield


_GLOBAL_RNG_LOCK = ForkSafeLock()


def _generator_backend(device: torch.device | None) -> Any | None:
    """The torch module of ``device``'s global generator (``torch.cuda``, ``torch.xpu``, ``torch.mps``, ...), or
    ``None`` for the CPU (seeded anyway) and devices without one (``meta``)."""
    module = None if device is None or device.type == "cpu" else getattr(torch, device.type, None)
    return module if hasattr(module, "manual_seed") else None


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


def values_crc32(values: torch.Tensor) -> int:
    """A 32-bit digest (CRC-32) of a tensor's values as float32, to key draws on the data they are made for: the
    same image then gets the same draws alone, beside others, in any order and in any later call."""
    return zlib.crc32(values.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
