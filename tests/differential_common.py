"""What the differential test (tests/test_differential.py) shares with its rule modules:
the strategies, JSON encoding of any value, and the normalisation of answers."""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from hypothesis import strategies as st
from hypothesis.stateful import precondition

from app.routers.service import ALL_FEATURES

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
VAR_ID = re.compile(r"^var_[A-Za-z0-9_.-]+$")
#: A generated lease id (random), also inside a problem's detail.
LEASE_ID = re.compile(r"lease-[0-9a-f]{16}")

KEYS = st.sampled_from(["a", "b", "c/d", "c/e", "n"])
NAMES = st.sampled_from(["v1", "v2", "v3"])
OWNERS = st.sampled_from(["o1", "o2", "o/3"])
LOCKS = st.sampled_from(["l1", "l2"])
SIDS = st.sampled_from(["s1", "s2"])
THREADS = st.sampled_from(["t1", "t2"])
ARTIFACTS = st.sampled_from(["f1", "f/2"])
PATTERNS = st.sampled_from(["*", "a*", "c/*", "*d", "n", "zz*"])
REVISIONS = st.integers(0, 30)
TOKENS = st.integers(1, 6)
LONG_TTL = st.sampled_from([None, "1h", 3600])

SCALARS = (
    st.none() | st.booleans() | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["x", "y", "z/w"]), inner, max_size=3),
    max_leaves=6,
)
OBJECTS = st.dictionaries(st.sampled_from(["x", "y", "z"]), JSON, max_size=3)
NUMBERS = (
    st.integers(-5, 5) | st.integers(-(2**70), 2**70)
    | st.sampled_from([2**53, 2**53 - 1, -(2**53), 2**63, 2**64, 0.5, -0.25, 1e16, 1e300])
    | st.floats(allow_nan=False, allow_infinity=False)
)

#: The features whose rules the differential test draws: every feature on memory vs
#: Redis; on memory vs NATS, the NATS app's ``supports`` (GET /v1/capabilities), so a
#: family joins the NATS run by itself when its feature lands there.
EVERY_FEATURE = frozenset(ALL_FEATURES)


def needs(*features: str) -> Any:
    """A rule drawn only when the engines under test support every one of ``features``
    (the machine's ``features``)."""
    wanted = frozenset(features)
    return precondition(lambda machine: wanted <= machine.features)


VAR_TYPES: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "float": ({"min": -10, "max": 10}, st.floats(-20, 20) | st.integers(-20, 20) | st.text()),
    "integer": ({"min": 0, "max": 100}, st.integers(-5, 105) | st.booleans() | st.floats(0, 1)),
    "string": ({"max_length": 3, "pattern": "^[a-c]*$"}, st.text("abcd", max_size=5)),
    "boolean": (None, st.booleans() | st.integers(0, 1)),
    "choice": ({"choices": ["x", "y"]}, st.sampled_from(["x", "y", "z", 1])),
    "embedding": ({"dimensions": 2}, st.lists(st.floats(-1, 1) | st.integers(), max_size=3)),
    "tensor": ({"shape": [2]}, st.fixed_dictionaries(
        {"shape": st.sampled_from([[2], [1]]), "data": st.lists(st.integers(0, 3), max_size=3)})),
    "json": (None, JSON),
}


