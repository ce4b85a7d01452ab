"""One entry point for every data source: a spec string in, a :class:`DataBundle` out."""

from __future__ import annotations

import os
from pathlib import Path
from typing import overload

import torch

from caex.data.sources import RawData, RawImages, read_digits, read_folder, read_mnist, read_npz
from caex.data.synthetic import SyntheticConfig, generate_synthetic
from caex.data.transforms import is_grey, resize_and_crop, to_channels
from caex.data.types import DataBundle, ImageSet, absolute_path, is_built_in
from caex.errors import DataError
from caex.utils.warn import warn

SPEC_FORMS = ("synthetic[:classes=4,per_class=400,size=64,channels=1], mnist[:4,9], digits[:0,1], "
              "an image folder (root/<class>/*.png, optional train/ test/), or a .npz file")
#: Image size each source gets when none is asked for (``None``: the file's own).
DEFAULT_SIZES = {"mnist": 28, "digits": 32, "folder": 64, "npz": None}
SIZE_RANGE = (8, 1024)


def load_dataset(spec: str | os.PathLike, *, size: int | None = None, channels: int | None = None, seed: int = 0,
                 skip_bad: bool = False, test_fraction: float = 0.2) -> DataBundle:
    """Load ``spec`` as train/test splits of float32 images in [0, 1].

    ``spec`` is ``synthetic[:key=value,...]``, ``mnist[:digits]``, ``digits[:digits]``,
    an image folder or a ``.npz`` file (a path may be a ``Path``). ``size`` (square side) and ``channels``
    (1 or 3) override the source's own; the split is stratified and seeded
    unless the source defines one (a folder's ``train/`` and ``test/``, an
    npz's ``test_*`` arrays).
    """
    spec = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
    if not isinstance(spec, str):
        raise DataError(f"data spec {spec!r}: expected a string (synthetic, mnist:4,9, a folder, a .npz) or a path")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction}: must be between 0 and 1 (exclusive)")
    if size is not None and not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise DataError(f"size={size}: out of range ({SIZE_RANGE[0]}..{SIZE_RANGE[1]} pixels)")
    if channels not in (None, 1, 3):
        raise DataError(f"channels={channels}: must be 1 or 3")
    if not spec.strip():
        raise DataError(f"empty data spec (valid: {SPEC_FORMS})")
    name, has_options, options = spec.partition(":")
    if is_built_in(spec) and Path(spec).is_dir():  # the folder is never read, and nothing else would say so
        warn(f"{spec} is the built-in data set; to load the folder ./{spec} write ./{spec}")
    if name == "synthetic":
        return _load_synthetic(spec, options, size, channels, seed, test_fraction)
    if name in ("mnist", "digits"):
        reader = read_mnist if name == "mnist" else read_digits
        raw = reader(options if has_options and options else None)
        return _assemble(raw, spec, size or DEFAULT_SIZES[name], channels, seed, test_fraction)
    path = Path(spec).expanduser()
    if path.is_dir():
        size = size or DEFAULT_SIZES["folder"]
        return _assemble(read_folder(path, size=size, skip_bad=skip_bad), spec, size, channels, seed, test_fraction)
    if path.suffix.lower() == ".npz" or os.sep in spec or (os.altsep and os.altsep in spec):
        if not path.exists():
            raise DataError(f"{spec}: no such file or folder")
        if path.suffix.lower() != ".npz":
            raise DataError(f"{spec}: not a folder or a .npz file (valid specs: {SPEC_FORMS})")
        return _assemble(read_npz(path, size=size), spec, size, channels, seed, test_fraction)
    raise DataError(f"unknown data spec {spec!r}: not a built-in source and no such folder (valid: {SPEC_FORMS})")


@overload
def as_recorded(spec: str) -> str: ...


@overload
def as_recorded(spec: None) -> None: ...


def as_recorded(spec: str | None) -> str | None:
    """A DATA ``spec``, or an image's source, as caex's files record it: a folder, ``.npz`` or image file by its
    absolute path, built-in data (``synthetic``, ``digits:745``) as it is. A relative path was resolved against the
    folder of the command that read the record: the check that a model is used with the split it was trained on
    passed in silence when that command ran from elsewhere, files of two runs named one image two ways, and
    ``.`` became a report's title."""
    if spec is None or is_built_in(spec) or not os.path.exists(os.path.expanduser(spec)):
        return spec
    return absolute_path(spec)


