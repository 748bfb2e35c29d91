"""Sessions for the Redis backend: every change is one script (``lua/session_*.lua``,
``lua/var_*.lua`` on top of ``lib_sessions.lua``), in the namespace's hash slot.

Variable values and state maps are checked in Python (JSON Patch and type constraints are
no job for Lua, and Lua's cjson would round numbers): a write reads what it depends on,
checks it, and applies it with a script conditioned on the versions (or the state bytes)
it checked against; when another writer came between, it reads again and retries.
A snapshot is one read-only script and an import one script, so each is one revision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from app.backends import paging
from app.backends.parts.sessions import SessionStore
from app.backends.redis.store import RedisStore, lua_pattern, text
from app.domain.conditions import NO_CONDITION, Condition
from app.domain.conditions import variable as variable_subject
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
)
from app.errors import BackendUnavailable, Conflict, NotFound, StaleFence
from app.syntax import Pattern
from app.variables import new_variable_id

if TYPE_CHECKING:
    pass

#: Compare-and-swap rounds of one write racing other writers of the same variables.
WRITE_ATTEMPTS = 200



def _stale(fence: Fence | None) -> StaleFence:
    assert fence is not None
    return fence.stale()


def _info(sid: str, fields: Sequence[Any], offset: int = 0) -> SessionInfo:
    md, ca, ua, ttl, ea, count = fields[offset : offset + 6]
    return SessionInfo(sid, bytes(md), int(ttl), int(ca), int(ua), int(ea) or None, int(count))


def _variable(meta: bytes, value: bytes) -> Variable:
    ver, ca, ua, definition = bytes(meta).split(b"|", 3)
    return Variable.from_stored(definition, bytes(value), int(ver), int(ca), int(ua))


def _lost_race(what: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"{what} changed under {WRITE_ATTEMPTS} consecutive write attempts; retry."
    )


class RedisSessions(SessionStore):
    """The session store of RedisBackend (on a ``RedisStore``: its scripts)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store


    # -- sessions --------------------------------------------------------------------

    async def session_put(
        self, ns: str, sid: str, metadata: bytes, ttl_ms: int, *, fence: Fence | None = None
    ) -> tuple[SessionInfo, bool]:
        if ttl_ms > 0:
            await self.store.register_deadlines(ns)
        ttl_json = orjson.dumps(seconds(ttl_ms) if ttl_ms else None)
        reply = await self.store.run("session_put", ns, sid, metadata, ttl_ms, ttl_json,
                               *Fence.script_args(fence))
        status = text(reply[0])
        if status == "stale_fence":
            raise _stale(fence)
        return _info(sid, reply, 1), status == "created"

    async def session_get(self, ns: str, sid: str) -> SessionInfo | None:
        reply = await self.store.run("session_get", ns, "info", sid, "")
        return _info(sid, reply) if reply else None

    async def session_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[SessionInfo], str | None]:

        reply = await self.store.run("session_list", ns, after or "", pattern.prefix,
                               lua_pattern(pattern), limit, paging.LIST_SCAN_BUDGET)
        items = [_info(text(reply[i]), reply, i + 1) for i in range(1, len(reply), 7)]
        return items, text(reply[0]) or None

    async def session_delete(self, ns: str, sid: str, *, fence: Fence | None = None) -> bool:
        reply = await self.store.run("session_delete", ns, sid, *Fence.script_args(fence))
        status = text(reply[0])
        if status == "stale_fence":
            raise _stale(fence)
        return status == "deleted"

    # -- variables -------------------------------------------------------------------

    async def var_register(
        self, ns: str, sid: str, var: Variable, *, fence: Fence | None = None
    ) -> Variable:
        var_id = var.id
        for _ in range(WRITE_ATTEMPTS):
            var = replace(var, id=var_id)
            reply = await self.store.run("var_create", ns, sid, var.id, var.name,
                                   var.definition_json(), var.value, var.type,
                                   *Fence.script_args(fence))
            status = text(reply[0])
            if status == "created":
                now = int(reply[1])
                return replace(var, version=1, created_at=now, updated_at=now)
            if status == "stale_fence":
                raise _stale(fence)
            if status == "already_exists":
                raise Conflict(f"Variable {var.name!r} already exists in session {sid!r}.",
                               code="already_exists", current=_variable(reply[2], reply[3]))
            var_id = new_variable_id()  # 'id_taken': astronomically rare
        raise _lost_race(f"Variable {var.name!r}")

    async def _read_vars(
        self, ns: str, sid: str, idents: Sequence[str] | None, fence: Fence | None = None
    ) -> dict[str, Variable]:
        which = ["*"] if idents is None else ["", *idents]
        reply = await self.store.run("var_read", ns, sid, *Fence.script_args(fence), *which)
        if text(reply[0]) == "stale_fence":
            raise _stale(fence)
        return {
            text(reply[i]): _variable(reply[i + 2], reply[i + 3]) for i in range(1, len(reply), 4)
        }

    async def var_get(self, ns: str, sid: str, ident: str) -> Variable | None:
        return (await self._read_vars(ns, sid, [ident])).get(ident)

    async def var_list(self, ns: str, sid: str) -> list[Variable]:
        found = await self._read_vars(ns, sid, None)
        return sorted(found.values(), key=lambda v: v.name)

    async def var_read(self, ns: str, sid: str, idents: Sequence[str]) -> dict[str, Variable]:
        if not idents:
            return {}
        return await self._read_vars(ns, sid, idents)

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
        idents = list(dict.fromkeys(ident for ident, _ in updates))
        for _ in range(WRITE_ATTEMPTS):
            found = await self._read_vars(ns, sid, idents, fence)
            plan = plan_writes(dict(found), updates, metadata, condition)
            if (atomic and plan.errors) or not plan.writes:
                return WriteOutcome([], plan.errors, None)
            writes = sorted(plan.writes, key=lambda w: w.new.name) if batch else plan.writes
            args: list[Any] = []
            for w in writes:
                definition = w.new.definition_json() if metadata is not None else b""
                args += [w.new.id, w.old.version, w.new.name, definition, w.new.value]
            reply = await self.store.run("var_write", ns, sid, "batch" if batch else "single",
                                   *Fence.script_args(fence), len(writes), *args)
            status = text(reply[0])
            if status == "ok":
                now = int(reply[2])
                updated = [replace(w.new, updated_at=now) for w in plan.writes]
                return WriteOutcome(updated, plan.errors, int(reply[1]))
            if status == "stale_fence":
                raise _stale(fence)
            await asyncio.sleep(0)
        raise _lost_race("The variables")

    async def var_delete(
        self,
        ns: str,
        sid: str,
        ident: str,
        *,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> Variable:
        for _ in range(WRITE_ATTEMPTS):
            var = (await self._read_vars(ns, sid, [ident], fence)).get(ident)
            condition.check(var, variable_subject(ident))
            if var is None:
                raise NotFound(f"No variable {ident!r} in session {sid!r}.")
            reply = await self.store.run("var_delete", ns, sid, var.id, var.version, var.name,
                                   *Fence.script_args(fence))
            status = text(reply[0])
            if status == "deleted":
                return var
            if status == "stale_fence":
                raise _stale(fence)
            await asyncio.sleep(0)
        raise _lost_race(f"Variable {ident!r}")

    # -- chat state ------------------------------------------------------------------

    async def subscription_set(
        self, ns: str, sid: str, thread: str, subscribed: bool, *, fence: Fence | None = None
    ) -> bool:
        reply = await self.store.run("session_subscribe", ns, sid, thread,
                                     "1" if subscribed else "0", *Fence.script_args(fence))
        if text(reply[0]) == "stale_fence":
            raise _stale(fence)
        return int(reply[0]) == 1

    async def subscription_list(self, ns: str, sid: str) -> list[str]:
        reply = await self.store.run("session_get", ns, "subs", sid, "")
        return [text(t) for t in reply]

    async def subscription_get(self, ns: str, sid: str, thread: str) -> bool:
        reply = await self.store.run("session_get", ns, "sub", sid, thread)
        return int(reply[0]) == 1

    async def dedupe_check(
        self, ns: str, sid: str, key: str, limit: int, *, fence: Fence | None = None
    ) -> bool:
        reply = await self.store.run("session_dedupe", ns, sid, key, limit,
                                     *Fence.script_args(fence))
        if text(reply[0]) == "stale_fence":
            raise _stale(fence)
        return int(reply[0]) == 1

    async def _state_read(
        self, ns: str, sid: str, kind: StateKind, ident: str, fence: Fence | None = None
    ) -> bytes | None:
        reply = await self.store.run("session_get", ns, kind, sid, ident, *Fence.script_args(fence))
        if text(reply[0]) == "stale_fence":
            raise _stale(fence)
        return bytes(reply[1]) if len(reply) > 1 else None

    async def state_get(self, ns: str, sid: str, kind: StateKind, ident: str) -> bytes | None:
        return await self._state_read(ns, sid, kind, ident)

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
        for _ in range(WRITE_ATTEMPTS):
            old = await self._state_read(ns, sid, kind, ident, fence)
            new = update(old)
            reply = await self.store.run(
                "session_state", ns, sid, kind, ident, "0" if old is None else "1", old or b"",
                "delete" if new is None else "put", new or b"", *Fence.script_args(fence),
            )
            status = text(reply[0])
            if status in ("created", "replaced", "deleted", "unchanged"):
                return new, status == "created"
            if status == "stale_fence":
                raise _stale(fence)
            await asyncio.sleep(0)
        raise _lost_race(f"The state of {kind} {ident!r}")

    # -- snapshots -------------------------------------------------------------------

    async def session_snapshot(self, ns: str, sid: str) -> SessionSnapshot | None:
        reply = await self.store.run("session_snapshot", ns, sid)
        if int(reply[1]) == 0:
            return None
        md, ca, ua, ttl, ea = reply[2:7]
        snap = SessionSnapshot(sid, int(reply[0]), bytes(md), int(ttl), int(ca), int(ua),
                               int(ea) or None)
        pos = 7

        def take() -> Any:
            nonlocal pos
            pos += 1
            return reply[pos - 1]

        for _ in range(int(take())):
            take()
            snap.variables.append(_variable(take(), take()))
        snap.subscriptions = [text(take()) for _ in range(int(take()))]
        snap.dedupe_order = [text(take()) for _ in range(int(take()))]
        for states in (snap.thread_state, snap.channel_state):
            for _ in range(int(take())):
                ident = text(take())
                states[ident] = bytes(take())
        for _ in range(int(take())):
            name, owner = text(take()), text(take())
            token, acquired_at, expires_at, ttl_ms = (int(take()) for _ in range(4))
            snap.locks[name] = LockSnapshot(owner, token, acquired_at, expires_at or None,
                                            ttl_ms)
        for _ in range(int(take())):
            name = text(take())
            snap.pending_locks[name] = [bytes(take()) for _ in range(int(take()))]
        return snap

    async def session_import(
        self, ns: str, sid: str, snapshot: SessionSnapshot, *, fence: Fence | None = None
    ) -> ImportResult:
        if snapshot.ttl_ms or any(lock.expires_at for lock in snapshot.locks.values()):
            await self.store.register_deadlines(ns)
        args: list[Any] = [snapshot.metadata, snapshot.ttl_ms, snapshot.created_at,
                           len(snapshot.variables)]
        for v in snapshot.variables:
            meta = b"%d|%d|%d|" % (v.version, v.created_at, v.updated_at) + v.definition_json()
            args += [v.id, v.name, meta, v.value]
        args += [len(snapshot.subscriptions), *snapshot.subscriptions]
        args += [len(snapshot.dedupe_order), *snapshot.dedupe_order]
        for states in (snapshot.thread_state, snapshot.channel_state):
            args.append(len(states))
            for ident, state in states.items():
                args += [ident, state]
        args.append(len(snapshot.locks))
        for name, lock in snapshot.locks.items():
            args += [name, lock.owner, lock.token, lock.acquired_at, lock.expires_at or 0,
                     lock.ttl_ms]
        args.append(len(snapshot.pending_locks))
        for name, entries in snapshot.pending_locks.items():
            args += [name, len(entries), *entries]
        args.append(self.store.bounds.max_locks)  # last: the lock quota
        reply = await self.store.run("session_import", ns, sid, *Fence.script_args(fence), *args)
        if text(reply[0]) == "stale_fence":
            raise _stale(fence)
        tokens = {text(reply[i]): int(reply[i + 1]) for i in range(3, len(reply), 2)}
        return ImportResult(int(reply[1]), int(reply[2]) == 1, tokens)
