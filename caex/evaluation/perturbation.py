"""Faithfulness by deletion: AOPC and peak degradation (paper §IV-C).

Pixels are ranked by saliency; walking the ranking, every pixel not yet
covered becomes the centre of a ``patch x patch`` square (clipped at the
borders; an even side reaches one pixel further before its centre than after)
that is replaced by a per-image uniform random fill. Pixels rank as in
:mod:`caex.evaluation.ranking`: a flat block (a LIME superpixel, an occlusion
window) is entered at its core, where raster order covered its corner first
and scored such methods low. ``X_{i,p}`` is
image ``i`` with its first ``p`` squares covered and ``F`` the classifier's
probability of the ground-truth class:

* ``AOPC = sum_p sum_i [F(X_i0) - F(X_ip)] / (K N)`` over ``p = 1..N``
* ``PD   = max_p sum_i [F(X_i0) - F(X_ip)] / K``

The functions below are pure tensor code; :class:`PerturbationMetric` holds the
settings (patch size, share of the image covered at ``p = N``) so every method
is measured the same way. All ``K x N`` perturbed images are built with
vectorised masks and classified in large batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from caex.data.types import as_tensor_argument, check_image_batch
from caex.errors import EvaluationError
from caex.evaluation.ranking import DEFAULT_PATCH, patch_extent, pixel_order
from caex.utils.checks import check_counts, check_number_fields, check_share
from caex.utils.rows import nonfinite_rows
from caex.utils.seed import torch_generator

#: Share of the image area that ``N`` patches would cover if none overlapped; the same share makes
#: 28x28 and 256x256 comparable. Measured on the 64 px synthetic benchmark: at 25% the noise
#: patches alone drive every method to the same peak degradation (PD 0.737 for all, random map
#: included: AOPC 0.61 against the best 0.69); at 10% the random map falls to 0.40 against 0.61.
DEFAULT_SHARE = 0.10

ProbabilityFn = Callable[[torch.Tensor], torch.Tensor]


def default_n_patches(height: int, width: int, patch: int = DEFAULT_PATCH, share: float = DEFAULT_SHARE) -> int:
    """``N`` such that ``N * patch**2`` is about ``share`` of the image area (at least 1)."""
    return max(1, round(share * height * width / patch**2))


def make_fill(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Uniform values over the data range [0, 1] for every image of the batch, shared by every method.

    One seeded draw for the whole batch: an image's fill is fixed by the seed and its position in
    ``images``, so every method measured on the same selection sees the same fill.
    """
    generator = torch_generator(seed)
    return torch.rand(images.shape, generator=generator, dtype=torch.float32).to(images.device)


