"""Known-answer tests of the faithfulness/localisation metrics, timing and the evaluation runner."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from caex.classifier import TorchClassifier
from caex.data.types import DataBundle, ImageSet, rank_within_class
from caex.evaluation import (
    EvaluationError,
    LocalisationMetric,
    PerturbationMetric,
    aopc,
    aopc_per_image,
    aopc_standard_error,
    default_n_patches,
    evaluate,
    greedy_patches,
    make_fill,
    mass_in_mask,
    peak_degradation,
    perturbation_curve,
    pointing_game,
    select_images,
    timed_saliency,
    topk_iou,
)
from caex.evaluation.ranking import RANKING, pixel_rank
from caex.evaluation.runner import MethodResult, _per_class_table
from caex.utils.provenance import classifier_digest

SIZE = 16
SQUARE = (slice(6, 10), slice(6, 10))  # the only region the classifier looks at


class SquareBrightness(nn.Module):
    """Logit of class 1 grows with the mean intensity of one fixed square, that of class 0 falls with it.

    Softmax reads only their difference, 12 (mean - 0.5). A constant class-0 logit gave integrated gradients
    nothing to attribute for class 0, and beside a grey square's class-1 logit it put a batch in [0, 1], which
    reads as sigmoid scores.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logit = 6 * (images[:, :, SQUARE[0], SQUARE[1]].mean(dim=(1, 2, 3)) - 0.5)
        return torch.stack([-logit, logit], dim=1)


def square_classifier() -> TorchClassifier:
    return TorchClassifier(SquareBrightness(), ["dark", "bright"], SIZE, 1)


def square_mask(count: int) -> torch.Tensor:
    masks = torch.zeros(count, SIZE, SIZE, dtype=torch.bool)
    masks[:, SQUARE[0], SQUARE[1]] = True
    return masks


