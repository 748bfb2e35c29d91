"""The Redis change log: a namespace's revision (``cb:{ns}:rev``) and its event stream
(``cb:{ns}:log``); a long poll blocks in XREAD on a connection of its own, the blocking
pool; the sweeper's pass visits the namespaces the deadline index says are due."""

from __future__ import annotations

import logging

from app.backends.parts.log import ChangeLog
from app.backends.redis.nodes import Command
from app.backends.redis.store import NAMESPACES_KEY, RedisStore
from app.backends.redis.sweeper import DEADLINES_KEY
from app.domain.events import EventBatch, event_from_fields
from app.errors import BackendUnavailable

logger = logging.getLogger("corkboard.sweeper")

#: Deadlines one expire_due script handles in a namespace at most.
SWEEP_BATCH = 500


class RedisLog(ChangeLog):
    """The change log on a ``RedisStore``."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store

    async def current_revision(self, ns: str) -> int:
        key = f"cb:{{{ns}}}:rev"
        value = await self.store.call(key, lambda c: c.get(key), write=False)
        return int(value or 0)

    async def read_events(
        self, ns: str, after: int, *, limit: int = 1000, timeout: float = 0.0
    ) -> EventBatch:
        batch = await self._read_events(ns, after, limit)
        if batch.events or timeout <= 0:
            return batch
        log = f"cb:{{{ns}}}:log"
        woke = await self.store.call(
            log, lambda c: c.xread({log: f"{after}-0"}, count=1, block=max(1, int(timeout * 1000))),
            write=False, blocking=True,
        )
        return await self._read_events(ns, after, limit) if woke else batch

    async def _read_events(self, ns: str, after: int, limit: int) -> EventBatch:
        synced = "1" if self.store.nodes.wait_replicas else "0"
        reply = await self.store.run("read_events", ns, after, limit, synced)
        current, first = int(reply[0]), int(reply[1])
        events = [
            event_from_fields(ns, int(reply[i]), reply[i + 1]) for i in range(2, len(reply), 2)
        ]
        compacted = first - 1 if first else current
        return EventBatch(events, current, compacted)

    async def expire_due(self) -> int:
        """Visit the namespaces the deadline index says are due, and a few of the repair
        pass (sweeper.py): the cost follows what is due, not how many exist."""
        async with self.store.mapped_errors():
            seconds, micros = await self.store.nodes.call(
                Command(DEADLINES_KEY, lambda c: c.time(), write=False)
            )
            due = await self.store.deadlines.due(seconds * 1000 + micros // 1000)
            repair = await self.store.deadlines.repair_batch(NAMESPACES_KEY)
        total, failed = 0, 0
        for ns, score in due:
            self.store.deadlines.visits += 1
            swept = await self._sweep(ns)
            if swept is None:
                failed += 1
                continue
            total += swept[0]
            async with self.store.mapped_errors():
                await self.store.deadlines.settle(ns, score, swept[1])
        for ns in repair:
            swept = await self._sweep(ns)
            if swept is None:
                failed += 1
            elif swept[1] > 0:
                total += swept[0]
                async with self.store.mapped_errors():
                    await self.store.deadlines.schedule(ns, swept[1])
        if failed and not total and failed == len(due) + len(repair):
            raise BackendUnavailable(f"expiry deferred in all {failed} due namespaces")
        return total

    async def _sweep(self, ns: str) -> tuple[int, int] | None:
        """(keys expired, the namespace's next deadline in ms or 0) of one expire_due call;
        None when the namespace refused it (its slot is moving, or its node is down): it
        stays due, and the pass goes on with the others."""
        try:
            count, next_ms, _ = await self.store.run("expire_due", ns, SWEEP_BATCH)
        except BackendUnavailable as exc:
            logger.debug("expiry in namespace %r deferred: %s", ns, exc.detail)
            return None
        return int(count), int(next_ms)
