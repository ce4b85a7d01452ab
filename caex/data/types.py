"""The in-memory data types every pipeline stage shares.

Images are float32 tensors ``[N, C, H, W]`` in the *data range* [0, 1]. The
classifier applies its own normalisation and the CAE maps to [-1, 1]
internally, so nothing downstream has to know where the pixels came from.
"""

from __future__ import annotations

import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from caex.errors import CaexError, DataError
from caex.utils.seed import torch_generator
from caex.utils.warn import warn


#: How far pixels may stray outside [0, 1] (resampling, rounding) before a batch is refused.
RANGE_TOLERANCE = 1e-3


def check_image_batch(images: object, *, channels: int | None = None, size: int | None = None,
                      what: str = "images", error: type[CaexError] = DataError) -> torch.Tensor:
    """``images`` if it is a float ``[B, C, H, W]`` tensor of finite pixels in the data range [0, 1] with the
    given ``channels`` and ``size`` (``None``: any); else ``error`` naming ``what`` and what is wrong.

    Every entry point runs it, because a uint8 or 0..255 batch would otherwise give confident, wrong
    probabilities and normal-looking maps. One min/max pass: cheap beside any network."""
    shape = tuple(getattr(images, "shape", ()))
    wanted = f"[B, {channels or 'C'}, {size or 'H'}, {size or 'W'}]"
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = f"{type(images).__name__}" + (f" of shape {shape}" if shape else "")
        raise error(f"{what}: expected a tensor batch {wanted}, got {got}"
                    + (" (one image: images[None])" if len(shape) == 3 else ""))
    if (channels is not None and shape[1] != channels) or (size is not None and shape[2:] != (size, size)):
        raise error(f"{what}: expected {wanted} images, got shape {shape}")
    if not images.is_floating_point():
        raise error(f"{what}: expected float pixels in [0, 1], got {images.dtype} ({_scaling_hint(images.dtype)})")
    if images.numel() and images.device.type != "meta":
        low, high = (float(value) for value in torch.aminmax(images.detach()))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise error(f"{what}: holds NaN or infinite pixels")
        if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
            raise error(f"{what}: values span [{low:g}, {high:g}]; expected the data range [0, 1] "
                        "(divide 8-bit images by 255)")
    return images


def _scaling_hint(dtype: torch.dtype) -> str:
    """How to bring pixels of an integer or bool ``dtype`` into [0, 1]: one hint for all, "divide 8-bit images by
    255", would take a 16-bit scan to [0, 257] and leave a bool batch as it was."""
    if dtype == torch.bool:
        return "images.float() makes a bool batch 0 and 1 pixels"
    if dtype == torch.uint8:
        return "divide 8-bit images by 255"
    if dtype == torch.uint16:
        return "divide 16-bit images by 65535"
    if dtype == torch.int16:  # CT in Hounsfield units, say: no division brings it to [0, 1]
        return "window signed 16-bit pixels into [0, 1] (for CT, clip a Hounsfield range and rescale it)"
    return "divide integer pixels by their format's maximum: 255 for 8-bit, 65535 for 16-bit images"


