"""Compaction of a namespace's bucket: what keeps a NATS namespace's storage bounded.

A namespace's log is its stream; events at or below ``current - CORKBOARD_EVENT_RETENTION``
are compacted (a resume point behind them gets ``reset``, as on the other engines). The
messages a key no longer needs there are purged by this pass, subject by subject, with
JetStream's purge of a subject below a sequence; it keeps, of each key, its newest
``CORKBOARD_KEY_HISTORY`` messages (its history), and the newest message below the cut
while the key has messages above it (the ``old_value`` of its first event above). A
deleted key's messages below the cut all go.

The bucket's own per-key limit is ``CORKBOARD_EVENT_RETENTION`` messages: it can only
remove a message at or below the cut, so no event above it is ever missing. A pass runs
in the background of a process after every ``interval`` writes it made to a namespace,
scanning at most ``SCAN_BUDGET`` messages from where its previous pass stopped.

The cut is also the byte cut of ``CORKBOARD_EVENT_RETENTION_BYTES`` when that is higher
(retention.py): every ``PASS_WRITES`` writes a process runs a ledger pass, and a
compaction pass too when the byte cut moved ``BYTE_TRIM`` messages past the previous one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from app.backends.nats.names import stream_of
from app.backends.nats.retention import PASS_WRITES, Ledger
from app.backends.nats.store import NatsStore

logger = logging.getLogger("corkboard.backend")

#: Messages one pass reads at most.
SCAN_BUDGET = 10_000
#: Messages the byte cut moves past the previous compaction's end before the next one.
BYTE_TRIM = 100


class Trimmer:
    """Runs the compaction passes of the namespaces this process writes to."""

    def __init__(self, store: NatsStore, *, retention: int, keep: int,
                 ledger: Ledger | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.retention = retention
        self.keep = max(2, keep)
        self.interval = max(10, retention // 10)
        self.writes: dict[str, int] = defaultdict(int)
        self.done: dict[str, int] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def wrote(self, ns: str) -> None:
        """Count a write; start a pass when ``interval`` of them were made."""
        self.writes[ns] += 1
        due = self.writes[ns] >= self.interval
        ledger = self.ledger is not None and self.writes[ns] % PASS_WRITES == 0
        if ns in self.tasks or not (due or ledger):
            return
        if due:
            self.writes[ns] = 0
        task = asyncio.create_task(self._run(ns, due), name=f"corkboard-nats-trim-{ns}")
        self.tasks[ns] = task
        task.add_done_callback(lambda _: self.tasks.pop(ns, None))

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _run(self, ns: str, due: bool) -> None:
        try:
            if self.ledger is not None:
                cut = await self.ledger.advance(ns)
                due = due or cut - self.done.get(ns, 0) >= BYTE_TRIM
            if due:
                await self.trim(ns)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a later pass does it
            logger.warning("nats compaction of %s failed: %s", ns, exc)

    async def trim(self, ns: str) -> int:
        """One pass over namespace ``ns``; the number of subjects purged."""
        stream = stream_of(ns)
        async with self.store.mapped_errors():
            info = await self.store.js.stream_info(stream, subjects_filter=f"$KV.{ns}.>")
        cut = int(info.state.last_seq) - self.retention
        if self.ledger is not None:
            cut = max(cut, await self.ledger.cut(ns))
        start = max(int(info.state.first_seq), self.done.get(ns, 0) + 1)
        if cut < start:
            return 0
        end = min(cut, start + SCAN_BUDGET - 1)
        below: dict[str, list[tuple[int, bool]]] = defaultdict(list)
        seq = start
        while seq <= end:
            msgs, _ = await self.store.batch(ns, {"seq": seq, "batch": min(1000, end - seq + 1)})
            if not msgs:
                break
            for msg in msgs:
                if msg.seq > end:
                    break
                below[msg.subject].append((msg.seq, msg.deleted))
            seq = msgs[-1].seq + 1
        totals = info.state.subjects or {}
        purged = 0
        for subject, kept in below.items():
            above = int(totals.get(subject, len(kept))) - len(kept)
            if above > 0:
                keep = max(self.keep - above, 1)
            else:
                keep = 0 if kept[-1][1] else self.keep
            if len(kept) <= keep:
                continue
            until = kept[len(kept) - keep][0] if keep else end + 1
            async with self.store.mapped_errors():
                await self.store.js.purge_stream(stream, seq=until, subject=subject)
            purged += 1
        self.done[ns] = end
        return purged
