"""The in-memory backend's data structures, below HTTP (issue 15: a million keys): the
ordered key index paging from a cursor while keys come and go, history kept only from a
key's second revision (and the quota bytes it counts), expiry in deadline order, the
lease index, kept bytes copied out of orjson's buffers, and lock slots dropped when no
holder, pending entry or waiter needs them. The HTTP behaviour of the same operations is
covered on every backend by test_kv*.py, test_ttl.py, test_leases.py, test_lock*.py.
"""

from __future__ import annotations

import asyncio
import gc
import random
from typing import Any

import orjson
import pytest
from sortedcontainers import SortedList

from app.backends.memory import MemoryBackend
from app.backends.memory.rows import (
    NO_DEADLINE,
    entry_of,
    is_due,
    pack,
    revision_of,
    successor,
    value_of,
    value_size,
    with_deadline,
)
from app.backends.memory.store import compact
from app.backends.paging import names_from, page_sorted
from app.domain.bounds import Bounds
from app.domain.fence import Fence
from app.domain.keys import KeyEntry
from app.domain.locks import LockInfo, LockRequest
from app.errors import Conflict, StaleFence
from app.syntax import Pattern, now_ms

NS = "default"


async def page_all(backend: MemoryBackend, pattern: str, limit: int) -> list[str]:
    names: list[str] = []
    after: str | None = None
    while True:
        page = await backend.kv_list(NS, Pattern.compile(pattern), limit=limit, after=after)
        names += [e.key for e in page.items]
        if page.next_cursor is None:
            return names
        after = page.next_cursor


async def test_paging_from_a_cursor_across_inserts_and_deletes() -> None:
    backend = MemoryBackend()
    for i in range(0, 200, 2):  # even names first, in reverse order
        await backend.kv_put(NS, f"k{198 - i:03d}", b"1")
    page = await backend.kv_list(NS, Pattern.compile("k*"), limit=10, after=None)
    assert [e.key for e in page.items] == [f"k{i:03d}" for i in range(0, 20, 2)]
    cursor = page.next_cursor
    assert cursor == "k018"
    # Names before the cursor are not seen again; names after it are, in order.
    await backend.kv_put(NS, "k001", b"1")
    await backend.kv_put(NS, "k019", b"1")
    await backend.kv_put(NS, "k021", b"1")
    await backend.kv_delete(NS, "k020")
    await backend.kv_delete(NS, "k018")  # the cursor's own name: paging goes on past it
    page = await backend.kv_list(NS, Pattern.compile("k*"), limit=4, after=cursor)
    assert [e.key for e in page.items] == ["k019", "k021", "k022", "k024"]
    rest = await page_all(backend, "k*", 7)
    assert rest == sorted({f"k{i:03d}" for i in range(0, 200, 2)} - {"k018", "k020"}
                          | {"k001", "k019", "k021"})
    assert list(backend.store.ns(NS).order) == rest
    # A pattern's prefix bounds the scan on both sides.
    assert await page_all(backend, "k19*", 3) == ["k190", "k192", "k194", "k196", "k198"]


def test_a_sorted_list_pages_as_a_plain_list_and_is_never_read_by_position() -> None:
    rng = random.Random(15)
    names = sorted({"".join(rng.choice("ab/") for _ in range(rng.randint(1, 7)))
                    for _ in range(4000)})
    order = SortedList(names)
    assert len(order._lists) > 1  # several sublists, so reads cross from one to the next
    for _ in range(400):
        prefix = "".join(rng.choice("ab/") for _ in range(rng.randint(0, 3)))
        after = rng.choice([None, rng.choice(names), prefix, prefix + "a",
                            "".join(rng.choice("ab/") for _ in range(rng.randint(0, 5)))])
        assert list(names_from(order, prefix, after)) == list(names_from(names, prefix, after))
        assert list(names_from(names, prefix, after)) == [
            n for n in names if n >= prefix and (after is None or n > after)]
        pattern = Pattern.compile(prefix + "*" + rng.choice(["", "a", "b/"]))
        limit = rng.randint(1, 30)
        assert (page_sorted(order, pattern, after, limit, lambda n: n)
                == page_sorted(names, pattern, after, limit, lambda n: n))
    # Listings left the SortedList without its positional index, which every insert
    # would otherwise update and every split drop (paging.names_from).
    assert not order._index


