"""The NATS artifact store: blobs are objects of a JetStream Object Store bucket
(``corkboard_artifacts``, or ``?bucket=NAME`` in the URL), in the object store's own
layout, so any NATS object store client (``nats object get``, nats-py's
``ObjectStore.get``, Go's ``ObjectStore``) reads them by blob id:

    $O.<bucket>.C.<blob>               the chunks, in order (the object's "nuid" is the
                                       blob id, so a partly written blob can be found
                                       and removed by its id)
    $O.<bucket>.M.<base64url(blob)>    the object's info (name, size, chunks, SHA-256
                                       digest), written last: only a complete blob has it

An upload publishes each chunk (``CORKBOARD_ARTIFACT_CHUNK_BYTES``, at most the server's
max payload) as it fills and waits for JetStream's acknowledgement before the next one,
so it holds at most one chunk in memory. A download reads the chunks with batched
direct gets, a bounded number of bytes at a time. The info's headers hold a seek index
(``Corkboard-Seek``: the stream sequence of every ``stride``-th chunk, at most
``SEEK_POINTS`` of them), so a Range starts at the chunk before it at most ``stride - 1``
chunks early instead of reading all that precedes it; a blob written by another client
has none and is read from its first chunk. A reader holds no handle on the bytes, so a
replaced blob stays for the grace period (``needs_grace``); removed under a reader, the
reader fails (BlobMissing) rather than mixing versions. Removal purges the blob's
subjects, so nothing of it is left. NATS failures are 503 (store.mapped_errors).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import nats
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo, ObjectMetaOptions, StorageType
from nats.js.errors import BadRequestError, NoStreamResponseError, NotFoundError

from app.artifacts.base import (
    BlobMissing,
    BlobReader,
    BlobStore,
    BlobWriter,
    ChunkedWriter,
    is_blob_id,
)
from app.backends.nats.store import Msg, mapped_errors, message_of, next_msg

#: The Object Store bucket of a ``nats://`` artifact store without ``?bucket=``.
DEFAULT_BUCKET = "corkboard_artifacts"
#: Bytes a download asks the server for at once (whole chunks, at least one) ...
READ_BYTES = 1_048_576
#: ... and at most this many chunks.
READ_CHUNKS = 8
#: The first connection's time limit, in backend timeouts.
CONNECT_TRIES = 3
#: Room left in a message for its headers, below the server's max payload.
HEADROOM = 1024
#: Most entries of a blob's seek index (its stride doubles to stay within).
SEEK_POINTS = 512
#: The info header holding the seek index: ``"<stride> <seq> <seq> ..."``.
SEEK_HEADER = "Corkboard-Seek"


def bucket_of(url: str) -> str:
    """``?bucket=NAME`` of a ``nats://`` URL, else the default bucket."""
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    values = query.get("bucket", [DEFAULT_BUCKET])
    if len(values) != 1 or not values[0] or not all(
        c.isascii() and (c.isalnum() or c in "_-") for c in values[0]
    ):
        # Not the URL itself: it may hold credentials.
        raise ValueError(
            f"bucket must be one name of letters, digits, '_' or '-' in the nats:// URL, "
            f"not {', '.join(values)[:40]!r}"
        )
    return values[0]