def bright_images(count: int, seed: int = 0) -> torch.Tensor:
    """Dim noisy backgrounds with a bright square: class 1 with high confidence."""
    images = 0.3 * torch.rand(count, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    images[:, :, SQUARE[0], SQUARE[1]] = 1.0
    return images


def test_hand_computed_aopc_and_pd():
    probs = torch.tensor([[0.9, 0.5, 0.2], [0.8, 0.8, 0.4]])
    # drops per p: image 0 -> 0.4, 0.7; image 1 -> 0.0, 0.4; means 0.2, 0.55
    assert aopc(probs) == pytest.approx(0.375)
    assert peak_degradation(probs) == pytest.approx(0.55)
    torch.testing.assert_close(aopc_per_image(probs), torch.tensor([0.55, 0.2]))
    # per-image AOPC 0.55 and 0.2: sample std 0.2475, over sqrt(2)
    assert aopc_standard_error(probs) == pytest.approx(0.35 / math.sqrt(2) / math.sqrt(2))
    assert math.isnan(aopc_standard_error(probs[:1]))


def test_perturbation_curve_on_a_mean_intensity_model():
    """F = mean intensity; white 4x4 images, black fill, 1x1 patches: F drops by 1/16 per patch."""
    def mean_model(images: torch.Tensor) -> torch.Tensor:
        brightness = images.mean(dim=(1, 2, 3))
        return torch.stack([1 - brightness, brightness], dim=1)

    images = torch.ones(2, 1, 4, 4)
    saliency = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    probs = perturbation_curve(mean_model, images, torch.tensor([1, 1]), saliency, torch.zeros_like(images),
                               n_patches=3, patch=1)
    expected = torch.tensor([1.0, 15 / 16, 14 / 16, 13 / 16]).expand(2, -1)
    torch.testing.assert_close(probs, expected)
    assert aopc(probs) == pytest.approx(2 / 16)  # mean of 1/16, 2/16, 3/16
    assert peak_degradation(probs) == pytest.approx(3 / 16)


def test_default_7x7_patches_on_a_known_answer():
    """F = mean intensity of a white 16x16 image under a black fill: each patch's new pixels, /256."""
    def mean_model(images: torch.Tensor) -> torch.Tensor:
        brightness = images.mean(dim=(1, 2, 3))
        return torch.stack([1 - brightness, brightness], dim=1)

    saliency = torch.zeros(1, 16, 16)
    saliency[0, 8, 8] = 3    # patch 1: rows and cols 5..11, 49 pixels
    saliency[0, 10, 10] = 2  # inside patch 1: never a centre
    saliency[0, 0, 15] = 1   # patch 2: the corner, clipped to rows 0..3 x cols 12..15, 16 pixels
    # then, of the equal zeros, the raster-first whose 7x7 square holds the most saliency: (7, 12), whose square
    # (rows 4..10 x cols 9..15) holds the 2; it covers 28 new pixels in cols 12..15 and 3 in row 4, cols 9..11
    images = torch.ones(1, 3, 16, 16)
    result = PerturbationMetric()(mean_model, images, torch.tensor([1]), saliency, torch.zeros_like(images))
    assert result.patch == 7 and result.n_patches == default_n_patches(16, 16) == 1
    probs = perturbation_curve(mean_model, images, torch.tensor([1]), saliency, torch.zeros_like(images),
                               n_patches=3)
    torch.testing.assert_close(probs, torch.tensor([[1.0, 1 - 49 / 256, 1 - 65 / 256, 1 - 96 / 256]]))
    assert result.aopc == pytest.approx(49 / 256) and result.peak_degradation == pytest.approx(49 / 256)


def test_greedy_patches_skip_covered_pixels_and_clip_at_borders():
    saliency = torch.zeros(1, 6, 6)
    saliency[0, 2, 2] = 10  # patch 1 covers rows 1-3, cols 1-3
    saliency[0, 2, 3] = 9   # covered by patch 1: skipped
    saliency[0, 0, 5] = 8   # corner: patch clipped to rows 0-1, cols 4-5
    saliency[0, 5, 0] = 7
    saliency[0, 3, 3] = 6   # covered by patch 1: skipped
    saliency[0, 5, 5] = 5
    centres, cover_step = greedy_patches(saliency, n_patches=4, patch=3)
    assert centres.tolist() == [[2 * 6 + 2, 0 * 6 + 5, 5 * 6 + 0, 5 * 6 + 5]]
    assert [int((cover_step <= p).sum()) for p in range(1, 5)] == [9, 13, 17, 21]
    assert cover_step[0, 3, 3] == 1 and cover_step[0, 0, 4] == 2 and cover_step[0, 0, 0] == 5  # 5 = never


def test_an_even_patch_reaches_one_pixel_further_before_its_centre_than_after():
    """Patch 2 centred on (2, 2) covers rows and cols 1..2, not 2..3; patch 4 covers 0..3."""
    saliency = torch.zeros(1, 5, 5)
    saliency[0, 2, 2] = 1
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[1:3, 1:3] = True
    assert torch.equal(greedy_patches(saliency, n_patches=1, patch=2)[1][0] == 1, expected)
    expected[0:4, 0:4] = True
    assert torch.equal(greedy_patches(saliency, n_patches=1, patch=4)[1][0] == 1, expected)


def test_greedy_patches_stop_when_the_image_is_covered():
    saliency = torch.zeros(2, 3, 3)
    saliency[:, 1, 1] = 1  # the first patch, centred, covers the whole 3x3 image
    centres, cover_step = greedy_patches(saliency, n_patches=2, patch=3)
    assert centres.tolist() == [[4, -1], [4, -1]]
    assert bool((cover_step == 1).all())


def test_ideal_map_maximises_aopc_inverted_minimises_random_in_between():
    classifier = square_classifier()
    images, labels = bright_images(6), torch.ones(6, dtype=torch.long)
    ideal = square_mask(6).float()
    metric = PerturbationMetric(patch=3, n_patches=4)
    fill = make_fill(images, seed=0)
    best = metric(classifier, images, labels, ideal, fill)
    worst = metric(classifier, images, labels, 1 - ideal, fill)
    randoms = [metric(classifier, images, labels, torch.rand(6, SIZE, SIZE, generator=torch.Generator().manual_seed(s)),
                      fill).aopc for s in range(5)]
    assert worst.aopc == pytest.approx(0.0, abs=1e-6)  # covers only background the model ignores
    assert best.aopc > max(randoms) >= min(randoms) >= worst.aopc
    assert best.peak_degradation == pytest.approx(max(best.curve))
    assert len(best.curve) == best.n_patches == 4 and best.probs.shape == (6, 5)


def test_fill_is_seeded_and_in_range():
    images = torch.zeros(3, 2, 8, 8)
    fill = make_fill(images, seed=3)
    assert torch.equal(fill, make_fill(images, seed=3))
    assert not torch.equal(fill, make_fill(images, seed=4))
    assert fill.shape == images.shape and float(fill.min()) >= 0 and float(fill.max()) <= 1
    assert 0.45 < float(fill.mean()) < 0.55 and float(fill.max()) > 0.95  # uniform over all of [0, 1]


def test_the_random_map_is_not_the_fill_of_its_own_seed():
    """Both were the seed's first uniform draws: on grey images the map was the fill, so its patches covered the
    brightest fill pixels (0.999 on average) and the random floor read about 0.03 AOPC low."""
    from caex.explain.attribution import make_attributor

    images = torch.rand(8, 1, SIZE, SIZE)
    fill = make_fill(images, seed=0)
    maps = make_attributor("random", square_classifier(), seed=0).attribute(images, target=1)
    assert maps.shape == (8, 1, SIZE, SIZE)
    assert abs(float(torch.corrcoef(torch.stack([maps.flatten(), fill.flatten()]))[0, 1])) < 0.1
    centres = maps.flatten(1).argmax(dim=1)  # where its first patch goes
    assert float(fill.flatten(1).gather(1, centres[:, None]).mean()) < 0.9


def test_perturbation_curve_is_the_same_in_any_batch_size():
    """K * N = 8 perturbed images in batches of 2 and of 256 (one batch) must give the same curve."""
    images, labels = bright_images(4), torch.ones(4, dtype=torch.long)
    saliency = torch.rand(4, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    fill = make_fill(images, seed=0)
    one_batch = perturbation_curve(square_classifier(), images, labels, saliency, fill, n_patches=2, patch=3)
    torch.testing.assert_close(perturbation_curve(square_classifier(), images, labels, saliency, fill, n_patches=2,
                                                  patch=3, batch_size=2), one_batch)
    assert not torch.allclose(one_batch[:, 1], one_batch[:, 2])  # every step differs: a repeated batch would show


def test_describe_states_the_largest_covered_share():
    assert PerturbationMetric(patch=3, n_patches=4).describe(16, 16)["covered_share_max"] == round(36 / 256, 4)
    described = PerturbationMetric().describe(64, 64)
    assert (described["n_patches"], described["patch"]) == (8, 7)
    assert described["covered_share_max"] == round(8 * 49 / 4096, 4)


def test_a_patch_or_a_count_the_images_cannot_hold_is_refused_before_any_map():
    """--patch 100 on 32 px images reported 'at most 976.6% of the image' and --n-patches 100000 ran for hours."""
    with pytest.raises(EvaluationError, match=r"patch=33: larger than the 32x32 images"):
        PerturbationMetric(patch=33).describe(32, 32)
    with pytest.raises(EvaluationError, match=r"n_patches=1025: more than the 1024 pixels of the 32x32 images"):
        PerturbationMetric(n_patches=1025).describe(32, 32)
    assert PerturbationMetric(patch=32, n_patches=1024).describe(32, 32)["n_patches"] == 1024


def test_default_n_patches_covers_a_fixed_share():
    assert default_n_patches(28, 28) == 2  # 0.1 * 784 / 49 = 1.6
    assert default_n_patches(64, 64) == 8  # 0.1 * 4096 / 49 = 8.4
    assert default_n_patches(256, 256, share=0.25) == 334
    assert default_n_patches(4, 4) == 1


@pytest.mark.parametrize(("settings", "named"), [(dict(n_patches=0), "n_patches=0"), (dict(patch=0), "patch=0"),
                                                 (dict(share=0.0), "share=0.0"), (dict(share=1.5), "share=1.5"),
                                                 (dict(batch_size=0), "batch_size=0")])
def test_perturbation_metric_refuses_settings_without_a_curve(settings, named):
    with pytest.raises(EvaluationError, match=f"PerturbationMetric.{named}"):
        PerturbationMetric(**settings)


@pytest.mark.parametrize(("name", "value"), [("patch", 2.5), ("patch", True), ("n_patches", 3.0),
                                           ("batch_size", "8")])
def test_perturbation_metric_refuses_counts_that_are_not_whole_numbers(name, value):
    """patch=2.5 covered 2x2 squares while the results recorded 2.5; patch=True passed as 1."""
    with pytest.raises(EvaluationError, match=rf"^PerturbationMetric\.{name}={value!r}: must be a whole number$"):
        PerturbationMetric(**{name: value})


def test_perturbation_metric_names_mismatched_shapes():
    """An attribute() output [K, 1, H, W] used to fail as "too many values to unpack", short labels as IndexError."""
    images, classifier = bright_images(3), square_classifier()
    labels, maps, fill = torch.ones(3, dtype=torch.long), torch.rand(3, SIZE, SIZE), make_fill(images)
    assert PerturbationMetric()(classifier, images, labels, maps, fill).probs.shape[0] == 3
    for bad in ((images, labels, maps[:, None], fill), (images, labels[:2], maps, fill),
                (images, labels, maps, fill[:, :, :8])):
        with pytest.raises(EvaluationError, match=r"expected images \[K, C, H, W\], labels \[K\], saliency"):
            PerturbationMetric()(classifier, *bad)


def test_localisation_exact_values():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :2, :2] = True  # 4 of 16 pixels; image 1 has no lesion
    saliency = torch.zeros(2, 4, 4)
    saliency[0, 0, 0], saliency[0, 0, 1], saliency[0, 3, 3], saliency[0, 2, 2] = 1.0, 0.5, 0.25, 0.25
    assert pointing_game(saliency, masks)[0] == 1 and math.isnan(pointing_game(saliency, masks)[1])
    assert mass_in_mask(saliency, masks)[0] == pytest.approx(1.5 / 2.0)
    # top-4 pixels (mask share): (0,0), (0,1), (2,2), (3,3) -> 2 shared of 6 in the union
    assert topk_iou(saliency, masks)[0] == pytest.approx(2 / 6)
    assert topk_iou(saliency, masks, k=2 / 16)[0] == pytest.approx(2 / 4)
    assert topk_iou(saliency, masks, k=0.1)[0] == pytest.approx(2 / 4)  # 1.6 pixels round to the top 2
    assert topk_iou(saliency, masks, k=0.07)[0] == pytest.approx(1 / 4)  # 1.12 pixels round to the top 1
    assert LocalisationMetric(k=2 / 16)(saliency, masks)["iou"] == pytest.approx(2 / 4)
    missed = torch.zeros(1, 4, 4)
    missed[0, 3, 3] = 1
    assert pointing_game(missed, masks[:1])[0] == 0 and mass_in_mask(missed, masks[:1])[0] == 0
    summary = LocalisationMetric()(saliency, masks)
    assert summary == {"pointing": 1.0, "mass_in_mask": 0.75, "iou": pytest.approx(1 / 3), "n_with_mask": 1}


@pytest.mark.parametrize("k", [0, -0.5, 5, 1.5, True, float("nan"), "0.5"])
def test_localisation_metric_refuses_a_top_k_share_outside_0_to_1(k):
    """k=0 scored every map's IoU 0 and k=5 the whole image's; both were accepted."""
    with pytest.raises(EvaluationError, match=rf"^LocalisationMetric\.k={re.escape(repr(k))}: must be in \(0, 1\] "
                                              r"or None$"):
        LocalisationMetric(k=k)
    assert LocalisationMetric(k=1).k == 1 and LocalisationMetric().k is None


def test_localisation_metric_names_masks_of_another_shape():
    """Masks of another size than the maps failed as a RuntimeError from inside the scores."""
    saliency = torch.rand(2, 4, 4)
    for masks in (torch.ones(2, 8, 8, dtype=torch.bool), torch.ones(3, 4, 4, dtype=torch.bool)):
        with pytest.raises(EvaluationError, match=rf"^expected saliency \[K, H, W\] and masks of the same shape; got "
                                                  rf"\(2, 4, 4\) and \({masks.shape[0]}, {masks.shape[1]}, "
                                                  rf"{masks.shape[2]}\)$"):
            LocalisationMetric()(saliency, masks)


def test_pointing_game_breaks_ties_at_the_first_pixel_in_raster_order():
    saliency = torch.zeros(1, 4, 4)
    saliency[0, 0, 0] = saliency[0, 3, 3] = 1.0
    top_left, bottom_right = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    top_left[0, :2, :2] = bottom_right[0, 2:, 2:] = True
    assert pointing_game(saliency, top_left)[0] == 1 and pointing_game(saliency, bottom_right)[0] == 0


def test_negative_saliency_counts_as_none_in_the_mass():
    """A signed map (e.g. integrated gradients) puts no mass where it is negative, however large."""
    masks = torch.tensor([[[True, True], [False, False]]])
    saliency = torch.tensor([[[-3.0, 1.0], [1.0, 0.0]]])
    assert mass_in_mask(saliency, masks)[0] == pytest.approx(0.5)


def test_timed_saliency_batches_and_reports_median(monkeypatch):
    calls = []

    def fn(images, targets):
        calls.append(len(images))
        return images[:, 0]

    images = torch.rand(5, 1, 4, 4)
    # A clock that reads 0, 0.010 | 1, 1.004 | 2, 2.001: batches of 2, 2 and 1 images take 10, 4 and 1 ms.
    readings = iter([0.0, 0.010, 1.0, 1.004, 2.0, 2.001])
    monkeypatch.setattr("caex.evaluation.timing.time", SimpleNamespace(perf_counter=lambda: next(readings)))
    timed = timed_saliency(fn, images, torch.zeros(5, dtype=torch.long), batch_size=2, device=torch.device("cpu"))
    assert calls == [2, 2, 1]  # each batch once: the first one's maps are kept, its time is the warm-up's
    assert torch.equal(timed.maps, images[:, 0])
    assert timed.batch_ms_per_image == pytest.approx([2.0, 1.0])  # ms per image of the timed batches
    assert timed.ms_per_image == pytest.approx(1.5)  # their median


def test_timed_saliency_runs_a_lone_batch_again_for_the_clock(monkeypatch):
    calls = []

    def fn(images, targets):
        calls.append(len(images))
        return images[:, 0] * len(calls)  # maps of the first run differ from the second's

    images = torch.rand(3, 1, 4, 4)
    readings = iter([0.0, 0.030, 1.0, 1.006, 2.0, 2.003])  # 30 ms cold, 6 ms warm (and 3 ms below)
    monkeypatch.setattr("caex.evaluation.timing.time", SimpleNamespace(perf_counter=lambda: next(readings)))
    timed = timed_saliency(fn, images, torch.zeros(3, dtype=torch.long), batch_size=4, device=torch.device("cpu"))
    assert calls == [3, 3] and torch.equal(timed.maps, images[:, 0])  # the first run's maps
    assert timed.ms_per_image == pytest.approx(2.0) and timed.batch_ms_per_image == pytest.approx([2.0])
    untimed = timed_saliency(fn, images, torch.zeros(3, dtype=torch.long), batch_size=4,
                             device=torch.device("cpu"), warmup=False)
    assert len(calls) == 3 and len(untimed.batch_ms_per_image) == 1


def tiny_bundle(count: int = 8) -> DataBundle:
    """Half bright-square images (class 1), half dark (class 0); masks mark the square on class 1.

    The dark squares are dim, not black: black is what occlusion and integrated gradients put in, so their maps
    of a black square were constant and measured only the order in which tied pixels are deleted.
    """
    images = bright_images(count)
    images[::2, :, SQUARE[0], SQUARE[1]] = 0.1
    labels = torch.tensor([0, 1] * (count // 2))
    masks = square_mask(count) & (labels == 1)[:, None, None]
    split = ImageSet(images, labels, masks)
    return DataBundle(train=split, test=split, class_names=["dark", "bright"], spec="tiny-square")


def test_select_images_is_stratified_seeded_and_correct_only():
    data = tiny_bundle(12)
    classifier = square_classifier()
    data.test.labels[0] = 1  # now misclassified: must never be picked
    picked = select_images(classifier, data, 6, seed=1)
    assert torch.equal(picked, select_images(classifier, data, 6, seed=1))
    assert not torch.equal(picked, select_images(classifier, data, 6, seed=2))  # 6 of the 11 right: seeded
    assert 0 not in picked.tolist()
    assert data.test.labels[picked].tolist() == [0, 1, 0, 1, 0, 1]
    with pytest.raises(EvaluationError, match="n_images=0: must be at least 1"):
        select_images(classifier, data, 0)
    with pytest.warns(UserWarning, match=r"^n_images=1 is fewer than the 2 classes with correctly classified test "
                                         r"images: the evaluation covers only 1 of them \(the lowest class indices\); "
                                         r"ask for at least 2$"):
        assert data.test.labels[select_images(classifier, data, 1)].tolist() == [0]  # class 1 left out, now said
    data.test.labels[::2] = 1  # every dark image labelled bright, and one bright image labelled dark:
    data.test.labels[1] = 0    # 'dark' has a test image, and it is wrong
    with pytest.warns(UserWarning, match=r"^the classifier gets no test image of class\(es\) dark right, so the "
                                         r"evaluation leaves them out$"):
        assert data.test.labels[select_images(classifier, data, 6)].tolist() == [1] * 5


def test_rank_within_class_counts_earlier_items_of_the_same_class():
    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    assert rank_within_class(labels).tolist() == [0, 0, 1, 0, 1, 2]
    assert rank_within_class(torch.zeros(0, dtype=torch.long)).tolist() == []


def test_classifying_the_test_set_to_select_images_shows_a_bar(capsys):
    """On a big test set this step was a silent pause before the first method's bar."""
    data, classifier = tiny_bundle(12), square_classifier()
    classifier.batch_size = 5
    picked = select_images(classifier, data, 6, seed=1, verbose=True)
    bar = capsys.readouterr().err
    assert "classifying test images" in bar and "/12 [" in bar  # counts images, not the classifier's batches
    assert torch.equal(picked, select_images(classifier, data, 6, seed=1))  # the batches change nothing
    assert capsys.readouterr().err == ""  # silent unless verbose


class MaskExplainer:
    """A stand-in for caex.explain.Explainer that 'explains' by pointing at the square."""

    def __init__(self):
        self.targets = []

    def saliency(self, images, target=None, path="guided", steps=16):
        self.targets.append((target.tolist(), path, steps))
        return square_mask(len(images)).float()


@pytest.mark.filterwarnings("ignore:2 of 4 occlusion maps are constant")  # the square classifier ignores some
def test_runner_writes_every_output_and_uses_one_fill(tmp_path, monkeypatch):
    fills = []
    original_call = PerturbationMetric.__call__

    def recording_call(self, model, images, labels, saliency, fill, **options):
        fills.append(fill.clone())
        return original_call(self, model, images, labels, saliency, fill, **options)

    monkeypatch.setattr(PerturbationMetric, "__call__", recording_call)
    explainer = MaskExplainer()
    results = evaluate(explainer, square_classifier(), tiny_bundle(), methods=["cae-centroid", "occlusion", "random"],
                       n_images=4, out_dir=tmp_path, batch_size=2, metric=PerturbationMetric(patch=3, n_patches=3),
                       method_options={"cae-centroid": {"steps": 5}})
    for name in ("results.csv", "results.json", "results.md", "curves.png", "gallery.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert all(torch.equal(fill, fills[0]) for fill in fills) and len(fills) == 3
    # CAE moves each image towards the other class, with the requested path and length, batch by batch.
    assert explainer.targets[-2:] == [([1, 0], "centroid", 5), ([1, 0], "centroid", 5)]
    cae = results.row("cae-centroid")
    assert cae.pointing == 1.0 and cae.mass_in_mask == 1.0 and cae.iou == 1.0
    assert cae.aopc > results.row("random").aopc
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["settings"]["n_patches"] == 3 and saved["settings"]["patch"] == 3
    assert saved["settings"]["ranking"] == RANKING  # results without it were ranked the older way
    assert [row["method"] for row in saved["methods"]] == ["cae-centroid", "occlusion", "random"]
    # what made them: the models by content (the mask explainer holds no CAE), software, time
    record = saved["settings"]["provenance"]
    assert record["classifier"] == {"source": None, "digest": classifier_digest(square_classifier())}
    assert record["cae"] == {"source": None, "digest": None} and record["software"]["torch"] == torch.__version__
    table = (tmp_path / "results.md").read_text()
    assert "test images of `tiny-square` (stratified over classes, sampling seed 0)" in table  # its own split
    assert cae.aopc_se > 0
    assert f"| cae-centroid | {cae.aopc:.3f} ± {cae.aopc_se:.3f} | {cae.peak_degradation:.3f} |" in table
    assert "Localisation: averaged over the 2 of the 4 images whose mask marks a lesion" in table
    assert "N = 3 patches of 3x3 px" in table
    with open(tmp_path / "results.csv", newline="") as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["cae-centroid", "occlusion", "random"]
    for name, row in rows.items():
        result = results.row(name)
        assert float(row["aopc"]) == pytest.approx(result.aopc) and float(row["iou"]) == pytest.approx(result.iou)
        assert float(row["peak_degradation"]) == pytest.approx(result.peak_degradation)
        assert float(row["aopc_se"]) == pytest.approx(result.aopc_se)
        assert len(result.aopc_per_image) == 4 and sum(result.aopc_per_image) / 4 == pytest.approx(result.aopc)
        assert list(result.aopc_per_class) == tiny_bundle().class_names  # two images of each class
        assert sum(result.aopc_per_class.values()) / 2 == pytest.approx(result.aopc)
    assert saved["methods"][0]["aopc_per_class"] == pytest.approx(cae.aopc_per_class)
    names = list(cae.aopc_per_class)
    assert saved["settings"]["images_per_class"] == dict.fromkeys(names, 2)
    per_class = table.split("AOPC per class of the evaluated images:")[1]
    assert f"| method | {names[0]} (n=2) | {names[1]} (n=2) |" in per_class
    assert f"| random | {results.row('random').aopc_per_class[names[0]]:.3f} |" in table
    assert repr(results) == (f"EvaluationResults(4 images; AOPC: cae-centroid {cae.aopc:.3f}, occlusion "
                             f"{results.row('occlusion').aopc:.3f}, random {results.row('random').aopc:.3f})")
    assert saved["settings"]["cae"] == {"cae-centroid": "5-step centroid paths toward the other class"}
    assert "CAE maps (cae-centroid): 5-step centroid paths toward the other class." in table


def test_per_class_means_follow_the_class_order_and_leave_out_classes_without_items():
    from caex.evaluation.runner import per_class_means

    means = per_class_means([0.2, 0.4, 0.9, 0.6], ["b", "b", "a", "b"], ["a", "c", "b"])
    assert list(means) == ["a", "b"] and means["a"] == pytest.approx(0.9) and means["b"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match=r"^zip\(\) argument 2 is longer than argument 1$"):  # a value per item
        per_class_means([0.1], ["a", "b"], ["a", "b"])


@pytest.mark.filterwarnings("ignore:2 of 4 occlusion maps are constant")  # the square classifier ignores some
def test_runner_is_deterministic():
    kwargs = dict(methods=["random", "occlusion"], n_images=4, seed=5, batch_size=4)
    first = evaluate(None, square_classifier(), tiny_bundle(), **kwargs)
    second = evaluate(None, square_classifier(), tiny_bundle(), **kwargs)
    for name in ("random", "occlusion"):
        assert first.row(name).aopc == second.row(name).aopc
        assert torch.equal(first.maps[name], second.maps[name])
    # the fill depends on the seed and the images only, not on which other methods are compared
    alone = evaluate(None, square_classifier(), tiny_bundle(), **{**kwargs, "methods": ["occlusion"]})
    assert alone.row("occlusion").aopc == first.row("occlusion").aopc


@pytest.mark.filterwarnings("ignore:2 of 4 occlusion maps are constant")  # the square classifier ignores some
def test_the_seed_reaches_the_selection_the_fill_and_every_method(monkeypatch):
    """Each of the three could draw from seed 0 whatever evaluate was given, and every test still passed."""
    import caex.evaluation.runner as runner

    seeds = {"fill": [], "method": []}
    fill, attributor = runner.make_fill, runner.make_attributor
    monkeypatch.setattr(runner, "make_fill", lambda images, seed: seeds["fill"].append(seed) or fill(images, seed))
    monkeypatch.setattr(runner, "make_attributor", lambda name, classifier, *, seed, **options:
                        seeds["method"].append(seed) or attributor(name, classifier, seed=seed, **options))
    kwargs = dict(methods=["random", "occlusion"], n_images=4, batch_size=4)
    first = evaluate(None, square_classifier(), tiny_bundle(), seed=5, **kwargs)
    assert seeds == {"fill": [5], "method": [5, 5]}
    second = evaluate(None, square_classifier(), tiny_bundle(), seed=6, **kwargs)
    assert first.image_indices != second.image_indices  # 4 of the 8 right: a sample, not the first ones
    assert not torch.equal(first.maps["random"], second.maps["random"])


def test_results_json_names_each_evaluated_image_by_its_file_and_class(tmp_path, monkeypatch):
    """Only row numbers of the test split tied the per-image AOPCs to images: a script outside Python had to reload
    the data with the same split. A file is named by its absolute path, as explanations name theirs."""
    data = tiny_bundle()
    monkeypatch.chdir(tmp_path)
    for index in range(len(data.test)):
        (tmp_path / f"{index}.png").touch()
    test = ImageSet(data.test.images, data.test.labels, data.test.masks, sources=[f"{i}.png" for i in range(8)])
    results = evaluate(None, square_classifier(), DataBundle(test, test, data.class_names, spec="tiny-square"),
                       methods=["random"], n_images=4, batch_size=4, out_dir=tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert saved["image_sources"] == [str(tmp_path / f"{i}.png") for i in results.image_indices]
    assert saved["image_labels"] == [data.class_names[int(data.test.labels[i])] for i in results.image_indices]


def test_runner_rows_carry_each_localisation_score_under_its_own_name():
    results = evaluate(None, square_classifier(), tiny_bundle(), methods=["random"], n_images=4, batch_size=4)
    located = LocalisationMetric()(results.maps["random"], tiny_bundle().test.masks[results.image_indices])
    row = results.row("random")
    assert (row.pointing, row.mass_in_mask, row.iou) == (located["pointing"], located["mass_in_mask"], located["iou"])
    assert row.mass_in_mask != row.iou


def test_runner_rejects_unknown_methods_and_cae_without_a_run():
    with pytest.raises(EvaluationError, match="unknown method 'gradcamm'"):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["gradcamm"])
    with pytest.raises(EvaluationError, match="need a CAE run"):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["cae"], n_images=2)
    for batch_size in (0, -1):
        with pytest.raises(EvaluationError, match=f"batch_size={batch_size}: must be at least 1"):
            evaluate(None, square_classifier(), tiny_bundle(), methods=["random"], batch_size=batch_size)


def test_runner_takes_a_comma_separated_method_string():
    listed = evaluate(None, square_classifier(), tiny_bundle(), methods=["random", "gradcam"], n_images=4)
    joined = evaluate(None, square_classifier(), tiny_bundle(), methods="random, gradcam", n_images=4)
    assert [r.method for r in joined.methods] == ["random", "gradcam"]  # was "unknown method 'r'"
    assert [r.aopc for r in joined.methods] == [r.aopc for r in listed.methods]
    with pytest.raises(EvaluationError, match="methods: name at least one method"):
        evaluate(None, square_classifier(), tiny_bundle(), methods=" , ")
    without = evaluate(None, square_classifier(), tiny_bundle(), methods="gradcam", n_images=4)
    assert [r.method for r in without.methods] == ["gradcam", "random"]  # the floor is always measured (SPEC 6)
    twice = evaluate(None, square_classifier(), tiny_bundle(), methods="random,gradcam,Grad-CAM,random", n_images=4)
    assert [r.method for r in twice.methods] == ["random", "gradcam"]  # each once: rows shared one map key
    assert without.methods[1].aopc == listed.methods[0].aopc


def test_runner_refuses_a_mistyped_method_option_before_any_method_runs(monkeypatch):
    """A typo raised a TypeError from the constructor mid-run, after the methods before it had run."""
    import caex.evaluation.runner as runner

    monkeypatch.setattr(runner, "timed_saliency", lambda *a, **k: pytest.fail("a method ran"))
    with pytest.raises(EvaluationError, match=r"method_options\['lime'\]: lime takes no option 'samples' "
                                              r"\(it takes .*n_samples"):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["random", "lime"],
                 method_options={"lime": {"samples": 10}})
    with pytest.raises(EvaluationError, match=r"^method_options\['random'\]: random takes no option 'seed' "
                                              r"\(evaluate sets it for every method: pass it to evaluate itself; "
                                              r"it takes none\)$"):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["random"],
                 method_options={"random": {"seed": 1}})  # the message listed nothing: "(it takes )"
    with pytest.raises(EvaluationError, match="unknown method 'limee'"):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["lime"], method_options={"limee": {}})


