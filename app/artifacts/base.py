"""The artifact store interface: blobs of bytes under generated ids, written as a stream.

A blob store knows nothing of keys, revisions or HTTP. Each upload goes into a new blob
id (never a user's key, so a key cannot become a path or overwrite bytes in place); the
state backend then points the artifact at that blob atomically, and the replaced blob
is removed later by the collector. Readers therefore see one version's bytes, whole.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from app.errors import PayloadTooLarge

_BLOB_ID_RE = re.compile(r"[0-9a-f]{32}")


class BlobMissing(Exception):
    """The store has no complete bytes under this blob id (removed, or never finished)."""


def new_blob_id() -> str:
    """A fresh blob id: 128 random bits as 32 lowercase hex digits."""
    return secrets.token_hex(16)


def is_blob_id(blob: str) -> bool:
    return _BLOB_ID_RE.fullmatch(blob) is not None


class BlobWriter(ABC):
    """One upload into one blob id. Bytes become readable only through ``finish``."""

    blob: str

    @abstractmethod
    async def write(self, data: bytes) -> None:
        """Append ``data``; may buffer a bounded amount (never the whole blob)."""

    @abstractmethod
    async def finish(self) -> None:
        """Make the bytes durable and readable under the blob id; BlobMissing if the blob
        was removed meanwhile (an upload whose reservation lapsed)."""

    @abstractmethod
    async def abort(self) -> None:
        """Remove everything this writer wrote, finished or not. Idempotent."""


class ChunkedWriter(BlobWriter):
    """A writer storing fixed-size chunks as they fill (one chunk in memory at most),
    then the blob's header/info with ``_seal`` once all are stored."""

    def __init__(self, blob: str, chunk_bytes: int) -> None:
        self.blob = blob
        self.chunk_bytes = chunk_bytes
        self.chunks = 0
        self._buffer = bytearray()

    @abstractmethod
    async def _put_chunk(self, data: bytes) -> None:
        """Store chunk number ``self.chunks`` (counted up after this returns)."""

    @abstractmethod
    async def _seal(self) -> None:
        """Store what makes the blob complete and readable (written last)."""

    @abstractmethod
    async def _remove(self) -> None:
        """Remove whatever of the blob was stored."""

    async def _chunk(self, data: bytes) -> None:
        await self._put_chunk(data)
        self.chunks += 1

    async def write(self, data: bytes) -> None:
        size = self.chunk_bytes
        self._buffer += data
        while len(self._buffer) >= size:
            await self._chunk(bytes(self._buffer[:size]))
            del self._buffer[:size]

    async def finish(self) -> None:
        if self._buffer:
            await self._chunk(bytes(self._buffer))
            self._buffer = bytearray()
        await self._seal()

    async def abort(self) -> None:
        self._buffer = bytearray()
        await self._remove()


class BlobReader(ABC):
    """An opened blob: its bytes stay readable until ``close``, or, where the store has
    no handles (Redis), for the grace period after the blob is replaced."""

    @abstractmethod
    def stream(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start`` (inclusive) to ``end`` (exclusive) in pieces of bounded size;
        raises BlobMissing if the bytes disappear midway."""

    @abstractmethod
    async def close(self) -> None:
        """Release the handle. Idempotent."""


class BlobStore(ABC):
    """Where artifact bytes live: ``memory://``, ``redis://``, ``nats://`` or ``file:///path``."""

    #: The URL scheme, reported by /v1/capabilities.
    name: str
    #: True when an opened reader holds no handle on the bytes, so a replaced blob must
    #: stay for a grace period before removal (Redis). Files and memory keep what a
    #: reader opened alive by themselves.
    needs_grace: bool

    @abstractmethod
    async def start(self) -> None:
        """Connect or prepare storage; raise BackendUnavailable if it cannot be used."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""

    @abstractmethod
    async def create(self, blob: str) -> BlobWriter:
        """A writer for a new blob id."""

    @abstractmethod
    async def open(self, blob: str, size: int) -> BlobReader:
        """A reader for a finished blob of ``size`` bytes; BlobMissing if it is gone."""

    @abstractmethod
    async def delete(self, blob: str) -> None:
        """Remove a blob, finished or partly written; nothing happens if it is absent."""

    @abstractmethod
    async def blobs(self) -> list[str]:
        """The ids of every blob held, finished or partly written (maintenance, tests)."""

    async def purge(self) -> int:
        """Remove every blob; used at start when no state references any. Returns the
        count removed."""
        ids = await self.blobs()
        for blob in ids:
            await self.delete(blob)
        return len(ids)


@dataclass(frozen=True, slots=True)
class WrittenBlob:
    size: int
    sha256: str


async def write_stream(
    writer: BlobWriter, chunks: AsyncIterable[bytes], limit: int
) -> WrittenBlob:
    """Copy ``chunks`` into ``writer`` while hashing and counting them; PayloadTooLarge
    as soon as more than ``limit`` bytes have arrived (the excess is never written)."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        if not chunk:
            continue
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The artifact exceeds the limit of {limit} bytes.")
        digest.update(chunk)
        await writer.write(chunk)
    return WrittenBlob(size, digest.hexdigest())
