"""Typed session variables (API.md section 5): the types, their constraints, and the
checks both backends run on every write before the atomic step, in one pure module.

A definition (type + constraints) is checked once, at registration or import
(``check_definition``: 422 ``validation_failed``); every value written is checked against
it (``check_value``: a ``VariableError`` that the caller turns into 422
``constraint_violation``). Messages name the variable, the value and the constraint in
plain words. Values are stored exactly as given (a float variable keeps an integer 2 as 2).
"""

from __future__ import annotations

import functools
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import re2

from app.errors import InvalidConstraint, InvalidKey, Unprocessable
from app.patching import json_equal
from app.syntax import VARIABLE_NAME_RE

VARIABLE_TYPES = ("float", "integer", "string", "boolean", "choice", "embedding", "tensor", "json")

#: The constraints each type takes; anything else is refused at registration.
CONSTRAINTS: dict[str, tuple[str, ...]] = {
    "float": ("min", "max"),
    "integer": ("min", "max"),
    "string": ("min_length", "max_length", "pattern"),
    "boolean": (),
    "choice": ("choices",),
    "embedding": ("dimensions",),
    "tensor": ("shape",),
    "json": (),
}

ID_PREFIX = "var_"
ID_RE = re.compile(r"var_[A-Za-z0-9_.\-]{1,124}")
MAX_PATTERN_LENGTH = 1000
MAX_DESCRIPTION_LENGTH = 4096
_TENSOR_KEYS = frozenset({"shape", "data", "dtype"})


@functools.lru_cache(maxsize=1024)
def compile_pattern(pattern: str) -> Any:
    """A string constraint's pattern compiled by RE2: matching takes time linear in the
    value, whatever the pattern (no backtracking; no backreferences or lookaround).
    Raises ``re2.error`` for a pattern RE2 cannot compile."""
    return re2.compile(pattern, _RE2_OPTIONS)


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a client's bad pattern is its answer, not a log line


def check_name(name: str) -> str:
    """A variable name: 1-128 of [A-Za-z0-9_.-], not starting with 'var_' (ids do)."""
    if not isinstance(name, str) or not VARIABLE_NAME_RE.fullmatch(name):
        raise InvalidKey(
            f"Variable name {str(name)[:80]!r} is not valid: use 1-128 of "
            "letters, digits and _ . -."
        )
    if name.startswith(ID_PREFIX):
        raise InvalidKey(
            f"Variable name {name!r} may not start with {ID_PREFIX!r}: that prefix marks ids."
        )
    return name


def check_ident(ident: str) -> str:
    """A ``{var}`` path segment: a variable's name or its id."""
    if ident.startswith(ID_PREFIX):
        if not ID_RE.fullmatch(ident):
            raise InvalidKey(f"Variable id {ident[:80]!r} is not valid.")
        return ident
    return check_name(ident)


def is_id(ident: str) -> bool:
    return ident.startswith(ID_PREFIX)


def new_variable_id() -> str:
    """An opaque id: 'var_' and 16 random hex digits."""
    return ID_PREFIX + secrets.token_hex(8)


# -- definitions -----------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _definition_error(name: str, message: str, field: str) -> Unprocessable:
    return Unprocessable(
        f"Variable {name!r}: {message}",
        code="validation_failed",
        errors=[{"variable": name, "location": ["body", *field.split(".")], "message": message}],
    )