def test_runner_names_what_to_pass_for_a_bare_module_or_a_lone_image_set():
    from caex.errors import ClassifierError, DataError

    with pytest.raises(ClassifierError, match=r"got the torch module SquareBrightness; wrap it as "
                                              r"caex.classifier.TorchClassifier\(module, class_names"):
        evaluate(None, SquareBrightness(), tiny_bundle(), methods=["random"])
    with pytest.raises(DataError, match=r"data: expected a DataBundle, got ImageSet; load one with "
                                        r"caex.load_dataset\(spec\)"):
        evaluate(None, square_classifier(), tiny_bundle().test, methods=["random"])


def test_perturbation_curve_refuses_logits():
    """A bare module's logits gave AOPC near 2 (1.928 in the audit) with no error."""
    images, masks = bright_images(4), square_mask(4)
    labels, fill = torch.ones(4, dtype=torch.long), torch.zeros(4, 1, SIZE, SIZE)
    with pytest.raises(EvaluationError, match=r"the model's outputs are not probabilities \(rows sum to .*"
                                              r"caex.classifier.TorchClassifier"):
        perturbation_curve(SquareBrightness(), images, labels, masks.float(), fill, n_patches=2)
    curve = perturbation_curve(square_classifier(), images, labels, masks.float(), fill, n_patches=2)
    assert curve.shape == (4, 3) and torch.all(curve[:, 0] > 0.99)


