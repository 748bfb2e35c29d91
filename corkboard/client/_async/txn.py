"""Transactions and bulk deletes (API.md section 10): ``txn()`` applies compares then
one branch of ops atomically; ``delete_pattern()`` deletes every matching key at once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from corkboard.client._async.base import AsyncBase
from corkboard.client._protocol import Call, params
from corkboard.client.txn import Compare, Op, documents
from corkboard.client.types import PatternDeleted, TxnResult


class AsyncTxn(AsyncBase):
    async def txn(
        self, compare: Iterable[Compare | Mapping[str, Any]] | None = None,
        success: Iterable[Op | Mapping[str, Any]] | None = None,
        failure: Iterable[Op | Mapping[str, Any]] | None = None,
    ) -> TxnResult:
        """If every compare holds, apply the ``success`` ops, else the ``failure`` ops,
        atomically: all writes take one revision and make one ``txn`` event. Compares
        and ops are built with ``Compare``/``Op`` (or given as dicts). A failed compare is
        not an error (``succeeded`` is False); an op that cannot apply refuses the whole
        transaction with its single-key error (NotFound, RevisionMismatch,
        LeaseNotFound, ...), a malformed one is InvalidRequest; nothing changes then.
        Fenced by a lock held through the client. Never repeated."""
        body = {"compare": documents(compare, "compare"),
                "success": documents(success, "op"),
                "failure": documents(failure, "op")}
        return TxnResult.from_json(await self._json(Call.write("POST", "/v1/txn", body)))

    async def delete_pattern(self, pattern: str) -> PatternDeleted:
        """Delete every key matching ``pattern`` (``*`` matches anything) at one revision
        with one ``txn`` event. More matching keys than the service deletes at once:
        TooManyKeys, nothing deleted. Never repeated (the answer lists what it deleted)."""
        call = Call.write("DELETE", "/v1/kv", params=params(pattern=pattern))
        return PatternDeleted.from_json(await self._json(call))
