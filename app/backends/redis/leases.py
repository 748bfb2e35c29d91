"""Leases for the Redis backend (API.md section 11): each call is one script
(``lua/lease_*.lua`` on ``lib_txn.lua``); a lease's deadline is a member of the
namespace's deadline set, so any replica's sweeper ends it on time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from app.backends import paging
from app.backends.parts.txn import LeaseStore
from app.backends.redis.store import RedisStore, lua_pattern, text
from app.domain.bounds import quota_exceeded
from app.domain.leases import LeaseDetail, LeaseInfo, LeaseLock, lease_not_found, ttl_json
from app.errors import Conflict

if TYPE_CHECKING:

    from app.syntax import Pattern




def _info(lease_id: str, fields: Sequence[Any], i: int) -> LeaseInfo:
    return LeaseInfo(lease_id, int(fields[i]), int(fields[i + 1]), int(fields[i + 2]))


def _attachments(reply: Sequence[Any], i: int) -> tuple[list[str], list[LeaseLock]]:
    count = int(reply[i])
    keys = [text(k) for k in reply[i + 1 : i + 1 + count]]
    rest = reply[i + 1 + count :]
    locks = [
        LeaseLock(text(rest[j + 1]), text(rest[j]), text(rest[j + 2]), int(rest[j + 3]))
        for j in range(0, len(rest), 4)
    ]
    return keys, locks


class RedisLeases(LeaseStore):
    """The lease engine of RedisBackend (on a ``RedisStore``: its scripts)."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store


    async def lease_grant(self, ns: str, lease_id: str, ttl_ms: int) -> LeaseInfo:
        await self.store.register_deadlines(ns)
        most = self.store.bounds.max_leases
        reply = await self.store.run(
            "lease_grant", ns, lease_id, ttl_ms, ttl_json(ttl_ms), most
        )
        if text(reply[0]) == "exists":
            raise Conflict(f"Lease {lease_id!r} exists and is live.", code="already_exists")
        if text(reply[0]) == "full":
            raise quota_exceeded(ns, "leases", most)
        return _info(lease_id, reply, 1)

    async def lease_keepalive(self, ns: str, lease_id: str) -> LeaseInfo:
        reply = await self.store.run("lease_keepalive", ns, lease_id)
        if text(reply[0]) != "ok":
            raise lease_not_found(lease_id)
        return _info(lease_id, reply, 1)

    async def lease_get(self, ns: str, lease_id: str) -> LeaseDetail | None:
        reply = await self.store.run("lease_get", ns, lease_id)
        if text(reply[0]) != "ok":
            return None
        keys, locks = _attachments(reply, 4)
        return LeaseDetail(_info(lease_id, reply, 1), keys, locks)

    async def lease_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> tuple[list[LeaseInfo], str | None]:

        reply = await self.store.run(
            "lease_list", ns, after or "", pattern.prefix, lua_pattern(pattern), limit,
            paging.LIST_SCAN_BUDGET,
        )
        items = [_info(text(reply[i]), reply, i + 1) for i in range(1, len(reply), 4)]
        # The scan's cursor ('' at the end): a page the scan budget stopped, even an
        # empty one, continues after what it examined.
        return items, text(reply[0]) or None

    async def lease_revoke(self, ns: str, lease_id: str) -> LeaseDetail:
        reply = await self.store.run("lease_revoke", ns, lease_id)
        if text(reply[0]) != "ok":
            raise lease_not_found(lease_id)
        keys, locks = _attachments(reply, 5)
        return LeaseDetail(_info(lease_id, reply, 1), keys, locks, int(reply[4]))
