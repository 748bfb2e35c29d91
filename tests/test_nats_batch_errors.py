"""The error paths of NATS atomic batches (app/backends/nats/batch.py) with real servers:
a server that refuses a batch for another reason than its checks (its limit of batches
in flight reached) gets it sent again a few times, then the caller gets 503 with
nothing stored; a server older than 2.12 (the distribution's nats-server, when
installed) gets no batch at all: 501 before anything is sent."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from app.backends.nats.batch import Out, publish_batch
from app.backends.nats.store import NatsStore
from app.errors import BackendUnavailable, NotSupportedByBackend
from app.settings import Settings
from tests.helpers import problem, revision
from tests.nats_server import flush_nats, nats_server_binary
from tests.support import ServerProcess, app_client

#: A nats-server older than 2.12 (Debian's), when this machine has one.
OLD_NATS = next((p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server")
                 if Path(p).is_file() and p != nats_server_binary()), None)


class Server(ServerProcess):
    """A private nats-server (``binary``) with JetStream and the config ``conf``."""

    def __init__(self, binary: str, conf: str = "") -> None:
        super().__init__(None, "corkboard-nats-")
        assert self.port != 4222
        argv = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.dir]
        if conf:
            path = Path(self.dir) / "nats.conf"
            path.write_text(conf)
            argv += ["-c", str(path)]
        self._spawn(argv)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


async def open_batch(nc: Client, subject: str) -> None:
    """Open an atomic batch by hand and leave it uncommitted (in flight)."""
    reply = await nc.request(subject, b"x", timeout=2, headers={
        "Nats-Batch-Id": "held-open-by-the-test", "Nats-Batch-Sequence": "1"})
    assert not reply.data, reply.data  # the server's empty answer: the batch is open


async def test_a_batch_the_server_keeps_refusing_is_503_with_nothing_stored() -> None:
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("nats-server is not installed")
    server = Server(binary, "jetstream {\n  limits {\n    batch {\n"
                            "      max_inflight_per_stream: 1\n    }\n  }\n}\n")
    try:
        settings = Settings(backend=server.url, sweep_interval_seconds=0.05)
        async with app_client(settings) as corkboard:
            assert (await corkboard.put("/v1/kv/a", json=1)).status_code == 201
            before = await revision(corkboard)
            nc = await nats.connect(server.url)
            try:
                await open_batch(nc, "$KV.default.held")
                r = await corkboard.post("/v1/txn", json={"success": [
                    {"op": "put", "key": "a", "value": 2},
                    {"op": "put", "key": "b", "value": 2}]})
                body = problem(r, 503, "backend_unavailable")
                assert "atomic batch" in body["detail"]
                problem(await corkboard.delete("/v1/kv", params={"pattern": "*"}),
                        503, "backend_unavailable")
                assert await revision(corkboard) == before  # nothing stored
                assert (await corkboard.get("/v1/kv/a")).json()["value"] == 1
                problem(await corkboard.get("/v1/kv/b"), 404, "not_found")
            finally:
                await nc.close()  # the open batch is abandoned (the server drops it)
    finally:
        server.cleanup()


async def test_a_refused_batch_stores_nothing_and_goes_through_once_there_is_room() -> None:
    """batch.py alone: refused (each of its attempts a new batch), nothing is stored;
    once the batch in flight is gone, the next call stores."""
    binary = nats_server_binary()
    if binary is None:
        pytest.skip("nats-server is not installed")
    server = Server(binary, "jetstream {\n  limits {\n    batch {\n"
                            "      max_inflight_per_stream: 1\n      timeout: 1s\n"
                            "    }\n  }\n}\n")
    store = NatsStore([server.url], timeout=2.0, key_history=10, retention=1000, replicas=1,
                      url=server.url)
    await store.start()
    nc = await nats.connect(server.url)
    try:
        assert await store.publish("ns1", "$KV.ns1.a", b"1", {}, 0) == 1
        await open_batch(nc, "$KV.ns1.held")
        with pytest.raises(BackendUnavailable, match="refused an atomic batch"):
            await publish_batch(store, "ns1", [Out("$KV.ns1.b", b"2", {}, 0)])
        assert await store.last("ns1", "$KV.ns1.b") is None
        for _ in range(50):  # the server drops the open batch after its timeout (1s)
            try:
                seq = await publish_batch(store, "ns1", [Out("$KV.ns1.b", b"2", {}, 0)])
            except BackendUnavailable:
                await asyncio.sleep(0.1)
                continue
            assert seq == 2
            break
        else:
            pytest.fail("the abandoned batch was never dropped")
    finally:
        await nc.close()
        await store.close()
        server.cleanup()


@pytest.mark.skipif(OLD_NATS is None, reason="no nats-server older than 2.12 here")
async def test_an_older_server_gets_no_batch_501_before_anything_is_sent() -> None:
    assert OLD_NATS is not None and shutil.which(OLD_NATS)
    server = Server(OLD_NATS)
    store = NatsStore([server.url], timeout=2.0, key_history=10, retention=1000, replicas=1,
                      url=server.url)
    await store.start()
    try:
        version = store.nc.connected_server_version
        if (version.major, version.minor) >= (2, 12):
            pytest.skip(f"{OLD_NATS} is {version}")
        with pytest.raises(NotSupportedByBackend, match=r"2\.12 or later") as e:
            await publish_batch(store, "ns1", [Out("$KV.ns1.a", b"1", {}, 0),
                                               Out("$KV.ns1.b", b"2", {}, 0)])
        assert e.value.status == 501
        js = store.nc.jetstream()
        names = [s.config.name for s in await js.streams_info()]
        assert "KV_ns1" not in names, names  # nothing sent: not even its bucket made
    finally:
        await store.close()
        server.cleanup()


async def test_a_batch_to_a_bucket_deleted_under_the_process_makes_it_again(
    nats_url: str,
) -> None:
    """The bucket's stream deleted by someone else after this process made it: the
    batch finds no stream, makes the bucket again and stores."""
    flush_nats(nats_url)
    store = NatsStore([nats_url], timeout=2.0, key_history=10, retention=1000, replicas=1,
                      url=nats_url)
    await store.start()
    try:
        assert await publish_batch(store, "ns1", [Out("$KV.ns1.a", b"1", {}, 0)]) == 1
        await store.js.delete_stream("KV_ns1")
        assert "ns1" in store.buckets  # the process still takes it for there
        assert await publish_batch(store, "ns1", [Out("$KV.ns1.a", b"2", {}, 0),
                                                  Out("$KV.ns1.b", b"3", {}, 0)]) == 2
        found = await store.last("ns1", "$KV.ns1.b")
        assert found is not None and found.data == b"3"
    finally:
        await store.close()


@pytest.mark.skipif(OLD_NATS is None, reason="no nats-server older than 2.12 here")
async def test_quota_counters_on_an_older_server_answer_501_never_count_nothing() -> None:
    """JetStream counters (``Nats-Incr``) came with nats-server 2.12: an older server
    stores the increment as a plain message. A write that counts toward the namespace
    quota is then refused (501), never let through uncounted."""
    assert OLD_NATS is not None
    server = Server(OLD_NATS)
    try:
        async with app_client(Settings(backend=server.url)) as c:
            version = (await c.get("/v1/capabilities")).json()
            assert version["backend"] == "nats"
            r = await c.put("/v1/kv/k", json=1)
            if r.status_code in (200, 201):
                pytest.skip("this nats-server keeps JetStream counters")
            body = problem(r, 501, "not_supported_by_backend")
            assert "counters" in body["detail"] and "2.12" in body["detail"]
            assert (await c.get("/v1/kv/k")).status_code == 404
    finally:
        server.cleanup()
