"""Matplotlib settings every caex figure is drawn with, and how figures become PNG files."""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from caex.utils.io import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: How ground-truth lesion masks are outlined in every figure: a green that stands out on grey scans and on the
#: red lesions of fundus and skin photographs alike (red outlines vanished on those).
MASK_COLOUR = "lime"

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


def figure_png(figure: Figure, dpi: int = 110, **savefig: Any) -> bytes:
    """PNG bytes of a matplotlib ``Figure`` built with the object-oriented API (no global pyplot state)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, **savefig)
    return buffer.getvalue()


def save_figure(path: str | os.PathLike, figure: Figure, dpi: int = 110) -> Path:
    """Render ``figure`` to a PNG file atomically."""
    return atomic_write_bytes(path, figure_png(figure, dpi))
