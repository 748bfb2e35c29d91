"""Artifacts (API.md section 6) through HTTP, on every state backend x artifact store.

Each test runs on memory, Redis, Redis Cluster and NATS state, each with the memory,
Redis and file artifact stores, and with the NATS Object Store on memory and NATS state.
The harness exposes the backend and the store so that "nothing was stored" is checked in
the store itself, and runs the collector when the test says so.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.artifacts.base import BlobMissing
from app.settings import Settings
from tests.conftest import flush
from tests.nats_server import flush_nats
from tests.support_artifacts import (
    Harness,
    MiB,
    chunked,
    disconnecting_put,
    files_under,
    grant_lock,
    harness,
    raw_request,
    sha,
)

STORES = ["memory", "redis", "file", "nats"]

MakeHarness = Callable[..., AbstractAsyncContextManager[Harness]]
MakeSettings = Callable[..., Settings]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    """The artifact store of this run: memory://, a flushed Redis, a directory, or a
    NATS server's Object Store (with memory and NATS state only: the Redis engines add
    nothing to what the NATS store is tested for). NATS state runs with the NATS and
    memory stores: its artifact index is the same code whatever holds the bytes, and the
    Redis and file stores are tested with every other state."""
    if backend.startswith("nats://") and request.param in ("redis", "file"):
        pytest.skip("NATS state runs with the NATS and memory artifact stores")
    if request.param == "memory":
        return "memory://"
    if request.param == "file":
        return (tmp_path / "artifacts").as_uri()
    if request.param == "nats":
        if backend.startswith("nats://"):
            return backend  # the backend's own server, flushed by the backend fixture
        if backend != "memory://":
            pytest.skip("the NATS artifact store runs with memory and NATS state")
        nats: str = request.getfixturevalue("nats_url")
        flush_nats(nats)
        return nats
    if backend.startswith("redis+cluster://"):
        return backend  # the cluster itself, flushed by the backend fixture
    url: str = request.getfixturevalue("redis_url")
    if backend != url:
        flush(url)  # with Redis state, the backend fixture has flushed it already
    return url


@pytest.fixture
def make_harness(make_settings: MakeSettings, store_url: str) -> MakeHarness:
    """Apps on the suite's settings (``make_settings``) with artifacts in ``store_url``."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[Harness]:
        values: dict[str, Any] = {
            "artifacts": store_url,
            # The tests run the collector themselves, so what it removes is deterministic.
            "artifact_gc_interval_seconds": 300,
            "artifact_grace_seconds": 0,
            # Small Redis chunks, so that small artifacts span several of them.
            "artifact_chunk_bytes": 4096,
        }
        values.update(overrides)
        return harness(make_settings(**values))

    return make


@pytest.fixture
async def h(make_harness: MakeHarness) -> AsyncIterator[Harness]:
    async with make_harness() as h:
        yield h


async def put(h: Harness, key: str, data: bytes, **kw: Any) -> httpx.Response:
    return await h.client.put(f"/v1/artifacts/{key}", content=data, **kw)


async def events(h: Harness, since: int = 0) -> list[dict[str, Any]]:
    r = await h.client.get("/v1/events", params={"since": since})
    assert r.status_code == 200
    found: list[dict[str, Any]] = r.json()["events"]
    return found


# -- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 11, 3 * 4096 + 5])
async def test_round_trip(h: Harness, size: int) -> None:
    data = os.urandom(size)
    r = await put(h, "runs/r1/out.bin", data, headers={"Content-Type": "image/png"})
    assert r.status_code == 201
    body = r.json()
    assert body["key"] == "runs/r1/out.bin"
    assert body["size"] == size
    assert body["sha256"] == sha(data)
    assert body["content_type"] == "image/png"
    assert body["expires_at"] is None
    assert body["revision"] == await h.revision()
    assert body["created_at"].endswith("Z")
    assert r.headers["etag"] == f'"{sha(data)}"'

    r = await h.client.get("/v1/artifacts/runs/r1/out.bin")
    assert r.status_code == 200
    assert r.content == data
    assert sha(r.content) == sha(data)
    assert r.headers["etag"] == f'"{sha(data)}"'
    assert r.headers["content-length"] == str(size)
    assert r.headers["content-type"] == "image/png"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["last-modified"].endswith("GMT")

    r = await h.client.head("/v1/artifacts/runs/r1/out.bin")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(size)
    assert r.headers["etag"] == f'"{sha(data)}"'
    assert r.headers["content-type"] == "image/png"
    assert len(await h.blobs()) == 1


