"""The client's sans-IO core, without a server: the generated sync client is current,
SSE parsing commits a resume id only with a whole frame, durations, error mapping, and
which calls may be repeated."""

from __future__ import annotations

import subprocess
import sys

import pytest

from corkboard.client import (
    AlreadyExists,
    BackendUnavailable,
    CorkboardError,
    LockHeld,
    NotFound,
    PreconditionFailed,
    RevisionMismatch,
    TooManyWaiters,
    Unprocessable,
)
from corkboard.client._protocol import (
    Call,
    SSEDecoder,
    condition_headers,
    duration_seconds,
    key_path,
)
from corkboard.client.errors import error_from_problem
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


def test_only_safe_calls_are_repeated() -> None:
    assert Call.read("/v1/kv/a").retry
    assert Call.write("PUT", "/v1/kv/a", 1, retry=True).retry
    assert not Call.write("PUT", "/v1/kv/a", 1, retry=True, headers={"If-Match": '"1"'}).retry
    assert not Call.write("PUT", "/v1/kv/a", 1, retry=True,
                          headers={"If-None-Match": "*"}).retry
    assert not Call.write("PUT", "/v1/artifacts/a", raw=iter([b"x"]), retry=True).retry
    assert not Call.write("POST", "/v1/kv/a/increment", {"by": 1}).retry
