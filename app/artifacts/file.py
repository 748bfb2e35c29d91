"""The file artifact store: one file per blob under a root directory.

Layout under the root of ``file:///path``::

    tmp/<id>              an upload in progress
    blobs/<id[:2]>/<id>   a finished blob

An upload is written to ``tmp/``, fsynced, then renamed into ``blobs/`` (atomic on one
filesystem) and the directory fsynced, so a crash leaves either no blob or a complete
one. File names are generated blob ids, checked to be 32 hex digits before any path is
built: a user's key never becomes a path. A reader keeps its file open, so the bytes it
opened stay readable even if the blob is replaced and unlinked meanwhile (POSIX).
Blocking file calls run in worker threads; a cancelled request waits for its thread
call to return before the file is closed, so a descriptor is never reused under it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from anyio.to_thread import run_sync

from app.artifacts.base import BlobMissing, BlobReader, BlobStore, BlobWriter, is_blob_id
from app.errors import BackendUnavailable

#: Bytes buffered before a write call, and read per read call.
IO_BYTES = 1024 * 1024

T = TypeVar("T")


class InvalidFileStoreURL(ValueError):
    """A ``file:`` URL that does not name an absolute directory."""


def root_from_url(url: str) -> Path:
    """The directory of ``file:///abs/path`` (or ``file://localhost/abs/path``)."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise InvalidFileStoreURL(
            f"artifact store URL {url!r} must name an absolute directory, "
            "e.g. file:///var/lib/corkboard/artifacts"
        )
    return Path(unquote(parts.path))


async def _io(func: Callable[..., T], *args: Any) -> T:
    """Run a blocking file call in a worker thread; a failing disk (full, read-only,
    permissions) is a 503 for the request, like an unreachable backend."""
    try:
        return await run_sync(func, *args)
    except OSError as exc:
        raise BackendUnavailable(
            f"The artifact store's directory failed: {exc.strerror or exc}."
        ) from exc


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBlobStore(BlobStore):
    name = "file"
    needs_grace = False  # an open file survives its unlinking

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.blob_dir = root / "blobs"

    @classmethod
    def from_url(cls, url: str) -> FileBlobStore:
        return cls(root_from_url(url))

    def _path(self, blob: str) -> Path:
        if not is_blob_id(blob):  # never build a path from anything but a generated id
            raise ValueError(f"not a blob id: {blob[:80]!r}")
        return self.blob_dir / blob[:2] / blob

    def _tmp_path(self, blob: str) -> Path:
        if not is_blob_id(blob):
            raise ValueError(f"not a blob id: {blob[:80]!r}")
        return self.tmp_dir / blob

    async def start(self) -> None:
        def prepare() -> None:
            for folder in (self.root, self.tmp_dir, self.blob_dir):
                folder.mkdir(parents=True, exist_ok=True)
            probe = self.tmp_dir / ".probe"
            probe.write_bytes(b"")
            probe.unlink()

        try:
            await run_sync(prepare)
        except OSError as exc:
            raise BackendUnavailable(
                f"The artifact directory {self.root} cannot be used: {exc.strerror or exc}."
            ) from exc

    async def close(self) -> None:
        return None

    async def create(self, blob: str) -> BlobWriter:
        path = self._tmp_path(blob)
        fd = await _io(
            os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
        )
        return _FileWriter(self, blob, fd)

    async def open(self, blob: str, size: int) -> BlobReader:
        path = self._path(blob)

        def open_checked() -> int:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError as exc:
                raise BlobMissing(blob) from exc
            if os.fstat(fd).st_size != size:
                os.close(fd)
                raise BlobMissing(blob)
            return fd

        return _FileReader(blob, await _io(open_checked))

    async def delete(self, blob: str) -> None:
        def remove() -> None:
            for path in (self._path(blob), self._tmp_path(blob)):
                path.unlink(missing_ok=True)

        await _io(remove)

    async def blobs(self) -> list[str]:
        def scan() -> list[str]:
            found = [p.name for p in self.tmp_dir.iterdir() if is_blob_id(p.name)]
            for sub in self.blob_dir.iterdir():
                if sub.is_dir():
                    found.extend(p.name for p in sub.iterdir() if is_blob_id(p.name))
            return sorted(found)

        return await _io(scan)

    async def purge(self) -> int:
        count = len(await self.blobs())

        def wipe() -> None:
            for folder in (self.tmp_dir, self.blob_dir):
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True, exist_ok=True)

        await _io(wipe)
        return count


class _FileWriter(BlobWriter):
    def __init__(self, store: FileBlobStore, blob: str, fd: int) -> None:
        self.blob = blob
        self._store = store
        self._fd: int | None = fd
        self._buffer = bytearray()

    async def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= IO_BYTES and self._fd is not None:
            full, self._buffer = self._buffer, bytearray()
            await _io(_write_all, self._fd, full)

    async def finish(self) -> None:
        fd = self._fd
        assert fd is not None, "finish() after abort()"
        tmp, final = self._store._tmp_path(self.blob), self._store._path(self.blob)
        rest, self._buffer = self._buffer, bytearray()

        def commit() -> None:
            _write_all(fd, rest)
            os.fsync(fd)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, final)
            except FileNotFoundError as exc:  # removed by the collector: it took too long
                raise BlobMissing(self.blob) from exc
            _fsync_dir(final.parent)

        try:
            await _io(commit)
        finally:
            self._fd = None
            await _io(os.close, fd)

    async def abort(self) -> None:
        fd, self._fd = self._fd, None
        self._buffer = bytearray()
        if fd is not None:
            await _io(os.close, fd)
        await self._store.delete(self.blob)


class _FileReader(BlobReader):
    def __init__(self, blob: str, fd: int) -> None:
        self._blob = blob
        self._fd: int | None = fd

    async def stream(self, start: int, end: int) -> AsyncIterator[bytes]:
        position = start
        while position < end:
            fd = self._fd
            if fd is None:
                raise BlobMissing(self._blob)
            data = await _io(os.pread, fd, min(IO_BYTES, end - position), position)
            if not data:
                raise BlobMissing(self._blob)  # truncated under us: never send a mix
            position += len(data)
            yield data

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            await _io(os.close, fd)
