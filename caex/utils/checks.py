"""Checks of the numbers that settings hold (counts, seeds, rates), one message for every API that takes them;
:func:`check_number_fields` also stores NumPy numbers as Python ones."""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections.abc import Mapping

from caex.errors import CaexError


#: The largest seed that every generator caex seeds takes (numpy's and torch's among them).
MAX_SEED = 2**32 - 1


def check_seed(seed: object, error: type[CaexError] = CaexError, prefix: str = "") -> None:
    """Raise ``error`` for a seed a generator would refuse: numpy a negative one, torch one past 64 bits, each
    after work had begun; ``prefix`` goes before its name (``"lime: "``)."""
    if not is_whole_number(seed) or not 0 <= seed <= MAX_SEED:  # type: ignore[operator]
        raise error(f"{prefix}seed={seed!r}: must be a whole number from 0 to {MAX_SEED}")


def check_positive_finite(name: str, value: object, error: type[CaexError] = CaexError) -> None:
    """Raise ``error`` unless ``value`` is a number above 0 and below infinity (a learning rate, say): a string
    or a bool failed in a comparison, NaN and inf trained to NaN weights."""
    # The number on the left: type checkers know numbers.Real's comparisons, not int's with a Real. NaN fails too.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0 or not value < math.inf:
        raise error(f"{name}={value!r}: must be a positive finite number")


def check_share(name: str, value: object, error: type[CaexError] = CaexError, *, none_allowed: bool = False) -> None:
    """Raise ``error`` unless ``value`` is a share of a whole in (0, 1] (or ``None`` where that is allowed): 0
    selected nothing, and 5 or 10, read as a percentage, the whole image."""
    if none_allowed and value is None:
        return
    # The number on the left, as in check_positive_finite; NaN fails too
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0 or not value <= 1:
        raise error(f"{name}={value!r}: must be in (0, 1]" + (" or None" if none_allowed else ""))


def is_whole_number(value: object) -> bool:
    """An integer (a NumPy one too, as a sweep over ``np.arange`` gives) that is no ``bool``: ``10.0``, ``"10"``
    and ``True`` pass ``int()`` and then fail deep inside torch, a loop or numpy, after work has begun."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_counts(counts: Mapping[str, object], least: Mapping[str, int] | int,
                 error: type[CaexError] = CaexError, prefix: str = "") -> None:
    """Raise ``error`` naming the first of ``counts`` that is not a whole number of at least ``least[name]`` (or
    ``least``, one limit for all); ``prefix`` goes before its name, e.g. ``"CAEConfig."``."""
    for name, value in counts.items():
        minimum = least if isinstance(least, int) else least[name]
        if not is_whole_number(value) or value < minimum:  # type: ignore[operator]
            raise error(f"{prefix}{name}={value!r}: must be a whole number, at least {minimum}")


def check_number_fields(settings: object, error: type[CaexError], prefix: str = "") -> None:
    """Raise ``error`` naming the first field of the dataclass ``settings`` annotated ``int`` that holds no whole
    number, or ``float`` no number (``lr="1e-3"`` failed in a comparison); ``prefix`` goes before its name, e.g.
    ``"CAEConfig."``. NumPy numbers are stored as Python ones, which JSON writes."""
    for item in dataclasses.fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, item.name)
        if value is None and item.type in ("int | None", "float | None"):
            continue
        if item.type in (int, "int", "int | None"):
            if not is_whole_number(value):
                raise error(f"{prefix}{item.name}={value!r}: must be a whole number")
            object.__setattr__(settings, item.name, operator.index(value))  # frozen dataclasses too
        elif item.type in (float, "float", "float | None"):
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not _fits_a_float(value):
                raise error(f"{prefix}{item.name}={value!r}: must be a number")
            object.__setattr__(settings, item.name, float(value))


def _fits_a_float(value: numbers.Real) -> bool:
    """Whether ``float(value)`` works: an int of 10**400 has no float."""
    try:
        float(value)
    except OverflowError:
        return False
    return True


def check_registry_name(name: object, registry: Mapping[str, object], entry: object, *, what: str, replace: bool,
                        error: type[CaexError] = CaexError) -> None:
    """Refuse a registry ``name`` (of ``what``: "architecture", say) that is no lower-case Python identifier, or
    that names another entry than ``entry`` unless ``replace``: the same entry again is a rerun notebook cell."""
    if not (isinstance(name, str) and name.isidentifier() and name == name.lower()):
        raise error(f"{what} {name!r}: its name must be a lower-case Python identifier, e.g. 'tiny_vgg'")
    if name in registry and registry[name] is not entry and not replace:
        raise error(f"{what} {name!r}: the name is registered already; choose another, or pass replace=True")

