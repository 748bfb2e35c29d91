"""The HTTP protocol ``corkboard serve`` runs (app/serving.py): a response that declares
its length leaves with its body in one write; everything else is written as uvicorn
writes it, and what a client sees through a real server is unchanged (pipelined calls,
HEAD, 304, streams, large bodies, an app failing between head and body)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.serving import (
    _NAME_TABLE,
    _VALUE_TABLE,
    HeadWithBody,
    JoinedHttpToolsProtocol,
    chunk_writer,
)
from tests.support import ServiceProcess, running


class Recorded:
    """A transport that records each write call (``writelines`` as one)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, parts: list[bytes]) -> None:
        self.calls.append(("writelines", b"".join(parts)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", b""))

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)


def app_sending(*messages: dict[str, Any], fail: bool = False) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
            await asyncio.sleep(0)  # each message in its own turn
        if fail:
            raise RuntimeError("failed between head and body")

    return app


async def serve_one(
    app: Any, request: bytes, protocol_class: type[HttpToolsProtocol] = JoinedHttpToolsProtocol
) -> list[tuple[str, bytes]]:
    """One request through the protocol on a recording transport: its write calls."""
    config = Config(app=app, lifespan="off", access_log=False, log_level="critical")
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Wed, 02 Dec 2026 03:00:00 GMT"), (b"server", b"uvicorn")]
    protocol = protocol_class(config, state, app_state={})
    transport = Recorded()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(request)
    for _ in range(50):
        await asyncio.sleep(0)
    return transport.calls


GET = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
START = {"type": "http.response.start", "status": 200,
         "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]}
BODY = {"type": "http.response.body", "body": b"hello"}
SSE_START = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"text/event-stream")]}


async def test_a_head_with_a_length_leaves_with_its_body_in_one_write() -> None:
    calls = await serve_one(app_sending(START, BODY), GET)
    assert len(calls) == 1
    kind, data = calls[0]
    assert kind == "writelines"
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\nhello")
    assert b"content-length: 5\r\n" in data


async def test_a_body_in_parts_sends_its_first_part_with_the_head_then_the_rest() -> None:
    calls = await serve_one(app_sending(
        START, {"type": "http.response.body", "body": b"he", "more_body": True},
        {"type": "http.response.body", "body": b"llo"},
    ), GET)
    assert [kind for kind, _ in calls] == ["writelines", "write"]
    assert calls[0][1].endswith(b"\r\n\r\nhe") and calls[1][1] == b"llo"


async def test_a_stream_without_a_length_is_written_at_once_message_by_message() -> None:
    calls = await serve_one(app_sending(
        SSE_START, {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True},
    ), GET)
    # The head went out alone, before any body: a watcher sees it at once.
    assert calls[0][0] == "write" and calls[0][1].endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert calls[1] == ("write", b"9\r\ndata: 1\n\n\r\n")


@pytest.mark.parametrize("protocol_class", [HttpToolsProtocol, JoinedHttpToolsProtocol])
async def test_a_chunk_written_at_once_is_framed_as_uvicorns_send_frames_it(
    protocol_class: type[HttpToolsProtocol],
) -> None:
    """``chunk_writer`` (the watch feed's way to write a parked stream's frames) writes
    what uvicorn's send writes for a chunk with more to come, and nothing, answering
    False, wherever that send would wait or do otherwise."""
    answers: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        write = chunk_writer(send)
        assert write is not None
        answers.append(("before the start", write(b"early")))
        await send(SSE_START)
        answers.append(("started", write(b"data: 1\n\n")))
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        answers.append(("empty", write(b"")))
        flow = send.__self__.flow
        flow.pause_writing()  # (what the transport does over its high-water mark)
        answers.append(("paused", write(b"data: 3\n\n")))
        flow.resume_writing()
        answers.append(("resumed", write(b"data: 4\n\n")))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        answers.append(("complete", write(b"late")))

    calls = await serve_one(app, GET, protocol_class)
    assert answers == [("before the start", False), ("started", True), ("empty", False),
                       ("paused", False), ("resumed", True), ("complete", False)]
    assert calls[0][1].endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert calls[1:] == [("write", b"9\r\ndata: 1\n\n\r\n"), ("write", b"9\r\ndata: 2\n\n\r\n"),
                         ("write", b"9\r\ndata: 4\n\n\r\n"), ("write", b"0\r\n\r\n")]


