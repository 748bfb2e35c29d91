"""Sessions for the in-memory backend: variables, idle TTL, snapshots (chat state:
session_chat.py).

Like every memory operation, each call runs without awaiting between its checks and its
change, so validation (``plan_writes``) happens inside the atomic step. Session locks are
the lock engine's (``MemoryLocks``), in scope = the session id; a session's delete,
expiry and import reach into its holders and pending lists, and a session lock call
reaches back (``lock_session_check``/``lock_session_use``) in the same critical section.
"""

from __future__ import annotations

import bisect
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from app.backends.memory.locks import MemoryLocks
from app.backends.memory.session_chat import MemoryChatState
from app.backends.memory.session_state import Session, kept, snapshot_bytes, var_bytes
from app.backends.memory.store import LockState, MemoryStore
from app.backends.paging import page_sorted
from app.backends.parts.sessions import SessionStore
from app.buffers import compact
from app.domain.conditions import NO_CONDITION, Condition
from app.domain.conditions import variable as variable_subject
from app.domain.fence import Fence
from app.domain.sessions import (
    ImportResult,
    LockSnapshot,
    SessionInfo,
    SessionSnapshot,
    Variable,
    WriteOutcome,
    plan_writes,
    seconds,
    session_deleted,
    session_updated,
    variable_event_fields,
    write_event,
)
from app.errors import Conflict, NotFound
from app.syntax import Pattern, now_ms
from app.variables import new_variable_id

if TYPE_CHECKING:
    from collections.abc import Sequence


