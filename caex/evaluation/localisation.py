"""Localisation against ground-truth masks: does the saliency point at the lesion?

Per-image scores on ``saliency [B, H, W]`` and ``masks [B, H, W]`` (bool, or numbers that are all 0 or 1).
Images whose mask is empty (e.g. a healthy class) have no lesion to find and
score NaN; :class:`LocalisationMetric` averages over the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from caex.data.types import as_tensor_argument, check_masks
from caex.errors import EvaluationError
from caex.evaluation.ranking import DEFAULT_PATCH, check_finite_maps, pixel_order, pixel_rank
from caex.utils.checks import check_counts, check_share
from caex.utils.rows import constant_rows


def _nan_where_empty(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return torch.where(masks.flatten(1).any(dim=1), scores, torch.nan)


def _checked_maps_and_masks(saliency: object, masks: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``saliency [K, H, W]`` and ``masks`` of its shape as bool on its device (tensors, or arrays converted), else
    a one-line error: masks of another size failed as an index out of bounds, and a mask with any value but 0 and 1
    (:func:`~caex.data.types.check_masks`) was lesion wherever it was not exactly 0."""
    saliency = as_tensor_argument(saliency, "saliency", EvaluationError)
    masks = check_masks(masks, "masks", EvaluationError)
    if saliency.ndim != 3 or masks.shape != saliency.shape:  # else a RuntimeError from deep in the scores
        raise EvaluationError(f"expected saliency [K, H, W] and masks of the same shape; got "
                              f"{tuple(saliency.shape)} and {tuple(masks.shape)}")
    return saliency, masks.to(saliency.device)


def pointing_game(saliency: torch.Tensor, masks: torch.Tensor, patch: int = DEFAULT_PATCH) -> torch.Tensor:
    """1 where the most salient pixel (ties ranked by :func:`~caex.evaluation.ranking.pixel_order` with squares
    of side ``patch``: the core of a flat block) lies inside the mask, else 0; a constant map points nowhere (0)."""
    saliency, masks = _checked_maps_and_masks(saliency, masks)
    hits = masks.flatten(1).gather(1, pixel_order(saliency, patch)[:, :1]).squeeze(1).float()
    return _nan_where_empty(torch.where(constant_rows(saliency), 0.0, hits), masks)


def mass_in_mask(saliency: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Share of the total saliency that falls inside the mask (0 for an all-zero map; negative values count as
    0, as a map's mass is its positive part). Summed in float32 at least: a float16 map's sum overflowed to inf on
    large images."""
    saliency, masks = _checked_maps_and_masks(saliency, masks)
    check_finite_maps(saliency)
    flat = saliency.flatten(1).to(torch.promote_types(saliency.dtype, torch.float32)).clamp_min(0)
    total = flat.sum(dim=1)
    inside = (flat * masks.flatten(1)).sum(dim=1)
    return _nan_where_empty(torch.where(total > 0, inside / total.clamp_min(1e-12), 0.0), masks)


def topk_iou(saliency: torch.Tensor, masks: torch.Tensor, k: float | None = None,
             patch: int = DEFAULT_PATCH) -> torch.Tensor:
    """IoU of the top-``k`` share of pixels (ranked as in :func:`pointing_game`) with the mask; ``k=None`` uses
    each mask's own area share. A constant map selects nothing (0), as it points nowhere in :func:`pointing_game`."""
    check_share("topk_iou: k", k, EvaluationError, none_allowed=True)
    saliency, masks = _checked_maps_and_masks(saliency, masks)
    flat_mask = masks.flatten(1)
    pixels = flat_mask.shape[1]
    if k is None:
        n_top = flat_mask.sum(dim=1)
    else:
        n_top = torch.full((len(flat_mask),), max(1, round(k * pixels)), device=flat_mask.device)
    top = (pixel_rank(saliency, patch) < n_top[:, None]) & ~constant_rows(saliency)[:, None]
    union = (top | flat_mask).sum(dim=1)
    iou = (top & flat_mask).sum(dim=1) / union.clamp_min(1)
    return _nan_where_empty(iou.float(), masks)


def _nanmean(values: torch.Tensor) -> float:
    valid = values[~values.isnan()]
    return float(valid.mean()) if len(valid) else math.nan


@dataclass(frozen=True)
class LocalisationMetric:
    """Pointing game, mass in mask and top-k IoU, averaged over images that have a lesion."""

    k: float | None = None  # top-k IoU's share of the pixels; None: each mask's own area share
    #: Side of the squares that rank equal pixels; None: evaluate's deletion patch there (a script that set only
    #: ``k`` stopped at a patch mismatch), :data:`DEFAULT_PATCH` when called on its own.
    patch: int | None = None

    def __post_init__(self) -> None:
        check_share("LocalisationMetric.k", self.k, EvaluationError, none_allowed=True)
        if self.patch is not None:
            check_counts({"patch": self.patch}, 1, EvaluationError, "LocalisationMetric.")

    @property
    def tie_patch(self) -> int:
        """The side of the squares that rank equal pixels: :attr:`patch`, or :data:`DEFAULT_PATCH` if unset."""
        return DEFAULT_PATCH if self.patch is None else self.patch

    def __call__(self, saliency: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
        saliency, masks = _checked_maps_and_masks(saliency, masks)  # each score checks the maps are finite
        return {
            "pointing": _nanmean(pointing_game(saliency, masks, self.tie_patch)),
            "mass_in_mask": _nanmean(mass_in_mask(saliency, masks)),
            "iou": _nanmean(topk_iou(saliency, masks, self.k, self.tie_patch)),
            "n_with_mask": int(masks.flatten(1).any(dim=1).sum()),
        }
