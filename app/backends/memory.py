"""The embedded in-memory backend: one process, no persistence, the default.

Every operation runs without awaiting between reading and writing, so on one event loop
it is atomic. TTLs behave as on Redis: the deadline is stored beside the value, reads
treat a passed deadline as absence, and a sweeper expires it with an event on time.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.backends.base import Backend, BackendInfo
from app.backends.memory_artifacts import MemoryArtifactsMixin
from app.backends.memory_leases import LeaseState, MemoryLeases
from app.backends.memory_locks import MemoryLocks
from app.backends.memory_sessions import MemorySessions
from app.backends.memory_txn import MemoryTxn
from app.backends.paging import page_sorted
from app.domain.bounds import Bounds, quota_exceeded
from app.domain.conditions import KEY, NO_CONDITION, Condition
from app.domain.events import ChangeEvent, EventBatch, build_event
from app.domain.fence import Fence
from app.domain.keys import KeyEntry, KeyPage, PutResult, ValueUpdate, apply_update
from app.domain.numbers import add_exact, number_to_increment
from app.errors import NotFound
from app.syntax import Pattern, now_ms


@dataclass(slots=True)
class LockState:
    """The holder of a lock, as the fencing check needs it."""

    owner: str
    token: int
    acquired_at: int
    expires_at: int | None


@dataclass(slots=True)
class _Namespace:
    retention: int
    revision: int = 0
    compacted: int = 0
    event_bytes: int = 0  # the sum of len(event.data) over ``events``
    used_bytes: int = 0  # what CORKBOARD_NAMESPACE_MAX_BYTES bounds (see Bounds)
    events: deque[ChangeEvent] = field(default_factory=deque)
    keys: dict[str, KeyEntry] = field(default_factory=dict)
    history: dict[str, deque[KeyEntry]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    locks: dict[tuple[str, str], LockState] = field(default_factory=dict)
    leases: dict[str, LeaseState] = field(default_factory=dict)
    lease_order: list[str] = field(default_factory=list)  # the lease ids, sorted
    #: The lease each key on a lease is attached to.
    key_leases: dict[str, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryBackend(
    MemoryTxn, MemoryLeases, MemorySessions, MemoryLocks, MemoryArtifactsMixin, Backend
):
    """State in this process's memory; refuses nothing, remembers nothing across restarts."""

    def __init__(
        self,
        *,
        key_history: int = 10,
        event_retention: int = 100_000,
        bounds: Bounds | None = None,
    ) -> None:
        self.info = BackendInfo(name="memory", persistence=False, distribution=False)
        self.key_history = key_history
        self.bounds = bounds or Bounds(event_retention=event_retention)
        self.event_retention = self.bounds.event_retention
        self._namespaces: dict[str, _Namespace] = {}
        # Wakers of read_events waits on namespaces that do not exist (yet): a read
        # creates no namespace; the first write adopts the waker (see _ns).
        self._wakers: dict[str, tuple[asyncio.Event, int]] = {}
        #: Deadline rows a sweep handled, in total: a sweep's work is what is due.
        self.sweep_visits = 0
        # (deadline_ms, ns, member): member is "<kind>:<name>" ("k:<key>" for keys), handled
        # by the method _expire_<kind>; rows made stale by later writes are skipped.
        self._deadlines: list[tuple[int, str, str]] = []

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    # -- internals -------------------------------------------------------------------

    def _ns(self, ns: str) -> _Namespace:
        """The namespace's state, created for a write; reads use ``_view``."""
        state = self._namespaces.get(ns)
        if state is None:
            state = self._namespaces[ns] = _Namespace(retention=self.event_retention)
            waker = self._wakers.get(ns)
            if waker is not None:
                state.changed = waker[0]
        return state

    def _view(self, ns: str) -> _Namespace:
        """The namespace's state for a read: an unstored empty one when it has none, so
        that reading never creates state (API.md section 9)."""
        state = self._namespaces.get(ns)
        return state if state is not None else _Namespace(retention=self.event_retention)

    def check_quota(self, ns: str, keys: int, nbytes: int) -> None:
        """507 when a write would add keys past ``max_keys`` or bytes past ``max_bytes``
        (a write that frees room always passes). Called before the write changes anything."""
        st = self._view(ns)
        if keys > 0 and len(st.keys) + keys > self.bounds.max_keys:
            raise quota_exceeded(ns, "keys", self.bounds.max_keys)
        if nbytes > 0 and st.used_bytes + nbytes > self.bounds.max_bytes:
            raise quota_exceeded(ns, "bytes", self.bounds.max_bytes)

    def charge(self, ns: str, keys: int, nbytes: int) -> None:
        """``check_quota``, then count the write's bytes (negative: given back)."""
        self.check_quota(ns, keys, nbytes)
        if nbytes:
            self._ns(ns).used_bytes += nbytes

    def _append(self, st: _Namespace, event: ChangeEvent) -> None:
        st.events.append(event)
        st.event_bytes += len(event.data)
        # Compact by count and by bytes; the newest event always stays (a resume point).
        # Each event is dropped once: amortized O(1) per append.
        limit = self.bounds.event_retention_bytes
        while len(st.events) > st.retention or (st.event_bytes > limit and len(st.events) > 1):
            old = st.events.popleft()
            st.event_bytes -= len(old.data)
            st.compacted = old.revision
        st.changed.set()
        st.changed = asyncio.Event()

    def emit(
        self,
        ns: str,
        type_: str,
        key: str,
        at_ms: int,
        **fields: Any,
    ) -> int:
        """Take the namespace's next revision and append one event for it."""
        st = self._ns(ns)
        st.revision += 1
        self._append(st, build_event(ns, st.revision, type_, key, at_ms, **fields))
        return st.revision

    def schedule_deadline(self, deadline_ms: int, ns: str, member: str) -> None:
        heapq.heappush(self._deadlines, (deadline_ms, ns, member))

    def fence_holds(self, ns: str, fence: Fence | None, now: int) -> None:
        """Raise StaleFence unless ``fence`` names the current holder of its lock."""
        if fence is None:
            return
        lock = self._view(ns).locks.get((fence.scope, fence.name))
        if (
            lock is None
            or lock.token != fence.token
            or (lock.expires_at is not None and lock.expires_at <= now)
        ):
            raise fence.stale()

    def _live(self, st: _Namespace, key: str, now: int) -> KeyEntry | None:
        entry = st.keys.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            return None
        return entry

    def _expire_if_due(self, ns: str, key: str, now: int) -> None:
        st = self._view(ns)
        entry = st.keys.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            self._remove(st, key)
            self.emit(ns, "kv.expire", key, now, value=None, old_value=entry.value)

    def _remove(self, st: _Namespace, key: str) -> None:
        self._detach_lease(st, key)
        del st.keys[key]
        st.used_bytes -= sum(len(e.value) for e in st.history.pop(key, ()))
        i = bisect.bisect_left(st.order, key)
        if i < len(st.order) and st.order[i] == key:
            del st.order[i]

    def _detach_lease(self, st: _Namespace, key: str) -> None:
        lease_id = st.key_leases.pop(key, None)
        if lease_id is not None and lease_id in st.leases:
            st.leases[lease_id].keys.discard(key)

    def _write(
        self, ns: str, key: str, value: bytes, expires_at: int | None, now: int,
        lease: str | None = None,
    ) -> PutResult:
        st = self._ns(ns)
        old = st.keys.get(key)
        kept = st.history.get(key)
        dropped = kept[-1].value if kept is not None and len(kept) == kept.maxlen else b""
        self.charge(ns, 0 if old is not None else 1, len(value) - len(dropped))
        revision = self.emit(
            ns, "kv.put", key, now, value=value, old_value=old.value if old else None
        )
        return self._store(ns, key, value, expires_at, now, revision, lease)

    def _store(
        self, ns: str, key: str, value: bytes, expires_at: int | None, now: int,
        revision: int, lease: str | None,
    ) -> PutResult:
        """Write the entry at ``revision`` (whose event the caller appends)."""
        st = self._ns(ns)
        old = st.keys.get(key)
        if st.key_leases.get(key) != lease:
            self._detach_lease(st, key)
            if lease is not None:
                st.key_leases[key] = lease
                st.leases[lease].keys.add(key)
        if old is None:
            entry = KeyEntry(key, value, revision, revision, 1, now, now, expires_at)
            bisect.insort(st.order, key)
            st.history[key] = deque(maxlen=self.key_history)
        else:
            entry = KeyEntry(
                key, value, revision, old.created_revision, old.version + 1,
                old.created_at, now, expires_at,
            )
        st.keys[key] = entry
        st.history[key].appendleft(entry)
        if expires_at is not None:
            self.schedule_deadline(expires_at, ns, "k:" + key)
        return PutResult(entry, old is None)

    # -- keys ------------------------------------------------------------------------

    async def kv_get(self, ns: str, key: str, revision: int | None = None) -> KeyEntry | None:
        st = self._view(ns)
        entry = self._live(st, key, now_ms())
        if revision is None or entry is None:
            return entry
        return next((e for e in st.history.get(key, ()) if e.revision <= revision), None)

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
        self.fence_holds(ns, fence, now)
        self.lease_live(ns, lease, now)
        self._expire_if_due(ns, key, now)
        condition.check(self._view(ns).keys.get(key), KEY)
        return self._write(ns, key, value, now + ttl_ms if ttl_ms else None, now, lease)

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
        self.fence_holds(ns, fence, now)
        self.lease_live(ns, lease, now)
        self._expire_if_due(ns, key, now)
        current = self._view(ns).keys.get(key)
        condition.check(current, KEY)
        if current is None and initial is None:
            raise NotFound(f"Key {key!r} does not exist and no initial value was given.")
        base = current.value if current is not None else initial
        assert base is not None
        new_value = apply_update(update, base, current)
        if lease is not None:
            expires_at = None
        elif ttl_ms is None:
            expires_at = current.expires_at if current is not None else None
            lease = self._ns(ns).key_leases.get(key)  # keeps its lifetime, lease included
        else:
            expires_at = now + ttl_ms if ttl_ms else None
        return self._write(ns, key, new_value, expires_at, now, lease)

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
        self.fence_holds(ns, fence, now)
        self._expire_if_due(ns, key, now)
        current = self._view(ns).keys.get(key)
        start = number_to_increment(key, current.value if current is not None else initial)
        result = add_exact(start, by)
        if current is None:
            expires_at = now + ttl_ms if ttl_ms else None
        else:
            expires_at = current.expires_at
        lease = self._ns(ns).key_leases.get(key)  # an increment keeps the key's lease
        return self._write(ns, key, orjson.dumps(result), expires_at, now, lease)

    async def kv_touch(
        self, ns: str, key: str, ttl_ms: int, *, fence: Fence | None = None
    ) -> KeyEntry:
        now = now_ms()
        self.fence_holds(ns, fence, now)
        self._expire_if_due(ns, key, now)
        st = self._view(ns)
        current = st.keys.get(key)
        if current is None:
            raise NotFound(f"Key {key!r} does not exist.")
        expires_at = now + ttl_ms if ttl_ms else None
        entry = KeyEntry(
            key, current.value, current.revision, current.created_revision, current.version,
            current.created_at, current.modified_at, expires_at,
        )
        st.keys[key] = entry
        history = st.history[key]
        history[0] = entry
        if expires_at is not None:
            self.schedule_deadline(expires_at, ns, "k:" + key)
        return entry

    async def kv_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> KeyEntry | None:
        now = now_ms()
        self.fence_holds(ns, fence, now)
        self._expire_if_due(ns, key, now)
        st = self._view(ns)
        current = st.keys.get(key)
        condition.check(current, KEY)
        if current is None:
            return None
        self._remove(st, key)
        self.emit(ns, "kv.delete", key, now, value=None, old_value=current.value)
        return current

    async def kv_history(self, ns: str, key: str) -> list[KeyEntry]:
        st = self._view(ns)
        if self._live(st, key, now_ms()) is None:
            return []
        return list(st.history.get(key, ()))

    async def kv_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> KeyPage:
        st = self._view(ns)
        now = now_ms()
        items, cursor = page_sorted(st.order, pattern, after, limit,
                                    lambda key: self._live(st, key, now))
        return KeyPage(items, cursor, st.revision)

    # -- change log ------------------------------------------------------------------

    async def current_revision(self, ns: str) -> int:
        return self._view(ns).revision

    async def read_events(
        self, ns: str, after: int, *, limit: int = 1000, timeout: float = 0.0
    ) -> EventBatch:
        st = self._view(ns)
        if after >= st.revision and timeout > 0:
            await self._wait_change(ns, st, timeout)
            st = self._view(ns)
        events = st.events
        start = bisect.bisect_right(events, after, key=lambda e: e.revision)
        batch = [events[i] for i in range(start, min(len(events), start + limit))]
        return EventBatch(batch, st.revision, st.compacted)

    async def _wait_change(self, ns: str, st: _Namespace, timeout: float) -> None:
        """Wait up to ``timeout`` for the namespace's next event; for a namespace without
        state, on a waker that exists only while someone waits."""
        if ns in self._namespaces:
            changed = st.changed
        else:
            event, count = self._wakers.get(ns, (asyncio.Event(), 0))
            self._wakers[ns] = (event, count + 1)
            changed = event
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waker = self._wakers.get(ns)
            if waker is not None and waker[0] is changed:
                if waker[1] <= 1:
                    del self._wakers[ns]
                else:
                    self._wakers[ns] = (changed, waker[1] - 1)

    async def expire_due(self) -> int:
        now = now_ms()
        count = 0
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, ns, member = heapq.heappop(self._deadlines)
            self.sweep_visits += 1
            kind, _, name = member.partition(":")
            # One handler per kind of deadline: _expire_k for keys; other resources add theirs.
            handler = getattr(self, "_expire_" + kind, None)
            if handler is not None and handler(ns, name, deadline, now):
                count += 1
        return count

    def _expire_k(self, ns: str, key: str, deadline: int, now: int) -> bool:
        entry = self._view(ns).keys.get(key)
        if entry is None or entry.expires_at != deadline:
            return False  # deleted, rewritten or touched since this deadline was set
        self._expire_if_due(ns, key, now)
        return True
