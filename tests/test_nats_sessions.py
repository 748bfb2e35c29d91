"""Sessions on NATS beyond the shared suite (test_sessions, test_session_snapshots,
test_variable_types and test_session_locks run there too): a session is one record, a
``_cbs.`` key of the bucket that NATS clients read (its locks inside it) and Corkboard
never lists as a key; a deleted session without lock state is a KV delete marker; racing
writers in two processes lose no update (compare-and-swap on the record), and waiters of
a session lock in two processes hold it one at a time while the session's other writes
race its changes; a session lock fences key writes (``Fence-Session``) atomically; a
session too large for one NATS message is refused and nothing is written; a write that
only counts as activity is a message but no event; a record a NATS client garbled reads
as no session everywhere and the next write goes over it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import nats
import orjson
import pytest
from nats.js.errors import KeyNotFoundError

from app.backends.nats import NatsBackend
from app.domain.locks import LockRequest
from app.settings import Settings
from app.syntax import now_ms
from tests.helpers import events, problem, revision
from tests.nats_server import flush_nats
from tests.support import app_client

S = "/v1/sessions/chat:1"


@pytest.fixture
async def corkboard(nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    flush_nats(nats_url)
    async with app_client(Settings(backend=nats_url, sweep_interval_seconds=0.05)) as c:
        yield c


async def read_key(nats_url: str, key: str) -> tuple[dict[str, object] | None, int]:
    """A NATS client's view of a key of bucket ``default``: its JSON and revision (None
    when deleted)."""
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value("default")
        entry = (await kv.history(key))[-1]
        if entry.operation is not None:  # DEL or PURGE
            return None, int(entry.revision or 0)
        return json.loads(entry.value or b""), int(entry.revision or 0)
    finally:
        await nc.close()


async def test_a_session_is_one_record_nats_clients_read(
    corkboard: httpx.AsyncClient, nats_url: str,
) -> None:
    await corkboard.put(S, json={"metadata": {"user": "ada"}})
    r = await corkboard.post(f"{S}/variables",
                             json={"name": "n", "type": "float", "value": 1.5})
    assert r.status_code == 201, r.text
    lock = (await corkboard.post(f"{S}/locks/l", json={"owner": "a"})).json()
    record, rev = await read_key(nats_url, "_cbs.chat_3A1")
    assert record is not None
    assert record["sid"] == "chat:1"
    session = record["session"]
    assert isinstance(session, dict) and session["metadata"] == '{"user":"ada"}'
    [var] = session["variables"].values()
    assert var["name"] == "n" and var["value"] == "1.5"
    assert record["locks"]["l"]["token"] == lock["token"]  # type: ignore[index]
    # The newest message is the lock.acquired event, at the record's revision.
    [acquired] = await events(corkboard, types="lock.acquired")
    assert acquired["revision"] == rev and acquired["session"] == "chat:1"
    assert [i["key"] for i in (await corkboard.get("/v1/kv")).json()["items"]] == []

    # Deleted with its lock's counter kept: the record stays, without a session.
    assert (await corkboard.delete(S)).status_code == 204
    record, _ = await read_key(nats_url, "_cbs.chat_3A1")
    assert record is not None and record["session"] is None
    again = (await corkboard.post(f"{S}/locks/l", json={"owner": "b"})).json()
    assert again["token"] == lock["token"] + 1  # tokens never repeat

    # A session whose locks keep nothing goes as a KV delete marker.
    await corkboard.put("/v1/sessions/plain", json={})
    assert (await corkboard.delete("/v1/sessions/plain")).status_code == 204
    record, rev = await read_key(nats_url, "_cbs.plain")
    assert record is None
    [deleted] = await events(corkboard, session="plain", types="session.deleted")
    assert deleted["revision"] == rev
    nc = await nats.connect(nats_url)
    try:
        with pytest.raises(KeyNotFoundError):  # KeyDeletedError is one
            await (await nc.jetstream().key_value("default")).get("_cbs.plain")
    finally:
        await nc.close()


async def test_racing_writers_in_two_processes_lose_no_update(
    corkboard: httpx.AsyncClient, nats_url: str,
) -> None:
    engines = [NatsBackend(nats_url), NatsBackend(nats_url)]
    for engine in engines:
        await engine.start()
    try:

        def bump(old: bytes | None) -> bytes:
            state = orjson.loads(old) if old is not None else {"n": 0}
            return orjson.dumps({"n": state["n"] + 1})

        async def writer(engine: NatsBackend) -> None:
            for _ in range(15):
                await engine.state_update("default", "race", "thread", "t", bump)

        await asyncio.gather(*(writer(e) for e in engines for _ in range(2)))
        state = await engines[0].state_get("default", "race", "thread", "t")
        assert state is not None and orjson.loads(state) == {"n": 60}
        found = await events(corkboard, session="race", types="session.updated")
        assert len(found) == 60
        assert [e["value"]["n"] for e in found] == list(range(1, 61))
    finally:
        for engine in engines:
            await engine.close()


async def test_a_session_lock_fences_key_writes(corkboard: httpx.AsyncClient) -> None:
    held = (await corkboard.post(f"{S}/locks/f", json={"owner": "a", "ttl": 30})).json()
    fence = {"Fence-Lock": "f", "Fence-Token": str(held["token"]), "Fence-Session": "chat:1"}
    assert (await corkboard.put("/v1/kv/k", json=1, headers=fence)).status_code == 201
    r = await corkboard.put(f"{S}/threads/t/state", json={"a": 1}, headers=fence)
    assert r.status_code in (200, 201), r.text
    stale = {**fence, "Fence-Token": str(held["token"] + 1)}
    problem(await corkboard.put("/v1/kv/k", json=2, headers=stale), 409, "stale_fence")
    # The same lock name in another scope does not fence.
    problem(await corkboard.put("/v1/kv/k", json=2, headers={**fence, "Fence-Session": "x"}),
            409, "stale_fence")
    # Deleting the session ends its locks' holds: the token stops fencing.
    assert (await corkboard.delete(S)).status_code == 204
    problem(await corkboard.put("/v1/kv/k", json=3, headers=fence), 409, "stale_fence")
    assert (await corkboard.get("/v1/kv/k")).json()["value"] == 1


async def test_a_session_larger_than_one_nats_message_is_refused(
    corkboard: httpx.AsyncClient,
) -> None:
    await corkboard.put(S, json={})
    # The message holds the record and the event (the new value and the old): 1 MB in
    # all on a server with the default max_payload.
    r = await corkboard.put(f"{S}/threads/a/state", json={"v": "x" * 300_000})
    assert r.status_code == 201, r.text
    start = await revision(corkboard)
    r = await corkboard.put(f"{S}/threads/b/state", json={"v": "x" * 450_000})
    assert problem(r, 413, "payload_too_large")["detail"].startswith("Session 'chat:1'")
    assert await revision(corkboard) == start
    assert (await corkboard.get(f"{S}/threads/b/state")).status_code == 404


async def test_a_write_that_only_counts_as_activity_is_a_message_but_no_event(
    corkboard: httpx.AsyncClient,
) -> None:
    await corkboard.put(S, json={"ttl": "1h"})
    r = await corkboard.post(f"{S}/dedupe", json={"key": "m1", "limit": 10})
    assert r.json()["duplicate"] is False
    before = (await corkboard.get(S)).json()
    start = await revision(corkboard)
    await asyncio.sleep(0.01)  # so that the touch moves updated_at
    r = await corkboard.post(f"{S}/dedupe", json={"key": "m1", "limit": 10})
    assert r.json()["duplicate"] is True
    after = (await corkboard.get(S)).json()
    assert after["updated_at"] > before["updated_at"]
    assert after["expires_at"] > before["expires_at"]
    # The touch took a sequence of the stream (the revision grew) but is no event.
    assert await revision(corkboard) == start + 1
    assert await events(corkboard, since=start) == []


async def test_session_lock_waiters_in_two_processes_hold_it_one_at_a_time(
    corkboard: httpx.AsyncClient, nats_url: str,
) -> None:
    engines = [NatsBackend(nats_url), NatsBackend(nats_url)]
    for engine in engines:
        await engine.start()
    holding: list[str] = []
    order: list[int] = []
    try:

        async def worker(engine: NatsBackend, i: int) -> None:
            got = await engine.lock_acquire(
                "default", "s1", "l", LockRequest(f"w{i}", 10_000, wait_s=20), session=True)
            assert got.holder is not None
            holding.append(f"w{i}")
            assert len(holding) == 1, holding  # nobody else holds it meanwhile
            order.append(got.holder.token)
            # Other writes of the same session race the lock's changes.
            await engine.dedupe_check("default", "s1", f"k{i}", 100)
            holding.remove(f"w{i}")
            await engine.lock_release("default", "s1", "l", f"w{i}", got.holder.token,
                                      session=True)

        await asyncio.gather(*(worker(engines[i % 2], i) for i in range(8)))
    finally:
        for engine in engines:
            await engine.close()
    assert sorted(order) == list(range(1, 9))
    snap = (await corkboard.get("/v1/sessions/s1/snapshot")).json()
    assert sorted(snap["dedupe"]) == sorted(f"k{i}" for i in range(8))
    assert snap["locks"] == {}


async def test_session_records_a_nats_client_garbled_read_as_no_session(
    corkboard: httpx.AsyncClient, nats_url: str,
) -> None:
    """A ``_cbs.`` key holding bytes that are not Corkboard's record (not JSON, another
    session's id, a record of the wrong shape, an event that is not one) reads as no
    session, is skipped by listings, snapshots, the log and the sweeper, and the next
    write of the session writes over it: no 500 anywhere."""
    await corkboard.put("/v1/sessions/good", json={})
    garbled = {
        "junk1": b"not json",
        "junk2": orjson.dumps({"sid": "someone-else", "session": None, "locks": {}}),
        "junk3": orjson.dumps({"sid": "junk3", "session": "x", "locks": []}),
        "junk4": orjson.dumps({"sid": "junk4", "session": None,
                               "locks": {"l": {"name": "l"}}, "event": ["x", 1]}),
        "junk5": orjson.dumps([1, 2]),
    }
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value("default")
        for sid, data in garbled.items():
            await kv.put(f"_cbs.{sid}", data)
    finally:
        await nc.close()
    engine = NatsBackend(nats_url)
    await engine.start()
    try:  # the sweepers' pass skips them (nothing due, no deadline)
        msgs, _ = await engine.store.multi_last("default", "$KV.default.>")
        assert await engine.sessions.sweep("default", msgs, now_ms()) == (0, 0)
        assert await engine.lock_engine.sweep("default", msgs, now_ms()) == (0, 0)
    finally:
        await engine.close()
    listed = (await corkboard.get("/v1/sessions")).json()["items"]
    assert [s["session_id"] for s in listed] == ["good"]
    assert (await corkboard.get("/v1/events")).status_code == 200
    for sid in garbled:
        problem(await corkboard.get(f"/v1/sessions/{sid}"), 404, "not_found")
        problem(await corkboard.get(f"/v1/sessions/{sid}/snapshot"), 404, "not_found")
        r = await corkboard.get(f"/v1/sessions/{sid}/locks/l")
        assert r.status_code == 404 and r.json()["pending_count"] == 0
    for sid in garbled:
        assert (await corkboard.put(f"/v1/sessions/{sid}", json={"metadata": {"n": sid}})
                ).status_code == 201
        r = await corkboard.post(f"/v1/sessions/{sid}/locks/l", json={"owner": "a"})
        assert r.status_code == 200 and r.json()["token"] == 1, r.text
        assert (await corkboard.get(f"/v1/sessions/{sid}")).json()["metadata"] == {"n": sid}