class MemorySessions(MemoryChatState, SessionStore):
    """The session store on a ``MemoryStore``; session locks are ``locks``' (scope = the
    session id)."""

    def __init__(self, store: MemoryStore, locks: MemoryLocks) -> None:
        self.store = store
        self.locks = locks
        self.table: dict[str, dict[str, Session]] = {}  # ns -> session id -> session
        self.orders: dict[str, list[str]] = {}  # ns -> its session ids, sorted
        store.on_deadline("s", self._expire_s)
        locks.attach_sessions(self)

    # -- internals -------------------------------------------------------------------

    def _sessions(self, ns: str, *, create: bool = False) -> dict[str, Session]:
        """The namespace's sessions; an unstored empty dict unless ``create`` (a read
        creates no state)."""
        sessions = self.table.get(ns)
        if sessions is None:
            sessions = {}
            if create:
                self.table[ns] = sessions
        return sessions

    def _session_charge(self, ns: str, sess: Session, nbytes: int) -> None:
        """Count ``nbytes`` more (or fewer) for the session; 507 before any change."""
        self.store.charge(ns, 0, nbytes)
        sess.used_bytes += nbytes

    def _session_order(self, ns: str, *, create: bool = False) -> list[str]:
        """The namespace's session ids, sorted (for listing without sorting them all); an
        unstored empty list unless ``create`` (a read creates no state)."""
        order = self.orders.get(ns)
        if order is None:
            order = []
            if create:
                self.orders[ns] = order
        return order

    def _session_add(self, ns: str, sid: str, sess: Session) -> Session:
        sessions = self._sessions(ns, create=True)
        if sid not in sessions:
            bisect.insort(self._session_order(ns, create=True), sid)
        sessions[sid] = sess
        return sess

    def _session_live(self, ns: str, sid: str, now: int) -> Session | None:
        """The live session; one past its idle deadline is removed here, with its event."""
        sess = self._sessions(ns).get(sid)
        if sess is not None and sess.expires_at is not None and sess.expires_at <= now:
            waited = self._session_remove(ns, sid)
            self.store.emit(ns, "session.deleted", sid, now, **session_deleted(sid, True))
            self._session_hand_on(ns, sid, waited, now)
            return None
        return sess

    def _session_read(self, ns: str, sid: str) -> Session | None:
        """The live session for a read: one past its deadline reads as absent."""
        sess = self._sessions(ns).get(sid)
        if sess is None or (sess.expires_at is not None and sess.expires_at <= now_ms()):
            return None
        return sess

    def _session_touch(self, ns: str, sid: str, sess: Session | None, now: int) -> Session:
        """Create the session on first use, or count a write: updated_at, idle deadline."""
        if sess is None:
            self.store.ns(ns).used_bytes += 2  # its metadata '{}'; callers checked the quota
            sess = self._session_add(ns, sid, Session(b"{}", now, now, used_bytes=2))
            return sess
        sess.updated_at = now
        self._session_deadline(ns, sid, sess, now)
        return sess

    def _session_deadline(self, ns: str, sid: str, sess: Session, now: int) -> None:
        sess.expires_at = now + sess.ttl_ms if sess.ttl_ms else None
        # One heap row per session: a later deadline is rescheduled when the row falls due.
        if sess.expires_at is not None and (sess.scheduled is None
                                            or sess.scheduled > sess.expires_at):
            sess.scheduled = sess.expires_at
            self.store.schedule_deadline(sess.expires_at, ns, "s:" + sid)

    def _session_remove(self, ns: str, sid: str, *, keep_waited: bool = True) -> list[str]:
        """Forget the session and its locks' holders and pending entries (token counters
        stay: tokens are never reused), and the slots nothing needs any more. A lock with
        waiters in line keeps its pending entries (``keep_waited``): its names are
        returned, for ``_session_hand_on``."""
        sessions = self._sessions(ns)
        sess = sessions.pop(sid, None)
        if sess is not None:
            self.store.charge(ns, 0, -sess.used_bytes)
            order = self._session_order(ns)
            i = bisect.bisect_left(order, sid)
            if i < len(order) and order[i] == sid:
                del order[i]
            if not sessions:
                del self.table[ns]
                self.orders.pop(ns, None)
        locks = self.store.view(ns).locks
        waited: list[str] = []
        for name, slot in self.locks.scope_slots(ns, sid):
            if keep_waited and slot.waited():
                waited.append(name)
            else:
                slot.pending.clear()
            slot.ticket = ""
            locks.pop((sid, name), None)
            self.locks.tidy(ns, sid, name)
        return waited

    def _session_hand_on(self, ns: str, sid: str, names: list[str], now: int) -> None:
        """After a session's removal: hand each of ``names`` (free locks with waiters) to
        its first waiter, who claims the pending entries, as a release or an expiry does;
        entries no waiter is left to claim go with the session."""
        for name in names:
            if self.locks.handoff(ns, sid, name, now) is None:
                self.locks.slot(ns, sid, name).pending.clear()
            self.locks.tidy(ns, sid, name)

    def _session_event(self, ns: str, sid: str, now: int, change: str, **fields: Any) -> int:
        return self.store.emit(ns, "session.updated", sid, now,
                               **session_updated(sid, change, **fields))

    # -- sessions --------------------------------------------------------------------

    async def session_put(
        self, ns: str, sid: str, metadata: bytes, ttl_ms: int, *, fence: Fence | None = None
    ) -> tuple[SessionInfo, bool]:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        old = self._session_live(ns, sid, now)
        old_metadata = old.metadata if old is not None else None
        grow = len(metadata) - len(old_metadata or b"{}") + (0 if old else 2)
        self.store.check_quota(ns, 0, grow)
        sess = self._session_touch(ns, sid, old, now)
        self._session_charge(ns, sess, len(metadata) - len(sess.metadata))
        sess.metadata = compact(metadata)
        sess.ttl_ms = ttl_ms
        self._session_deadline(ns, sid, sess, now)
        self._session_event(ns, sid, now, "metadata", value=metadata, old_value=old_metadata,
                            created=old is None, ttl=seconds(ttl_ms) if ttl_ms else None)
        return sess.info(sid), old is None

    async def session_get(self, ns: str, sid: str) -> SessionInfo | None:
        sess = self._session_read(ns, sid)
        return sess.info(sid) if sess is not None else None

    async def session_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[SessionInfo], str | None]:
        now = now_ms()
        sessions = self._sessions(ns)

        def live(sid: str) -> SessionInfo | None:
            sess = sessions[sid]
            if sess.expires_at is not None and sess.expires_at <= now:
                return None
            return sess.info(sid)

        return page_sorted(self._session_order(ns), pattern, after, limit, live)

    async def session_delete(self, ns: str, sid: str, *, fence: Fence | None = None) -> bool:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        if self._session_live(ns, sid, now) is None:
            return False
        waited = self._session_remove(ns, sid)
        self.store.emit(ns, "session.deleted", sid, now, **session_deleted(sid, False))
        self._session_hand_on(ns, sid, waited, now)
        return True

    def lock_session_check(self, ns: str, sid: str, now: int) -> None:
        """Before a session lock change: expire it if due; 507 if creating it won't fit."""
        if self._session_live(ns, sid, now) is None:
            self.store.check_quota(ns, 0, 2)

    def lock_session_use(self, ns: str, sid: str, now: int) -> None:
        """The lock changed: create or touch the session (lock slots index its names)."""
        self._session_touch(ns, sid, self._session_live(ns, sid, now), now)

    def _expire_s(self, ns: str, sid: str, deadline: int, now: int) -> bool:
        sess = self._sessions(ns).get(sid)
        if sess is None or sess.scheduled != deadline:
            return False  # gone, or this row was replaced by an earlier deadline
        sess.scheduled = None
        if sess.expires_at is not None and sess.expires_at > now:
            sess.scheduled = sess.expires_at  # written since: wait for the new deadline
            self.store.schedule_deadline(sess.expires_at, ns, "s:" + sid)
            return False
        if sess.expires_at is None:
            return False
        return self._session_live(ns, sid, now) is None

    # -- variables -------------------------------------------------------------------

    async def var_register(
        self, ns: str, sid: str, var: Variable, *, fence: Fence | None = None
    ) -> Variable:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        sess = self._session_live(ns, sid, now)
        if sess is not None:
            taken = sess.resolve(var.name)
            if taken is not None:
                raise Conflict(f"Variable {var.name!r} already exists in session {sid!r}.",
                               code="already_exists", current=taken)
        self.store.check_quota(ns, 0, var_bytes(var) + (0 if sess else 2))
        sess = self._session_touch(ns, sid, sess, now)
        var_id = var.id
        while var_id in sess.variables:
            var_id = new_variable_id()
        var = kept(replace(var, id=var_id, version=1, created_at=now, updated_at=now))
        self._session_charge(ns, sess, var_bytes(var))
        sess.variables[var.id] = var
        sess.names[var.name] = var.id
        self.store.emit(ns, "variable.created", var.name, now, session=sid, value=var.value,
                  old_value=None,
                  extra={"id": var.id, "variable_type": var.type, "version": 1})
        return var

    async def var_get(self, ns: str, sid: str, ident: str) -> Variable | None:
        sess = self._session_read(ns, sid)
        return sess.resolve(ident) if sess is not None else None

    async def var_list(self, ns: str, sid: str) -> list[Variable]:
        sess = self._session_read(ns, sid)
        if sess is None:
            return []
        return sorted(sess.variables.values(), key=lambda v: v.name)

    async def var_read(self, ns: str, sid: str, idents: Sequence[str]) -> dict[str, Variable]:
        sess = self._session_read(ns, sid)
        if sess is None:
            return {}
        found = {ident: sess.resolve(ident) for ident in idents}
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
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        sess = self._session_live(ns, sid, now)
        found = {ident: sess.resolve(ident) if sess is not None else None
                 for ident, _ in updates}
        plan = plan_writes(found, updates, metadata, condition, now)
        if (atomic and plan.errors) or not plan.writes or sess is None:
            return WriteOutcome([], plan.errors, None)
        self._session_charge(
            ns, sess, sum(var_bytes(w.new) - var_bytes(w.old) for w in plan.writes)
        )
        self._session_touch(ns, sid, sess, now)
        for w in plan.writes:
            sess.variables[w.new.id] = kept(w.new)
        first, extra = write_event(plan.writes, batch=batch)
        revision = self.store.emit(
            ns, "variable.updated", first.new.name, now, session=sid,
            value=first.new.value, old_value=first.old.value, extra=extra,
        )
        return WriteOutcome([w.new for w in plan.writes], plan.errors, revision)

    async def var_delete(
        self,
        ns: str,
        sid: str,
        ident: str,
        *,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> Variable:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        sess = self._session_live(ns, sid, now)
        var = sess.resolve(ident) if sess is not None else None
        condition.check(var, variable_subject(ident))
        if sess is None or var is None:
            raise NotFound(f"No variable {ident!r} in session {sid!r}.")
        self._session_touch(ns, sid, sess, now)
        self._session_charge(ns, sess, -var_bytes(var))
        del sess.variables[var.id]
        del sess.names[var.name]
        self.store.emit(ns, "variable.deleted", var.name, now, session=sid, value=None,
                  old_value=var.value, extra=variable_event_fields(var))
        return var

    # -- snapshots -------------------------------------------------------------------

    async def session_snapshot(self, ns: str, sid: str) -> SessionSnapshot | None:
        sess = self._session_read(ns, sid)
        if sess is None:
            return None
        now = now_ms()
        snap = SessionSnapshot(
            sid, self.store.view(ns).revision, sess.metadata, sess.ttl_ms, sess.created_at,
            sess.updated_at, sess.expires_at, list(sess.variables.values()),
            sorted(sess.subscriptions), list(sess.dedupe), dict(sess.threads),
            dict(sess.channels),
        )
        holders = self.store.view(ns).locks
        for name, slot in self.locks.scope_slots(ns, sid):
            holder = holders.get((sid, name))
            if holder is not None and (holder.expires_at is None or holder.expires_at > now):
                snap.locks[name] = LockSnapshot(holder.owner, holder.token, holder.acquired_at,
                                                holder.expires_at, slot.ttl_ms)
            if slot.pending:
                snap.pending_locks[name] = list(slot.pending)
        return snap

    async def session_import(
        self, ns: str, sid: str, snapshot: SessionSnapshot, *, fence: Fence | None = None
    ) -> ImportResult:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        old = self._session_live(ns, sid, now)
        size = snapshot_bytes(snapshot)
        self.store.check_quota(ns, 0, size - (old.used_bytes if old is not None else 0))
        self.locks.check_import_quota(ns, sid, sum(
            1 for lock in snapshot.locks.values()
            if lock.expires_at is None or lock.expires_at > now))
        holders = self.store.ns(ns).locks
        prior = {name: holders.get((sid, name)) for name in snapshot.locks}
        prior = {name: h for name, h in prior.items()
                 if h is not None and (h.expires_at is None or h.expires_at > now)}
        self._session_remove(ns, sid, keep_waited=False)
        self.store.charge(ns, 0, size)
        sess = self._session_add(ns, sid, Session(
            compact(snapshot.metadata), snapshot.created_at or now, now, snapshot.ttl_ms,
            used_bytes=size,
        ))
        self._session_deadline(ns, sid, sess, now)
        for var in snapshot.variables:
            sess.variables[var.id] = kept(var)
            sess.names[var.name] = var.id
        sess.subscriptions = set(snapshot.subscriptions)
        sess.dedupe = dict.fromkeys(snapshot.dedupe_order)
        sess.threads = {name: compact(state) for name, state in snapshot.thread_state.items()}
        sess.channels = {name: compact(state) for name, state in snapshot.channel_state.items()}
        tokens: dict[str, int] = {}
        for name, lock in snapshot.locks.items():
            before = prior.get(name)
            token = lock.token
            same_holder = (before is not None and before.owner == lock.owner
                           and before.token == lock.token)
            last_token = self.locks.last_token(ns, sid, name)
            if token <= last_token and not same_holder:
                token = last_token + 1
            self.locks.raise_token(ns, sid, name, token)
            if lock.expires_at is not None and lock.expires_at <= now:
                continue  # already expired: free, its pending entries kept
            slot = self.locks.slot(ns, sid, name)
            holders[(sid, name)] = LockState(lock.owner, token, lock.acquired_at or now,
                                             lock.expires_at)
            slot.ttl_ms = lock.ttl_ms
            if lock.expires_at is not None:
                self.store.schedule_deadline(lock.expires_at, ns, f"l:{sid}|{name}")
            tokens[name] = token
        for name, entries in snapshot.pending_locks.items():
            self.locks.slot(ns, sid, name).pending[:] = [compact(e) for e in entries]
            self.locks.tidy(ns, sid, name)  # none given: no slot kept for it
        revision = self.store.emit(ns, "session.imported", sid, now, session=sid,
                             extra={"created": old is None}, with_values=False)
        # A lock left free goes to its first waiter at once (with the imported entries).
        self._session_hand_on(ns, sid, self.locks.free_with_waiters(ns, sid), now)
        return ImportResult(revision, old is None, tokens)
