"""The one rule of ``increment`` (API.md section 2) every backend answers with, so its
results, their JSON text (orjson's) and its refusals are identical everywhere."""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import Unprocessable

#: Integers are exact in every backend below 2**53 in magnitude (Lua computes in doubles).
MAX_EXACT_INT = 2**53


def number_to_increment(key: str, value: bytes | int | float) -> int | float:
    """The number an increment starts from (a key's JSON value, or ``initial``); 422 for
    anything else, named as every backend names it."""
    start: Any = orjson.loads(value) if isinstance(value, bytes) else value
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise Unprocessable(
            f"Key {key!r} holds {describe(start)}, not a number; it cannot be incremented."
        )
    return start


def add_exact(start: int | float, by: int | float) -> int | float:
    """``start + by``, refused where a backend could not represent the result exactly.

    Integers (value, ``by`` and result) must stay below 2**53 in magnitude; otherwise the
    sum is a double, and a non-finite one is refused. Every backend answers with this
    function, so results, their JSON text (orjson's) and refusals are identical."""
    if isinstance(start, int) and isinstance(by, int):
        result: int | float = start + by
        if max(abs(start), abs(by), abs(result)) >= MAX_EXACT_INT:
            raise Unprocessable(
                "The value, the increment or the result is outside the exactly representable "
                "integer range (|n| < 2**53)."
            )
        return result
    try:
        result = float(start) + float(by)
    except OverflowError as exc:  # an integer too large for a double
        raise Unprocessable("The increment is not a finite number.") from exc
    if result != result or result in (float("inf"), float("-inf")):
        raise Unprocessable("The result of the increment is not a finite number.")
    return result


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
