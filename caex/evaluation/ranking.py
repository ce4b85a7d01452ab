"""How a saliency map orders its pixels, for the deletion patches and the localisation scores alike.

Pixels rank by saliency; equal ones by the saliency of the ``patch x patch`` square around them, then in raster
order, so a flat block (a LIME superpixel, an occlusion window) is entered at its core.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from caex.errors import EvaluationError
from caex.utils.rows import nonfinite_rows

#: The paper's patch side.
DEFAULT_PATCH = 7
#: How the pixels were ranked, as results record it: results without it were made before ties ranked by square
#: and signed maps by their positive part, and move a little for methods with flat or signed maps (LIME, occlusion).
RANKING = "ties by patch-square saliency, then raster order; signed maps by their positive part"


def patch_extent(patch: int) -> tuple[int, int]:
    """Pixels a ``patch``-wide square reaches before and after its centre (an even side reaches one further
    before)."""
    return patch // 2, (patch - 1) // 2


def patch_saliency(saliency: torch.Tensor, patch: int = DEFAULT_PATCH) -> torch.Tensor:
    """``[B, H, W]``: the mean saliency of the ``patch x patch`` square centred on each pixel (zeros outside)."""
    before, after = patch_extent(patch)
    padded = F.pad(saliency[:, None].float(), (before, after, before, after))
    return F.avg_pool2d(padded, patch, stride=1).squeeze(1)


def pixel_order(saliency: torch.Tensor, patch: int = DEFAULT_PATCH) -> torch.Tensor:
    """Flat pixel indices ``[B, H*W]`` of ``saliency [B, H, W]``, most salient first; equal pixels by
    :func:`patch_saliency`, then in raster order."""
    check_finite_maps(saliency)
    flat = saliency.flatten(1)
    by_square = torch.argsort(patch_saliency(saliency, patch).flatten(1), dim=1, descending=True, stable=True)
    return by_square.gather(1, torch.argsort(flat.gather(1, by_square), dim=1, descending=True, stable=True))


def pixel_rank(saliency: torch.Tensor, patch: int = DEFAULT_PATCH) -> torch.Tensor:
    """Rank ``[B, H*W]`` of every pixel (0 = first in :func:`pixel_order`)."""
    order = pixel_order(saliency, patch)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def check_finite_maps(saliency: torch.Tensor) -> None:
    """Refuse maps holding NaN or inf: sorting ranks NaN above every pixel, and a mean over them is NaN."""
    bad = nonfinite_rows(saliency)
    if bad.any():
        raise EvaluationError(f"{int(bad.sum())} of {len(saliency)} saliency maps hold NaN or inf values (the "
                              f"first: map {int(bad.nonzero()[0])}); they rank no pixels")
