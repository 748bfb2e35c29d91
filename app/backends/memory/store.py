"""The in-memory backend's shared state: each namespace's revision, change log, keys,
lock holders and leases, and the deadline heap the sweeper reads. Every part of the
backend (``keys``, ``log``, ``locks``, ``leases``, ``txn``, ``sessions``, ``artifacts``)
is built on one ``MemoryStore``.

Every operation runs without awaiting between reading and writing, so on one event loop
it is atomic. A read never creates state (API.md section 9): it gets ``view``, an
unstored empty namespace when there is none; a write gets ``ns``.

Sized for millions of keys (bench/memory_bench.py; the per-key costs are in
bench/README.md): a key is its ``Row`` in ``keys`` and its name in ``order``, a
``SortedList`` (O(log n) insert and delete, paging from a cursor); ``history`` holds the
older rows of a key only when it has more than one kept revision. A row is one ``bytes``
object (``rows.py``), which Python's cyclic garbage collector never tracks: with a
slotted object per key each full collection walked every key, and at 300,000 keys that
made a PUT ~1.5x slower. Bytes that outlive the request are stored in buffers of their
own length (event JSON and session state through ``app.buffers.compact``, a value
copied into its row): orjson returns its output in a 4 KiB buffer whatever the length.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from sortedcontainers import SortedList

from app.backends.memory.rows import Older, Row
from app.buffers import compact
from app.domain.bounds import Bounds, quota_exceeded
from app.domain.events import ChangeEvent, build_event
from app.domain.fence import Fence
from app.domain.leases import LeaseInfo, lease_not_found

#: An event as kept in the log: ``ChangeEvent``'s fields (revision, type, key, session,
#: data, size) in a tuple, which the cyclic GC stops tracking (a kept ChangeEvent per write
#: made full collections, which walk every key, run every ~25,000 writes).
EventRow = tuple[int, str, str, str | None, bytes, int]
EVENT_REVISION: Final = 0
EVENT_DATA: Final = 4
EVENT_SIZE: Final = 5


#: A deadline's handler: (namespace, name, deadline, now) -> whether it expired something.
Expirer = Callable[[str, str, int, int], bool]


@dataclass(slots=True)
class LockState:
    """The holder of a lock, as the fencing check needs it."""

    owner: str
    token: int
    acquired_at: int
    expires_at: int | None


class LockTable:
    """A namespace's lock holders by (scope, name), and each scope's held names in a
    ``SortedList`` so that a listing pages from its cursor instead of sorting every
    holder (a scope's list goes with its last holder). Only these methods change it."""

    __slots__ = ("holders", "order")

    def __init__(self) -> None:
        self.holders: dict[tuple[str, str], LockState] = {}
        self.order: dict[str, SortedList[str]] = {}

    def get(self, key: tuple[str, str]) -> LockState | None:
        return self.holders.get(key)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self.holders

    def __len__(self) -> int:
        return len(self.holders)

    def __setitem__(self, key: tuple[str, str], holder: LockState) -> None:
        if key not in self.holders:
            names = self.order.get(key[0])
            if names is None:
                names = self.order[key[0]] = SortedList()
            names.add(key[1])
        self.holders[key] = holder

    def __delitem__(self, key: tuple[str, str]) -> None:
        del self.holders[key]
        names = self.order[key[0]]
        names.remove(key[1])
        if not names:
            del self.order[key[0]]

    def pop(self, key: tuple[str, str], default: LockState | None = None) -> LockState | None:
        holder = self.holders.get(key)
        if holder is None:
            return default
        del self[key]
        return holder

    def names(self, scope: str) -> SortedList[str]:
        """The names ``scope`` has holders for (expired ones too, until swept), sorted."""
        return self.order.get(scope) or _NO_NAMES


_NO_NAMES: SortedList[str] = SortedList()


@dataclass(slots=True)
class LeaseState:
    id: str
    ttl_ms: int
    granted_at: int
    expires_at: int
    #: The keys and locks (scope, name, token) on the lease, each set made by its first
    #: one: two empty sets are 432 bytes, a fifth of what a lease keeps.
    keys: set[str] | None = None
    locks: set[tuple[str, str, int]] | None = None

    def info(self) -> LeaseInfo:
        return LeaseInfo(self.id, self.ttl_ms, self.granted_at, self.expires_at)

    def attach_key(self, key: str) -> None:
        if self.keys is None:
            self.keys = set()
        self.keys.add(key)

    def detach_key(self, key: str) -> None:
        if self.keys is not None:
            self.keys.discard(key)

    def attach_lock(self, scope: str, name: str, token: int) -> None:
        if self.locks is None:
            self.locks = set()
        self.locks.add((scope, name, token))

    def sorted_keys(self) -> list[str]:
        return sorted(self.keys) if self.keys else []

    def sorted_locks(self) -> list[tuple[str, str, int]]:
        """Namespace locks (scope ``""``) first, then by session."""
        return sorted(self.locks) if self.locks else []


@dataclass(slots=True)
class Namespace:
    retention: int
    revision: int = 0
    compacted: int = 0
    event_bytes: int = 0  # the sum of event.size over ``events`` (events.fields_size)
    used_bytes: int = 0  # what CORKBOARD_NAMESPACE_MAX_BYTES bounds (see Bounds)
    events: deque[EventRow] = field(default_factory=deque)
    keys: dict[str, Row] = field(default_factory=dict)
    #: The older kept revisions (newest first) of each key that has more than one: the
    #: row itself when there is one, a tuple of rows when more (see ``Older``); a key
    #: with one revision is only its row in ``keys``.
    history: dict[str, Older] = field(default_factory=dict)
    order: SortedList[str] = field(default_factory=SortedList)  # the key names
    locks: LockTable = field(default_factory=LockTable)
    leases: dict[str, LeaseState] = field(default_factory=dict)
    lease_order: SortedList[str] = field(default_factory=SortedList)  # the lease ids
    #: The lease each key on a lease is attached to.
    key_leases: dict[str, str] = field(default_factory=dict)
    #: What a long poll waits on: made by the first waiter after an append, set and
    #: dropped by the next append (a write with nobody waiting makes no Event).
    changed: asyncio.Event | None = None


class MemoryStore:
    """The namespaces, the change log's append, quotas, deadlines and fencing."""

    def __init__(self, *, key_history: int, bounds: Bounds) -> None:
        self.key_history = key_history
        self.bounds = bounds
        self.namespaces: dict[str, Namespace] = {}
        # Wakers of read_events waits on namespaces that do not exist (yet): a read
        # creates no namespace; the first write adopts the waker (see ``ns``).
        self.wakers: dict[str, tuple[asyncio.Event, int]] = {}
        #: Deadline rows a sweep handled, in total: a sweep's work is what is due.
        self.sweep_visits = 0
        # (deadline_ms, ns, member): member is "<kind>:<name>" ("k:<key>" for keys), handled
        # by the part that registered ``kind``; rows made stale by later writes are skipped.
        self.deadlines: list[tuple[int, str, str]] = []
        self.expirers: dict[str, Expirer] = {}

    def ns(self, ns: str) -> Namespace:
        """The namespace's state, created for a write; reads use ``view``."""
        state = self.namespaces.get(ns)
        if state is None:
            state = self.namespaces[ns] = Namespace(retention=self.bounds.event_retention)
            waker = self.wakers.get(ns)
            if waker is not None:
                state.changed = waker[0]
        return state

    def view(self, ns: str) -> Namespace:
        """The namespace's state for a read: an unstored empty one when it has none, so
        that reading never creates state (API.md section 9)."""
        state = self.namespaces.get(ns)
        return state if state is not None else Namespace(retention=self.bounds.event_retention)

    # -- quotas ------------------------------------------------------------------------

    def check_quota(self, ns: str, keys: int, nbytes: int) -> None:
        """507 when a write would add keys past ``max_keys`` or bytes past ``max_bytes``
        (a write that frees room always passes). Called before the write changes anything."""
        st = self.view(ns)
        if keys > 0 and len(st.keys) + keys > self.bounds.max_keys:
            raise quota_exceeded(ns, "keys", self.bounds.max_keys)
        if nbytes > 0 and st.used_bytes + nbytes > self.bounds.max_bytes:
            raise quota_exceeded(ns, "bytes", self.bounds.max_bytes)

    def charge(self, ns: str, keys: int, nbytes: int) -> None:
        """``check_quota``, then count the write's bytes (negative: given back)."""
        self.check_quota(ns, keys, nbytes)
        if nbytes:
            self.ns(ns).used_bytes += nbytes

    # -- the change log's append -----------------------------------------------------

    def append(self, st: Namespace, event: ChangeEvent) -> None:
        data = compact(event.data)
        st.events.append(
            (event.revision, event.type, event.key, event.session, data, event.size)
        )
        st.event_bytes += event.size
        # Compact by count and by bytes; the newest event always stays (a resume point).
        # Each event is dropped once: amortized O(1) per append.
        limit = self.bounds.event_retention_bytes
        while len(st.events) > st.retention or (st.event_bytes > limit and len(st.events) > 1):
            old = st.events.popleft()
            st.event_bytes -= old[EVENT_SIZE]
            st.compacted = old[EVENT_REVISION]
        if st.changed is not None:
            st.changed.set()
            st.changed = None

    def emit(self, ns: str, type_: str, key: str, at_ms: int, **fields: Any) -> int:
        """Take the namespace's next revision and append one event for it."""
        st = self.ns(ns)
        st.revision += 1
        self.append(st, build_event(ns, st.revision, type_, key, at_ms, **fields))
        return st.revision

    # -- deadlines ---------------------------------------------------------------------

    def on_deadline(self, kind: str, expirer: Expirer) -> None:
        """Let ``expirer`` handle the deadlines scheduled with members "<kind>:<name>"."""
        self.expirers[kind] = expirer

    def schedule_deadline(self, deadline_ms: int, ns: str, member: str) -> None:
        heapq.heappush(self.deadlines, (deadline_ms, ns, member))

    def expire_due(self, now: int) -> int:
        """Run the handler of every deadline due by ``now``; the count that expired."""
        count = 0
        while self.deadlines and self.deadlines[0][0] <= now:
            deadline, ns, member = heapq.heappop(self.deadlines)
            self.sweep_visits += 1
            kind, _, name = member.partition(":")
            expirer = self.expirers.get(kind)
            if expirer is not None and expirer(ns, name, deadline, now):
                count += 1
        return count

    # -- fencing and leases, which every writing part checks -------------------------

    def fence_holds(self, ns: str, fence: Fence | None, now: int) -> None:
        """Raise StaleFence unless ``fence`` names the current holder of its lock."""
        if fence is None:
            return
        lock = self.view(ns).locks.get((fence.scope, fence.name))
        if (
            lock is None
            or lock.token != fence.token
            or (lock.expires_at is not None and lock.expires_at <= now)
        ):
            raise fence.stale()

    def lock_token_holds(self, ns: str, scope: str, name: str, token: int, now: int) -> bool:
        holder = self.view(ns).locks.get((scope, name))
        return (
            holder is not None
            and holder.token == token
            and (holder.expires_at is None or holder.expires_at > now)
        )

    def lease(self, ns: str, lease_id: str, now: int) -> LeaseState | None:
        """The live lease, or None."""
        lease = self.view(ns).leases.get(lease_id)
        if lease is None or lease.expires_at <= now:
            return None
        return lease

    def lease_live(self, ns: str, lease_id: str | None, now: int) -> None:
        """Raise LeaseNotFound unless ``lease_id`` (when given) is live."""
        if lease_id is not None and self.lease(ns, lease_id, now) is None:
            raise lease_not_found(lease_id)

    def lease_attach_lock(self, ns: str, lease_id: str, scope: str, name: str,
                          token: int) -> None:
        self.ns(ns).leases[lease_id].attach_lock(scope, name, token)
