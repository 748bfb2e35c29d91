"""What the ``corkboard`` client commands share: exit codes, one-line errors, output."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from corkboard.client import (
    Corkboard,
    CorkboardError,
    Forbidden,
    InvalidRequest,
    LockLost,
    Unauthorized,
    Unavailable,
)

OK, REFUSED, USAGE, UNAVAILABLE, DENIED, LOST = 0, 1, 2, 3, 4, 5
INTERRUPTED = 130

Command = Callable[[Corkboard, argparse.Namespace], int]


class UsageError(Exception):
    """A bad argument found after parsing (exit code 2)."""


def exit_code(error: CorkboardError) -> int:
    if isinstance(error, Unavailable):
        return UNAVAILABLE
    if isinstance(error, Unauthorized | Forbidden):
        return DENIED
    if isinstance(error, LockLost):
        return LOST
    if isinstance(error, InvalidRequest):
        return USAGE
    return REFUSED


def fail(message: str, code: int) -> int:
    print(f"corkboard: {message}", file=sys.stderr)
    return code


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def write_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def read_input(source: str) -> bytes:
    return sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
