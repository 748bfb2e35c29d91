"""Namespace quotas on NATS (``CORKBOARD_NAMESPACE_MAX_KEYS`` and ``_MAX_BYTES``, API.md
section 9): a counter per namespace, reserved before a write and settled after it.

What is counted, as on the other engines: the live keys, and the bytes of every kept
revision of their values (a key's newest ``CORKBOARD_KEY_HISTORY`` revisions since it
was last created). Each key message Corkboard writes carries the sizes of its key's kept
revisions, newest first, in a ``Cb-Kept`` header (``"12 10 9"``), so a write knows what
it adds and what falls out of the history from the message it replaces, without reading
the history. A key counts while its newest message carries ``Cb-Kept``: a key a NATS
client wrote (or one written before quotas existed) counts from its first write through
Corkboard.

The counters are JetStream counters (``Nats-Incr``, nats-server 2.12+): the subjects
``<ns>.keys`` and ``<ns>.bytes`` of the bucket ``_corkboard_quota``, a stream that
allows message counters, so each add is one atomic step of the server's, however many
processes add at once (no compare-and-swap to lose). JetStream cannot make a counter
atomic with the key's message (another stream), so a write that grows the namespace
*reserves* first: it adds its growth, and when the new total passes the quota takes it
back and answers 507 ``quota_exceeded`` (nothing written); then it publishes, and gives
the reservation back when the publish did not happen. A write that frees room settles
after its message is stored. A transaction reserves what its puts add as if it deleted
nothing (its deletes make no room for its puts, as on the other engines), and counts
what the deletes free after. Writers together therefore never take a counter past its
quota; near it, racing writers that would each fit alone may all be refused. The
counters can only be too high, never too low, for Corkboard's writes: a process that
dies between a reservation and its publish (or between a freeing write and its
settlement) leaves its bytes counted (see docs/nats.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError, NoStreamResponseError

from app.backends.nats.names import stream_of
from app.backends.nats.retry import Attempts
from app.backends.nats.store import Msg, NatsStore
from app.domain.bounds import Bounds, quota_exceeded
from app.errors import BackendUnavailable, NotSupportedByBackend

#: The header of a key message with its kept revisions' sizes, newest first.
KEPT = "Cb-Kept"
#: The bucket of the counters (a stream with JetStream's counters, nats-server 2.12+):
#: ``<ns>.keys`` and ``<ns>.bytes``, which NATS clients can read.
QUOTA_BUCKET = "_corkboard_quota"
DEFAULTS = Bounds()


def kept_sizes(msg: Msg | None) -> list[int] | None:
    """The kept revisions' sizes a key message carries; None for a message that does
    not count (a marker, or one written without ``Cb-Kept``)."""
    if msg is None or msg.deleted or KEPT not in msg.headers:
        return None
    parts = msg.headers[KEPT].split()
    return [int(p) for p in parts if p.isdigit()]


@dataclass(frozen=True, slots=True)
class Usage:
    """A change of a namespace's usage: live keys and bytes (negative: freed).
    ``adopted``: the key existed uncounted (a NATS client wrote it), so counting it
    adds no key to the namespace and is not refused by the key quota."""

    keys: int = 0
    bytes: int = 0
    adopted: bool = False

    @property
    def growth(self) -> Usage:
        return Usage(max(self.keys, 0), max(self.bytes, 0), self.adopted)

    @property
    def room(self) -> Usage:
        """What the change frees, as a (negative) usage."""
        return Usage(min(self.keys, 0), min(self.bytes, 0))

    def __neg__(self) -> Usage:
        return Usage(-self.keys, -self.bytes)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.keys - other.keys, self.bytes - other.bytes)

    def __bool__(self) -> bool:
        return bool(self.keys or self.bytes)


class NatsQuotas:
    """The namespaces' counters on a ``NatsStore``."""

    def __init__(self, store: NatsStore, *, max_keys: int = DEFAULTS.max_keys,
                 max_bytes: int = DEFAULTS.max_bytes, key_history: int) -> None:
        self.store = store
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.key_history = max(1, key_history)
        self.created = False

    # -- what a write changes ------------------------------------------------------------

    def change(self, msg: Msg | None, value: bytes, op: str,
               headers: dict[str, str]) -> Usage:
        """The usage change of replacing the key's newest message ``msg`` by a ``put``
        of ``value`` or a ``delete``; a put's ``Cb-Kept`` header is added to ``headers``."""
        before = kept_sizes(msg)
        if op == "delete":
            return self.removal(msg)
        kept = [len(value), *(before or [])][: self.key_history]
        headers[KEPT] = " ".join(map(str, kept))
        adopted = before is None and msg is not None and not msg.deleted
        return Usage(0 if before is not None else 1, sum(kept) - sum(before or []), adopted)

    def removal(self, msg: Msg | None) -> Usage:
        """The usage change of deleting (or expiring) the key whose newest is ``msg``."""
        before = kept_sizes(msg)
        return Usage() if before is None else Usage(-1, -sum(before))

    # -- the counters --------------------------------------------------------------------

    async def ready(self) -> None:
        """Create the counters' stream unless it exists (once per process)."""
        if self.created:
            return
        self.store.buckets.add(QUOTA_BUCKET)  # (not bound as a key bucket)
        config = StreamConfig(
            name=stream_of(QUOTA_BUCKET), subjects=[f"$KV.{QUOTA_BUCKET}.>"],
            allow_msg_counter=True, allow_direct=True, max_msgs_per_subject=1,
            num_replicas=self.store.replicas, storage=StorageType.FILE,
        )
        async with self.store.mapped_errors():
            try:
                await self.store.js.add_stream(config)
            except BadRequestError:  # made meanwhile by another process
                pass
        self.created = True

    def subject(self, ns: str, what: str) -> str:
        return f"$KV.{QUOTA_BUCKET}.{ns}.{what}"

    async def used(self, ns: str) -> Usage:
        """The namespace's counters as they are."""
        await self.ready()
        keys, nbytes = await asyncio.gather(*(
            self.store.last(QUOTA_BUCKET, self.subject(ns, what)) for what in ("keys", "bytes")
        ))
        return Usage(value_of(keys), value_of(nbytes))

    async def incr(self, ns: str, what: str, by: int) -> int:
        """Add ``by`` to a counter (one atomic step of JetStream's); its new value."""
        await self.ready()
        async with self.store.mapped_errors():
            retries = Attempts(self.store.timeout)
            while await retries.next():
                try:
                    ack = await self.store.js.publish(
                        self.subject(ns, what), b"", timeout=self.store.timeout,
                        headers={"Nats-Incr": f"{by:+d}"},
                    )
                except NoStreamResponseError:
                    # Not counted: the stream was deleted under us (make it again), or,
                    # on a cluster, it was just made and its replicas are still electing
                    # a leader (retry.py waits, as for store.publish).
                    self.created = False
                    await self.ready()
                    continue
                if ack.val is None:  # stored as a plain message: no counters there
                    raise NotSupportedByBackend(
                        "Namespace quotas on NATS need JetStream counters (nats-server "
                        "2.12 or later); this server stored the count as a plain message."
                    )
                return int(ack.val)
        raise BackendUnavailable("The NATS quota counters' stream could not be created.")

    async def reserve(self, ns: str, change: Usage) -> None:
        """Count ``change``'s growth; 507 (given back: nothing counted) when a counter
        then passes its quota. Each counter is one atomic add, so writers together never
        take it past its quota; near the quota, racing writers that would each fit
        alone may all be refused (each saw the others' reservations). A new key adds
        to both counters at once (one round trip, not two)."""
        grow = change.growth
        adds = {what: by for what, by in (("keys", grow.keys), ("bytes", grow.bytes)) if by}
        if not adds:
            return
        totals = dict(zip(adds, await asyncio.gather(
            *(self.incr(ns, what, by) for what, by in adds.items())), strict=True))
        if totals.get("keys", 0) > self.max_keys and not grow.adopted:
            await self.add(ns, -grow)
            raise quota_exceeded(ns, "keys", self.max_keys)
        if totals.get("bytes", 0) > self.max_bytes:
            await self.add(ns, -grow)
            raise quota_exceeded(ns, "bytes", self.max_bytes)

    async def charged(
        self, ns: str, change: Usage, publish: Coroutine[Any, Any, int | None],
        *, checked: Usage | None = None,
    ) -> int | None:
        """Run ``publish``, a key message's publish (its sequence, or None when its
        compare-and-swap failed), with ``change`` reserved before and settled after
        (given back when nothing was stored); not run at all past a quota.
        ``checked``: what the quota check reserves when it is not ``change`` (a
        transaction's puts without its deletes: ``Tally.checked``); the rest of
        ``change`` is counted after the publish."""
        reserved = (change if checked is None else checked).growth
        try:
            await self.reserve(ns, reserved)
        except BaseException:
            publish.close()
            raise
        try:
            seq = await publish
        except BaseException:
            await self.add(ns, -reserved)  # (if NATS is gone, it stays counted)
            raise
        await self.add(ns, -reserved if seq is None else change - reserved)
        return seq

    async def add(self, ns: str, change: Usage) -> None:
        """Add ``change`` to the counters (both at once)."""
        await asyncio.gather(*(self.incr(ns, what, by) for what, by in
                               (("keys", change.keys), ("bytes", change.bytes)) if by))

    async def settle(self, ns: str, change: Usage) -> None:
        """Count what a stored write freed."""
        await self.add(ns, change.room)