async def test_history_appears_at_the_second_revision() -> None:
    backend = MemoryBackend(key_history=3)
    st = backend.store.ns(NS)
    first = (await backend.kv_put(NS, "a", b"1")).entry
    assert "a" not in st.history  # one revision: only the entry
    assert [e.revision for e in await backend.kv_history(NS, "a")] == [first.revision]
    assert await backend.kv_get(NS, "a", first.revision) == first
    second = (await backend.kv_put(NS, "a", b"22")).entry
    # The older revisions only (the live one is in keys), a lone one without a tuple.
    assert type(st.history["a"]) is bytes and revision_of(st.history["a"]) == first.revision
    assert [e.revision for e in await backend.kv_history(NS, "a")] == [
        second.revision, first.revision]
    for value in (b"333", b"4444"):
        await backend.kv_put(NS, "a", value)
    kept = await backend.kv_history(NS, "a")
    assert [e.value for e in kept] == [b"4444", b"333", b"22"]  # key_history=3
    assert [value_of(row) for row in st.history["a"]] == [b"333", b"22"]
    assert await backend.kv_get(NS, "a", first.revision) is None  # pushed out
    assert (await backend.kv_get(NS, "a", second.revision + 1)) == kept[1]
    # The quota's bytes are every kept revision's value, given back on delete.
    assert st.used_bytes == 4 + 3 + 2
    await backend.kv_put(NS, "b", b"55555")
    assert st.used_bytes == 9 + 5
    touched = await backend.kv_touch(NS, "a", 60_000)
    assert entry_of("a", st.keys["a"]) == touched == (await backend.kv_history(NS, "a"))[0]
    assert touched.expires_at is not None and touched.value == b"4444"
    await backend.kv_delete(NS, "a")
    assert "a" not in st.history and st.used_bytes == 5
    await backend.kv_delete(NS, "b")
    assert st.used_bytes == 0 and not st.keys and not st.history and not st.order


async def test_older_revisions_are_kept_bare_then_in_a_tuple_up_to_the_limit() -> None:
    for limit in (2, 3, 4):
        backend = MemoryBackend(key_history=limit)
        st = backend.store.ns(NS)
        for i in range(6):
            await backend.kv_put(NS, "a", b"%d" % i)
            older = st.history.get("a")
            rows = [] if older is None else [older] if type(older) is bytes else list(older)
            assert [value_of(row) for row in rows] == [
                b"%d" % j for j in range(i - 1, max(-1, i - limit), -1)]
            assert type(older) is (tuple if len(rows) > 1 else bytes if rows else type(None))
            assert st.used_bytes == sum(len(b"%d" % j) for j in range(max(0, i + 1 - limit),
                                                                      i + 1))


async def test_one_kept_revision_keeps_no_history() -> None:
    backend = MemoryBackend(key_history=1)
    st = backend.store.ns(NS)
    for value in (b"1", b"22", b"333"):
        entry = (await backend.kv_put(NS, "a", value)).entry
    assert not st.history and await backend.kv_history(NS, "a") == [entry]
    assert st.used_bytes == 3 and entry.version == 3


async def test_expiry_runs_in_deadline_order() -> None:
    backend = MemoryBackend()
    start = (await backend.current_revision(NS))
    # Written in one order, due in another; "c" is rewritten with a later deadline and
    # "d" deleted, so their first deadlines are stale.
    for key, ttl in (("a", 30_000), ("b", 10_000), ("c", 5_000), ("d", 1_000),
                     ("e", 20_000)):
        await backend.kv_put(NS, key, b"1", ttl_ms=ttl)
    await backend.kv_put(NS, "c", b"2", ttl_ms=40_000)
    await backend.kv_delete(NS, "d")
    before = await backend.current_revision(NS)
    assert backend.store.expire_due(now_ms() + 25_000) == 2
    assert backend.store.expire_due(now_ms() + 60_000) == 2
    batch = await backend.read_events(NS, before)
    assert [(e.type, e.key) for e in batch.events] == [
        ("kv.expire", "b"), ("kv.expire", "e"), ("kv.expire", "a"), ("kv.expire", "c")]
    assert not backend.store.deadlines and batch.events[0].revision == before + 1 > start
    assert not backend.store.ns(NS).keys and not backend.store.ns(NS).order


async def test_lease_index_stays_sorted() -> None:
    backend = MemoryBackend()
    for lease_id in ("m", "c", "x", "a", "q"):
        await backend.lease_grant(NS, lease_id, 60_000)
    await backend.lease_revoke(NS, "c")
    await backend.lease_grant(NS, "b", 60_000)
    assert list(backend.store.ns(NS).lease_order) == ["a", "b", "m", "q", "x"]
    items, cursor = await backend.lease_list(NS, Pattern.compile("*"), limit=2, after="a")
    assert [i.id for i in items] == ["b", "m"] and cursor == "m"


