"""Sessions on NATS (API.md section 5): the session store's calls, each a step on the
session's one record (sessionrecords.py: the compare-and-swap loop; sessionstate.py:
the record) deciding as the memory engine does, with the same events (``event_fields``
of app/domain/events.py).

A write that only counts as activity (a duplicate dedupe key, a subscription or state
update that changes nothing) stores the record with a new ``updated_at`` and idle
deadline as a message that is no event (the revision grows by one, with no event).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from app.backends.nats.lockwait import CountFirst, held_locks
from app.backends.nats.names import SESSION_PREFIX, session_subject
from app.backends.nats.quotas import NatsQuotas
from app.backends.nats.sessionrecords import SessionRecords, SessionStep
from app.backends.nats.sessionstate import (
    SessionData,
    SessionRecord,
    decode,
    decode_any,
    deleted_event,
    remove,
    touch,
    updated_event,
    view,
)
from app.backends.nats.store import NatsStore
from app.backends.paging import page_sorted
from app.backends.parts.sessions import SessionStore
from app.domain.bounds import import_passes_lock_quota, quota_exceeded
from app.domain.conditions import NO_CONDITION, Condition
from app.domain.conditions import variable as variable_subject
from app.domain.events import Fields, event_fields
from app.domain.fence import Fence
from app.domain.sessions import (
    ImportResult,
    LockSnapshot,
    SessionInfo,
    SessionSnapshot,
    StateKind,
    StateUpdate,
    Variable,
    WriteOutcome,
    plan_writes,
    seconds,
    variable_event_fields,
    write_event,
)
from app.errors import Conflict, NotFound
from app.syntax import Pattern, now_ms
from app.variables import new_variable_id

__all__ = ["NatsSessions"]


class NatsSessions(SessionRecords, SessionStore):
    """The session store on a ``NatsStore``; the lock engine runs its session-scoped
    calls through ``run_lock`` (the lock lives in its session's record)."""

    def __init__(self, store: NatsStore, quotas: NatsQuotas, *, max_locks: int = 100_000) -> None:
        super().__init__(store, quotas)
        #: The namespace's lock quota (CORKBOARD_NAMESPACE_MAX_LOCKS), for imports.
        self.max_locks = max_locks

    # -- sessions ----------------------------------------------------------------------

    async def session_put(
        self, ns: str, sid: str, metadata: bytes, ttl_ms: int, *, fence: Fence | None = None
    ) -> tuple[SessionInfo, bool]:
        def step(record: SessionRecord, now: int) -> tuple[Fields, tuple[SessionInfo, bool]]:
            old = record.session
            old_metadata = old.metadata if old is not None else None
            s = touch(record, now)
            s.metadata, s.ttl_ms = metadata, ttl_ms
            s.expires_at = now + ttl_ms if ttl_ms else 0
            event = updated_event(sid, now, "metadata", value=metadata,
                                  old_value=old_metadata, created=old is None,
                                  ttl=seconds(ttl_ms) if ttl_ms else None)
            return event, (s.info(sid), old is None)

        result, _ = await self._run(ns, sid, step, fence)
        return result

    async def session_get(self, ns: str, sid: str) -> SessionInfo | None:
        s = await self._live(ns, sid)
        return s.info(sid) if s is not None else None

    async def session_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[SessionInfo], str | None]:
        msgs, _ = await self.store.multi_last(ns, f"$KV.{ns}.{SESSION_PREFIX}>")
        now = now_ms()
        live: dict[str, SessionInfo] = {}
        for msg in msgs:
            record = decode_any(ns, msg)
            s = record.live(now) if record is not None else None
            if record is not None and s is not None:
                live[record.sid] = s.info(record.sid)
        return page_sorted(sorted(live), pattern, after, limit, live.get)

    async def session_delete(self, ns: str, sid: str, *, fence: Fence | None = None) -> bool:
        def step(record: SessionRecord, now: int) -> tuple[Fields | None, bool]:
            if record.session is None:
                return None, False
            remove(record, now)
            return deleted_event(sid, now, False), True

        result, _ = await self._run(ns, sid, step, fence)
        return result

    # -- variables ---------------------------------------------------------------------

    async def var_register(
        self, ns: str, sid: str, var: Variable, *, fence: Fence | None = None
    ) -> Variable:
        def step(record: SessionRecord, now: int) -> tuple[Fields, Variable]:
            if record.session is not None:
                taken = record.session.resolve(var.name)
                if taken is not None:
                    raise Conflict(f"Variable {var.name!r} already exists in session {sid!r}.",
                                   code="already_exists", current=taken)
            s = touch(record, now)
            var_id = var.id
            while var_id in s.variables:
                var_id = new_variable_id()
            new = replace(var, id=var_id, version=1, created_at=now, updated_at=now)
            s.variables[var_id] = new
            event = event_fields("variable.created", new.name, now, session=sid,
                                 value=new.value, old_value=None,
                                 extra={"id": new.id, "variable_type": new.type, "version": 1})
            return event, new

        result, _ = await self._run(ns, sid, step, fence)
        return result

    async def var_get(self, ns: str, sid: str, ident: str) -> Variable | None:
        s = await self._live(ns, sid)
        return s.resolve(ident) if s is not None else None

    async def var_list(self, ns: str, sid: str) -> list[Variable]:
        s = await self._live(ns, sid)
        return sorted(s.variables.values(), key=lambda v: v.name) if s is not None else []

    async def var_read(self, ns: str, sid: str, idents: Sequence[str]) -> dict[str, Variable]:
        s = await self._live(ns, sid)
        if s is None:
            return {}
        found = {ident: s.resolve(ident) for ident in idents}
        return {k: v for k, v in found.items() if v is not None}

    async def var_write(
        self,
        ns: str,
        sid: str,
        updates: Sequence[tuple[str, Any]],
        *,
        metadata: dict[str, Any] | None = None,
        atomic: bool = True,
        batch: bool = False,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> WriteOutcome:
        def step(record: SessionRecord, now: int) -> tuple[Fields | None, WriteOutcome]:
            s = record.session
            found = {ident: s.resolve(ident) if s is not None else None
                     for ident, _ in updates}
            plan = plan_writes(found, updates, metadata, condition, now)
            if (atomic and plan.errors) or not plan.writes or s is None:
                return None, WriteOutcome([], plan.errors, None)
            touch(record, now)
            for w in plan.writes:
                s.variables[w.new.id] = w.new
            first, extra = write_event(plan.writes, batch=batch)
            event = event_fields("variable.updated", first.new.name, now, session=sid,
                                 value=first.new.value, old_value=first.old.value, extra=extra)
            return event, WriteOutcome([w.new for w in plan.writes], plan.errors, None)

        outcome, revision = await self._run(ns, sid, step, fence)
        return replace(outcome, revision=revision)

    async def var_delete(
        self,
        ns: str,
        sid: str,
        ident: str,
        *,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> Variable:
        def step(record: SessionRecord, now: int) -> tuple[Fields, Variable]:
            s = record.session
            var = s.resolve(ident) if s is not None else None
            condition.check(var, variable_subject(ident))
            if s is None or var is None:
                raise NotFound(f"No variable {ident!r} in session {sid!r}.")
            touch(record, now)
            del s.variables[var.id]
            event = event_fields("variable.deleted", var.name, now, session=sid, value=None,
                                 old_value=var.value, extra=variable_event_fields(var))
            return event, var

        result, _ = await self._run(ns, sid, step, fence)
        return result

    # -- chat state --------------------------------------------------------------------

    async def subscription_set(
        self, ns: str, sid: str, thread: str, subscribed: bool, *, fence: Fence | None = None
    ) -> bool:
        def step(record: SessionRecord, now: int) -> tuple[Fields | None, bool]:
            s = record.session
            if (s is not None and thread in s.subscriptions) == subscribed:
                if s is None:
                    return None, False
                touch(record, now)
                return [], False
            s = touch(record, now)
            if subscribed:
                s.subscriptions = sorted({*s.subscriptions, thread})
            else:
                s.subscriptions = [t for t in s.subscriptions if t != thread]
            change = "subscribe" if subscribed else "unsubscribe"
            return updated_event(sid, now, change, thread=thread), True

        result, _ = await self._run(ns, sid, step, fence)
        return result

    async def subscription_list(self, ns: str, sid: str) -> list[str]:
        s = await self._live(ns, sid)
        return list(s.subscriptions) if s is not None else []

    async def subscription_get(self, ns: str, sid: str, thread: str) -> bool:
        s = await self._live(ns, sid)
        return s is not None and thread in s.subscriptions

    async def dedupe_check(
        self, ns: str, sid: str, key: str, limit: int, *, fence: Fence | None = None
    ) -> bool:
        def step(record: SessionRecord, now: int) -> tuple[Fields, bool]:
            s = touch(record, now)
            if key in s.dedupe:
                return [], True
            s.dedupe.append(key)
            evicted = s.dedupe[:max(0, len(s.dedupe) - limit)]
            del s.dedupe[:len(evicted)]
            return updated_event(sid, now, "dedupe", dedupe_key=key, evicted=evicted), False

        result, _ = await self._run(ns, sid, step, fence)
        return result

    async def state_get(self, ns: str, sid: str, kind: StateKind, ident: str) -> bytes | None:
        s = await self._live(ns, sid)
        return s.states(kind).get(ident) if s is not None else None

    async def state_update(
        self,
        ns: str,
        sid: str,
        kind: StateKind,
        ident: str,
        update: StateUpdate,
        *,
        fence: Fence | None = None,
    ) -> tuple[bytes | None, bool]:
        def step(
            record: SessionRecord, now: int
        ) -> tuple[Fields | None, tuple[bytes | None, bool]]:
            s = record.session
            old = s.states(kind).get(ident) if s is not None else None
            new = update(old)
            if new is None and old is None:
                if s is None:
                    return None, (None, False)
                touch(record, now)
                return [], (None, False)
            s = touch(record, now)
            if new is None:
                del s.states(kind)[ident]
            else:
                s.states(kind)[ident] = new
            event = updated_event(sid, now, kind + "_state", value=new, old_value=old,
                                  **{kind: ident})
            return event, (new, old is None)

        result, _ = await self._run(ns, sid, step, fence)
        return result

    # -- snapshots ---------------------------------------------------------------------

    async def session_snapshot(self, ns: str, sid: str) -> SessionSnapshot | None:
        revision = await self.store.last_seq(ns)
        found, _ = await self.store.multi_last(ns, session_subject(ns, sid), up_to=revision)
        now = now_ms()
        record = view(decode(found[0] if found else None, sid), now)
        s = record.session
        if s is None:
            return None
        snap = SessionSnapshot(
            sid, revision, s.metadata, s.ttl_ms, s.created_at, s.updated_at,
            s.expires_at or None, list(s.variables.values()), list(s.subscriptions),
            list(s.dedupe), dict(s.threads), dict(s.channels),
        )
        for name, lk in sorted(record.locks.items()):
            if lk.owner is not None and lk.live(now):
                snap.locks[name] = LockSnapshot(lk.owner, lk.token, lk.acquired_at,
                                                lk.expires_at or None, lk.ttl_ms)
            if lk.pending:
                snap.pending_locks[name] = list(lk.taken())
        return snap

    async def session_import(
        self, ns: str, sid: str, snapshot: SessionSnapshot, *, fence: Fence | None = None
    ) -> ImportResult:
        # The lock quota: the namespace's held locks are counted (every lock and session
        # record, lockwait.py) only when the import would hold more than the session
        # does, and before the compare-and-swap, so not atomically.
        try:
            (created, tokens), revision = await self._run(
                ns, sid, self._import_step(ns, snapshot, None), fence)
        except CountFirst:
            held = await held_locks(self.store, ns)
            (created, tokens), revision = await self._run(
                ns, sid, self._import_step(ns, snapshot, held), fence)
        assert revision is not None
        return ImportResult(revision, created, tokens)

    def _import_step(
        self, ns: str, snapshot: SessionSnapshot, held: int | None
    ) -> SessionStep[tuple[bool, dict[str, int]]]:
        def step(record: SessionRecord, now: int) -> tuple[Fields, tuple[bool, dict[str, int]]]:
            created = record.session is None
            mine = sum(1 for lk in record.locks.values() if lk.owner is not None)
            imported = sum(1 for lock in snapshot.locks.values()
                           if lock.expires_at is None or lock.expires_at > now)
            if imported > mine:
                if held is None:
                    raise CountFirst
                if import_passes_lock_quota(held, mine, imported, self.max_locks):
                    raise quota_exceeded(ns, "locks", self.max_locks)
            prior = {name: lk for name, lk in record.locks.items()
                     if name in snapshot.locks and lk.live(now)}
            remove(record, now, keep_waited=False)
            record.session = SessionData(
                snapshot.metadata, snapshot.created_at or now, now, snapshot.ttl_ms,
                now + snapshot.ttl_ms if snapshot.ttl_ms else 0,
                {v.id: v for v in snapshot.variables}, sorted(set(snapshot.subscriptions)),
                list(snapshot.dedupe_order), dict(snapshot.thread_state),
                dict(snapshot.channel_state),
            )
            tokens: dict[str, int] = {}
            for name, lock in snapshot.locks.items():
                lk = record.lock(name)
                before = prior.get(name)
                token = lock.token
                same_holder = (before is not None and before.owner == lock.owner
                               and before.token == lock.token)
                if token <= lk.last_token and not same_holder:
                    token = lk.last_token + 1
                lk = replace(lk, last_token=max(lk.last_token, token))
                if lock.expires_at is None or lock.expires_at > now:
                    # A holder that goes on (same owner and token) stays on its lease, as
                    # memory and Redis keep it (their leases know a lock by its token).
                    lk = replace(lk, owner=lock.owner, token=token,
                                 acquired_at=lock.acquired_at or now,
                                 expires_at=lock.expires_at or 0, ttl_ms=lock.ttl_ms, ticket="",
                                 lease=before.lease if same_holder and before else "")
                    tokens[name] = token
                record.locks[name] = lk
            for name, entries in snapshot.pending_locks.items():
                record.locks[name] = replace(record.lock(name),
                                             pending=[e.decode() for e in entries])
            event = event_fields("session.imported", record.sid, now, session=record.sid,
                                 extra={"created": created}, with_values=False)
            return event, (created, tokens)

        return step