def value_of(counter: Msg | None) -> int:
    """A counter message's value (``{"val": "12"}``); 0 for none."""
    if counter is None:
        return 0
    try:
        return int(orjson.loads(counter.data).get("val", 0))
    except (orjson.JSONDecodeError, AttributeError, ValueError):
        return 0


class Tally:
    """The usage change of one batch of key writes (a transaction, a pattern delete, a
    lease's end): each key's kept sizes followed through its writes in order, from its
    newest message before the batch; a put's ``Cb-Kept`` is added to its headers.
    Followed as well without the deletes: what the quota check counts (``checked``)."""

    def __init__(self, quotas: NatsQuotas) -> None:
        self.quotas = quotas
        self.first: dict[str, list[int] | None] = {}
        self.now: dict[str, list[int] | None] = {}
        self.puts: dict[str, list[int] | None] = {}  # as ``now``, the deletes left out
        self.uncounted: set[str] = set()  # keys that exist without Cb-Kept (adopted)

    def _start(self, subject: str, msg: Msg | None) -> None:
        if subject not in self.now:
            self.first[subject] = self.now[subject] = self.puts[subject] = kept_sizes(msg)
            if self.first[subject] is None and msg is not None and not msg.deleted:
                self.uncounted.add(subject)

    def put(self, subject: str, msg: Msg | None, value: bytes,
            headers: dict[str, str]) -> None:
        self._start(subject, msg)
        history = self.quotas.key_history
        kept = [len(value), *(self.now[subject] or [])][:history]
        headers[KEPT] = " ".join(map(str, kept))
        self.now[subject] = kept
        self.puts[subject] = [len(value), *(self.puts[subject] or [])][:history]

    def delete(self, subject: str, msg: Msg | None) -> None:
        self._start(subject, msg)
        self.now[subject] = None

    def change(self) -> Usage:
        return self._change(self.now)

    def checked(self) -> Usage:
        """What the quota check counts: the puts as if the batch deleted nothing (as
        on the other engines, a transaction's deletes make no room for its puts)."""
        return self._change(self.puts)

    def _change(self, after: dict[str, list[int] | None]) -> Usage:
        keys = nbytes = new = 0
        for subject, kept in after.items():
            first = self.first[subject]
            keys += (kept is not None) - (first is not None)
            new += kept is not None and first is None and subject not in self.uncounted
            nbytes += sum(kept or []) - sum(first or [])
        return Usage(keys, nbytes, adopted=new == 0)
