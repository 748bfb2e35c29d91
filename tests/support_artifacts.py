"""Helpers of the artifact tests: an app whose backend and store the test can inspect,
streamed bodies, lock holders for fenced writes, a disconnecting client, process memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.artifacts.base import BlobStore
from app.artifacts.collector import collect_garbage
from app.backends.base import Backend
from app.main import create_app
from app.settings import Settings
from app.syntax import now_ms
from tests.support import LifespanApp

MiB = 1024 * 1024


@dataclass
class Harness:
    """An app on one backend and artifact store, with its internals at hand."""

    client: httpx.AsyncClient
    app: LifespanApp
    backend: Backend
    store: BlobStore
    settings: Settings

    async def collect(self) -> int:
        return await collect_garbage(self.backend, self.store)

    async def blobs(self) -> list[str]:
        return await self.store.blobs()

    async def revision(self, ns: str = "default") -> int:
        return await self.backend.current_revision(ns)


@contextlib.asynccontextmanager
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    app = LifespanApp(create_app(settings))
    await app.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://corkboard") as client:
            yield Harness(
                client, app, app.state["backend"], app.state["artifacts"], settings
            )
    finally:
        await app.stop()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def chunked(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``data`` as a streamed (chunked) request body."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


class PatternBody:
    """A large body generated on the fly (never held whole): ``total`` bytes made of
    1 MiB random blocks, each stamped with its index, with its sha256 computed as sent."""

    def __init__(self, total: int, block: int = MiB) -> None:
        self.total = total
        self.block = block
        self.seed = os.urandom(block)
        self.digest = hashlib.sha256()

    def blocks(self) -> Iterator[bytes]:
        sent = 0
        index = 0
        while sent < self.total:
            piece = index.to_bytes(8, "big") + self.seed[8:]
            piece = piece[: min(self.block, self.total - sent)]
            self.digest.update(piece)
            sent += len(piece)
            index += 1
            yield piece

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.blocks():
            yield piece

    def __iter__(self) -> Iterator[bytes]:
        return self.blocks()


async def grant_lock(backend: Backend, ns: str, name: str, token: int) -> None:
    """Make ``token`` the holder of namespace lock ``name``, as the locks API would."""
    if backend.info.name == "memory":
        from app.backends.memory import LockState, MemoryBackend

        assert isinstance(backend, MemoryBackend)
        backend.store.ns(ns).locks[("", name)] = LockState("owner", token, now_ms(), None)
    elif backend.info.name == "nats":
        import orjson

        from app.backends.nats import NatsBackend
        from app.backends.nats.lockstate import LockRecord
        from app.backends.nats.names import lock_subject

        assert isinstance(backend, NatsBackend)
        record = LockRecord(name, token, "owner", token, now_ms())
        data = orjson.dumps({"lock": record.as_dict(), "event": None})
        await backend.store.publish(ns, lock_subject(ns, name), data, {}, None)
    else:
        from app.backends.redis import RedisBackend

        assert isinstance(backend, RedisBackend)
        key = f"cb:{{{ns}}}:lock:|{name}"
        await backend.client_for(key).hset(
            key,
            mapping={"owner": "owner", "token": token, "acquired_at": now_ms(), "expires_at": 0},
        )


async def disconnecting_put(
    app: LifespanApp, path: str, declared: int, pieces: list[bytes]
) -> list[dict[str, Any]]:
    """PUT ``path`` declaring ``declared`` bytes, send ``pieces``, then disconnect, the
    way a server reports a client that went away mid-upload. Returns what the app sent."""
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": p, "more_body": True} for p in pieces
    ]
    messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    out: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": "PUT", "scheme": "http",
        "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(),
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("corkboard", 80),
        "headers": [(b"host", b"corkboard"), (b"content-length", str(declared).encode()),
                    (b"content-type", b"application/octet-stream")],
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return out


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def memory_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024
    return values


def reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def raw_request(
    app: LifespanApp, method: str, raw_path: bytes, body: bytes = b""
) -> tuple[int, bytes]:
    """One request with ``raw_path`` exactly as a client sent it (httpx would remove dot
    segments), decoded the way uvicorn decodes it. Returns status and body."""
    from urllib.parse import unquote

    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    status = 0
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1", "method": method, "scheme": "http",
        "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("corkboard", 80),
        "headers": [(b"host", b"corkboard"), (b"content-length", str(len(body)).encode())],
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return status, b"".join(chunks)
