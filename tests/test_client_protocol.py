"""The client's sans-IO core, without a server: the generated sync client is current,
SSE parsing commits a resume id only with a whole frame, durations, error mapping, and
which calls may be repeated."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from corkboard.client import (
    AlreadyExists,
    BackendUnavailable,
    Conflict,
    CorkboardError,
    InternalError,
    LeaseNotFound,
    LockHeld,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    RevisionMismatch,
    TooManyKeys,
    TooManyWaiters,
    Unavailable,
    Unprocessable,
)
from corkboard.client._protocol import (
    Call,
    SSEDecoder,
    condition_headers,
    duration_seconds,
    key_path,
)
from corkboard.client.errors import BY_STATUS, CODES, error_from_problem
from tests.support import ROOT


def test_sync_client_is_generated_from_the_async_one() -> None:
    run = subprocess.run([sys.executable, "scripts/unasync.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_sse_decoder_commits_ids_with_whole_frames() -> None:
    d = SSEDecoder()
    lines = [": corkboard watch", "id: 0", "", "id: 1", "event: kv.put", 'data: {"a":1}', ""]
    events = [e for e in (d.feed(line) for line in lines) if e is not None]
    assert [(e.event, e.data, e.id) for e in events] == [("kv.put", '{"a":1}', "1")]
    assert d.last_id == "1"
    # A frame cut off before its blank line does not move the resume point.
    for line in ["id: 2", "event: kv.put", 'data: {"a":2}']:
        assert d.feed(line) is None
    assert d.last_id == "1"
    assert d.feed("retry: 1000") is None and d.retry_ms == 1000
    multi = SSEDecoder()
    for line in ["data: a", "data:b"]:
        multi.feed(line)
    event = multi.feed("")
    assert event is not None and (event.event, event.data) == ("message", "a\nb")


def test_durations_and_conditions() -> None:
    assert duration_seconds(30) == 30.0
    assert duration_seconds("0.25") == 0.25
    assert duration_seconds("1m30s") == 90.0
    assert duration_seconds("250ms") == 0.25
    with pytest.raises(ValueError):
        duration_seconds("soon")
    assert condition_headers(None) == {}
    assert condition_headers(0) == {"If-None-Match": "*"}
    assert condition_headers(12) == {"If-Match": '"12"'}
    with pytest.raises(ValueError):
        condition_headers(-1)
    assert key_path("agents/a1@x:y=z+w") == "agents/a1@x:y=z+w"
    assert key_path("a b") == "a%20b"


def test_errors_are_typed_by_code_then_status() -> None:
    def err(status: int, code: str | None = None) -> CorkboardError:
        return error_from_problem(status, {"code": code, "detail": "d"} if code else {})

    assert type(err(404, "not_found")) is NotFound
    assert type(err(412, "revision_mismatch")) is RevisionMismatch
    assert type(err(412, "already_exists")) is AlreadyExists
    assert type(err(409, "lock_held")) is LockHeld
    assert type(err(429, "too_many_waiters")) is TooManyWaiters
    assert type(err(412)) is PreconditionFailed
    assert type(err(422, "some_new_code")) is Unprocessable
    unavailable = error_from_problem(503, {"code": "backend_unavailable", "detail": "down"},
                                     {"retry-after": "1"})
    assert isinstance(unavailable, BackendUnavailable) and unavailable.retry_after == 1.0
    assert str(unavailable) == "backend_unavailable: down" and unavailable.status == 503
    assert type(err(404, "lease_not_found")) is LeaseNotFound
    assert isinstance(err(404, "lease_not_found"), NotFound)
    assert type(err(409, "too_many_keys")) is TooManyKeys
    assert type(err(405, "method_not_allowed")) is MethodNotAllowed
    assert type(err(500, "internal_error")) is InternalError
    # Without a known code: the most general class of the status.
    assert (type(err(404, "gone_fishing")), type(err(409)), type(err(503))) == (
        NotFound, Conflict, Unavailable)
    assert type(err(418)) is CorkboardError


def test_every_code_of_the_service_has_its_class() -> None:
    """The one table knows every code the service answers with: those its error classes
    declare, those it raises by name, and those of its routing errors."""
    text = "\n".join(path.read_text() for path in (ROOT / "app").rglob("*.py"))
    declared = set(re.findall(r"\bcode\s*=\s*(?:\d{3},\s*)?\"([a-z_]+)\"", text))
    declared |= set(re.findall(r"^\s*\d{3}: \"([a-z_]+)\",$", text, re.M))  # routing
    declared |= set(re.findall(r"problem_response\(\s*\d{3},\s*\"([a-z_]+)\"", text))
    assert {"invalid_request", "lease_not_found", "too_many_keys", "too_many_waiters",
            "method_not_allowed", "internal_error", "quota_exceeded"} <= declared
    assert declared - set(CODES) == set()
    for code, cls in CODES.items():
        assert cls.code == code and issubclass(BY_STATUS[cls.status], CorkboardError)


def test_only_safe_calls_are_repeated() -> None:
    assert Call.read("/v1/kv/a").retry
    assert Call.write("PUT", "/v1/kv/a", 1, retry=True).retry
    assert not Call.write("PUT", "/v1/kv/a", 1, retry=True, headers={"If-Match": '"1"'}).retry
    assert not Call.write("PUT", "/v1/kv/a", 1, retry=True,
                          headers={"If-None-Match": "*"}).retry
    assert not Call.write("PUT", "/v1/artifacts/a", raw=iter([b"x"]), retry=True).retry
    assert not Call.write("POST", "/v1/kv/a/increment", {"by": 1}).retry
