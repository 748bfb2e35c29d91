"""The in-memory artifact store: blobs in this process, kept as lists of fixed-size pieces
(so a large upload never needs one huge reallocation or copy). Lost on restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from app.artifacts.base import BlobMissing, BlobReader, BlobStore, BlobWriter

#: Size of the pieces a blob is kept in, and of the pieces a download is sent in.
PIECE_BYTES = 256 * 1024


class MemoryBlobStore(BlobStore):
    name = "memory"
    needs_grace = False  # a reader holds a reference to the pieces it opened

    def __init__(self) -> None:
        self._blobs: dict[str, list[bytes]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._blobs.clear()

    async def create(self, blob: str) -> BlobWriter:
        return _MemoryWriter(self, blob)

    async def open(self, blob: str, size: int) -> BlobReader:
        pieces = self._blobs.get(blob)
        if pieces is None or sum(len(p) for p in pieces) != size:
            raise BlobMissing(blob)
        return _MemoryReader(pieces)

    async def delete(self, blob: str) -> None:
        self._blobs.pop(blob, None)

    async def blobs(self) -> list[str]:
        return list(self._blobs)


class _MemoryWriter(BlobWriter):
    def __init__(self, store: MemoryBlobStore, blob: str) -> None:
        self.blob = blob
        self._store = store
        self._pieces: list[bytes] = []
        self._buffer = bytearray()
        self._finished = False

    async def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= PIECE_BYTES:
            self._pieces.append(bytes(self._buffer[:PIECE_BYTES]))
            del self._buffer[:PIECE_BYTES]

    async def finish(self) -> None:
        if self._buffer:
            self._pieces.append(bytes(self._buffer))
            self._buffer = bytearray()
        self._store._blobs[self.blob] = self._pieces
        self._finished = True

    async def abort(self) -> None:
        self._pieces = []
        self._buffer = bytearray()
        if self._finished:
            self._store._blobs.pop(self.blob, None)


class _MemoryReader(BlobReader):
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def stream(self, start: int, end: int) -> AsyncIterator[bytes]:
        index, offset = divmod(start, PIECE_BYTES)
        position = start
        while position < end:
            piece = self._pieces[index]
            take = min(len(piece) - offset, end - position)
            yield piece if offset == 0 and take == len(piece) else piece[offset : offset + take]
            position += take
            index, offset = index + 1, 0

    async def close(self) -> None:
        return None
