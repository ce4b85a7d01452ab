"""The deletion metric's cost: greedy patches that never scan the whole image per step, and the clean images
classified once per evaluation, both giving exactly the results of the plain way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from caex.classifier import TorchClassifier
from caex.data.types import DataBundle, ImageSet
from caex.errors import EvaluationError
from caex.evaluation import PerturbationMetric, evaluate, greedy_patches, make_fill, perturbation_curve
from caex.evaluation.perturbation import clean_probabilities
from caex.evaluation.ranking import patch_extent, pixel_rank

SIZE = 16


def reference_greedy_patches(saliency: torch.Tensor, n_patches: int, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain definition: each step takes the best-ranked uncovered pixel and covers every pixel of the
    image that lies in its square (the implementation before the scan was narrowed to the candidates)."""
    batch, height, width = saliency.shape
    pixels = height * width
    rank = pixel_rank(saliency, patch)
    rows, cols = torch.arange(pixels) // width, torch.arange(pixels) % width
    before, after = patch_extent(patch)
    never = n_patches + 1
    cover_step = torch.full((batch, pixels), never, dtype=torch.long)
    centres = torch.full((batch, n_patches), -1, dtype=torch.long)
    for step in range(1, n_patches + 1):
        uncovered = cover_step == never
        best = rank.masked_fill(~uncovered, pixels).argmin(dim=1)
        available = uncovered.any(dim=1)
        centres[:, step - 1] = torch.where(available, best, -1)
        row_offset, col_offset = rows[None] - rows[best][:, None], cols[None] - cols[best][:, None]
        inside = ((row_offset >= -before) & (row_offset <= after) & (col_offset >= -before)
                  & (col_offset <= after) & available[:, None])
        cover_step[inside & uncovered] = step
    return centres, cover_step.view(batch, height, width)


