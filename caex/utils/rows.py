"""Per-row checks of a batch ``[B, ...]``: which maps or outputs cannot be read as they are meant."""

from __future__ import annotations

import torch


def nonfinite_rows(batch: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: rows holding a NaN or an infinity (a classifier that divides by a blank image's spread)."""
    return ~torch.isfinite(batch.flatten(1)).all(dim=1)


def constant_rows(batch: torch.Tensor) -> torch.Tensor:
    """``[B]`` bool: rows whose values are all equal (a map that ranks no pixel above another)."""
    flat = batch.flatten(1)
    return flat.amax(dim=1) == flat.amin(dim=1)
