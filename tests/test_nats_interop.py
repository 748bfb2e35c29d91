"""Corkboard and plain NATS KV clients share keys (issue 17): the other side of each test
is nats-py's own KeyValue API, with no Corkboard code. A key written through Corkboard's
HTTP API reads and watches the same in NATS (bytes and revision); a key a NATS client
writes reads, lists and watches the same through Corkboard. Also the capabilities list
every part, and the names NATS cannot hold round-trip."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import nats
import pytest
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from app.backends import UnknownBackend, backend_from_url
from app.backends.nats import replicas_of, servers_of
from app.backends.nats.names import key_of, token_of
from app.settings import Settings
from tests.helpers import problem
from tests.nats_server import NatsServer, flush_nats
from tests.sse import watch
from tests.support import ServiceProcess, app_client, running


@pytest.fixture
async def corkboard(nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    flush_nats(nats_url)
    async with app_client(Settings(backend=nats_url, sweep_interval_seconds=0.05)) as c:
        yield c


@pytest.fixture
async def bucket(nats_url: str, corkboard: httpx.AsyncClient) -> AsyncIterator[KeyValue]:
    """The ``default`` namespace's bucket through a plain nats-py client (made by
    Corkboard's first write)."""
    assert (await corkboard.put("/v1/kv/first", json=0)).status_code == 201
    nc = await nats.connect(nats_url)
    try:
        yield await nc.jetstream().key_value("default")
    finally:
        await nc.close()


async def test_a_key_written_through_corkboard_reads_and_watches_alike_in_nats(
    corkboard: httpx.AsyncClient, bucket: KeyValue,
) -> None:
    put = (await corkboard.put("/v1/kv/cfg.mode", json={"mode": "a", "n": [1, 2]})).json()
    entry = await bucket.get("cfg.mode")
    assert entry.value == b'{"mode":"a","n":[1,2]}'
    assert entry.revision == put["revision"]

    watcher = await bucket.watch("cfg.*")
    initial = await watcher.updates(timeout=5)
    assert initial is not None and initial.revision == put["revision"]
    assert await watcher.updates(timeout=5) is None  # the end of the current values
    second = (await corkboard.put("/v1/kv/cfg.mode", json="b")).json()
    update = await watcher.updates(timeout=5)
    assert update is not None
    assert (update.key, update.value, update.revision) == ("cfg.mode", b'"b"', second["revision"])
    assert (await corkboard.delete("/v1/kv/cfg.mode")).status_code == 204
    deleted = await watcher.updates(timeout=5)
    assert deleted is not None and deleted.operation == "DEL" and deleted.key == "cfg.mode"
    await watcher.stop()


async def test_a_key_written_by_nats_reads_lists_and_watches_through_corkboard(
    nats_url: str, corkboard: httpx.AsyncClient, bucket: KeyValue,
) -> None:
    revision = await bucket.put("agents.a1", b'{"state":"idle"}')
    got = (await corkboard.get("/v1/kv/agents.a1")).json()
    assert got["value"] == {"state": "idle"} and got["revision"] == revision
    assert got["version"] == 1 and got["created_revision"] == revision
    listing = (await corkboard.get("/v1/kv", params={"pattern": "agents.*"})).json()
    assert [(i["key"], i["revision"]) for i in listing["items"]] == [("agents.a1", revision)]

    # Watched over SSE from a real server process (ASGI transports buffer streams).
    env = {"CORKBOARD_BACKEND": nats_url, "CORKBOARD_HEARTBEAT_SECONDS": "0.5"}
    with running(ServiceProcess(env)) as [svc]:
        async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http, watch(
            http, pattern="agents.*", since=revision
        ) as stream:
            second = await bucket.put("agents.a1", b'{"state":"busy"}')
            frame = await stream.event()
            assert frame.event == "kv.put" and frame.id == str(second)
            body = json.loads(frame.data or "")
            assert body["value"] == {"state": "busy"} and body["old_value"] == {"state": "idle"}
            await bucket.delete("agents.a1")
            frame = await stream.event()
            assert frame.event == "kv.delete"
            assert json.loads(frame.data or "")["old_value"] == {"state": "busy"}
    problem(await corkboard.get("/v1/kv/agents.a1"), 404, "not_found")
    # A version count continues across NATS and Corkboard writers.
    third = (await corkboard.put("/v1/kv/agents.a2", json=1)).json()
    await bucket.put("agents.a2", b"2")
    got = (await corkboard.get("/v1/kv/agents.a2")).json()
    assert (got["value"], got["version"], got["created_revision"]) == (2, 2, third["revision"])


async def test_values_nats_cannot_parse_and_names_it_cannot_hold(
    corkboard: httpx.AsyncClient, bucket: KeyValue,
) -> None:
    await bucket.put("raw", b"not json")
    assert (await corkboard.get("/v1/kv/raw")).json()["value"] == "not json"
    for key in ["a:b", "user@host", "x+y", ".dot", "dot.", "a..b", "plain/key.ok"]:
        assert key_of(token_of(key)) == key
        r = await corkboard.put(f"/v1/kv/{key}", json=key)
        assert r.status_code == 201, r.text
        assert (await corkboard.get(f"/v1/kv/{key}")).json()["value"] == key
    assert (await bucket.get(token_of("a:b"))).value == b'"a:b"'
    assert token_of("a:b") == "_cbk.a_3Ab"
    # NATS keys Corkboard cannot name (with "_") are not Corkboard keys.
    await bucket.put("snake_case", b"1")
    keys = [i["key"] for i in (await corkboard.get("/v1/kv")).json()["items"]]
    assert "snake_case" not in keys and "a:b" in keys


