"""Warnings blamed on the caller's own line, however deep inside caex they arise."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch.utils._contextlib

from caex.utils.device import torchrun_rank

_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep  # the caex folder ("caex_scripts/" is not it)
#: Frames between caex and its caller that are no caller's: a caex ``with`` block's exit, and the wrapper of
#: a ``@torch.no_grad()`` method.
_WRAPPERS = frozenset({contextlib.__file__, torch.utils._contextlib.__file__})


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the first frame outside caex (a hand-counted ``stacklevel`` points inside
    caex as soon as a helper is reached by another path, or the code around it is refactored). Under ``torchrun``
    rank 0 alone warns: every rank runs the same checks, and a job would say each thing once per process."""
    if torchrun_rank():
        return
    frame, level = sys._getframe(1), 2  # level 2: warn()'s caller
    while frame is not None and (frame.f_code.co_filename.startswith(_PACKAGE)
                                 or frame.f_code.co_filename in _WRAPPERS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


@contextlib.contextmanager
def warnings_deferred() -> Iterator[None]:
    """Hold back the warnings of the block and give them after it, under the caller's filters: a warning turned
    into an error (``PYTHONWARNINGS=error``, pytest's ``filterwarnings = error``) stopped a training run before its
    network was saved, where the block ends with saving it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every one is kept; the caller's filters judge them after the block
        yield
    for caught_warning in caught:
        warnings.warn_explicit(caught_warning.message, caught_warning.category, caught_warning.filename,
                               caught_warning.lineno, source=caught_warning.source)
