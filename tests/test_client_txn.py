"""Transactions, pattern deletes and leases through the Python client (sync and async),
against a real service process on both backends: typed results, one revision and one
event per transaction, every error path with nothing changed, and the ``lease()``
context manager keeping its keys alive past their TTL and taking them along on exit.

Waiting is on events (long polls with a bounded ``wait``), never on bare sleeps: "no
lease ended for N seconds" is a long poll that returns empty after N seconds.
"""

from __future__ import annotations

import time

import pytest

from corkboard.client import (
    AlreadyExists,
    AsyncCorkboard,
    Compare,
    Corkboard,
    Deleted,
    Entry,
    Event,
    InvalidRequest,
    InvalidTTL,
    LeaseLost,
    LeaseNotFound,
    LockGrant,
    NotFound,
    Op,
    PayloadTooLarge,
    RevisionMismatch,
    StaleFence,
    Synced,
    TooManyKeys,
    Unprocessable,
)
from tests.support_client import acb, cb, ns, service  # noqa: F401

#: The service's default CORKBOARD_MAX_TXN_OPS.
MAX_TXN_OPS = 128
#: A bound for an event that is due now (a loaded 2-core machine can stall seconds).
DUE = 15


def current_revision(cb: Corkboard) -> int:
    revision = cb.list(values=False, limit=1).revision
    assert revision is not None
    return revision


def lease_events(cb: Corkboard, since: int, wait: float, kind: str = "lease") -> list[Event]:
    """The lease events after ``since``: at once if there are some, else after ``wait``."""
    batch = cb.events(since, wait=wait, types=[kind])
    return [e for e in batch.events if isinstance(e, Event)]


# -- transactions -------------------------------------------------------------------------