class _Standardising(nn.Module):
    """Logits from each image standardised by its own spread, as medical pipelines do: NaN on a flat image."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        flat = images.flatten(1)
        z = (flat - flat.mean(dim=1, keepdim=True)) / flat.std(dim=1, keepdim=True)
        return torch.stack([-z[:, 0], z[:, 0]], dim=1)


def test_tables_name_the_classifier_by_where_it_was_loaded_from(tmp_path):
    """The demo's tables said `TorchClassifier`: only the CLI passed a name."""
    classifier = square_classifier()
    classifier.source = "runs/clf"
    evaluate(None, classifier, tiny_bundle(), methods=["random"], n_images=2, out_dir=tmp_path)
    assert "classifier `runs/clf`." in (tmp_path / "results.md").read_text()


def test_images_the_classifier_gives_nan_for_are_left_out_and_nan_curves_refused():
    """The NaN row's argmax (0) counted as right for class 0, then one NaN made every method's AOPC NaN, shown
    as the table's "not applicable" dash, with no word."""
    data = tiny_bundle(8)
    data.test.images[0] = 0.5  # a blank scan: zero spread
    data.test.labels[:] = (data.test.images[:, 0, 0, 0] > data.test.images.flatten(1).mean(dim=1)).long()
    classifier = TorchClassifier(_Standardising(), ["dark", "bright"], SIZE, 1)
    with pytest.warns(UserWarning, match=r"^the classifier's outputs are not finite \(NaN or inf\) for 1 test "
                                         r"image\(s\) of 'tiny-square' \(the first: #0\), .* the "
                                         r"evaluation leaves them out$"):
        picked = select_images(classifier, data, 8)
    assert 0 not in picked.tolist() and len(picked) == 7
    blank = torch.full((2, 1, SIZE, SIZE), 0.5)
    with pytest.raises(EvaluationError, match=r"^the model's outputs are not finite \(NaN or inf\) for some "
                                              r"images, as a model"):
        perturbation_curve(classifier, blank, torch.zeros(2, dtype=torch.long), torch.rand(2, SIZE, SIZE), blank,
                           n_patches=1)


