"""Smoothness of the class-code manifold (paper §IV-F.3).

Two checks that the decoder generalises between the codes it saw:

* **SMOTE**: convex combinations of a class's codes with one of their nearest
  same-class neighbours, decoded with a small fixed pool of that class's
  individual codes, should still be classified as that class;
* **straight paths**: moving the class code of an image of class A in a
  straight line to that of an image of class B (decoded with A's individual
  code) should raise the classifier's probability of B monotonically (within
  a tolerance per step, and by at least that tolerance overall).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.figure import Figure

from caex.explain.paths import knn_indices, straight_paths
from caex.manifold.codes import decode_codes, individual_codes
from caex.utils import progress
from caex.utils.plotting import literal_text, save_figure, text_inches, wrap_label

if TYPE_CHECKING:
    from caex.classifier import Classifier
    from caex.model import CAE

Seed = int | np.random.Generator


def smote_codes(codes: torch.Tensor, count: int, *, neighbours: int = 5,
                seed: Seed = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` SMOTE samples from ``codes [n, D]`` (one class).

    Each sample picks an anchor code, one of its ``neighbours`` nearest other
    codes and ``λ ~ U(0, 1)``: ``anchor + λ (partner − anchor)``. Returns the
    samples ``[count, D]`` with the anchor and partner indices and λ, so the
    convex-hull property can be checked.
    """
    rng = np.random.default_rng(seed)
    n = len(codes)
    anchor = torch.from_numpy(rng.integers(0, n, size=count))
    k = min(neighbours, n - 1)
    if k == 0:  # a single code: every "combination" is the code itself
        partner = anchor.clone()
    else:
        # Chunked: a full [n, n] distance matrix of a large class would not fit in memory.
        nearest = knn_indices(codes.float(), codes.float(), k, exclude_self=True)[1]  # [n, k]
        partner = nearest[anchor, torch.from_numpy(rng.integers(0, k, size=count))]
    weight = torch.from_numpy(rng.random(count)).to(codes.dtype)
    samples = codes[anchor] + weight[:, None] * (codes[partner] - codes[anchor])
    return samples, anchor, partner, weight


def smote_smoothness(cae: CAE, classifier: Classifier, images: torch.Tensor, codes: torch.Tensor, labels: torch.Tensor,
                     num_classes: int, *, per_class: int = 2000, neighbours: int = 5, individuals: int = 8,
                     batch_size: int = 128, seed: int = 0, verbose: bool = False) -> np.ndarray:
    """Per class, the share of decoded SMOTE codes the classifier assigns to that class (NaN for a class of
    fewer than 2 codes: nothing lies between its codes, and its one code decoded would pass for a mixture).

    The individual codes are a fixed, seeded pool of ``individuals`` test images
    of the same class, used in turn, so the only thing that varies between
    samples is the class code.
    """
    rng = np.random.default_rng(seed)
    shares = np.full(num_classes, np.nan)
    batches_per_class = math.ceil(per_class / batch_size)
    with progress(desc="SMOTE smoothness", total=num_classes * batches_per_class, unit="batch",
                  enabled=verbose) as bar:
        for k in range(num_classes):
            members = torch.from_numpy(np.flatnonzero(labels.numpy() == k))
            if len(members) < 2:
                bar.update(batches_per_class)
                continue
            samples = smote_codes(codes[members], per_class, neighbours=neighbours, seed=rng)[0]
            pool = members[torch.from_numpy(rng.choice(len(members), size=min(individuals, len(members)),
                                                       replace=False))]
            pool_codes = individual_codes(cae, images[pool])
            hits = 0
            for start in range(0, per_class, batch_size):
                batch = samples[start:start + batch_size]
                which = (torch.arange(start, start + len(batch)) % len(pool)).to(pool_codes.device)
                hits += int((classifier.predict(decode_codes(cae, batch, pool_codes[which])).cpu() == k).sum())
                bar.update(1)
            shares[k] = hits / per_class
    return shares