def test_txn_branches_typed_results_and_one_event(cb: Corkboard) -> None:
    cb.put("acct/a", 100)
    cb.put("acct/b", 50)
    cb.put("cfg", {"mode": "a", "n": 1})
    result = cb.txn(
        compare=[Compare.revision("acct/a", 1), Compare.version("acct/b", 1),
                 Compare.value("cfg", {"n": 1.0, "mode": "a"}), Compare.exists("cfg"),
                 Compare.absent("transfers/t1"), {"key": "acct/b", "exists": True}],
        success=[Op.put("acct/a", 90), Op.increment("acct/b", 10),
                 Op.put("transfers/t1", {"amount": 10}, ttl="1h"),
                 Op.patch("cfg", merge={"mode": "b"}), Op.delete("gone"), Op.delete("cfg2"),
                 Op.get("acct/a"), Op.get("missing")],
        failure=[Op.get("acct/a")],
    )
    assert result.succeeded and result.revision == 4
    put_a, inc_b, transfer, cfg, gone, cfg2, got_a, missing = result.results
    assert isinstance(put_a, Entry) and (put_a.value, put_a.revision) == (90, 4)
    assert isinstance(inc_b, Entry) and inc_b.value == 60
    assert isinstance(transfer, Entry) and transfer.expires_at is not None
    assert isinstance(cfg, Entry) and cfg.value == {"mode": "b", "n": 1}
    assert gone == Deleted(False) and cfg2 == Deleted(False)
    assert got_a == put_a and missing is None
    # One revision, one txn event listing every change.
    [event] = [e for e in cb.events(3).events if isinstance(e, Event)]
    assert (event.type, event.revision) == ("txn", 4)
    assert [(c["type"], c["key"]) for c in event.data["changes"]] == [
        ("kv.put", "acct/a"), ("kv.put", "acct/b"), ("kv.put", "transfers/t1"),
        ("kv.put", "cfg")]

    # A compare that fails runs the failure branch; it writes nothing: no revision.
    lost = cb.txn(compare=[Compare.revision("acct/a", 1)],
                  success=[Op.put("acct/a", 0)], failure=[Op.get("acct/a")])
    assert not lost.succeeded and lost.revision == 4
    assert isinstance(lost.results[0], Entry) and lost.results[0].value == 90
    assert cb.txn().results == [] and current_revision(cb) == 4
    with pytest.raises(TypeError):
        cb.txn(success=["put acct/a 1"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        Op.patch("cfg")


def test_txn_on_a_lease_and_a_lock(cb: Corkboard) -> None:
    lease = cb.grant_lease(30, id="cand-1")
    elected = cb.txn(compare=[Compare.revision("leader", 0)],
                     success=[Op.put("leader", "cand-1", lease=lease)])
    assert elected.succeeded
    again = cb.txn(compare=[Compare.revision("leader", 0)],
                   success=[Op.put("leader", "cand-2")], failure=[Op.get("leader")])
    assert not again.succeeded
    assert cb.get_lease("cand-1").keys == ["leader"]

    with cb.lock("jobs/nightly", ttl=10) as held:
        fenced = cb.txn(compare=[Compare.holds(held)], success=[Op.put("report", 1)])
        assert fenced.succeeded
        grant = held.grant
    assert grant is not None
    # Released: the compare no longer holds, and the old fence refuses the whole txn.
    stale = cb.txn(compare=[Compare.holds(grant)], success=[Op.put("report", 2)])
    assert not stale.succeeded
    with pytest.raises(StaleFence), cb.fenced(grant):
        cb.txn(success=[Op.put("report", 3)])
    assert cb.get_value("report") == 1
    assert cb.revoke_lease(lease).keys == ["leader"]
    assert cb.get_value("leader") is None


def test_txn_errors_change_nothing(cb: Corkboard) -> None:
    cb.put("cfg", {"a": 1})
    cb.put("text", "x")
    before = current_revision(cb)
    too_many = [Op.put(f"k{i}", i) for i in range(MAX_TXN_OPS + 1)]
    refused: list[tuple[type[Exception], dict[str, list[Op | dict[str, object]]]]] = [
        (InvalidRequest, {"success": too_many}),
        (InvalidRequest, {"success": [Op.put("k", 1), Op.increment("k")]}),
        (InvalidRequest, {"success": [Op.put("k", 1, ttl=5, lease="l1")]}),
        (InvalidRequest, {"success": [{"op": "rename", "key": "k"}]}),
        (InvalidRequest, {"compare": [{"key": "cfg"}]}),
        (InvalidRequest, {"compare": [{"key": "cfg", "revision": 1, "exists": True}]}),
        (LeaseNotFound, {"success": [Op.put("k", 1), Op.put("j", 2, lease="nobody")]}),
        (NotFound, {"success": [Op.put("k", 1), Op.patch("absent", merge={"a": 1})]}),
        (RevisionMismatch, {"success": [Op.put("k", 1), Op.patch(
            "cfg", json_patch=[{"op": "test", "path": "/a", "value": 2}])]}),
        (PayloadTooLarge, {"success": [Op.put("k", 1), Op.put("big", "x" * 70_000)]}),
        (Unprocessable, {"success": [Op.put("k", 1), Op.increment("text")]}),
    ]
    for error, branches in refused:
        with pytest.raises(error):
            cb.txn(**branches)  # type: ignore[arg-type]
    assert current_revision(cb) == before
    assert [e.key for e in cb.iter_keys()] == ["cfg", "text"]
    assert cb.get_value("cfg") == {"a": 1}


def test_delete_pattern_and_too_many_keys(cb: Corkboard) -> None:
    cb.txn(success=[Op.put(f"agents/{i}", i) for i in range(3)] + [Op.put("other", 0)])
    done = cb.delete_pattern("agents/*")
    assert (done.deleted, done.keys, done.revision) == (
        3, ["agents/0", "agents/1", "agents/2"], 2)
    [event] = [e for e in cb.events(1).events if isinstance(e, Event)]
    assert event.type == "txn" and len(event.data["changes"]) == 3
    assert cb.delete_pattern("agents/*").deleted == 0
    assert [e.key for e in cb.iter_keys()] == ["other"]

    for start in range(0, 10_001, MAX_TXN_OPS):
        cb.txn(success=[Op.put(f"many/{i:05d}", i)
                        for i in range(start, min(start + MAX_TXN_OPS, 10_001))])
    before = current_revision(cb)
    with pytest.raises(TooManyKeys) as too_many:
        cb.delete_pattern("many/*")
    assert too_many.value.status == 409
    assert current_revision(cb) == before
    assert cb.get_value("many/10000") == 10_000
    cb.delete("many/10000")
    assert cb.delete_pattern("many/*").deleted == 10_000


# -- leases -------------------------------------------------------------------------------


def test_lease_calls(cb: Corkboard) -> None:
    lease = cb.grant_lease("30s", id="agent-7")
    assert (lease.id, lease.ttl) == ("agent-7", 30)
    generated = cb.grant_lease(30)
    assert generated.id.startswith("lease-")
    with pytest.raises(AlreadyExists):
        cb.grant_lease(30, id="agent-7")
    with pytest.raises(InvalidTTL):
        cb.grant_lease(0)
    kept = cb.keepalive("agent-7")
    assert kept.id == "agent-7" and kept.expires_at >= lease.expires_at

    cb.put("agents/agent-7", {"role": "planner"}, lease=lease)
    cb.put("cfg", {"a": 1})
    assert cb.patch("cfg", merge={"b": 2}, lease="agent-7").value == {"a": 1, "b": 2}
    grant = cb.acquire("jobs/a", owner="agent-7", lease=lease)
    assert isinstance(grant, LockGrant) and grant.expires_at is None  # the lease's lifetime
    with pytest.raises(InvalidRequest):
        cb.put("k", 1, ttl=5, lease=lease)
    with pytest.raises(InvalidRequest):
        cb.acquire("jobs/b", ttl=5, lease=lease)
    detail = cb.get_lease(lease)
    assert detail.keys == ["agents/agent-7", "cfg"]
    assert [(lk.name, lk.owner) for lk in detail.locks] == [("jobs/a", "agent-7")]
    # A put without lease takes the key off it.
    cb.put("cfg", {"a": 2})
    assert cb.get_lease("agent-7").keys == ["agents/agent-7"]

    for i in range(5):
        cb.grant_lease(30, id=f"worker-{i}")
    page = cb.list_leases("worker-*", limit=2)
    assert [i.id for i in page.items] == ["worker-0", "worker-1"] and page.next_cursor
    assert [i.id for i in cb.iter_leases("worker-*", page_size=2)] == [
        f"worker-{i}" for i in range(5)]

    start = current_revision(cb)
    revoked = cb.revoke_lease("agent-7")
    assert revoked.keys == ["agents/agent-7"] and revoked.revision == start + 1
    assert [lk.name for lk in revoked.locks] == ["jobs/a"]
    assert cb.get_value("agents/agent-7") is None and cb.get_lock("jobs/a") is None
    assert cb.get_value("cfg") == {"a": 2}
    [event] = lease_events(cb, start, 0)
    assert event.type == "lease.revoked" and event.key == "agent-7"


def test_unknown_and_expired_leases(cb: Corkboard) -> None:
    for call in (lambda: cb.keepalive("nobody"), lambda: cb.get_lease("nobody"),
                 lambda: cb.revoke_lease("nobody"), lambda: cb.put("k", 1, lease="nobody"),
                 lambda: cb.acquire("jobs/a", lease="nobody"),
                 lambda: cb.patch("k", merge={}, initial={}, lease="nobody")):
        with pytest.raises(LeaseNotFound) as missing:
            call()
        assert missing.value.status == 404 and isinstance(missing.value, NotFound)
    with pytest.raises(LeaseNotFound), cb.watch(lease="nobody") as stream:
        next(stream)

    lease = cb.grant_lease(0.5, id="short")
    cb.put("agents/short", 1, lease=lease)
    since = current_revision(cb)
    [expired] = lease_events(cb, since, DUE, "lease.expired")  # the sweeper ends it
    assert expired.key == "short"
    assert [c["key"] for c in expired.data["changes"]] == ["agents/short"]
    assert cb.get_value("agents/short") is None
    for call in (lambda: cb.keepalive("short"), lambda: cb.put("k", 2, lease="short"),
                 lambda: cb.txn(success=[Op.put("k", 3, lease="short")])):
        with pytest.raises(LeaseNotFound):
            call()
    assert cb.get_value("k") is None and current_revision(cb) == expired.revision


def test_lease_context_keeps_keys_alive_then_revokes(cb: Corkboard) -> None:
    ttl = 1.5  # keepalives every 0.5 s: a loaded machine's stalls do not lose it
    with cb.lease(ttl, id="worker") as lease:
        entry = cb.put("agents/worker", {"up": True}, lease=lease)
        cb.acquire("jobs/w", owner="worker", lease=lease)
        # No lease event for two TTLs: only the keepalives hold it.
        assert lease_events(cb, entry.revision, 2 * ttl) == []
        assert lease.keepalives >= 3 and lease.lost is None
        assert cb.get_value("agents/worker") == {"up": True}
        assert cb.get_lock("jobs/w") is not None
    assert lease.revoked is not None and lease.revoked.keys == ["agents/worker"]
    assert cb.get_value("agents/worker") is None and cb.get_lock("jobs/w") is None
    with pytest.raises(LeaseNotFound):
        cb.get_lease("worker")

    # revoke=False: the lease lapses after its TTL instead, with its keys.
    with cb.lease(0.5, revoke=False) as lapsing:
        entry = cb.put("agents/lapsing", 1, lease=lapsing)
    [expired] = lease_events(cb, entry.revision, DUE, "lease.expired")
    assert expired.key == lapsing.id and cb.get_value("agents/lapsing") is None


def test_lease_context_reports_a_lost_lease(cb: Corkboard) -> None:
    with pytest.raises(LeaseLost), cb.lease(0.6) as lease:
        cb.put("agents/x", 1, lease=lease)
        cb.revoke_lease(lease)  # from elsewhere: the next keepalive finds it gone
        deadline = time.monotonic() + DUE
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert isinstance(lease.lost, LeaseNotFound)
        with pytest.raises(LeaseLost):
            lease.check()
    assert cb.get_value("agents/x") is None


def test_presence_stream_keeps_its_lease(cb: Corkboard) -> None:
    ttl = 1.5
    lease = cb.grant_lease(ttl, id="agent-p")
    entry = cb.put("agents/p", {"role": "planner"}, lease=lease)
    with cb.watch("agents/p", snapshot=True, lease=lease) as stream:
        first = next(stream)  # the stream is open: its service keeps the lease alive
        assert isinstance(first, Event) and first.key == "agents/p"
        assert next(stream) == Synced(entry.revision)
        assert lease_events(cb, entry.revision, 2 * ttl) == []
        assert cb.get_value("agents/p") == {"role": "planner"}
    [expired] = lease_events(cb, entry.revision, DUE, "lease.expired")
    assert expired.key == "agent-p" and cb.get_value("agents/p") is None


# -- async --------------------------------------------------------------------------------


async def test_async_txn_leases_and_presence(acb: AsyncCorkboard) -> None:
    await acb.put("n", 1)
    result = await acb.txn(compare=[Compare.value("n", 1)],
                           success=[Op.increment("n", 2), Op.get("n")])
    assert result.succeeded and [r.value for r in result.results if isinstance(r, Entry)] == [
        3, 3]
    with pytest.raises(InvalidRequest):
        await acb.txn(success=[Op.put("k", i) for i in range(MAX_TXN_OPS + 1)])
    await acb.txn(success=[Op.put(f"tmp/{i}", i) for i in range(4)])
    assert (await acb.delete_pattern("tmp/*")).deleted == 4

    ttl = 1.5
    async with acb.lease(ttl, id="async-worker") as lease:
        entry = await acb.put("agents/aw", 1, lease=lease)
        quiet = await acb.events(entry.revision, wait=2 * ttl, types=["lease"])
        assert quiet.events == [] and lease.keepalives >= 3
        assert [i.id async for i in acb.iter_leases("async-*")] == ["async-worker"]
        assert (await acb.get_lease(lease)).keys == ["agents/aw"]
    assert lease.revoked is not None and await acb.get_value("agents/aw") is None
    with pytest.raises(LeaseNotFound):
        await acb.keepalive(lease)

    presence = await acb.grant_lease(1.5, id="async-p")
    entry = await acb.put("agents/ap", 1, lease=presence)
    async with acb.watch("agents/ap", snapshot=True, lease=presence) as stream:
        assert isinstance(await anext(stream), Event)
        assert await anext(stream) == Synced(entry.revision)
        quiet = await acb.events(entry.revision, wait=3.0, types=["lease"])
        assert quiet.events == []
    gone = await acb.events(entry.revision, wait=DUE, types=["lease.expired"])
    assert [e.key for e in gone.events if isinstance(e, Event)] == ["async-p"]
    assert await acb.get_value("agents/ap") is None
