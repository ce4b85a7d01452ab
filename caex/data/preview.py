"""A picture of a data set: a few samples per class, lesion masks outlined."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from caex.data.types import DataBundle, readable
from caex.utils.plotting import MASK_LEGEND, literal_text, outline_mask, save_figure, text_inches, wrap_label
from caex.utils.seed import torch_generator


def sample_grid_indices(labels: torch.Tensor, num_classes: int, per_class: int, seed: int = 0) -> list[list[int]]:
    """Up to ``per_class`` random indices of each class (one list per class), chosen reproducibly."""
    order = torch.randperm(len(labels), generator=torch_generator(seed))
    shuffled = labels[order]
    return [order[shuffled == k][:per_class].tolist() for k in range(num_classes)]


@literal_text
def save_preview(bundle: DataBundle, path: str | os.PathLike, *, per_class: int = 8, seed: int = 0) -> Path:
    """Write a PNG grid of training images: one row per class (named), masks outlined; no wider than
    the largest class (a column nobody fills would only cost drawing time), but wide enough for the longest
    class name (wrapped) and the title."""
    from matplotlib.figure import Figure  # not pyplot: no global backend or figure state is touched

    images, labels, masks = bundle.train.images, bundle.train.labels, bundle.train.masks
    per_class = max(1, min(per_class, max(bundle.train.class_counts(bundle.num_classes), default=1)))
    rows = sample_grid_indices(labels, bundle.num_classes, per_class, seed)
    tile = 1.3 if bundle.image_size <= 96 else 2.0
    names = [wrap_label(name) for name in bundle.class_names]
    legend = f"; {MASK_LEGEND}" if masks is not None and bool(masks.any()) else ""
    title = readable(f"{bundle.spec}  ({bundle.image_size}px, {bundle.channels} channel(s){legend})")
    width = max(tile * per_class + text_inches(names, 10), text_inches([title], 9)) + 0.4
    figure = Figure(figsize=(width, tile * bundle.num_classes + 0.3))
    axes = figure.subplots(bundle.num_classes, per_class, squeeze=False)
    for class_index, (indices, axes_row) in enumerate(zip(rows, axes)):
        for column, axis in enumerate(axes_row):
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_visible(False)
            if column >= len(indices):
                continue
            index = indices[column]
            picture = images[index].permute(1, 2, 0).numpy()
            if picture.shape[-1] == 1:
                axis.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                axis.imshow(picture, interpolation="nearest")
            if masks is not None and masks[index].any():
                outline_mask(axis, masks[index].numpy())
        axes_row[0].set_ylabel(names[class_index], rotation=0, ha="right", va="center", fontsize=10)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(path, figure, dpi=100)
