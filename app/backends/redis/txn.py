"""Transactions and pattern deletes for the Redis backend (API.md section 10).

A transaction is planned in Python (app/txn.py: the same compares, JSON equality,
patches and increments as every backend) from one atomic read (``txn_read.lua``), then
applied by one script (``txn.lua``) that first checks that every key it read is still at
the revision read and every compared lock still in the state read. If something changed
in between, the read and plan run again (optimistic concurrency); a transaction made of
blind writes needs no read and applies at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.backends.parts.txn import TxnStore
from app.backends.redis.keys import entry_of
from app.backends.redis.store import RedisStore, lua_pattern, text
from app.domain.bounds import quota_exceeded
from app.domain.fence import Fence
from app.domain.leases import MAX_PATTERN_DELETE, PatternDelete, TxnOutcome, lease_not_found
from app.errors import BackendUnavailable, CorkboardError, TooManyKeys
from app.txn import Limits, Plan, Txn, plan

if TYPE_CHECKING:

    from app.domain.keys import KeyEntry
    from app.syntax import Pattern

#: Optimistic attempts of a transaction racing other writers of the keys it reads.
TXN_ATTEMPTS = 200



def _readentry_of(fields: Sequence[Any], i: int) -> tuple[KeyEntry | None, int]:
    """The entry at ``fields[i]`` ('n', or 'e' and 8 fields) and the index after it."""

    if text(fields[i]) == "n":
        return None, i + 1
    return entry_of(fields, i + 1), i + 9


class RedisTxn(TxnStore):
    """The transaction engine of RedisBackend (on a ``RedisStore``: its scripts)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store


    async def txn(
        self, ns: str, txn: Txn, limits: Limits, *, fence: Fence | None = None
    ) -> TxnOutcome:
        keys = txn.read_keys()
        lock_compares = txn.lock_compares
        if any(op.ttl_ms > 0 for op in (*txn.success, *txn.failure)):
            await self.store.register_deadlines(ns)
        for _ in range(TXN_ATTEMPTS):
            entries: dict[str, KeyEntry | None] = {}
            held: list[bool] = []
            if keys or lock_compares:
                lock_args = [a for c in lock_compares for a in (c.scope, c.name, c.token)]
                reply = await self.store.run("txn_read", ns, len(keys), *keys,
                                       len(lock_compares), *lock_args)
                i = 0
                for key in keys:
                    entries[key], i = _readentry_of(reply, i)
                held = [text(flag) == "1" for flag in reply[i:]]
            try:
                p = plan(txn, entries, held, limits)
            except CorkboardError:
                # An op refused in planning (404, 412, 422, 413): a stale fence is
                # reported first, as memory's one atomic step does.
                await self.store.check_fence(ns, fence)
                raise
            guard_args: list[Any] = []
            for key in keys:
                entry = entries[key]
                guard_args += [key, entry.revision if entry is not None else 0]
            lock_guards: list[Any] = []
            for c, h in zip(lock_compares, held, strict=True):
                lock_guards += [c.scope, c.name, c.token, "1" if h else "0"]
            reply = await self.store.run(
                "txn", ns, *Fence.script_args(fence),
                len(keys), *guard_args, len(lock_compares), *lock_guards,
                *_step_args(p),
            )
            status = text(reply[0])
            if status == "ok":
                return _outcome(p, reply)
            if status == "stale_fence":
                assert fence is not None
                raise fence.stale()
            if status == "lease_not_found":
                raise lease_not_found(text(reply[1]))
            if status == "quota_exceeded":
                raise quota_exceeded(ns, text(reply[1]), int(reply[2]))
            await asyncio.sleep(0)
        raise BackendUnavailable(
            f"The transaction's keys changed under {TXN_ATTEMPTS} consecutive attempts; retry."
        )

    async def kv_delete_pattern(
        self, ns: str, pattern: Pattern, *, fence: Fence | None = None
    ) -> PatternDelete:
        reply = await self.store.run(
            "kv_delete_pattern", ns, *Fence.script_args(fence), pattern.prefix,
            lua_pattern(pattern), MAX_PATTERN_DELETE,
        )
        status = text(reply[0])
        if status == "stale_fence":
            assert fence is not None
            raise fence.stale()
        if status == "too_many":
            raise TooManyKeys(
                f"More than {MAX_PATTERN_DELETE} keys match {pattern.text!r}; one call "
                "deletes at most that many. Nothing was deleted: narrow the pattern."
            )
        return PatternDelete([text(k) for k in reply[2:]], int(reply[1]))


def _step_args(p: Plan) -> list[Any]:
    args: list[Any] = [len(p.steps)]
    for step in p.steps:
        args += [step.kind, step.key, step.value, step.ttl_ms, step.lease or "",
                 "1" if step.keep else "0"]
    return args


def _outcome(p: Plan, reply: Sequence[Any]) -> TxnOutcome:
    results: list[KeyEntry | bool | None] = []
    i = 2
    for _ in p.steps:
        flag = text(reply[i])
        if flag in ("d0", "d1"):
            results.append(flag == "d1")
            i += 1
        else:
            entry, i = _readentry_of(reply, i)
            results.append(entry)
    return TxnOutcome(p.succeeded, int(reply[1]), results)
