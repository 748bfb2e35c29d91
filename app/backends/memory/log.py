"""The in-memory change log: each namespace's revision and bounded list of events (the
appending is ``MemoryStore.emit``), long-poll waits, and the sweeper's pass."""

from __future__ import annotations

import asyncio
import bisect

from app.backends.memory.store import EVENT_REVISION, MemoryStore, Namespace
from app.backends.parts.log import ChangeLog
from app.domain.events import ChangeEvent, EventBatch
from app.syntax import now_ms


class MemoryLog(ChangeLog):
    """The change log on a ``MemoryStore``."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def current_revision(self, ns: str) -> int:
        return self.store.view(ns).revision

    async def read_events(
        self, ns: str, after: int, *, limit: int = 1000, timeout: float = 0.0
    ) -> EventBatch:
        st = self.store.view(ns)
        if after >= st.revision and timeout > 0:
            await self._wait_change(ns, st, timeout)
            st = self.store.view(ns)
        events = st.events
        start = bisect.bisect_right(events, after, key=lambda e: e[EVENT_REVISION])
        batch = [ChangeEvent(*events[i]) for i in range(start, min(len(events), start + limit))]
        return EventBatch(batch, st.revision, st.compacted)

    async def _wait_change(self, ns: str, st: Namespace, timeout: float) -> None:
        """Wait up to ``timeout`` for the namespace's next event; for a namespace without
        state, on a waker that exists only while someone waits."""
        if ns in self.store.namespaces:
            if st.changed is None:
                st.changed = asyncio.Event()
            changed = st.changed
        else:
            event, count = self.store.wakers.get(ns, (asyncio.Event(), 0))
            self.store.wakers[ns] = (event, count + 1)
            changed = event
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            waker = self.store.wakers.get(ns)
            if waker is not None and waker[0] is changed:
                if waker[1] <= 1:
                    del self.store.wakers[ns]
                else:
                    self.store.wakers[ns] = (changed, waker[1] - 1)

    async def expire_due(self) -> int:
        return self.store.expire_due(now_ms())
