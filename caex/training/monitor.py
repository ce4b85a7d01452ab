"""What the loss curves do not show: whether the class codes tell the classes apart.

A stalled run's losses look healthy while two classes share one region of the code space; the decoder then
draws both alike and swaps into either class fail (docs/EXPERIMENTS.md, 2026-12-02). The trainer logs these
figures at every sample step and in ``summary.json``, so a stall shows while it happens.
"""

from __future__ import annotations

import torch

from caex.model.cae import class_centroids


@torch.no_grad()
def code_separation(codes: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """How well class codes ``[N, D]`` (N ≥ 1) separate their ``labels``.

    ``code_accuracy``: the share of codes nearest to their own class's centroid (1.0 for a usable code).
    ``code_gap``: the smallest distance between two class centroids in mean within-class radii; far below 1,
    two classes share their codes. Classes without codes are left out; with fewer than two classes there is no
    gap to give.
    """
    codes, labels = codes.float(), labels.long()
    centroids = class_centroids(codes, labels, int(labels.max()) + 1)
    present = torch.nonzero(~centroids.isnan().any(1)).flatten()
    nearest = present[torch.cdist(codes, centroids[present]).argmin(1)]
    result = {"code_accuracy": float((nearest == labels).float().mean())}
    if len(present) > 1:
        radius = (codes - centroids[labels]).norm(dim=1).mean()
        distances = torch.cdist(centroids[present], centroids[present]).fill_diagonal_(float("inf"))
        result["code_gap"] = float(distances.min() / radius.clamp_min(1e-12))
    return result
