"""Artifacts (API.md section 6): streamed uploads and downloads, byte ranges,
conditional writes on the sha256 ETag, listing."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from typing import IO

import httpx

from corkboard.client._async.base import AsyncBase
from corkboard.client._async.paging import every
from corkboard.client._concurrency import async_upload_body
from corkboard.client._protocol import Call, duration_param, key_path, params
from corkboard.client.types import Artifact, ArtifactInfo, Duration, Page

ByteRange = tuple[int, int | None]


def _range_header(span: ByteRange | None) -> dict[str, str]:
    """``(first, last)`` inclusive, ``(first, None)`` to the end, ``(-n, None)`` the last n."""
    if span is None:
        return {}
    first, last = span
    if first < 0:
        return {"Range": f"bytes={first}"}
    return {"Range": f"bytes={first}-{'' if last is None else last}"}


def _info(key: str, response: httpx.Response) -> ArtifactInfo:
    h = response.headers
    return ArtifactInfo(key, h.get("etag", ""), int(h.get("content-length", "0")),
                        h.get("content-type", "application/octet-stream"),
                        response.status_code, h.get("content-range"))


def _write_condition(if_sha256: str | None, if_absent: bool) -> dict[str, str]:
    if if_sha256 is not None and if_absent:
        raise ValueError("give if_sha256= or if_absent=True, not both")
    if if_absent:
        return {"If-None-Match": "*"}
    return {"If-Match": f'"{if_sha256.strip(chr(34))}"'} if if_sha256 else {}


class AsyncArtifacts(AsyncBase):
    async def put_artifact(
        self, key: str, data: bytes | IO[bytes] | AsyncIterable[bytes], *,
        content_type: str = "application/octet-stream", ttl: Duration | None = None,
        if_sha256: str | None = None, if_absent: bool = False,
    ) -> Artifact:
        """Upload ``data`` (bytes, a binary file, or an iterable of chunks), streamed.
        ``if_absent``: only if no such artifact (AlreadyExists); ``if_sha256``: only if
        its content is still that (RevisionMismatch). Bytes bodies are retried on 503."""
        headers = {"Content-Type": content_type, **_write_condition(if_sha256, if_absent)}
        call = Call.write("PUT", f"/v1/artifacts/{key_path(key)}",
                          raw=async_upload_body(data), params=params(ttl=duration_param(ttl)),
                          headers=headers, retry=True)
        return Artifact.from_json(await self._json(call))

    async def get_artifact(self, key: str, *, range: ByteRange | None = None) -> bytes:
        """The artifact's bytes (or a range of them), read whole: for small artifacts."""
        response = await self._send(
            Call.read(f"/v1/artifacts/{key_path(key)}", headers=_range_header(range))
        )
        return response.content

    @asynccontextmanager
    async def open_artifact(
        self, key: str, *, range: ByteRange | None = None
    ) -> AsyncIterator[tuple[ArtifactInfo, AsyncIterator[bytes]]]:
        """``async with client.open_artifact(key) as (info, chunks):`` streams the bytes
        (or a range: ``(first, last)`` inclusive, ``(first, None)``, ``(-n, None)``)."""
        response = await self._send(
            Call.read(f"/v1/artifacts/{key_path(key)}", headers=_range_header(range)),
            stream=True,
        )
        try:
            yield _info(key, response), response.aiter_bytes()
        finally:
            await response.aclose()

    async def download_artifact(
        self, key: str, file: IO[bytes], *, range: ByteRange | None = None
    ) -> ArtifactInfo:
        """Stream the artifact (or a range) into a binary file."""
        async with self.open_artifact(key, range=range) as (info, chunks):
            async for chunk in chunks:
                file.write(chunk)
        return info

    async def head_artifact(self, key: str) -> ArtifactInfo:
        """The artifact's headers (ETag, size, type) without its bytes."""
        response = await self._send(Call("HEAD", f"/v1/artifacts/{key_path(key)}", retry=True))
        return _info(key, response)

    async def delete_artifact(self, key: str, *, if_sha256: str | None = None) -> None:
        """Delete the artifact (fine when absent)."""
        await self._send(Call.write("DELETE", f"/v1/artifacts/{key_path(key)}",
                                    headers=_write_condition(if_sha256, False), retry=True))

    async def list_artifacts(
        self, pattern: str = "*", *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Artifact]:
        data = await self._json(
            Call.read("/v1/artifacts", params(pattern=pattern, limit=limit, cursor=cursor))
        )
        return Page([Artifact.from_json(a) for a in data["items"]], data.get("next_cursor"),
                    data.get("revision"))

    def iter_artifacts(
        self, pattern: str = "*", *, page_size: int | None = None
    ) -> AsyncIterator[Artifact]:
        return every(lambda cursor: self.list_artifacts(pattern, limit=page_size, cursor=cursor))