class NatsBlobStore(BlobStore):
    name = "nats"
    needs_grace = True  # readers fetch chunk by chunk and hold nothing open

    def __init__(
        self, servers: list[str], *, url: str, bucket: str = DEFAULT_BUCKET, replicas: int = 1,
        chunk_bytes: int = 262_144, timeout: float = 2.0,
        shared: Callable[[], Client] | None = None,
    ) -> None:
        """With ``shared``, the store uses that connection (the NATS backend's) and
        neither opens nor closes one."""
        self.servers = servers
        self.url = url
        self.bucket = bucket
        self.stream = f"OBJ_{bucket}"
        self.replicas = replicas
        self.chunk_bytes = chunk_bytes
        self.timeout = timeout
        self._shared = shared
        self._nc: Client | None = None

    @property
    def nc(self) -> Client:
        if self._shared is not None:
            return self._shared()
        if self._nc is None:
            raise nats.errors.ConnectionClosedError
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream(timeout=self.timeout)

    def chunk_subject(self, blob: str) -> str:
        return f"$O.{self.bucket}.C.{blob}"

    def meta_subject(self, blob: str) -> str:
        return f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(blob.encode()).decode()}"

    async def start(self) -> None:
        async with mapped_errors(self.url):
            if self._shared is None:
                await self._connect()
            await self.ensure()

    async def _connect(self) -> None:
        """Connect, reconnecting for ever once connected; the first connection gets
        ``CONNECT_TRIES`` timeouts (nats-py would try a server that is down for ever)."""
        nc = Client()
        options: dict[str, Any] = {
            "connect_timeout": self.timeout, "allow_reconnect": True,
            "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5,
        }
        try:
            async with asyncio.timeout(self.timeout * CONNECT_TRIES):
                await nc.connect(self.servers, **options)
        except BaseException:
            await nc.close()
            raise
        self._nc = nc

    async def ensure(self) -> None:
        """Create the Object Store bucket unless it exists (an existing one is used as
        it is)."""
        try:
            await self.js.stream_info(self.stream)
        except NotFoundError:
            try:
                await self.js.create_object_store(
                    self.bucket, storage=StorageType.FILE, replicas=self.replicas
                )
            except BadRequestError:  # created meanwhile by another process
                pass

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc = self._nc, None
            try:
                await nc.close()
            except Exception:  # closing a broken connection must not fail the shutdown
                pass

    async def publish(self, subject: str, data: bytes, headers: dict[str, str] | None) -> int:
        """Store a message; its stream sequence."""
        async with mapped_errors(self.url):
            try:
                ack = await self.js.publish(subject, data, timeout=self.timeout, headers=headers)
            except NoStreamResponseError:
                await self.ensure()  # the bucket was deleted under us: make it again
                ack = await self.js.publish(subject, data, timeout=self.timeout, headers=headers)
            return int(ack.seq)

    async def create(self, blob: str) -> BlobWriter:
        size = min(self.chunk_bytes, max(4096, self.nc.max_payload - HEADROOM))
        return _NatsWriter(self, blob, size)

    async def info(self, blob: str) -> ObjectInfo | None:
        """The blob's object info, or None when it is not (or not completely) there."""
        async with mapped_errors(self.url):
            try:
                reply = await self.nc.request(
                    f"$JS.API.DIRECT.GET.{self.stream}.{self.meta_subject(blob)}", b"",
                    timeout=self.timeout,
                )
            except nats.errors.NoRespondersError:
                return None
        msg = message_of(reply)
        if msg is None or msg.deleted:
            return None
        try:
            info = ObjectInfo.from_response(orjson.loads(msg.data))
        except (ValueError, TypeError, KeyError):
            return None  # not an object's info (another client's stray message)
        return None if info.deleted else info

    async def open(self, blob: str, size: int) -> BlobReader:
        info = await self.info(blob)
        if info is None or info.size != size or info.nuid is None:
            raise BlobMissing(blob)
        options = info.options
        chunk = options.max_chunk_size if options and options.max_chunk_size else size
        return _NatsReader(
            self, blob, f"$O.{self.bucket}.C.{info.nuid}", size, chunk, seek_index(info)
        )

    async def delete(self, blob: str) -> None:
        async with mapped_errors(self.url):
            try:
                await self.js.purge_stream(self.stream, subject=self.meta_subject(blob))
                await self.js.purge_stream(self.stream, subject=self.chunk_subject(blob))
            except NotFoundError:
                return  # no bucket: nothing to remove

    async def blobs(self) -> list[str]:
        async with mapped_errors(self.url):
            try:
                info = await self.js.stream_info(self.stream, subjects_filter=f"$O.{self.bucket}.>")
            except NotFoundError:
                return []
        found: set[str] = set()
        prefix = f"$O.{self.bucket}."
        for subject in info.state.subjects or {}:
            kind, _, tail = subject[len(prefix):].partition(".")
            if kind == "M":
                try:
                    tail = base64.urlsafe_b64decode(tail.encode()).decode()
                except ValueError:
                    continue
            if is_blob_id(tail):
                found.add(tail)
        return sorted(found)

    async def chunks(self, subject: str, seq: int, count: int) -> list[Msg]:
        """Up to ``count`` messages of ``subject`` from sequence ``seq`` (one batched
        direct get)."""
        request = {"seq": seq, "next_by_subj": subject, "batch": count}
        found: list[Msg] = []
        async with mapped_errors(self.url):
            nc = self.nc
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            try:
                await nc.publish(f"$JS.API.DIRECT.GET.{self.stream}", orjson.dumps(request),
                                 reply=inbox)
                while True:
                    reply = await next_msg(sub, self.timeout)
                    msg = message_of(reply)
                    if msg is None:
                        return found  # end of batch, no message (404), no bucket
                    found.append(msg)
            finally:
                await sub.unsubscribe()


