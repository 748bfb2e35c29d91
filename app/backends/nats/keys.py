"""The NATS key store: a key is its subject in the namespace's bucket; every write is
one publish with ``Nats-Expected-Last-Subject-Sequence`` set to the sequence the write
was decided on (its checks, its value, its metadata), retried from a fresh read when
another writer came between. A due TTL is expired first, the same way (a ``kv.expire``
delete marker), so a read never shows an expired key.

A fenced write (``Fence-Lock``/``Fence-Token``) reads the namespace's last sequence
first, then the key and the lock's record (locks.py); both must be at or below that
sequence (else it reads again), the fence must hold in that record, and the write is
published with ``Nats-Expected-Last-Sequence`` = that sequence as well: JetStream stores
it only if nothing in the namespace (so neither the lock nor the key) changed since the
check, which makes the fence check and the write one step. Its cost: a fenced write
starts again whenever any key of the namespace changed meanwhile. A fenced touch is the
exception (its override lives in ``_corkboard``): its fence is checked just before, not
atomically (docs/nats.md).

A write on a lease (``?lease=``) is an atomic batch (batch.py) of the lease's record
again (compare-and-swap on the one read live: leasestate.attach) and the key's message
carrying ``Cb-Lease: <id>``; a PATCH or increment keeps the key's lease, a plain PUT detaches it.

Writes (and touches) of one key by one process take turns (an asyncio lock per key,
dropped when no write holds or awaits it: no more than the writes in progress): only
writers in different processes race each other's compare-and-swap, so a hot key costs
one attempt per write in a process instead of one per concurrent writer (32 concurrent
PUTs of one key: see bench/README.md).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

import orjson

from app.backends.nats.batch import Out, check, publish_batch
from app.backends.nats.entries import (
    derive,
    drop_override,
    entry_from,
    lease_of,
    lower_deadline,
    mark_ended,
    meta_after,
    override_subject,
    parse_override,
    torn,
    touched,
    with_override,
)
from app.backends.nats.leasestate import attach_live
from app.backends.nats.names import (
    SYSTEM_BUCKET,
    Meta,
    fence_subject,
    key_of_subject,
    subject_of,
    token_of,
)
from app.backends.nats.quotas import NatsQuotas
from app.backends.nats.sessionstate import fence_holds
from app.backends.nats.store import Msg, NatsStore
from app.backends.paging import page_sorted
from app.backends.parts.keys import KeyStore
from app.domain.conditions import KEY, NO_CONDITION, Condition
from app.domain.fence import Fence
from app.domain.keys import KeyEntry, KeyPage, PutResult, ValueUpdate, apply_update
from app.domain.numbers import add_exact, number_to_increment
from app.errors import BackendUnavailable, NotFound
from app.syntax import Pattern, now_ms

#: Compare-and-swap attempts of one write racing other writers of its key.
WRITE_ATTEMPTS = 200

#: Reads of a listing that met an atomic batch being stored (entries.torn).
TORN_READS = 50

#: What a write decides from the key's live entry and the time: the value and expiry to
#: store (None: store nothing, answer the entry as it is).
Decision = Callable[[KeyEntry | None, int], tuple[bytes, int | None] | None]


class NatsKeys(KeyStore):
    """The key store on a ``NatsStore``."""

    def __init__(self, store: NatsStore, quotas: NatsQuotas | None = None) -> None:
        self.store = store
        #: Reserved before a write, settled after it (quotas.py); the default quotas
        #: without one.
        self.quotas = quotas or NatsQuotas(store, key_history=store.key_history)
        #: The turn of each key being written by this process (see the module).
        self._turns: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    # -- internals, also used by the sweeper -----------------------------------------------

    async def newest(self, ns: str, key: str) -> tuple[Msg | None, KeyEntry | None]:
        """The key's newest message and the entry it holds (expired or not)."""
        subject = subject_of(ns, key)
        msg, override = await asyncio.gather(
            self.store.last(ns, subject),
            self.store.last(SYSTEM_BUCKET, override_subject(ns, key)),
        )
        return msg, await entry_from(self.store, ns, key, msg, parse_override(override))

    async def expire(self, ns: str, key: str, msg: Msg, entry: KeyEntry, now: int) -> Msg | None:
        """Replace the expired ``entry`` (at ``msg``) by a ``kv.expire`` delete marker,
        unless the key changed since; the marker, or None."""
        meta = Meta(entry.created_revision, entry.version, entry.created_at, now, 0, msg.seq,
                    "expire")
        headers = {"KV-Operation": "DEL", "Cb-Meta": meta.header()}
        seq = await self.store.publish(ns, msg.subject, b"", headers, msg.seq)
        if seq is None:
            return None
        if touched(msg, entry):
            await drop_override(self.store, ns, key, seq)
        await self.quotas.settle(ns, self.quotas.removal(msg))
        return Msg(msg.subject, seq, b"", headers)

    async def live(self, ns: str, key: str, now: int) -> tuple[Msg | None, KeyEntry | None]:
        """The newest message and the live entry, a due expiry done first."""
        while True:
            msg, entry = await self.newest(ns, key)
            if msg is None or entry is None or entry.expires_at is None:
                return msg, entry
            if entry.expires_at > now:
                return msg, entry
            marker = await self.expire(ns, key, msg, entry, now)
            if marker is not None:
                return marker, None

    async def write(
        self, ns: str, key: str, decide: Decision, op: str = "put",
        fence: Fence | None = None, *, lease: str | None = None, keep_lease: bool = False,
    ) -> tuple[KeyEntry | None, KeyEntry | None]:
        """Decide and store, compare-and-swap on the subject's sequence (and, with a
        fence, on the namespace's: see the module); on ``lease`` (or, ``keep_lease``,
        the key's own), in one batch with the lease's record (see the module); (the entry
        before, the entry written or kept). Writes of one key by this process take
        turns (see the module)."""
        async with self._turn(ns, key):
            return await self._write(ns, key, decide, op, fence, lease, keep_lease)

    def _turn(self, ns: str, key: str) -> asyncio.Lock:
        """The key's turn among this process's writes (and touches) of it."""
        turn = self._turns.get((ns, key))
        if turn is None:
            turn = self._turns[(ns, key)] = asyncio.Lock()
        return turn

    async def _write(
        self, ns: str, key: str, decide: Decision, op: str, fence: Fence | None,
        lease: str | None, keep_lease: bool,
    ) -> tuple[KeyEntry | None, KeyEntry | None]:
        subject = subject_of(ns, key)
        for _ in range(WRITE_ATTEMPTS):
            now = now_ms()
            upto = await self.store.last_seq(ns) if fence is not None else None
            msg, before = await self.live(ns, key, now)
            attached = lease
            if attached is None and keep_lease and before is not None:
                attached = lease_of(msg)
            guards: list[Out] = []
            if fence is not None and upto is not None:
                fenced = fence_subject(ns, fence.scope, fence.name)
                lock = await self.store.last(ns, fenced)
                guards.append(check(ns, fenced, lock.seq if lock is not None else 0))
                if any(m is not None and m.seq > upto for m in (msg, lock)):
                    continue  # changed after the namespace's sequence was read
                if not fence_holds(lock, fence, now):
                    raise fence.stale()
            if lease is not None:
                guards.insert(0, await attach_live(self.store, ns, lease, now))
            decision = decide(before, now)
            if decision is None:
                return before, before
            value, expires_at = decision
            previous = msg.seq if msg is not None else 0
            meta = meta_after(before, previous, now, expires_at, op)
            headers = {"Cb-Meta": meta.header()}
            if op == "delete":
                headers["KV-Operation"] = "DEL"
            elif attached is not None:
                headers["Cb-Lease"] = attached
            ended = mark_ended(msg, before, headers)  # a touched revision's expiry
            change = self.quotas.change(msg, value, op, headers)  # adds Cb-Kept
            if lease is not None:  # the fence, if any, checked on the lock's subject
                seq = await self.quotas.charged(ns, change, publish_batch(
                    self.store, ns, [*guards, Out(subject, value, headers, previous)]
                ))
            else:
                seq = await self.quotas.charged(ns, change, self.store.publish(
                    ns, subject, value, headers, previous, expected_stream=upto
                ))
            if seq is None:
                await asyncio.sleep(0)
                continue
            if ended:
                await drop_override(self.store, ns, key, seq)
            if expires_at:
                await lower_deadline(self.store, ns, expires_at)
            if op == "delete":
                return before, None
            created = meta.created_revision or seq
            return before, KeyEntry(
                key, value, seq, created, meta.version, meta.created_at, now, expires_at
            )
        raise BackendUnavailable(
            f"Key {key!r} changed under {WRITE_ATTEMPTS} consecutive write attempts; retry."
        )

    async def _put(
        self, ns: str, key: str, decide: Decision, fence: Fence | None,
        lease: str | None = None, keep_lease: bool = False,
    ) -> PutResult:
        before, after = await self.write(
            ns, key, decide, fence=fence, lease=lease, keep_lease=keep_lease
        )
        assert after is not None
        return PutResult(after, before is None)

    # -- keys ------------------------------------------------------------------------------

    async def kv_get(self, ns: str, key: str, revision: int | None = None) -> KeyEntry | None:
        if revision is not None:  # the history is empty unless the key is live
            return next(
                (e for e in await self.kv_history(ns, key) if e.revision <= revision), None
            )
        _, entry = await self.newest(ns, key)
        if entry is None or (entry.expires_at is not None and entry.expires_at <= now_ms()):
            return None
        return entry

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
        def decide(before: KeyEntry | None, now: int) -> tuple[bytes, int | None]:
            condition.check(before, KEY)
            return value, now + ttl_ms if ttl_ms and lease is None else None

        return await self._put(ns, key, decide, fence, lease)

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
        def decide(before: KeyEntry | None, now: int) -> tuple[bytes, int | None]:
            condition.check(before, KEY)
            if before is None and initial is None:
                raise NotFound(f"Key {key!r} does not exist and no initial value was given.")
            base = before.value if before is not None else initial
            assert base is not None
            new_value = apply_update(update, base, before)
            if lease is not None:
                return new_value, None
            if ttl_ms is None:
                return new_value, before.expires_at if before is not None else None
            return new_value, now + ttl_ms if ttl_ms else None

        # Without a lease or TTL, PATCH keeps the key's lifetime, its lease included.
        return await self._put(ns, key, decide, fence, lease,
                               keep_lease=lease is None and ttl_ms is None)

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
        def decide(before: KeyEntry | None, now: int) -> tuple[bytes, int | None]:
            start = number_to_increment(key, before.value if before is not None else initial)
            value = orjson.dumps(add_exact(start, by))
            if before is not None:
                return value, before.expires_at
            return value, now + ttl_ms if ttl_ms else None

        return await self._put(ns, key, decide, fence, keep_lease=True)  # keeps its lease

    async def kv_touch(
        self, ns: str, key: str, ttl_ms: int, *, fence: Fence | None = None
    ) -> KeyEntry:
        async with self._turn(ns, key):
            return await self._touch(ns, key, ttl_ms, fence)

    async def _touch(self, ns: str, key: str, ttl_ms: int, fence: Fence | None) -> KeyEntry:
        for _ in range(WRITE_ATTEMPTS):
            now = now_ms()
            if fence is not None and not fence_holds(
                await self.store.last(ns, fence_subject(ns, fence.scope, fence.name)), fence, now
            ):
                raise fence.stale()  # checked before the touch, not atomically with it
            msg, entry = await self.live(ns, key, now)
            if msg is None or entry is None:
                raise NotFound(f"Key {key!r} does not exist.")
            expires_at = now + ttl_ms if ttl_ms else 0
            await self.store.publish(
                SYSTEM_BUCKET, override_subject(ns, key), f"{msg.seq} {expires_at}".encode(),
                {}, None,
            )
            # The override applies to the message it names: if the key was written
            # meanwhile, the touch did nothing; do it again on what is there now.
            still = await self.store.last(ns, msg.subject)
            if still is not None and still.seq == msg.seq:
                if expires_at:
                    await lower_deadline(self.store, ns, expires_at)
                return with_override(entry, msg, (msg.seq, expires_at))
        raise BackendUnavailable(
            f"Key {key!r} changed under {WRITE_ATTEMPTS} consecutive touch attempts; retry."
        )

    async def kv_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Condition = NO_CONDITION,
        fence: Fence | None = None,
    ) -> KeyEntry | None:
        def decide(before: KeyEntry | None, now: int) -> tuple[bytes, int | None] | None:
            condition.check(before, KEY)
            return None if before is None else (b"", None)

        before, _ = await self.write(ns, key, decide, "delete", fence)
        return before

    async def kv_history(self, ns: str, key: str) -> list[KeyEntry]:
        msgs, override = await asyncio.gather(
            self.store.history(ns, subject_of(ns, key)),
            self.store.last(SYSTEM_BUCKET, override_subject(ns, key)),
        )
        if not msgs:
            return []
        entries = derive(key, msgs)
        newest = entries[-1]
        if newest is None:
            return []
        newest = with_override(newest, msgs[-1], parse_override(override))
        if newest.expires_at is not None and newest.expires_at <= now_ms():
            return []
        kept = [newest]
        for entry in reversed(entries[:-1]):
            if entry is None or len(kept) == self.store.key_history:
                break
            kept.append(entry)
        return kept

    async def kv_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> KeyPage:
        # Read before the messages: the revision of a page listed through a consumer (past
        # 1,024 keys) is a lower bound, so replaying the events after it is complete.
        for attempt in range(TORN_READS):
            before = await self.store.last_seq(ns)
            (msgs, upto), (overrides, _) = await asyncio.gather(
                self.store.multi_last(ns, f"$KV.{ns}.>"),
                self.store.multi_last(SYSTEM_BUCKET, f"$KV.{SYSTEM_BUCKET}.ttl.{ns}.>"),
            )
            revision = upto or before
            # Never part of a transaction: read again while its batch is being stored.
            if not upto or not torn(msgs, upto) or attempt == TORN_READS - 1:
                break
            await asyncio.sleep(0.001)  # the server's own store: nothing to await
        by_token = {m.subject.split(".", 4)[4]: parse_override(m) for m in overrides}
        live = await self.live_entries(ns, msgs, by_token, now_ms())
        order = sorted(live)
        items, cursor = page_sorted(order, pattern, after, limit, live.get)
        return KeyPage(items, cursor, revision)

    async def live_entries(
        self, ns: str, msgs: list[Msg], overrides: dict[str, tuple[int, int] | None], now: int,
        *, expired: bool = False,
    ) -> dict[str, KeyEntry]:
        """The entries the newest messages ``msgs`` hold, by key: the live ones, or with
        ``expired`` the ones whose deadline has passed."""
        out: dict[str, KeyEntry] = {}
        waits: list[Awaitable[KeyEntry | None]] = []
        for msg in msgs:
            key = key_of_subject(ns, msg.subject)
            if key is not None and not msg.deleted:
                waits.append(entry_from(self.store, ns, key, msg, overrides.get(token_of(key))))
        for entry in await asyncio.gather(*waits):
            if entry is None:
                continue
            due = entry.expires_at is not None and entry.expires_at <= now
            if due == expired:
                out[entry.key] = entry
        return out
