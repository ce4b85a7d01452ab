"""One progress-bar factory so every long loop looks and behaves the same."""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm.auto import tqdm

from caex.streams import BestEffortStream

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
    return _Bar(iterable, desc=desc, total=total, unit=unit, disable=disabled, **kwargs)


class _Bar(tqdm):
    """``tqdm.auto``'s bar with a lock of its own. tqdm's first bar, even a disabled one, makes the class's lock with
    ``multiprocessing.RLock()``, which fixes the process's start method (a caller's later
    ``set_start_method("spawn")`` failed), and any process lock caex chose would be the one tqdm's ``process_map``
    hands to the caller's workers. caex's bars are drawn by one process, so a thread lock serves them."""


_Bar.set_lock(threading.RLock())


def _in_notebook() -> bool:
    """Whether a notebook shows the bar (its stderr is no terminal either): as ``tqdm.auto``'s widget, or as the
    text bar it falls back to without ipywidgets, which a notebook redraws in place."""
    return "ipykernel" in sys.modules or any(base.__module__ == "tqdm.notebook" for base in tqdm.__mro__)


#: The terminal code tqdm writes to move back up to a bar drawn below another (``ESC [ A``, ``ESC [ 2 A``).
CURSOR_UP = re.compile(r"\x1b\[\d*A")


class _Lines:
    """A stream that receives tqdm's redraws (``\\r`` + the bar) and writes each as a line of its own while the
    stream takes them: one that is gone (:class:`~caex.streams.BestEffortStream`) ends the bar, not the work (tqdm
    lets every error but EIO through)."""

    def __init__(self, stream: TextIO) -> None:
        # the CLI's stderr is one already: a second would never see an error
        self.stream = stream if isinstance(stream, BestEffortStream) else BestEffortStream(stream)

    def write(self, text: str) -> None:
        # a bar below another (bars of several threads) is placed by moving the cursor up: no line's business
        line = CURSOR_UP.sub("", text.replace("\r", "")).strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def close_bars() -> None:
    """Close every bar still open (its loop was left by an error or Ctrl-C), clearing its line for a message."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
