"""Leases on NATS (API.md section 11). A lease is a record in its namespace's bucket
(``_cbe.<id>``, leasestate.py): granted by a compare-and-swap on that subject (the
message is the ``lease.granted`` event), kept alive by another (a message that is no
event: the namespace's revision grows by one without an event). A key on a lease
carries ``Cb-Lease: <id>`` in its newest message (keys.py), a lock the id in its record
(a namespace lock's own, locks.py; a session lock's inside its session's record,
sessionrecords.py); each is written in one atomic batch with the lease's record again
(compare-and-swap), so nothing attaches to a lease that ended meanwhile.

The end of a lease (revoke, or expiry by whoever meets it due first: the sweeper, a
grant of the same id, a revoke) lists the namespace's newest messages (one batched
direct get, consistent at one sequence); a session holding a lock on the lease with
something due (its idle expiry, ...) gets it done first (events of their own, as at
their deadlines), and the listing is read again. Then one atomic batch: the lease
record's delete marker, each held namespace lock's freed record and each holding
session's record with those locks freed (compare-and-swap on what was listed, no
events), each attached key's delete marker (``Cb-Txn`` parts) and the commit message,
the ``lease.revoked`` / ``lease.expired`` event listing them (compound.py) as the
memory engine does. Anything that moved since the listing fails the batch, and it
starts again. Locks freed with a line of waiters are handed on after (as after any
release). Finding what is attached costs a listing of the namespace: O(keys) per read
or end of a lease.

Not atomic: the namespace's lease quota (``CORKBOARD_NAMESPACE_MAX_LEASES``) is counted
before a grant, so grants racing each other may pass it by their number.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.backends.nats.batch import DEFAULT_MAX_BATCH, Out, publish_batch
from app.backends.nats.compound import with_commit
from app.backends.nats.entries import entry_from, lease_of, lower_deadline, meta_after
from app.backends.nats.keys import NatsKeys
from app.backends.nats.leasestate import decode_lease, encode_lease, is_lease_subject
from app.backends.nats.locks import NatsLocks
from app.backends.nats.lockstate import LockRecord, decode, hand_over
from app.backends.nats.names import LEASE_PREFIX, is_lock_subject, key_of_subject, lease_subject
from app.backends.nats.quotas import Tally
from app.backends.nats.sessionstate import SessionRecord, decode_any, due, view
from app.backends.nats.sessionstate import decode as decode_session
from app.backends.nats.store import Msg, NatsStore
from app.backends.paging import page_sorted
from app.backends.parts.txn import LeaseStore
from app.domain.bounds import quota_exceeded
from app.domain.leases import LeaseDetail, LeaseInfo, LeaseLock, lease_not_found
from app.errors import BackendUnavailable, Conflict, TooManyKeys
from app.syntax import Pattern, now_ms

logger = logging.getLogger("corkboard.backend")

#: Compare-and-swap attempts of one lease call racing other writers.
ATTEMPTS = 200


def _nothing(record: LockRecord, now: int) -> tuple[None, None]:
    return None, None


def lock_change(scope: str, lock: LockRecord, pending: int) -> dict[str, Any]:
    """A released lock as an entry of a lease event's ``changes``, member for member as
    the memory engine writes it (``session`` after ``key`` for a session's lock)."""
    out: dict[str, Any] = {"type": "lock.released", "key": lock.name}
    if scope:
        out["session"] = scope
    out.update({"owner": lock.owner, "token": lock.token, "pending_count": pending})
    return out


@dataclass(slots=True)
class Attached:
    """What one listing finds attached to a lease: its keys (sorted), its held locks as
    (scope: "" or the session id, record, the message holding it), sorted by scope then
    name, the records of the sessions holding some (by id; a session past its idle deadline
included, its locks not), and the lease's record."""

    keys: list[tuple[str, Msg]] = field(default_factory=list)
    locks: list[tuple[str, LockRecord, Msg]] = field(default_factory=list)
    sessions: dict[str, tuple[Msg, SessionRecord]] = field(default_factory=dict)
    record: Msg | None = None


class NatsLeases(LeaseStore):
    """The lease engine on a ``NatsStore``; its end deletes keys and frees locks."""

    def __init__(
        self, store: NatsStore, keys: NatsKeys, locks: NatsLocks, *, max_leases: int = 100_000,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.store = store
        self.keys = keys
        self.locks = locks
        self.max_leases = max_leases
        self.max_batch = max_batch  # the most messages of one lease's end

    # -- internals -----------------------------------------------------------------------

    async def _attached(self, ns: str, lease_id: str, msgs: list[Msg] | None = None
                        ) -> Attached:
        """What is attached to the lease, and its record's message, from one listing of
        the namespace's newest messages (``msgs``, one made before, or made now)."""
        if msgs is None:
            msgs, _ = await self.store.multi_last(ns, f"$KV.{ns}.>")
        found = Attached()
        subject = lease_subject(ns, lease_id)
        now = now_ms()
        for msg in msgs:
            if msg.subject == subject:
                found.record = msg
            elif is_lock_subject(ns, msg.subject):
                lock = decode(msg)
                if lock is not None and lock.owner is not None and lock.lease == lease_id:
                    found.locks.append(("", lock, msg))
            elif (session := decode_any(ns, msg)) is not None:
                if any(lk.owner is not None and lk.lease == lease_id
                       for lk in session.locks.values()):
                    found.sessions[session.sid] = (msg, session)
                # As a read sees it: none held in a session past its idle deadline.
                found.locks += [(session.sid, lk, msg) for lk in
                                view(session, now).locks.values()
                                if lk.owner is not None and lk.lease == lease_id
                                and lk.live(now)]
            elif lease_of(msg) == lease_id:
                key = key_of_subject(ns, msg.subject)
                if key is not None:
                    found.keys.append((key, msg))
        found.keys.sort(key=lambda pair: pair[0])
        found.locks.sort(key=lambda held: (held[0], held[1].name))  # as memory: by scope
        return found

    async def _settle_sessions(self, ns: str, found: Attached, now: int) -> bool:
        """Do what is due in the sessions holding locks on the lease (an idle expiry, a
        holder's expiry, a hand-over: events that come before the lease's end, as on the
        other engines); whether there was anything (then list again)."""
        settled = False
        for sid, (msg, _) in found.sessions.items():
            if due(decode_session(msg, sid), now) is not None:
                await self.locks.sessions.settle(ns, sid)
                settled = True
        return settled

    async def _end(self, ns: str, lease_id: str, type_: str, listed: list[Msg] | None = None,
                   ) -> LeaseDetail | None:
        """End the lease if it is still there (``lease.expired``: only once due); what
        it removed, or None when there is no such lease (or it is not due). ``listed``:
        a listing of the namespace made before (the sweeper's), for the first attempt:
        the batch checks every subject it takes from it, the lease's record included
        (which each attachment rewrites), so a stale listing only costs an attempt."""
        for _ in range(ATTEMPTS):
            now = now_ms()
            found = await self._attached(ns, lease_id, listed)
            listed = None
            record_msg = found.record
            lease = decode_lease(record_msg)
            if record_msg is None or lease is None or lease.id != lease_id:
                return None
            if type_ == "lease.expired" and lease.expires_at > now:
                return None
            if await self._settle_sessions(ns, found, now):
                continue
            key_type = "expire" if type_ == "lease.expired" else "delete"
            parts: list[Out] = []
            tally = Tally(self.keys.quotas)  # what the deletes free (quotas.py)
            for key, msg in found.keys:
                entry = await entry_from(self.store, ns, key, msg, None)
                meta = meta_after(entry, msg.seq, now, None, key_type)
                tally.delete(msg.subject, msg)
                parts.append(Out(msg.subject, b"", {"Cb-Meta": meta.header(),
                                                    "KV-Operation": "DEL"}, msg.seq))
            others = [Out(record_msg.subject, b"", {"KV-Operation": "DEL"}, record_msg.seq)]
            changes: list[dict[str, Any]] = []
            released: list[LeaseLock] = []
            freed_sessions: dict[str, SessionRecord] = {}
            for scope, lock, msg in found.locks:
                assert lock.owner is not None
                if scope:  # freed inside its session's record, written once below
                    session = freed_sessions.setdefault(scope, decode_session(msg, scope))
                    session.locks[lock.name] = lock.freed()
                else:
                    # Freed with no event of its own: the lease's event lists it.
                    data = orjson.dumps({"lock": lock.freed().as_dict(), "event": None})
                    others.append(Out(msg.subject, data, {}, msg.seq))
                changes.append(lock_change(scope, lock, len(lock.pending)))
                released.append(LeaseLock(lock.name, scope, lock.owner, lock.token))
            for sid, session in freed_sessions.items():
                msg, _ = found.sessions[sid]
                # No event of its own, and no touch of the session (as on the other engines).
                others.append(Out(msg.subject, session.encode(None), {}, msg.seq))
            batch = with_commit(ns, type_, lease_id, now, parts, changes, guards=others)
            if len(batch) > self.max_batch:
                raise TooManyKeys(
                    f"Lease {lease_id!r} holds {len(found.keys)} keys and "
                    f"{len(found.locks)} locks, {len(batch)} messages to end; this "
                    f"deployment ends at most {self.max_batch} in one NATS JetStream "
                    "atomic batch (?max_batch=, docs/nats.md). Nothing was removed."
                )
            revision = await self.keys.quotas.charged(
                ns, tally.change(), publish_batch(self.store, ns, batch)
            )
            if revision is None:
                await asyncio.sleep(0)
                continue
            await self._hand_on(ns, found, now)
            return LeaseDetail(lease, [k for k, _ in found.keys], released, revision)
        raise BackendUnavailable(
            f"Lease {lease_id!r} changed under {ATTEMPTS} consecutive attempts; retry."
        )

    async def _hand_on(self, ns: str, found: Attached, now: int) -> None:
        """Hand the locks the end freed with a line of waiters to their first waiter (a
        ``lock.acquired`` event of its own, after the lease's, as after any release)."""
        lined = {(scope, lock.name) for scope, lock, _ in found.locks
                 if hand_over(lock.freed(), now) is not None}
        for scope, name in sorted(lined):
            if scope:
                await self.locks.sessions.settle(ns, scope)
            else:
                await self.locks._run(ns, name, _nothing)

    async def _read(self, ns: str, lease_id: str) -> tuple[Msg | None, LeaseInfo | None]:
        msg = await self.store.last(ns, lease_subject(ns, lease_id))
        lease = decode_lease(msg)
        return msg, lease if lease is not None and lease.id == lease_id else None

    async def _live(self, ns: str) -> dict[str, LeaseInfo]:
        """The namespace's live leases, by id."""
        msgs, _ = await self.store.multi_last(ns, f"$KV.{ns}.{LEASE_PREFIX}>")
        now = now_ms()
        found = (decode_lease(m) for m in msgs)
        return {x.id: x for x in found if x is not None and x.expires_at > now}

    async def sweep(self, ns: str, msgs: list[Msg], now: int) -> tuple[int, int]:
        """End the due leases among a namespace's newest messages ``msgs``; (how many,
        the earliest deadline of a live lease, or 0)."""
        count = 0
        deadlines: list[int] = []
        for msg in msgs:
            if not is_lease_subject(ns, msg.subject):
                continue
            lease = decode_lease(msg)
            if lease is None:
                continue
            if lease.expires_at <= now:
                try:
                    ended = await self._end(ns, lease.id, "lease.expired", msgs)
                except TooManyKeys as exc:  # past one batch: the other leases go on
                    logger.warning("lease %r of %r cannot expire: %s", lease.id, ns, exc)
                    continue
                if ended is not None:
                    count += 1
                    continue
                _, lease = await self._read(ns, lease.id)
            if lease is not None:
                deadlines.append(lease.expires_at)
        return count, min(deadlines, default=0)

    # -- the engine ----------------------------------------------------------------------

    async def lease_grant(self, ns: str, lease_id: str, ttl_ms: int) -> LeaseInfo:
        for _ in range(ATTEMPTS):
            now = now_ms()
            msg, lease = await self._read(ns, lease_id)
            if lease is not None and lease.expires_at > now:
                raise Conflict(f"Lease {lease_id!r} exists and is live.", code="already_exists")
            if lease is not None:
                await self._end(ns, lease_id, "lease.expired")
                continue
            if len(await self._live(ns)) >= self.max_leases:
                raise quota_exceeded(ns, "leases", self.max_leases)
            new = LeaseInfo(lease_id, ttl_ms, now, now + ttl_ms)
            seq = await self.store.publish(
                ns, lease_subject(ns, lease_id), encode_lease(new, granted=True), {},
                msg.seq if msg is not None else 0,
            )
            if seq is not None:
                await lower_deadline(self.store, ns, new.expires_at)
                return new
        raise BackendUnavailable(
            f"Lease {lease_id!r} changed under {ATTEMPTS} consecutive attempts; retry."
        )

    async def lease_keepalive(self, ns: str, lease_id: str) -> LeaseInfo:
        for _ in range(ATTEMPTS):
            now = now_ms()
            msg, lease = await self._read(ns, lease_id)
            if msg is None or lease is None or lease.expires_at <= now:
                raise lease_not_found(lease_id)
            new = LeaseInfo(lease.id, lease.ttl_ms, lease.granted_at, now + lease.ttl_ms)
            seq = await self.store.publish(
                ns, msg.subject, encode_lease(new, granted=False), {}, msg.seq
            )
            if seq is not None:
                await lower_deadline(self.store, ns, new.expires_at)
                return new
        raise BackendUnavailable(
            f"Lease {lease_id!r} changed under {ATTEMPTS} consecutive attempts; retry."
        )

    async def lease_get(self, ns: str, lease_id: str) -> LeaseDetail | None:
        found = await self._attached(ns, lease_id)
        lease = decode_lease(found.record)
        if lease is None or lease.id != lease_id or lease.expires_at <= now_ms():
            return None
        return LeaseDetail(
            lease, [k for k, _ in found.keys],
            [LeaseLock(lock.name, scope, lock.owner or "", lock.token)
             for scope, lock, _ in found.locks],
        )

    async def lease_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[LeaseInfo], str | None]:
        live = await self._live(ns)
        return page_sorted(sorted(live), pattern, after, limit, live.get)

    async def lease_revoke(self, ns: str, lease_id: str) -> LeaseDetail:
        _, lease = await self._read(ns, lease_id)
        if lease is None:
            raise lease_not_found(lease_id)
        if lease.expires_at <= now_ms():  # due: it expires, and is not there to revoke
            await self._end(ns, lease_id, "lease.expired")
            raise lease_not_found(lease_id)
        ended = await self._end(ns, lease_id, "lease.revoked")
        if ended is None:
            raise lease_not_found(lease_id)
        return ended

