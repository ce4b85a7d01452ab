"""The embedded synthetic data set: determinism, masks, distractors, sizes, options."""

from __future__ import annotations

import pytest
import torch

from caex.data import CLASS_NAMES, SyntheticConfig, generate_synthetic, load_dataset
from caex.errors import DataError


@pytest.fixture(scope="module")
def all_classes():
    return generate_synthetic(SyntheticConfig(classes=8, per_class=12, size=64), seed=3)


def test_same_seed_gives_identical_tensors_and_another_seed_does_not():
    config = SyntheticConfig(classes=4, per_class=6, size=32)
    first, again, other = (generate_synthetic(config, seed=s) for s in (0, 0, 1))
    assert torch.equal(first.images, again.images)
    assert torch.equal(first.masks, again.masks)
    assert not torch.equal(first.images, other.images)
    assert (first.images - other.images).abs().mean() > 0.05


def test_load_dataset_is_deterministic_including_the_split():
    a = load_dataset("synthetic:per_class=8,size=32", seed=5)
    b = load_dataset("synthetic:per_class=8,size=32", seed=5)
    assert torch.equal(a.train.images, b.train.images) and a.test.sources == b.test.sources


def test_pixel_noise_off_renders_the_same_individuals_without_the_noise():
    noisy = load_dataset("synthetic:per_class=8,size=32", seed=5)
    clean = load_dataset("synthetic:per_class=8,size=32,pixel_noise=0", seed=5)
    assert noisy.test.sources == clean.test.sources and torch.equal(noisy.test.masks, clean.test.masks)
    difference = (noisy.test.images - clean.test.images).abs()
    assert 0.005 < difference.mean() < 0.05  # speckle and noise only: the structure is identical
    assert (clean.test.images[:, :, :, 1:] - clean.test.images[:, :, :, :-1]).abs().mean() < \
        (noisy.test.images[:, :, :, 1:] - noisy.test.images[:, :, :, :-1]).abs().mean() / 2


def test_image_differs_from_its_lesion_free_twin_only_inside_the_mask(all_classes):
    difference = (all_classes.images - all_classes.lesion_free).abs().amax(dim=1)
    assert difference[~all_classes.masks].max() == 0
    sick = all_classes.labels != 0
    inside = (difference * all_classes.masks).sum(dim=(1, 2)) / all_classes.masks.sum(dim=(1, 2)).clamp(min=1)
    assert inside[sick].min() > 0.05  # the lesion really changes what the mask covers


def test_normal_masks_are_empty_and_lesion_masks_have_plausible_area(all_classes):
    area = all_classes.masks.float().mean(dim=(1, 2))
    assert area[all_classes.labels == 0].max() == 0
    for label in range(1, 8):
        lesion_area = area[all_classes.labels == label]
        assert lesion_area.min() > 0.01, CLASS_NAMES[label]
        assert lesion_area.max() < 0.25, CLASS_NAMES[label]
    assert 0.03 < area[all_classes.labels != 0].mean() < 0.15


def test_brightest_pixels_are_mostly_distractors_not_lesions(all_classes):
    sick = all_classes.labels != 0
    images, masks = all_classes.images[sick, 0].flatten(1), all_classes.masks[sick].flatten(1)
    top = images.topk(20, dim=1).indices
    share_in_mask = masks.gather(1, top).float().mean(dim=1)
    assert share_in_mask.mean() < 0.3
    assert (share_in_mask < 0.5).float().mean() > 0.8


@pytest.mark.parametrize(("name", "darkens", "brightens"), [
    ("cnv", False, True), ("dme", True, True), ("drusen", False, True), ("hole", True, False),
    ("erm", False, True), ("ped", True, True), ("atrophy", False, True),
])
def test_each_lesion_has_its_signature(all_classes, name, darkens, brightens):
    """DME cysts, holes and PED fluid are darker than the tissue they replace; the rest add bright matter."""
    chosen = all_classes.labels == CLASS_NAMES.index(name)
    change = (all_classes.images[chosen, 0] - all_classes.lesion_free[chosen, 0]) * all_classes.masks[chosen]
    darker = (change < -0.25).sum(dim=(1, 2))
    brighter = (change > 0.25).sum(dim=(1, 2))
    assert bool((darker >= 3).all()) == darkens
    assert bool((brighter >= 3).all()) == brightens


@pytest.mark.parametrize(("size", "channels"), [(32, 1), (64, 3), (128, 1), (256, 3)])
def test_sizes_and_channels(size, channels):
    out = generate_synthetic(SyntheticConfig(classes=2, per_class=2, size=size, channels=channels))
    assert out.images.shape == (4, channels, size, size) and out.images.dtype == torch.float32
    assert out.masks.shape == (4, size, size) and out.masks.dtype == torch.bool
    assert out.images.min() >= 0 and out.images.max() <= 1
    if channels == 3:  # a tint, not a different picture: channels are proportional
        assert not torch.equal(out.images[:, 0], out.images[:, 2])
        correlation = torch.corrcoef(torch.stack([out.images[:, 0].flatten(), out.images[:, 2].flatten()]))
        assert correlation[0, 1] > 0.95


def test_geometry_scales_with_size():
    small = generate_synthetic(SyntheticConfig(classes=4, per_class=6, size=32), seed=2)
    large = generate_synthetic(SyntheticConfig(classes=4, per_class=6, size=128), seed=2)
    area_small, area_large = (out.masks.float().mean(dim=(1, 2)) for out in (small, large))
    assert (area_small - area_large).abs().mean() < 0.03


def test_class_counts_names_and_stratified_split():
    bundle = load_dataset("synthetic:classes=5,per_class=10,size=32", test_fraction=0.2)
    assert bundle.class_names == ["normal", "cnv", "dme", "drusen", "hole"]
    assert bundle.train.class_counts(5) == [8] * 5 and bundle.test.class_counts(5) == [2] * 5
    assert bundle.has_masks and bundle.train.masks.shape == (40, 32, 32)
    assert set(bundle.train.sources).isdisjoint(bundle.test.sources)


def test_keyword_size_and_channels_apply_and_conflicts_are_reported():
    bundle = load_dataset("synthetic:per_class=2", size=48, channels=3)
    assert (bundle.image_size, bundle.channels) == (48, 3)
    with pytest.raises(DataError, match="conflicts"):
        load_dataset("synthetic:size=32", size=64)


@pytest.mark.parametrize(("spec", "message"), [
    ("synthetic:classes=9", "classes=9 is out of range"),
    ("synthetic:classes=1", "classes=1 is out of range"),
    ("synthetic:per_class=1", "per_class=1"),
    ("synthetic:size=16", "images of 16 px are out of range"),
    ("synthetic:channels=2", "channels=2"),
    ("synthetic:colour=1", "unknown option 'colour'"),
    ("synthetic:pixel_noise=2", "pixel_noise=2 must be 0 or 1"),
    ("synthetic:size=big", "not an integer"),
    ("synthetic:size", "not key=value"),
])
def test_bad_options_raise_one_line_errors(spec, message):
    with pytest.raises(DataError, match=message) as info:
        load_dataset(spec)
    assert "\n" not in str(info.value)


def test_tiny_synthetic_fixture(tiny_synthetic):
    assert tiny_synthetic.num_classes == 4 and tiny_synthetic.image_size == 32
    assert len(tiny_synthetic.train) == 32 and len(tiny_synthetic.test) == 8
