"""One progress-bar factory so every long loop looks and behaves the same."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress(iterable: Iterable | None = None, *, desc: str, total: int | None = None,
             enabled: bool = True, unit: str = "it", **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr; ``enabled=False`` (library use, tests) keeps it silent."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled,
                file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)


def close_bars() -> None:
    """Close every bar still open (its loop was left by an error or Ctrl-C), clearing its line for a message."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
