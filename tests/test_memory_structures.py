"""The in-memory backend's data structures, below HTTP (issue 15: a million keys): the
ordered key index paging from a cursor while keys come and go, history kept only from a
key's second revision (and the quota bytes it counts), expiry in deadline order, the
lease index, and kept bytes copied out of orjson's buffers. The HTTP behaviour of the
same operations is covered on every backend by test_kv*.py, test_ttl.py, test_leases.py.
"""

from __future__ import annotations

import orjson

from app.backends.memory import MemoryBackend
from app.backends.memory.store import REVISION, Row, compact, entry_of
from app.domain.bounds import Bounds
from app.domain.keys import KeyEntry
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


async def test_history_appears_at_the_second_revision() -> None:
    backend = MemoryBackend(key_history=3)
    st = backend.store.ns(NS)
    first = (await backend.kv_put(NS, "a", b"1")).entry
    assert "a" not in st.history  # one revision: only the entry
    assert [e.revision for e in await backend.kv_history(NS, "a")] == [first.revision]
    assert await backend.kv_get(NS, "a", first.revision) == first
    second = (await backend.kv_put(NS, "a", b"22")).entry
    assert [row[REVISION] for row in st.history["a"]] == [second.revision, first.revision]
    for value in (b"333", b"4444"):
        await backend.kv_put(NS, "a", value)
    kept = await backend.kv_history(NS, "a")
    assert [e.value for e in kept] == [b"4444", b"333", b"22"]  # key_history=3
    assert await backend.kv_get(NS, "a", first.revision) is None  # pushed out
    assert (await backend.kv_get(NS, "a", second.revision + 1)) == kept[1]
    # The quota's bytes are every kept revision's value, given back on delete.
    assert st.used_bytes == 4 + 3 + 2
    await backend.kv_put(NS, "b", b"55555")
    assert st.used_bytes == 9 + 5
    touched = await backend.kv_touch(NS, "a", 60_000)
    assert entry_of("a", st.history["a"][0]) == touched == (await backend.kv_history(NS, "a"))[0]
    assert touched.expires_at is not None and st.keys["a"] == st.history["a"][0]
    await backend.kv_delete(NS, "a")
    assert "a" not in st.history and st.used_bytes == 5
    await backend.kv_delete(NS, "b")
    assert st.used_bytes == 0 and not st.keys and not st.history and not st.order


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
    row: Row = (b'{"a":1}', 7, 3, 2, 1_764_500_000_000, 1_764_500_000_500, None)
    built = entry_of("k", row)
    assert built == KeyEntry("k", *row) and type(built) is KeyEntry
    assert built.to_json() == KeyEntry("k", *row).to_json() and built.etag == "\"7\""
    assert entry_of("k", (*row[:6], 1_764_500_060_000)).expires_at == 1_764_500_060_000