async def test_kept_bytes_are_compact_copies() -> None:
    encoded = orjson.dumps({"a": 1})
    copied = compact(encoded)
    assert copied == encoded and copied is not encoded and type(copied) is bytes
    backend = MemoryBackend(bounds=Bounds())
    result = await backend.kv_put(NS, "k", encoded)
    assert result.entry.value == encoded
    [event] = (await backend.read_events(NS, 0)).events
    assert orjson.loads(event.data)["value"] == {"a": 1}
    assert backend.store.ns(NS).event_bytes == event.size  # (fields_size: see events.py)


def test_entry_of_builds_the_same_key_entry() -> None:
    fields = (7, 3, 2, 1_764_500_000_000, 1_764_500_000_500, None)
    row = pack(b'{"a":1}', *fields)
    built = entry_of("k", row)
    assert built == KeyEntry("k", b'{"a":1}', *fields) and type(built) is KeyEntry
    assert built.to_json() == KeyEntry("k", b'{"a":1}', *fields).to_json()
    assert built.etag == "\"7\""
    assert entry_of("k", with_deadline(row, 1_764_500_060_000)).expires_at == 1_764_500_060_000


def test_a_row_is_one_bytes_object_the_collector_never_tracks() -> None:
    """Rows are bytes (app/backends/memory/rows.py): a new tuple stays tracked by the
    cyclic GC until a young collection reads everything it holds, which at a million
    keys is out of the CPU's caches; a dict of bytes values is not tracked either."""
    row = pack(b"[1,2]", 5, 2, 4, 1_000, 2_000, None)
    assert type(row) is bytes and not gc.is_tracked(row)
    assert value_of(row) == b"[1,2]" and value_size(row) == 5 and revision_of(row) == 5
    assert not is_due(row, 2**62)  # no deadline: never due
    due = with_deadline(row, 3_000)
    assert value_of(due) == b"[1,2]" and not is_due(due, 2_999) and is_due(due, 3_000)
    assert entry_of("k", with_deadline(due, None)) == entry_of("k", row)
    after = successor(due, b"", 9, 4_000, None)  # an empty value, at the next revision
    assert entry_of("k", after) == KeyEntry("k", b"", 9, 2, 5, 1_000, 4_000, None)
    # Extremes of the head: the sentinel is below every deadline a key can have.
    assert NO_DEADLINE < 0 and entry_of("k", pack(b"1", 2**63 - 1, 1, 1, 0, 0, 0)).revision \
        == 2**63 - 1 and entry_of("k", pack(b"1", 1, 1, 1, 0, 0, 0)).expires_at == 0
    table = {"a": row, "b": due}
    gc.collect()
    assert not gc.is_tracked(table)


async def test_a_stores_rows_are_untracked_after_writes_and_touches() -> None:
    backend = MemoryBackend(key_history=3)
    for i in range(3):
        await backend.kv_put(NS, "a", b"%d" % i, ttl_ms=60_000 if i == 1 else 0)
    await backend.kv_put(NS, "b", b"1", ttl_ms=60_000)
    await backend.kv_touch(NS, "b", 120_000)
    await backend.kv_increment(NS, "c", 2)
    st = backend.store.ns(NS)
    assert st.history and all(type(row) is bytes for row in st.keys.values())
    kept = [row for key in st.keys for row in backend.keys.kept(st, key)]
    assert len(kept) == 5 and all(type(row) is bytes for row in kept)  # "a" keeps three
    gc.collect()
    assert not gc.is_tracked(st.keys)


# -- lock slots: kept only while a lock has a holder, pending entries or waiters -------

N_LOCKS = 1_000


def lock_state(backend: MemoryBackend) -> tuple[int, int]:
    return len(backend.locks.slots), len(backend.locks.names)


async def acquired(backend: MemoryBackend, name: str, owner: str = "o", ttl_ms: int = 0,
                   scope: str = "", **kw: Any) -> LockInfo:
    out = await backend.lock_acquire(NS, scope, name, LockRequest(owner, ttl_ms, **kw),
                                     session=bool(scope))
    assert out.status == "acquired" and out.holder is not None
    return out.holder