def seek_index(info: ObjectInfo) -> tuple[int, list[int]]:
    """An object's seek index (stride, the sequence of every stride-th chunk), or
    (1, []) when it has none usable (another client's object)."""
    values = (info.headers or {}).get(SEEK_HEADER)
    text = values[0] if isinstance(values, list) and values else values
    if not isinstance(text, str):
        return 1, []
    parts = text.split(" ")
    if len(parts) > SEEK_POINTS + 1 or not all(
        p.isascii() and p.isdigit() and len(p) <= 20 for p in parts
    ):
        return 1, []
    stride, *seqs = map(int, parts)
    if stride < 1 or any(b <= a for a, b in itertools.pairwise(seqs)):
        return 1, []
    return stride, seqs


class _NatsWriter(ChunkedWriter):
    def __init__(self, store: NatsBlobStore, blob: str, chunk_bytes: int) -> None:
        super().__init__(blob, chunk_bytes)
        self._store = store
        self._size = 0
        self._digest = hashlib.sha256()
        self._stride = 1
        self._seek: list[int] = []  # the sequence of every stride-th chunk

    async def _put_chunk(self, data: bytes) -> None:
        seq = await self._store.publish(self._store.chunk_subject(self.blob), data, None)
        self._size += len(data)
        self._digest.update(data)
        if self.chunks % self._stride == 0:
            self._seek.append(seq)
            if len(self._seek) > SEEK_POINTS:
                self._stride *= 2
                self._seek = self._seek[::2]

    async def _seal(self) -> None:
        digest = base64.urlsafe_b64encode(self._digest.digest()).decode()
        info = ObjectInfo(
            name=self.blob, bucket=self._store.bucket, nuid=self.blob, size=self._size,
            chunks=self.chunks, digest=f"SHA-256={digest}",
            options=ObjectMetaOptions(max_chunk_size=self.chunk_bytes),
            headers={SEEK_HEADER: [" ".join(map(str, [self._stride, *self._seek]))]},
        )
        # The info goes last (a rollup of its subject): only a complete blob has one.
        await self._store.publish(
            self._store.meta_subject(self.blob), orjson.dumps(info.as_dict()),
            {"Nats-Rollup": "sub"},
        )

    async def _remove(self) -> None:
        await self._store.delete(self.blob)


class _NatsReader(BlobReader):
    def __init__(
        self, store: NatsBlobStore, blob: str, subject: str, size: int, chunk_bytes: int,
        seek: tuple[int, list[int]] = (1, []),
    ) -> None:
        self._store = store
        self._blob = blob
        self._subject = subject
        self._size = size
        self._chunk_bytes = chunk_bytes
        self._stride, self._seek = seek

    async def stream(self, start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        size = self._chunk_bytes
        first, last = start // size, (end - 1) // size
        per_read = max(1, min(READ_CHUNKS, READ_BYTES // size))
        n, seq = 0, 1
        if self._seek:  # start at the indexed chunk at or before the first one wanted
            i = min(first // self._stride, len(self._seek) - 1)
            n, seq = i * self._stride, self._seek[i]
        while n <= last:
            msgs = await self._store.chunks(self._subject, seq, min(per_read, last - n + 1))
            if not msgs:
                raise BlobMissing(self._blob)
            for msg in msgs:
                base = n * size
                if len(msg.data) != min(size, self._size - base):
                    raise BlobMissing(self._blob)
                if n >= first:
                    lo, hi = max(start, base) - base, min(end, base + size) - base
                    yield msg.data if lo == 0 and hi == len(msg.data) else msg.data[lo:hi]
                n += 1
                if n > last:
                    return
            seq = msgs[-1].seq + 1

    async def close(self) -> None:
        return None