async def test_round_trip_20_mib_streamed(make_harness: MakeHarness) -> None:
    data = os.urandom(20 * MiB)
    async with make_harness(artifact_chunk_bytes=262_144) as h:
        r = await h.client.put("/v1/artifacts/big.bin", content=chunked(data))
        assert r.status_code == 201
        assert r.json()["sha256"] == sha(data)
        assert r.json()["size"] == len(data)
        async with h.client.stream("GET", "/v1/artifacts/big.bin") as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(len(data))
            got = b"".join([piece async for piece in r.aiter_raw()])
        assert sha(got) == sha(data)
        assert r.headers["etag"] == f'"{sha(data)}"'


async def test_replace_answers_200_and_removes_the_old_bytes(h: Harness) -> None:
    r1 = await put(h, "a", b"one")
    r2 = await put(h, "a", b"two!", headers={"Content-Type": "text/plain"})
    assert (r1.status_code, r2.status_code) == (201, 200)
    assert r2.json()["revision"] == r1.json()["revision"] + 1
    r = await h.client.get("/v1/artifacts/a")
    assert r.content == b"two!"
    # Stored exactly as sent: no charset added to a text type.
    assert r.headers["content-type"] == "text/plain"
    assert len(await h.blobs()) == 2  # the old version waits for the collector
    assert await h.collect() == 1
    assert len(await h.blobs()) == 1
    assert (await h.client.get("/v1/artifacts/a")).content == b"two!"


async def test_content_type(h: Harness) -> None:
    r = await h.client.put("/v1/artifacts/x", content=b"x", headers={"Content-Type": ""})
    assert r.json()["content_type"] == "application/octet-stream"
    ct = 'multipart/mixed; boundary="a b"; q=1'
    r = await put(h, "y", b"y", headers={"Content-Type": ct})
    assert r.json()["content_type"] == ct
    assert (await h.client.get("/v1/artifacts/y")).headers["content-type"] == ct
    events_ = await events(h)
    assert events_[-1]["value"]["content_type"] == ct
    before = await h.revision()
    for bad in ["text", "text/plain\\x", "a/b; x=\x01", "x" * 300 + "/y", "/plain"]:
        r = await put(h, "z", b"z", headers={"Content-Type": bad})
        assert r.status_code == 400, bad
        assert r.json()["code"] == "invalid_request"
    assert await h.revision() == before
    assert (await h.client.get("/v1/artifacts/z")).status_code == 404
    assert len(await h.blobs()) == 2


async def test_missing_artifact(h: Harness) -> None:
    for method in ("GET", "HEAD"):
        r = await h.client.request(method, "/v1/artifacts/nope")
        assert r.status_code == 404
    r = await h.client.get("/v1/artifacts/nope")
    assert r.json()["code"] == "not_found"
    assert r.headers["content-type"] == "application/problem+json"


async def test_namespaces_are_separate(h: Harness) -> None:
    await h.client.put("/v1/artifacts/k", params={"ns": "team-a"}, content=b"A")
    await h.client.put("/v1/artifacts/k", params={"ns": "team-b"}, content=b"BB")
    assert (await h.client.get("/v1/artifacts/k", params={"ns": "team-a"})).content == b"A"
    assert (await h.client.get("/v1/artifacts/k", params={"ns": "team-b"})).content == b"BB"
    assert (await h.client.get("/v1/artifacts/k")).status_code == 404
    r = await h.client.put("/v1/artifacts/k", params={"ns": "Bad NS"}, content=b"x")
    assert r.status_code == 400


# -- conditional requests ------------------------------------------------------------


async def test_conditional_put(h: Harness) -> None:
    r = await put(h, "c", b"v1", headers={"If-None-Match": "*"})
    assert r.status_code == 201
    etag1 = r.headers["etag"]
    rev = await h.revision()

    r = await put(h, "c", b"v2", headers={"If-None-Match": "*"})
    assert r.status_code == 412
    assert r.json()["code"] == "already_exists"
    assert r.json()["current"]["sha256"] == sha(b"v1")

    r = await put(h, "c", b"v2", headers={"If-Match": f'"{sha(b"other")}"'})
    assert r.status_code == 412
    assert r.json()["code"] == "revision_mismatch"
    assert r.json()["current"]["sha256"] == sha(b"v1")

    r = await put(h, "c", b"v2", headers={"If-Match": f'W/{etag1}'})
    assert r.status_code == 412  # If-Match compares strongly: a weak tag never matches

    r = await put(h, "absent", b"v", headers={"If-Match": etag1})
    assert r.status_code == 412
    assert r.json()["code"] == "revision_mismatch"
    assert r.json()["current"] is None
    r = await put(h, "absent", b"v", headers={"If-Match": "*"})
    assert r.status_code == 412

    for headers in ({"If-Match": etag1, "If-None-Match": "*"}, {"If-None-Match": etag1}):
        r = await put(h, "c", b"v2", headers=headers)
        assert r.status_code == 400
        assert r.json()["code"] == "invalid_request"

    # Refused writes changed nothing: content, revision, store.
    assert (await h.client.get("/v1/artifacts/c")).content == b"v1"
    assert await h.revision() == rev
    await h.collect()
    assert len(await h.blobs()) == 1

    r = await put(h, "c", b"v2", headers={"If-Match": f'"x", {etag1}'})
    assert r.status_code == 200
    r = await put(h, "c", b"v3", headers={"If-Match": "*"})
    assert r.status_code == 200
    assert (await h.client.get("/v1/artifacts/c")).content == b"v3"


