"""One progress-bar factory so every long loop looks and behaves the same."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm

#: Seconds between two progress lines when stderr is a file or a pipe (a batch job's log), unless
#: ``TQDM_MININTERVAL`` says otherwise: a bar redrawn ten times a second grew such a log by megabytes an hour.
LOG_INTERVAL = 30.0


def progress(iterable: Iterable | None = None, *, desc: str, total: int | None = None,
             enabled: bool = True, unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; ``enabled=False`` (library use, tests) or ``TQDM_DISABLE=1`` keeps it silent.

    Where stderr is no terminal (and no notebook draws the bar), the bar is written as a plain line every
    :data:`LOG_INTERVAL` seconds and once at the end, without the carriage returns that made a log one endless
    line.
    """
    disabled = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    if not sys.stderr.isatty() and not _in_notebook():
        interval = kwargs.pop("mininterval", float(os.environ.get("TQDM_MININTERVAL", LOG_INTERVAL)))
        # tqdm's monitor thread redraws a bar not drawn for maxinterval (10 s): between two lines, stale ones
        kwargs = {**kwargs, "mininterval": interval, "maxinterval": interval, "file": _Lines(sys.stderr),
                  "leave": True}
    else:
        kwargs = {"file": sys.stderr, "dynamic_ncols": True, "leave": False, **kwargs}
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disabled, **kwargs)


def _in_notebook() -> bool:
    """Whether a notebook shows the bar (its stderr is no terminal either): as ``tqdm.auto``'s widget, or as the
    text bar it falls back to without ipywidgets, which a notebook redraws in place."""
    return "ipykernel" in sys.modules or any(base.__module__ == "tqdm.notebook" for base in tqdm.__mro__)


class _Lines:
    """A stream that receives tqdm's redraws (``\\r`` + the bar) and writes each as a line of its own, as long as
    it can: a log's reader that left (``2>&1 | head``, EPIPE) or a terminal that hung up (EIO) ends the bar, not
    the work (tqdm lets every error but EIO through)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream: TextIO | None = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self._attempt(lambda stream: stream.write(line + "\n"))

    def flush(self) -> None:
        self._attempt(lambda stream: stream.flush())

    def _attempt(self, action: Callable[[TextIO], object]) -> None:
        if self.stream is None:
            return
        try:
            action(self.stream)
        except OSError:
            self.stream = None  # no more lines from this bar


def close_bars() -> None:
    """Close every bar still open (its loop was left by an error or Ctrl-C), clearing its line for a message."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
