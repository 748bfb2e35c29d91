"""The HTTP protocol ``corkboard serve`` runs (app/serving.py): a response's head and body
leave in one write, a lone write leaves by the end of its loop turn, and what a client
sees through a real server is unchanged (pipelined calls, HEAD, 304, streams, bodies
past the join limit)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.serving import JOIN_LIMIT, JoinedWrites
from tests.support import ServiceProcess, running


class Recorded:
    """The transport under ``JoinedWrites``: records what reaches it, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", None))

    def write_eof(self) -> None:
        self.calls.append(("eof", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def joined() -> tuple[JoinedWrites, Recorded]:
    inner = Recorded()
    return JoinedWrites(inner, asyncio.get_running_loop()), inner  # type: ignore[arg-type]


async def next_turn() -> None:
    await asyncio.sleep(0)


async def test_a_head_and_its_body_leave_in_one_write() -> None:
    t, inner = joined()
    t.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert inner.calls == []
    t.write(b"{}")
    assert inner.calls == [("write", b"HTTP/1.1 200 OK\r\n\r\n{}")]
    await next_turn()
    assert len(inner.calls) == 1  # the turn's end has nothing left to send


async def test_a_lone_write_leaves_by_the_end_of_its_turn_in_order() -> None:
    t, inner = joined()
    t.write(b"a")
    t.write(bytearray(b"b"))
    t.write(memoryview(b"c"))
    assert inner.calls == [("write", b"ab")]
    await next_turn()
    assert inner.calls == [("write", b"ab"), ("write", b"c")]
    assert t.get_write_buffer_size() == 0


async def test_a_large_body_is_not_copied_to_join_it() -> None:
    t, inner = joined()
    body = b"x" * JOIN_LIMIT
    t.write(b"head")
    t.write(body)
    assert inner.calls == [("write", b"head"), ("write", body)]


async def test_close_sends_first_abort_drops_and_the_buffer_counts_the_wait() -> None:
    t, inner = joined()
    inner.buffered = 10
    t.write(b"last words")
    assert t.get_write_buffer_size() == 20
    t.close()
    assert inner.calls == [("write", b"last words"), ("close", None)]
    await next_turn()
    assert len(inner.calls) == 2  # nothing written after the close

    t, inner = joined()
    t.write(b"never sent")
    t.abort()
    await next_turn()
    assert inner.calls == [("abort", None)]

    t, inner = joined()
    t.writelines([b"a", b"b"])
    t.write_eof()
    assert inner.calls == [("write", b"ab"), ("eof", None)]
    # Anything else is the transport's own.
    assert t.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_a_write_after_the_transport_closed_is_dropped() -> None:
    t, inner = joined()
    t.write(b"late")
    inner.closing = True
    await next_turn()
    assert inner.calls == []


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


def test_a_body_past_the_join_limit_arrives_whole(server: ServiceProcess) -> None:
    value = "v" * (2 * JOIN_LIMIT)
    assert httpx.put(f"{server.url}/v1/kv/big", json=value).status_code == 201
    r = httpx.get(f"{server.url}/v1/kv/big")
    assert r.status_code == 200 and r.json()["value"] == value


async def test_a_stream_sends_each_event_without_waiting_for_the_next(
    server: ServiceProcess,
) -> None:
    """A watch's head and each event reach the client while nothing else is written."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as c:
        async with c.stream("GET", "/v1/watch", params={"pattern": "live*"}) as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            began = time.monotonic()
            await c.put("/v1/kv/live1", json=1)
            async for line in lines:
                if line.startswith("data:") and '"live1"' in line:
                    break
            # One write, one event: it came without a second write behind it (a write
            # held back for its pair would wait for the heartbeat, seconds away).
            assert time.monotonic() - began < 5
