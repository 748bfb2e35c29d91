"""The memory lock engine's bookkeeping beside the holders: each lock's slot while it is
needed, and each lock's token counter.

A slot (TTL, ticket, pending entries, waiters) exists only while something needs it: a
holder (in ``Namespace.locks``), pending entries or a waiter in line. ``tidy`` drops it
(and its name from ``names``) once none is left, so acquiring and releasing ever new
names does not grow the engine's memory by a slot each.

The token counter must outlive the slot: a fencing token is never given twice for a name
(a holder that paused past its TTL still carries its old token, and ``fence_holds``
compares tokens only). It is one int per name ever acquired, in ``tokens``, as Redis keeps
``locktok:`` and NATS a lock record's ``last_token``: the cost docs/locks.md states.

Invariant (why dropping a slot never loses a hand-off nor admits two holders): a slot is
dropped only when the lock has no holder, no pending entry and no waiter in its line. A
waiter handed the lock holds it (ticket in the slot, holder in the table) until it claims
it or the claim window passes, so its slot stays; a waiter still in line keeps it too. A
waiter that was dropped from the line (handed a lock since expired, timed out, cancelled)
and finds a new slot compares its ticket, a random 128-bit string, with the new slot's
"" or another waiter's: no match, so it claims nothing and simply tries again as a new
acquire would, against the holder in the table, which is the only one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.backends.memory.store import MemoryStore


@dataclass(slots=True)
class Waiter:
    ticket: str
    owner: str
    ttl_ms: int
    granted: asyncio.Future[None]


@dataclass(slots=True)
class LockSlot:
    """What a lock keeps beside its holder while it has a holder, pending or waiters."""

    ttl_ms: int = 0  # the holder's TTL, reused by a refresh without one
    ticket: str = ""  # the waiter's ticket when the holder was handed the lock
    pending: list[bytes] = field(default_factory=list)
    #: In line, first come first: a list, not a deque (an empty deque is 760 bytes, an
    #: empty list 56, and every held lock has a slot). Taking the head moves the rest:
    #: 8 KB at the default CORKBOARD_LOCK_MAX_WAITERS of 1,000, 0.8 MB at its bound of
    #: 100,000 (tens of microseconds, once per hand-over).
    waiters: list[Waiter] = field(default_factory=list)

    def waited(self) -> bool:
        """Whether a waiter is still waiting in line (not answered nor gone)."""
        return any(not w.granted.done() for w in self.waiters)


class LockSlots:
    """Slots by (ns, scope, name), each scope's slotted names, and the token counters."""

    store: MemoryStore

    def __init__(self) -> None:
        self.slots: dict[tuple[str, str, str], LockSlot] = {}
        # The names of each scope's slots, so a session finds its own without a scan.
        self.names: dict[tuple[str, str], set[str]] = {}
        # The last token given for each name of each scope; never dropped (see above).
        self.tokens: dict[tuple[str, str], dict[str, int]] = {}

    def slot(self, ns: str, scope: str, name: str) -> LockSlot:
        """The lock's slot, made if it has none: whoever makes one gives it a holder,
        pending entries or a waiter, or calls ``tidy`` before awaiting or returning."""
        slot = self.slots.get((ns, scope, name))
        if slot is None:
            slot = self.slots[(ns, scope, name)] = LockSlot()
            self.names.setdefault((ns, scope), set()).add(name)
        return slot

    def tidy(self, ns: str, scope: str, name: str) -> None:
        """Drop the lock's slot if nothing needs it: no holder, pending entry or waiter."""
        slot = self.slots.get((ns, scope, name))
        if slot is None or slot.pending or slot.waiters:
            return
        if (scope, name) in self.store.view(ns).locks:
            return
        del self.slots[(ns, scope, name)]
        names = self.names[(ns, scope)]
        names.discard(name)
        if not names:
            del self.names[(ns, scope)]

    def scope_slots(self, ns: str, scope: str) -> list[tuple[str, LockSlot]]:
        """The slots of ``scope``'s locks that have one, by name."""
        return [(name, self.slots[(ns, scope, name)])
                for name in sorted(self.names.get((ns, scope), ()))]

    def free_with_waiters(self, ns: str, scope: str) -> list[str]:
        """The names of ``scope``'s free locks with a waiter still waiting, in order."""
        held = self.store.view(ns).locks
        return [name for name, slot in self.scope_slots(ns, scope)
                if (scope, name) not in held and slot.waited()]

    def last_token(self, ns: str, scope: str, name: str) -> int:
        """The last token given for the lock (0: none yet)."""
        return self.tokens.get((ns, scope), {}).get(name, 0)

    def raise_token(self, ns: str, scope: str, name: str, token: int) -> None:
        """Make ``token`` the lock's last token (never lowered)."""
        counters = self.tokens.setdefault((ns, scope), {})
        counters[name] = max(counters.get(name, 0), token)
