"""A strict Server-Sent Events client for the watch tests: it sees every frame on the
wire (comments, id-only frames, retry hints), and can cut a stream at any byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

PATTERN_CHARS = re.compile(r"[A-Za-z0-9._:/@=+\-*]+")


@dataclass
class Frame:
    """One frame (the lines up to a blank line), as a browser's EventSource parses it."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        assert self.data is not None, self
        return json.loads(self.data)

    @property
    def revision(self) -> int:
        assert self.id is not None, self
        return int(self.id)

    @property
    def is_event(self) -> bool:
        """A dispatched event: it has data (comment- and id-only frames are not)."""
        return self.data is not None


class Parser:
    """Incremental parser: bytes in, complete frames out; a partial frame waits."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        self.buffer += chunk
        frames: list[Frame] = []
        while True:
            end = self.buffer.find(b"\n\n")
            if end < 0:
                return frames
            block, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
            assert b"\r" not in block, block
            frames.append(parse_block(block.decode()))


def parse_block(block: str) -> Frame:
    frame = Frame()
    data: list[str] = []
    for line in block.split("\n"):
        if line.startswith(":"):
            frame.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            frame.id = value
        elif name == "event":
            frame.event = value
        elif name == "data":
            data.append(value)
        elif name == "retry":
            frame.retry = int(value)
        else:
            raise AssertionError(f"unexpected SSE line {line!r}")
    if data:
        frame.data = "\n".join(data)
    return frame


class Stream:
    """An open watch: frames in order, with a timeout on each wait."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.chunks = response.aiter_raw()
        self.parser = Parser()
        self.pending: list[Frame] = []
        self.received = 0  # bytes
        self.ended = False
        self.opening: Frame | None = None

    async def frame(self, timeout: float = 10.0) -> Frame | None:
        """The next complete frame; None when the server ended the stream."""
        while not self.pending:
            try:
                chunk = await asyncio.wait_for(anext(self.chunks), timeout)
            except StopAsyncIteration:
                self.ended = True
                return None
            self.received += len(chunk)
            self.pending.extend(self.parser.feed(chunk))
        return self.pending.pop(0)

    async def event(self, timeout: float = 10.0) -> Frame:
        """The next dispatched event, skipping comments and id-only frames."""
        while True:
            frame = await self.frame(timeout)
            assert frame is not None, "the stream ended"
            if frame.is_event:
                return frame

    async def events(self, count: int, timeout: float = 10.0) -> list[Frame]:
        return [await self.event(timeout) for _ in range(count)]


@contextlib.asynccontextmanager
async def watch(
    client: httpx.AsyncClient,
    *,
    last_event_id: str | int | None = None,
    expect: int = 200,
    **params: Any,
) -> AsyncIterator[Stream]:
    """Open ``GET /v1/watch`` (params as query) and yield the stream after its opening."""
    headers = {"accept": "text/event-stream"}
    if last_event_id is not None:
        headers["last-event-id"] = str(last_event_id)
    query = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    async with client.stream("GET", "/v1/watch", params=query, headers=headers) as response:
        assert response.status_code == expect, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        opening = await stream.frame()
        assert opening is not None and opening.comments[:1] == ["corkboard watch"], opening
        stream.opening = opening
        yield stream


def key_matches(pattern: str, key: str) -> bool:
    """The API's pattern semantics, written independently of app.syntax for the tests."""
    assert PATTERN_CHARS.fullmatch(pattern)
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, key, re.DOTALL) is not None


def event_matches(event: dict[str, Any], pattern: str | None, types: list[str] | None) -> bool:
    if types and not any(event["type"] == t or event["type"].startswith(t + ".") for t in types):
        return False
    return pattern is None or key_matches(pattern, event["key"])