def test_maps_holding_nan_are_refused_and_constant_maps_point_nowhere():
    """NaN ranked above every pixel, a NaN mass was averaged in, and a flat map's first pixel 'hit' any mask
    covering the corner."""
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    flat = torch.zeros(2, 4, 4)
    assert pointing_game(flat, masks).tolist() == [0.0, 0.0]
    nan = flat.clone()
    nan[1, 3, 3] = math.nan
    with pytest.raises(EvaluationError, match=r"^1 of 2 saliency maps hold NaN or inf values \(the first: map 1\)"):
        LocalisationMetric()(nan, masks)
    images, maps = bright_images(2), torch.rand(2, SIZE, SIZE)
    maps[0, 5, 5] = math.inf
    with pytest.raises(EvaluationError, match=r"^1 of 2 saliency maps hold NaN or inf values \(the first: map 0\)"):
        PerturbationMetric(patch=2, n_patches=1)(square_classifier(), images, torch.ones(2, dtype=torch.long),
                                                 maps, images)


class _NanGradients(nn.Module):
    """The square classifier's logits through a square root at zero: finite outputs, NaN gradients."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = SquareBrightness()(images)
        return logits + torch.sqrt(images.flatten(1)[:, :1] * 0)


class _ConstantDark(nn.Module):
    """The square classifier with the dark class's logit held at 0: no pixel moves it."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = SquareBrightness()(images)
        return logits - logits[:, :1]


def test_constant_maps_are_warned_about_and_maps_of_nan_attributions_skip_their_method():
    """A dark class with a constant logit has flat gradient maps, which were scored as if they ranked pixels; a NaN
    attribution became an all-zero map."""
    from caex.explain.attribution import AttributionError, IntegratedGradientsAttributor

    constant_dark = TorchClassifier(_ConstantDark(), ["dark", "bright"], SIZE, 1)
    with pytest.warns(UserWarning, match=r"^1 of 2 integrated_gradients maps are constant \(.*\): they rank no "
                                         r"pixel, so their AOPC measures the order in which tied pixels are deleted"):
        evaluate(None, constant_dark, tiny_bundle(), methods=["ig"], n_images=2)
    data = tiny_bundle(8)
    data.test.images[0] = 0.5
    classifier = TorchClassifier(_Standardising(), ["dark", "bright"], SIZE, 1)
    with pytest.raises(AttributionError, match=r"^integrated_gradients: attributions hold NaN or inf values for 1 "
                                               r"of 2 images"):
        IntegratedGradientsAttributor(classifier, n_steps=4).saliency(data.test.images[:2], 0)
    nan_gradients = TorchClassifier(_NanGradients(), ["dark", "bright"], SIZE, 1)  # finite outputs, NaN gradients
    results = evaluate(None, nan_gradients, tiny_bundle(), methods=["ig"], n_images=2)
    assert results.row("integrated_gradients").status == "skipped"
    assert "attributions hold NaN or inf" in results.row("integrated_gradients").reason


def test_runner_with_a_real_cae_explainer_on_every_path(tmp_path):
    from caex.explain import Explainer
    from caex.model import CAE, CAEConfig

    data = tiny_bundle()
    torch.manual_seed(0)
    cae = CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=2), class_names=data.class_names)
    cae.set_train_codes(cae.class_codes(data.train.images), data.train.labels)
    explainer = Explainer(cae, square_classifier(), knn=7, candidates=0)  # 8 codes: one connected graph
    methods = ["cae", "cae-guided", "cae-centroid", "cae-nearest"]
    results = evaluate(explainer, square_classifier(), data, methods=methods, n_images=4, batch_size=4,
                       metric=PerturbationMetric(patch=3, n_patches=2))
    for name in methods:
        row = results.row(name)
        assert row.status == "ok" and 0 <= row.pointing <= 1 and math.isfinite(row.aopc)
        assert results.maps[name].shape == (4, SIZE, SIZE)


def test_a_cae_given_to_evaluate_gets_an_explainer_with_the_evaluations_seed(monkeypatch):
    """The seed drives the explainer's subsample of stored codes too; it stayed 0 whatever evaluate was given."""
    import caex.explain.explainer as explainer_module
    from caex.model import CAE, CAEConfig

    data = tiny_bundle()
    cae = CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=2), class_names=data.class_names)
    cae.set_train_codes(cae.class_codes(data.train.images), data.train.labels)
    seeds, build_graph = [], explainer_module.Explainer._code_graph
    monkeypatch.setattr(explainer_module.Explainer, "_code_graph", lambda self: seeds.append(self.seed) or
                        build_graph(self))
    evaluate(cae, square_classifier(), data, methods=["cae-guided"], n_images=2, seed=7,
             metric=PerturbationMetric(patch=3, n_patches=2))
    assert set(seeds) == {7}


def test_cae_method_steps_option_reaches_the_explainer():
    from caex.explain import Explainer, ExplainerAttributor
    from caex.explain.saliency import contrast_saliency, gaussian_smooth
    from caex.model import CAE, CAEConfig

    data = tiny_bundle()
    torch.manual_seed(0)
    cae = CAE(CAEConfig.preset("tiny", image_size=SIZE, channels=1, num_classes=2), class_names=data.class_names)
    cae.set_train_codes(cae.class_codes(data.train.images), data.train.labels)
    explainer = Explainer(cae, square_classifier())
    images, labels = data.test.images[:4], data.test.labels[:4]
    maps = ExplainerAttributor(square_classifier(), explainer, path="centroid", steps=2).saliency(images, labels)
    explanation = explainer.explain(images, target=1 - labels, path="centroid", steps=2)
    assert explanation.frames.shape[1] == 2
    # two frames: the weighted map is the end frame against the reconstruction
    contrast = contrast_saliency(explanation.frames, explanation.target_probs, explanation.end_step)
    assert torch.allclose(maps, gaussian_smooth(contrast, explainer.smoothing), atol=1e-6)


def test_figures_draw_a_data_spec_with_dollar_signs_literally(tmp_path):
    """Matplotlib parsed ``$...$`` (here in a folder name) as math text and raised ValueError on invalid TeX."""
    from caex.evaluation.runner import EvaluationResults, MethodResult, write_results

    results = EvaluationResults(methods=[MethodResult("CAE", aopc=0.1, curve=[0.1, 0.2])],
                                settings={"patch": 7, "n_images": 2, "data": r"folder:$\nosuch$", "seed": 0,
                                          "classifier": "c", "n_patches": 2, "covered_share_max": 0.5,
                                          "image_size": 8, "fill": "uniform", "batch_size": 2, "device": "cpu",
                                          "has_masks": False},
                                image_indices=[0, 1], maps={"CAE": torch.rand(2, 8, 8)})
    write_results(results, torch.rand(2, 1, 8, 8), None, tmp_path)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "gallery.png").read_bytes()[:4] == b"\x89PNG"


def test_write_errors_name_the_file_asked_for_not_a_temporary_or_staging_copy(tmp_path, monkeypatch):
    """A refused rename said '.img0.json.xpe998i0.tmp: Operation not permitted', and a full disk during a set's
    write named the staging folder's copy, gone by the time the user read it."""
    import errno
    import os

    from caex.utils.io import atomic_write_bytes, replaced_together

    def refused(source, target):
        raise OSError(errno.EPERM, "Operation not permitted", source, target)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", refused)
        with pytest.raises(OSError) as caught:
            atomic_write_bytes(tmp_path / "img0.json", b"{}")
    assert (caught.value.filename, caught.value.filename2) == (str(tmp_path / "img0.json"), None)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError) as caught, replaced_together(tmp_path) as staging:
        raise OSError(errno.ENOSPC, "No space left on device", str(staging / "map_pca.png"))
    assert caught.value.filename == str(tmp_path / "map_pca.png") and list(tmp_path.iterdir()) == []
    (tmp_path / "info.json").write_text("old")
    moves, replace = [], os.replace

    def recorded(source, target):
        moves.append((os.path.basename(target), (tmp_path / "info.json").exists()))
        replace(source, target)

    monkeypatch.setattr(os, "replace", recorded)
    with replaced_together(tmp_path, marker="info.json") as staging:
        (staging / "info.json").write_text("new")  # sorts first; the marker moves in last, the old one gone first
        (staging / "weights").write_text("new")
    assert moves == [("weights", False), ("info.json", False)]
    assert (tmp_path / "info.json").read_text() == "new" and (tmp_path / "weights").read_text() == "new"


