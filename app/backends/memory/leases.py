"""Leases for the in-memory backend (API.md section 11): grant, keepalive, read, list,
and the end of a lease (revoke, or expiry by the sweeper at its deadline), which deletes
its keys and releases its locks at one revision with one event.

Keys know their lease (``Namespace.key_leases``) and a lease its keys, kept in step by
every write. Locks are recorded on the lease as (scope, name, token): a lock is released
with the lease only while that token still holds it.
"""

from __future__ import annotations

from typing import Any

from app.backends.memory.keys import MemoryKeys
from app.backends.memory.locks import MemoryLocks
from app.backends.memory.rows import value_of
from app.backends.memory.store import LeaseState, MemoryStore
from app.backends.paging import page_sorted
from app.backends.parts.txn import LeaseStore
from app.domain.bounds import quota_exceeded
from app.domain.leases import LeaseDetail, LeaseInfo, LeaseLock, lease_not_found, ttl_seconds
from app.errors import Conflict
from app.syntax import Pattern, iso_ms, now_ms


def lock_change(scope: str, name: str, owner: str, token: int, pending: int) -> dict[str, Any]:
    """A released lock as an entry of a lease event's ``changes``."""
    out: dict[str, Any] = {"type": "lock.released", "key": name}
    if scope:
        out["session"] = scope
    out.update({"owner": owner, "token": token, "pending_count": pending})
    return out


class MemoryLeases(LeaseStore):
    """The lease engine on a ``MemoryStore``; ending a lease deletes keys (``keys``) and
    releases locks (``locks``)."""

    def __init__(self, store: MemoryStore, keys: MemoryKeys, locks: MemoryLocks) -> None:
        self.store = store
        self.keys = keys
        self.locks = locks
        store.on_deadline("e", self._expire_e)

    # -- internals -------------------------------------------------------------------

    def _held_locks(self, ns: str, lease: LeaseState) -> list[LeaseLock]:
        st = self.store.ns(ns)
        found = []
        for scope, name, token in lease.sorted_locks():
            holder = st.locks.get((scope, name))
            if holder is not None and holder.token == token:
                found.append(LeaseLock(name, scope, holder.owner, token))
        return found

    def _end_lease(self, ns: str, lease: LeaseState, type_: str, now: int) -> LeaseDetail:
        """Delete the keys, release the locks, one event; then hand the locks on."""
        st = self.store.ns(ns)
        key_type = "kv.expire" if type_ == "lease.expired" else "kv.delete"
        keys = lease.sorted_keys()
        locks = self._held_locks(ns, lease)
        changes: list[dict[str, Any]] = []
        for key in keys:
            old = value_of(st.keys[key])
            self.keys.remove(st, key)
            changes.append({"type": key_type, "key": key, "value": None,
                            "old_value": old})
        for lock in locks:
            del st.locks[(lock.scope, lock.name)]
            slot = self.locks.slot(ns, lock.scope, lock.name)
            slot.ticket = ""
            changes.append(lock_change(lock.scope, lock.name, lock.owner, lock.token,
                                       len(slot.pending)))
        del st.leases[lease.id]
        st.lease_order.remove(lease.id)
        revision = self.store.emit(ns, type_, lease.id, now, with_values=False,
                             extra={"changes": changes})
        for lock in locks:
            self.locks.handoff(ns, lock.scope, lock.name, now)
            self.locks.tidy(ns, lock.scope, lock.name)
        return LeaseDetail(lease.info(), keys, locks, revision)

    def _expire_e(self, ns: str, lease_id: str, deadline: int, now: int) -> bool:
        lease = self.store.ns(ns).leases.get(lease_id)
        if lease is None or lease.expires_at != deadline:
            return False  # revoked or kept alive since this deadline was set
        self._end_lease(ns, lease, "lease.expired", now)
        return True

    def _expire_lease_if_due(self, ns: str, lease_id: str, now: int) -> None:
        lease = self.store.view(ns).leases.get(lease_id)
        if lease is not None and lease.expires_at <= now:
            self._end_lease(ns, lease, "lease.expired", now)

    # -- the engine ------------------------------------------------------------------

    async def lease_grant(self, ns: str, lease_id: str, ttl_ms: int) -> LeaseInfo:
        now = now_ms()
        self._expire_lease_if_due(ns, lease_id, now)
        st = self.store.ns(ns)
        if lease_id in st.leases:
            raise Conflict(f"Lease {lease_id!r} exists and is live.", code="already_exists")
        if len(st.leases) >= self.store.bounds.max_leases:
            raise quota_exceeded(ns, "leases", self.store.bounds.max_leases)
        lease = st.leases[lease_id] = LeaseState(lease_id, ttl_ms, now, now + ttl_ms)
        st.lease_order.add(lease_id)
        self.store.emit(ns, "lease.granted", lease_id, now, with_values=False,
                  extra={"ttl": ttl_seconds(ttl_ms), "expires_at": iso_ms(lease.expires_at)})
        self.store.schedule_deadline(lease.expires_at, ns, "e:" + lease_id)
        return lease.info()

    async def lease_keepalive(self, ns: str, lease_id: str) -> LeaseInfo:
        now = now_ms()
        lease = self.store.lease(ns, lease_id, now)
        if lease is None:
            raise lease_not_found(lease_id)
        lease.expires_at = now + lease.ttl_ms
        self.store.schedule_deadline(lease.expires_at, ns, "e:" + lease_id)
        return lease.info()

    async def lease_get(self, ns: str, lease_id: str) -> LeaseDetail | None:
        lease = self.store.lease(ns, lease_id, now_ms())
        if lease is None:
            return None
        return LeaseDetail(lease.info(), lease.sorted_keys(), self._held_locks(ns, lease))

    async def lease_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[LeaseInfo], str | None]:
        now = now_ms()
        st = self.store.view(ns)

        def live(lease_id: str) -> LeaseInfo | None:
            lease = st.leases[lease_id]
            return lease.info() if lease.expires_at > now else None

        # The sorted id index pages like every listing: bounded by limit and scan budget.
        return page_sorted(st.lease_order, pattern, after, limit, live)

    async def lease_revoke(self, ns: str, lease_id: str) -> LeaseDetail:
        now = now_ms()
        self._expire_lease_if_due(ns, lease_id, now)
        lease = self.store.lease(ns, lease_id, now)
        if lease is None:
            raise lease_not_found(lease_id)
        return self._end_lease(ns, lease, "lease.revoked", now)
