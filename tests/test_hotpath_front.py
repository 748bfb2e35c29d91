"""The hot path's front (app.hotpath.KeyFront) answers exactly as the full stack.

Two apps on the same settings take the same calls in the same order: one with its front,
one with ``front = None`` (every call through the middleware stack and its HotPath
layer). Each call's status, headers and body must be the same, byte for byte, but for
the entries' times (two apps, two clocks); so must the metrics' cells and the access
lines (times and durations aside). Calls the front must not take are compared too.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator, MutableMapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
import pytest

from app.main import Corkboard, create_app
from app.settings import Settings

READER = "reader-token-0123456789"
WRITER = "writer-token-0123456789"
TOKENS = json.dumps([
    {"token": READER, "namespaces": ["team-a"], "permissions": ["read"], "name": "reader"},
    {"token": WRITER, "namespaces": ["team-a", "team-b"], "permissions": ["read", "write"],
     "name": "writer"},
])
W = {"authorization": f"Bearer {WRITER}"}
R = {"authorization": f"Bearer {READER}"}
JSON = {"content-type": "application/json"}
_GENERATED = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")
_TIMES = re.compile(rb'"(created_at|modified_at|expires_at)":"[^"]*"')

Call = tuple[str, str, dict[str, str], Any]


class Answer:
    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.messages = 0


async def call(
    app: Corkboard, state: dict[str, Any], method: str, target: str,
    headers: dict[str, str], body: bytes | list[bytes] | None,
) -> Answer:
    path, _, query = target.partition("?")
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    chunks = body if isinstance(body, list) else [body or b""]
    if isinstance(body, bytes):
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
        "server": ("corkboard", 80), "client": ("127.0.0.1", 5555), "root_path": "",
        "method": method, "path": path, "raw_path": path.encode(),
        "query_string": query.encode(), "headers": raw, "state": dict(state),
    }
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    answer = Answer()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        answer.messages += 1
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = list(message["headers"])
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    await app(scope, receive, send)
    return answer


@asynccontextmanager
async def two_apps(**overrides: Any) -> AsyncIterator[tuple[Any, Any]]:
    """(front app, stack app), each with its lifespan state; access logs in memory."""
    settings = Settings(
        backend="memory://", tokens=TOKENS, max_request_bytes=1024, max_value_bytes=200,
        **overrides,
    )
    async with AsyncExitStack() as stack:
        pairs = []
        for fused in (True, False):
            app = create_app(settings)
            assert app.access_log is not None
            app.access_log.stream = io.BytesIO()
            if not fused:
                app.front = None
            state = await stack.enter_async_context(app.router.lifespan_context(app))
            pairs.append((app, dict(state or {})))
        yield pairs[0], pairs[1]


def ids(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers, a request id of the app's own making (two apps, two prefixes) as
    'generated'."""
    return [
        (k, b"generated" if k == b"x-request-id" and _GENERATED.fullmatch(v.decode()) else v)
        for k, v in headers
    ]


def normalized(body: bytes) -> bytes:
    return _TIMES.sub(rb'"\1":"T"', body)


async def compare(calls: list[Call], **overrides: Any) -> list[Answer]:
    answers = []
    async with two_apps(**overrides) as ((fapp, fstate), (sapp, sstate)):
        for i, (method, target, headers, body) in enumerate(calls):
            headers = {"x-request-id": f"req-{i}", **headers}
            a = await call(fapp, fstate, method, target, headers, body)
            b = await call(sapp, sstate, method, target, headers, body)
            where = f"{method} {target} {headers} {body!r}"
            assert a.status == b.status, where
            assert ids(a.headers) == ids(b.headers), where
            assert normalized(a.body) == normalized(b.body), where
            assert a.messages == b.messages == 2, where
            answers.append(a)
        # One metric update per call, in the same cells.
        fstats, sstats = fapp.metrics.requests, sapp.metrics.requests
        assert {k: v[0] for k, v in fstats._cells.items()} == {
            k: v[0] for k, v in sstats._cells.items()
        }
        assert fstats.started == sstats.started == len(calls)
        lines = []
        for log in (fapp.access_log, sapp.access_log):
            assert log is not None
            log.flush()
            entries = [orjson.loads(line) for line in log.stream.getvalue().splitlines()]
            for entry in entries:
                entry["request_id"] = _GENERATED.sub("generated", entry["request_id"])
                entry.pop("time")
                entry.pop("duration_ms")
            lines.append(entries)
        assert lines[0] == lines[1]
        assert len(lines[0]) == len(calls)
    return answers


