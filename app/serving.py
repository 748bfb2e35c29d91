"""The HTTP protocol ``corkboard serve`` runs: uvicorn's httptools protocol, whose
responses leave in one write instead of two.

uvicorn writes a response's status line and headers when the app sends
``http.response.start``, and its body on ``http.response.body``: two ``send`` calls on
the socket, two TCP segments, and on loopback the receiver's TCP work done twice inside
the sender's system calls. A profile of a worker under load (bench/README.md, "One write
per response") put about a third of its busy time in those writes.

``JoinedWrites`` stands between the protocol and its transport: a write waits until the
next one or the end of the event loop's turn, whichever comes first, and the two leave
together. A plain response (head, then body, in one turn) is one system call; a stream
(SSE) sends each event by the end of the turn it was written in, as before. Nothing is
reordered, nothing waits past its turn, and a close or abort sees every byte written
before it (a close sends them first; an abort drops them, as the transport would).
Bodies of at least ``JOIN_LIMIT`` bytes are not copied to join them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: A write at least this long is not copied to join it with the one before it.
JOIN_LIMIT = 64 * 1024


class JoinedWrites:
    """A transport whose writes leave by pairs or at the end of the loop's turn."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pending = self._pending
        if pending is None:
            self._pending = bytes(data)
            self._loop.call_soon(self._flush)
            return
        self._pending = None
        if len(data) < JOIN_LIMIT:
            self._transport.write(pending + data)
        else:
            self._transport.write(pending)
            self._transport.write(data)

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def _flush(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            if not self._transport.is_closing():
                self._transport.write(pending)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        pending = self._pending
        return self._transport.get_write_buffer_size() + (len(pending) if pending else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a ``JoinedWrites`` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # (uvloop's transports are not asyncio.Transport subclasses: no isinstance check)
        super().connection_made(JoinedWrites(transport, self.loop))  # type: ignore[arg-type]