async def test_of_racing_create_only_uploads_exactly_one_wins(h: Harness) -> None:
    bodies = [os.urandom(40_000) for _ in range(4)]
    results = await asyncio.gather(*(
        h.client.put("/v1/artifacts/race", content=chunked(b, 4096),
                     headers={"If-None-Match": "*"})
        for b in bodies
    ))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201, 412, 412, 412]
    winner = next(r for r in results if r.status_code == 201).json()["sha256"]
    assert sha((await h.client.get("/v1/artifacts/race")).content) == winner
    assert all(r.json()["current"]["sha256"] == winner for r in results if r.status_code == 412)
    await h.collect()
    assert len(await h.blobs()) == 1
    assert await h.revision() == 1


async def test_conditional_get(h: Harness) -> None:
    etag = (await put(h, "g", b"hello")).headers["etag"]
    for inm in (etag, f"W/{etag}", "*", f'"zzz", {etag}', etag.strip('"')):
        for method in ("GET", "HEAD"):
            r = await h.client.request(method, "/v1/artifacts/g", headers={"If-None-Match": inm})
            assert r.status_code == 304, inm
            assert r.content == b""
            assert r.headers["etag"] == etag
    r = await h.client.get("/v1/artifacts/g", headers={"If-None-Match": '"zzz"'})
    assert r.status_code == 200
    assert r.content == b"hello"

    r = await h.client.get("/v1/artifacts/g", headers={"If-Match": etag})
    assert r.status_code == 200
    r = await h.client.get("/v1/artifacts/g", headers={"If-Match": '"zzz"'})
    assert r.status_code == 412
    assert r.json()["current"]["sha256"] == sha(b"hello")


# -- ranges --------------------------------------------------------------------------

RANGE_DATA_SIZE = 20_000


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-99", (0, 100)),
        ("bytes=4000-8200", (4000, 8201)),  # across Redis chunk boundaries
        ("bytes=4096-8191", (4096, 8192)),  # exactly one chunk
        ("bytes=19990-", (19990, 20000)),
        ("bytes=19990-99999", (19990, 20000)),
        ("bytes=-100", (19900, 20000)),
        ("bytes=-50000", (0, 20000)),
        ("bytes=7-7", (7, 8)),
        ("BYTES = 5 - 9", (5, 10)),
        ("bytes=0-" + "9" * 40, (0, 20000)),
    ],
)
async def test_range(h: Harness, header: str, span: tuple[int, int]) -> None:
    data = os.urandom(RANGE_DATA_SIZE)
    await put(h, "r", data)
    start, end = span
    r = await h.client.get("/v1/artifacts/r", headers={"Range": header})
    assert r.status_code == 206
    assert r.content == data[start:end]
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(data)}"
    assert r.headers["content-length"] == str(end - start)
    assert r.headers["etag"] == f'"{sha(data)}"'
    r = await h.client.head("/v1/artifacts/r", headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(data)}"


@pytest.mark.parametrize(
    "header", ["bytes=20000-", "bytes=99999-100000", "bytes=5-2", "bytes=abc", "bytes=-0",
               "bytes=-", "bytes=", "bytes=1-2-3", "bytes=--5"],
)
async def test_range_not_satisfiable(h: Harness, header: str) -> None:
    await put(h, "r", os.urandom(RANGE_DATA_SIZE))
    r = await h.client.get("/v1/artifacts/r", headers={"Range": header})
    assert r.status_code == 416
    assert r.json()["code"] == "range_not_satisfiable"
    assert r.headers["content-range"] == f"bytes */{RANGE_DATA_SIZE}"