async def test_a_chunk_is_not_written_once_the_client_is_gone_or_the_transport_closes(
) -> None:
    answers: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        write = chunk_writer(send)
        assert write is not None
        await send(SSE_START)
        cycle = send.__self__
        cycle.transport.closing = True
        answers.append(write(b"data: 1\n\n"))
        cycle.transport.closing = False
        cycle.disconnected = True  # (as connection_lost sets it)
        answers.append(write(b"data: 2\n\n"))

    calls = await serve_one(app, GET)
    assert answers == [False, False] and len(calls) == 1  # the head only


def test_only_uvicorns_httptools_send_has_a_chunk_writer() -> None:
    async def send(message: Any) -> None:
        pass

    class Other:
        async def send(self, message: Any) -> None:
            pass

    assert chunk_writer(send) is None
    assert chunk_writer(Other().send) is None
    assert chunk_writer(None) is None


@pytest.mark.parametrize("case", ["head", "304", "zero-length"])
async def test_an_answer_without_a_body_is_not_held(case: str) -> None:
    request, start = GET, dict(START)
    if case == "head":
        request = b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n"
    elif case == "304":
        start = {"type": "http.response.start", "status": 304, "headers": [(b"etag", b'"1"')]}
    else:
        start = {"type": "http.response.start", "status": 200,
                 "headers": [(b"content-length", b"0")]}
    body = {"type": "http.response.body", "body": b""}
    # The head is written when its start message is sent, before the body message.
    calls = await serve_one(app_sending(start, body), request)
    assert calls[0][0] == "write" and calls[0][1].startswith(b"HTTP/1.1 ")


async def test_an_app_failing_after_its_start_gets_uvicorns_500_not_a_cut_response() -> None:
    calls = await serve_one(app_sending(START, fail=True), GET)
    written = b"".join(data for _, data in calls)
    assert written.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"HTTP/1.1 200" not in written


