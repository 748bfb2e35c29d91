"""The shared syntax of the API (API.md section 1): namespaces, keys, names, patterns,
durations, ETags and timestamps, parsed and checked in one place for every resource.
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass

from app.errors import InvalidKey, InvalidPattern, InvalidRequest, InvalidTTL
from app.grammar import (
    KEY_CLASS,
    MAX_KEY_BYTES,
    MAX_NAMESPACE_CHARS,
    MAX_VARIABLE_CHARS,
    NAMESPACE_REGEX,
    PATTERN_CLASS,
    VARIABLE_CLASS,
)

NAMESPACE_RE = re.compile(NAMESPACE_REGEX)
_KEY_CHARS_RE = re.compile(KEY_CLASS + "+")
_PATTERN_CHARS_RE = re.compile(PATTERN_CLASS + "+")
VARIABLE_NAME_RE = re.compile(f"{VARIABLE_CLASS}{{1,{MAX_VARIABLE_CHARS}}}")
MAX_DURATION_SECONDS = 365 * 24 * 3600
#: Numbers in headers, paths and query parameters (revisions, tokens, sizes): at most 20
#: digits, so no request makes the service convert an absurdly long number.
MAX_DIGITS = 20
#: The largest revision a resume point may name (revisions are signed 64-bit counters).
MAX_REVISION = 2**63 - 1

#: Last path segments that name an action of a resource and so cannot end a name.
KV_ACTIONS = frozenset({"history", "increment", "touch"})
LOCK_ACTIONS = frozenset({"refresh", "release", "force-release"})


@functools.lru_cache(maxsize=1024)
def _is_namespace(ns: str) -> bool:
    """Whether ``check_namespace`` accepts ``ns``, remembered for the last 1,024 names
    (each at most 63 characters: longer ones are refused before, so the cache holds at
    most 1,024 short strings whatever clients send)."""
    return NAMESPACE_RE.fullmatch(ns) is not None


def check_namespace(ns: str) -> str:
    if len(ns) > MAX_NAMESPACE_CHARS or not _is_namespace(ns):
        raise InvalidRequest(
            f"Namespace {ns[:80]!r} is not valid: use 1-{MAX_NAMESPACE_CHARS} of [a-z0-9_-], "
            "starting with a letter or digit.",
            errors=[{"location": ["query", "ns"], "message": "invalid namespace"}],
        )
    return ns


@functools.lru_cache(maxsize=8192)
def _is_sane_key(key: str, actions: frozenset[str]) -> bool:
    """Whether ``check_key`` accepts ``key`` (the same rules, without the messages): the
    keys in use are checked once, not on every call (bounded: at most 8,192 remembered).
    Keys not remembered, as most of a large store's are, are checked without splitting
    them into segments (0.5 us; the split took 0.9)."""
    if (
        not key or len(key) > MAX_KEY_BYTES or key[0] == "/" or key[-1] == "/"
        or _KEY_CHARS_RE.fullmatch(key) is None or "//" in key
    ):
        return False
    if ".." in key and (
        key == ".." or key.startswith("../") or key.endswith("/..") or "/../" in key
    ):
        return False
    return not actions or key[key.rfind("/") + 1:] not in actions


def check_key(key: str, *, what: str = "key", actions: frozenset[str] = frozenset()) -> str:
    """Validate a key or resource name: 1-512 bytes of [A-Za-z0-9._:/@=+-], sane segments."""
    if _is_sane_key(key, actions):
        return key
    if not key:
        raise InvalidKey(f"The {what} is empty.")
    if len(key) > MAX_KEY_BYTES:
        raise InvalidKey(f"The {what} is {len(key)} bytes long; at most {MAX_KEY_BYTES} allowed.")
    if not _KEY_CHARS_RE.fullmatch(key):
        bad = next((c for c in key if not _KEY_CHARS_RE.fullmatch(c)), "?")
        raise InvalidKey(
            f"The {what} contains {bad!r}; only letters, digits and . _ : / @ = + - are allowed"
            + (" (* is reserved for patterns)." if bad == "*" else ".")
        )
    if key.startswith("/"):
        raise InvalidKey(f"The {what} may not start with '/'.")
    segments = key.split("/")
    if any(s == "" for s in segments):
        raise InvalidKey(f"The {what} has an empty segment between '/'.")
    if any(s == ".." for s in segments):
        raise InvalidKey(f"The {what} has a '..' segment.")
    if segments[-1] in actions:
        raise InvalidKey(
            f"The {what} may not end in the segment {segments[-1]!r}: it names an action "
            "of this resource."
        )
    return key


def check_id(value: str, *, what: str) -> str:
    """Session, thread and channel ids: key syntax without '/'."""
    check_key(value, what=what)
    if "/" in value:
        raise InvalidKey(f"The {what} may not contain '/'.")
    return value


def check_pattern(pattern: str) -> str:
    if not pattern:
        raise InvalidPattern("The pattern is empty; use '*' to match everything.")
    if len(pattern) > MAX_KEY_BYTES or not _PATTERN_CHARS_RE.fullmatch(pattern):
        raise InvalidPattern(
            f"The pattern {pattern[:80]!r} is not valid: at most {MAX_KEY_BYTES} of "
            "[A-Za-z0-9._:/@=+-] and '*'."
        )
    return pattern


@dataclass(frozen=True, slots=True)
class Pattern:
    """A key pattern where '*' matches any run of characters; compiled once.

    Matching takes time linear in the key whatever the pattern: the literal runs between
    stars are found left to right (no backtracking regex: ``a*a*a*...c`` against a long
    key would take exponential time). The Redis scripts match the same way.
    """

    text: str
    prefix: str
    #: The literal runs between the stars; None for a pattern without '*'.
    parts: tuple[str, ...] | None

    @classmethod
    def compile(cls, text: str) -> Pattern:
        check_pattern(text)
        star = text.find("*")
        if star < 0:
            return cls(text, text, None)
        return cls(text, text[:star], tuple(text.split("*")))

    @property
    def exact(self) -> bool:
        return self.parts is None

    def matches(self, key: str) -> bool:
        parts = self.parts
        if parts is None:
            return key == self.text
        first, last = parts[0], parts[-1]
        if (
            len(key) < len(first) + len(last)
            or not key.startswith(first)
            or not key.endswith(last)
        ):
            return False
        pos, end = len(first), len(key) - len(last)
        for part in parts[1:-1]:
            if part:
                found = key.find(part, pos, end)
                if found < 0:
                    return False
                pos = found + len(part)
        return True


MATCH_ALL = Pattern.compile("*")

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}


def parse_duration(value: str | float | int | None, *, what: str = "ttl") -> float:
    """Seconds from a number or a Go-style duration ('250ms', '1h30m'); 0 means none."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, bool):
        raise InvalidTTL(f"The {what} must be a number of seconds or a duration like '30s'.")
    seconds: float
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
            if not re.fullmatch(r"[0-9.eE+\-]+", text):
                raise ValueError(text)  # refuse 'nan', 'inf', 'infinity'
        except ValueError:
            seconds = _parse_go_duration(text, what)
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise InvalidTTL(f"The {what} {value!r} must be a finite, non-negative duration.")
    if seconds > MAX_DURATION_SECONDS:
        raise InvalidTTL(f"The {what} {value!r} is over the maximum of 365 days.")
    return seconds