def as_tensor_argument(value: object, what: str, error: type[CaexError] = DataError) -> torch.Tensor:
    """``value`` if it is a tensor, as one if it is a NumPy array of numbers or bools (the Explainer takes arrays
    too); else ``error`` naming ``what``: an array failed deep in torch code ("order must be str, not int")."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.as_tensor(value)
    if not isinstance(value, torch.Tensor):
        raise error(f"{what}: expected a tensor or NumPy array, got {type(value).__name__}"
                    + (f" of {value.dtype}" if isinstance(value, np.ndarray) else ""))
    return value


def check_masks(masks: object, what: str = "masks", error: type[CaexError] = DataError) -> torch.Tensor:
    """``masks`` (a tensor or array) as a bool tensor if it is bool or holds only 0 and 1; else ``error`` naming
    ``what``. Read as "non-zero is lesion", a float mask with a little noise (JPEG, resampling) was lesion
    everywhere, and every method, random included, scored near 1 on localisation."""
    values = as_tensor_argument(masks, what, error)
    if values.dtype == torch.bool:
        return values
    stray = values[(values != 0) & (values != 1)]
    if len(stray):
        dtype = masks.dtype if isinstance(masks, np.ndarray) else values.dtype  # as given: int64, not torch.int64
        raise error(f"{what} must be bool or hold only 0 and 1 (got {dtype}); it holds "
                    f"{stray[0].item():g}: threshold soft or resampled masks (masks > 0.5)")
    return values.to(torch.bool)


def is_line_breaking(char: str) -> bool:
    """Whether ``char`` is a control character (NUL, newline, escape, ...) or a line or paragraph separator:
    in a file name or a one-line caption it breaks the name or the line (Pillow's text layout fails on it)."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp")


def readable(text: str) -> str:
    """``text`` fit to show: a name that is no UTF-8 (a Latin-1 folder, any name under an ASCII locale) holds
    surrogates, on which matplotlib's and Pillow's text layout fail; they are read as UTF-8 bytes, the rest shown
    as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check_class_names(names: object, where: str, error: type[CaexError] = DataError) -> list[str]:
    """``names`` as a list if it is a list of distinct, non-empty strings free of ``/``, ``\\`` and control
    characters; else ``error`` naming ``where`` (the file) and the name.

    Class names read from a user's file become output file names (``caex explain --all-targets``) and
    captions, so a name like ``../../x`` or one holding a newline must be refused where it is read, and a
    repeated name would make two classes' files overwrite each other.
    """
    if not isinstance(names, (list, tuple)):
        raise error(f"{where}: class_names must be a list of names, got {_shown(names)}")
    for name in names:
        if not isinstance(name, str) or not name.strip() or name in (".", ".."):
            raise error(f"{where}: class name {_shown(name)} in class_names is not a non-empty string that can "
                        "name a file")
        bad = next((char for char in name if char in "/\\" or is_line_breaking(char)), None)
        if bad is not None:
            raise error(f"{where}: class name {_shown(name)} in class_names contains {bad!r}; class names become "
                        "file names and captions, so they may not hold slashes or control characters")
    seen: dict[str, str] = {}  # by composed form: two spellings of one name (a Mac's and Linux's) are one class
    for name in names:
        if nfc(name) in seen:
            first = seen[nfc(name)]
            twice = "" if first == name else f" (as {first!a} and {name!a}, two Unicode forms of one name)"
            raise error(f"{where}: class name {_shown(name)} is given twice in class_names{twice}")
        seen[nfc(name)] = name
    return list(names)


def _shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: one readable line, whatever a file holds."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def rank_within_class(labels: torch.Tensor) -> torch.Tensor:
    """``[N]``: how many items of the same class come before each one in the given order. Sorting by
    ``rank * num_classes + label`` then lets the classes take turns (a seeded shuffle first makes it a draw)."""
    by_class = torch.argsort(labels, stable=True)
    sorted_labels = labels[by_class]
    ranks = torch.empty_like(by_class)
    ranks[by_class] = torch.arange(len(labels), device=labels.device) - torch.searchsorted(sorted_labels,
                                                                                             sorted_labels)
    return ranks


def warn_other_class_names(first: str, first_names: Sequence[str], second: str, second_names: Sequence[str]) -> None:
    """Warn when two parts of a pipeline name the same number of classes differently (a classifier of digits
    beside a CAE of scans would label every result wrongly); names that are just indices say nothing."""
    defaults = [str(k) for k in range(len(first_names))]
    if list(first_names) == defaults or list(second_names) == defaults or same_names(first_names, second_names):
        return
    warn(f"{first} names its classes {', '.join(first_names)} but {second} names them "
         f"{', '.join(second_names)}: results are labelled by position; check that they are the same "
         "classes in the same order")


@dataclass
class ImageSet(Dataset):
    """One split: images, labels, optional lesion masks and where each image came from."""

    images: torch.Tensor  # [N, C, H, W] float32 in [0, 1]
    labels: torch.Tensor  # [N] int64
    masks: torch.Tensor | None = None  # [N, H, W] bool, ground-truth regions where known
    sources: list[str] = field(default_factory=list)  # one string per image (file path or "synthetic:17")

    def __post_init__(self) -> None:
        if not self.sources:
            self.sources = [f"#{i}" for i in range(len(self.labels))]
        if self.images.ndim != 4 or not len(self.images) == len(self.labels) == len(self.sources):
            raise DataError(f"ImageSet: expected images [N, C, H, W] with N labels and N sources, got images "
                            f"{tuple(self.images.shape)}, {len(self.labels)} labels, {len(self.sources)} sources")
        check_image_batch(self.images, what="ImageSet images")
        if self.labels.ndim != 1 or self.labels.dtype != torch.long:
            raise DataError(f"ImageSet: labels must be int64 class indices [N], got {self.labels.dtype} "
                            f"{tuple(self.labels.shape)}")
        if self.masks is not None:
            self.masks = check_masks(self.masks, "ImageSet: masks")
            if self.masks.shape != (len(self.images), *self.images.shape[2:]):
                raise DataError(f"ImageSet: masks {tuple(self.masks.shape)} do not match images "
                                f"{tuple(self.images.shape)} (expected [N, H, W])")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:  # the dataclass's would print every pixel
        masks = ", masks" if self.masks is not None else ""
        return f"ImageSet({len(self)} images {list(self.images.shape[1:])}{masks})"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        mask = None if self.masks is None else self.masks[index]
        return self.images[index], int(self.labels[index]), mask

    def subset(self, indices: torch.Tensor | list[int]) -> ImageSet:
        """A new ImageSet with the chosen rows (used for class selection and sampling)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(
            images=self.images[index],
            labels=self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            sources=[self.sources[i] for i in index.tolist()],
        )

    def class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    def split(self, test_fraction: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """A stratified, seeded train/test split: each class gives ``round(count * test_fraction)``
        images to the test part (at least one when it has two or more, and never its last one, so
        every class stays in train); both parts come shuffled."""
        generator = torch_generator(seed)
        train_parts, test_parts = [], []
        for label in self.labels.unique().tolist():
            members = (self.labels == label).nonzero()[:, 0]
            members = members[torch.randperm(len(members), generator=generator)]
            count = round(len(members) * test_fraction)
            count = min(max(count, 1), len(members) - 1) if len(members) >= 2 else 0
            test_parts.append(members[:count])
            train_parts.append(members[count:])
        train, test = torch.cat(train_parts), torch.cat(test_parts)
        return (self.subset(train[torch.randperm(len(train), generator=generator)]),
                self.subset(test[torch.randperm(len(test), generator=generator)]))


#: The names of the data sets caex makes or ships, which a folder of the same name does not replace.
BUILT_IN = ("synthetic", "mnist", "digits")


def is_built_in(spec: str) -> bool:
    """Whether a DATA spec names data caex makes or ships (``synthetic``, ``mnist:4,9``), never a path."""
    return spec.partition(":")[0] in BUILT_IN


def same_data_spec(first: str | None, second: str | None, *, by_name: bool = True) -> bool:
    """Whether two DATA specs may name the same data: equal, paths to the same file or folder however typed
    (``fold``, ``fold/``, ``./fold``, its absolute path; relative ones taken from the current folder), or, with
    ``by_name``, paths whose last part is the same: models record a folder by its absolute path, which a project
    copied to another machine no longer matches, and the split-seed warning this serves went silent there (the
    warning shows both). Built-in data is never a path: ``synthetic`` is not a folder ``/x/synthetic``."""
    if first is None or second is None:
        return False
    if first == second:
        return True
    if is_built_in(first) or is_built_in(second):
        return False
    first_path, second_path = absolute_path(first), absolute_path(second)
    return first_path == second_path or (by_name and os.path.basename(first_path) == os.path.basename(second_path))


def absolute_path(spec: str) -> str:
    """A path spec made absolute and normal (``~``, ``./``, a trailing ``/``): one spelling however typed."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(spec)))


def classes_text(class_names: Sequence[str]) -> str:
    """How a class may be named, for error messages: ``"normal, cnv or 0..1"``; numbered classes by name only."""
    names = ", ".join(class_names)
    return names if any(_is_numeral(name) for name in class_names) else f"{names} or 0..{len(class_names) - 1}"


def names_preview(class_names: Sequence[str], shown: int = 8) -> str:
    """The first ``shown`` class names, for a one-line description: ``"a, b, c, ... (12 in all)"``."""
    names = ", ".join(class_names[:shown])
    return names + (f", ... ({len(class_names)} in all)" if len(class_names) > shown else "")


def nfc(name: str) -> str:
    """``name`` in Unicode's composed form (NFC): a name typed as é and a macOS folder name's e + combining accent
    (NFD) look the same and must name the same class."""
    return unicodedata.normalize("NFC", name)


def same_names(first: Sequence[str], second: Sequence[str]) -> bool:
    """Whether two lists name the same classes in the same order, in either Unicode form (:func:`nfc`)."""
    return [nfc(name) for name in first] == [nfc(name) for name in second]


def class_index(value: str | int, class_names: Sequence[str]) -> int | None:
    """The index of a class given by name or index (``"dme"``, ``2``, ``"2"``); ``None`` if it names none.

    Where class names are numbers (``mnist:1,4,9``), a number in a string is a name only: ``"2"`` read as
    index 2 would silently explain toward digit 9.
    """
    if isinstance(value, str):
        names = [nfc(name) for name in class_names]
        if nfc(value) in names:
            return names.index(nfc(value))
        if not _is_numeral(value) or any(_is_numeral(name) for name in class_names):
            return None
        value = int(value)
    is_index = isinstance(value, int) and not isinstance(value, bool)
    return value if is_index and 0 <= value < len(class_names) else None


def _is_numeral(text: str) -> bool:
    """Digits 0-9 only: ``str.isdigit`` also holds for ``²`` and ``①``, which ``int`` refuses."""
    return text.isascii() and text.isdigit()


@dataclass
class DataBundle:
    """A loaded data set: train and test splits plus what a model needs to know about it."""

    train: ImageSet
    test: ImageSet
    class_names: list[str]
    spec: str  # the spec string it was loaded from, recorded in every bundle for provenance
    #: Whether a left-right mirror image keeps its class, so training may flip images at random. True only
    #: where the source guarantees it (the synthetic generator draws every shape symmetrically); digits,
    #: text and anatomy with laterality are not, and a user's own data is assumed not to be.
    mirror_symmetric: bool = False
    #: The seed that drew the train/test split (and a synthetic set's images); None where the source defines
    #: its split, as a bundle built from the caller's own splits does. Every model trained on the bundle records it
    #: beside ``spec``, so a later command can tell when it would test on the model's training images.
    seed: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return (f"DataBundle({self.spec!r}: {self.num_classes} classes ({names_preview(self.class_names)}), "
                f"{len(self.train)} train / {len(self.test)} test images [{self.channels}, {self.image_size}, "
                f"{self.image_size}]{', masks' if self.has_masks else ''}, "
                f"{'its own split' if self.seed is None else f'split seed {self.seed}'})")

    def check_split(self, model: str, spec: str | None, seed: int | None) -> None:
        """Warn when ``model`` was trained on this data set split with another seed: this bundle's test images
        are then not the ones it held out, and some may be its training images."""
        if same_data_spec(spec, self.spec) and None not in (seed, self.seed) and seed != self.seed:
            warn(f"{model} was trained on {spec} split with seed {seed}, but it is loaded here with seed "
                 f"{self.seed}: its test images are not the ones the model held out (some may be its "
                 f"training images); load the data with seed {seed} (--split-seed {seed})")

    def class_index(self, value: str | int) -> int:
        """A class given by name or index (``"dme"``, ``2``, ``"2"``) as its index; a one-line error otherwise."""
        index = class_index(value, self.class_names)
        if index is None:
            raise DataError(f"{value!r}: not a class of {self.spec} ({classes_text(self.class_names)})")
        return index

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def has_masks(self) -> bool:
        return self.test.masks is not None


def require_bundle(data: object) -> DataBundle:
    """``data`` if it is a :class:`DataBundle`; a lone :class:`ImageSet` or tensors get an error saying how to
    make one (the stages need both splits, the class names and the spec it came from)."""
    if not isinstance(data, DataBundle):
        raise DataError(f"data: expected a DataBundle, got {type(data).__name__}; load one with "
                        "caex.load_dataset(spec) or build DataBundle(train, test, class_names, spec) from ImageSets")
    return data

