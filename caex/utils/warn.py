"""Warnings blamed on the caller's own line, however deep inside caex they arise."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import torch.utils._contextlib

from caex.utils.device import torchrun_rank
from caex.utils.locks import ForkSafeLock

_PACKAGE = os.path.normcase(os.path.realpath(Path(__file__).parents[1])) + os.sep  # caex ("caex_scripts/" is not)
#: Frames between caex and its caller that are no caller's: a caex ``with`` block's exit, and the wrapper of
#: a ``@torch.no_grad()`` method.
_WRAPPERS = frozenset({contextlib.__file__, torch.utils._contextlib.__file__})


#: Held by caex's own :func:`quiet` blocks, one at a time (:func:`warnings.catch_warnings` is process-wide).
_FILTERS_LOCK = ForkSafeLock()


@contextlib.contextmanager
def quiet(category: type[Warning] = Warning) -> Iterator[None]:
    """Ignore ``category`` while the block runs (a library's deprecation notice caex cannot act on). The filters are
    the process's: two threads leaving ``catch_warnings`` out of order left one's ignore filter for good, so caex's
    blocks take turns (a caller's own ``catch_warnings`` in another thread is theirs)."""
    with _FILTERS_LOCK.lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", category)
        yield


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` pointing at the first frame outside caex (a hand-counted ``stacklevel`` points inside
    caex as soon as a helper is reached by another path, or the code around it is refactored). Under ``torchrun``
    rank 0 alone warns: every rank runs the same checks, and a job would say each thing once per process."""
    if torchrun_rank():
        return
    frame: FrameType | None = sys._getframe(1)
    level = 2  # warn()'s caller
    while frame is not None and (_in_caex(frame.f_code.co_filename) or frame.f_code.co_filename in _WRAPPERS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


@functools.cache
def _in_caex(filename: str) -> bool:
    """Whether code from ``filename`` is caex's own: a code object's file is the path as imported, so caex imported
    through a symlinked folder (``PYTHONPATH=~/link``) is compared by its real path, as ``_PACKAGE`` is (once per
    file)."""
    return not filename.startswith("<") and os.path.normcase(os.path.realpath(filename)).startswith(_PACKAGE)


@contextlib.contextmanager
def warnings_deferred(category: type[Warning]) -> Iterator[None]:
    """Hold back the block's warnings of ``category`` and give them after it, once each, under the caller's
    filters: one turned into an error (``PYTHONWARNINGS=error``, pytest's ``filterwarnings = error``) stopped a
    training run before its network was saved, where the block ends by saving it. Should the block fail, they
    are given all the same, an error filter's shown rather than raised (the block's own error is the one to
    raise). Warnings of other categories pass as usual."""
    held: dict[tuple[str, type[Warning], str, int], tuple[Warning, str | None]] = {}
    shown = warnings.showwarning

    def hold(message, kind, filename, lineno, file=None, line=None):  # warnings.showwarning's signature
        if issubclass(kind, category):
            # a text handed to showwarning itself is held as the Warning that warnings.warn would make of it
            warning = message if isinstance(message, Warning) else kind(message)
            held.setdefault((str(message), kind, filename, lineno), (warning, _module_of(filename, lineno)))
        else:
            shown(message, kind, filename, lineno, file, line)

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("always", category=category)  # every one reaches hold(); filters judge after
            warnings.showwarning = hold
            yield
    except BaseException:
        for (_, kind, filename, lineno), (message, module) in held.items():
            try:
                _give(message, kind, filename, lineno, module)
            except Warning:
                shown(message, kind, filename, lineno)
        raise
    for (_, kind, filename, lineno), (message, module) in held.items():
        _give(message, kind, filename, lineno, module)


def _module_of(filename: str, lineno: int) -> str | None:
    """The module name of the frame a held warning is blamed on, for filters by module (``-W ignore:::mine``)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename, frame.f_lineno) != (filename, lineno):
        frame = frame.f_back
    return None if frame is None else frame.f_globals.get("__name__")


def _give(message: Warning, kind: type[Warning], filename: str, lineno: int, module: str | None) -> None:
    """``warnings.warn_explicit``, naming ``module`` where known: an explicit ``module=None``, unlike none given,
    made the C version ignore an error filter."""
    if module is None:
        warnings.warn_explicit(message, kind, filename, lineno)
    else:
        warnings.warn_explicit(message, kind, filename, lineno, module=module)
