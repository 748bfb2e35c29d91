"""Transactions and pattern deletes on NATS (API.md section 10), as JetStream atomic
batches (batch.py, compound.py).

A transaction reads what it needs (each key's newest message, a due expiry done first
as on the other engines, with its own event; the fence's lock; the compared locks; the
leases its puts attach to), plans it (app/txn.py, the code every engine runs), and
publishes one atomic batch: a check message for every subject it read and does not
write (``Nats-Expected-Last-Subject-Sequence`` for that subject: the sequence read),
one message per written key (its own compare-and-swap, ``Cb-Txn`` marking it a part),
and the commit message (``_cbt``) that is the ``txn`` event. JetStream stores all of it
at consecutive sequences, or nothing when any subject moved since the read; then the
transaction is planned again from a fresh read (at most ``TXN_ATTEMPTS`` times, then
503). Its revision is the commit's sequence. A transaction that writes nothing stores
nothing: it reads at one stream sequence (every message it read at or below it) and
answers that revision.

A pattern delete is the same batch: every live matching key's delete marker, checked on
its sequence as listed, and the commit. JetStream holds at most ``max_msgs`` messages
in one batch (1,000 unless the server's configuration raises it; Corkboard sends at
most ``?max_batch=``), so on NATS one pattern delete removes at most
``pattern_keys(max_batch)`` keys: min(10,000, max_batch - 2) (more: 409
``too_many_keys``, nothing deleted), and a transaction writes at most max_batch
messages, its checks and commit included.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.backends.nats.batch import DEFAULT_MAX_BATCH, Out, check, publish_batch
from app.backends.nats.compound import with_commit
from app.backends.nats.entries import (
    drop_override,
    lease_of,
    lower_deadline,
    mark_ended,
    meta_after,
    parse_override,
    torn,
)
from app.backends.nats.keys import NatsKeys
from app.backends.nats.leasestate import attach, live_lease
from app.backends.nats.names import (
    SYSTEM_BUCKET,
    fence_subject,
    key_of_subject,
    lease_subject,
    subject_of,
)
from app.backends.nats.quotas import Tally
from app.backends.nats.sessionstate import fence_holds
from app.backends.nats.store import Msg, NatsStore
from app.backends.parts.txn import TxnStore
from app.domain.fence import Fence
from app.domain.keys import KeyEntry
from app.domain.leases import MAX_PATTERN_DELETE, PatternDelete, TxnOutcome
from app.errors import BackendUnavailable, TooManyKeys
from app.syntax import Pattern, now_ms
from app.txn import Limits, Plan, Txn, plan

#: Attempts of a transaction whose subjects other writers keep changing.
TXN_ATTEMPTS = 200


def pattern_keys(max_batch: int) -> int:
    """The most keys one pattern delete removes on NATS: API.md's 10,000, or one batch
    of ``max_batch`` messages less its fence check and its commit message."""
    return min(MAX_PATTERN_DELETE, max_batch - 2)


def _too_many(what: str, count: int, max_batch: int) -> TooManyKeys:
    return TooManyKeys(
        f"{what} needs {count} messages in one atomic batch; this deployment sends at most "
        f"{max_batch} at once to NATS JetStream (?max_batch=, docs/nats.md). Nothing was "
        "written: split it."
    )


class NatsTxn(TxnStore):
    """The transaction engine on a ``NatsStore``, with the key store's reads; its
    batches hold at most ``max_batch`` messages."""

    def __init__(
        self, store: NatsStore, keys: NatsKeys, *, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        self.store = store
        self.keys = keys
        self.max_batch = max_batch

    async def _fence(self, ns: str, fence: Fence | None, now: int) -> Msg | None:
        """The fence's lock message, checked to hold; None without a fence."""
        if fence is None:
            return None
        lock = await self.store.last(ns, fence_subject(ns, fence.scope, fence.name))
        if not fence_holds(lock, fence, now):
            raise fence.stale()
        return lock

    async def txn(
        self, ns: str, txn: Txn, limits: Limits, *, fence: Fence | None = None
    ) -> TxnOutcome:
        ops = (*txn.success, *txn.failure)
        keys = list(dict.fromkeys([*txn.read_keys(), *(op.key for op in ops)]))
        for _ in range(TXN_ATTEMPTS):
            now = now_ms()
            upto = await self.store.last_seq(ns)
            fence_msg = await self._fence(ns, fence, now)
            read = await asyncio.gather(*(self.keys.live(ns, key, now) for key in keys))
            msgs = {key: msg for key, (msg, _) in zip(keys, read, strict=True)}
            entries = {key: entry for key, (_, entry) in zip(keys, read, strict=True)}
            locks = await asyncio.gather(*(
                self.store.last(ns, fence_subject(ns, c.scope, c.name))
                for c in txn.lock_compares))
            held = [fence_holds(m, Fence(c.name, c.token, c.scope), now)
                    for c, m in zip(txn.lock_compares, locks, strict=True)]
            p = plan(txn, entries, held, limits)
            ids = list(dict.fromkeys(s.lease for s in p.steps if s.lease is not None))
            leases = dict(zip(ids, await asyncio.gather(
                *(self.store.last(ns, lease_subject(ns, i)) for i in ids)), strict=True))
            for lease_id, lease_msg in leases.items():  # the first one not live: 404
                live_lease(lease_msg, lease_id, now)
            # Keys the batch writes (a delete of an absent key writes nothing: checked).
            written = {s.key for s in p.steps if s.kind == "put"
                       or (s.kind == "delete" and entries.get(s.key) is not None)}
            if not written:
                got = [*msgs.values(), *locks]
                if any(m is not None and m.seq > upto for m in got) or torn(got, upto):
                    await asyncio.sleep(0)
                    continue  # read across a change: read again at one sequence
                return TxnOutcome(p.succeeded, upto, _results(p, entries, {}, upto, now))
            checked = {} if fence is None else {
                fence_subject(ns, fence.scope, fence.name): fence_msg}
            for c, lock in zip(txn.lock_compares, locks, strict=True):
                checked.setdefault(fence_subject(ns, c.scope, c.name), lock)
            outcome = await self._apply(ns, p, now, msgs, entries, written, checked, leases)
            if outcome is not None:
                return outcome
            await asyncio.sleep(0)
        raise BackendUnavailable(
            f"The transaction's keys changed under {TXN_ATTEMPTS} consecutive attempts; retry."
        )

    async def _apply(
        self, ns: str, p: Plan, now: int, msgs: dict[str, Msg | None],
        entries: dict[str, KeyEntry | None], written: set[str],
        checked: dict[str, Msg | None], leases: dict[str, Msg | None],
    ) -> TxnOutcome | None:
        """Publish the plan's batch; its outcome, or None when something moved.
        ``written``: the keys it writes; ``checked``: the fence's and the compared locks'
        records by subject (a session lock's is its session's record)."""
        guards: dict[str, Out] = {}

        def guard(subject: str, msg: Msg | None) -> None:
            guards.setdefault(subject, check(ns, subject, msg.seq if msg is not None else 0))

        for key, msg in msgs.items():
            if key not in written:
                guard(subject_of(ns, key), msg)
        for subject, msg in checked.items():
            guard(subject, msg)
        for msg in leases.values():
            assert msg is not None
            guards[msg.subject] = attach(msg)  # the record again (leasestate.attach)
        parts: list[Out] = []
        stored: dict[str, tuple[Any, ...]] = {}
        tally, ended = Tally(self.keys.quotas), []  # quotas.py; entries.py (Cb-Ended)
        for step in p.steps:
            msg, before = msgs.get(step.key), entries.get(step.key)
            if step.kind == "get" or (step.kind == "delete" and before is None):
                continue
            previous = msg.seq if msg is not None else 0
            subject = subject_of(ns, step.key)
            first = subject not in tally.now
            if step.kind == "delete":
                meta = meta_after(before, previous, now, None, "delete")
                headers = {"Cb-Meta": meta.header(), "KV-Operation": "DEL"}
                if first and mark_ended(msg, before, headers):
                    ended.append(step.key)
                tally.delete(subject, msg)
                parts.append(Out(subject, b"", headers, previous))
                continue
            if step.keep:
                expires_at = before.expires_at if before is not None else None
                lease = lease_of(msg) if before is not None else None
            else:
                expires_at = now + step.ttl_ms if step.ttl_ms else None
                lease = step.lease
            meta = meta_after(before, previous, now, expires_at)
            headers = {"Cb-Meta": meta.header()}
            if lease is not None:
                headers["Cb-Lease"] = lease
            if first and mark_ended(msg, before, headers):
                ended.append(step.key)
            tally.put(subject, msg, step.value, headers)
            parts.append(Out(subject, step.value, headers, previous))
            stored[step.key] = (meta, expires_at)
        batch = with_commit(ns, "txn", "", now, parts, guards=list(guards.values()))
        if len(batch) > self.max_batch:
            raise _too_many("The transaction", len(batch), self.max_batch)
        revision = await self.keys.quotas.charged(
            ns, tally.change(), publish_batch(self.store, ns, batch), checked=tally.checked()
        )
        if revision is None:
            return None
        for key in ended:
            await drop_override(self.store, ns, key, revision)
        deadlines = [e for _, e in stored.values() if e]
        if deadlines:
            await lower_deadline(self.store, ns, min(deadlines))
        return TxnOutcome(p.succeeded, revision, _results(p, entries, stored, revision, now))

    async def kv_delete_pattern(
        self, ns: str, pattern: Pattern, *, fence: Fence | None = None
    ) -> PatternDelete:
        for _ in range(TXN_ATTEMPTS):
            now = now_ms()
            fence_msg = await self._fence(ns, fence, now)
            before = await self.store.last_seq(ns)
            (msgs, upto), (overrides, _) = await asyncio.gather(
                self.store.multi_last(ns, f"$KV.{ns}.>"),
                self.store.multi_last(SYSTEM_BUCKET, f"$KV.{SYSTEM_BUCKET}.ttl.{ns}.>"),
            )
            by_token = {m.subject.split(".", 4)[4]: parse_override(m) for m in overrides}
            matching = [m for m in msgs if (key := key_of_subject(ns, m.subject)) is not None
                        and pattern.matches(key) and not m.deleted]
            # A key past its deadline is left to the sweeper, as on the other engines.
            live = await self.keys.live_entries(ns, matching, by_token, now)
            if len(live) > MAX_PATTERN_DELETE:
                raise TooManyKeys(
                    f"More than {MAX_PATTERN_DELETE} keys match {pattern.text!r}; one call "
                    "deletes at most that many. Nothing was deleted: narrow the pattern."
                )
            if len(live) > pattern_keys(self.max_batch):
                checks = 1 if fence is not None else 0
                raise _too_many(f"Deleting the {len(live)} keys matching {pattern.text!r}",
                                len(live) + checks + 1, self.max_batch)
            if not live:
                return PatternDelete([], upto or before)
            by_subject = {m.subject: m for m in matching}
            keys = sorted(live)
            parts = []
            tally = Tally(self.keys.quotas)
            for key in keys:
                msg = by_subject[subject_of(ns, key)]
                meta = meta_after(live[key], msg.seq, now, None, "delete")
                tally.delete(msg.subject, msg)
                parts.append(Out(msg.subject, b"", {"Cb-Meta": meta.header(),
                                                    "KV-Operation": "DEL"}, msg.seq))
            guards = []
            if fence is not None:
                guards.append(check(ns, fence_subject(ns, fence.scope, fence.name),
                                    fence_msg.seq if fence_msg is not None else 0))
            revision = await self.keys.quotas.charged(ns, tally.change(), publish_batch(
                self.store, ns, with_commit(ns, "txn", "", now, parts, guards=guards)
            ))
            if revision is not None:
                return PatternDelete(keys, revision)
            await asyncio.sleep(0)
        raise BackendUnavailable(
            f"The keys matching {pattern.text!r} changed under {TXN_ATTEMPTS} consecutive "
            "attempts; retry."
        )



def _results(
    p: Plan, entries: dict[str, KeyEntry | None], stored: dict[str, tuple[Any, ...]],
    revision: int, now: int,
) -> list[KeyEntry | bool | None]:
    """One result per step, in order: a get sees the steps before it."""
    current = dict(entries)
    results: list[KeyEntry | bool | None] = []
    for step in p.steps:
        if step.kind == "get":
            results.append(current.get(step.key))
        elif step.kind == "delete":
            results.append(current.get(step.key) is not None)
            current[step.key] = None
        else:
            meta, expires_at = stored[step.key]
            current[step.key] = KeyEntry(
                step.key, step.value, revision, meta.created_revision or revision,
                meta.version, meta.created_at, now, expires_at,
            )
            results.append(current[step.key])
    return results
