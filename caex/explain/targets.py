"""Which class a counterfactual heads for: shared by :class:`Explainer` and the evaluation's CAE attributor."""

from __future__ import annotations

import torch

#: How the class a counterfactual heads for is picked among the other classes: on the CAE's class-code
#: manifold (the nearest other centroid, no classifier pass) or by the classifier's probabilities.
RANK_BY = ("code", "probability")


def other_classes_by_probability(probs: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """``[B, K-1]`` class indices other than ``excluded`` (``[B]``), highest ``probs`` (or any score) first."""
    masked = probs.scatter(1, excluded[:, None], float("-inf"))
    return masked.argsort(dim=1, descending=True, stable=True)[:, :-1]


def other_classes_by_distance(codes: torch.Tensor, centroids: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """``[B, K-1]`` class indices other than ``excluded`` (``[B]``), nearest class centroid of ``codes`` first.

    The class-code manifold's own answer to "which class is this image closest to leaving for": no
    classifier pass, so a map on the shortest path costs only the CAE's passes. A class without a
    centroid (NaN: no stored code) ranks last.
    """
    distance = torch.cdist(codes.float(), centroids.to(codes.device, torch.float32))
    distance = distance.nan_to_num(torch.finfo(distance.dtype).max)  # still ahead of the excluded class's -inf
    return other_classes_by_probability(-distance, excluded.to(codes.device))