def greedy_patches(saliency: torch.Tensor, n_patches: int,
                   patch: int = DEFAULT_PATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy patch centres for saliency maps ``[B, H, W]``.

    Returns ``centres [B, N]`` (flat pixel index, -1 once no pixel is left
    uncovered) and ``cover_step [B, H, W]``: the ``p`` at which each pixel is
    first covered, ``N + 1`` for never. Ties are ranked as in :func:`pixel_order`.
    The loop runs over patches; each step is vectorised over images and looks only at the pixels that can be
    its centre and at its square, never at the whole image: masks of every pixel at every step made the cost
    grow with ``H * W * N`` (0.1-0.3 s per 224 px image).
    """
    batch, height, width = saliency.shape
    device = saliency.device
    pixels = height * width
    order = pixel_order(saliency, patch)
    before, after = patch_extent(patch)
    span = torch.arange(-before, after + 1, device=device)
    square_rows, square_cols = span.repeat_interleave(patch), span.repeat(patch)  # offsets of the square's pixels
    never = n_patches + 1
    cover_step = torch.full((batch, pixels), never, dtype=torch.long, device=device)
    centres = torch.full((batch, n_patches), -1, dtype=torch.long, device=device)
    for step in range(1, n_patches + 1):
        # The squares of the steps before cover at most (step - 1) patch**2 pixels, so one of the first
        # (step - 1) patch**2 + 1 pixels in order is still uncovered: the centre is the first such.
        candidates = order[:, :min(pixels, (step - 1) * patch**2 + 1)]
        available, first = (cover_step.gather(1, candidates) == never).max(dim=1)  # the first maximum's index
        best = candidates.gather(1, first[:, None])
        centres[:, step - 1] = torch.where(available, best.squeeze(1), -1)
        rows, cols = best // width + square_rows, best % width + square_cols
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        # A square's pixels beyond the border stand for its centre, which they cover as it does: a duplicate
        # index scatters one value only.
        square = torch.where(inside, rows * width + cols, best)
        current = cover_step.gather(1, square)
        cover_step.scatter_(1, square, torch.where((current == never) & available[:, None], step, current))
    return centres, cover_step.view(batch, height, width)


def _checked_images(images: object, what: str = "images") -> torch.Tensor:
    """``images`` if they are a non-empty data-range batch (:func:`~caex.data.types.check_image_batch`): a plain
    callable took 0..255 images and a [0, 1] fill without a word, and scored a wrong AOPC that looked right."""
    images = check_image_batch(images, what=what, error=EvaluationError)
    if not len(images):  # else torch.cat of nothing
        raise EvaluationError(f"{what}: no images to score (shape {tuple(images.shape)})")
    return images


def _label_values(labels: object) -> torch.Tensor | np.ndarray:
    """``labels`` as a tensor or array, whose shape and dtype the checks read; a ragged list is an
    :class:`EvaluationError` (NumPy's "inhomogeneous shape" ValueError otherwise)."""
    if isinstance(labels, torch.Tensor):
        return labels
    try:
        return np.asarray(labels)
    except ValueError:
        raise EvaluationError(f"labels: expected one class index per image, got a ragged "
                              f"{type(labels).__name__}") from None


def _checked_labels(labels: object, count: int) -> torch.Tensor:
    """``labels`` as int64 ``[count]``: one class index per image, as a tensor, array or list of any integer type
    (a float or bool tensor failed in ``gather``, an array as having no ``.to``)."""
    values = _label_values(labels)
    integral = (values.dtype.kind in "iu" if isinstance(values, np.ndarray)
                else not (values.is_floating_point() or values.is_complex() or values.dtype == torch.bool))
    if not integral or tuple(values.shape) != (count,):
        raise EvaluationError(f"labels: expected one class index per image [{count}], got {values.dtype} of shape "
                              f"{tuple(values.shape)}")
    return as_tensor_argument(values, "labels", EvaluationError).long()


def _checked_inputs(images: object, labels: object, saliency: object,
                    fill: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The deletion metric's arguments checked, with the labels as int64 and arrays as tensors: images and fill in
    the data range whatever the model (a :class:`~caex.classifier.Classifier` checks its inputs, a plain callable
    does not), and shapes that fit together."""
    images, fill = _checked_images(images), _checked_images(fill, "fill")
    saliency = as_tensor_argument(saliency, "saliency", EvaluationError)
    labels = _label_values(labels)
    count, size = len(images), tuple(images.shape[-2:])
    # else "too many values to unpack" for an attribute() output [K, 1, H, W]
    if tuple(labels.shape) != (count,) or tuple(saliency.shape) != (count, *size) or fill.shape != images.shape:
        raise EvaluationError(f"expected images [K, C, H, W], labels [K], saliency [K, H, W] and fill like the "
                              f"images; got {tuple(images.shape)}, {tuple(labels.shape)}, "
                              f"{tuple(saliency.shape)} and {tuple(fill.shape)}")
    return images, _checked_labels(labels, count), saliency, fill


def clean_probabilities(model: ProbabilityFn, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Ground-truth probabilities ``[K]`` of the uncovered images: the ``p = 0`` column of every method's curve on
    these images, which an evaluation of several methods computes once and passes to each."""
    images = _checked_images(images)
    return _clean_probabilities(model, images, _checked_labels(labels, len(images)))


@torch.no_grad()
def _clean_probabilities(model: ProbabilityFn, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`clean_probabilities` of checked arguments."""
    return _label_probabilities(model(images), labels.to(images.device), "images")


def perturbation_curve(model: ProbabilityFn, images: torch.Tensor, labels: torch.Tensor,
                       saliency: torch.Tensor, fill: torch.Tensor, n_patches: int,
                       patch: int = DEFAULT_PATCH, batch_size: int = 256,
                       clean: torch.Tensor | None = None) -> torch.Tensor:
    """Ground-truth probabilities ``[K, N + 1]`` of the images with ``p = 0..N`` patches covered.

    ``model`` maps data-range images to probabilities ``[b, classes]`` (a
    :class:`caex.classifier.Classifier` is such a callable). ``clean``, the :func:`clean_probabilities` of
    ``model`` on these images, saves classifying them again.
    """
    return _covered_probabilities(model, *_checked_inputs(images, labels, saliency, fill), n_patches, patch,
                                  batch_size, clean)


@torch.no_grad()  # a plain callable would otherwise keep an autograd graph for all K x N covered images
def _covered_probabilities(model: ProbabilityFn, images: torch.Tensor, labels: torch.Tensor, saliency: torch.Tensor,
                           fill: torch.Tensor, n_patches: int, patch: int, batch_size: int,
                           clean: torch.Tensor | None) -> torch.Tensor:
    """:func:`perturbation_curve` of checked arguments."""
    count = len(images)
    fill = fill.to(images.device)
    _, cover_step = greedy_patches(saliency.to(images.device), n_patches, patch)
    labels = labels.to(images.device)
    if clean is None:
        clean = _clean_probabilities(model, images, labels)
    rows = torch.arange(count * n_patches, device=images.device)
    image_index, step = rows // n_patches, rows % n_patches + 1
    covered_probs = []
    for start in range(0, len(rows), batch_size):
        index, p = image_index[start:start + batch_size], step[start:start + batch_size]
        covered = (cover_step[index] <= p[:, None, None]).unsqueeze(1)
        perturbed = torch.where(covered, fill[index], images[index])
        covered_probs.append(_label_probabilities(model(perturbed), labels[index], "covered images"))
    return torch.cat([clean[:, None], torch.cat(covered_probs).view(count, n_patches)], dim=1)


def _checked_probabilities(probs: torch.Tensor, what: str) -> torch.Tensor:
    """``probs`` if its rows are probability distributions: logits (a bare ``nn.Module``'s output) gave AOPC
    values near 2 that looked like results."""
    if nonfinite_rows(probs).any():  # every comparison below is False for NaN, and one NaN empties the mean
        raise EvaluationError(f"the model's outputs are not finite (NaN or inf) for some {what}, as a "
                              "model that divides by an image's spread gives on a flat one; these images cannot "
                              "be scored")
    sums = probs.detach().float().sum(dim=1)
    if len(probs) and (float(probs.min()) < -1e-4 or float((sums - 1).abs().max()) > 1e-3):
        raise EvaluationError(f"the model's outputs are not probabilities (rows sum to {float(sums.min()):.3g} to "
                              f"{float(sums.max()):.3g}); pass a caex Classifier, or wrap a torch module that "
                              "returns logits as caex.classifier.TorchClassifier")
    return probs


def _label_probabilities(probs: torch.Tensor, labels: torch.Tensor, what: str) -> torch.Tensor:
    """``[b]``: the probability of each image's label in the model's outputs ``probs [b, classes]``, checked by
    :func:`_checked_probabilities`; a label outside the classes is refused (it failed as an index out of bounds)."""
    probs = _checked_probabilities(probs, what)
    outside = labels[(labels < 0) | (labels >= probs.shape[1])]
    if len(outside):
        raise EvaluationError(f"labels: {int(outside[0])} is not a class index of the model's {probs.shape[1]} "
                              f"outputs (0..{probs.shape[1] - 1})")
    return probs.gather(1, labels[:, None]).squeeze(1)


def degradation_curve(probs: torch.Tensor) -> torch.Tensor:
    """Mean drop of the ground-truth probability ``[N]`` for ``p = 1..N``, from ``probs [K, N + 1]``."""
    return (probs[:, :1] - probs[:, 1:]).mean(dim=0)


def aopc(probs: torch.Tensor) -> float:
    """Area over the perturbation curve: the drop averaged over images and ``p = 1..N``."""
    return float(degradation_curve(probs).mean())


def aopc_per_image(probs: torch.Tensor) -> torch.Tensor:
    """``[K]``: each image's own AOPC, whose mean is :func:`aopc`. Two methods' rows, on the same images and
    fill, pair up: their differences measure one method against the other without the spread between images."""
    return (probs[:, :1] - probs[:, 1:]).mean(dim=1)


def standard_error(values: torch.Tensor | Sequence[float]) -> float:
    """Standard error of the mean of ``values`` (sample std / sqrt(n); NaN below 2 values)."""
    values = (values.detach().to("cpu", torch.float64) if isinstance(values, torch.Tensor)  # MPS has no float64
              else torch.as_tensor(values, dtype=torch.float64))
    return float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan


def aopc_standard_error(probs: torch.Tensor) -> float:
    """Standard error of :func:`aopc` over the images: how far the mean could move with other images of the
    same kind. (Comparing two methods, the standard error of their paired per-image differences is the
    tighter and right measure: the images' spread is shared.)"""
    return standard_error(aopc_per_image(probs))


def peak_degradation(probs: torch.Tensor) -> float:
    """The largest mean drop over ``p = 1..N``."""
    return float(degradation_curve(probs).max())


@dataclass(frozen=True)
class PerturbationResult:
    aopc: float
    aopc_se: float  # standard error over the images
    aopc_per_image: list[float]
    peak_degradation: float
    curve: list[float]  # mean drop per p = 1..N
    probs: torch.Tensor  # [K, N + 1] ground-truth probabilities, p = 0..N
    n_patches: int
    patch: int


@dataclass(frozen=True)
class PerturbationMetric:
    """AOPC/PD with fixed settings; ``n_patches=None`` derives ``N`` from ``share`` and the image size."""

    patch: int = DEFAULT_PATCH
    share: float = DEFAULT_SHARE
    n_patches: int | None = None
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_number_fields(self, EvaluationError, "PerturbationMetric.")  # patch=2.5 covered 2x2 squares
        counts = {"patch": self.patch, "batch_size": self.batch_size}
        check_counts(counts if self.n_patches is None else {**counts, "n_patches": self.n_patches}, 1,
                     EvaluationError, "PerturbationMetric.")
        check_share("PerturbationMetric.share", self.share, EvaluationError)

    def n_patches_for(self, height: int, width: int) -> int:
        """``N`` for images of this size; one-line errors for a patch or a count the images cannot hold."""
        if self.patch > min(height, width):
            raise EvaluationError(f"patch={self.patch}: larger than the {height}x{width} images")
        if self.n_patches is not None and self.n_patches > height * width:
            raise EvaluationError(f"n_patches={self.n_patches}: more than the {height * width} pixels of the "
                                  f"{height}x{width} images (every pixel is covered long before)")
        return self.n_patches if self.n_patches is not None else default_n_patches(height, width, self.patch,
                                                                                    self.share)

    def __call__(self, model: ProbabilityFn, images: torch.Tensor, labels: torch.Tensor,
                 saliency: torch.Tensor, fill: torch.Tensor, clean: torch.Tensor | None = None) -> PerturbationResult:
        """The scores of one method's ``saliency``; ``clean`` as :func:`perturbation_curve` takes it."""
        images, labels, saliency, fill = _checked_inputs(images, labels, saliency, fill)
        if clean is not None and tuple(clean.shape) != (len(images),):
            raise EvaluationError(f"expected clean [K], a probability per image; got {tuple(clean.shape)} for "
                                  f"{len(images)} images")
        n_patches = self.n_patches_for(*images.shape[-2:])
        probs = _covered_probabilities(model, images, labels, saliency, fill, n_patches, self.patch, self.batch_size,
                                       clean)
        return PerturbationResult(aopc=aopc(probs), aopc_se=aopc_standard_error(probs),
                                  aopc_per_image=aopc_per_image(probs).tolist(),
                                  peak_degradation=peak_degradation(probs),
                                  curve=degradation_curve(probs).tolist(), probs=probs,
                                  n_patches=n_patches, patch=self.patch)

    def describe(self, height: int, width: int) -> dict[str, object]:
        """The settings a results table must state, for an image of this size."""
        n_patches = self.n_patches_for(height, width)
        return {"n_patches": n_patches, "patch": self.patch,
                "covered_share_max": round(min(1.0, n_patches * self.patch**2 / (height * width)), 4),
                "fill": "uniform random in [0, 1], drawn once per image (seeded), same for every method"}
