"""Device selection and mixed precision without assuming CUDA."""

from __future__ import annotations

import contextlib

import torch

from caex.errors import CaexError


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA, then MPS, then CPU; anything else is validated."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CaexError(f"--device {name!r}: not a device name ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CaexError(f"--device {name!r}: CUDA is not available on this machine")
    return device


def autocast_context(device: torch.device, enabled: bool = True):
    """bf16 autocast on accelerators; a no-op on CPU, where it rarely pays off."""
    if not enabled or device.type == "cpu":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