def saliency_maps(kind: str, count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Maps with distinct values, with ties everywhere (three levels, 8 px blocks, one value) or signed."""
    if kind == "random":
        return torch.rand(count, height, width, generator=generator)
    if kind == "three levels":
        return torch.randint(0, 3, (count, height, width), generator=generator).float()
    if kind == "blocks":
        blocks = torch.rand(count, 1, -(-height // 8), -(-width // 8), generator=generator)
        return F.interpolate(blocks, scale_factor=8, mode="nearest")[:, 0, :height, :width]
    if kind == "constant":
        return torch.full((count, height, width), 0.25)
    return torch.randn(count, height, width, generator=generator)  # signed


@pytest.mark.parametrize("kind", ["random", "three levels", "blocks", "constant", "signed"])
def test_greedy_patches_are_exactly_the_plain_definitions(kind):
    generator = torch.Generator().manual_seed(len(kind))
    left_uncovered = ran_out = False
    for height, width in [(1, 1), (2, 3), (5, 9), (16, 16), (17, 12), (9, 31)]:
        pixels = height * width
        for patch in (1, 2, 3, 4, 7):  # odd and even sides; 7 is wider than some of the images
            # none, one, a few, as many as default_n_patches gives, and twice the squares that tile the image
            counts = {0, 1, 3, max(1, round(0.1 * pixels / patch**2)), 2 * -(-pixels // patch**2)}
            for n_patches in sorted(counts | ({pixels + 5} if pixels < 50 else set())):  # more than the pixels
                saliency = saliency_maps(kind, 3, height, width, generator)
                expected = reference_greedy_patches(saliency, n_patches, patch)
                centres, cover_step = greedy_patches(saliency, n_patches, patch)
                assert torch.equal(centres, expected[0]), (height, width, patch, n_patches)
                assert torch.equal(cover_step, expected[1]), (height, width, patch, n_patches)
                left_uncovered |= bool((cover_step == n_patches + 1).any())
                ran_out |= bool((centres == -1).any())
    assert left_uncovered and ran_out  # both ends were reached


def test_greedy_patches_of_no_images():
    centres, cover_step = greedy_patches(torch.rand(0, 8, 8), 3, patch=3)
    assert centres.shape == (0, 3) and cover_step.shape == (0, 8, 8)


class _LargeResults(TorchFunctionMode):
    """Counts the tensors of at least ``numel`` elements that torch functions allocate (views and in-place
    results share an argument's storage and are not counted)."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel, self.count = numel, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        shared = {arg.untyped_storage().data_ptr() for arg in args if isinstance(arg, torch.Tensor)}
        if (isinstance(result, torch.Tensor) and result.numel() >= self.numel
                and result.untyped_storage().data_ptr() not in shared):
            self.count += 1
        return result


def test_patch_steps_allocate_nothing_of_the_images_size():
    """A step masked every pixel of every image (a dozen [K, H*W] temporaries): ~S**3.5 per image, 0.1-0.3 s at
    224 px. Ranking the pixels and the result are image-sized, once; more steps add none."""
    saliency = torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(0))
    counts = []
    for n_patches in (2, 20):
        with _LargeResults(saliency.numel()) as large:
            greedy_patches(saliency, n_patches, patch=3)
        counts.append(large.count)
    assert counts[0] == counts[1]


class _CountingClassifier(TorchClassifier):
    """Records every batch it is asked to classify."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.inputs: list[torch.Tensor] = []

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        self.inputs.append(images.clone())
        return super().predict_proba(images)


class _CornerBrightness(nn.Module):
    """Class 1 grows with the mean of the top-left quarter: deletion moves it."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logit = 8 * (images[:, :, :SIZE // 2, :SIZE // 2].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([-logit, logit], dim=1)


def _corner_classifier() -> _CountingClassifier:
    return _CountingClassifier(_CornerBrightness(), ["dark", "bright"], SIZE, 1)


def _corner_images(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = 0.3 * torch.rand(count, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    images[1::2, :, :SIZE // 2, :SIZE // 2] += 0.6
    return images, torch.tensor([0, 1] * (count // 2))


def test_given_clean_probabilities_give_bit_identical_scores_without_classifying_the_clean_images():
    images, labels = _corner_images(6)
    saliency = torch.rand(6, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    fill, metric = make_fill(images, 3), PerturbationMetric(patch=3, n_patches=4, batch_size=5)
    classifier = _corner_classifier()
    clean = clean_probabilities(classifier, images, labels)
    assert torch.equal(clean, classifier(images)[torch.arange(6), labels])
    plain = metric(classifier, images, labels, saliency, fill)
    classifier.inputs.clear()
    given = metric(classifier, images, labels, saliency, fill, clean=clean)
    assert not any(torch.equal(batch, images) for batch in classifier.inputs)  # only covered images, 24 of them
    assert sum(map(len, classifier.inputs)) == 6 * 4
    assert torch.equal(given.probs, plain.probs) and torch.equal(given.probs[:, 0], clean)
    assert (given.aopc, given.aopc_se, given.peak_degradation) == (plain.aopc, plain.aopc_se, plain.peak_degradation)
    assert given.curve == plain.curve and given.aopc_per_image == plain.aopc_per_image
    assert plain.aopc > 0  # a curve that moves: the comparison is not of constants
    assert torch.equal(perturbation_curve(classifier, images, labels, saliency, fill, 4, 3, clean=clean), plain.probs)
    with pytest.raises(EvaluationError, match=r"^expected clean \[K\], a probability per image; got \(6, 2\) "
                                              r"for 6 images$"):
        metric(classifier, images, labels, saliency, fill, clean=classifier(images))


def test_evaluate_classifies_the_clean_images_once_for_all_methods():
    images, labels = _corner_images(8)
    split = ImageSet(images, labels)
    data = DataBundle(train=split, test=split, class_names=["dark", "bright"], spec="corner")
    classifier = _corner_classifier()
    results = evaluate(None, classifier, data, methods=["random", "integrated_gradients"], n_images=4,
                       batch_size=4, metric=PerturbationMetric(patch=3, n_patches=2))
    selected = images[results.image_indices]
    assert sum(torch.equal(batch, selected) for batch in classifier.inputs) == 1
    single = evaluate(None, _corner_classifier(), data, methods=["integrated_gradients"], n_images=4, batch_size=4,
                      metric=PerturbationMetric(patch=3, n_patches=2))
    shared = results.row("integrated_gradients")
    assert single.row("integrated_gradients").aopc == shared.aopc > 0  # the shared column changes no score