def _parse_go_duration(text: str, what: str) -> float:
    pos, total = 0, 0.0
    if not text:
        raise InvalidTTL(f"The {what} is empty.")
    while pos < len(text):
        m = _DURATION_RE.match(text, pos)
        if not m:
            raise InvalidTTL(
                f"The {what} {text[:40]!r} is not a duration: use seconds (30, 0.25) "
                "or a string like '250ms', '30s', '5m', '1h'."
            )
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return total


def duration_ms(seconds: float) -> int:
    """Whole milliseconds for a positive duration, never rounding a real TTL to zero."""
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


def parse_etag(header: str, *, what: str = "If-Match") -> int | None:
    """A revision from '"12"', 'W/"12"' or '12'; None for '*'."""
    text = header.strip()
    if text == "*":
        return None
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not is_count(text):
        raise InvalidRequest(
            f"{what} must be a quoted revision like '\"12\"' (at most {MAX_DIGITS} digits) "
            "or '*'."
        )
    return int(text)


def is_count(text: str) -> bool:
    """Whether ``text`` is a whole number of 1 to MAX_DIGITS ASCII digits."""
    return 0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit()


def parse_count(text: str, *, what: str) -> int:
    """A non-negative integer of at most MAX_DIGITS ASCII digits, else 400."""
    text = text.strip()
    if not is_count(text):
        raise InvalidRequest(
            f"{what} must be a non-negative integer of at most {MAX_DIGITS} digits."
        )
    return int(text)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


#: ".000Z" to ".999Z": the end of an ``iso_ms`` time (a format spec would cost twice the rest).
_MS_ENDS = tuple(f".{frac:03d}Z" for frac in range(1000))
_TWO_DIGITS = tuple(f"{n:02d}" for n in range(60))


@functools.lru_cache(maxsize=4096)
def iso_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: 2026-11-24T04:20:51.123Z. Remembered for the last
    4,096 times (a key read formats its entry's two times and its access line's); a time
    not remembered, as most entries' creation times of a large store are, is formatted
    from its day's date and arithmetic (0.5 us; ``time.strftime`` took 1.1)."""
    sec, frac = divmod(ms, 1000)
    day, rest = divmod(sec, 86400)
    return (f"{_iso_date(day)}{_TWO_DIGITS[rest // 3600]}:{_TWO_DIGITS[rest // 60 % 60]}:"
            f"{_TWO_DIGITS[rest % 60]}{_MS_ENDS[frac]}")


@functools.lru_cache(maxsize=64)
def _iso_date(day: int) -> str:
    """The date of ``day`` days since 1970-01-01, as ``2026-11-24T``."""
    return time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
