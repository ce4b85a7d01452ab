"""Which class a counterfactual heads for: shared by :class:`Explainer` and the evaluation's CAE attributor."""

from __future__ import annotations

import torch


def other_classes_by_probability(probs: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """``[B, K-1]`` class indices other than ``excluded`` (``[B]``), most probable first."""
    masked = probs.scatter(1, excluded[:, None], -1.0)
    return masked.argsort(dim=1, descending=True, stable=True)[:, :-1]