def check_definition(name: str, type_: Any, constraints: Any) -> dict[str, Any]:
    """Check a type and its constraints; returns the constraints (``{}`` when absent).

    Raises 422 ``validation_failed`` for an unknown type, a constraint the type does not
    take, a missing ``choices``, a bad regular expression or inconsistent bounds.
    """
    if type_ not in CONSTRAINTS:
        raise _definition_error(
            name,
            f"type {type_!r} is not a variable type; use one of {', '.join(VARIABLE_TYPES)}.",
            "type",
        )
    if constraints is None:
        constraints = {}
    if not isinstance(constraints, dict):
        raise _definition_error(name, "constraints must be a JSON object.", "constraints")
    allowed = CONSTRAINTS[type_]
    for key in constraints:
        if key not in allowed:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no constraints"
            raise _definition_error(
                name,
                f"constraint {key!r} does not apply to a {type_} variable (a {type_} {takes}).",
                f"constraints.{key}",
            )

    def bad(key: str, what: str) -> Unprocessable:
        return _definition_error(name, f"constraint {key} must be {what}.", f"constraints.{key}")

    if type_ in ("float", "integer"):
        for key in ("min", "max"):
            if key in constraints and not _is_number(constraints[key]):
                raise bad(key, "a number")
        lo, hi = constraints.get("min"), constraints.get("max")
        if lo is not None and hi is not None and lo > hi:
            raise bad("min", f"at most max ({hi}), not {lo}")
    elif type_ == "string":
        for key in ("min_length", "max_length"):
            if key in constraints and not _is_count(constraints[key]):
                raise bad(key, "a non-negative integer")
        lo, hi = constraints.get("min_length"), constraints.get("max_length")
        if lo is not None and hi is not None and lo > hi:
            raise bad("min_length", f"at most max_length ({hi}), not {lo}")
        if "pattern" in constraints:
            pattern = constraints["pattern"]
            if not isinstance(pattern, str) or not pattern:
                raise bad("pattern", "a non-empty regular expression string")
            if len(pattern) > MAX_PATTERN_LENGTH:
                raise bad("pattern", f"at most {MAX_PATTERN_LENGTH} characters long")
            try:
                compile_pattern(pattern)
            except re2.error as exc:
                reason = exc.args[0] if exc.args else "cannot compile"
                if isinstance(reason, bytes):
                    reason = reason.decode(errors="replace")
                message = (
                    f"constraint pattern must be a regular expression in RE2 syntax "
                    f"(https://github.com/google/re2/wiki/Syntax): {reason}."
                )
                raise InvalidConstraint(
                    f"Variable {name!r}: {message}",
                    errors=[{"variable": name, "location": ["body", "constraints", "pattern"],
                             "message": message}],
                ) from exc
    elif type_ == "choice":
        choices = constraints.get("choices")
        if choices is None:
            raise _definition_error(
                name,
                "a choice variable needs constraints.choices: a non-empty list of the allowed "
                "values.",
                "constraints.choices",
            )
        if not isinstance(choices, list) or not choices:
            raise bad("choices", "a non-empty list of the allowed values")
    elif type_ == "embedding":
        if "dimensions" in constraints:
            dims = constraints["dimensions"]
            if not _is_count(dims) or dims == 0:
                raise bad("dimensions", "a positive integer")
    elif type_ == "tensor" and "shape" in constraints:
        shape = constraints["shape"]
        if not isinstance(shape, list) or not all(d is None or _is_count(d) for d in shape):
            raise bad("shape", "a list of non-negative integers (null for any size)")
    return constraints


# -- values ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VariableError:
    """Why a value does not fit its variable: which constraint, in words."""

    variable: str
    value: Any
    constraint: str
    message: str
    limit: Any = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": "constraint_violation",
            "variable": self.variable,
            "value": self.value,
            "constraint": self.constraint,
            "message": self.message,
        }
        if self.limit is not None:
            out["limit"] = self.limit
        return out

    def to_problem(self) -> Unprocessable:
        return Unprocessable(self.message, code="constraint_violation", errors=[self.as_dict()])


