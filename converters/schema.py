"""The one field checker of the converters' JSON reports (conversion and evaluation).

A field spec maps each required key to a JSON type or a tuple of them; booleans are
not numbers unless ``bool`` is listed, and a float must be finite (the reports are
written with ``allow_nan=False``, and a NaN would mean a measurement went wrong).
"""

from __future__ import annotations

import math

from .errors import ConversionError

__all__ = ["check_fields", "NUM", "OPT_NUM", "OPT_DICT", "OPT_STR"]

NUM = (int, float)
OPT_NUM = (int, float, type(None))
OPT_DICT = (dict, type(None))
OPT_STR = (str, type(None))


def check_fields(obj, fields: dict, where: str, report: str = "report") -> None:
    """Raise ConversionError naming ``report`` and ``where.key`` if ``obj`` lacks a field of
    ``fields``, has one of another type, or holds a non-finite float in one."""
    if not isinstance(obj, dict):
        raise ConversionError(f"{report}: {where} must be an object")
    for key, types in fields.items():
        if key not in obj:
            raise ConversionError(f"{report}: {where}.{key} is missing")
        v = obj[key]
        tt = types if isinstance(types, tuple) else (types,)
        if isinstance(v, bool) and bool not in tt:
            raise ConversionError(f"{report}: {where}.{key} is a boolean, expected {types}")
        if not isinstance(v, tt):
            raise ConversionError(f"{report}: {where}.{key} has type {type(v).__name__}, expected {types}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConversionError(f"{report}: {where}.{key} is not finite")
