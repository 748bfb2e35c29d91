"""The Redis key store: each write one script (``lua/kv_*.lua``); a server-side update
(PATCH) and a sum involving a double are computed here and written with a compare-and-
swap on the revision they were computed from."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from app.backends import paging
from app.backends.parts.keys import KeyStore
from app.backends.redis.store import RedisStore, lua_pattern, text
from app.domain.conditions import KEY, NO_CONDITION, Condition
from app.domain.fence import Fence
from app.domain.keys import KeyEntry, KeyPage, PutResult, ValueUpdate, apply_update
from app.domain.leases import lease_not_found
from app.domain.numbers import add_exact, number_to_increment
from app.errors import BackendUnavailable, CorkboardError, NotFound, Unprocessable
from app.syntax import Pattern

#: Optimistic retries of a server-side update (PATCH) racing other writers of one key.
UPDATE_ATTEMPTS = 200
_FIRST_CHAR_KIND = {'"': "a string", "t": "a boolean", "f": "a boolean", "n": "null",
                    "[": "an array", "{": "an object"}


def entry_of(fields: Sequence[Any], offset: int = 1) -> KeyEntry:
    key, v, r, cr, ver, ca, ma, ea = fields[offset : offset + 8]
    return KeyEntry(
        text(key), bytes(v), int(r), int(cr), int(ver), int(ca), int(ma), int(ea) or None
    )


def written_entry(key: str, value: bytes, reply: Sequence[Any]) -> KeyEntry:
    """The entry ``kv_put`` stored, from its success reply: the status, then the entry's
    numbers only (the key and the value are the caller's)."""
    _, r, cr, ver, ca, ma, ea = reply
    return KeyEntry(key, value, int(r), int(cr), int(ver), int(ca), int(ma), int(ea) or None)


def history_entry_of(key: str, item: bytes) -> KeyEntry:
    r, cr, ver, ca, ma, ea, v = item.split(b"|", 6)
    return KeyEntry(key, v, int(r), int(cr), int(ver), int(ca), int(ma), int(ea) or None)


def unchanged_since(current: KeyEntry | None) -> Condition:
    """The compare-and-swap condition of a write computed from ``current``."""
    if current is None:
        return Condition(must_not_exist=True)
    return Condition(match_revision=current.revision)


def _raise_failure(
    status: str, reply: Sequence[Any], key: str, fence: Fence | None,
    condition: Condition | None = None, lease: str | None = None,
) -> None:
    """Turn a script's failure status into the domain error, the very error memory
    raises (a refused ``condition`` is decided again, by the one evaluator)."""
    if status == "lease_not_found":
        raise lease_not_found(lease or "")
    if status == "stale_fence":
        assert fence is not None
        raise fence.stale()
    if status in ("already_exists", "revision_mismatch") and condition is not None:
        condition.check(entry_of(reply) if len(reply) > 1 else None, KEY)  # raises its 412
    raise RuntimeError(f"unexpected script status {status!r} for key {key!r}")


class RedisKeys(KeyStore):
    """The key store on a ``RedisStore``."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    async def kv_get(self, ns: str, key: str, revision: int | None = None) -> KeyEntry | None:
        reply = await self.store.run("kv_read", ns, key, "1" if revision is not None else "0")
        if reply[0] == b"absent":
            return None
        if revision is None:
            return entry_of(reply)
        for item in reply[9:]:
            entry = history_entry_of(key, item)
            if entry.revision <= revision:
                return entry
        return None

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
        if ttl_ms > 0:
            await self.store.register_deadlines(ns)
        reply = await self.store.run(
            "kv_put", ns, key, value, ttl_ms, *condition.script_args(),
            *Fence.script_args(fence), lease or "",
        )
        status = text(reply[0])
        if status not in ("created", "replaced"):
            _raise_failure(status, reply, key, fence, condition, lease)
        return PutResult(written_entry(key, value, reply), status == "created")

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
        # Compare-and-swap: read, transform here (JSON Patch is no job for Lua), write only
        # if the key is still at the revision read; retry when another writer came between.
        if ttl_ms:
            await self.store.register_deadlines(ns)
        for _ in range(UPDATE_ATTEMPTS):
            current = await self.kv_get(ns, key)
            try:
                condition.check(current, KEY)
                if current is None and initial is None:
                    raise NotFound(f"Key {key!r} does not exist and no initial value was given.")
                base = current.value if current is not None else initial
                assert base is not None
                new_value = apply_update(update, base, current)
            except CorkboardError:
                await self.store.check_fence(ns, fence)  # a stale fence is the first answer
                raise
            cas = unchanged_since(current)
            reply = await self.store.run(
                "kv_put", ns, key, new_value, -1 if ttl_ms is None else ttl_ms,
                *cas.script_args(), *Fence.script_args(fence), lease or "",
            )
            status = text(reply[0])
            if status in ("created", "replaced"):
                return PutResult(written_entry(key, new_value, reply), status == "created")
            if status in ("stale_fence", "lease_not_found"):
                _raise_failure(status, reply, key, fence, lease=lease)
            await asyncio.sleep(0)
        raise BackendUnavailable(
            f"Key {key!r} changed under {UPDATE_ATTEMPTS} consecutive update attempts; retry."
        )

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
        if ttl_ms > 0:
            await self.store.register_deadlines(ns)
        # Integer text as Python writes it (orjson refuses integers beyond 64 bits).
        by_text = str(by) if isinstance(by, int) else orjson.dumps(by)
        initial_text = str(initial) if isinstance(initial, int) else orjson.dumps(initial)
        reply = await self.store.run(
            "kv_increment", ns, key, by_text, "1" if isinstance(by, int) else "0",
            initial_text, ttl_ms, *Fence.script_args(fence),
        )
        status = text(reply[0])
        if status == "ok":
            return PutResult(entry_of(reply), int(reply[3]) == int(reply[4]))
        if status == "not_a_number":
            kind = _FIRST_CHAR_KIND.get(text(reply[1]), "a non-number")
            raise Unprocessable(
                f"Key {key!r} holds {kind}, not a number; it cannot be incremented."
            )
        if status == "inexact":
            add_exact(int(reply[1]), by)  # raises the shared refusal
            raise AssertionError("an exact integer sum was refused by the script")
        if status == "float":
            return await self._increment_in_python(ns, key, by, initial, ttl_ms, fence)
        _raise_failure(status, reply, key, fence)
        raise AssertionError("unreachable")

    async def _increment_in_python(
        self, ns: str, key: str, by: int | float, initial: int | float, ttl_ms: int,
        fence: Fence | None,
    ) -> PutResult:
        """A sum involving a double, computed by the shared rule (``add_exact``) and
        written with a compare-and-swap on the revision it was computed from, so its JSON
        text is orjson's, as on every backend."""
        for _ in range(UPDATE_ATTEMPTS):
            current = await self.kv_get(ns, key)
            try:
                start = number_to_increment(
                    key, current.value if current is not None else initial
                )
                value = orjson.dumps(add_exact(start, by))
            except CorkboardError:
                await self.store.check_fence(ns, fence)
                raise
            cas = unchanged_since(current)
            reply = await self.store.run(
                "kv_put", ns, key, value, -1 if current is not None else ttl_ms,
                *cas.script_args(), *Fence.script_args(fence),
            )
            status = text(reply[0])
            if status in ("created", "replaced"):
                return PutResult(written_entry(key, value, reply), status == "created")
            if status == "stale_fence":
                _raise_failure(status, reply, key, fence)
            await asyncio.sleep(0)
        raise BackendUnavailable(
            f"Key {key!r} changed under {UPDATE_ATTEMPTS} consecutive increment attempts; retry."
        )

    async def kv_touch(
        self, ns: str, key: str, ttl_ms: int, *, fence: Fence | None = None
    ) -> KeyEntry:
        if ttl_ms > 0:
            await self.store.register_deadlines(ns)
        reply = await self.store.run("kv_touch", ns, key, ttl_ms, *Fence.script_args(fence))
        status = text(reply[0])
        if status == "absent":
            raise NotFound(f"Key {key!r} does not exist.")
        if status != "ok":
            _raise_failure(status, reply, key, fence)
        return entry_of(reply)

    async def kv_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> KeyEntry | None:
        reply = await self.store.run(
            "kv_delete", ns, key, *condition.script_args(), *Fence.script_args(fence)
        )
        status = text(reply[0])
        if status == "absent":
            return None
        if status != "deleted":
            _raise_failure(status, reply, key, fence, condition)
        return entry_of(reply)

    async def kv_history(self, ns: str, key: str) -> list[KeyEntry]:
        reply = await self.store.run("kv_read", ns, key, "1")
        if reply[0] == b"absent":
            return []
        return [history_entry_of(key, item) for item in reply[9:]]

    async def kv_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> KeyPage:
        reply = await self.store.run(
            "kv_list", ns, after or "", pattern.prefix, lua_pattern(pattern), limit,
            paging.LIST_SCAN_BUDGET, "1",
        )
        items = [entry_of(reply, i) for i in range(2, len(reply), 8)]
        return KeyPage(items, text(reply[1]) or None, int(reply[0]))
