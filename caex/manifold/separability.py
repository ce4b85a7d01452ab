"""Class separability of an embedding (paper Table III): cross-validated random-forest accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_validate


@dataclass
class Separability:
    """Mean ± std accuracy over the folds; ``note`` says why folds were reduced or the test was skipped.

    ``balanced`` is the mean over the folds of the balanced accuracy (the mean of the per-class recalls), which
    reads 1/K for a forest that names the commonest class every time: under imbalance, accuracy reads that
    class's share (97% on a 60-to-2 split).
    """

    mean: float
    std: float
    folds: int
    dims: int
    samples: int
    note: str = ""
    balanced: float = float("nan")

    def as_dict(self) -> dict:
        return asdict(self)


def _as_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """A tensor's values as an array, bfloat16 ones (which NumPy has not) as float32."""
    if not isinstance(values, torch.Tensor):
        return np.asarray(values)
    values = values.detach().cpu()
    return (values.float() if values.dtype == torch.bfloat16 else values).numpy()


def random_forest_accuracy(features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, *,
                           folds: int = 10, n_estimators: int = 150, seed: int = 0,
                           n_jobs: int | None = None) -> Separability:
    """Stratified ``folds``-fold accuracy of a seeded random forest on ``features [N, D]``.

    Folds drop to the size of the smallest class (stratification needs one sample
    of every class per fold); a class with a single sample cannot be
    cross-validated, so the result is NaN with a note.
    """
    x = _as_numpy(features).reshape(len(features), -1).astype(np.float32)
    y = _as_numpy(labels).astype(np.int64)
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min()) if len(y) else 0
    note = ""
    if smallest < 2 or len(np.unique(y)) < 2:
        return Separability(float("nan"), float("nan"), 0, x.shape[1], len(y),
                            note="needs at least two classes with two or more samples each")
    if smallest < folds:
        note = f"folds reduced from {folds} to {smallest}: the smallest class has {smallest} samples"
        folds = smallest
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    forest = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs)
    scores = cross_validate(forest, x, y, cv=splitter, scoring=("accuracy", "balanced_accuracy"))  # the same fits
    accuracy = scores["test_accuracy"]
    return Separability(float(accuracy.mean()), float(accuracy.std()), folds, x.shape[1], len(y), note,
                        balanced=float(scores["test_balanced_accuracy"].mean()))


def pixel_pca(images: torch.Tensor, dims: int, *, seed: int = 0, fit_images: torch.Tensor | None = None) -> np.ndarray:
    """Raw pixels of ``images`` reduced by PCA to ``dims`` components: a code-free baseline of equal size.

    The PCA is fitted on ``fit_images`` (default: ``images`` themselves). The manifold analysis fits it on
    the training split, as the class encoder and the classifier were, so no embedding has seen the test
    images it is scored on.
    """
    flat = _as_numpy(images).reshape(len(images), -1).astype(np.float32)
    fit = flat if fit_images is None else _as_numpy(fit_images).reshape(len(fit_images), -1).astype(np.float32)
    dims = min(dims, *fit.shape)
    if not fit.var(axis=0).any():  # identical images: no direction to find (PCA divided by their zero variance)
        return np.zeros((len(flat), dims), dtype=np.float32)
    return PCA(n_components=dims, random_state=seed).fit(fit).transform(flat)
