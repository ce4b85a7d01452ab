"""The tensors a Python user hands to the API: masks, labels, dtypes, autocast and inference mode, PIL images.

Each test is a finding of an audit in which such an input gave a silently wrong score or a raw torch error.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_evaluation import SIZE, bright_images, square_classifier, square_mask
from test_explain import LesionBlackBox, PaintingCAE, healthy_images

from caex.classifier import TorchClassifier, build_classifier_network
from caex.data.types import ImageSet, check_image_batch, check_masks
from caex.errors import DataError
from caex.evaluation import (EvaluationError, LocalisationMetric, PerturbationMetric, clean_probabilities, make_fill,
                             mass_in_mask, perturbation_curve, pointing_game, topk_iou)
from caex.explain import Explainer, ExplainerAttributor, ExplainError, make_attributor
from caex.explain.attribution import GradientsUnavailableError

LOCALISATION = {"pointing_game": pointing_game, "mass_in_mask": mass_in_mask, "topk_iou": topk_iou,
                "LocalisationMetric": LocalisationMetric()}


def painted_explainer(smoothing: float = 1.0) -> Explainer:
    return Explainer(PaintingCAE(), LesionBlackBox(), batch_size=7, knn=3, smoothing=smoothing)


def small_classifier(dtype: torch.dtype = torch.float32) -> TorchClassifier:
    torch.manual_seed(0)
    net = build_classifier_network("smallcnn", channels=1, num_classes=3, image_size=SIZE)
    return TorchClassifier(net.to(dtype), ["a", "b", "c"], SIZE, 1)


# -- 1. masks hold 0 and 1 only --------------------------------------------------------------------
def test_an_image_set_refuses_masks_of_other_values_and_keeps_0_1_masks_as_bool():
    """Any non-zero value counted as lesion: masks of 7s were accepted."""
    images, labels = torch.rand(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(DataError, match=r"^ImageSet: masks must be bool or hold only 0 and 1 \(got torch.int64\); it "
                                        r"holds 7: threshold soft or resampled masks \(masks > 0.5\)$"):
        ImageSet(images, labels, masks=torch.full((2, 8, 8), 7))
    ones = torch.zeros(2, 8, 8, dtype=torch.uint8)
    ones[:, 2:4, 2:4] = 1
    kept = ImageSet(images, labels, masks=ones).masks
    assert kept.dtype == torch.bool and torch.equal(kept, ones.bool())
    assert torch.equal(check_masks(ones.numpy()), ones.bool())


@pytest.mark.parametrize("score", LOCALISATION.values(), ids=LOCALISATION.keys())
def test_localisation_refuses_noisy_float_masks_that_read_as_lesion_everywhere(score):
    """A float mask with JPEG-like noise in its background made every pixel lesion: every method, random too,
    scored a mass in mask of 1.0."""
    saliency = torch.rand(2, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    masks = square_mask(2)
    with pytest.raises(EvaluationError, match=r"^masks must be bool or hold only 0 and 1 \(got torch.float32\); it "
                                              r"holds 0.001"):
        score(saliency, masks.float() + 1e-3)
    as_float, as_bool = score(saliency, masks.float()), score(saliency, masks)
    if isinstance(as_bool, dict):
        assert as_float == as_bool
    else:
        assert torch.equal(as_float, as_bool)


# -- 2. the deletion metric checks images and fill whatever the model ---------------------------------
def test_a_plain_callable_model_gets_images_and_fill_checked_as_a_classifier_does():
    """0..255 images with a [0, 1] fill gave a plausible, wrong AOPC (0.66 against 0.53) through a callable."""
    images, classifier = bright_images(2), square_classifier()
    labels, maps = torch.ones(2, dtype=torch.long), torch.rand(2, SIZE, SIZE)
    fill = make_fill(images)
    metric = PerturbationMetric(patch=2, n_patches=3)
    expected = metric(classifier, images, labels, maps, fill).probs
    assert torch.equal(metric(classifier.predict_proba, images, labels, maps, fill).probs, expected)
    scaled = lambda batch: classifier.predict_proba(batch / 255)  # noqa: E731 - a user's own model
    with pytest.raises(EvaluationError, match=r"^images: values span \[.*, 255\]; expected the data range \[0, 1\]"):
        metric(scaled, images * 255, labels, maps, make_fill(images * 255))  # the fill is drawn in [0, 1]
    with pytest.raises(EvaluationError, match=r"^fill: values span \[.*\]; expected the data range \[0, 1\]"):
        perturbation_curve(classifier.predict_proba, images, labels, maps, fill * 255, n_patches=3)
    with pytest.raises(EvaluationError, match=r"^images: expected float pixels in \[0, 1\], got torch.uint8"):
        clean_probabilities(scaled, (images * 255).to(torch.uint8), labels)


# -- 3. float16 maps ----------------------------------------------------------------------------------
def test_mass_in_mask_sums_a_float16_map_in_float32():
    """A 256 px float16 map summed to inf in float16, so its mass in the mask read 0."""
    saliency = torch.ones(1, 256, 256, dtype=torch.float16)
    masks = torch.zeros(1, 256, 256, dtype=torch.bool)
    masks[:, :128] = True
    assert mass_in_mask(saliency, masks).tolist() == [0.5]
    tiny = torch.full((1, 256, 256), 1e-30, dtype=torch.float64)  # float64 is summed as float64, not cut down
    tiny[0, 0, 0] = 1.0
    assert mass_in_mask(tiny, masks).dtype == torch.float64
    assert mass_in_mask(tiny, ~masks).item() == (128 * 256 * 1e-30) / (1.0 + (256 * 256 - 1) * 1e-30)


# -- 4. autocast ------------------------------------------------------------------------------------
def test_maps_are_float32_and_unchanged_inside_autocast():
    """Inside torch.autocast the blur gave bfloat16 maps: saliency() and the CAE attributor failed to store them
    ("Index put requires the source and destination dtypes match") and explain() returned maps save() could not
    write. The stand-in CAE and black box compute the same frames either way, so the maps must be the same."""
    explainer, images = painted_explainer(), healthy_images(3)
    expected = explainer.saliency(images, path="centroid", steps=4)
    expected_explained = explainer.explain(images, path="centroid", steps=4).saliency
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = explainer.saliency(images, path="centroid", steps=4)
        explained = explainer.explain(images, path="centroid", steps=4).saliency
        attributed = ExplainerAttributor(explainer.classifier, explainer, path="centroid", steps=4).saliency(
            images, torch.zeros(3, dtype=torch.long))
    assert maps.dtype == explained.dtype == attributed.dtype == torch.float32
    assert torch.equal(maps, expected) and torch.equal(explained, expected_explained)


# -- 5. half-precision classifiers ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_classifier_takes_float32_images_and_gives_float32_results(dtype):
    """Inputs were cast to float32, which a float16 or bfloat16 module refuses ("Input type (torch.FloatTensor)
    and weight type (torch.HalfTensor) should be the same")."""
    images = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    full, half = small_classifier(), small_classifier(dtype)
    probs = half.predict_proba(images)
    assert probs.dtype == torch.float32 and torch.allclose(probs, full.predict_proba(images), atol=0.05)
    assert half.features(images).dtype == torch.float32
    for name in ("fullgrad", "integrated_gradients"):  # (an untrained network's Grad-CAM is all zeros)
        maps = make_attributor(name, half).saliency(images, 1)
        assert maps.dtype == torch.float32 and maps.shape == (4, SIZE, SIZE)
        assert (maps - make_attributor(name, full).saliency(images, 1)).abs().mean() < 0.05  # bfloat16: 8 bits


# -- 6. weights made in inference mode ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gradcam", "fullgrad", "integrated_gradients"])
def test_gradient_methods_refuse_a_classifier_loaded_in_inference_mode(name):
    """Weights made inside torch.inference_mode() cannot be saved for backward: each method failed with torch's
    RuntimeError when called, after it was made."""
    with torch.inference_mode():
        classifier = small_classifier()
    with pytest.raises(GradientsUnavailableError, match=rf"^{name} needs gradients, which weights made inside "
                                                         r"torch.inference_mode\(\) cannot give: load the classifier "
                                                         r"outside torch.inference_mode\(\)$"):
        make_attributor(name, classifier)
    assert make_attributor("occlusion", classifier).saliency(torch.rand(1, 1, SIZE, SIZE), 0).shape == (1, SIZE, SIZE)


# -- 7. labels, empty batches, shapes and arrays given to the metrics -----------------------------------
def _aopc_inputs() -> tuple[TorchClassifier, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    images = bright_images(2)
    return square_classifier(), images, torch.ones(2, dtype=torch.long), torch.rand(2, SIZE, SIZE), make_fill(images)


@pytest.mark.parametrize("labels", [torch.ones(2, dtype=torch.uint8), torch.ones(2, dtype=torch.int32),
                                    np.ones(2, dtype=np.int64), [1, 1]], ids=["uint8", "int32", "numpy", "list"])
def test_the_deletion_metric_takes_integer_labels_of_any_kind(labels):
    """uint8 labels failed in gather(), numpy ones as having no .to(), a list as having no .shape."""
    classifier, images, expected_labels, maps, fill = _aopc_inputs()
    metric = PerturbationMetric(patch=2, n_patches=2)
    assert torch.equal(metric(classifier, images, labels, maps, fill).probs,
                       metric(classifier, images, expected_labels, maps, fill).probs)


@pytest.mark.parametrize(("labels", "message"), [
    (torch.ones(2), r"^labels: expected one class index per image \[2\], got torch.float32 of shape \(2,\)$"),
    (torch.ones(2, dtype=torch.bool), r"^labels: expected one class index per image \[2\], got torch.bool"),
    (torch.tensor([1, -1]), r"^labels: -1 is not a class index of the model's 2 outputs \(0..1\)$"),
    (torch.tensor([2, 1]), r"^labels: 2 is not a class index of the model's 2 outputs \(0..1\)$"),
], ids=["float", "bool", "negative", "too large"])
def test_the_deletion_metric_names_labels_that_are_no_class_indices(labels, message):
    """Raw errors: gather()'s "Expected dtype int32/int64" or "index 2 is out of bounds"."""
    classifier, images, _, maps, fill = _aopc_inputs()
    with pytest.raises(EvaluationError, match=message):
        PerturbationMetric(patch=2, n_patches=2)(classifier, images, labels, maps, fill)
    with pytest.raises(EvaluationError, match=message):
        clean_probabilities(classifier, images, labels)


def test_the_deletion_metric_refuses_an_empty_batch():
    """Zero images failed as torch.cat(): expected a non-empty list of Tensors."""
    classifier, images, labels, maps, fill = _aopc_inputs()
    with pytest.raises(EvaluationError, match=r"^images: no images to score \(shape \(0, 1, 16, 16\)\)$"):
        PerturbationMetric(patch=2, n_patches=2)(classifier, images[:0], labels[:0], maps[:0], fill[:0])


@pytest.mark.parametrize("score", LOCALISATION.values(), ids=LOCALISATION.keys())
def test_localisation_names_masks_of_another_size_and_takes_numpy_maps(score):
    """Half-size masks failed as "index 403 is out of bounds" in pointing_game; a NumPy map as "order must be str,
    not int"."""
    saliency, masks = torch.rand(2, SIZE, SIZE, generator=torch.Generator().manual_seed(0)), square_mask(2)
    with pytest.raises(EvaluationError, match=r"^expected saliency \[K, H, W\] and masks of the same shape; got "
                                              r"\(2, 16, 16\) and \(2, 8, 8\)$"):
        score(saliency, masks[:, ::2, ::2])
    from_arrays, from_tensors = score(saliency.numpy(), masks.numpy()), score(saliency, masks)
    if isinstance(from_tensors, dict):
        assert from_arrays == from_tensors
    else:
        assert torch.equal(from_arrays, from_tensors)


# -- 8. leaving -----------------------------------------------------------------------------------------
def test_leaving_takes_one_class_per_image_only():
    """A [2, 2] leaving for 4 images was flattened and accepted."""
    explainer, images = painted_explainer(0.0), healthy_images(4)
    with pytest.raises(ExplainError, match=r"^leaving of shape \(2, 2\) for 4 images: expected one class per image "
                                           r"\(\[4\]\)$"):
        explainer.saliency(images, leaving=torch.zeros(2, 2, dtype=torch.long), path="centroid", steps=2)
    assert explainer.saliency(images, leaving=torch.zeros(4, dtype=torch.long), path="centroid", steps=2).shape \
        == (4, SIZE, SIZE)


# -- 9. PIL images ----------------------------------------------------------------------------------------
def test_a_pil_image_is_refused_with_how_to_convert_it():
    """torch failed as "Could not infer dtype of Image"."""
    explainer = painted_explainer(0.0)
    image = Image.fromarray((healthy_images(1)[0, 0].numpy() * 255).astype(np.uint8))
    for given in (image, [image, image]):
        with pytest.raises(ExplainError, match=r"^images: a PIL image; give float tensors \[C, H, W\] in \[0, 1\]: "
                                               r"torchvision.transforms.functional.to_tensor\(image\)"):
            explainer.saliency(given, target=1, path="centroid", steps=2)


def test_a_file_name_is_refused_with_where_files_are_explained(tmp_path):
    """explain("scan.png") failed in torch ("new(): invalid data type 'str'"), a Path as "Could not infer dtype"."""
    explainer = painted_explainer(0.0)
    for given in ("ims/scan.png", tmp_path / "scan.png", [healthy_images(1)[0], "b.png"]):
        with pytest.raises(ExplainError, match=r"^images: a file name \(.*(scan|b)\.png\); give image tensors, or "
                                               r"explain files with caex\.explain\.explain_files"):
            explainer.saliency(given, target=1, path="centroid", steps=2)


# -- 10. the hint for integer and bool pixels ------------------------------------------------------------------
@pytest.mark.parametrize(("dtype", "hint"), [
    (torch.uint8, "divide 8-bit images by 255"),
    (torch.uint16, "divide 16-bit images by 65535"),
    (torch.int16, "window signed 16-bit pixels into [0, 1] (for CT, clip a Hounsfield range and rescale it)"),
    (torch.bool, "images.float() makes a bool batch 0 and 1 pixels"),
    (torch.int64, "divide integer pixels by their format's maximum: 255 for 8-bit, 65535 for 16-bit images"),
])
def test_the_hint_for_integer_pixels_depends_on_their_type(dtype, hint):
    """"divide 8-bit images by 255" was the hint for bool and 16-bit batches too."""
    with pytest.raises(DataError, match=rf"^images: expected float pixels in \[0, 1\], got {dtype} "
                                        rf"\({re.escape(hint)}\)$"):
        check_image_batch(torch.zeros(1, 1, 4, 4, dtype=dtype))