async def test_ranges_answered_with_everything(h: Harness) -> None:
    data = os.urandom(1000)
    etag = (await put(h, "r", data)).headers["etag"]
    for headers in (
        {"Range": "items=0-5"},  # a unit we do not know is ignored (RFC 9110)
        {"Range": "bytes=0-1,5-6"},  # several ranges: the whole content
        {"Range": "bytes=0-1", "If-Range": '"other"'},  # changed since: the whole content
        {"Range": "bytes=0-1", "If-Range": "Wed, 21 Oct 2015 07:28:00 GMT"},
    ):
        r = await h.client.get("/v1/artifacts/r", headers=headers)
        assert r.status_code == 200, headers
        assert r.content == data
    r = await h.client.get("/v1/artifacts/r", headers={"Range": "bytes=0-1", "If-Range": etag})
    assert r.status_code == 206
    assert r.content == data[:2]


async def test_range_of_empty_artifact(h: Harness) -> None:
    await put(h, "e", b"")
    r = await h.client.get("/v1/artifacts/e", headers={"Range": "bytes=0-0"})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */0"
    r = await h.client.get("/v1/artifacts/e", headers={"Range": "bytes=-100"})
    assert r.status_code == 200
    assert r.content == b""


# -- limits, interruptions, timeouts -------------------------------------------------


async def test_oversized_upload_is_refused_and_nothing_is_stored(make_harness: MakeHarness) -> None:
    async with make_harness(max_artifact_bytes=10_000) as h:
        await put(h, "keep", b"previous")
        rev = await h.revision()
        # Declared too large: refused before reading.
        r = await put(h, "big", os.urandom(10_001))
        assert r.status_code == 413
        assert r.json()["code"] == "payload_too_large"
        # Streamed without a length: refused once the limit is passed.
        r = await h.client.put("/v1/artifacts/big", content=chunked(os.urandom(50_000), 3000))
        assert r.status_code == 413
        assert r.json()["code"] == "payload_too_large"
        r = await h.client.put("/v1/artifacts/keep", content=chunked(os.urandom(10_001), 3000))
        assert r.status_code == 413
        assert (await h.client.get("/v1/artifacts/big")).status_code == 404
        assert (await h.client.get("/v1/artifacts/keep")).content == b"previous"
        assert await h.revision() == rev
        assert len(await h.blobs()) == 1
        await h.collect()
        assert len(await h.blobs()) == 1
        # Exactly the limit is fine.
        r = await h.client.put("/v1/artifacts/big", content=chunked(os.urandom(10_000), 3000))
        assert r.status_code == 201


async def test_interrupted_upload_stores_nothing(h: Harness) -> None:
    old = os.urandom(30_000)
    await put(h, "doc", old)
    rev = await h.revision()
    pieces = [os.urandom(16_384) for _ in range(3)]
    await disconnecting_put(h.app, "/v1/artifacts/doc", 100_000, pieces)
    await disconnecting_put(h.app, "/v1/artifacts/new", 100_000, pieces)
    r = await h.client.get("/v1/artifacts/doc")
    assert r.content == old
    assert (await h.client.get("/v1/artifacts/new")).status_code == 404
    assert await h.revision() == rev
    # The partial blobs were removed at once, and nothing is left for the collector.
    assert len(await h.blobs()) == 1
    assert await h.collect() == 0


async def test_slow_upload_times_out(make_harness: MakeHarness) -> None:
    async with make_harness(artifact_upload_timeout_seconds=0.2) as h:
        await put(h, "slow", b"before")

        async def trickle() -> AsyncIterator[bytes]:
            yield b"x" * 5000
            await asyncio.sleep(0.5)
            yield b"y"

        r = await h.client.put("/v1/artifacts/slow", content=trickle())
        assert r.status_code == 408
        assert r.json()["code"] == "request_timeout"
        assert (await h.client.get("/v1/artifacts/slow")).content == b"before"
        assert len(await h.blobs()) == 1


async def test_concurrent_overwrite_readers_see_whole_versions(make_harness: MakeHarness) -> None:
    versions = [os.urandom(150_000), os.urandom(90_000), os.urandom(120_000)]
    by_etag = {f'"{sha(v)}"': v for v in versions}
    # A grace long enough for these downloads (Redis readers hold no handle).
    async with make_harness(artifact_grace_seconds=30) as h:
        await put(h, "hot", versions[0])
        seen: set[str] = set()

        async def writer() -> None:
            for i in range(1, 16):
                r = await put(h, "hot", versions[i % 3])
                assert r.status_code == 200
                await h.collect()
                await asyncio.sleep(0)

        async def reader() -> None:
            for _ in range(8):
                r = await h.client.get("/v1/artifacts/hot")
                assert r.status_code == 200
                assert by_etag[r.headers["etag"]] == r.content
                assert r.headers["content-length"] == str(len(r.content))
                seen.add(r.headers["etag"])
                r = await h.client.get("/v1/artifacts/hot", headers={"Range": "bytes=-5000"})
                assert r.status_code == 206
                assert r.content == by_etag[r.headers["etag"]][-5000:]
                await asyncio.sleep(0)

        await asyncio.gather(writer(), reader(), reader(), reader())
        assert seen
        assert (await h.client.get("/v1/artifacts/hot")).content == versions[15 % 3]