def test_a_failed_rewrite_keeps_the_previous_output_set_whole(tmp_path, monkeypatch):
    """An evaluation interrupted while writing left new results.* beside the previous run's gallery and curves."""
    import caex.evaluation.runner as runner
    from caex.utils.io import LOCK_FILE, replaced_together

    def written() -> dict[str, bytes]:  # all but the lock the evaluation held
        return {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.name != LOCK_FILE}

    first = evaluate(None, square_classifier(), tiny_bundle(), methods=["random"], n_images=4, out_dir=tmp_path)
    before = written()
    assert sorted(before) == ["curves.png", "gallery.png", "results.csv", "results.json", "results.md"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_gallery_figure", interrupted)  # the last of the five files
    with pytest.raises(KeyboardInterrupt):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["random", "gradcam"], n_images=4,
                 out_dir=tmp_path)
    assert written() == before  # no staging folder either
    with replaced_together(tmp_path) as staging:
        (staging / "results.md").write_text("new")
        (staging / "extra" / "nested.txt").parent.mkdir()
        (staging / "extra" / "nested.txt").write_text("deep")
    assert (tmp_path / "results.md").read_text() == "new" and (tmp_path / "extra" / "nested.txt").is_file()
    assert (tmp_path / "gallery.png").read_bytes() == before["gallery.png"]  # what the set did not hold stays
    assert not list(tmp_path.glob(".caex-partial-*")) and first.methods[0].method == "random"


def test_figures_name_methods_as_the_tables_do():
    """The curves and the gallery said `gradcam` and `integrated_gradients` where the report says Grad-CAM."""
    from caex.evaluation.runner import _curves_figure, _gallery_figure, method_name

    results = evaluate(None, square_classifier(), tiny_bundle(), methods=["random", "ig"], n_images=2)
    legend = _curves_figure(results).axes[0].get_legend_handles_labels()[1]
    assert [label.split(" (")[0] for label in legend] == ["Random", "Integrated gradients"]
    titles = [axes.get_title() for axes in _gallery_figure(results, bright_images(2), None).axes[:3]]
    assert titles == ["input", "Random", "Integrated gradients"]
    assert method_name("cae-nearest") == "CAE-nearest" and method_name("unknown") == "unknown"
    assert method_name("smooth-grad") == "smooth-grad"  # was "smooth-grad-grad": only CAE's names have variants


def test_an_interrupt_keeps_the_finished_methods_results(tmp_path, monkeypatch):
    """Six finished methods were lost to a Ctrl-C in the seventh: their rows are now written, marked partial."""
    import caex.evaluation.runner as runner
    from caex.errors import Interrupted, Terminated

    real = runner.timed_saliency

    def second_method_interrupted(fn, *args, **kwargs):
        if fn.__self__.name == "occlusion":
            raise Terminated
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(runner, "timed_saliency", second_method_interrupted)
    with pytest.raises(Interrupted, match=rf"^stopped by SIGTERM after 1 of 3 methods; their results are written "
                                          rf"to {tmp_path}$") as caught:
        evaluate(None, square_classifier(), tiny_bundle(), methods=["random", "occlusion", "fullgrad"], n_images=4,
                 out_dir=tmp_path)
    assert caught.value.exit_code == 143
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [row["method"] for row in saved["methods"]] == ["random"] and saved["settings"]["interrupted"] is True
    assert "Interrupted: only the methods in the table ran." in (tmp_path / "results.md").read_text()
    assert (tmp_path / "gallery.png").is_file()
    with pytest.raises(KeyboardInterrupt):  # nothing finished, or nowhere to write: the interrupt as it came
        evaluate(None, square_classifier(), tiny_bundle(), methods=["occlusion"], n_images=4, out_dir=tmp_path / "x")
    assert not (tmp_path / "x" / "results.json").exists()
    # An interrupted rerun over a complete set replaced it with the partial one: it now goes beside it
    complete = tmp_path / "complete"
    evaluate(None, square_classifier(), tiny_bundle(), methods=["random", "gradcam"], n_images=4, out_dir=complete)
    before = (complete / "results.json").read_bytes()
    with pytest.raises(Interrupted, match=rf"their results are written to {complete / 'interrupted'} \(the "
                                          rf"complete earlier results in {complete} are kept\)$"):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["random", "occlusion"], n_images=4,
                 out_dir=complete)
    assert (complete / "results.json").read_bytes() == before
    assert json.loads((complete / "interrupted" / "results.json").read_text())["settings"]["interrupted"] is True
    evaluate(None, square_classifier(), tiny_bundle(), methods=["random"], n_images=4, out_dir=complete)
    assert not (complete / "interrupted").exists()  # a complete set supersedes the partial one
    with pytest.raises(Interrupted, match=rf"written to {tmp_path}$"):  # a partial set is replaced as before
        evaluate(None, square_classifier(), tiny_bundle(), methods=["random", "occlusion"], n_images=4,
                 out_dir=tmp_path)


def test_a_second_evaluation_into_a_busy_folder_stops_before_working(tmp_path, monkeypatch):
    """Two evaluations into one folder: the later one to finish used to overwrite the other's results."""
    import caex.evaluation.runner as runner
    from caex.errors import CaexError
    from caex.utils.io import folder_lock

    for step in ("check_compatible", "select_images", "timed_saliency"):  # none may run before the lock
        monkeypatch.setattr(runner, step, None)
    with folder_lock(tmp_path, "caex evaluate"), \
            pytest.raises(CaexError, match=rf"^{tmp_path}: in use by caex evaluate \(pid \d+\); wait for it"):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["random"], n_images=2, out_dir=tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_a_lock_leaves_no_file_behind_nor_a_folder_it_made_for_nothing(tmp_path):
    """Every output folder kept a .caex.lock naming a long-gone 'caex train (pid N)', and a job that failed
    at once left the empty folder its lock had made."""
    from caex.errors import CaexError
    from caex.utils.io import LOCK_FILE, folder_lock

    with folder_lock(tmp_path / "new", "caex evaluate"):
        assert (tmp_path / "new" / LOCK_FILE).read_text().startswith("caex evaluate (pid ")
    assert not (tmp_path / "new").exists()
    with folder_lock(tmp_path / "used", "caex evaluate"):
        (tmp_path / "used" / "results.json").write_text("{}")
    assert [path.name for path in (tmp_path / "used").iterdir()] == ["results.json"]
    with folder_lock(tmp_path, "caex evaluate"), pytest.raises(CaexError, match="in use by caex evaluate"), \
            folder_lock(tmp_path, "caex manifold"):
        pass
    assert (tmp_path / "used").is_dir() and not (tmp_path / LOCK_FILE).exists()  # a folder it did not make stays


def test_a_lock_removes_the_temporary_files_a_killed_job_left_and_nothing_else(tmp_path):
    """A kill during an atomic write or a staged set left hidden .tmp files (a checkpoint's: hundreds of MB) and
    .caex-partial- folders that no later job removed or mentioned."""
    import tempfile

    from caex.utils.io import folder_lock

    os.close(tempfile.mkstemp(dir=tmp_path, prefix=".checkpoint.safetensors.", suffix=".tmp")[0])
    left_folder = Path(tempfile.mkdtemp(prefix=".caex-partial-", dir=tmp_path))
    (left_folder / "summary.json").write_text("{}")
    kept = [".notes.tmp", ".hidden", "results.json", "a.b.12345678.tmp", ".n.ABCDEFGH.tmp"]  # not caex's names
    for name in kept:
        (tmp_path / name).write_text("mine")
    long_ago = time.time() - 3600
    for path in tmp_path.iterdir():
        os.utime(path, (long_ago, long_ago))
    os.close(tempfile.mkstemp(dir=tmp_path, prefix=".report.html.", suffix=".tmp")[0])  # a lockless writer's, now
    with folder_lock(tmp_path, "caex train"):
        pass
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith(".report")) == sorted(kept)
    assert len(list(tmp_path.glob(".report.html.*.tmp"))) == 1


