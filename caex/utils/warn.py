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
def warnings_deferred(category: type[Warning]) -> Iterator[None]:
    """Hold back the block's warnings of ``category`` and give them after it, under the caller's filters: one
    turned into an error (``PYTHONWARNINGS=error``, pytest's ``filterwarnings = error``) stopped a training run
    before its network was saved, where the block ends by saving it. Should the block fail, they are shown as
    they are, not lost; warnings of other categories pass as usual."""
    held: dict[tuple[str, type[Warning], str, int], Warning | str] = {}  # once each, as a "default" filter would
    with warnings.catch_warnings():
        shown = warnings.showwarning

        def hold(message, kind, filename, lineno, file=None, line=None):  # warnings.showwarning's signature
            if issubclass(kind, category):
                held.setdefault((str(message), kind, filename, lineno), message)
            else:
                shown(message, kind, filename, lineno, file, line)

        warnings.filterwarnings("always", category=category)  # every one reaches hold(); filters judge them after
        warnings.showwarning = hold
        try:
            yield
        except BaseException:
            for (_, kind, filename, lineno), message in held.items():
                shown(message, kind, filename, lineno)
            raise
    for (_, kind, filename, lineno), message in held.items():
        module = _module_name(filename)  # an explicit None, unlike none given, made the C version ignore filters
        warnings.warn_explicit(message, kind, filename, lineno, **({} if module is None else {"module": module}))


def _module_name(filename: str) -> str | None:
    """``caex.classifier.train`` for that file: a filter by module (``-W ignore:::caex.classifier.train``) that
    matched the warning as given matches it re-emitted."""
    if not filename.startswith(_PACKAGE) or not filename.endswith(".py"):
        return None
    parts = ["caex", *Path(filename[len(_PACKAGE):-3]).parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