async def test_an_open_download_keeps_its_version(make_harness: MakeHarness) -> None:
    """A download that resolved version 1 gets version 1 whole, even if version 2 is
    written and the collector runs while it is midway."""
    old, new = os.urandom(300_000), os.urandom(200_000)
    async with make_harness(artifact_grace_seconds=30) as h:
        await put(h, "doc", old)
        meta = await h.backend.artifact_get("default", "doc")
        assert meta is not None
        reader = await h.store.open(meta.blob, meta.size)
        pieces = reader.stream(0, meta.size)
        got = [await anext(pieces)]
        assert (await put(h, "doc", new)).status_code == 200
        await h.collect()
        got.extend([p async for p in pieces])
        await reader.close()
        assert b"".join(got) == old
        assert (await h.client.get("/v1/artifacts/doc")).content == new


async def test_a_download_outliving_the_grace_fails_rather_than_mixing(
    make_harness: MakeHarness, store_url: str
) -> None:
    if not store_url.startswith(("redis", "nats")):
        pytest.skip("memory and file readers hold their version open: no grace involved")
    async with make_harness(artifact_grace_seconds=0) as h:
        await put(h, "doc", os.urandom(50_000))
        meta = await h.backend.artifact_get("default", "doc")
        assert meta is not None
        reader = await h.store.open(meta.blob, meta.size)
        pieces = reader.stream(0, meta.size)
        await anext(pieces)
        await put(h, "doc", os.urandom(50_000))
        assert await h.collect() == 1
        with pytest.raises(BlobMissing):
            async for _ in pieces:
                pass


# -- delete, list, TTL, events -------------------------------------------------------


async def test_delete(h: Harness) -> None:
    await put(h, "d", b"data")
    rev = await h.revision()
    r = await h.client.delete("/v1/artifacts/d", headers={"If-Match": f'"{sha(b"x")}"'})
    assert r.status_code == 412
    assert r.json()["current"]["sha256"] == sha(b"data")
    assert await h.revision() == rev
    r = await h.client.delete("/v1/artifacts/d", headers={"If-Match": f'"{sha(b"data")}"'})
    assert r.status_code == 204
    assert (await h.client.get("/v1/artifacts/d")).status_code == 404
    r = await h.client.delete("/v1/artifacts/d")
    assert r.status_code == 204  # idempotent, and no event for nothing
    assert await h.revision() == rev + 1
    event = (await events(h, rev))[0]
    assert event["type"] == "artifact.delete"
    assert event["key"] == "d"
    assert event["reason"] == "deleted"
    assert event["value"] is None
    assert event["old_value"]["sha256"] == sha(b"data")
    assert await h.collect() == 1
    assert await h.blobs() == []


async def test_list_paging(h: Harness) -> None:
    keys = [f"run/{i:02d}.log" for i in range(7)]
    for k in [*keys, "other", "run-x"]:
        await put(h, k, k.encode(), headers={"Content-Type": "text/plain"})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"pattern": "run/*", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = await h.client.get("/v1/artifacts", params=params)
        assert r.status_code == 200
        body = r.json()
        assert body["revision"] == await h.revision()
        seen.extend(item["key"] for item in body["items"])
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == keys
    assert pages == 3
    item = (await h.client.get("/v1/artifacts", params={"pattern": "other"})).json()["items"]
    assert item == [{
        "key": "other", "size": 5, "sha256": sha(b"other"), "content_type": "text/plain",
        "created_at": item[0]["created_at"], "expires_at": None, "revision": 8,
    }]
    all_keys = [i["key"] for i in (await h.client.get("/v1/artifacts")).json()["items"]]
    assert all_keys == sorted([*keys, "other", "run-x"])
    for params in ({"pattern": ""}, {"pattern": "a b"}, {"cursor": "!!"}, {"limit": 0},
                   {"limit": 100_000}):
        r = await h.client.get("/v1/artifacts", params=params)
        assert r.status_code == 400, params


