"""The change log: a namespace's revision and its bounded list of events, and the
sweeper that expires what is due (with its events)."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod

from app.domain.events import EventBatch

logger = logging.getLogger("corkboard.backend")


def raise_if_cancelling() -> None:
    """Raise CancelledError if this task was cancelled but a library swallowed it.

    redis-py can absorb a cancel() that lands mid-command (returning normally or raising
    another error); a loop that survives backend errors would then run forever. Every
    such loop calls this once per iteration.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class ChangeLog(ABC):
    """A namespace's revision and its change log (bounded by count and bytes), and the
    sweeper that expires what is due, each expiry with its event."""

    @abstractmethod
    async def current_revision(self, ns: str) -> int:
        """The namespace's latest revision (0 before its first change)."""

    @abstractmethod
    async def read_events(
        self, ns: str, after: int, *, limit: int = 1000, timeout: float = 0.0
    ) -> EventBatch:
        """Events with revision > ``after``, oldest first; wait up to ``timeout`` for one."""

    @abstractmethod
    async def expire_due(self) -> int:
        """Expire everything whose deadline has passed, with its events; returns the count."""

    async def run_sweeper(self, interval: float) -> None:
        """Call ``expire_due`` every ``interval`` seconds until cancelled, surviving errors."""
        while True:
            try:
                await self.expire_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a flaky backend must not end expiry for good
                logger.warning("deadline sweep failed: %s", exc)
            raise_if_cancelling()
            await asyncio.sleep(interval)
