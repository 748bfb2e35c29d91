"""Artifacts on NATS (issue 17), what tests/test_artifacts.py (which runs on NATS too)
does not show: a blob is an object a plain nats-py Object Store client reads, and an
artifact's record a KV key it reads; the default artifact store of a ``nats://`` backend;
a NATS failure is a 503 with ``Retry-After``, no password in it; and the blob rows
(app/backends/nats/blobrows.py) lose nothing when a process dies mid-way."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable

import httpx
import nats
import orjson
import pytest
from nats.js.api import ObjectMeta, ObjectMetaOptions

import app.artifacts.nats
from app.artifacts import UnknownArtifactStore, store_from_url
from app.artifacts.base import new_blob_id
from app.artifacts.nats import (
    DEFAULT_BUCKET,
    SEEK_HEADER,
    NatsBlobStore,
    bucket_of,
    seek_index,
)
from app.backends.nats import NatsBackend
from app.backends.nats.artifacts import NatsArtifacts
from app.backends.nats.names import artifact_subject
from app.backends.nats.store import Msg
from app.errors import BackendUnavailable
from app.settings import Settings
from app.syntax import now_ms
from tests.helpers import problem
from tests.nats_server import NatsServer, flush_nats
from tests.support import ServiceProcess, free_port, running
from tests.support_artifacts import (
    Harness,
    MiB,
    PatternBody,
    harness,
    memory_status,
    reset_peak,
)


@pytest.fixture
async def h(nats_url: str) -> AsyncIterator[Harness]:
    """Corkboard on NATS with no CORKBOARD_ARTIFACTS: the default store."""
    flush_nats(nats_url)
    settings = Settings(backend=nats_url, sweep_interval_seconds=0.05,
                        artifact_gc_interval_seconds=300, artifact_grace_seconds=0,
                        artifact_chunk_bytes=4096)
    async with harness(settings) as h:
        yield h


async def test_the_default_store_of_a_nats_backend_is_its_object_store(h: Harness) -> None:
    caps = (await h.client.get("/v1/capabilities")).json()
    assert (caps["backend"], caps["artifact_store"]) == ("nats", "nats")
    assert "artifacts" in caps["supports"]
    assert isinstance(h.store, NatsBlobStore)
    assert isinstance(h.backend, NatsBackend)
    assert h.store.nc is h.backend.store.nc  # one connection, the backend's


async def test_a_blob_reads_alike_through_a_plain_object_store_client(
    h: Harness, nats_url: str
) -> None:
    data = os.urandom(3 * 4096 + 17)
    r = await h.client.put("/v1/artifacts/runs/r1/out.bin", content=data)
    assert r.status_code == 201
    meta = await h.backend.artifact_get("default", "runs/r1/out.bin")
    assert meta is not None
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        obs = await js.object_store(DEFAULT_BUCKET)
        got = await obs.get(meta.blob)
        assert got.data == data
        assert got.info.size == len(data) and got.info.chunks == 4
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()
        assert got.info.digest == f"SHA-256={digest}"
        assert [o.name for o in await obs.list()] == [meta.blob]
        # The artifact's record is a KV key of the namespace's bucket.
        kv = await js.key_value("default")
        name = artifact_subject("default", "runs/r1/out.bin").split(".", 2)[2]
        assert name == "_cba.runs/r1/out_2Ebin"
        record = orjson.loads((await kv.get(name)).value)
        assert record["artifact"]["blob"] == meta.blob
        assert record["event"]["type"] == "artifact.put"
        # Deleted: gone for NATS clients too, and the collector removes the object.
        assert (await h.client.delete("/v1/artifacts/runs/r1/out.bin")).status_code == 204
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get(name)
        assert await h.collect() == 1
        with pytest.raises(nats.js.errors.ObjectNotFoundError):
            await obs.get(meta.blob)
    finally:
        await nc.close()


class _CountingStore(NatsBlobStore):
    """The NATS store, counting the chunk messages its readers fetch."""

    fetched = 0

    async def chunks(self, subject: str, seq: int, count: int) -> list[Msg]:
        found = await super().chunks(subject, seq, count)
        self.fetched += len(found)
        return found


async def _read(store: NatsBlobStore, blob: str, size: int, start: int, end: int) -> bytes:
    reader = await store.open(blob, size)
    try:
        return b"".join([piece async for piece in reader.stream(start, end)])
    finally:
        await reader.close()


async def test_a_range_seeks_near_its_first_chunk(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flush_nats(nats_url)
    monkeypatch.setattr(app.artifacts.nats, "SEEK_POINTS", 4)
    store = _CountingStore([nats_url], url=nats_url, chunk_bytes=4096)
    await store.start()
    try:
        # Two blobs written interleaved: neither's chunks are consecutive in the stream.
        blob, other = new_blob_id(), new_blob_id()
        data = os.urandom(10 * 4096 + 100)  # 11 chunks: seek points 0, 4 and 8 (stride 4)
        w, w2 = await store.create(blob), await store.create(other)
        for i in range(0, len(data), 4096):
            await w.write(data[i : i + 4096])
            await w2.write(b"x" * 4096)
        await w.finish()
        await w2.finish()
        info = await store.info(blob)
        assert info is not None
        stride, seqs = seek_index(info)
        assert (stride, len(seqs)) == (4, 3)
        for start, end in [(0, len(data)), (len(data) - 1, len(data)), (9 * 4096 + 5, 9 * 4096 + 9),
                           (4095, 4097), (4 * 4096, 8 * 4096), (3 * 4096 + 1, len(data))]:
            store.fetched = 0
            assert await _read(store, blob, len(data), start, end) == data[start:end]
            wanted = (end - 1) // 4096 - start // 4096 + 1
            assert store.fetched <= wanted + stride - 1, (start, end)
        # An object another client wrote has no seek index: it reads from its start.
        nc = await nats.connect(nats_url)
        try:
            obs = await nc.jetstream().object_store(DEFAULT_BUCKET)
            plain = new_blob_id()
            await obs.put(plain, data, meta=ObjectMeta(
                name=plain, options=ObjectMetaOptions(max_chunk_size=4096)))
        finally:
            await nc.close()
        info = await store.info(plain)
        assert info is not None and seek_index(info) == (1, [])
        assert await _read(store, plain, len(data), len(data) - 3, len(data)) == data[-3:]
        # A corrupt index is ignored, never a 500.
        info.headers = {SEEK_HEADER: ["4 9" + "9" * 5000]}
        assert seek_index(info) == (1, [])
        info.headers = {SEEK_HEADER: ["0 1 2"]}
        assert seek_index(info) == (1, [])
        info.headers = {SEEK_HEADER: ["2 5 3"]}
        assert seek_index(info) == (1, [])
    finally:
        await store.close()


async def test_an_object_store_bucket_deleted_under_the_service(
    h: Harness, nats_url: str
) -> None:
    assert (await h.client.put("/v1/artifacts/old", content=b"old bytes")).status_code == 201
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().delete_object_store(DEFAULT_BUCKET)
    finally:
        await nc.close()
    assert await h.blobs() == []
    r = await h.client.get("/v1/artifacts/old")  # its bytes are gone: a 503, not a 500
    assert "no bytes for artifact 'old'" in problem(r, 503, "backend_unavailable")["detail"]
    # An upload makes the bucket again, and reads back.
    assert (await h.client.put("/v1/artifacts/new", content=b"new bytes")).status_code == 201
    assert (await h.client.get("/v1/artifacts/new")).content == b"new bytes"
    r = await h.client.get("/v1/artifacts/new", headers={"Range": "bytes=4-"})
    assert (r.status_code, r.content) == (206, b"bytes")
    assert (await h.client.delete("/v1/artifacts/old")).status_code == 204
    assert await h.collect() == 1  # the lost blob's removal is a no-op, not a failure
    assert len(await h.blobs()) == 1


async def test_uploads_take_no_revision_and_leave_no_rows(h: Harness, nats_url: str) -> None:
    for i in range(3):
        assert (await h.client.put("/v1/artifacts/a", content=b"v%d" % i)).status_code in (
            200, 201)
    assert await h.revision() == 3
    assert await h.collect() == 2
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(
            "KV__corkboard", subjects_filter="$KV._corkboard.art.>"
        )
        assert not info.state.subjects  # every blob row is gone: nothing piles up
    finally:
        await nc.close()


async def test_a_nats_failure_is_a_503_with_retry_after_and_recovers() -> None:
    server = NatsServer().start()
    try:
        settings = Settings(backend=server.url, backend_timeout_seconds=0.5)
        async with harness(settings) as h:
            assert (await h.client.put("/v1/artifacts/a", content=b"one")).status_code == 201
            server.stop()
            for r in (await h.client.put("/v1/artifacts/a", content=b"two"),
                      await h.client.get("/v1/artifacts/a"),
                      await h.client.get("/v1/artifacts")):
                problem(r, 503, "backend_unavailable")
                assert r.headers["retry-after"] == "1"
            server.start()  # the same port and storage
            for _ in range(100):
                r = await h.client.get("/v1/artifacts/a")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.content == b"one"
            assert (await h.client.put("/v1/artifacts/a", content=b"two")).status_code == 200
            assert (await h.client.get("/v1/artifacts/a")).content == b"two"
    finally:
        server.cleanup()


async def test_an_unreachable_store_names_no_password() -> None:
    url = f"nats://corkboard:s3cret-pw@127.0.0.1:{free_port()}"  # nobody listens there
    store = store_from_url(url, Settings(backend_timeout_seconds=0.3))
    with pytest.raises(BackendUnavailable) as caught:
        await store.start()
    await store.close()
    assert "s3cret-pw" not in caught.value.detail


def test_store_urls() -> None:
    assert bucket_of("nats://a:1") == DEFAULT_BUCKET
    assert bucket_of("nats://a:1,b:2?bucket=team_blobs&replicas=3") == "team_blobs"
    store = store_from_url("nats://a:1,b:2?bucket=x-y&replicas=3", Settings())
    assert isinstance(store, NatsBlobStore)
    assert (store.servers, store.bucket, store.replicas) == (
        ["nats://a:1", "nats://b:2"], "x-y", 3)
    for bad in ("nats://", "nats://a:1?bucket=a.b", "nats://a:1?bucket=", "nats://a:1?replicas=0",
                "nats://a:1?bucket=x&bucket=y", "nats://a:1?bucket=caf%C3%A9"):
        with pytest.raises(UnknownArtifactStore):
            store_from_url(bad, Settings())
    with pytest.raises(UnknownArtifactStore) as caught:
        store_from_url("nats://u:s3cret-pw@a:1?bucket=a.b", Settings())
    assert "s3cret-pw" not in str(caught.value)


async def test_a_store_on_the_backends_servers_shares_its_connection(nats_url: str) -> None:
    flush_nats(nats_url)
    settings = Settings(backend=nats_url, artifacts=f"{nats_url}?bucket=team_blobs",
                        artifact_grace_seconds=0, artifact_chunk_bytes=4096)
    async with harness(settings) as h:
        assert isinstance(h.store, NatsBlobStore) and isinstance(h.backend, NatsBackend)
        assert h.store.bucket == "team_blobs"
        assert h.store.nc is h.backend.store.nc  # one connection, the backend's
        assert (await h.client.put("/v1/artifacts/a", content=b"bytes")).status_code == 201
        assert (await h.client.get("/v1/artifacts/a")).content == b"bytes"
        assert len(await h.blobs()) == 1


# -- blob rows: a process that dies mid-way loses nothing ----------------------------------


async def _uploaded(h: Harness, data: bytes) -> str:
    blob = new_blob_id()
    await h.backend.artifact_reserve("default", blob, now_ms() + 60_000)
    writer = await h.store.create(blob)
    await writer.write(data)
    await writer.finish()
    return blob


def _index(h: Harness) -> NatsArtifacts:
    assert isinstance(h.backend, NatsBackend)
    assert isinstance(h.backend.artifacts, NatsArtifacts)
    return h.backend.artifacts


async def test_a_commit_whose_process_died_keeps_a_committed_blob(h: Harness) -> None:
    index = _index(h)
    blob = await _uploaded(h, b"kept")
    await index.artifact_put("default", "k", blob=blob, size=4,
                             sha256=hashlib.sha256(b"kept").hexdigest(), content_type="a/b")
    # As if the process died after the record, before removing the row.
    await index.rows.write("default", blob, "commit", now_ms() - 1, "k")
    assert await h.collect() == 0
    assert await index.rows.read("default", blob) is None
    assert (await h.client.get("/v1/artifacts/k")).content == b"kept"


async def test_a_commit_whose_process_died_before_the_record_is_collected(h: Harness) -> None:
    index = _index(h)
    blob = await _uploaded(h, b"never committed")
    await index.rows.write("default", blob, "commit", now_ms() - 1, "k")
    assert await h.collect() == 1
    assert await h.blobs() == []
    assert await index.rows.read("default", blob) is None


async def test_garbage_of_a_change_that_did_not_happen_is_left_alone(h: Harness) -> None:
    index = _index(h)
    assert (await h.client.put("/v1/artifacts/k", content=b"live")).status_code == 201
    meta = await h.backend.artifact_get("default", "k")
    assert meta is not None
    # A replace that wrote its garbage row first, then died before its record.
    await index.rows.write("default", meta.blob, "garbage", now_ms() - 1, "k")
    assert await h.collect() == 0
    assert (await h.client.get("/v1/artifacts/k")).content == b"live"
    assert await index.rows.read("default", meta.blob) is None


async def test_a_reservation_taken_by_a_commit_cannot_lapse_under_it(h: Harness) -> None:
    index = _index(h)
    blob = await _uploaded(h, b"x")
    row = await index.rows.read("default", blob)
    assert row is not None and row.state == "reserved"
    # The collector claims the lapsed reservation first: the commit is refused (408).
    await index.rows.write("default", blob, "reserved", now_ms() - 1)
    assert await h.collect() == 1
    from app.errors import RequestTimeout

    with pytest.raises(RequestTimeout):
        await index.artifact_put("default", "k", blob=blob, size=1,
                                 sha256=hashlib.sha256(b"x").hexdigest(), content_type="a/b")
    assert await h.revision() == 0


async def test_an_expired_artifact_is_a_delete_marker_with_its_event(
    h: Harness, nats_url: str
) -> None:
    r = await h.client.put("/v1/artifacts/t", content=b"soon gone", params={"ttl": "150ms"})
    assert r.status_code == 201
    rev = r.json()["revision"]
    r = await h.client.get("/v1/events", params={"since": rev, "wait": "5s"})
    (event,) = r.json()["events"]
    assert (event["type"], event["reason"]) == ("artifact.delete", "expired")
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value("default")
        with pytest.raises(nats.js.errors.KeyNotFoundError):
            await kv.get("_cba.t")
    finally:
        await nc.close()
    assert await h.collect() == 1
    assert await h.blobs() == []


async def test_events_read_byte_for_byte_as_on_the_memory_engine(nats_url: str) -> None:
    """The same calls on memory and on NATS give the same event JSON (times aside)."""
    import re

    flush_nats(nats_url)
    bodies: list[bytes] = []
    for backend in ("memory://", nats_url):
        async with harness(Settings(backend=backend, artifact_grace_seconds=0)) as h:
            await h.client.put("/v1/artifacts/runs/a.txt", content=b"one",
                               headers={"Content-Type": "text/plain"})
            await h.client.put("/v1/artifacts/runs/a.txt", content=b"two")
            await h.client.put("/v1/artifacts/b", content=b"x", params={"ttl": "1h"})
            await h.client.delete("/v1/artifacts/runs/a.txt")
            await h.client.put("/v1/artifacts/b", content=b"y", headers={"If-Match": "*"})
            r = await h.client.get("/v1/events", params={"since": 0})
            bodies.append(re.sub(rb'"\d{4}-\d\d-\d\dT[0-9:.]+Z"', b'"T"', r.content))
    assert bodies[0] == bodies[1]
    assert bodies[0].count(b'"type":"artifact.') == 5


# -- a real server process -----------------------------------------------------------


def _object_count(url: str) -> int:
    """Blobs in the default Object Store bucket, seen from outside (a nats-py client)."""

    async def count() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info(
                f"OBJ_{DEFAULT_BUCKET}", subjects_filter=f"$O.{DEFAULT_BUCKET}.C.>"
            )
            return len(info.state.subjects or {})
        finally:
            await nc.close()

    return asyncio.run(count())


def _wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_a_server_process_streams_in_bounded_memory_and_a_killed_upload_is_collected(
    nats_url: str,
) -> None:
    flush_nats(nats_url)
    env = {"CORKBOARD_BACKEND": nats_url, "CORKBOARD_ARTIFACT_GC_INTERVAL_SECONDS": "0.1",
           "CORKBOARD_ARTIFACT_GRACE_SECONDS": "0", "CORKBOARD_LOG_LEVEL": "warning",
           "CORKBOARD_ARTIFACT_UPLOAD_TIMEOUT_SECONDS": "2"}
    with running(ServiceProcess(env)) as (svc,), httpx.Client(base_url=svc.url) as client:
        assert svc.proc is not None
        pid = svc.proc.pid
        warm = os.urandom(2 * MiB)
        assert client.put("/v1/artifacts/warm", content=warm).status_code == 201
        assert client.get("/v1/artifacts/warm").content == warm
        baseline = memory_status(pid)["VmRSS"]
        reset_peak(pid)
        body = PatternBody(48 * MiB)
        r = client.put("/v1/artifacts/big.bin", content=iter(body), timeout=120)
        assert r.status_code == 201
        digest = hashlib.sha256()
        with client.stream("GET", "/v1/artifacts/big.bin", timeout=120) as r:
            for piece in r.iter_raw(MiB):
                digest.update(piece)
        assert digest.hexdigest() == body.digest.hexdigest()
        growth = memory_status(pid)["VmHWM"] - baseline
        assert growth < 40 * MiB, f"server peak memory grew by {growth / MiB:.1f} MiB"
        # Killed mid-upload: the previous version stays; the dead upload's chunks go once
        # its reservation lapses (2 x the upload timeout), by the next server's collector.
        with socket.create_connection(("127.0.0.1", svc.port)) as s:
            s.sendall(b"PUT /v1/artifacts/warm HTTP/1.1\r\nHost: corkboard\r\n"
                      + b"Content-Length: %d\r\n\r\n" % (10 * MiB) + os.urandom(2 * MiB))
            _wait_until(lambda: _object_count(nats_url) >= 3)
            svc.kill()
    with running(ServiceProcess(env)) as (svc,), httpx.Client(base_url=svc.url) as client:
        assert client.get("/v1/artifacts/warm").content == warm
        _wait_until(lambda: _object_count(nats_url) == 2)
        assert client.get("/v1/artifacts/big.bin").status_code == 200


async def test_two_replicas_racing_puts_deletes_and_collectors_lose_nothing(
    nats_url: str,
) -> None:
    """Two services on one NATS replace and delete one artifact at once while both
    collect: every answered put is one revision and one event, the artifact ends as the
    last change left it, and once collected exactly its live bytes remain."""
    flush_nats(nats_url)
    settings = Settings(backend=nats_url, artifact_grace_seconds=0,
                        artifact_gc_interval_seconds=300, artifact_chunk_bytes=4096)
    async with harness(settings) as a, harness(settings) as b:

        async def writer(h: Harness, tag: bytes) -> list[int]:
            revisions = []
            for i in range(12):
                r = await h.client.put("/v1/artifacts/hot", content=tag * 5000 + b"%d" % i)
                assert r.status_code in (200, 201), r.text
                revisions.append(r.json()["revision"])
                if i % 4 == 3:
                    assert (await h.client.delete("/v1/artifacts/hot")).status_code == 204
                await h.collect()
            return revisions

        got = await asyncio.gather(writer(a, b"a"), writer(b, b"b"))
        revisions = sorted(got[0] + got[1])
        assert len(set(revisions)) == 24
        events = (await a.client.get("/v1/events", params={"since": 0, "limit": 1000})).json()
        puts = [e["revision"] for e in events["events"] if e["type"] == "artifact.put"]
        assert puts == revisions
        for event in events["events"]:
            if event["type"] == "artifact.put":
                assert event["value"]["revision"] == event["revision"]
        await a.collect()
        await b.collect()
        live = await a.backend.artifact_get("default", "hot")
        blobs = await a.blobs()
        if live is None:
            assert blobs == []
        else:
            assert blobs == [live.blob]
            r = await b.client.get("/v1/artifacts/hot")
            assert r.headers["etag"] == live.etag and len(r.content) == live.size