async def test_key_calls_answer_as_the_full_stack() -> None:
    deep = b"[" * 300 + b"]" * 300
    streamed = [b"[" + b"1," * 300, b"1," * 300 + b"1]"]  # no Content-Length
    calls: list[Call] = [
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON}, b'{"v": 1}'),           # 201
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON}, b'{"v": 2}'),           # 200
        ("GET", "/v1/kv/a?ns=team-a", W, None),                              # 200
        ("GET", "/v1/kv/a?ns=team-a", R, None),                              # 200, reader
        ("HEAD", "/v1/kv/a?ns=team-a", W, None),                             # 200, no body
        ("GET", "/v1/kv/a?ns=team-a&revision=1", W, None),                   # kept revision
        ("GET", "/v1/kv/a?ns=team-a&revision=x", W, None),                   # 400
        ("GET", "/v1/kv/a?ns=team-a", {**W, "if-none-match": '"2"'}, None),  # 304
        ("HEAD", "/v1/kv/a?ns=team-a", {**W, "if-none-match": '"2"'}, None),  # 304
        ("GET", "/v1/kv/a?ns=team-a", {**W, "if-none-match": "junk"}, None),  # 200
        ("GET", "/v1/kv/missing?ns=team-a", W, None),                        # 404
        ("HEAD", "/v1/kv/missing?ns=team-a", W, None),                       # 404, no body
        ("GET", "/v1/kv/bad key?ns=team-a", W, None),                        # 400 invalid_key
        ("GET", "/v1/kv/?ns=team-a", W, None),                               # 400 empty key
        ("GET", "/v1/kv/a?ns=Team-A", W, None),                              # 400 namespace
        ("GET", "/v1/kv/a?ns=team-a&ns=team-b", W, None),                    # 400 repeated
        ("GET", "/v1/kv/a?ns=team-a", {}, None),                             # 401
        ("HEAD", "/v1/kv/a?ns=team-a", {}, None),                            # 401
        ("GET", "/v1/kv/a?ns=team-a", {"authorization": "Bearer wrong"}, None),  # 401
        ("GET", "/v1/kv/a?ns=team-b", R, None),                              # 403
        ("GET", "/v1/kv/a?access_token=" + WRITER + "&ns=team-a", {}, None),  # 401, redacted
        ("PUT", "/v1/kv/a?ns=team-a", {**R, **JSON}, b"1"),                  # 403 read-only
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON}, b"{nope"),              # 400 not JSON
        ("PUT", "/v1/kv/a?ns=team-a", {**W, "content-type": "text/html"}, b"x"),  # 415
        ("PUT", "/v1/kv/t?ns=team-a", {**W, "content-type": "text/plain"}, b"hi"),  # 201
        ("PUT", "/v1/kv/a?ns=team-a", W, b"3"),                              # no type: JSON
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON}, b'"' + b"x" * 250 + b'"'),  # 413 value
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON}, b"1" * 1100),           # 413 declared
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON}, streamed),              # 413 streamed
        ("PUT", "/v1/kv/d?ns=team-a", {**W, **JSON}, deep),                  # 422 deep
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON, "if-match": '"1"'}, b"4"),  # 412
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON, "if-match": '"5"'}, b"4"),  # ok at 5?
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON, "if-none-match": "*"}, b"4"),  # 412
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON, "if-none-match": "*", "if-match": "*"},
         b"4"),                                                              # 400 both
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON, "if-match": "nope"}, b"4"),  # 400
        ("PUT", "/v1/kv/a?ns=team-a&ttl=1h&lease=x", {**W, **JSON}, b"4"),   # 400 ttl+lease
        ("PUT", "/v1/kv/a?ns=team-a&ttl=soon", {**W, **JSON}, b"4"),         # 400 ttl
        ("PUT", "/v1/kv/a?ns=team-a&ttl=30s", {**W, **JSON}, b"4"),          # 200, expires
        ("PUT", "/v1/kv/a?ns=team-a&lease=nosuchlease", {**W, **JSON}, b"4"),  # 404 lease
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON, "fence-lock": "l"}, b"4"),  # 400 fence
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON, "fence-lock": "l", "fence-token": "1"},
         b"4"),                                                              # 409 stale
        ("PUT", "/v1/kv/a/history?ns=team-a", {**W, **JSON}, b"4"),          # 400 action word
        ("GET", "/v1/kv/a/history?ns=team-a", W, None),                      # not the front's
        ("HEAD", "/v1/kv/a/history?ns=team-a", W, None),                     # not the front's
        ("DELETE", "/v1/kv/t?ns=team-a", W, None),                           # not the front's
        ("OPTIONS", "/v1/kv/a?ns=team-a", {}, None),                         # not the front's
        ("GET", "/v1/kv/a?ns=team-a", {"x-request-id": "bad id\n"}, None),   # id refused
        ("PUT", "/v1/kv/b%0a?ns=team-b", {**W, **JSON}, b"1"),               # 400 key
        ("PUT", "/v1/kv/b?ns=team-b", {**W, **JSON}, b"1"),                  # 201, team-b
    ]
    answers = await compare(calls)
    statuses = [a.status for a in answers]
    # The cases cover what they say they do.
    for status in (200, 201, 304, 400, 401, 403, 404, 409, 412, 413, 415, 422):
        assert status in statuses, status
    head = answers[4]
    assert head.status == 200 and head.body == b""
    assert dict(head.headers)[b"content-length"] != b"0"
    assert dict(answers[0].headers)[b"x-request-id"] == b"req-0"