async def test_a_connection_close_is_sent_after_the_joined_write() -> None:
    calls = await serve_one(
        app_sending(START, BODY), b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    assert [kind for kind, _ in calls] == ["writelines", "close"]
    assert b"connection: close\r\n" in calls[0][1]


def _start(*headers: tuple[Any, Any], status: int = 200) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


_CL5 = (b"content-length", b"5")
#: (request, start message, body message) cases: what uvicorn's own protocol writes for
#: each is what the joined protocol must write, byte for byte, closing alike.
_SHAPES: dict[str, tuple[bytes, dict[str, Any], dict[str, Any]]] = {
    "plain": (GET, START, BODY),
    "request asks to close": (GET[:-2] + b"connection: close\r\n\r\n", START, BODY),
    "HTTP/1.0": (b"GET / HTTP/1.0\r\n\r\n", START, BODY),
    "upper-case names": (GET, _start((b"Content-Length", b"5"), (b"X-Id", b"1")), BODY),
    "two lengths, the first counts": (GET, _start(_CL5, (b"content-length", b"9")), BODY),
    "length with a space": (GET, _start((b"content-length", b" 5")), BODY),
    "app closes": (GET, _start(_CL5, (b"connection", b"close")), BODY),
    "chunked and a length": (GET, _start((b"transfer-encoding", b"chunked"), _CL5), BODY),
    "bad value": (GET, _start(_CL5, (b"x-bad", b"a\nb")), BODY),
    "bad name": (GET, _start(_CL5, (b"x bad", b"1")), BODY),
    "value not bytes": (GET, _start(_CL5, (b"x-str", "1")), BODY),
    "body shorter": (GET, START, {"type": "http.response.body", "body": b"hell"}),
    "body longer": (GET, START, {"type": "http.response.body", "body": b"hello!"}),
    "unknown status": (GET, _start(_CL5, status=600), BODY),
    "201 with an etag": (GET, _start(_CL5, (b"etag", b'"7"'), status=201), BODY),
}
#: Bodies that do not match their length: uvicorn closes the connection on them.
_CUT = {"body shorter", "body longer"}
#: The shapes written in one call by HeadWithBody.send_whole.
_WHOLE = {"plain", "request asks to close", "HTTP/1.0", "upper-case names",
          "two lengths, the first counts", "201 with an etag"}


@pytest.mark.parametrize("shape", sorted(_SHAPES))
async def test_every_response_shape_is_written_as_uvicorn_writes_it(
    shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    request, start, body = _SHAPES[shape]
    whole = HeadWithBody.send_whole
    taken: list[bool] = []

    def spy(self: HeadWithBody, start: Any, message: Any) -> bool:
        taken.append(whole(self, start, message))
        return taken[-1]

    monkeypatch.setattr(HeadWithBody, "send_whole", spy)
    joined = await serve_one(app_sending(start, body), request)
    assert taken == [shape in _WHOLE]
    plain = await serve_one(app_sending(start, body), request, HttpToolsProtocol)
    closed = ("close", b"") in plain
    assert (("close", b"") in joined) == closed
    if shape in _CUT:
        # uvicorn wrote the head, then closed on the body; the held head never leaves.
        assert closed and joined == [("close", b"")]
        return
    assert b"".join(data for _, data in joined) == b"".join(data for _, data in plain)
    if shape in _WHOLE:
        assert joined[0][0] == "writelines"
        assert len([kind for kind, _ in joined if kind != "close"]) == 1


def test_the_header_checks_find_exactly_the_bytes_uvicorns_patterns_find() -> None:
    for c in range(256):
        one = bytes([c])
        assert bool(HEADER_RE.search(one)) == (0 in one.translate(_NAME_TABLE)), c
        assert bool(HEADER_VALUE_RE.search(one)) == (0 in one.translate(_VALUE_TABLE)), c
        name = b"x-ok" + one + b"ok"
        assert bool(HEADER_RE.search(name)) == (0 in name.translate(_NAME_TABLE)), c


async def seen_scope(
    request: bytes, protocol_class: type[HttpToolsProtocol], **options: Any
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The scope an app sees for ``request``, and what was written."""
    scopes: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append({k: v for k, v in scope.items() if k != "state"})
        await send(START)
        await send(BODY)

    config = Config(app=app, lifespan="off", access_log=False, log_level="critical", **options)
    config.load()
    protocol = protocol_class(config, ServerState(), app_state={})
    transport = Recorded()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(request)
    for _ in range(50):
        await asyncio.sleep(0)
    return (scopes[0] if scopes else {}), transport.calls


@pytest.mark.parametrize(("request_", "options"), [
    (GET, {}),
    (b"GET /a%20b/c%2Fd?x=1&y=%20 HTTP/1.1\r\nhost: x\r\n\r\n", {}),
    (b"PUT /k HTTP/1.0\r\ncontent-length: 2\r\n\r\n{}", {}),
    (b"GET /v1/kv/a HTTP/1.1\r\nhost: x\r\n\r\n", {"root_path": "/api"}),
    (GET, {"limit_concurrency": 0}),  # every request over the limit: uvicorn's 503
])
async def test_the_scope_and_answer_are_uvicorns(request_: bytes, options: Any) -> None:
    joined, joined_calls = await seen_scope(request_, JoinedHttpToolsProtocol, **options)
    plain, plain_calls = await seen_scope(request_, HttpToolsProtocol, **options)
    assert joined == plain
    assert b"".join(d for _, d in joined_calls) == b"".join(d for _, d in plain_calls)
    if options.get("limit_concurrency") == 0:
        assert joined == {} and joined_calls[0][1].startswith(b"HTTP/1.1 503 ")
    else:
        assert joined["path"] and joined_calls[0][1].startswith(b"HTTP/1.1 200 ")


class Timed(Recorded):
    """A recording transport that tells when it was closed (the loop's clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()
        self.closed_at = 0.0

    def close(self) -> None:
        super().close()
        self.closed_at = asyncio.get_running_loop().time()
        self.closed.set()


def keep_alive_protocol(app: Any, timeout: float) -> tuple[JoinedHttpToolsProtocol, Timed]:
    config = Config(app=app, lifespan="off", access_log=False, log_level="critical",
                    timeout_keep_alive=timeout)  # fmt: skip
    config.load()
    protocol = JoinedHttpToolsProtocol(config, ServerState(), app_state={})
    transport = Timed()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def answering(answered: asyncio.Event, times: list[float] | None = None) -> Any:
    """An app answering START and BODY, then setting ``answered`` (and noting the loop's
    time in ``times``)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(START)
        await send(BODY)
        if times is not None:
            times.append(asyncio.get_running_loop().time())
        answered.set()

    return app


async def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    answered = asyncio.Event()
    loop = asyncio.get_running_loop()
    protocol, transport = keep_alive_protocol(answering(answered), 0.05)
    protocol.data_received(GET)
    await answered.wait()
    idle_from = loop.time()
    await asyncio.wait_for(transport.closed.wait(), 5)
    assert transport.closed_at - idle_from >= 0.05 - 0.005  # (the loop clock's resolution)
    assert protocol.timeout_keep_alive_task is None


async def test_a_connection_used_again_is_closed_a_timeout_after_its_last_answer() -> None:
    answers: list[float] = []
    answered = asyncio.Event()
    protocol, transport = keep_alive_protocol(answering(answered, answers), 0.5)
    protocol.data_received(GET)
    await answered.wait()
    first_timer = protocol.timeout_keep_alive_task
    assert first_timer is not None
    answered.clear()
    await asyncio.sleep(0.1)  # the client's think time, well within the timeout
    protocol.data_received(GET)
    await answered.wait()
    # One timer per idle period: the second answer did not make one of its own.
    assert protocol.timeout_keep_alive_task is first_timer
    await asyncio.wait_for(transport.closed.wait(), 5)
    assert transport.closed_at - answers[1] >= 0.5 - 0.005
    assert [kind for kind, _ in transport.calls] == ["writelines", "writelines", "close"]


async def test_a_connection_is_not_closed_while_its_request_is_answered() -> None:
    release, started, answered = asyncio.Event(), asyncio.Event(), asyncio.Event()
    calls = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            started.set()
            await release.wait()  # slower than the keep-alive timeout
        await send(START)
        await send(BODY)
        answered.set()

    loop = asyncio.get_running_loop()
    protocol, transport = keep_alive_protocol(app, 0.05)
    protocol.data_received(GET)
    await answered.wait()
    answered.clear()
    protocol.data_received(GET)
    await started.wait()
    await asyncio.sleep(0.15)  # the first timer fires meanwhile
    assert not transport.closing
    release.set()
    await answered.wait()
    last = loop.time()
    await asyncio.wait_for(transport.closed.wait(), 5)
    assert transport.closed_at - last >= 0.05 - 0.005


# Through a real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServiceProcess]:
    with running(ServiceProcess({"CORKBOARD_BACKEND": "memory://"})) as (s,):
        yield s


def exchange(
    port: int, raw: bytes, responses: int, *, bodiless: bool = False
) -> list[tuple[bytes, bytes]]:
    """Sends ``raw`` (one or more requests) on one connection and reads ``responses``
    answers: (head, body) each, by Content-Length (none: ``bodiless``, HEAD's)."""
    out: list[tuple[bytes, bytes]] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        buf = b""
        while len(out) < responses:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                assert chunk, (buf, out)
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            if head.startswith(b"HTTP/1.1 304") or bodiless:
                length = 0
            while len(buf) < length:
                chunk = sock.recv(65536)
                assert chunk
                buf += chunk
            out.append((head, buf[:length]))
            buf = buf[length:]
    return out


def test_pipelined_calls_head_and_304_answer_as_before(server: ServiceProcess) -> None:
    port = server.port
    assert httpx.put(f"{server.url}/v1/kv/pipe", json={"n": 1}).status_code == 201
    raw = (
        b"GET /v1/kv/pipe HTTP/1.1\r\nhost: x\r\n\r\n"
        b"GET /v1/kv/pipe HTTP/1.1\r\nhost: x\r\nif-none-match: \"1\"\r\n\r\n"
        b"GET /v1/kv/missing HTTP/1.1\r\nhost: x\r\n\r\n"
        b"PUT /v1/kv/pipe HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 7\r\n\r\n{\"n\":2}"
    )
    answers = exchange(port, raw, 4)
    statuses = [head.split(b" ", 2)[1] for head, _ in answers]
    assert statuses == [b"200", b"304", b"404", b"200"]
    assert b'"value":{"n":1}' in answers[0][1]
    assert answers[1][1] == b""
    assert b'"code":"not_found"' in answers[2][1]
    assert b'"value":{"n":2}' in answers[3][1]
    raw = b"HEAD /v1/kv/pipe HTTP/1.1\r\nhost: x\r\n\r\n" * 2
    for head, body in exchange(port, raw, 2, bodiless=True):
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: 1" in head
        assert body == b""


def test_a_large_body_arrives_whole(server: ServiceProcess) -> None:
    value = "v" * (600 * 1024)
    assert httpx.put(f"{server.url}/v1/kv/big", json=value).status_code == 201
    r = httpx.get(f"{server.url}/v1/kv/big")
    assert r.status_code == 200 and r.json()["value"] == value


async def test_a_stream_sends_its_head_and_each_event_at_once(server: ServiceProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        async with c.stream("GET", "/v1/watch", params={"pattern": "live*"}) as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            began = time.monotonic()
            await c.put("/v1/kv/live1", json=1)
            async for line in lines:
                if line.startswith("data:") and '"live1"' in line:
                    break
            # Written when sent, not held for a next write (the heartbeat is 15 s away).
            assert time.monotonic() - began < 5


async def test_a_streams_access_line_counts_every_byte_it_sent(server: ServiceProcess) -> None:
    """The chunks of a watch stream skip the inner layers' wrappers (STREAM_BODY), but the
    access log still counts them: bytes_sent is the body the client received."""
    request_id = f"stream-bytes-{time.monotonic_ns()}"
    received = b""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        headers = {"x-request-id": request_id}
        async with c.stream("GET", "/v1/watch", params={"pattern": "sb*"},
                            headers=headers) as r:
            assert r.status_code == 200 and r.headers["x-request-id"] == request_id
            await c.put("/v1/kv/sb1", json={"n": 1})
            await c.put("/v1/kv/sb2", json="two")
            async for chunk in r.aiter_raw():
                received += chunk
                if b'"sb2"' in received:
                    break
    assert received.count(b"event: kv.put\n") == 2
    deadline = time.monotonic() + 10
    line = None
    while line is None and time.monotonic() < deadline:
        line = next((json.loads(x) for x in server.output().splitlines()
                     if request_id in x and "corkboard.access" in x), None)
        if line is None:
            await asyncio.sleep(0.05)  # the stream ends when the server sees the close
    assert line is not None, server.output()[-2000:]
    assert (line["route"], line["status"]) == ("/v1/watch", 200)
    assert line["bytes_sent"] == len(received)


async def test_a_stream_through_the_cors_layer_keeps_its_headers_and_events() -> None:
    """Chunks of events go straight to the server's send (past CORS's wrapper, too); the
    start still takes the whole stack, so CORS's headers are on the stream."""
    env = {"CORKBOARD_BACKEND": "memory://", "CORKBOARD_CORS_ORIGINS": "https://dash.example"}
    with running(ServiceProcess(env)) as (server,):
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
            origin = {"origin": "https://dash.example"}
            async with c.stream("GET", "/v1/watch", params={"pattern": "cors*"},
                                headers=origin) as r:
                assert r.status_code == 200
                assert r.headers["access-control-allow-origin"] == "https://dash.example"
                await c.put("/v1/kv/cors1", json=1, headers=origin)
                async for line in r.aiter_lines():
                    if line.startswith("data:") and '"cors1"' in line:
                        break
