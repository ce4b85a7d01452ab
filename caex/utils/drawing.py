"""Text on Pillow pictures: the one font, one-line and wrapped text, and the band of text beside a picture that
``caex explain``'s overlays, strips and GIFs and the training's sample grids are captioned with.

They draw with Pillow alone: matplotlib, which ships the font, is imported only when a font is first asked for.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from caex.data.types import is_line_breaking, readable

TEXT_COLOUR = (20, 20, 20)
BACKGROUND = (255, 255, 255)
#: Pixels between a band's text and the band's edges, and between its lines.
MARGIN = 4
#: The smallest font size of any caption, in pixels: below it DejaVu Sans is hard to read.
MIN_FONT_SIZE = 10


@functools.lru_cache(maxsize=8)
def caption_font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, shipped with matplotlib: Pillow's built-in font has ASCII only, so a class named
    ``drüsen`` or a file named ``Ödem.png`` would be captioned with boxes. Read once per size, not per picture."""
    from matplotlib import get_data_path  # lazily: importing this module must not load matplotlib

    return ImageFont.truetype(str(Path(get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def scaled_font(pixels: int, scale: int) -> ImageFont.FreeTypeFont:
    """:func:`caption_font` at ``1 / scale`` of ``pixels`` (a frame's side, a row's height), so captions grow with
    the pictures they name, and at least :data:`MIN_FONT_SIZE`."""
    return caption_font(max(MIN_FONT_SIZE, pixels // scale))


def one_line(text: str) -> str:
    """``text`` as a single line: runs of whitespace and control characters (a newline in a class or file name)
    become one space, since Pillow's text layout fails on them (``raqm_layout() failed``); see :func:`readable`."""
    return " ".join("".join(" " if is_line_breaking(char) else char for char in readable(text)).split())


def wrap_to(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """``text`` broken between words into lines at most ``width`` pixels long; a longer word is cut where it
    reaches the width (folder-derived class names are often one word, ``diabetic_retinopathy_grade_4``)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines += _cut(word, font, width)
    return lines


def _cut(word: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """``word`` in pieces at most ``width`` pixels long, one character at least each."""
    pieces = [""]
    for char in word:
        if pieces[-1] and font.getlength(pieces[-1] + char) > width:
            pieces.append(char)
        else:
            pieces[-1] += char
    return pieces


def banded(picture: Image.Image, texts: Sequence[str], font: ImageFont.FreeTypeFont, *,
           row_centres: Sequence[int] | None = None, wrap_width: float | None = None) -> Image.Image:
    """``picture`` with ``texts`` (each made :func:`one_line`) in a band as wide or tall as their longest: on top,
    one line under another (a title; the canvas widens to the longest line, so a narrow picture does not crop it),
    or with ``row_centres`` on the left, each right-aligned at the height of its row (a grid's row names; with
    ``wrap_width``, a name longer than that is wrapped between words, so a long class name does not make the band
    wider than the grid). Without texts, ``picture`` as it is."""
    texts = [one_line(text) for text in texts]
    if not texts:
        return picture
    if row_centres is not None and wrap_width is not None:
        texts = ["\n".join(wrap_to(text, font, wrap_width - 2 * MARGIN)) for text in texts]
    widest = 2 * MARGIN + math.ceil(max(font.getlength(line) for text in texts for line in text.split("\n")))
    if row_centres is None:
        line_height = math.ceil(font.size) + MARGIN  # a font's size may be fractional; a canvas's may not
        offset = (0, line_height * len(texts) + MARGIN)
        size = (max(picture.width, widest), picture.height + offset[1])
        places = [((MARGIN, MARGIN + number * line_height), "la") for number in range(len(texts))]
    else:
        offset = (widest, 0)
        size = (picture.width + widest, picture.height)
        places = [((widest - MARGIN, centre), "rm") for centre in row_centres]
    canvas = Image.new("RGB", size, BACKGROUND)
    canvas.paste(picture.convert("RGB"), offset)
    draw = ImageDraw.Draw(canvas)
    for text, (position, anchor) in zip(texts, places, strict=True):
        draw.multiline_text(position, text, fill=TEXT_COLOUR, font=font, anchor=anchor, align="right", spacing=MARGIN)
    return canvas
