"""Transactions and pattern deletes for the in-memory backend (API.md section 10).

Read, plan (app/txn.py) and apply run without an await in between, so nothing can change
under a transaction: its writes take one revision and one ``txn`` event.
"""

from __future__ import annotations

from typing import Any

from app.backends.memory.keys import MemoryKeys
from app.backends.memory.rows import is_due, value_of
from app.backends.memory.store import MemoryStore
from app.backends.parts.txn import TxnStore
from app.domain.fence import Fence
from app.domain.keys import KeyEntry
from app.domain.leases import MAX_PATTERN_DELETE, PatternDelete, TxnOutcome, lease_not_found
from app.errors import TooManyKeys
from app.syntax import Pattern, now_ms
from app.txn import Limits, Plan, Txn, plan


def kv_change(type_: str, key: str, value: bytes | None, old: bytes | None) -> dict[str, Any]:
    """One key change inside a compound event, shaped like a key event's values."""
    return {
        "type": type_,
        "key": key,
        "value": value,
        "old_value": old,
    }


class MemoryTxn(TxnStore):
    """The transaction engine on a ``MemoryStore``, writing through the key store."""

    def __init__(self, store: MemoryStore, keys: MemoryKeys) -> None:
        self.store = store
        self.keys = keys

    async def txn(
        self, ns: str, txn: Txn, limits: Limits, *, fence: Fence | None = None
    ) -> TxnOutcome:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        st = self.store.ns(ns)
        # Keys past their deadline expire first, each with its event, in the order the
        # Redis script visits them: the keys read, then the ops' keys.
        for key in dict.fromkeys([*txn.read_keys(),
                                  *(op.key for op in (*txn.success, *txn.failure))]):
            self.keys.expire_if_due(ns, key, now)
        entries = {key: self.keys.entry(st, key) for key in txn.read_keys()}
        held = [self.store.lock_token_holds(ns, c.scope, c.name, c.token, now)
                for c in txn.lock_compares]
        return self._apply(ns, plan(txn, entries, held, limits), now)

    def _apply(self, ns: str, p: Plan, now: int) -> TxnOutcome:
        st = self.store.ns(ns)
        for step in p.steps:
            if step.lease is not None and self.store.lease(ns, step.lease, now) is None:
                raise lease_not_found(step.lease)
        writes = any(s.kind == "put" or (s.kind == "delete" and s.key in st.keys)
                     for s in p.steps)
        # Quotas as for single writes, for all the puts at once (deletes in the same
        # transaction are not counted as making room).
        dropped = {s.key: self.keys.dropped_bytes(st, s.key)
                   for s in p.steps if s.kind == "put"}
        self.store.check_quota(
            ns, sum(1 for key in dropped if key not in st.keys),
            sum(len(s.value) - dropped[s.key] for s in p.steps if s.kind == "put"),
        )
        revision = st.revision + 1 if writes else st.revision
        results: list[KeyEntry | bool | None] = []
        changes: list[dict[str, Any]] = []
        for step in p.steps:
            old = self.keys.entry(st, step.key)
            if step.kind == "get":
                results.append(old)
            elif step.kind == "delete":
                results.append(old is not None)
                if old is not None:
                    self.keys.remove(st, step.key)
                    changes.append(kv_change("kv.delete", step.key, None, old.value))
            else:
                if step.keep:
                    expires_at = old.expires_at if old is not None else None
                    lease = st.key_leases.get(step.key)
                else:
                    expires_at = now + step.ttl_ms if step.ttl_ms else None
                    lease = step.lease
                st.used_bytes += len(step.value) - dropped[step.key]
                stored = self.keys.store_entry(ns, step.key, step.value, expires_at, now,
                                               revision, lease)
                results.append(stored.entry)
                changes.append(kv_change("kv.put", step.key, step.value,
                                         old.value if old is not None else None))
        if changes:
            self._emit_txn(ns, changes, now)
        return TxnOutcome(p.succeeded, revision, results)

    def _emit_txn(self, ns: str, changes: list[dict[str, Any]], now: int) -> int:
        return self.store.emit(ns, "txn", "", now, with_values=False, extra={"changes": changes})

    async def kv_delete_pattern(
        self, ns: str, pattern: Pattern, *, fence: Fence | None = None
    ) -> PatternDelete:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        st = self.store.ns(ns)
        keys: list[str] = []
        for key in st.order.irange(minimum=pattern.prefix):
            if not key.startswith(pattern.prefix):
                break
            if not pattern.matches(key) or is_due(st.keys[key], now):
                continue  # a key past its deadline is left to the sweeper
            keys.append(key)
            if len(keys) > MAX_PATTERN_DELETE:
                raise TooManyKeys(
                    f"More than {MAX_PATTERN_DELETE} keys match {pattern.text!r}; one call "
                    "deletes at most that many. Nothing was deleted: narrow the pattern."
                )
        if not keys:
            return PatternDelete([], st.revision)
        changes = []
        for key in keys:
            old = value_of(st.keys[key])
            self.keys.remove(st, key)
            changes.append(kv_change("kv.delete", key, None, old))
        return PatternDelete(keys, self._emit_txn(ns, changes, now))
