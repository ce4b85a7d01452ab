"""Type checks for the JSON files the report reads: a value of the wrong type reads as missing.

A run folder may be hand-edited or written by another version, and the report
promises to show what it can rather than fail. So each file is passed through
its schema once, where it is read, and the section code can trust the type of
whatever is left instead of guarding every access.

A schema is written with Python's own types:

* ``str``, ``bool``, ``int`` (not a bool), ``float`` (any real number, not a bool;
  NaN is kept, the readings skip it) and ``None`` (JSON null);
* a tuple of schemas: any one of them, e.g. ``(float, None)``;
* ``[item]``: a list of ``item``. In a list of objects the rows are independent,
  so a bad row is dropped alone; in a list of plain values position ``k`` means
  class ``k``, so one bad value drops the whole list;
* ``{key: schema, ...}``: an object with these keys, each kept only if it conforms
  (keys not listed are dropped: nothing unchecked reaches the page);
* ``{str: schema}``: an object with any keys, e.g. ``{class name: share}``.
"""

from __future__ import annotations

from typing import Any

Schema = Any  # a type, None, a tuple, a one-item list or a dict, as described above

#: What fails a check; ``None`` cannot be used, as JSON null is a value a schema may allow.
_MISSING = object()


def conform(value: Any, schema: Schema) -> Any:
    """``value`` with every part that does not match ``schema`` left out, or ``None`` if ``value`` itself does not."""
    result = _conform(value, schema)
    return None if result is _MISSING else result


def _conform(value: Any, schema: Schema) -> Any:
    if isinstance(schema, tuple):
        return next((result for option in schema if (result := _conform(value, option)) is not _MISSING), _MISSING)
    if isinstance(schema, list):
        return _conform_list(value, schema[0])
    if isinstance(schema, dict):
        return _conform_object(value, schema)
    if not _is_instance(value, schema):
        return _MISSING
    if schema is not float:
        return value
    try:  # a float the file wrote as 0 (jq, JavaScript and spreadsheets re-save 0.0 so) printed "0" beside "0.000"
        return float(value)
    except OverflowError:  # an integer of hundreds of digits: a damaged file's, read as missing
        return _MISSING


def _is_instance(value: Any, kind: type | None) -> bool:
    """``isinstance`` where a bool is neither an int nor a number (``True`` is not 1 iteration)."""
    if kind is None:
        return value is None
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _conform_list(value: Any, item: Schema) -> Any:
    if not isinstance(value, list):
        return _MISSING
    results = [_conform(element, item) for element in value]
    if isinstance(item, dict):
        return [result for result in results if result is not _MISSING]
    return _MISSING if any(result is _MISSING for result in results) else results


def _conform_object(value: Any, fields: dict[Any, Schema]) -> Any:
    if not isinstance(value, dict):
        return _MISSING
    if str in fields:  # any keys, one schema for every value
        checked = {key: _conform(element, fields[str]) for key, element in value.items()}
    else:
        checked = {key: _conform(value[key], schema) for key, schema in fields.items() if key in value}
    return {key: result for key, result in checked.items() if result is not _MISSING}
