"""Locks for the Redis backend: every step is one script (``lua/lock_*.lua`` on top of
``lib_locks.lua``), so tokens, holders, pending lists and waiter lines stay consistent
across replicas.

A waiter in exclusive mode gets a random ticket and a place in the lock's FIFO line
(``lockwait``, at most ``Bounds.lock_max_waiters`` long: beyond, 429); whoever frees the
lock (a release, a force-release, the expiry run by any replica's sweeper) hands it to
the first live ticket in the same script, pushes that ticket's wake list and publishes
the ticket, which the process's one listener (``wakeups.py``) turns into the waiter's
wake-up: waiting holds no connection. The waiter then *claims* the lock, taking the
pending entries; one that gives up removes itself atomically and still gets a lock
handed to it in the meantime.

A session lock call (``session=True``) does its session step in the same script: the
session's expiry and quota are checked first, and the lock's name is indexed and the
session created or touched when the call changed something (lib_sessions.lua's
``ss_lock_check``/``ss_lock_use``); a waiter does it in the script that claims the lock.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Literal

from app.backends import paging
from app.backends.parts.locks import LockEngine
from app.backends.redis.store import RedisStore, lua_pattern, text
from app.backends.redis.wakeups import RESYNC, LockWakeups, Wake
from app.domain.leases import lease_not_found
from app.domain.locks import (
    LockInfo,
    LockOutcome,
    LockRelease,
    LockRequest,
    client_gone,
    lock_held,
    lock_not_held,
    not_owner,
    too_many_waiters,
)
from app.errors import QuotaExceeded
from app.syntax import Pattern

if TYPE_CHECKING:

    pass

#: Shortest wait worth starting.
_MIN_BLOCK_SECONDS = 0.001



def _info(name: str, fields: Sequence[Any], offset: int = 1) -> LockInfo:
    owner, token, acquired_at, expires_at, pending = fields[offset : offset + 5]
    return LockInfo(
        name, text(owner), int(token), int(acquired_at), int(expires_at) or None, int(pending)
    )


def _entries(reply: Sequence[Any], start: int) -> tuple[bytes, ...]:
    return tuple(bytes(item) for item in reply[start:])


class RedisLocks(LockEngine):
    """The lock engine of RedisBackend (on a ``RedisStore``: its scripts)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        #: The process's one pub/sub listener; it subscribes on its first waiter.
        self.wakeups = LockWakeups(store.nodes.listener)
        self.withdrawals: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        await self.wakeups.close()


    async def lock_acquire(
        self,
        ns: str,
        scope: str,
        name: str,
        request: LockRequest,
        gone: asyncio.Event | None = None,
        *,
        session: bool = False,
    ) -> LockOutcome:
        waits = request.mode == "exclusive" and request.wait_s > 0
        if request.ttl_ms > 0 or waits:  # a lock handed to a waiter has a claim deadline
            await self.store.register_deadlines(ns)
        ticket = secrets.token_hex(16) if waits else ""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.wait_s

        async def step(name_of_step: str, item: bytes = b"") -> Any:
            return await self.store.run(
                "lock_acquire", ns, scope, name, request.owner, request.ttl_ms, request.mode,
                request.entry, request.max_pending, ticket, round(request.wait_s * 1000),
                name_of_step, item, self.store.bounds.lock_max_waiters, request.lease or "",
                "1" if session else "0", self.store.bounds.max_locks,
            )

        wakeups = self.wakeups
        woken = wakeups.register(ticket) if waits else None  # before joining the line
        try:
            try:
                reply = await step("try")
            except QuotaExceeded:
                raise  # refused before anything was written: not in line
            except BaseException:
                if waits:  # cancelled after the script queued this waiter: leave the line
                    self._lock_withdraw(step("cancel"))
                raise
            task = asyncio.current_task()
            item = b""
            try:
                while reply[0] == b"waiting":
                    assert woken is not None
                    item = bytes(reply[1])
                    if task is not None and task.cancelling():
                        raise asyncio.CancelledError  # swallowed inside redis-py: honour it
                    remaining = deadline - loop.time()
                    woke: Wake | Literal["timeout"] | None = "timeout"
                    if remaining >= _MIN_BLOCK_SECONDS:
                        woke = await _first_of(woken, gone, remaining)
                    if woke is None:  # the client went away: leave, give back a hand-over
                        withdrawing, item = self._lock_withdraw(step("cancel", item)), b""
                        await withdrawing
                        raise client_gone(name)
                    if woke == RESYNC and loop.time() < deadline - _MIN_BLOCK_SECONDS:
                        # A message may have been lost: was the lock handed to this ticket?
                        woken = wakeups.register(ticket)
                        if not await self._lock_handed(ns, ticket):
                            continue
                    reply = await step("final" if woke == "timeout" else "wake", item)
                    if reply[0] == b"waiting":
                        woken = wakeups.register(ticket)  # back in line: a fresh wake-up
            except BaseException:
                # Cancelled (shutdown, or the request's task) or failed at any await while
                # in line: leave the line, and give back a lock handed over meanwhile, in
                # the background (a cancelled task cannot await it).
                if item:
                    self._lock_withdraw(step("cancel", item))
                raise
        finally:
            if waits:
                wakeups.unregister(ticket)
        if reply[0] == b"too_many_waiters":
            raise too_many_waiters(name, int(reply[1]))
        return _outcome(name, reply, request.lease)

    async def _lock_handed(self, ns: str, ticket: str) -> bool:
        """Whether the lock was handed to ``ticket`` (its wake list was pushed)."""
        key = f"cb:{{{ns}}}:lockwake:{ticket}"
        return bool(await self.store.call(key, lambda c: c.exists(key), write=False))

    def _lock_withdraw(self, call: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a withdrawal (a 'cancel' step) in the background: kept in ``withdrawals``
        until done, so that closing the backend (and tests) can wait for it."""
        tasks = self.withdrawals
        task = asyncio.ensure_future(call)
        tasks.add(task)  # (a strong reference until done)
        task.add_done_callback(_finish_withdrawal(tasks))
        return task

    async def lock_refresh(
        self,
        ns: str,
        scope: str,
        name: str,
        owner: str,
        token: int,
        ttl_ms: int | None,
        *,
        session: bool = False,
    ) -> LockInfo:
        if ttl_ms:
            await self.store.register_deadlines(ns)
        reply = await self.store.run(
            "lock_refresh", ns, scope, name, owner, token, "" if ttl_ms is None else ttl_ms,
            "1" if session else "0",
        )
        status = text(reply[0])
        if status == "ok":
            return _info(name, reply)
        _raise_not_holding(status, name, reply, owner, token)
        raise AssertionError("unreachable")

    async def lock_release(
        self, ns: str, scope: str, name: str, owner: str, token: int, *, session: bool = False
    ) -> LockRelease:
        reply = await self.store.run("lock_release", ns, scope, name, owner, token, "0",
                                     "1" if session else "0")
        status = text(reply[0])
        if status == "released":
            return LockRelease(_info(name, reply), _entries(reply, 6))
        _raise_not_holding(status, name, reply, owner, token)
        raise AssertionError("unreachable")

    async def lock_force_release(
        self, ns: str, scope: str, name: str, *, session: bool = False
    ) -> LockRelease:
        reply = await self.store.run("lock_release", ns, scope, name, "", 0, "1",
                                     "1" if session else "0")
        if text(reply[0]) == "released":
            return LockRelease(_info(name, reply), _entries(reply, 6))
        return LockRelease(None, _entries(reply, 1))

    async def lock_get(self, ns: str, scope: str, name: str) -> tuple[LockInfo | None, int]:
        reply = await self.store.run("lock_read", ns, scope, name)
        pending = int(reply[0])
        if len(reply) == 1:
            return None, pending
        return _info(name, [*reply[1:], pending], 0), pending

    async def lock_list(
        self, ns: str, scope: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[LockInfo], str | None]:
        reply = await self.store.run(
            "lock_list", ns, scope, after or "", pattern.prefix, lua_pattern(pattern), limit,
            paging.LIST_SCAN_BUDGET,
        )
        items = [_info(text(reply[i]), reply, i + 1) for i in range(1, len(reply), 6)]
        # The scan's cursor ('' at the end): a page the scan budget stopped, even an
        # empty one, continues after what it examined.
        return items, text(reply[0]) or None


async def _first_of(
    woken: asyncio.Future[Wake], gone: asyncio.Event | None, timeout: float
) -> Wake | Literal["timeout"] | None:
    """The wake-up (WAKE or RESYNC), "timeout" when ``timeout`` passed, or None when
    ``gone`` was set first. asyncio.wait, not wait_for: it never swallows a cancel."""
    watched: list[asyncio.Future[Any]] = [woken]
    if gone is not None:
        watched.append(asyncio.ensure_future(gone.wait()))
    try:
        await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for extra in watched[1:]:
            extra.cancel()
    if gone is not None and gone.is_set():
        return None
    if woken.done() and not woken.cancelled():
        return woken.result()
    return "timeout"


def _finish_withdrawal(tasks: set[asyncio.Task[Any]]) -> Any:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed withdrawal is left to the wait deadline

    return done


def _outcome(name: str, reply: Sequence[Any], lease: str | None = None) -> LockOutcome:
    status = text(reply[0])
    if status == "acquired":
        return LockOutcome("acquired", _info(name, reply), _entries(reply, 6))
    if status == "lease_not_found":
        raise lease_not_found(lease or "")
    if status == "queued":
        return LockOutcome("queued", position=int(reply[1]))
    if status == "debounced":
        return LockOutcome("debounced")
    if status in ("held", "full"):
        raise lock_held(_info(name, reply), full=status == "full")
    raise RuntimeError(f"unexpected lock_acquire status {status!r}")


def _raise_not_holding(
    status: str, name: str, reply: Sequence[Any], owner: str, token: int
) -> None:
    if status == "not_owner":
        raise not_owner(_info(name, reply), owner)
    if status == "not_held":
        raise lock_not_held(name, token)
    raise RuntimeError(f"unexpected lock script status {status!r}")
