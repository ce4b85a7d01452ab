"""How image files decode: what Pillow reads other than as stored (bit depths, signs, frames, polarity,
orientation) is refused or warned about, the same way by every reader (folders, load_image, caex explain's check)."""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from caex.data import load_dataset, load_image
from caex.data.sources import ReadNotes, check_image, read_image, readable_images
from caex.errors import DataError

RAMP = np.linspace(0, 1, 24 * 16).reshape(16, 24)  # 16 high, 24 wide: no orientation hides in its shape


def _png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit PNG of ``[H, W, C]`` values (C: 2 grey+alpha, 3 RGB, 4 RGBA), which Pillow cannot write."""
    colour_type = {2: 4, 3: 2, 4: 6}[pixels.shape[2]]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", pixels.shape[1], pixels.shape[0], 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


def _frames(path: Path, values: tuple[int, ...]) -> Path:
    """A grey file holding one flat frame per value (a TIFF stack, an animated PNG or GIF)."""
    first, *others = [Image.fromarray(np.full((16, 24), value, np.uint8)) for value in values]
    first.save(path, save_all=True, append_images=others)
    return path


def _sideways_tiff(path: Path, orientation: int, **options) -> Path:
    Image.fromarray((RAMP * 255).astype(np.uint8)).save(path, tiffinfo={274: orientation}, **options)
    return path


def _messages(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(item.message) for item in record]


# --------------------------------------------------------------------------- refused, by the reader and its check

#: Files the reader refuses, and the words it refuses them with.
REFUSED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "float TIFF of 0..1000": (
        lambda tmp: Image.fromarray((RAMP * 1000).astype(np.float32)).save(tmp / "f.tif") or tmp / "f.tif",
        r"holds floats in \[0, 1000\]"),
    "float TIFF with NaN": (
        lambda tmp: Image.fromarray(np.full((16, 24), np.nan, np.float32)).save(tmp / "n.tif") or tmp / "n.tif",
        "NaN or infinite"),
    "negative 32-bit integers": (
        lambda tmp: Image.fromarray((RAMP * 4095 - 1024).astype(np.int32)).save(tmp / "ct.tif") or tmp / "ct.tif",
        r"has negative pixel values \(minimum -1024, maximum 3071\)"),
    "32-bit integers above 65535": (
        lambda tmp: Image.fromarray((RAMP * 200000).astype(np.int32)).save(tmp / "w.tif") or tmp / "w.tif",
        "has pixel values up to 200000; expected 8-bit"),
    "sideways uncompressed TIFF": (lambda tmp: _sideways_tiff(tmp / "s.tif", 6), "sideways orientation tag"),
}


@pytest.mark.parametrize("kind", list(REFUSED))
def test_check_image_refuses_every_file_the_reader_refuses_in_the_same_words(tmp_path, kind):
    """caex explain checks its inputs with check_image before writing anything: a file it passed that the reader
    then refused stopped a --skip-bad run part-way, with files written."""
    make, message = REFUSED[kind]
    path = make(tmp_path)
    with pytest.raises(DataError, match=message) as refused:
        read_image(path)
    with pytest.raises(DataError) as checked:
        check_image(path)
    assert str(checked.value) == str(refused.value)
    assert str(checked.value).startswith(str(path)) and "\n" not in str(checked.value)


def test_skip_bad_leaves_out_float_tiffs_out_of_range_before_anything_is_read(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray((RAMP * 255).astype(np.uint8)).save(good)
    big, nan = REFUSED["float TIFF of 0..1000"][0](tmp_path), REFUSED["float TIFF with NaN"][0](tmp_path)
    with pytest.raises(DataError, match=r"f\.tif holds floats in \[0, 1000\]"):
        readable_images([good, big, nan])
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\), first: .*f\.tif"):
        assert readable_images([good, big, nan], skip_bad=True) == [good]


# --------------------------------------------------------------------------- integers wider than 16 bits, signed


def test_signed_16_bit_tiff_is_refused_in_the_words_of_the_npz_of_its_values(tmp_path):
    """A CT slice in Hounsfield units (I;16S, read by Pillow as int32) was divided by 65535 and clamped: all
    below 0 HU went black. The same values in a .npz were refused; a TIFF of them is refused alike."""
    tifffile = pytest.importorskip("tifffile")
    hounsfield = (RAMP * 4095 - 1024).round().astype(np.int16)
    tifffile.imwrite(tmp_path / "ct.tif", hounsfield)
    np.savez(tmp_path / "ct.npz", train_images=np.stack([hounsfield] * 4), train_labels=np.arange(4) % 2)
    expected = ("has negative pixel values (minimum -1024, maximum 3071); expected 8-bit (0..255) or 16-bit "
                "(0..65535) images")
    with pytest.raises(DataError) as from_tiff:
        read_image(tmp_path / "ct.tif")
    with pytest.raises(DataError) as from_npz:
        load_dataset(str(tmp_path / "ct.npz"))
    assert str(from_tiff.value).startswith(f"{tmp_path / 'ct.tif'} {expected}; window or shift the values")
    assert str(from_npz.value) == f"{tmp_path / 'ct.npz'}: train_images {expected}"


def test_32_bit_integer_image_within_16_bits_reads_as_the_16_bit_file_of_its_values(tmp_path):
    values = (RAMP * 65535).round()
    Image.fromarray(values.astype(np.int32)).save(tmp_path / "i32.tif")
    Image.fromarray(values.astype(np.uint16)).save(tmp_path / "u16.png")
    torch.testing.assert_close(read_image(tmp_path / "i32.tif"), read_image(tmp_path / "u16.png"), rtol=0, atol=0)
    assert float(read_image(tmp_path / "i32.tif").max()) == 1.0


# --------------------------------------------------------------------------- read, but not in full: one warning


def test_files_of_several_frames_are_warned_about_once_per_read(tmp_path):
    """A TIFF stack or an animation gave its first frame without a word."""
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.fromarray(np.full((16, 24), 200, np.uint8)).save(tmp_path / "data" / name / "single.png")
    stack = _frames(tmp_path / "data" / "a" / "stack.tif", (50, 150, 250))
    _frames(tmp_path / "data" / "b" / "animated.png", (60, 160))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        bundle = load_dataset(str(tmp_path / "data"), size=16)
    frames = [message for message in _messages(record) if "frames" in message]
    assert frames == [f"2 file(s) hold several frames (first: {stack}); only the first is read"]
    images = torch.cat([bundle.train.images, bundle.test.images])
    assert sorted({round(float(image.mean()) * 255) for image in images}) == [50, 60, 200]  # first frames
    animation, notes = _frames(tmp_path / "animated.gif", (70, 170)), ReadNotes()
    for path in (animation, stack, tmp_path / "data" / "a" / "single.png"):  # caex explain's batches
        load_image(path, 16, 1, notes=notes)
    with pytest.warns(UserWarning, match=rf"^2 file\(s\) hold several frames \(first: {animation}\)"):
        notes.warn()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(_frames(tmp_path / "one.gif", (80,)))  # a single frame: nothing to say


def test_12_bit_data_in_16_bit_files_is_warned_about(tmp_path):
    """Scanner data of 12 bits in a 16-bit file reads at most 6% bright (4095 / 65535)."""
    for name, high in (("a", 4095), ("b", 3000), ("c", 4096), ("d", 255)):
        Image.fromarray((RAMP * high).round().astype(np.uint16)).save(tmp_path / f"{name}.png")
    with pytest.warns(UserWarning) as record:
        notes = ReadNotes()
        for name in "abcd":
            read_image(tmp_path / f"{name}.png", notes=notes)
        notes.warn()
        assert float(read_image(tmp_path / "a.png", notes=notes).max()) == pytest.approx(4095 / 65535)  # not changed
    assert _messages(record)[0].startswith("1 image(s) hold 16-bit pixels no larger than 255")  # d: 8-bit data
    assert _messages(record)[1:] == [f"2 16-bit file(s) hold values up to 4095 at most (first: {tmp_path / 'a.png'}): "
                                     "12-bit data reads at most 6% bright; stretch it to 16 bits"]


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_16_bit_colour_png_read_at_8_bits_is_warned_about(tmp_path, channels):
    """Pillow reads 16-bit RGB, RGBA and grey+alpha PNGs at 8 bits (the high byte): said, not silent."""
    values = np.dstack([RAMP * 65535] * (channels - 1) + [np.full_like(RAMP, 65535)]).round().astype(np.uint16)
    path = _png16(tmp_path / "wide.png", values)
    with pytest.warns(UserWarning, match=rf"^1 file\(s\) hold 16-bit colour or 16-bit grey with alpha, which Pillow "
                                         rf"reads at 8 bits, the high byte of each value \(first: {path}\)"):
        image = read_image(path)
    torch.testing.assert_close(image[0], torch.from_numpy(values[..., 0] >> 8).float() / 255)
    grey = tmp_path / "grey.png"
    Image.fromarray(values[..., 0]).save(grey)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(grey)  # 16-bit grey is read in full


def test_16_bit_colour_tiff_is_warned_about_not_refused(tmp_path):
    """Pillow reads it at 8 bits: 8-bit values saved so read all black, which the warning says. It refused them at
    first, and with them a blank 16-bit colour frame, all 0, which reads as it is."""
    tifffile = pytest.importorskip("tifffile")
    colour = np.dstack([RAMP, 1 - RAMP, np.full_like(RAMP, 0.5)])
    tifffile.imwrite(tmp_path / "wide.tif", (colour * 65535).round().astype(np.uint16), photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", (colour * 65535).round().astype(np.uint16).transpose(2, 0, 1),
                     photometric="rgb", planarconfig="separate")
    tifffile.imwrite(tmp_path / "narrow.tif", (colour * 255).round().astype(np.uint16), photometric="rgb")
    tifffile.imwrite(tmp_path / "blank.tif", np.zeros((16, 24, 3), np.uint16), photometric="rgb")
    for name in ("wide.tif", "planar.tif", "narrow.tif", "blank.tif"):
        check_image(tmp_path / name)
        with pytest.warns(UserWarning, match=r"^1 file\(s\) hold 16-bit colour .*: 8-bit data saved so reads all "
                                             "black; save it as 8-bit"):
            read_image(tmp_path / name)


def test_a_stack_with_a_damaged_or_undecodable_later_page_reads_its_first(tmp_path):
    """Counting the pages read every one of them: a later page Pillow cannot decode (float64) refused a file
    whose first page reads, and a damaged page table raised TypeError ("unexpected error")."""
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write((RAMP * 255).round().astype(np.uint8))
        tif.write(RAMP.astype(np.float64))
    with pytest.warns(UserWarning, match="hold several frames"):
        image = read_image(path)
    torch.testing.assert_close(image[0], torch.from_numpy(RAMP).float(), rtol=0, atol=1 / 255)


def test_12_bit_min_is_white_data_is_warned_about_as_the_min_is_black(tmp_path):
    """Inverted first, 12-bit data filled the top of the 16-bit range, read nearly white, and was not warned about."""
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "m1.tif", (RAMP * 4095).round().astype(np.uint16), photometric="miniswhite")
    with pytest.warns(UserWarning, match="hold values up to 4095 at most"):
        read_image(tmp_path / "m1.tif")


# --------------------------------------------------------------------------- polarity, orientation, formats


def test_16_bit_min_is_white_tiff_is_inverted_as_the_8_bit_one(tmp_path):
    """A MinIsWhite TIFF (DICOM MONOCHROME1) stores 0 as white: Pillow inverts it at 8 bits, not at 16."""
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "u8.tif", (RAMP * 255).round().astype(np.uint8), photometric="miniswhite")
    tifffile.imwrite(tmp_path / "u16.tif", (RAMP * 65535).round().astype(np.uint16), photometric="miniswhite")
    wide, narrow = read_image(tmp_path / "u16.tif"), read_image(tmp_path / "u8.tif")
    torch.testing.assert_close(wide[0], torch.from_numpy(1 - RAMP).float(), rtol=0, atol=1 / 65535)
    torch.testing.assert_close(wide, narrow, rtol=0, atol=1 / 255)


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_sideways_uncompressed_tiff_is_refused_and_a_compressed_one_reads_upright(tmp_path, orientation):
    """Pillow 13 decodes an uncompressed TIFF whose orientation turns it sideways into sheared noise of the stored
    shape (python-pillow/Pillow#7381); the same TIFF LZW-compressed reads as the PNG with the EXIF tag."""
    with pytest.raises(DataError, match=r"raw\.tif: Pillow reads this uncompressed TIFF with a sideways orientation "
                                        r"tag \(5-8\) scrambled; save it compressed \(e\.g\. LZW\) or without"):
        read_image(_sideways_tiff(tmp_path / "raw.tif", orientation))
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray((RAMP * 255).astype(np.uint8)).save(tmp_path / "upright.png", exif=exif)
    compressed = read_image(_sideways_tiff(tmp_path / "lzw.tif", orientation, compression="tiff_lzw"))
    assert compressed.shape == (1, 24, 16)
    torch.testing.assert_close(compressed, read_image(tmp_path / "upright.png"), rtol=0, atol=0)
    square = np.arange(16 * 16).reshape(16, 16).astype(np.uint8)  # Pillow's bug needs width != height
    Image.fromarray(square).save(tmp_path / "square.tif", tiffinfo={274: orientation})
    Image.fromarray(square).save(tmp_path / "square.png", exif=exif)
    torch.testing.assert_close(read_image(tmp_path / "square.tif"), read_image(tmp_path / "square.png"))


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_tiff_in_a_sample_format_pillow_cannot_decode_says_what_to_save_it_as(tmp_path, dtype):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "scan.tif", RAMP.astype(dtype))
    with pytest.raises(DataError, match=r"scan\.tif: cannot read image \(UnidentifiedImageError: .*\); Pillow cannot "
                                        r"decode this TIFF's sample format .*: save it as 8- or 16-bit integers, or "
                                        r"as single-channel 32-bit float in \[0, 1\]$"):
        read_image(tmp_path / "scan.tif")
    (tmp_path / "notes.tif").write_text("not a TIFF")
    with pytest.raises(DataError, match=r"notes\.tif: cannot read image \(UnidentifiedImageError: [^;]*\)$"):
        read_image(tmp_path / "notes.tif")


def test_a_folder_and_load_image_read_every_newly_handled_file_alike(tmp_path):
    """Every file gives the same tensor through load_dataset and load_image (and so caex explain)."""
    root = tmp_path / "data"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    Image.fromarray((RAMP * 65535).round().astype(np.int32)).save(root / "a" / "i32.tif")
    _frames(root / "a" / "stack.tif", (30, 130))
    _sideways_tiff(root / "a" / "lzw.tif", 6, compression="tiff_lzw")
    _png16(root / "b" / "rgb16.png", np.dstack([RAMP * 65535, (1 - RAMP) * 65535, RAMP * 30000]).astype(np.uint16))
    Image.fromarray((RAMP * 4095).round().astype(np.uint16)).save(root / "b" / "12bit.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = load_dataset(str(root), size=16, seed=0)
        assert bundle.channels == 3
        for split in (bundle.train, bundle.test):
            for image, source in zip(split.images, split.sources):
                torch.testing.assert_close(image, load_image(source, 16, 3), rtol=0, atol=0)
