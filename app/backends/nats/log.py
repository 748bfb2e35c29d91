"""The NATS change log: the namespace's bucket stream is the log. Each message of a
Corkboard key is one event, encoded by ``build_event`` at the message's sequence:
``kv.put`` for a value, ``kv.delete`` / ``kv.expire`` for a delete marker (Corkboard's
``Cb-Meta`` says which; any other client's delete or purge is a ``kv.delete``). The
``old_value`` is the subject's previous message (named by ``Cb-Meta``, else found with a
direct get of the subject's last message up to the previous sequence).

Compaction: the events at or below ``current - CORKBOARD_EVENT_RETENTION`` are compacted,
and those at or below the byte cut of ``CORKBOARD_EVENT_RETENTION_BYTES`` (retention.py)
(their messages are purged by trim.py as far as keys no longer need them). A read that
meets a gap above that (messages another client purged) reports the sequence before it
as compacted too: a resume point behind it gets ``reset``.

A lock's record (``_cbl.<name>``) and a session's (``_cbs.<id>``) are not keys: each of
their messages is the event it carries (a ``lock.*`` event; a ``session.*``,
``variable.*`` or session ``lock.*`` one), or no event; so is an artifact's record
(``_cba.<key>``: an ``artifact.*`` event, artifacts.py); a lease's grant is its
``lease.granted`` event (leasestate.py). An atomic batch that is one event (a
transaction, a pattern delete, a lease's end) is reported at its commit message
(``_cbt``, compound.py), built from the batch's key messages, which are no events of
their own.

Expiry: the sweeper's index (``_corkboard`` bucket, ``deadline.<ns>``) holds each
namespace's earliest deadline; a pass lists the due namespaces' keys and replaces each
expired one by a ``kv.expire`` marker (a compare-and-swap on its sequence), each due
lock holder by a ``lock.expired`` message and each due artifact by an
``artifact.delete`` marker, does what is due in each session record
(idle expiry, its locks' expiries and hand-overs), the same way, and ends each due lease
(``lease_sweep``: leases.py, one atomic batch).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from app.backends.nats.artifacts import NatsArtifacts, artifact_event
from app.backends.nats.compound import compound_event, is_commit
from app.backends.nats.entries import (
    json_value,
    lower_deadline,
    parse_override,
    txn_offset,
)
from app.backends.nats.keys import NatsKeys
from app.backends.nats.leasestate import lease_event
from app.backends.nats.locks import NatsLocks
from app.backends.nats.lockstate import lock_event
from app.backends.nats.names import SYSTEM_BUCKET, key_of_subject, subject_of
from app.backends.nats.retention import Ledger
from app.backends.nats.sessions import NatsSessions
from app.backends.nats.sessionstate import session_event
from app.backends.nats.store import Msg, NatsStore
from app.backends.parts.log import ChangeLog
from app.domain.events import ChangeEvent, EventBatch, build_event
from app.errors import BackendUnavailable
from app.syntax import now_ms

logger = logging.getLogger("corkboard.sweeper")

#: Messages the change log remembers (their old values), across namespaces.
RECENT_MESSAGES = 20_000


class NatsLog(ChangeLog):
    """The change log on a ``NatsStore``; expiry through the key store."""

    def __init__(
        self, store: NatsStore, keys: NatsKeys, locks: NatsLocks,
        sessions: NatsSessions | None = None, artifacts: NatsArtifacts | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.store = store
        self.ledger = ledger  # the byte cut (retention.py)
        self.keys = keys
        self.locks = locks
        self.sessions = sessions
        self.artifacts = artifacts
        #: Messages read lately, by (namespace, sequence): an event's previous message
        #: (its old value) was usually read just before; messages never change.
        self.recent: OrderedDict[tuple[str, int], Msg] = OrderedDict()
        #: Ends the due leases among a namespace's newest messages (leases.py).
        self.lease_sweep: Callable[[str, list[Msg], int], Awaitable[tuple[int, int]]] | None
        self.lease_sweep = None

    def remember(self, ns: str, msg: Msg) -> None:
        self.recent[(ns, msg.seq)] = msg
        if len(self.recent) > RECENT_MESSAGES:
            self.recent.popitem(last=False)

    async def current_revision(self, ns: str) -> int:
        return await self.store.last_seq(ns)

    async def read_events(
        self, ns: str, after: int, *, limit: int = 1000, timeout: float = 0.0
    ) -> EventBatch:
        batch = await self._read(ns, after, limit)
        if batch.events or timeout <= 0:
            return batch
        found: list[EventBatch] = []

        async def changed() -> bool:
            found.append(await self._read(ns, after, limit))
            return bool(found[-1].events)

        # A message wakes the wait before the stream stores it (the first of an atomic
        # batch, before its commit; even one the stream refuses): wait again, up to the
        # timeout, until a read finds an event.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            await self.store.wait_for_change(ns, left, changed)
            if found and found[-1].events:
                return found[-1]
            found.clear()
        return await self._read(ns, after, limit)

    async def _read(self, ns: str, after: int, limit: int) -> EventBatch:
        if self.ledger is not None:
            current, cut = await asyncio.gather(self.store.last_seq(ns), self.ledger.cut(ns))
        else:
            current, cut = await self.store.last_seq(ns), 0
        compacted = max(0, current - self.store.retention, cut)
        if current <= after or after < compacted:
            return EventBatch([], current, compacted)
        events: list[ChangeEvent] = []
        expected = after + 1
        seen: dict[str, Msg] = {}
        while len(events) < limit and expected <= current:
            request = {"seq": expected, "batch": limit}
            msgs, _ = await self.store.batch(ns, request)
            if not msgs:  # a follower behind the leader, or messages purged
                msgs = await self.store.settled(ns, request)
            if not msgs:
                compacted = max(compacted, current)
                break
            gap = False
            for msg in msgs:
                if msg.seq != expected:
                    if events:  # deliver up to the gap; the next read reports it
                        gap = True
                        break
                    compacted = msg.seq - 1
                event = await self._event(ns, msg, seen)
                if event is None and is_commit(ns, msg):
                    # A batch whose key messages are gone (compacted): never half of it.
                    if events:
                        gap = True
                        break
                    compacted = msg.seq
                seen[msg.subject] = msg
                self.remember(ns, msg)
                expected = msg.seq + 1
                if event is not None:
                    events.append(event)
                    if len(events) == limit:
                        break
            if gap:
                break
        return EventBatch(events, current, compacted)

    async def _event(self, ns: str, msg: Msg, seen: dict[str, Msg]) -> ChangeEvent | None:
        key = key_of_subject(ns, msg.subject)
        if key is None:
            if is_commit(ns, msg):
                return await compound_event(
                    ns, msg, lambda seq: self._part(ns, seq, msg.seq, seen)
                )
            # None for other records (checks, keepalives), foreign keys and messages
            # that are no event
            return (lock_event(ns, msg) or session_event(ns, msg) or lease_event(ns, msg)
                    or artifact_event(ns, msg))
        if txn_offset(msg):
            return None  # a part of a batch: its commit message is the event
        type_, value, old, at = await self._change(ns, msg, seen)
        return build_event(ns, msg.seq, type_, key, at, value=value, old_value=old)

    async def _part(
        self, ns: str, seq: int, commit: int, seen: dict[str, Msg]
    ) -> dict[str, Any] | None:
        """The change a batch's key message at ``seq`` is, for its commit's event (at
        ``commit``). The parts are asked in order: a part not read yet brings the rest
        of the batch with it, in one batched direct get."""
        msg = self.recent.get((ns, seq))
        if msg is None:
            found, _ = await self.store.batch(ns, {"seq": seq, "batch": commit - seq})
            for got in found:
                if got.seq < commit:
                    self.remember(ns, got)
            msg = self.recent.get((ns, seq))
        key = key_of_subject(ns, msg.subject) if msg is not None else None
        if msg is None or key is None:
            return None
        type_, value, old, _ = await self._change(ns, msg, seen, own=False)
        return {"type": type_, "key": key, "value": value, "old_value": old}

    async def _change(
        self, ns: str, msg: Msg, seen: dict[str, Msg], *, own: bool = True
    ) -> tuple[str, bytes | None, bytes | None, int]:
        """A key message's change: (type, value, old value, time). ``seen`` holds the
        newest message of each subject read so far: with ``own`` false, ``msg`` was
        already recorded there (it precedes its commit)."""
        meta = msg.meta
        previous = seen.get(msg.subject) if own else None
        if meta is not None and meta.previous == 0:
            previous = None
        elif meta is not None and (previous is None or previous.seq != meta.previous):
            previous = self.recent.get((ns, meta.previous))
            if previous is None:
                previous = await self.store.at(ns, meta.previous)
        elif meta is None and previous is None and msg.seq > 1:
            found, _ = await self.store.multi_last(ns, msg.subject, up_to=msg.seq - 1)
            previous = found[0] if found else None
        old = json_value(previous) if previous is not None and not previous.deleted else None
        at = meta.modified_at if meta is not None else msg.time_ms
        if msg.deleted:
            type_ = "kv.expire" if meta is not None and meta.op == "expire" else "kv.delete"
            return type_, None, old, at
        return "kv.put", json_value(msg), old, at

    async def expire_due(self) -> int:
        """Expire the keys of every namespace the index says is due; the count."""
        now = now_ms()
        index, _ = await self.store.multi_last(SYSTEM_BUCKET, f"$KV.{SYSTEM_BUCKET}.deadline.>")
        total, due, failed = 0, 0, 0
        for row in index:
            if row.deleted or not row.data.isdigit() or int(row.data) > now:
                continue
            ns = row.subject.rsplit(".", 1)[1]
            due += 1
            # A namespace that refuses (its bucket sealed or without a leader, a limit)
            # stays due; the pass goes on with the others, as on Redis.
            try:
                count, next_deadline = await self._sweep(ns, now)
                total += count
                await self._settle(row, next_deadline)
            except BackendUnavailable as exc:
                failed += 1
                logger.debug("expiry in namespace %r deferred: %s", ns, exc.detail)
        if failed and not total and failed == due:
            raise BackendUnavailable(f"expiry deferred in all {failed} due namespaces")
        return total

    async def _sweep(self, ns: str, now: int) -> tuple[int, int]:
        """Expire the namespace's due keys and lock holders; (how many, its next
        deadline or 0)."""
        msgs, _ = await self.store.multi_last(ns, f"$KV.{ns}.>")
        overrides, _ = await self.store.multi_last(
            SYSTEM_BUCKET, f"$KV.{SYSTEM_BUCKET}.ttl.{ns}.>"
        )
        by_token = {m.subject.split(".", 4)[4]: parse_override(m) for m in overrides}
        by_subject = {m.subject: m for m in msgs}
        due = await self.keys.live_entries(ns, msgs, by_token, now, expired=True)
        count = 0
        for entry in due.values():
            msg = by_subject[subject_of(ns, entry.key)]
            if await self.keys.expire(ns, entry.key, msg, entry, now) is not None:
                count += 1
        live = await self.keys.live_entries(ns, msgs, by_token, now)
        deadlines = [e.expires_at for e in live.values() if e.expires_at is not None]
        locks_expired, lock_deadline = await self.locks.sweep(ns, msgs, now)
        if lock_deadline:
            deadlines.append(lock_deadline)
        if self.sessions is not None:
            settled, session_deadline = await self.sessions.sweep(ns, msgs, now)
            locks_expired += settled
            if session_deadline:
                deadlines.append(session_deadline)
        if self.lease_sweep is not None:
            leases_ended, lease_deadline = await self.lease_sweep(ns, msgs, now)
            locks_expired += leases_ended
            if lease_deadline:
                deadlines.append(lease_deadline)
        if self.artifacts is not None:
            expired, artifact_deadline = await self.artifacts.sweep(ns, msgs, now)
            locks_expired += expired
            if artifact_deadline:
                deadlines.append(artifact_deadline)
        return count + locks_expired, min(deadlines, default=0)

    async def _settle(self, row: Msg, next_deadline: int) -> None:
        """Set the namespace's index row to its next deadline (or remove it), unless a
        writer lowered it meanwhile."""
        data = str(next_deadline).encode() if next_deadline else b""
        headers = {} if next_deadline else {"KV-Operation": "DEL"}
        if await self.store.publish(SYSTEM_BUCKET, row.subject, data, headers, row.seq):
            return
        current = await self.store.last(SYSTEM_BUCKET, row.subject)
        if next_deadline and (
            current is None or current.deleted or not current.data.isdigit()
            or int(current.data) > next_deadline
        ):
            await lower_deadline(self.store, row.subject.rsplit(".", 1)[1], next_deadline)