async def test_capabilities_list_every_part(corkboard: httpx.AsyncClient) -> None:
    caps = (await corkboard.get("/v1/capabilities")).json()
    assert caps["backend"] == "nats"
    assert caps["supports"] == ["keys", "events", "watch", "ttl", "history", "locks",
                                "sessions", "artifacts", "leases", "txn"]
    assert caps["artifact_store"] == "nats"
    assert (await corkboard.put("/v1/artifacts/a", content=b"x")).status_code == 201
    assert (await corkboard.get("/readyz")).status_code == 200


async def test_expired_keys_go_from_nats_too(
    corkboard: httpx.AsyncClient, bucket: KeyValue,
) -> None:
    await corkboard.put("/v1/kv/t", json=1, params={"ttl": "200ms"})
    watcher = await bucket.watch("t")
    assert (await watcher.updates(timeout=5)) is not None
    assert await watcher.updates(timeout=5) is None
    gone = await asyncio.wait_for(watcher.updates(timeout=5), 5)
    assert gone is not None and gone.operation == "DEL"
    await watcher.stop()


async def test_an_unreachable_nats_is_503_with_retry_after_and_recovers_by_itself() -> None:
    server = NatsServer().start()
    try:
        settings = Settings(backend=server.url, backend_timeout_seconds=0.5)
        async with app_client(settings) as c:
            assert (await c.put("/v1/kv/k", json=1)).status_code == 201
            server.stop()
            r = await c.get("/v1/kv/k")
            problem(r, 503, "backend_unavailable")
            assert r.headers["retry-after"] == "1"
            assert (await c.get("/readyz")).status_code == 503
            server.start()  # the same port and storage
            for _ in range(100):
                r = await c.get("/v1/kv/k")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 200 and r.json()["value"] == 1
    finally:
        server.cleanup()


async def test_listing_more_keys_than_one_direct_get_answers(
    corkboard: httpx.AsyncClient, bucket: KeyValue,
) -> None:
    # A batched direct get answers for at most 1,024 subjects; beyond, the listing reads
    # the last message per key through an ordered consumer.
    await asyncio.gather(*(bucket.put(f"many.{i:04d}", b"1") for i in range(1100)))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"pattern": "many.*", "limit": "500", **({"cursor": cursor} if cursor else {})}
        body = (await corkboard.get("/v1/kv", params=params)).json()
        seen += [item["key"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"many.{i:04d}" for i in range(1100)]


async def test_a_bucket_a_nats_client_made_is_used_as_it_is(
    nats_url: str, corkboard: httpx.AsyncClient,
) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(KeyValueConfig(bucket="legacy", history=5))
        revision = await kv.put("cfg.mode", b'"a"')
        got = (await corkboard.get("/v1/kv/cfg.mode", params={"ns": "legacy"})).json()
        assert (got["value"], got["revision"]) == ("a", revision)
        put = (await corkboard.put("/v1/kv/cfg.mode", params={"ns": "legacy"}, json="b")).json()
        assert (put["version"], put["revision"]) == (2, revision + 1)
        assert (await kv.get("cfg.mode")).value == b'"b"'
        info = await js.stream_info("KV_legacy")
        assert info.config.allow_direct  # switched on for Corkboard's direct gets
        assert info.config.max_msgs_per_subject == 5  # the bucket's history is kept
    finally:
        await nc.close()


def test_backend_urls() -> None:
    assert servers_of("nats://a:4222,b:4223") == ["nats://a:4222", "nats://b:4223"]
    assert servers_of("nats://u:p@a:1,b:2?replicas=3") == ["nats://u:p@a:1", "nats://u:p@b:2"]
    assert (replicas_of("nats://a:1"), replicas_of("nats://a:1?replicas=3")) == (1, 3)
    for bad in ["nats://a:1?replicas=0", "nats://a:1?replicas=x", "nats://a:1?replicas=9"]:
        with pytest.raises(UnknownBackend):
            backend_from_url(bad, Settings())
    with pytest.raises(UnknownBackend):
        backend_from_url("nats://", Settings())


@pytest.mark.parametrize(
    "query", ["replicas=0", "replicas=x", "replicas=", "replicas=1&replicas=2"]
)
def test_a_bad_replicas_is_refused_without_the_credentials(query: str) -> None:
    with pytest.raises(ValueError, match="replicas must be one number from 1 to 5") as e:
        replicas_of(f"nats://user:s3cret@127.0.0.1:1?{query}")
    assert "s3cret" not in str(e.value)
    for bad in ["nats://user:s3cr@t@", "http://user:s3cret@h:1"]:
        with pytest.raises(ValueError) as e:
            servers_of(bad)
        assert "s3cr" not in str(e.value)