async def test_ttl_expiry(h: Harness) -> None:
    r = await put(h, "tmp/t", b"soon gone", params={"ttl": "200ms"})
    assert r.status_code == 201
    assert r.json()["expires_at"] is not None
    rev = await h.revision()
    r = await h.client.get("/v1/events", params={"since": rev, "wait": "5s", "types": "artifact"})
    (event,) = r.json()["events"]
    assert event["type"] == "artifact.delete"
    assert event["reason"] == "expired"
    assert event["old_value"]["key"] == "tmp/t"
    assert (await h.client.get("/v1/artifacts/tmp/t")).status_code == 404
    assert (await h.client.get("/v1/artifacts")).json()["items"] == []
    await h.collect()
    assert await h.blobs() == []
    # A replaced artifact loses its old TTL.
    await put(h, "tmp/u", b"1", params={"ttl": "1s"})
    r = await put(h, "tmp/u", b"2")
    assert r.json()["expires_at"] is None


async def test_bad_ttl_stores_nothing(h: Harness) -> None:
    for ttl in ("-1", "soon", "400d", "nan"):
        r = await put(h, "t", b"x", params={"ttl": ttl})
        assert r.status_code == 400
        assert r.json()["code"] == "invalid_ttl"
    assert await h.revision() == 0
    assert await h.blobs() == []


async def test_events_carry_metadata_not_bytes(h: Harness) -> None:
    data = b"SECRET-BYTES" * 100
    await put(h, "e/1", data, headers={"Content-Type": "text/csv"})
    await put(h, "e/1", b"v2")
    r = await h.client.get("/v1/events", params={"since": 0})
    raw = r.content
    assert b"SECRET-BYTES" not in raw
    first, second = r.json()["events"]
    assert first["type"] == second["type"] == "artifact.put"
    assert first["value"] == {
        "key": "e/1", "size": len(data), "sha256": sha(data), "content_type": "text/csv",
        "created_at": first["value"]["created_at"], "expires_at": None, "revision": 1,
    }
    assert first["old_value"] is None
    assert second["old_value"] == first["value"]
    assert second["value"]["revision"] == second["revision"] == 2


# -- fencing -------------------------------------------------------------------------


async def test_fenced_writes(h: Harness) -> None:
    await grant_lock(h.backend, "default", "writer", 7)
    ok = {"Fence-Lock": "writer", "Fence-Token": "7"}
    stale = {"Fence-Lock": "writer", "Fence-Token": "6"}
    r = await put(h, "f", b"v1", headers=ok)
    assert r.status_code == 201
    rev = await h.revision()
    r = await put(h, "f", b"v2", headers=stale)
    assert r.status_code == 409
    assert r.json()["code"] == "stale_fence"
    r = await h.client.delete("/v1/artifacts/f", headers=stale)
    assert r.status_code == 409
    r = await put(h, "f", b"v2", headers={"Fence-Lock": "nobody", "Fence-Token": "7"})
    assert r.status_code == 409
    r = await put(h, "f", b"v2", headers={"Fence-Lock": "writer"})
    assert r.status_code == 400
    assert (await h.client.get("/v1/artifacts/f")).content == b"v1"
    assert await h.revision() == rev
    await h.collect()
    assert len(await h.blobs()) == 1
    assert (await h.client.delete("/v1/artifacts/f", headers=ok)).status_code == 204


async def test_fenced_writes_with_a_session_lock(h: Harness) -> None:
    r = await h.client.post("/v1/sessions/s1/locks/writer", json={"owner": "bot"})
    assert r.status_code == 200
    token = str(r.json()["token"])
    ok = {"Fence-Lock": "writer", "Fence-Token": token, "Fence-Session": "s1"}
    other = {**ok, "Fence-Session": "s2"}
    assert (await put(h, "f", b"v1", headers=ok)).status_code == 201
    rev = await h.revision()
    r = await put(h, "f", b"v2", headers=other)
    assert r.status_code == 409
    assert r.json()["code"] == "stale_fence"
    # The namespace lock of that name is another lock: its fence is not the session's.
    r = await put(h, "f", b"v2", headers={"Fence-Lock": "writer", "Fence-Token": token})
    assert r.status_code == 409
    assert (await h.client.delete("/v1/artifacts/f", headers=other)).status_code == 409
    assert (await h.client.get("/v1/artifacts/f")).content == b"v1"
    assert await h.revision() == rev
    assert (await h.client.delete("/v1/artifacts/f", headers=ok)).status_code == 204


# -- keys and the file store's root --------------------------------------------------