def show(value: Any, limit: int = 80) -> str:
    """A value as JSON for a message, shortened."""
    text = orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction" if not value.is_integer() else "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def value_error(
    name: str, type_: str, constraints: dict[str, Any], value: Any
) -> VariableError | None:
    """The first way ``value`` breaks the variable's type or constraints, or None."""
    shown = show(value)

    def broke(
        constraint: str, requirement: str, limit: Any = None, given: str = ""
    ) -> VariableError:
        given = given or f"{shown} was given"
        return VariableError(
            name, value, constraint, f"Variable {name!r} must {requirement}, but {given}.", limit
        )

    def wrong_type(requirement: str) -> VariableError:
        return broke("type", requirement, given=f"{shown} ({_kind(value)}) was given")

    if type_ == "float" or type_ == "integer":
        if type_ == "float" and not _is_number(value):
            return wrong_type("be a number")
        if type_ == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
            return wrong_type("be an integer")
        lo, hi = constraints.get("min"), constraints.get("max")
        if lo is not None and value < lo:
            return broke("min", f"be at least {show(lo)} (its min)", lo)
        if hi is not None and value > hi:
            return broke("max", f"be at most {show(hi)} (its max)", hi)
    elif type_ == "string":
        if not isinstance(value, str):
            return wrong_type("be a string")
        lo, hi = constraints.get("min_length"), constraints.get("max_length")
        n = len(value)
        if lo is not None and n < lo:
            return broke("min_length", f"be at least {lo} characters long (its min_length)", lo,
                         f"{shown} has {n}")
        if hi is not None and n > hi:
            return broke("max_length", f"be at most {hi} characters long (its max_length)", hi,
                         f"{shown} has {n}")
        pattern = constraints.get("pattern")
        if pattern is not None and compile_pattern(pattern).search(value) is None:
            return broke("pattern", f"match the pattern {pattern!r} (its pattern)", pattern)
    elif type_ == "boolean":
        if not isinstance(value, bool):
            return wrong_type("be true or false")
    elif type_ == "choice":
        choices = constraints["choices"]
        if not any(json_equal(value, c) for c in choices):
            listed = ", ".join(show(c, 40) for c in choices[:20])
            if len(choices) > 20:
                listed += f" (and {len(choices) - 20} more)"
            return broke("choices", f"be one of {listed} (its choices)", choices)
    elif type_ == "embedding":
        if not isinstance(value, list) or not all(_is_number(x) for x in value):
            return wrong_type("be a list of numbers")
        dims = constraints.get("dimensions")
        if dims is not None and len(value) != dims:
            return broke("dimensions", f"have exactly {dims} numbers (its dimensions)", dims,
                         f"{len(value)} were given")
    elif type_ == "tensor":
        return _tensor_error(value, constraints, broke, wrong_type)
    return None


def _tensor_error(
    value: Any,
    constraints: dict[str, Any],
    broke: Callable[..., VariableError],
    wrong_type: Callable[[str], VariableError],
) -> VariableError | None:
    requirement = 'be a tensor {"shape": [...], "data": [...]}'
    if not isinstance(value, dict) or "shape" not in value or "data" not in value:
        return wrong_type(requirement)
    extra = set(value) - _TENSOR_KEYS
    if extra:
        return wrong_type(requirement + f" without the members {sorted(extra)}")
    if "dtype" in value and not isinstance(value["dtype"], str):
        return wrong_type(requirement + " whose dtype is a string")
    shape, data = value["shape"], value["data"]
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        return wrong_type(requirement + " whose shape is a list of non-negative integers")
    if not isinstance(data, list):
        return wrong_type(requirement + " whose data is a list")
    size = math.prod(shape)
    if all(_is_number(x) for x in data):
        if len(data) != size:
            return broke("type", f"have {size} numbers in data for shape {shape}", size,
                         f"data has {len(data)}")
    elif not _nested_fits(data, shape):
        return broke("type", f"have data that is a flat list of {size} numbers or nested "
                             f"lists following shape {shape}", shape, "it does not")
    wanted = constraints.get("shape")
    if wanted is not None and (
        len(wanted) != len(shape) or any(w is not None and w != d for w, d in zip(wanted, shape,
                                                                                     strict=True))
    ):
        return broke("shape", f"have shape {show(wanted)} (null: any size) (its shape)", wanted,
                     f"shape {show(shape)} was given")
    return None


def _nested_fits(data: Any, shape: list[int]) -> bool:
    """``data`` is nested lists with ``shape[i]`` items at depth i and numbers at the end."""
    if not shape:
        return _is_number(data)
    if not isinstance(data, list) or len(data) != shape[0]:
        return False
    return all(_nested_fits(item, shape[1:]) for item in data)
