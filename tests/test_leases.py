"""Leases (API.md section 11) on every backend, through HTTP: grant, keepalive, read,
list, revoke; keys, locks and transaction puts on a lease; the end of a lease (revoke,
or expiry by the sweeper) as one revision and one event; and every error path.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.helpers import ISO_MS, events, next_revision, problem, revision


async def grant(client: httpx.AsyncClient, ttl: Any = "30s", **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/leases", json={"ttl": ttl, **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


async def wait_for_event(client: httpx.AsyncClient, since: int, type_: str) -> dict[str, Any]:
    """The first event of ``type_`` after ``since``, by long poll (no read of any key)."""
    while True:
        r = await client.get("/v1/events", params={"since": since, "wait": "5s"})
        body = r.json()
        for event in body["events"]:
            if event["type"] == type_:
                found: dict[str, Any] = event
                return found
        assert body["events"], f"no {type_} event within 5s"
        since = body["revision"]


async def test_grant_get_keepalive_and_list(client: httpx.AsyncClient) -> None:
    start = await revision(client)
    lease = await grant(client, 10, id="agent-7")
    assert lease["id"] == "agent-7" and lease["ttl"] == 10
    assert ISO_MS.fullmatch(lease["expires_at"]) and ISO_MS.fullmatch(lease["granted_at"])
    [event] = await events(client, since=start)
    assert event["type"] == "lease.granted" and event["key"] == "agent-7"
    assert event["ttl"] == 10 and event["expires_at"] == lease["expires_at"]
    generated = await grant(client, "250ms")
    assert generated["id"].startswith("lease-") and generated["ttl"] == 0.25
    problem(await client.post("/v1/leases", json={"ttl": 5, "id": "agent-7"}), 409,
            "already_exists")
    await asyncio.sleep(0.01)
    r = await client.post("/v1/leases/agent-7/keepalive")
    assert r.status_code == 200 and r.json()["expires_at"] > lease["expires_at"]
    r = await client.get("/v1/leases/agent-7")
    assert r.json() == {**r.json(), "keys": [], "locks": []}
    await grant(client, 10, id="agent-8")
    await grant(client, 10, id="other")
    r = await client.get("/v1/leases", params={"pattern": "agent-*", "limit": 1})
    page = r.json()
    assert [i["id"] for i in page["items"]] == ["agent-7"] and page["next_cursor"]
    r = await client.get("/v1/leases", params={"pattern": "agent-*", "cursor": page["next_cursor"]})
    assert [i["id"] for i in r.json()["items"]] == ["agent-8"]
    assert r.json()["next_cursor"] is None


async def test_keys_and_locks_on_a_lease_go_with_its_revoke(
    client: httpx.AsyncClient, backend: str,
) -> None:
    await grant(client, id="a1")
    r = await client.put("/v1/kv/agents/a1", params={"lease": "a1"}, json={"status": "up"})
    assert r.status_code == 201 and r.json()["expires_at"] is None
    r = await client.patch("/v1/kv/agents/a1/cfg", params={"lease": "a1", "initial": "{}"},
                           json={"x": 1}, headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 201, r.text
    r = await client.post("/v1/locks/jobs/a", json={"owner": "a1", "lease": "a1"})
    assert r.status_code == 200 and r.json()["expires_at"] is None
    token = r.json()["token"]
    r = await client.post("/v1/sessions/s1/locks/reply", json={"owner": "a1", "lease": "a1"})
    session_token = r.json()["token"]
    # Another owner's queued entry waits for whoever takes the lock next.
    r = await client.post("/v1/locks/jobs/a", json={"owner": "b", "mode": "queue", "entry": 7})
    assert r.status_code == 202
    r = await client.post("/v1/locks/jobs/a", json={"owner": "b"})
    problem(r, 409, "lock_held")
    detail = (await client.get("/v1/leases/a1")).json()
    assert detail["keys"] == ["agents/a1", "agents/a1/cfg"]
    assert detail["locks"] == [{"name": "jobs/a", "owner": "a1", "token": token},
                               {"name": "reply", "session": "s1", "owner": "a1",
                                "token": session_token}]
    start = await revision(client)
    r = await client.delete("/v1/leases/a1")
    assert r.status_code == 200, r.text
    rev = next_revision(backend, start, r.json()["revision"])
    assert r.json()["keys"] == detail["keys"]
    [event] = await events(client, since=start)
    assert event["type"] == "lease.revoked" and event["key"] == "a1"
    assert event["revision"] == rev
    assert event["changes"] == [
        {"type": "kv.delete", "key": "agents/a1", "value": None, "old_value": {"status": "up"}},
        {"type": "kv.delete", "key": "agents/a1/cfg", "value": None, "old_value": {"x": 1}},
        {"type": "lock.released", "key": "jobs/a", "owner": "a1", "token": token,
         "pending_count": 1},
        {"type": "lock.released", "key": "reply", "session": "s1", "owner": "a1",
         "token": session_token, "pending_count": 0},
    ]
    assert (await client.get("/v1/kv/agents/a1")).status_code == 404
    assert (await client.get("/v1/locks/jobs/a")).status_code == 404
    r = await client.post("/v1/locks/jobs/a", json={"owner": "b"})
    assert r.status_code == 200 and r.json()["pending"] == [7]
    assert r.json()["token"] == token + 1
    problem(await client.delete("/v1/leases/a1"), 404, "lease_not_found")
    problem(await client.get("/v1/leases/a1"), 404, "lease_not_found")
    problem(await client.post("/v1/leases/a1/keepalive"), 404, "lease_not_found")


async def test_a_session_lock_reimported_by_its_holder_stays_on_its_lease(
    client: httpx.AsyncClient,
) -> None:
    """A snapshot carries no lease: importing a session whose lock holder goes on (same
    owner and token) keeps that holder on its lease, so the lock still ends with it (on
    NATS it lost the lease and would have been held for ever); a holder the import
    replaces is on no lease."""
    await grant(client, "1h", id="imp")
    r = await client.post("/v1/sessions/s1/locks/reply", json={"owner": "a1", "lease": "imp"})
    token = r.json()["token"]
    await client.post("/v1/sessions/s1/locks/other", json={"owner": "a1", "lease": "imp"})
    snapshot = (await client.get("/v1/sessions/s1/snapshot")).json()
    assert snapshot["locks"]["reply"]["expires_at"] is None
    snapshot["locks"]["other"]["owner"] = "a2"  # a new holder of "other"
    r = await client.put("/v1/sessions/s1/snapshot", json=snapshot)
    assert r.status_code == 200, r.text
    assert r.json()["tokens"]["reply"] == token
    held = (await client.get("/v1/leases/imp")).json()["locks"]
    assert held == [{"name": "reply", "session": "s1", "owner": "a1", "token": token}]
    revoked = (await client.delete("/v1/leases/imp")).json()
    assert [lock["name"] for lock in revoked["locks"]] == ["reply"]
    assert (await client.get("/v1/sessions/s1/locks/reply")).status_code == 404
    assert (await client.get("/v1/sessions/s1/locks/other")).json()["owner"] == "a2"


async def test_expiry_at_the_deadline_by_the_sweeper(client: httpx.AsyncClient) -> None:
    await grant(client, "300ms", id="short")
    await client.put("/v1/kv/p/short", params={"lease": "short"}, json=1)
    start = await revision(client)
    event = await wait_for_event(client, start, "lease.expired")
    assert event["key"] == "short"
    assert event["changes"] == [{"type": "kv.expire", "key": "p/short", "value": None,
                                 "old_value": 1}]
    problem(await client.post("/v1/leases/short/keepalive"), 404, "lease_not_found")
    assert (await client.get("/v1/kv/p/short")).status_code == 404
    # The id is free again.
    assert (await grant(client, 5, id="short"))["id"] == "short"


async def test_leases_due_together_each_end_with_their_own_keys_and_locks(
    client: httpx.AsyncClient,
) -> None:
    """One sweeper pass meets several due leases (on NATS, their ends start from its one
    listing of the namespace): each ends with its own keys and locks, in an event of
    its own; a live lease keeps its key."""
    for name in ("d1", "d2", "d3"):
        # Long enough for the writes below on a loaded machine (300 ms was not, on NATS
        # in a CI run), short enough that one sweeper pass finds all three due.
        await grant(client, "1500ms", id=name)
        for i in range(2):
            r = await client.put(f"/v1/kv/due/{name}/{i}", params={"lease": name}, json=i)
            assert r.status_code == 201, r.text
    r = await client.post("/v1/locks/held", json={"owner": "o", "lease": "d2"})
    assert r.status_code == 200, r.text
    await grant(client, "30s", id="live")
    await client.put("/v1/kv/due/live", params={"lease": "live"}, json=0)
    start = await revision(client)
    ended: dict[str, dict[str, Any]] = {}
    since = start
    while len(ended) < 3:
        r = await client.get("/v1/events", params={"since": since, "types": "lease.expired",
                                                    "wait": "5s"})
        found = r.json()["events"]
        assert found, "no lease.expired within 5s"
        ended.update({e["key"]: e for e in found})
        since = found[-1]["revision"]
    assert sorted(ended) == ["d1", "d2", "d3"]
    for name, event in ended.items():
        deleted = [(c["type"], c["key"]) for c in event["changes"] if c["type"] == "kv.expire"]
        assert deleted == [("kv.expire", f"due/{name}/0"), ("kv.expire", f"due/{name}/1")]
        locks = [c["key"] for c in event["changes"] if c["type"] == "lock.released"]
        assert locks == (["held"] if name == "d2" else [])
    listed = (await client.get("/v1/kv", params={"pattern": "due/*"})).json()["items"]
    assert [item["key"] for item in listed] == ["due/live"]
    assert (await client.get("/v1/locks/held")).status_code == 404  # free


async def test_keepalive_keeps_keys(client: httpx.AsyncClient) -> None:
    await grant(client, "400ms", id="kept")
    await client.put("/v1/kv/kept", params={"lease": "kept"}, json=1)
    for _ in range(6):
        await asyncio.sleep(0.15)
        assert (await client.post("/v1/leases/kept/keepalive")).status_code == 200
    assert (await client.get("/v1/kv/kept")).status_code == 200


async def test_a_write_without_the_lease_detaches_the_key(client: httpx.AsyncClient) -> None:
    await grant(client, id="l")
    for key in ("put", "patched", "counter", "txn"):
        r = await client.put(f"/v1/kv/{key}", params={"lease": "l"}, json=1)
        assert r.status_code == 201
    await client.put("/v1/kv/put", json=2)  # a plain PUT takes the key off its lease
    merge = {"content-type": "application/merge-patch+json"}
    r = await client.patch("/v1/kv/patched", json={"a": 1}, headers=merge)
    assert r.status_code == 200  # PATCH keeps the key's lifetime, lease included
    r = await client.post("/v1/kv/counter/increment", json={"by": 1})
    assert r.json()["value"] == 2  # so does an increment
    r = await client.post("/v1/txn", json={"success": [{"op": "put", "key": "txn",
                                                        "value": 3}]})
    assert r.status_code == 200
    assert (await client.get("/v1/leases/l")).json()["keys"] == ["counter", "patched"]
    await client.delete("/v1/leases/l")
    assert (await client.get("/v1/kv/put")).json()["value"] == 2
    assert (await client.get("/v1/kv/txn")).json()["value"] == 3
    assert (await client.get("/v1/kv/patched")).status_code == 404
    assert (await client.get("/v1/kv/counter")).status_code == 404


async def test_a_key_moves_between_leases(client: httpx.AsyncClient) -> None:
    await grant(client, id="one")
    await grant(client, id="two")
    await client.put("/v1/kv/k", params={"lease": "one"}, json=1)
    await client.put("/v1/kv/k", params={"lease": "two"}, json=2)
    await client.delete("/v1/leases/one")
    assert (await client.get("/v1/kv/k")).json()["value"] == 2
    await client.delete("/v1/leases/two")
    assert (await client.get("/v1/kv/k")).status_code == 404


@pytest.mark.parametrize("expired", [False, True])
async def test_an_unknown_or_expired_lease_writes_nothing(
    client: httpx.AsyncClient, expired: bool
) -> None:
    if expired:
        await grant(client, "50ms", id="gone")
        await asyncio.sleep(0.1)
    start = await revision(client)
    merge = {"content-type": "application/merge-patch+json"}
    calls = [
        client.put("/v1/kv/x", params={"lease": "gone"}, json=1),
        client.patch("/v1/kv/x", params={"lease": "gone", "initial": "{}"}, json={},
                     headers=merge),
        client.post("/v1/locks/x", json={"owner": "o", "lease": "gone"}),
        client.post("/v1/txn", json={"success": [{"op": "put", "key": "x", "value": 1,
                                                  "lease": "gone"}]}),
        client.post("/v1/leases/gone/keepalive"),
        client.get("/v1/watch", params={"lease": "gone"}),
    ]
    for call in calls:
        problem(await call, 404, "lease_not_found")
    after = await events(client, since=start)
    assert all(e["type"] == "lease.expired" for e in after), after
    assert (await client.get("/v1/kv/x")).status_code == 404
    assert (await client.get("/v1/locks/x")).status_code == 404


async def test_ttl_with_lease_and_other_bad_requests(client: httpx.AsyncClient) -> None:
    await grant(client, id="l")
    start = await revision(client)
    merge = {"content-type": "application/merge-patch+json"}
    for r in [
        await client.put("/v1/kv/x", params={"lease": "l", "ttl": "5s"}, json=1),
        await client.patch("/v1/kv/x", params={"lease": "l", "ttl": "5s", "initial": "{}"},
                           json={}, headers=merge),
        await client.post("/v1/locks/x", json={"owner": "o", "lease": "l", "ttl": "5s"}),
        await client.post("/v1/locks/x", json={"owner": "o", "lease": "l", "wait": "1s"}),
        await client.put("/v1/kv/x", params={"lease": "a/b"}, json=1),
        await client.post("/v1/leases/a%20b/keepalive"),
    ]:
        assert r.status_code == 400, r.text
        assert r.json()["code"] in ("invalid_request", "invalid_key"), r.text
    problem(await client.post("/v1/leases", json={"ttl": 0}), 400, "invalid_ttl")
    problem(await client.post("/v1/leases", json={"ttl": "-1s"}), 400, "invalid_ttl")
    problem(await client.post("/v1/leases", json={"ttl": 5, "id": "a/b"}), 400, "invalid_key")
    problem(await client.post("/v1/leases", json={}), 422, "validation_failed")
    problem(await client.post("/v1/leases", json={"ttl": 5, "x": 1}), 422, "validation_failed")
    assert await revision(client) == start


class _CountingLeases(dict[str, Any]):
    reads = 0
    scans = 0

    def __getitem__(self, key: str) -> Any:
        _CountingLeases.reads += 1
        return super().__getitem__(key)

    def __iter__(self) -> Any:
        _CountingLeases.scans += 1
        return super().__iter__()


async def test_memory_lease_listing_reads_one_page_not_every_lease() -> None:
    """A page of leases is found by bisection in a sorted id index: listing two of
    3,000 leases neither sorts nor visits them all."""
    from app.backends.memory import MemoryBackend
    from app.syntax import Pattern

    backend = MemoryBackend()
    for i in range(3000):
        await backend.lease_grant("default", f"l{i:05d}", 60_000)
    state = backend.store.namespaces["default"]
    state.leases = _CountingLeases(state.leases)
    items, cursor = await backend.lease_list("default", Pattern.compile("l01*"), limit=2,
                                             after=None)
    assert [i.id for i in items] == ["l01000", "l01001"] and cursor == "l01001"
    items, cursor = await backend.lease_list("default", Pattern.compile("l01*"), limit=2,
                                             after=cursor)
    assert [i.id for i in items] == ["l01002", "l01003"] and cursor == "l01003"
    assert _CountingLeases.scans == 0 and _CountingLeases.reads <= 6
    await backend.lease_revoke("default", "l01002")
    items, _ = await backend.lease_list("default", Pattern.compile("l01*"), limit=2,
                                        after="l01001")
    assert [i.id for i in items] == ["l01003", "l01004"]


async def test_leases_past_the_namespace_quota_are_507_and_nothing_is_granted(
    make_client: Any,
) -> None:
    """CORKBOARD_NAMESPACE_MAX_LEASES bounds the live leases of a namespace: a grant past
    it is 507 quota_exceeded with no lease and no event; a revoke makes room again, and
    other namespaces have their own count."""
    async with make_client(namespace_max_leases=3) as c:
        for i in range(3):
            granted = await c.post("/v1/leases", json={"ttl": "1h", "id": f"l{i}"})
            assert granted.status_code == 201, granted.text
        before = await revision(c)
        body = problem(await c.post("/v1/leases", json={"ttl": "1h", "id": "l3"}), 507,
                       "quota_exceeded")
        assert body["quota"] == "leases" and body["limit"] == 3
        assert "CORKBOARD_NAMESPACE_MAX_LEASES" in body["detail"]
        problem(await c.post("/v1/leases", json={"ttl": "1h"}), 507, "quota_exceeded")
        assert await revision(c) == before
        problem(await c.get("/v1/leases/l3"), 404, "lease_not_found")
        assert (await c.post("/v1/leases", json={"ttl": "1h", "id": "x"},
                             params={"ns": "other"})).status_code == 201
        assert (await c.delete("/v1/leases/l0")).status_code in (200, 204)
        assert (await c.post("/v1/leases", json={"ttl": "1h", "id": "l3"})).status_code == 201
