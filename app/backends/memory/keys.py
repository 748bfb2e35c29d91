"""The in-memory key store: a namespace's keys, their kept revisions, TTLs and leases.

Each call runs without awaiting between its checks and its change (see ``store.py``).
TTLs behave as on Redis: the deadline is stored beside the value, reads treat a passed
deadline as absence, and the sweeper expires it with an event on time.
"""

from __future__ import annotations

import orjson

from app.backends.memory.rows import (
    Row,
    entry_of,
    expires_of,
    is_due,
    older_rows,
    oldest_if_full,
    pack,
    pushed,
    revision_of,
    successor,
    value_of,
    value_size,
    with_deadline,
)
from app.backends.memory.store import MemoryStore, Namespace
from app.backends.paging import page_sorted
from app.backends.parts.keys import KeyStore
from app.domain.conditions import KEY, NO_CONDITION, Condition
from app.domain.fence import Fence
from app.domain.keys import KeyEntry, KeyPage, PutResult, ValueUpdate, apply_update
from app.domain.numbers import add_exact, number_to_increment
from app.errors import NotFound
from app.syntax import Pattern, now_ms


class MemoryKeys(KeyStore):
    """The key store on a ``MemoryStore``."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        store.on_deadline("k", self.expire_k)

    # -- internals, also used by leases and transactions -----------------------------

    @staticmethod
    def entry(st: Namespace, key: str) -> KeyEntry | None:
        """The key's stored entry, past its deadline or not."""
        row = st.keys.get(key)
        return entry_of(key, row) if row is not None else None

    def live(self, st: Namespace, key: str, now: int) -> KeyEntry | None:
        row = st.keys.get(key)
        if row is None or is_due(row, now):
            return None
        return entry_of(key, row)

    def expire_if_due(self, ns: str, key: str, now: int) -> None:
        st = self.store.view(ns)
        row = st.keys.get(key)
        if row is not None and is_due(row, now):
            self.remove(st, key)
            self.store.emit(ns, "kv.expire", key, now, value=None, old_value=value_of(row))

    @staticmethod
    def kept(st: Namespace, key: str) -> tuple[Row, ...]:
        """The key's kept revisions, newest (the live row) first; () without the key."""
        row = st.keys.get(key)
        if row is None:
            return ()
        older = st.history.get(key)
        return (row,) if older is None else (row, *older_rows(older))

    def dropped_bytes(self, st: Namespace, key: str) -> int:
        """The bytes of the kept revision a new revision of ``key`` pushes out: the oldest
        when all ``key_history`` are kept (read in place: every write asks, and ``kept``
        would build a tuple of up to 1,000 rows)."""
        limit = self.store.key_history
        if limit == 1:
            row = st.keys.get(key)
            return value_size(row) if row is not None else 0
        dropped = oldest_if_full(st.history.get(key), limit - 1)
        return value_size(dropped) if dropped is not None else 0

    def remove(self, st: Namespace, key: str) -> None:
        self.detach_lease(st, key)
        st.used_bytes -= sum(value_size(row) for row in self.kept(st, key))
        del st.keys[key]
        st.history.pop(key, None)
        st.order.discard(key)

    def detach_lease(self, st: Namespace, key: str) -> None:
        lease_id = st.key_leases.pop(key, None)
        if lease_id is not None and lease_id in st.leases:
            st.leases[lease_id].detach_key(key)

    def checked(
        self, ns: str, key: str, now: int, condition: Condition, fence: Fence | None,
        lease: str | None,
    ) -> KeyEntry | None:
        """A write's checks in their order (fence, lease, condition on the key after a
        due expiry); the current entry when there was a condition to check."""
        self.store.fence_holds(ns, fence, now)
        self.store.lease_live(ns, lease, now)
        self.expire_if_due(ns, key, now)
        if not condition.any:  # nothing to check: the entry is built only when asked for
            return None
        current = self.entry(self.store.view(ns), key)
        condition.check(current, KEY)
        return current

    def write(
        self, ns: str, key: str, value: bytes, expires_at: int | None, now: int,
        lease: str | None = None,
    ) -> PutResult:
        st = self.store.ns(ns)
        old = st.keys.get(key)
        self.store.charge(ns, 0 if old is not None else 1,
                          len(value) - self.dropped_bytes(st, key))
        revision = self.store.emit(
            ns, "kv.put", key, now, value=value,
            old_value=value_of(old) if old is not None else None,
        )
        return self.store_entry(ns, key, value, expires_at, now, revision, lease)

    def store_entry(
        self, ns: str, key: str, value: bytes, expires_at: int | None, now: int,
        revision: int, lease: str | None,
    ) -> PutResult:
        """Write the key at ``revision`` (whose event the caller appends)."""
        st = self.store.ns(ns)
        old = st.keys.get(key)
        if st.key_leases.get(key) != lease:
            self.detach_lease(st, key)
            if lease is not None:
                st.key_leases[key] = lease
                st.leases[lease].attach_key(key)
        row: Row
        if old is None:
            row = pack(value, revision, revision, 1, now, now, expires_at)
            st.order.add(key)
        else:
            row = successor(old, value, revision, now, expires_at)
            limit = self.store.key_history
            if limit > 1:  # a key's history appears with its second revision
                st.history[key] = pushed(st.history.get(key), old, limit - 1)
        st.keys[key] = row
        if expires_at is not None:
            self.store.schedule_deadline(expires_at, ns, "k:" + key)
        return PutResult(entry_of(key, row), old is None)

    # -- keys ------------------------------------------------------------------------

    async def kv_get(self, ns: str, key: str, revision: int | None = None) -> KeyEntry | None:
        st = self.store.view(ns)
        entry = self.live(st, key, now_ms())
        if revision is None or entry is None:
            return entry
        return next((entry_of(key, row) for row in self.kept(st, key)
                     if revision_of(row) <= revision), None)

    async def kv_put(
        self,
        ns: str,
        key: str,
        value: bytes,
        *,
        ttl_ms: int = 0,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
        lease: str | None = None,
    ) -> PutResult:
        now = now_ms()
        self.checked(ns, key, now, condition, fence, lease)
        return self.write(ns, key, value, now + ttl_ms if ttl_ms else None, now, lease)

    async def kv_update(
        self,
        ns: str,
        key: str,
        update: ValueUpdate,
        *,
        initial: bytes | None = None,
        ttl_ms: int | None = None,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
        lease: str | None = None,
    ) -> PutResult:
        now = now_ms()
        self.checked(ns, key, now, condition, fence, lease)
        current = self.entry(self.store.view(ns), key)
        if current is None and initial is None:
            raise NotFound(f"Key {key!r} does not exist and no initial value was given.")
        base = current.value if current is not None else initial
        assert base is not None
        new_value = apply_update(update, base, current)
        if lease is not None:
            expires_at = None
        elif ttl_ms is None:
            expires_at = current.expires_at if current is not None else None
            lease = self.store.ns(ns).key_leases.get(key)  # keeps its lifetime, lease included
        else:
            expires_at = now + ttl_ms if ttl_ms else None
        return self.write(ns, key, new_value, expires_at, now, lease)

    async def kv_increment(
        self,
        ns: str,
        key: str,
        by: int | float,
        *,
        initial: int | float = 0,
        ttl_ms: int = 0,
        fence: Fence | None = None,
    ) -> PutResult:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        self.expire_if_due(ns, key, now)
        current = self.store.view(ns).keys.get(key)
        start = number_to_increment(key, value_of(current) if current is not None else initial)
        result = add_exact(start, by)
        if current is None:
            expires_at = now + ttl_ms if ttl_ms else None
        else:
            expires_at = expires_of(current)
        lease = self.store.ns(ns).key_leases.get(key)  # an increment keeps the key's lease
        return self.write(ns, key, orjson.dumps(result), expires_at, now, lease)

    async def kv_touch(
        self, ns: str, key: str, ttl_ms: int, *, fence: Fence | None = None
    ) -> KeyEntry:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        self.expire_if_due(ns, key, now)
        st = self.store.view(ns)
        current = st.keys.get(key)
        if current is None:
            raise NotFound(f"Key {key!r} does not exist.")
        expires_at = now + ttl_ms if ttl_ms else None
        row = with_deadline(current, expires_at)
        st.keys[key] = row
        if expires_at is not None:
            self.store.schedule_deadline(expires_at, ns, "k:" + key)
        return entry_of(key, row)

    async def kv_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> KeyEntry | None:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        self.expire_if_due(ns, key, now)
        st = self.store.view(ns)
        current = self.entry(st, key)
        condition.check(current, KEY)
        if current is None:
            return None
        self.remove(st, key)
        self.store.emit(ns, "kv.delete", key, now, value=None, old_value=current.value)
        return current

    async def kv_history(self, ns: str, key: str) -> list[KeyEntry]:
        st = self.store.view(ns)
        if self.live(st, key, now_ms()) is None:
            return []
        return [entry_of(key, row) for row in self.kept(st, key)]

    async def kv_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> KeyPage:
        st = self.store.view(ns)
        now = now_ms()
        items, cursor = page_sorted(st.order, pattern, after, limit,
                                    lambda key: self.live(st, key, now))
        return KeyPage(items, cursor, st.revision)

    def expire_k(self, ns: str, key: str, deadline: int, now: int) -> bool:
        row = self.store.view(ns).keys.get(key)
        if row is None or expires_of(row) != deadline:
            return False  # deleted, rewritten or touched since this deadline was set
        self.expire_if_due(ns, key, now)
        return True
