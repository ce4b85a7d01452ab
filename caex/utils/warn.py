"""Warnings blamed on the caller's own line, however deep inside caex they arise."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep  # the caex folder ("caex_scripts/" is not it)
_CONTEXTLIB = contextlib.__file__


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the first frame outside caex (a hand-counted ``stacklevel`` points inside
    caex as soon as a helper is reached by another path, or the code around it is refactored)."""
    frame, level = sys._getframe(1), 2  # level 2: warn()'s caller
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                 or frame.f_code.co_filename == _CONTEXTLIB):  # a caex ``with`` block's exit
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
