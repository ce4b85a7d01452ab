"""Class-swap success (paper Table IV): does ``decode(c_B, s_A)`` carry class ``y_B`` to the classifier?"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from caex.manifold.codes import decode_codes, individual_codes
from caex.utils import progress

if TYPE_CHECKING:
    from caex.classifier import Classifier
    from caex.model import CAE


def sample_swap_pairs(labels: torch.Tensor, num_classes: int, pairs_per_class_pair: int, *,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(a, b)`` of balanced test pairs: up to ``pairs_per_class_pair`` distinct pairs per
    ordered class pair ``(i, j)``, ``i != j``, so a big class cannot dominate the overall rate."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels.numpy() == k) for k in range(num_classes)]
    index_a, index_b = [], []
    for i in range(num_classes):
        for j in range(num_classes):
            if i == j or not len(members[i]) or not len(members[j]):
                continue
            grid = len(members[i]) * len(members[j])
            chosen = rng.choice(grid, size=min(pairs_per_class_pair, grid), replace=False)
            index_a.append(members[i][chosen // len(members[j])])
            index_b.append(members[j][chosen % len(members[j])])
    if not index_a:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.from_numpy(np.concatenate(index_a)), torch.from_numpy(np.concatenate(index_b))


def swap_predictions(cae: CAE, classifier: Classifier, images: torch.Tensor, codes: torch.Tensor, index_a: torch.Tensor,
                     index_b: torch.Tensor, *, batch_size: int = 128, verbose: bool = False) -> torch.Tensor:
    """The classifier's prediction for every ``decode(codes[b], s(images[a]))``, in batches."""
    predictions = []
    batches = range(0, len(index_a), batch_size)
    for start in progress(batches, desc="class swaps", total=len(batches), unit="batch", enabled=verbose):
        a, b = index_a[start:start + batch_size], index_b[start:start + batch_size]
        swapped = decode_codes(cae, codes[b], individual_codes(cae, images[a]))
        predictions.append(classifier.predict(swapped).cpu())
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)


def swap_success_matrix(from_labels: torch.Tensor, to_labels: torch.Tensor, predictions: torch.Tensor,
                        num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(success [K, K], counts [K, K])``: the share of swaps from class i to class j predicted as j.

    The diagonal and pairs without samples are NaN, so they drop out of means.
    """
    flat = (from_labels * num_classes + to_labels).numpy()
    counts = np.bincount(flat, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    hits = np.bincount(flat, weights=(predictions == to_labels).numpy().astype(np.float64),
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        success = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    np.fill_diagonal(success, np.nan)
    return success, counts
