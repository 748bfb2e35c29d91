"""The Redis artifact store: each blob is a run of chunk strings plus a header.

Layout (the ``{blob}`` hash tag keeps one blob on one Cluster slot while different
blobs spread over the cluster)::

    cb:blob:{<id>}      string  the chunk size the blob was written with; written last,
                                removed first: it marks a finished, complete blob
    cb:blob:{<id>}:<n>  string  chunk n (0-based), ``chunk_bytes`` long, the last shorter

No Redis value is larger than a chunk, an upload holds at most one chunk in memory, a
download fetches chunk by chunk (a range fetches only the chunks it needs, with GETRANGE
at its edges), and since every upload writes a fresh id the bytes of a version are never
changed in place: a reader sees one version or, if that version's bytes are removed
under it after the grace period, an error, never a mix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from app.artifacts.base import BlobMissing, BlobReader, BlobStore, BlobWriter, ChunkedWriter
from app.backends.redis.cluster import nodes_from_url
from app.backends.redis.nodes import Command, RedisNodes
from app.backends.redis.store import mapped_errors

#: Chunks removed per UNLINK when a blob is deleted.
DELETE_BATCH = 64


def _header(blob: str) -> str:
    return f"cb:blob:{{{blob}}}"


def _chunk(blob: str, n: int) -> str:
    return f"cb:blob:{{{blob}}}:{n}"


class RedisBlobStore(BlobStore):
    name = "redis"
    needs_grace = True  # readers fetch chunk by chunk and hold nothing open

    def __init__(
        self,
        nodes: RedisNodes,
        *,
        chunk_bytes: int = 262_144,
        url: str = "",
        owns_client: bool = False,
    ) -> None:
        self.nodes = nodes
        self.chunk_bytes = chunk_bytes
        self.url = url
        self._owns_client = owns_client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        chunk_bytes: int,
        timeout: float,
        max_connections: int,
        wait_replicas: int = 0,
    ) -> RedisBlobStore:
        """A store with its own connection pools; closing the store closes them."""
        nodes = nodes_from_url(
            url, timeout=timeout, max_connections=max_connections, wait_replicas=wait_replicas
        )
        return cls(nodes, chunk_bytes=chunk_bytes, url=url, owns_client=True)

    async def call(self, key: str, queue: Callable[[Any], Any], *, write: bool) -> Any:
        """One command on the node serving ``key``; failures are 503."""
        async with mapped_errors(self.url):
            return await self.nodes.call(Command(key, queue, write=write))

    async def start(self) -> None:
        if self._owns_client:
            async with mapped_errors(self.url):
                await self.nodes.start()

    async def close(self) -> None:
        if self._owns_client:
            await self.nodes.close()

    async def create(self, blob: str) -> BlobWriter:
        return _RedisWriter(self, blob)

    async def open(self, blob: str, size: int) -> BlobReader:
        key = _header(blob)
        header = await self.call(key, lambda c: c.get(key), write=False)
        if header is None:
            raise BlobMissing(blob)
        return _RedisReader(self, blob, size, int(header))

    async def delete(self, blob: str) -> None:
        header = _header(blob)
        await self.call(header, lambda c: c.unlink(header), write=True)
        # Chunks are written in order from 0, so they are removed in order until a batch
        # comes back short. (One blob's keys share the hash tag {blob}: one slot.)
        n = 0
        while True:
            keys = [_chunk(blob, i) for i in range(n, n + DELETE_BATCH)]
            removed = await self.call(header, _unlink(keys), write=True)
            if removed < DELETE_BATCH:
                return
            n += DELETE_BATCH

    async def blobs(self) -> list[str]:
        found: set[str] = set()
        async with mapped_errors(self.url):
            for client in self.nodes.masters():  # on a cluster, blobs spread over them all
                async for key in client.scan_iter(match="cb:blob:{*", count=1000):
                    text = key.decode() if isinstance(key, bytes) else str(key)
                    found.add(text[len("cb:blob:{") : text.index("}")])
        return sorted(found)


class _RedisWriter(ChunkedWriter):
    def __init__(self, store: RedisBlobStore, blob: str) -> None:
        super().__init__(blob, store.chunk_bytes)
        self._store = store

    async def _put_chunk(self, data: bytes) -> None:
        key = _chunk(self.blob, self.chunks)
        await self._store.call(key, lambda c: c.set(key, data), write=True)

    async def _seal(self) -> None:
        # The header goes last: only a complete blob has one.
        key, size = _header(self.blob), self.chunk_bytes
        await self._store.call(key, lambda c: c.set(key, size), write=True)

    async def _remove(self) -> None:
        await self._store.delete(self.blob)


def _unlink(keys: list[str]) -> Callable[[Any], Any]:
    return lambda c: c.unlink(*keys)


def _get(key: str) -> Callable[[Any], Any]:
    return lambda c: c.get(key)


def _getrange(key: str, start: int, end: int) -> Callable[[Any], Any]:
    return lambda c: c.getrange(key, start, end)


class _RedisReader(BlobReader):
    def __init__(self, store: RedisBlobStore, blob: str, size: int, chunk_bytes: int) -> None:
        self._store = store
        self._blob = blob
        self._size = size
        self._chunk_bytes = chunk_bytes

    async def stream(self, start: int, end: int) -> AsyncIterator[bytes]:
        size, store = self._chunk_bytes, self._store
        for n in range(start // size, (end - 1) // size + 1 if end > start else 0):
            base = n * size
            length = min(size, self._size - base)
            lo, hi = max(start, base) - base, min(end, base + size) - base
            key = _chunk(self._blob, n)
            if lo == 0 and hi == length:
                data = await store.call(key, _get(key), write=False)
            else:
                data = await store.call(key, _getrange(key, lo, hi - 1), write=False)
            if not isinstance(data, bytes) or len(data) != hi - lo:
                raise BlobMissing(self._blob)
            yield data

    async def close(self) -> None:
        return None