async def test_generated_request_ids_and_the_access_log_redaction() -> None:
    async with two_apps() as ((app, state), _):
        assert app.front is not None
        answer = await call(app, state, "GET", "/v1/kv/a?ns=team-a&access_token=" + WRITER,
                            {}, None)
        assert answer.status == 401
        request_id = dict(answer.headers)[b"x-request-id"].decode()
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", request_id)
        assert app.access_log is not None
        app.access_log.flush()
        line = app.access_log.stream.getvalue()
        assert WRITER.encode() not in line
        assert b"access_token=***" in line and request_id.encode() in line


async def test_with_cors_every_call_takes_the_stack() -> None:
    """CORS's layer changes every answer (``Vary: Origin`` even without an Origin), so an
    app with CORS has no front."""
    settings = Settings(backend="memory://", cors_origins="https://ui.example")
    assert create_app(settings).front is None
    calls: list[Call] = [
        ("PUT", "/v1/kv/a?ns=team-a", {**W, **JSON, "origin": "https://ui.example"}, b"1"),
        ("GET", "/v1/kv/a?ns=team-a", {**W, "origin": "https://ui.example"}, None),
        ("GET", "/v1/kv/a?ns=team-a", W, None),
    ]
    answers = await compare(calls, cors_origins="https://ui.example")
    assert dict(answers[1].headers)[b"access-control-allow-origin"] == b"https://ui.example"
    assert dict(answers[2].headers)[b"vary"] == b"Origin"


async def test_an_unexpected_error_is_a_problem_500_on_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    # The endpoint's shared function, as both paths import it.
    monkeypatch.setattr("app.routers.kv.read_key_at", broken)
    monkeypatch.setattr("app.hotpath.read_key_at", broken)
    answers = await compare([
        ("GET", "/v1/kv/a?ns=team-a", W, None),
        ("HEAD", "/v1/kv/a?ns=team-a", W, None),
    ])
    assert [a.status for a in answers] == [500, 500]
    problem = orjson.loads(answers[0].body)
    assert problem["code"] == "internal_error"
    assert dict(answers[0].headers)[b"content-type"] == b"application/problem+json"


@pytest.mark.parametrize("expires_at", [None, 1_764_540_000_123])
@pytest.mark.parametrize("key", ["a", "agent/7f/ü-\u2028", 'q"uote\\'])
def test_an_entry_s_json_is_orjson_s_of_its_dict(key: str, expires_at: int | None) -> None:
    from app.domain.keys import KeyEntry

    entry = KeyEntry(key, b'{"x":[1,2.5,"\\u00e9"]}', 12, 3, 10, 1_764_540_000_000,
                     1_764_540_001_999, expires_at)
    assert entry.to_json() == orjson.dumps(entry.as_dict())


@pytest.mark.parametrize("args", [
    (),
    ("key", b'{"v":1}', 0, "", "", "", "", "", ""),
    ("agent/\u00e9t\u00e9", b"\x00\r\n" * 3000, 12345678901234567890, "match", "12", "-1"),
    ("0", "1", "", "-1", 0, 1, -1, b"", "00"),  # the bulk strings packed once, and not
])
def test_a_packed_script_call_is_redis_py_s_packing(args: tuple[Any, ...]) -> None:
    from redis.asyncio import Redis
    from redis.asyncio.connection import Connection

    from app.backends.redis.runner import ScriptPacker

    client = Redis()
    packer = ScriptPacker("b1|b2", 10, client)
    function = "cb_0123456789abcdef_kv_put"
    argv = ["cb:{team-a}:rev", "team-a", "b1|b2", 10, *args]
    expected = b"".join(Connection().pack_command("FCALL", function, 1, *argv))
    for _ in range(2):  # the head packed, then remembered
        assert packer.fcall(function, "kv_put", "team-a", argv[0], args) == expected
    assert packer.fcall(function, "kv_put", "team-a", argv[0], (1.5,)) is None
    assert packer.fcall(function, "kv_put", "team-a", argv[0], (True,)) is None