def sample_path_pairs(labels: torch.Tensor, count: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` seeded pairs ``(a, b)`` of images with different labels (empty if only one class)."""
    rng = np.random.default_rng(seed)
    labels_np = labels.numpy()
    if len(np.unique(labels_np)) < 2:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    index_a = rng.integers(0, len(labels_np), size=count)
    index_b = np.array([rng.choice(np.flatnonzero(labels_np != labels_np[a])) for a in index_a], dtype=np.int64)
    return torch.from_numpy(index_a), torch.from_numpy(index_b)


def straight_path_probabilities(cae: CAE, classifier: Classifier, images: torch.Tensor, codes: torch.Tensor,
                                index_a: torch.Tensor, index_b: torch.Tensor, target: torch.Tensor, *,
                                steps: int = 10, keep_frames: int = 8, batch_size: int = 128,
                                verbose: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Target probabilities ``[P, steps]`` along ``c_A → c_B`` decoded with ``s_A``, and the frames
    ``[min(P, keep_frames), steps, C, H, W]`` of the first paths (for the figure)."""
    paths_per_batch = max(1, batch_size // steps)
    probabilities: list[torch.Tensor] = []
    frames: list[torch.Tensor] = []
    batches = range(0, len(index_a), paths_per_batch)
    for start in progress(batches, desc="straight paths", total=len(batches), unit="batch", enabled=verbose):
        a, b = index_a[start:start + paths_per_batch], index_b[start:start + paths_per_batch]
        path_codes = straight_paths(codes[a], codes[b], steps)
        individual = individual_codes(cae, images[a]).repeat_interleave(steps, dim=0)
        decoded = decode_codes(cae, path_codes.flatten(0, 1), individual)
        batch_target = target[start:start + paths_per_batch].repeat_interleave(steps)
        probs = classifier.predict_proba(decoded).cpu()
        probabilities.append(probs[torch.arange(len(probs)), batch_target].view(len(a), steps))
        wanted = keep_frames - sum(len(f) for f in frames)
        if wanted > 0:
            frames.append(decoded.view(len(a), steps, *decoded.shape[1:])[:wanted].cpu())
    no_frames = torch.zeros(0, steps, *images.shape[1:])
    if not probabilities:
        return torch.zeros(0, steps), no_frames
    return torch.cat(probabilities), torch.cat(frames) if frames else no_frames


def monotone_paths(probabilities: torch.Tensor, *, tolerance: float = 0.05) -> torch.Tensor:
    """``[P]`` bool: the probability rises along the path (ends at least ``tolerance`` above where it
    started) and never drops by more than ``tolerance`` from one step to the next.

    Requiring the net rise keeps a flat path (a decoder that ignores the class
    code) from counting as monotone.
    """
    never_drops = (probabilities.diff(dim=1) >= -tolerance).all(dim=1)
    return never_drops & (probabilities[:, -1] - probabilities[:, 0] >= tolerance)


@literal_text
def plot_paths(path: str | os.PathLike, frames: torch.Tensor, probabilities: torch.Tensor,
               row_titles: list[str]) -> Path:
    """Fig. 11-style grid: one row per path, one column per step, each frame titled with p(target); the row
    titles ("A → B") are written across and wrapped, the figure widened to hold them."""
    rows, steps = frames.shape[:2]
    row_titles = [wrap_label(title) for title in row_titles]
    figure = Figure(figsize=(1.3 * steps + text_inches(row_titles, 7), 1.45 * rows + 0.3), layout="constrained")
    axes = figure.subplots(rows, steps, squeeze=False)
    grayscale = frames.shape[2] == 1
    for r in range(rows):
        for t in range(steps):
            axis = axes[r, t]
            frame = frames[r, t].clamp(0, 1).numpy()
            axis.imshow(frame[0] if grayscale else frame.transpose(1, 2, 0), cmap="gray" if grayscale else None,
                        vmin=0, vmax=1)
            axis.set_title(f"{float(probabilities[r, t]):.2f}", fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[r, 0].set_ylabel(row_titles[r], fontsize=7, rotation=0, ha="right", va="center")
    figure.suptitle("straight class-code paths (numbers: classifier probability of the target class)", fontsize=9)
    return save_figure(path, figure)
