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

The counter is the record ``quota.<ns>`` = ``"<keys> <bytes>"`` in ``_corkboard``,
changed by compare-and-swap on its sequence. JetStream cannot make it atomic with the
key's message (another stream), so a write that grows the namespace *reserves* first
(checks the quota and adds its growth in one compare-and-swap: 507 ``quota_exceeded``
and nothing written past it), publishes, and gives the reservation back when the
publish did not happen; a write that frees room settles after its message is stored.
Concurrent writers therefore never take the counter past a quota. The counter can only
be too high, never too low, for Corkboard's writes: a process that dies between a
reservation and its publish (or between a freeing write and its settlement) leaves its
bytes counted (see docs/nats.md).
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from app.backends.nats.names import SYSTEM_BUCKET
from app.backends.nats.store import Msg, NatsStore
from app.domain.bounds import quota_exceeded
from app.errors import BackendUnavailable

#: The header of a key message with its kept revisions' sizes, newest first.
KEPT = "Cb-Kept"
#: Compare-and-swap attempts on a namespace's counter, racing other writers.
ATTEMPTS = 200


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

    def __bool__(self) -> bool:
        return bool(self.keys or self.bytes)


class NatsQuotas:
    """The namespaces' counters on a ``NatsStore``."""

    def __init__(self, store: NatsStore, *, max_keys: int, max_bytes: int,
                 key_history: int) -> None:
        self.store = store
        self.max_keys = max_keys
        self.max_bytes = max_bytes
        self.key_history = max(1, key_history)

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

    # -- the counter ---------------------------------------------------------------------

    def subject(self, ns: str) -> str:
        return f"$KV.{SYSTEM_BUCKET}.quota.{ns}"

    async def used(self, ns: str) -> Usage:
        """The namespace's counter as it is."""
        return parse(await self.store.last(SYSTEM_BUCKET, self.subject(ns)))

    async def reserve(self, ns: str, change: Usage) -> None:
        """Check the quotas for ``change``'s growth and count it, in one step; 507 when
        the namespace would pass a quota (nothing counted)."""
        await self.add(ns, change.growth, check=True)

    async def unreserve(self, ns: str, change: Usage) -> None:
        """Give back a reservation whose write did not happen."""
        await self.add(ns, -change.growth)

    async def settle(self, ns: str, change: Usage) -> None:
        """Count what a stored write freed."""
        await self.add(ns, change.room)

    async def charged(
        self, ns: str, change: Usage, publish: Coroutine[Any, Any, int | None]
    ) -> int | None:
        """Run ``publish``, a key message's publish (its sequence, or None when its
        compare-and-swap failed), with ``change`` reserved before and settled after
        (given back when nothing was stored); not run at all past a quota."""
        try:
            await self.reserve(ns, change)
        except BaseException:
            publish.close()
            raise
        try:
            seq = await publish
        except BaseException:
            await self.unreserve(ns, change)  # (503 if NATS is gone: then it stays counted)
            raise
        if seq is None:
            await self.unreserve(ns, change)
        else:
            await self.settle(ns, change)
        return seq

    async def add(self, ns: str, change: Usage, *, check: bool = False) -> None:
        if not change:
            return
        subject = self.subject(ns)
        for _ in range(ATTEMPTS):
            record = await self.store.last(SYSTEM_BUCKET, subject)
            used = parse(record)
            keys, nbytes = used.keys + change.keys, used.bytes + change.bytes
            if check and change.keys > 0 and not change.adopted and keys > self.max_keys:
                raise quota_exceeded(ns, "keys", self.max_keys)
            if check and change.bytes > 0 and nbytes > self.max_bytes:
                raise quota_exceeded(ns, "bytes", self.max_bytes)
            data = f"{max(keys, 0)} {max(nbytes, 0)}".encode()
            expected = record.seq if record is not None else 0
            if await self.store.publish(SYSTEM_BUCKET, subject, data, {}, expected) is not None:
                return
        raise BackendUnavailable(
            f"The quota counter of namespace {ns!r} changed under {ATTEMPTS} consecutive "
            "attempts; retry."
        )


def parse(record: Msg | None) -> Usage:
    if record is None or record.deleted:
        return Usage()
    parts = record.data.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return Usage()
    return Usage(int(parts[0]), int(parts[1]))
