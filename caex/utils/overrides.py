"""``KEY=VALUE`` command-line overrides of a configuration dataclass's fields."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from caex.errors import CaexError

#: Field annotations (as strings, under ``from __future__ import annotations``) that can be overridden.
CONVERTERS = {"int": (int, "an integer"), "float": (float, "a number"), "str": (str, "text")}


def parse_field_overrides(cls: type, pairs: Iterable[str], *, option: str, error: type[CaexError] = CaexError,
                          exclude: Iterable[str] = ()) -> dict[str, Any]:
    """``["n_res=3", "class-pool=max"]`` -> ``{"n_res": 3, "class_pool": "max"}``, typed by ``cls``'s fields.

    Only int, float and str fields outside ``exclude`` can be set. A malformed pair, an unknown key or an
    unconvertible value raises ``error`` with one line prefixed by ``option`` (the flag the user typed);
    the values themselves are checked when the dataclass is built.
    """
    excluded = set(exclude)
    types = {field.name: field.type for field in dataclasses.fields(cls)
             if field.name not in excluded and field.type in CONVERTERS}
    overrides = {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not separator or key not in types:
            raise error(f"{option} {pair!r}: expected KEY=VALUE with KEY one of {', '.join(types)}")
        overrides[key] = typed_value(text, types[key], what=f"{option} {pair!r}: {key}", error=error)
    return overrides


def typed_value(text: str, annotation: str, *, what: str, error: type[CaexError] = CaexError) -> Any:
    """``text`` as the ``annotation`` (a key of :data:`CONVERTERS`) says, or ``error`` "``what`` must be ..."."""
    convert, kind = CONVERTERS[annotation]
    try:
        return convert(text.strip())
    except ValueError:
        raise error(f"{what} must be {kind}") from None