def json_text(value: Any) -> bytes:
    """JSON for any value, integers beyond 64 bits included (orjson refuses them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    try:
        return orjson.dumps(value)
    except TypeError:  # a nested integer beyond 64 bits
        return json.dumps(value, allow_nan=False).encode()


#: The fields of answers and events that hold a revision (renumbered on NATS).
REVISION_FIELDS = frozenset({"revision", "created_revision", "compacted_revision",
                             "current_revision"})
#: Revisions in problem details: "is at revision 7, not 5", "at or below 5".
REVISION_TEXT = re.compile(r"(revision )(\d+)(?:(, not )(\d+))?|(at or below )(\d+)")
#: A revision of a request, replaced per engine (``Renumber.substitute``).
REVISION_PLACEHOLDER = re.compile(r'"<<rev:(\d+)>>"')
BARE_PLACEHOLDER = re.compile(r"<<rev:(\d+)>>")


class Renumber:
    """Revisions mapped per engine to the order of the namespace's events.

    NATS takes sequences without an event (docs/nats.md: a transaction's or a lease's
    end's atomic batch takes one per message, the commit's being the event's revision;
    a session step that only counts as activity, a waiter leaving a lock's line), so the
    same history has other revision numbers there. Each engine's revision ``r`` is
    compared as the number of the namespace's events at or below ``r`` (an event's
    revision: its place in the event stream), and a revision a request names (drawn as
    that number, ``c``) is sent to each engine as the revision of its ``c``-th event,
    or past its current revision by as much as ``c`` is past the events. Nothing is
    dropped: every revision of every answer and event is still compared, as a place
    among the events."""

    def __init__(self, engines: int = 2) -> None:
        self.revs: list[list[int]] = [[] for _ in range(engines)]
        self.current = [0] * engines
        self.beyond: list[dict[int, int]] = [{} for _ in range(engines)]

    def saw(self, engine: int, revisions: list[int], current: int) -> None:
        """The engine's events read since the last call (their revisions), and its
        current revision."""
        last = self.revs[engine][-1] if self.revs[engine] else 0
        assert all(r > last for r in revisions), (engine, last, revisions)
        self.revs[engine].extend(revisions)
        self.current[engine] = current

    def canonical(self, engine: int, revision: int) -> int:
        revs = self.revs[engine]
        place = bisect.bisect_right(revs, revision)
        if place and revs[place - 1] == revision:  # an event's revision
            return place
        if revision > self.current[engine] and revision in self.beyond[engine]:
            return self.beyond[engine][revision]  # one a request named past the events
        return place  # a revision without an event: the place after the events before

    def translate(self, engine: int, number: int) -> int:
        revs = self.revs[engine]
        if number <= 0:
            return number
        if number <= len(revs):
            return revs[number - 1]
        out = max(self.current[engine], revs[-1] if revs else 0) + number - len(revs)
        self.beyond[engine][out] = number
        return out

    @staticmethod
    def placeholder(number: int) -> str:
        return f"<<rev:{number}>>"

    def substitute(self, engine: int, text: str, *, json: bool = False) -> str:
        """``text`` with each placeholder made the engine's revision (in JSON, the
        quoted placeholder becomes a number)."""
        pattern = REVISION_PLACEHOLDER if json else BARE_PLACEHOLDER
        return pattern.sub(lambda m: str(self.translate(engine, int(m.group(1)))), text)


class Normalizer:
    """Maps what legitimately differs between two backends to stable placeholders:
    timestamps, variable ids and generated lease ids (random), numbered in the order
    they first appear; with ``revision``, revisions too (``Renumber``)."""

    def __init__(self, revision: Callable[[int], int] | None = None) -> None:
        self.ids: dict[str, str] = {}
        self.leases: dict[str, str] = {}
        self.revision = revision

    def lease(self, found: re.Match[str]) -> str:
        return self.leases.setdefault(found.group(), f"<lease{len(self.leases)}>")

    def text(self, value: str) -> str:
        if self.revision is not None and REVISION_TEXT.search(value):
            mapped = self.revision

            def one(m: re.Match[str]) -> str:
                if m.group(5):
                    return m.group(5) + str(mapped(int(m.group(6))))
                out = m.group(1) + str(mapped(int(m.group(2))))
                return out + (m.group(3) + str(mapped(int(m.group(4)))) if m.group(3) else "")

            value = REVISION_TEXT.sub(one, value)
        if ISO.match(value):
            return "<time>"
        if VAR_ID.match(value):
            return self.ids.setdefault(value, f"<var{len(self.ids)}>")
        if "lease-" in value:
            return LEASE_ID.sub(self.lease, value)
        return value

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            out = {self.text(k): self(v) for k, v in value.items()}
            if self.revision is not None:
                for name in REVISION_FIELDS.intersection(value):
                    if isinstance(value[name], int) and not isinstance(value[name], bool):
                        out[name] = self.revision(value[name])
            if "owner" in value and "token" in value and value.get("expires_at"):
                # A held lock's remaining seconds (a snapshot's "ttl"): read a few ms apart.
                out["ttl"] = "<remaining>" if "ttl" in value else out.get("ttl")
            return out
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


def answer(response: httpx.Response, norm: Normalizer) -> dict[str, Any]:
    """What a client can observe of a response, normalized."""
    out: dict[str, Any] = {"status": response.status_code}
    for header in ("etag", "content-type", "location", "retry-after"):
        if header in response.headers:
            out[header] = response.headers[header]
    tag = out.get("etag", "").strip('"')
    if norm.revision is not None and tag.isdigit() and \
            response.headers.get("content-type", "").endswith("json") and response.content:
        raw = orjson.loads(response.content)
        if isinstance(raw, dict) and raw.get("revision") == int(tag):  # a key's revision
            out["etag"] = f'"{norm.revision(int(tag))}"'
    if response.headers.get("content-type", "").endswith("json"):
        out["body"] = norm(orjson.loads(response.content)) if response.content else None
    else:
        out["body"] = response.content
    return out