def test_a_lock_retries_when_another_job_removed_the_folder_it_had_made(tmp_path, monkeypatch):
    """Between our mkdir and open, another job's lock may remove the empty folder it made: a raw
    FileNotFoundError came out instead of the lock."""
    import builtins

    import caex.utils.io as io_module
    from caex.utils.io import LOCK_FILE, folder_lock

    real_open, calls = builtins.open, []

    def vanishing_once(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            (tmp_path / "out").rmdir()  # the other job's clean-up, just before our open
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(io_module, "open", vanishing_once, raising=False)
    with folder_lock(tmp_path / "out", "caex evaluate"):
        assert (tmp_path / "out" / LOCK_FILE).is_file()
    assert len(calls) == 2 and not (tmp_path / "out").exists()


def test_the_gallery_shows_one_image_per_class_up_to_ten_and_names_each_row():
    """Ten classes: the gallery stopped at 6 rows (digits 6-9 never shown) and no row said its class."""
    from caex.evaluation.runner import EvaluationResults, _gallery_figure

    images = bright_images(12)
    results = EvaluationResults([], {}, list(range(12)), {"random": torch.rand(12, SIZE, SIZE)})
    for classes, rows in ((2, 6), (8, 8), (12, 10)):
        names = [f"c{k % classes}" for k in range(12)]
        figure = _gallery_figure(results, images, None, names)
        labels = [axes.get_ylabel() for axes in figure.axes[:-1:2]]  # the last axes: the saliency colour key
        assert labels == names[:rows]
    assert len(_gallery_figure(results, images, None).axes) == 2 * 6 + 1  # and the colour key


def test_a_cae_of_another_size_is_refused_before_the_test_images_are_classified(monkeypatch):
    """The refusal came only after 'classifying test images', minutes on a large test split."""
    import caex.evaluation.runner as runner
    from caex.errors import CaexError
    from caex.model import CAE, CAEConfig

    monkeypatch.setattr(runner, "select_images", None)  # calling it would be a TypeError, not the refusal
    cae = CAE(CAEConfig.preset("tiny", image_size=2 * SIZE, channels=1, num_classes=2), ["dark", "bright"])
    with pytest.raises(CaexError, match=rf"{2 * SIZE}px"):
        evaluate(cae, square_classifier(), tiny_bundle(), methods=["cae"], n_images=4)


def test_row_checks_find_non_finite_and_constant_rows():
    from caex.utils.rows import constant_rows, nonfinite_rows

    batch = torch.tensor([[[0.0, 1.0]], [[2.0, 2.0]], [[math.nan, 0.0]], [[math.inf, math.inf]]])
    assert nonfinite_rows(batch).tolist() == [False, False, True, True]
    assert constant_rows(batch).tolist() == [False, True, False, True]


def _flat_block() -> torch.Tensor:
    """A 7x7 plateau of saliency 1 at rows and columns 4..10 of a 14x14 map: a LIME superpixel, say."""
    saliency = torch.zeros(1, 14, 14)
    saliency[0, 4:11, 4:11] = 1.0
    return saliency


def test_a_flat_block_is_entered_at_its_core():
    """Raster order put the first patch on the block's corner (4, 4), covering 16 of its 49 pixels."""
    centres, cover_step = greedy_patches(_flat_block(), 1)
    assert centres.tolist() == [[7 * 14 + 7]]
    assert int((cover_step[0, 4:11, 4:11] == 1).sum()) == 49 and int((cover_step == 1).sum()) == 49


def test_equal_pixels_rank_by_their_square_then_in_raster_order():
    saliency = torch.zeros(1, 9, 9)
    saliency[0, 4, 6] = 2.0  # the neighbour that makes (4, 4)'s square heavier than (0, 0)'s
    rank = pixel_rank(saliency, patch=3).view(9, 9)
    assert rank[4, 6] == 0
    # the zeros whose 3x3 square holds the 2, in raster order, come next: (3, 5), (3, 6), (3, 7), (4, 5), ...
    assert [divmod(int(i), 9) for i in rank.flatten().argsort()[1:5]] == [(3, 5), (3, 6), (3, 7), (4, 5)]
    # the zeros far from it (squares of zeros, padding included) keep raster order among themselves
    assert rank[0, 0] < rank[0, 1] < rank[1, 0] < rank[8, 8]


def test_the_pointing_game_points_at_a_flat_blocks_core():
    """The block's top pixel was its corner (4, 4), outside a mask over its lower right: pointing 0."""
    masks = torch.zeros(1, 14, 14, dtype=torch.bool)
    masks[0, 6:11, 6:11] = True
    assert pointing_game(_flat_block(), masks).tolist() == [1.0]


def test_a_constant_map_selects_nothing_in_the_top_k_iou():
    """It scored 1.0 against a mask over its first rows (raster order), while pointing scored it 0."""
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, :2] = True
    maps = torch.stack([torch.zeros(8, 8), torch.full((8, 8), 0.5)])
    assert topk_iou(maps, masks).tolist() == [0.0, 0.0]
    assert LocalisationMetric()(maps, masks) == {"pointing": 0.0, "mass_in_mask": (0.0 + 16 / 64) / 2,
                                                 "iou": 0.0, "n_with_mask": 2}


def test_the_pure_localisation_functions_check_what_the_metric_checks():
    masks = torch.zeros(1, 9, 9, dtype=torch.bool)
    masks[0, :3, :3] = True
    saliency = torch.zeros(1, 9, 9)
    saliency[0, 0, 0] = 1.0
    broken = saliency.clone()
    broken[0, 8, 8] = torch.nan
    for score in (pointing_game, mass_in_mask, topk_iou, lambda s, m: greedy_patches(s, 2)):
        with pytest.raises(EvaluationError, match=r"^1 of 1 saliency maps hold NaN or inf values"):
            score(broken, masks)
    with pytest.raises(EvaluationError, match=r"^topk_iou: k=10: must be in \(0, 1\] or None$"):
        topk_iou(saliency, masks, k=10)
    assert topk_iou(saliency, masks.float(), k=9 / 81).tolist() == topk_iou(saliency, masks, k=9 / 81).tolist()
    assert pointing_game(saliency, masks.float()).tolist() == [1.0]


def _square_brightness(images: torch.Tensor) -> torch.Tensor:
    brightness = images.mean(dim=(1, 2, 3))
    return torch.stack([1 - brightness, brightness], dim=1)


def test_covered_images_the_model_cannot_score_are_refused():
    """Only the clean images' outputs were checked: a NaN on a covered image gave AOPC nan without a word."""
    def nan_once_covered(images: torch.Tensor) -> torch.Tensor:
        probs = _square_brightness(images)
        return torch.where((images < 0.5).flatten(1).any(dim=1, keepdim=True), torch.nan, probs)

    images = torch.ones(2, 1, 8, 8)
    with pytest.raises(EvaluationError, match=r"^the model's outputs are not finite \(NaN or inf\) for some "
                                              r"covered images, "):
        perturbation_curve(nan_once_covered, images, torch.tensor([1, 1]), torch.rand(2, 8, 8),
                           torch.zeros_like(images), n_patches=2)


def test_the_curve_of_a_differentiable_callable_keeps_no_graph():
    """A plain callable with parameters built an autograd graph over all K x N covered images."""
    weight = torch.ones(1, requires_grad=True)
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    probs = perturbation_curve(lambda x: _square_brightness(x * weight), images, torch.tensor([0, 1, 1]),
                               torch.rand(3, 8, 8), torch.zeros_like(images), n_patches=2, patch=3)
    assert probs.shape == (3, 3) and not probs.requires_grad


def test_the_stated_covered_share_is_at_most_the_whole_image():
    """n_patches=100 on 32x32 said "at most 478.5% of the image"."""
    assert PerturbationMetric(n_patches=100).describe(32, 32)["covered_share_max"] == 1.0
    assert PerturbationMetric(n_patches=4).describe(32, 32)["covered_share_max"] == round(4 * 49 / 1024, 4)


def test_a_class_name_with_a_pipe_stays_in_its_markdown_column():
    """results.md's per-class header split "benign|atypical" into two cells, and copied HTML in names verbatim."""
    result = MethodResult("random", aopc_per_class={"benign|atypical": 0.25, "<b>bad</b>": 0.5})
    lines = _per_class_table([result], {"benign|atypical": 3, "<b>bad</b>": 2})
    assert lines[3] == r"| method | benign\|atypical (n=3) | &lt;b&gt;bad&lt;/b&gt; (n=2) |"
    assert lines[3].replace(r"\|", "").count("|") == lines[4].count("|") == 4
    assert lines[5] == "| random | 0.250 | 0.500 |"


def test_the_localisation_ranks_ties_with_the_deletion_patchs_square():
    """Pointing and top-k ranked equal pixels by 7x7 squares whatever --patch the deletion used: on a flat 7x7
    block, patch 3 entered it at (3, 3) while the pointing game chose (5, 5)."""
    saliency = torch.zeros(1, 11, 11)
    saliency[0, 2:9, 2:9] = 1.0
    corner = torch.zeros(1, 11, 11, dtype=torch.bool)
    corner[0, 3, 3] = True
    assert greedy_patches(saliency, 1, patch=3)[0].tolist() == [[3 * 11 + 3]]
    assert pointing_game(saliency, corner, patch=3).tolist() == [1.0]
    assert pointing_game(saliency, corner).tolist() == [0.0]
    assert LocalisationMetric(patch=3)(saliency, corner) == {"pointing": 1.0, "mass_in_mask": pytest.approx(1 / 49),
                                                             "iou": 1.0, "n_with_mask": 1}
    assert LocalisationMetric()(saliency, corner)["iou"] == 0.0
    with pytest.raises(EvaluationError, match=r"^LocalisationMetric\.patch=0: must be a whole number, at least 1$"):
        LocalisationMetric(patch=0)