# As httpx sends them (it removes literal dot segments itself; the wire-level test
# below sends those exactly).
BAD_KEYS = [
    "%2e%2e/escape", "a/%2E%2E/%2e%2e/escape", "..%2fescape", "%2e%2e%2f%2e%2e%2fescape",
    "%2fetc%2fpasswd", "/etc/passwd", "a//b", "a/", "a%00b", "a%5c..%5cb", "sp ace",
    "star*", "x" * 513, "%2e%2e", "a/%2e%2e",
]


async def test_bad_keys_are_refused(h: Harness, tmp_path: Path) -> None:
    before = set(tmp_path.rglob("*"))
    for key in BAD_KEYS:
        for method in ("PUT", "GET", "HEAD", "DELETE"):
            r = await h.client.request(method, f"/v1/artifacts/{key}", content=b"evil")
            assert r.status_code == 400, (method, key, r.status_code)
            if method != "HEAD":
                assert r.json()["code"] == "invalid_key", (method, key)
    assert await h.revision() == 0
    assert await h.blobs() == []
    # Nothing appeared anywhere under the test's directory, inside the root or outside.
    created = set(tmp_path.rglob("*")) - before
    assert all(p.is_dir() for p in created), created
    assert not Path("/etc/passwd").read_bytes().startswith(b"evil")


@pytest.mark.parametrize(
    "raw_path",
    [b"/v1/artifacts/../escape", b"/v1/artifacts/a/../../../escape", b"/v1/artifacts/a/..",
     b"/v1/artifacts/%2e%2e/escape", b"/v1/artifacts/..%2F..%2Fescape",
     b"/v1/artifacts//tmp/escape", b"/v1/artifacts/%2Ftmp%2Fescape",
     b"/v1/artifacts/a\\..\\escape"],
)
async def test_traversal_as_sent_on_the_wire(
    h: Harness, tmp_path: Path, raw_path: bytes
) -> None:
    before = set(tmp_path.rglob("*"))
    for method in ("PUT", "GET", "DELETE"):
        status, body = await raw_request(h.app, method, raw_path, b"evil")
        assert status == 400, (method, raw_path, status)
        assert b'"invalid_key"' in body
    assert await h.revision() == 0
    assert await h.blobs() == []
    created = set(tmp_path.rglob("*")) - before
    assert all(p.is_dir() for p in created), created


async def test_dotted_keys_that_are_valid_stay_inside_the_root(
    h: Harness, tmp_path: Path, store_url: str
) -> None:
    for key in ("..a", "a..", "a/...", ".hidden", "x/.b"):
        r = await put(h, key, key.encode())
        assert r.status_code == 201, key
        assert (await h.client.get(f"/v1/artifacts/{key}")).content == key.encode()
    if store_url.startswith("file:"):
        root = tmp_path / "artifacts"
        outside = [p for p in files_under(tmp_path) if root not in p.parents]
        assert outside == []
        names = {p.name for p in files_under(root)}
        assert len(names) == 5 and all(len(n) == 32 for n in names)  # blob ids, not keys


async def test_capabilities_name_the_store(h: Harness, store_url: str) -> None:
    r = await h.client.get("/v1/capabilities")
    assert r.json()["artifact_store"] == store_url.split("://")[0]
    assert r.json()["limits"]["max_artifact_bytes"] == h.settings.max_artifact_bytes


# -- life cycle of blobs and stores --------------------------------------------------


async def test_a_lapsed_upload_cannot_commit_and_is_collected(h: Harness) -> None:
    from app.artifacts.base import new_blob_id
    from app.errors import RequestTimeout
    from app.syntax import now_ms

    blob = new_blob_id()
    await h.backend.artifact_reserve("default", blob, now_ms() - 1)
    writer = await h.store.create(blob)
    await writer.write(b"late bytes")
    await writer.finish()
    assert await h.blobs() == [blob]
    assert await h.collect() == 1  # its reservation lapsed: the bytes are garbage
    assert await h.blobs() == []
    with pytest.raises(RequestTimeout):
        await h.backend.artifact_put(
            "default", "late", blob=blob, size=10, sha256=sha(b"late bytes"),
            content_type="text/plain",
        )
    assert (await h.client.get("/v1/artifacts/late")).status_code == 404
    assert await h.revision() == 0


