"""Matplotlib settings every caex figure is drawn with, and how figures become PNG files."""

from __future__ import annotations

import functools
import io
import os
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np

from caex.utils.io import atomic_write_bytes

if TYPE_CHECKING:
    import torch
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: How ground-truth lesion masks are outlined in every figure: a green that stands out on grey scans and on the
#: red lesions of fundus and skin photographs alike (red outlines vanished on those), and on the saliency maps
#: (inferno has no green); a dark halo keeps it apart from inferno's pale yellow peaks (see :func:`outline_mask`).
MASK_COLOUR = "lime"
#: How figures name the outline: by its look, not its colour, as to deuteranopes lime looks like inferno's yellow.
MASK_LEGEND = "lesion outlined (light line, dark edge)"
#: Saliency maps are drawn in a perceptually uniform map whose brightness rises with saliency: jet's darkest
#: blue and red look alike in grey and to colour-blind readers.
SALIENCY_COLORMAP = "inferno"
#: Opacity of the most salient pixels; a pixel's opacity scales with its saliency, so where a map is zero the
#: image shows as it is (a constant opacity tinted a zero map dark blue, and turned red fundus images purple).
SALIENCY_ALPHA = 0.7
#: Characters per line of a wrapped row label (a class name, "A → B").
LABEL_WIDTH = 20

P = ParamSpec("P")
R = TypeVar("R")


def literal_text(function: Callable[P, R]) -> Callable[P, R]:
    """Draw ``function``'s figures with math text off: a class named ``$a$`` shows as typed, not as TeX, and
    one named ``$\\nosuch$`` no longer crashes the figure.

    Wraps building and saving alike (tick labels and legends are laid out when saved), and only for the
    call, so the user's own matplotlib settings are left as they were.
    """
    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        import matplotlib  # lazily: importing caex.utils must not load matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return function(*args, **kwargs)

    return wrapper


def rgb_array(images: torch.Tensor) -> np.ndarray:
    """Data-range images ``[..., C, H, W]`` (C = 1 or 3) as float32 RGB ``[..., H, W, 3]`` in [0, 1], as
    :func:`saliency_blend` and matplotlib take them: a grey image in three equal channels."""
    images = images.detach().float().clamp(0, 1)[..., :3, :, :]
    return images.expand(*images.shape[:-3], 3, *images.shape[-2:]).movedim(-3, -1).cpu().numpy()


def saliency_blend(image: np.ndarray, saliency: np.ndarray, *, alpha: float = SALIENCY_ALPHA,
                   colormap: str = SALIENCY_COLORMAP) -> np.ndarray:
    """``image`` ``[..., H, W, 3]`` in [0, 1] with the ``[..., H, W]`` saliency map laid over it in ``colormap``,
    each pixel ``alpha`` times its saliency opaque: the one overlay of ``caex explain`` and the evaluation's gallery
    (a batch of images and their maps at once)."""
    from matplotlib import colormaps

    weight = np.nan_to_num(np.clip(saliency, 0, 1), nan=0.0)  # a NaN map shows the image, not a black hole
    heat = colormaps[colormap](weight)[..., :3]
    weight = alpha * weight[..., None]
    return (1 - weight) * image + weight * heat


def outline_mask(axes: Axes, mask: np.ndarray) -> None:
    """Outline a lesion mask in :data:`MASK_COLOUR` with a dark halo, which keeps it visible on any image or map."""
    from matplotlib import patheffects

    contours = axes.contour(mask.astype(float), levels=[0.5], colors=MASK_COLOUR, linewidths=1.0)
    contours.set_path_effects([patheffects.withStroke(linewidth=2.6, foreground="black")])


def wrap_label(text: str, width: int = LABEL_WIDTH) -> str:
    """``text`` wrapped to lines of ``width`` characters: a long class name stays within its row of a figure."""
    return textwrap.fill(text, width, break_on_hyphens=False)


def text_inches(texts: Iterable[str], fontsize: float) -> float:
    """The width of the widest line of ``texts`` at ``fontsize`` points, in inches: the room a figure makes for
    its labels (measured with the glyphs, so wide letters are not underestimated)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    measure, font = TextToPath(), FontProperties(size=fontsize)
    return max((measure.get_text_width_height_descent(line, font, ismath=False)[0]
                for text in texts for line in text.splitlines()), default=0.0) / 72


def figure_png(figure: Figure, dpi: int = 110, **savefig: Any) -> bytes:
    """PNG bytes of a matplotlib ``Figure`` built with the object-oriented API (no global pyplot state)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, **savefig)
    return buffer.getvalue()


def save_figure(path: str | os.PathLike, figure: Figure, dpi: int = 110) -> Path:
    """Render ``figure`` to a PNG file atomically."""
    return atomic_write_bytes(path, figure_png(figure, dpi))