def test_evaluate_ranks_localisation_ties_with_its_metrics_patch(monkeypatch):
    """A localisation metric with no patch of its own takes the deletion's (a script that set only ``k`` stopped
    at a patch mismatch after the upgrade); one given another patch is refused."""
    used = []
    score = LocalisationMetric.__call__
    monkeypatch.setattr(LocalisationMetric, "__call__",
                        lambda self, saliency, masks: used.append((self.patch, self.k)) or score(self, saliency, masks))
    for localisation in (None, LocalisationMetric(k=0.1)):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["random"], n_images=4, batch_size=4,
                 metric=PerturbationMetric(patch=3), localisation=localisation)
    assert used == [(3, None), (3, 0.1)]
    with pytest.raises(EvaluationError, match=r"^localisation\.patch=7 differs from metric\.patch=3; give "
                                              r"LocalisationMetric\(patch=3, \.\.\.\)$"):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["random"], n_images=4,
                 metric=PerturbationMetric(patch=3), localisation=LocalisationMetric(k=0.1, patch=7))


def test_results_md_prints_no_negative_zero_and_escapes_the_cae_description():
    """A per-class AOPC of -0.0001 read "-0.000"; a target class named "<b>x" turned the rest of the note bold."""
    from caex.evaluation.runner import EvaluationResults, _format

    assert [_format(value) for value in (-0.0001, -0.0006, 0.0, math.nan)] == ["0.000", "-0.001", "0.000", "—"]
    settings = {"n_images": 2, "data": "d", "seed": 0, "classifier": "c", "n_patches": 1, "patch": 7,
                "covered_share_max": 0.1, "image_size": 16, "fill": "f", "batch_size": 2, "device": "cpu",
                "has_masks": False, "cae": {"cae": "2-step guided paths toward class <b>x"}}
    text = EvaluationResults([MethodResult("cae", aopc=0.1)], settings, [0, 1], {}).to_markdown()
    assert "CAE maps (cae): 2-step guided paths toward class &lt;b&gt;x." in text


def _results_with_notes(interrupted: bool, has_masks: bool):
    from caex.evaluation.runner import EvaluationResults

    per_class = {"a": 0.1, "b": 0.2}
    return EvaluationResults(
        methods=[MethodResult(name, aopc=0.1, curve=[0.1], aopc_per_class=per_class) for name in ("cae", "random")],
        settings={"patch": 7, "n_images": 4, "data": "synthetic", "seed": 0, "classifier": "c", "n_patches": 2,
                  "covered_share_max": 0.5, "image_size": 8, "fill": "uniform", "batch_size": 2, "device": "cpu",
                  "has_masks": has_masks, "interrupted": interrupted, "images_per_class": {"a": 2, "b": 2}},
        image_indices=[0, 1, 2, 3], maps={})


@pytest.mark.parametrize(("interrupted", "has_masks", "after_table"), [
    (True, False, ["", "Interrupted: only the methods in the table ran.",
                   "Localisation: the data has no ground-truth masks (—)."]),
    (False, True, []),  # nothing follows: no blank line either
])
def test_the_notes_after_the_per_class_table_are_no_rows_of_it(interrupted: bool, has_masks: bool,
                                                               after_table: list[str]) -> None:
    """They followed the table's last row directly, so Markdown rendered them as more rows."""
    lines = _results_with_notes(interrupted, has_masks).to_markdown().splitlines()
    assert lines[-len(after_table) - 1] == "| random | 0.100 | 0.200 |"
    assert lines[len(lines) - len(after_table):] == after_table


def test_an_option_a_method_cannot_run_with_stops_the_evaluation_before_any_map(monkeypatch):
    """LIME's n_samples=0 failed in Captum after the methods before it had run, and nothing was written."""
    import caex.evaluation.runner as runner
    from caex.explain import OptionValueError

    timed = []
    monkeypatch.setattr(runner, "timed_saliency", lambda *args, **kwargs: timed.append(args) or None)
    with pytest.raises(OptionValueError, match=r"^lime: n_samples=0: must be a whole number, at least 1$"):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["random", "occlusion", "lime"], n_images=4,
                 method_options={"lime": {"n_samples": 0}})
    assert timed == []


def test_a_cae_methods_path_is_its_name_not_an_option():
    """--method-option cae-guided.path=centroid ended in "TypeError: got multiple values for keyword argument"."""
    from caex.evaluation.runner import parse_method_options

    with pytest.raises(EvaluationError, match=r"^--method-option 'cae-guided\.path=centroid': cae-guided takes no "
                                              r"option 'path' here \(it takes steps, counter_by\)$"):
        parse_method_options(["cae-guided.path=centroid"])
    with pytest.raises(EvaluationError, match=r"takes no option 'path' \(the method's name sets it: cae-guided, "
                                              r"cae-centroid, cae-nearest; it takes"):
        evaluate(MaskExplainer(), square_classifier(), tiny_bundle(), methods=["cae-guided"], n_images=4,
                 method_options={"cae-guided": {"path": "centroid"}})


@pytest.mark.parametrize(("options", "message"), [
    ({"counter_by": "bogus"}, r"^cae-guided: counter_by='bogus': choose from code, probability"),
    ({"counter_class": 7}, r"^cae-guided: counter_class=7: not a class index of this classifier \(0\.\.1\)$"),
])
def test_a_cae_option_it_cannot_run_with_stops_the_evaluation(options, message):
    """A bad counter_by skipped CAE after the whole evaluation had run ("skipped: counter_by='bogus' ...")."""
    from caex.explain import OptionValueError

    with pytest.raises(OptionValueError, match=message):
        evaluate(MaskExplainer(), square_classifier(), tiny_bundle(), methods=["cae-guided", "random"], n_images=4,
                 method_options={"cae-guided": options})


@pytest.mark.parametrize("steps", [1, 5000])
def test_a_cae_path_length_out_of_range_stops_the_evaluation_before_any_map(steps):
    """steps=5000 passed the constructor and was refused by the Explainer after the other methods had run."""
    from caex.explain import OptionValueError

    with pytest.raises(OptionValueError, match=rf"^cae-guided: steps={steps}: a path needs 2 to 1000 steps"):
        evaluate(MaskExplainer(), square_classifier(), tiny_bundle(), methods=["random", "cae-guided"], n_images=4,
                 method_options={"cae-guided": {"steps": steps}})


@pytest.mark.filterwarnings("ignore:2 of 4 occlusion maps are constant")
def test_the_options_each_method_was_made_with_are_recorded(tmp_path):
    """LIME with 50 samples was compared, and reported, as if it had its default 1,000."""
    from caex.report.html import _evaluation_setup

    evaluate(None, square_classifier(), tiny_bundle(), methods=["occlusion", "random"], n_images=4, out_dir=tmp_path,
             method_options={"occlusion": {"window_fraction": 0.25, "perturbations_per_eval": 8}})
    settings = json.loads((tmp_path / "results.json").read_text())["settings"]
    assert settings["method_options"] == {"occlusion": {"window_fraction": 0.25, "perturbations_per_eval": 8}}
    assert "Method options: occlusion window_fraction=0.25, perturbations_per_eval=8." in (
        tmp_path / "results.md").read_text()
    assert "method options: occlusion window_fraction=0.25, perturbations_per_eval=8" in _evaluation_setup(
        settings, with_errors=False)


def test_recorded_options_are_numbers_and_only_those_of_methods_that_ran():
    """np.int64(50) from a sweep was recorded as "int64", and options of a method not asked for were reported."""
    import numpy as np

    from caex.evaluation.runner import options_record

    assert options_record({"lime": {"n_samples": np.int64(50), "compactness": np.float32(0.5)},
                           "occlusion": {"window_fraction": 0.25}, "gradcam": {"layer": torch.nn.Conv2d(1, 1, 1)}},
                          ["lime", "gradcam"]) == {"lime": {"n_samples": 50, "compactness": 0.5},
                                                   "gradcam": {"layer": "Conv2d"}}


def test_a_path_option_for_a_method_that_has_none_gets_no_cae_hint():
    with pytest.raises(EvaluationError, match=r"^method_options\['lime'\]: lime takes no option 'path' \(it takes "):
        evaluate(None, square_classifier(), tiny_bundle(), methods=["lime"], n_images=4,
                 method_options={"lime": {"path": "x"}})


@pytest.mark.parametrize("counter_class", [1.5, True, "1"])
def test_a_counter_class_that_is_no_class_index_is_refused_before_any_map(counter_class):
    """1.5 and True were taken and "1" was a TypeError, each after the methods before it had run."""
    from caex.explain import OptionValueError

    with pytest.raises(OptionValueError, match=rf"^cae-guided: counter_class={counter_class!r}: not a class index"):
        evaluate(MaskExplainer(), square_classifier(), tiny_bundle(), methods=["random", "cae-guided"], n_images=4,
                 method_options={"cae-guided": {"counter_class": counter_class}})
