"""Checks of the whole numbers that settings hold, one message for every API that takes them."""

from __future__ import annotations

import dataclasses
import numbers
import operator
from collections.abc import Mapping

from caex.errors import CaexError


def is_whole_number(value: object) -> bool:
    """An integer (a NumPy one too, as a sweep over ``np.arange`` gives) that is no ``bool``: ``10.0``, ``"10"``
    and ``True`` pass ``int()`` and then fail deep inside torch, a loop or numpy, after work has begun."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_counts(counts: Mapping[str, object], least: Mapping[str, int],
                 error: type[CaexError] = CaexError) -> None:
    """Raise ``error`` naming the first of ``counts`` that is not a whole number of at least ``least[name]``."""
    for name, value in counts.items():
        if not is_whole_number(value) or value < least[name]:  # type: ignore[operator]
            raise error(f"{name}={value!r}: must be a whole number, at least {least[name]}")


def check_int_fields(settings: object, error: type[CaexError], prefix: str = "") -> None:
    """Raise ``error`` naming the first field of the dataclass ``settings`` annotated ``int`` that holds no whole
    number (``prefix`` goes before its name, e.g. ``"CAEConfig."``); a NumPy integer is stored as an ``int``, which
    JSON writes."""
    for item in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, item.name)
        if item.type not in (int, "int"):
            continue
        if not is_whole_number(value):
            raise error(f"{prefix}{item.name}={value!r}: must be a whole number")
        object.__setattr__(settings, item.name, operator.index(value))  # frozen dataclasses too