async def test_an_unlapsed_reservation_is_left_alone(h: Harness) -> None:
    from app.artifacts.base import new_blob_id
    from app.syntax import now_ms

    blob = new_blob_id()
    await h.backend.artifact_reserve("default", blob, now_ms() + 60_000)
    writer = await h.store.create(blob)
    await writer.write(b"in progress")
    assert await h.collect() == 0
    await writer.finish()
    put_ = await h.backend.artifact_put(
        "default", "k", blob=blob, size=11, sha256=sha(b"in progress"), content_type="a/b"
    )
    assert put_.created
    assert (await h.client.get("/v1/artifacts/k")).content == b"in progress"


async def test_restart_keeps_or_purges_blobs_with_the_state(
    make_harness: MakeHarness, backend: str, store_url: str
) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store starts empty anyway")
    async with make_harness() as h:
        await put(h, "doc", b"bytes of the first run")
        assert len(await h.blobs()) == 1
    async with make_harness() as h:
        if backend == "memory://":
            # The state that referenced the blob is gone, and so is the blob.
            assert await h.blobs() == []
            assert (await h.client.get("/v1/artifacts/doc")).status_code == 404
        else:
            assert len(await h.blobs()) == 1
            assert (await h.client.get("/v1/artifacts/doc")).content == b"bytes of the first run"


async def test_lost_bytes_are_a_503_not_a_500(h: Harness) -> None:
    await put(h, "doc", b"bytes")
    for blob in await h.blobs():
        await h.store.delete(blob)  # as if the store lost them
    r = await h.client.get("/v1/artifacts/doc")
    assert r.status_code == 503
    assert r.json()["code"] == "backend_unavailable"
    assert (await h.client.head("/v1/artifacts/doc")).status_code == 200


def test_store_urls() -> None:
    from app.artifacts import UnknownArtifactStore, store_from_url
    from app.artifacts.file import FileBlobStore

    settings = Settings()
    store = store_from_url("file:///var/lib/x%20y", settings)
    assert isinstance(store, FileBlobStore)
    assert store.root == Path("/var/lib/x y")
    assert isinstance(store_from_url("file://localhost/srv/a", settings), FileBlobStore)
    for url in ("s3://bucket", "file://relative/dir", "file:relative", "ftp://x", "nothing"):
        with pytest.raises(UnknownArtifactStore):
            store_from_url(url, settings)


async def test_an_unusable_directory_stops_the_start(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    settings = Settings(backend="memory://", artifacts=(not_a_dir / "root").as_uri())
    with pytest.raises(RuntimeError, match="startup failed"):
        async with harness(settings):
            pass


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--artifacts", "s3://bucket"], "unknown artifact store URL"),
        (["--artifacts", "file://relative"], "must name an absolute directory"),
        (["--backend", "redis://127.0.0.1:1/0", "--artifacts", "memory://", "--workers", "2"],
         "memory:// artifacts live in one process"),
    ],
)
def test_serve_refuses_a_bad_artifact_store(args: list[str], message: str) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CORKBOARD_")}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0", *args],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr


async def test_a_failing_directory_is_a_503_and_stores_nothing(
    h: Harness, store_url: str, tmp_path: Path
) -> None:
    if not store_url.startswith("file:"):
        pytest.skip("file store only")
    await put(h, "doc", b"old")
    tmp = tmp_path / "artifacts" / "tmp"
    tmp.rmdir()
    tmp.write_bytes(b"")  # uploads can no longer be created
    try:
        r = await put(h, "doc", b"new")
        assert r.status_code == 503
        assert r.json()["code"] == "backend_unavailable"
    finally:
        tmp.unlink()
        tmp.mkdir()
    assert (await h.client.get("/v1/artifacts/doc")).content == b"old"
    assert len(await h.blobs()) == 1


async def test_a_token_without_write_uploads_nothing(make_harness: MakeHarness) -> None:
    import json

    reader, writer = "reader-token-0123456789", "writer-token-0123456789"
    tokens = json.dumps([
        {"token": reader, "namespaces": ["*"], "permissions": ["read"]},
        {"token": writer, "namespaces": ["*"], "permissions": ["read", "write"]},
    ])
    async with make_harness(tokens=tokens) as h:
        r = await h.client.put("/v1/artifacts/a", content=chunked(os.urandom(50_000)),
                               headers={"Authorization": f"Bearer {reader}"})
        assert r.status_code == 403
        assert await h.blobs() == []
        assert await h.revision() == 0
        r = await h.client.put("/v1/artifacts/a", content=b"ok",
                               headers={"Authorization": f"Bearer {writer}"})
        assert r.status_code == 201
        r = await h.client.get("/v1/artifacts/a", headers={"Authorization": f"Bearer {reader}"})
        assert r.content == b"ok"
        assert (await h.client.get("/v1/artifacts/a")).status_code == 401
