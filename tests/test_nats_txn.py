"""Transactions, pattern deletes and leases on NATS beyond the shared suite (test_txn and
test_leases run there too): each is one JetStream atomic batch (app/backends/nats/
batch.py), so a plain NATS client (nats-py, no Corkboard code) never sees part of one;
a NATS client's write racing a transaction makes its batch fail with nothing stored,
and the transaction is planned again; a pattern delete is bounded by the batch size
(``?max_batch=``, 1,000 by default: 998 keys; the test servers allow 10,002, the
shared suite's 10,000 keys); a batch larger than the server allows is 409, nothing
stored; a lease's end takes one batch with its keys and namespace locks."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
from nats.js.kv import KeyValue

from app.backends.nats import max_batch_of
from app.backends.nats import txn as nats_txn
from app.backends.nats.batch import Out, publish_batch
from app.backends.nats.store import NatsStore
from app.settings import Settings
from tests.helpers import events, problem, revision
from tests.nats_server import NatsServer, flush_nats
from tests.support import app_client


@pytest.fixture
async def corkboard(nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    flush_nats(nats_url)
    async with app_client(Settings(backend=nats_url, sweep_interval_seconds=0.05)) as c:
        yield c


@pytest.fixture
async def plain(nats_url: str, corkboard: httpx.AsyncClient) -> AsyncIterator[nats.NATS]:
    """A plain nats-py connection (the ``default`` bucket exists: Corkboard wrote)."""
    assert (await corkboard.put("/v1/kv/first", json=0)).status_code == 201
    nc = await nats.connect(nats_url)
    try:
        yield nc
    finally:
        await nc.close()


async def bucket_of(nc: nats.NATS) -> KeyValue:
    return await nc.jetstream().key_value("default")


async def txn(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await client.post("/v1/txn", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_a_nats_client_sees_a_transaction_whole_or_not_at_all(
    corkboard: httpx.AsyncClient, plain: nats.NATS,
) -> None:
    """A NATS KV watcher (an ordered consumer, as NATS KV clients watch) gets each
    transaction's key messages back to back at consecutive sequences, right before its
    commit message; Corkboard's listings polled meanwhile never show part of one (the
    server makes a batch's messages readable one after the other as it stores them, in
    microseconds: a listing that meets that reads again, entries.torn)."""
    kv = await bucket_of(plain)
    keys = [f"acct.{i}" for i in range(8)]
    watcher = await kv.watch(">", include_history=False)
    assert await watcher.updates(timeout=5) is not None  # "first"
    assert await watcher.updates(timeout=5) is None  # the end of the current values
    stop = asyncio.Event()
    pages: list[dict[str, Any]] = []

    async def poll() -> None:
        while not stop.is_set():
            page = (await corkboard.get("/v1/kv", params={"pattern": "acct.*"})).json()
            pages.append(page)
            values = {item["value"] for item in page["items"]}
            revisions = {item["revision"] for item in page["items"]}
            assert len(values) <= 1 and len(revisions) <= 1, page
            assert all(r <= page["revision"] for r in revisions), page

    poller = asyncio.create_task(poll())
    rounds = 25
    revisions = []
    for n in range(rounds):
        out = await txn(corkboard, {"success": [
            {"op": "put", "key": key, "value": n} for key in keys]})
        revisions.append(out["revision"])
        await asyncio.sleep(0.002)
    stop.set()
    await poller
    assert len(pages) > 5
    for n, commit in enumerate(revisions):
        parts = []
        for _ in keys:
            update = await watcher.updates(timeout=5)
            assert update is not None
            parts.append((update.key, update.revision, update.value))
        assert [p[0] for p in parts] == keys
        assert [p[1] for p in parts] == list(range(commit - len(keys), commit))
        assert all(p[2] == str(n).encode() for p in parts)
        commit_msg = await watcher.updates(timeout=5)
        assert commit_msg is not None
        assert (commit_msg.key, commit_msg.revision) == ("_cbt", commit)
    await watcher.stop()
    # Corkboard reports each transaction at its commit, every key at that revision.
    got = (await corkboard.get("/v1/kv/acct.3")).json()
    assert got["revision"] == revisions[-1] and got["value"] == rounds - 1
    found = await events(corkboard, since=revisions[0] - 1, types="txn")
    assert [e["revision"] for e in found] == revisions


async def test_during_an_open_batch_nats_clients_see_nothing_of_it(
    corkboard: httpx.AsyncClient, plain: nats.NATS,
) -> None:
    """JetStream holds an atomic batch's messages until its commit: a plain client's
    direct get and KV get see the keys as before until then, all of them after."""
    kv = await bucket_of(plain)
    await corkboard.put("/v1/kv/x", json="old")
    batch = uuid.uuid4().hex
    inbox = plain.new_inbox()
    sub = await plain.subscribe(inbox)
    await plain.publish("$KV.default.x", b'"new"', reply=inbox, headers={
        "Nats-Batch-Id": batch, "Nats-Batch-Sequence": "1"})
    assert (await sub.next_msg(timeout=5)).data == b""  # the batch is open
    await plain.publish("$KV.default.y", b'"new"', headers={
        "Nats-Batch-Id": batch, "Nats-Batch-Sequence": "2"})
    await plain.flush()
    assert (await kv.get("x")).value == b'"old"'
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("y")
    assert (await corkboard.get("/v1/kv/x")).json()["value"] == "old"
    await plain.publish("$KV.default._cbt", b"{}", reply=inbox, headers={
        "Nats-Batch-Id": batch, "Nats-Batch-Sequence": "3", "Nats-Batch-Commit": "1"})
    ack = json.loads((await sub.next_msg(timeout=5)).data)
    assert ack["count"] == 3
    assert (await kv.get("x")).value == (await kv.get("y")).value == b'"new"'


@pytest.mark.parametrize("target", ["written", "compared"])
async def test_a_nats_write_racing_a_transaction_fails_its_batch_with_nothing_stored(
    corkboard: httpx.AsyncClient, plain: nats.NATS, monkeypatch: pytest.MonkeyPatch,
    target: str,
) -> None:
    """A NATS client writes a key between the transaction's read and its batch (the key
    the transaction writes, or one it only compares): the batch is refused whole (the
    key's own expected sequence, or a check message), nothing of it is stored, and the
    transaction is planned again from what is there now: its compare fails."""
    kv = await bucket_of(plain)
    await corkboard.put("/v1/kv/guard", json=1)
    await corkboard.put("/v1/kv/out", json=1)
    start = await revision(corkboard)
    attempts: list[int | None] = []
    real = nats_txn.publish_batch

    async def racing(store: NatsStore, ns: str, msgs: list[Out]) -> int | None:
        if not attempts:  # the first attempt only: the NATS client comes between
            await kv.put("guard" if target == "compared" else "out", b"2")
        seq = await real(store, ns, msgs)
        attempts.append(seq)
        return seq

    monkeypatch.setattr(nats_txn, "publish_batch", racing)
    written = "out" if target == "written" else "other"
    out = await txn(corkboard, {
        "compare": [{"key": "guard", "value": 1}, {"key": "out", "value": 1}],
        "success": [{"op": "put", "key": written, "value": 9},
                    {"op": "put", "key": "also", "value": 9}],
        "failure": [{"op": "get", "key": "guard"}, {"op": "get", "key": "out"}],
    })
    assert attempts == [None]  # refused once; the second plan writes nothing
    assert out["succeeded"] is False
    assert [r["value"] for r in out["results"]] == [
        2 if target == "compared" else 1, 2 if target == "written" else 1]
    # The stream holds the NATS client's write and nothing of the batch.
    assert await revision(corkboard) == start + 1
    assert (await corkboard.get("/v1/kv/also")).status_code == 404
    assert [e["type"] for e in await events(corkboard, since=start)] == ["kv.put"]


async def test_a_transaction_retries_past_a_racing_write_and_applies(
    corkboard: httpx.AsyncClient, plain: nats.NATS, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Blind writes: the racing write fails the first batch; the second applies, its
    old value the racing write's."""
    kv = await bucket_of(plain)
    await corkboard.put("/v1/kv/k", json=1)
    real = nats_txn.publish_batch
    raced: list[bool] = []

    async def racing(store: NatsStore, ns: str, msgs: list[Out]) -> int | None:
        if not raced:
            raced.append(True)
            await kv.put("k", b"2")
        return await real(store, ns, msgs)

    monkeypatch.setattr(nats_txn, "publish_batch", racing)
    start = await revision(corkboard)
    out = await txn(corkboard, {"success": [{"op": "put", "key": "k", "value": 3},
                                            {"op": "put", "key": "j", "value": 3}]})
    assert out["succeeded"] is True
    [put, committed] = await events(corkboard, since=start)
    assert put["type"] == "kv.put" and put["value"] == 2
    assert committed["type"] == "txn" and committed["revision"] == out["revision"]
    assert committed["changes"][0] == {"type": "kv.put", "key": "k", "value": 3,
                                       "old_value": 2}


async def test_lock_compares_and_fences_on_nats(corkboard: httpx.AsyncClient) -> None:
    token = (await corkboard.post("/v1/locks/jobs/n", json={"owner": "w"})).json()["token"]
    ok = {"compare": [{"lock": "jobs/n", "token": token}],
          "success": [{"op": "put", "key": "done", "value": True}]}
    assert (await txn(corkboard, ok))["succeeded"] is True
    for wrong in ({"lock": "jobs/n", "token": token + 1}, {"lock": "free", "token": 1}):
        assert (await txn(corkboard, {"compare": [wrong]}))["succeeded"] is False
    # A session's lock of the same name is another lock (in the session's record).
    other = {"compare": [{"lock": "jobs/n", "token": token, "session": "s1"}]}
    assert (await txn(corkboard, other))["succeeded"] is False
    start = await revision(corkboard)
    r = await corkboard.post("/v1/txn", json={"success": [{"op": "put", "key": "f", "value": 1}]},
                             headers={"Fence-Lock": "jobs/n", "Fence-Token": str(token + 1)})
    problem(r, 409, "stale_fence")
    assert await revision(corkboard) == start
    await corkboard.post("/v1/locks/jobs/n/release", json={"owner": "w", "token": token})
    assert (await txn(corkboard, ok))["succeeded"] is False


async def put_many(client: httpx.AsyncClient, count: int) -> None:
    for start in range(0, count, 128):
        await txn(client, {"success": [{"op": "put", "key": f"many/{i:05d}", "value": i}
                                       for i in range(start, min(start + 128, count))]})


async def test_a_pattern_delete_is_one_batch_of_at_most_998_keys_by_default(
    nats_url: str, plain: nats.NATS,
) -> None:
    """``?max_batch=1000`` (the default, and nats-server's): one pattern delete removes at
    most 998 keys (its batch: the keys, a fence check, the commit); capabilities say so."""
    settings = Settings(backend=f"{nats_url}?max_batch=1000", sweep_interval_seconds=0.05)
    async with app_client(settings) as corkboard:
        caps = (await corkboard.get("/v1/capabilities")).json()
        assert caps["limits"]["max_pattern_delete_keys"] == 998
        await put_many(corkboard, 999)
        before = await revision(corkboard)
        body = problem(await corkboard.delete("/v1/kv", params={"pattern": "many/*"}), 409,
                       "too_many_keys")
        assert "1000" in body["detail"]
        assert await revision(corkboard) == before
        await corkboard.delete("/v1/kv/many/00000")
        r = await corkboard.delete("/v1/kv", params={"pattern": "many/*"})
        assert r.status_code == 200 and r.json()["deleted"] == 998
    kv = await bucket_of(plain)
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("many/00500")


async def test_capabilities_report_the_pattern_delete_limit_of_the_batch_size(
    nats_url: str,
) -> None:
    """min(10,000, max_batch - 2): API.md's 10,000 once the batches hold 10,002."""
    flush_nats(nats_url)
    for max_batch, keys in [(10, 8), (5000, 4998), (10_002, 10_000), (100_000, 10_000)]:
        settings = Settings(backend=f"{nats_url}?max_batch={max_batch}")
        async with app_client(settings) as c:
            caps = (await c.get("/v1/capabilities")).json()
        assert caps["limits"]["max_pattern_delete_keys"] == keys


@pytest.mark.parametrize("query", [
    "max_batch=9", "max_batch=100001", "max_batch=x", "max_batch=-5", "max_batch=",
    "max_batch=10&max_batch=20",
])
def test_a_bad_max_batch_is_refused_without_the_credentials(query: str) -> None:
    url = f"nats://user:s3cret@127.0.0.1:1?{query}"
    with pytest.raises(ValueError, match="max_batch must be one number from 10 to 100000") as e:
        max_batch_of(url)
    assert "s3cret" not in str(e.value)
    assert (max_batch_of("nats://a:1"), max_batch_of("nats://a:1?replicas=3&max_batch=10002")) \
        == (1000, 10_002)


async def test_a_batch_larger_than_the_server_allows_is_409_with_nothing_stored() -> None:
    """Corkboard told ``?max_batch=5000`` on a server left at its default (1,000): a
    pattern delete of 2,000 keys is sent as one batch, which the server refuses whole;
    the caller gets 409 ``too_many_keys`` saying why, and nothing is deleted; 100 keys go
    through in one batch. A transaction past the server's limit is refused the same way."""
    server = NatsServer(batch_msgs=None).start()
    try:
        settings = Settings(backend=f"{server.url}?max_batch=5000", max_txn_ops=2000,
                            sweep_interval_seconds=0.05)
        async with app_client(settings) as corkboard:
            await put_many(corkboard, 2000)
            before = await revision(corkboard)
            body = problem(await corkboard.delete("/v1/kv", params={"pattern": "many/*"}),
                           409, "too_many_keys")
            assert "max_msgs" in body["detail"] and "max_batch" in body["detail"]
            assert await revision(corkboard) == before
            assert (await corkboard.get("/v1/kv/many/01999")).status_code == 200
            r = await corkboard.post("/v1/txn", json={"success": [
                {"op": "put", "key": f"t/{i}", "value": i} for i in range(1500)]})
            problem(r, 409, "too_many_keys")
            assert await revision(corkboard) == before
            r = await corkboard.delete("/v1/kv", params={"pattern": "many/000*"})
            assert r.status_code == 200 and r.json()["deleted"] == 100
            assert (await corkboard.get("/v1/kv/many/01999")).status_code == 200
    finally:
        server.cleanup()


async def test_a_lease_ends_in_one_batch_with_its_keys_and_locks(
    corkboard: httpx.AsyncClient, plain: nats.NATS,
) -> None:
    """The revoke deletes the keys (NATS clients see delete markers) and releases the
    namespace lock (its pending entry left for the next holder) at one revision, with
    one event; the lease's own record goes too."""
    kv = await bucket_of(plain)
    assert (await corkboard.post("/v1/leases", json={"ttl": "30s", "id": "a1"})).status_code == 201
    await corkboard.put("/v1/kv/agents.a1", params={"lease": "a1"}, json={"up": True})
    r = await corkboard.post("/v1/locks/jobs/a", json={"owner": "a1", "lease": "a1"})
    token = r.json()["token"]
    await corkboard.post("/v1/locks/jobs/a", json={"owner": "b", "mode": "queue", "entry": 7})
    stored = await plain.jetstream().get_last_msg("KV_default", "$KV.default.agents.a1")
    assert stored.headers is not None and stored.headers["Cb-Lease"] == "a1"
    start = await revision(corkboard)
    r = await corkboard.delete("/v1/leases/a1")
    assert r.status_code == 200, r.text
    [event] = await events(corkboard, since=start)
    assert event["type"] == "lease.revoked" and event["revision"] == r.json()["revision"]
    assert event["changes"] == [
        {"type": "kv.delete", "key": "agents.a1", "value": None, "old_value": {"up": True}},
        {"type": "lock.released", "key": "jobs/a", "owner": "a1", "token": token,
         "pending_count": 1},
    ]
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("agents.a1")
    r = await corkboard.post("/v1/locks/jobs/a", json={"owner": "b"})
    assert r.json()["pending"] == [7] and r.json()["token"] == token + 1
    problem(await corkboard.get("/v1/leases/a1"), 404, "lease_not_found")


async def test_a_write_racing_a_revoke_never_attaches_to_the_ended_lease(
    corkboard: httpx.AsyncClient, nats_url: str,
) -> None:
    """Writes on a lease racing its revoke: each lands before the revoke (and goes with
    it) or is refused 404; no key outlives its lease."""
    assert (await corkboard.post("/v1/leases", json={"ttl": "30s", "id": "l"})).status_code == 201

    async def write(i: int) -> int:
        r = await corkboard.put(f"/v1/kv/w/{i}", params={"lease": "l"}, json=i)
        return r.status_code

    writes = [asyncio.create_task(write(i)) for i in range(30)]
    await asyncio.sleep(0.005)
    revoke = await corkboard.delete("/v1/leases/l")
    statuses = await asyncio.gather(*writes)
    assert revoke.status_code == 200
    assert set(statuses) <= {201, 404}
    listed = (await corkboard.get("/v1/kv", params={"pattern": "w/*"})).json()["items"]
    assert listed == []


async def test_raw_batch_primitive_refuses_a_stale_check(nats_url: str) -> None:
    """batch.py alone: a check on another subject at a stale sequence stores nothing."""
    flush_nats(nats_url)
    store = NatsStore([nats_url], timeout=2.0, key_history=10, retention=1000, replicas=1,
                      url=nats_url)
    await store.start()
    try:
        first = await store.publish("ns1", "$KV.ns1.a", b"1", {}, 0)
        assert first is not None
        stale = [Out("$KV.ns1._cbc", b"", {}, first - 1, "$KV.ns1.a"),
                 Out("$KV.ns1.b", b"2", {}, 0)]
        assert await publish_batch(store, "ns1", stale) is None
        assert await store.last("ns1", "$KV.ns1.b") is None
        fresh = [Out("$KV.ns1._cbc", b"", {}, first, "$KV.ns1.a"),
                 Out("$KV.ns1.b", b"2", {}, 0)]
        assert await publish_batch(store, "ns1", fresh) == first + 2
    finally:
        await store.close()


async def test_another_process_reads_a_transaction_from_its_messages(
    corkboard: httpx.AsyncClient, nats_url: str,
) -> None:
    """A process that read none of the batch (a fresh backend: nothing cached) builds
    the transaction's event from its key messages, old values included, and reports
    nothing at the parts' own sequences."""
    from app.backends.nats import NatsBackend

    await txn(corkboard, {"success": [{"op": "put", "key": f"k/{i:03d}", "value": i}
                                      for i in range(100)]})
    out = await txn(corkboard, {"success": [{"op": "put", "key": f"k/{i:03d}", "value": -i}
                                            for i in range(100)]})
    commit = out["revision"]
    fresh = NatsBackend(nats_url)
    await fresh.start()
    try:
        batch = await fresh.read_events("default", commit - 101)
    finally:
        await fresh.close()
    [event] = [e for e in batch.events if e.revision > commit - 101]
    assert event.revision == commit and event.type == "txn"
    changes = json.loads(event.data)["changes"]
    assert [(c["key"], c["value"], c["old_value"]) for c in changes] == [
        (f"k/{i:03d}", -i, i) for i in range(100)]


async def test_a_fenced_write_on_a_lease_is_one_batch_with_both_checks(
    corkboard: httpx.AsyncClient,
) -> None:
    """The fence is checked on the lock's subject and the lease attached, in one batch:
    a stale fence writes nothing, a holding one writes the key on the lease."""
    assert (await corkboard.post("/v1/leases", json={"ttl": "30s", "id": "l"})).status_code == 201
    token = (await corkboard.post("/v1/locks/f", json={"owner": "o"})).json()["token"]
    start = await revision(corkboard)
    r = await corkboard.put("/v1/kv/k", params={"lease": "l"}, json=1,
                            headers={"Fence-Lock": "f", "Fence-Token": str(token + 1)})
    problem(r, 409, "stale_fence")
    assert await revision(corkboard) == start
    r = await corkboard.put("/v1/kv/k", params={"lease": "l"}, json=1,
                            headers={"Fence-Lock": "f", "Fence-Token": str(token)})
    assert r.status_code == 201, r.text
    assert (await corkboard.get("/v1/leases/l")).json()["keys"] == ["k"]
    await corkboard.post("/v1/locks/f/release", json={"owner": "o", "token": token})
    r = await corkboard.put("/v1/kv/k", params={"lease": "l"}, json=2,
                            headers={"Fence-Lock": "f", "Fence-Token": str(token)})
    problem(r, 409, "stale_fence")
    assert (await corkboard.get("/v1/kv/k")).json()["value"] == 1


async def test_transactions_and_lease_ends_keep_to_max_batch(nats_url: str) -> None:
    """``?max_batch=10``: a transaction of 9 puts (and its commit) is one batch, 10 puts
    are 409 with nothing written; a lease holding 8 keys ends (its record, the keys, the
    commit), one holding 9 cannot be revoked (409, nothing removed) until it holds 8."""
    flush_nats(nats_url)
    settings = Settings(backend=f"{nats_url}?max_batch=10", sweep_interval_seconds=0.05)
    async with app_client(settings) as corkboard:
        ok = await txn(corkboard, {"success": [
            {"op": "put", "key": f"t/{i}", "value": i} for i in range(9)]})
        assert ok["succeeded"] is True
        before = await revision(corkboard)
        r = await corkboard.post("/v1/txn", json={"success": [
            {"op": "put", "key": f"u/{i}", "value": i} for i in range(10)]})
        body = problem(r, 409, "too_many_keys")
        assert "11 messages" in body["detail"] and "10" in body["detail"]
        assert await revision(corkboard) == before
        r = await corkboard.post("/v1/leases", json={"ttl": "30s", "id": "l"})
        assert r.status_code == 201
        for i in range(9):
            r = await corkboard.put(f"/v1/kv/l/{i}", params={"lease": "l"}, json=i)
            assert r.status_code == 201, r.text
        before = await revision(corkboard)
        problem(await corkboard.delete("/v1/leases/l"), 409, "too_many_keys")
        assert await revision(corkboard) == before
        assert len((await corkboard.get("/v1/leases/l")).json()["keys"]) == 9
        await corkboard.delete("/v1/kv/l/8")
        r = await corkboard.delete("/v1/leases/l")
        assert r.status_code == 200 and len(r.json()["keys"]) == 8, r.text
