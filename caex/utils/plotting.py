"""Matplotlib settings every caex figure is drawn with."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

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