def parse_options(spec: str, text: str) -> dict[str, str]:
    """``"classes=4,size=64"`` -> ``{"classes": "4", "size": "64"}``."""
    options: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or not value.strip():
            raise DataError(f"{spec}: option {item!r} is not key=value")
        if key.strip() in options:
            raise DataError(f"{spec}: option {key.strip()!r} is given twice")
        options[key.strip()] = value.strip()
    return options


def _load_synthetic(spec: str, text: str, size: int | None, channels: int | None, seed: int,
                    test_fraction: float) -> DataBundle:
    options = parse_options(spec, text)
    for key, value in (("size", size), ("channels", channels)):
        if value is None:
            continue
        if key in options and options[key] != str(value):
            raise DataError(f"{spec}: {key}={options[key]} in the spec conflicts with {key}={value}")
        options[key] = str(value)
    config = SyntheticConfig.from_options(options)
    if config.per_class < 2:
        raise DataError(f"{spec}: per_class={config.per_class} must be at least 2 (one train, one test image)")
    generated = generate_synthetic(config, seed=seed)
    everything = ImageSet(generated.images, generated.labels, generated.masks,
                          [f"synthetic:{i}" for i in range(len(generated.labels))])
    train, test = everything.split(test_fraction, seed)
    return DataBundle(train, test, generated.class_names, spec, mirror_symmetric=True, seed=seed)


def _assemble(raw: RawData, spec: str, size: int | None, channels: int | None, seed: int,
              test_fraction: float) -> DataBundle:
    """Resize and convert a source's images, then split them (unless the source already did)."""
    present = raw.train.labels.unique()
    if len(present) < 2:
        names = ", ".join(raw.class_names[k] for k in present.tolist()) or "none"
        raise DataError(f"{spec}: needs at least two classes with images, found only {len(present)}: {names}")
    if raw.test is not None and not len(raw.test.labels):
        raise DataError(f"{spec}: the test split has no images")
    empty = sorted(set(range(len(raw.class_names))) - set(present.tolist()))
    if empty:  # e.g. .npz labels {0, 2}: class 1 stays, so label numbers keep their meaning
        message = (f"{spec}: class(es) {', '.join(raw.class_names[k] for k in empty)} have no training images; "
                   "nothing can be learned or explained about them")
        warn(message)
    parts = [raw.train] if raw.test is None else [raw.train, raw.test]
    if channels != 3:  # a pass over every image: only where it decides the channels or a warning
        grey = all(is_grey(images) for part in parts for images in _batches(part))
        if channels is None:
            channels = 1 if grey else 3
        elif not grey:  # channels=1: a model of colour lesions would see none, and nothing said so
            warn(f"{spec}: the images are in colour; channels=1 (--channels 1) converts them to grey")
    if size is None:
        first = raw.train.images[0]
        size = min(first.shape[-2:])
        if not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
            raise DataError(f"{spec}: images of {size} px are out of range ({SIZE_RANGE[0]}..{SIZE_RANGE[1]}); "
                            "pass --size to resize them")
    sets = [ImageSet(_prepare(part, size, channels), part.labels, _prepare_masks(part.masks, size), part.sources)
            for part in parts]
    train, test = sets[0].split(test_fraction, seed) if raw.test is None else sets
    if not len(test):
        raise DataError(f"{spec}: no image left for a test split (every class has a single image); "
                        "give some class at least two images, or provide a test split")
    untested = sorted(set(present.tolist()) - set(test.labels.tolist()))
    if untested:  # evaluate, manifold and the report would cover fewer classes than the model knows
        why = "" if raw.test is not None else " (the split leaves a class's only image for training)"
        warn(f"{spec}: the test split has no images of class(es) "
             f"{', '.join(raw.class_names[k] for k in untested)}{why}; nothing is measured on them")
    return DataBundle(train, test, list(raw.class_names), spec, seed=seed if raw.test is None else None)


def _batches(part: RawImages) -> list[torch.Tensor]:
    """A source's images as batches ``[n, C, H, W]``: one per file for folders, one in all otherwise."""
    return [image[None] for image in part.images] if isinstance(part.images, list) else [part.images]


def _prepare(part: RawImages, size: int, channels: int) -> torch.Tensor:
    return torch.cat([to_channels(resize_and_crop(batch, size), channels) for batch in _batches(part)])


def _prepare_masks(masks: torch.Tensor | None, size: int) -> torch.Tensor | None:
    """Masks resized and cropped as their images are: a pixel is in the mask where most of it was."""
    return None if masks is None else resize_and_crop(masks[:, None].float(), size)[:, 0] > 0.5