async def test_released_locks_keep_no_slot() -> None:
    backend = MemoryBackend()
    before = lock_state(backend)
    for i in range(N_LOCKS):  # exclusive: acquire, release
        held = await acquired(backend, f"x{i}")
        await backend.lock_release(NS, "", f"x{i}", "o", held.token)
    for i in range(N_LOCKS):  # queue: an entry pending, handed over at the release
        held = await acquired(backend, f"q{i}")
        out = await backend.lock_acquire(NS, "", f"q{i}", LockRequest(
            "p", 0, mode="queue", entry=b"1"))
        assert out.status == "queued" and lock_state(backend) != before
        assert (await backend.lock_release(NS, "", f"q{i}", "o", held.token)).pending == (b"1",)
    for i in range(N_LOCKS):  # debounce, then a force-release hands the entry over
        await acquired(backend, f"d{i}")
        await backend.lock_acquire(NS, "", f"d{i}", LockRequest(
            "p", 0, mode="debounce", entry=b"2"))
        assert (await backend.lock_force_release(NS, "", f"d{i}")).pending == (b"2",)
    for i in range(N_LOCKS):  # pending entries left by an expiry, taken by the next holder
        await acquired(backend, f"e{i}", ttl_ms=1_000)
        await backend.lock_acquire(NS, "", f"e{i}", LockRequest("p", 0, mode="queue"))
    assert backend.store.expire_due(now_ms() + 5_000) == N_LOCKS
    assert lock_state(backend) == (N_LOCKS, 1)  # the pending entries still need them
    for i in range(N_LOCKS):
        held = await acquired(backend, f"e{i}", owner="p")
        await backend.lock_release(NS, "", f"e{i}", "p", held.token)
    assert lock_state(backend) == before
    assert len(backend.store.ns(NS).locks) == 0


async def test_expired_locks_keep_no_slot_and_tokens_never_repeat() -> None:
    backend = MemoryBackend()
    before = lock_state(backend)
    for i in range(N_LOCKS):
        await acquired(backend, f"t{i}", ttl_ms=1_000)
    assert lock_state(backend) == (N_LOCKS, 1)
    assert backend.store.expire_due(now_ms() + 5_000) == N_LOCKS  # the sweeper's pass
    assert lock_state(backend) == before
    # The counter outlives the slot: the old holder's token must not hold the lock again.
    held = await acquired(backend, "t7")
    assert held.token == 2
    with pytest.raises(StaleFence):
        backend.store.fence_holds(NS, Fence("t7", 1), now_ms())
    backend.store.fence_holds(NS, Fence("t7", 2), now_ms())
    # One int per name is what stays (as Redis keeps locktok:), not a slot.
    assert len(backend.locks.tokens[(NS, "")]) == N_LOCKS


async def test_waiters_that_give_up_or_are_handed_the_lock_keep_no_slot() -> None:
    backend = MemoryBackend()
    before = lock_state(backend)
    tokens = [(await acquired(backend, f"w{i}")).token for i in range(N_LOCKS)]

    async def times_out(i: int) -> None:
        with pytest.raises(Conflict):
            await backend.lock_acquire(NS, "", f"w{i}", LockRequest("b", 0, wait_s=0.05))

    await asyncio.gather(*(times_out(i) for i in range(N_LOCKS)))
    assert lock_state(backend) == (N_LOCKS, 1)
    # Waiters whose client went away, and waiters handed the lock at the release.
    gone = asyncio.Event()
    leaving = [asyncio.create_task(backend.lock_acquire(
        NS, "", f"w{i}", LockRequest("c", 0, wait_s=30), gone)) for i in range(N_LOCKS)]
    handed = [asyncio.create_task(backend.lock_acquire(
        NS, "", f"w{i}", LockRequest("d", 0, wait_s=30))) for i in range(N_LOCKS)]
    await asyncio.sleep(0.05)
    gone.set()
    for task in leaving:
        with pytest.raises(Conflict):
            await task
    for i, token in enumerate(tokens):
        await backend.lock_release(NS, "", f"w{i}", "o", token)
    for i, task in enumerate(handed):
        held = (await task).holder
        assert held is not None and held.owner == "d"
        await backend.lock_release(NS, "", f"w{i}", "d", held.token)
    assert lock_state(backend) == before


async def test_deleted_sessions_and_ended_leases_keep_no_lock_slot() -> None:
    backend = MemoryBackend()
    before = lock_state(backend)
    for i in range(N_LOCKS):
        sid = f"s{i}"
        await backend.session_put(NS, sid, b"{}", 0)
        await acquired(backend, "a", scope=sid)
        await acquired(backend, "b", scope=sid)
        await backend.lock_acquire(NS, sid, "b", LockRequest("p", 0, mode="queue"),
                                   session=True)
    assert lock_state(backend) == (2 * N_LOCKS, N_LOCKS)
    for i in range(N_LOCKS):
        assert await backend.session_delete(NS, f"s{i}")
    assert lock_state(backend) == before
    for i in range(N_LOCKS):
        await backend.lease_grant(NS, f"lease{i}", 60_000)
        await acquired(backend, f"l{i}", lease=f"lease{i}")
        await backend.lease_revoke(NS, f"lease{i}")
    assert lock_state(backend) == before
