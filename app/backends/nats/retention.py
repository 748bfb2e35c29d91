"""``CORKBOARD_EVENT_RETENTION_BYTES`` on NATS: the byte bound of a namespace's log.

A namespace's log is its stream, so the events it keeps are its newest messages; the
bound makes the events at or below a *byte cut* compacted (a resume point behind it gets
``reset``), and compaction (trim.py) purges their messages as it does below the count
cut (``current - CORKBOARD_EVENT_RETENTION``). The cut is kept in a ledger per
namespace, the record ``bytes.<ns>`` of ``_corkboard``: the sequence it has counted up
to, the bytes of every message up to there (a running total), marks of that total at
recent sequences, and the cut, the lowest marked sequence whose messages above add up
to at most the bound (so the kept events are within it; the newest one is always kept).
An event's size on NATS is its message's stored size (subject, headers and value),
not the field sizes the other engines count: close, not equal.

A ledger pass reads only the messages written since the previous one (at most
``SCAN_BUDGET``; each message is read once), so its work per write is O(1) amortized.
Trimmer runs one every ``PASS_WRITES`` writes a process makes to a namespace, so the
log may pass the bound by what that many writes add until the next pass (its reads
compute the cut the ledger holds); the ledger record is replaced by compare-and-swap,
and a pass that loses the race to another process's leaves it to that one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from app.backends.nats.names import SYSTEM_BUCKET
from app.backends.nats.store import Msg, NatsStore

#: Writes of a process to a namespace between two ledger passes.
PASS_WRITES = 10
#: Messages a ledger pass reads at most (the next pass goes on from there).
SCAN_BUDGET = 10_000
#: Marks a ledger keeps (evenly thinned beyond that: the cut's granularity).
MAX_MARKS = 256


@dataclass(slots=True)
class LedgerState:
    """A ledger record: counted up to ``upto``, ``total`` bytes up to there, the cut, and
    the marks ``[sequence, total up to it]``."""

    upto: int = 0
    total: int = 0
    cut: int = 0
    marks: list[list[int]] = field(default_factory=list)


def size_of(msg: Msg) -> int:
    """A message's size in the ledger: subject, header names and values, and data."""
    return len(msg.subject) + len(msg.data) + sum(
        len(k) + len(v) for k, v in msg.headers.items() if not k.startswith("Nats-")
    )


class Ledger:
    """The byte cuts of namespaces' logs on a ``NatsStore``."""

    def __init__(self, store: NatsStore, *, limit: int) -> None:
        self.store = store
        self.limit = limit

    def subject(self, ns: str) -> str:
        return f"$KV.{SYSTEM_BUCKET}.bytes.{ns}"

    async def read(self, ns: str) -> tuple[Msg | None, LedgerState]:
        record = await self.store.last(SYSTEM_BUCKET, self.subject(ns))
        state = LedgerState()
        if record is not None and not record.deleted:
            try:
                found = orjson.loads(record.data)
                state = LedgerState(int(found["upto"]), int(found["total"]), int(found["cut"]),
                                    [[int(s), int(p)] for s, p in found["marks"]])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                pass  # not a ledger of ours: counted again from the start
        return record, state

    async def cut(self, ns: str) -> int:
        """The namespace's byte cut: its events at or below it are compacted."""
        _, state = await self.read(ns)
        return state.cut

    async def advance(self, ns: str) -> int:
        """Count the messages written since the last pass and move the cut; the cut."""
        record, state = await self.read(ns)
        upto, total, cut, marks = state.upto, state.total, state.cut, state.marks
        end = await self.store.last_seq(ns)
        last = min(end, upto + SCAN_BUDGET)
        seq = upto + 1
        while seq <= last:
            msgs, _ = await self.store.batch(ns, {"seq": seq, "batch": min(1000, last - seq + 1)})
            if not msgs:
                break
            # Past a gap (a purged message) the batch goes on beyond ``last``: not counted
            # now, the next pass counts from ``last``.
            counted = [m for m in msgs if m.seq <= last]
            for msg in counted:
                total += size_of(msg)
                marks.append([msg.seq, total])
            seq = last + 1 if len(counted) < len(msgs) else msgs[-1].seq + 1
        if seq == upto + 1:
            return cut
        upto = seq - 1
        base = next((prefix for seq, prefix in marks if seq == cut), 0)  # total at the cut
        for mark_seq, prefix in marks if total - base > self.limit else ():
            if total - prefix <= self.limit:  # the lowest mark leaving at most the bound
                cut = max(cut, min(mark_seq, upto - 1))
                break
        marks = [m for m in marks if m[0] >= cut]
        if len(marks) > MAX_MARKS:
            step = len(marks) / MAX_MARKS
            marks = [marks[int(i * step)] for i in range(MAX_MARKS - 1)] + [marks[-1]]
        data = orjson.dumps({"upto": upto, "total": total, "cut": cut, "marks": marks})
        expected = record.seq if record is not None else 0
        await self.store.publish(SYSTEM_BUCKET, self.subject(ns), data, {}, expected)
        return cut
