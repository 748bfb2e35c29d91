"""Retries of a request no stream answered yet.

A publish (or direct get) that no stream takes is not stored: the bucket was deleted
under us, or, on a cluster, its stream was just made (by this process or another) and
its replicas are still electing a leader. That takes tens of milliseconds on a quiet
machine and seconds on a loaded one, so the retries are bounded by time, not by count:
the backend's timeout for one call (``CORKBOARD_BACKEND_TIMEOUT_SECONDS``), after which
the caller answers 503 as for any call that takes too long.
"""

from __future__ import annotations

import asyncio

from app.errors import BackendUnavailable

#: The pause before the second attempt; each next one 0.05 s longer, up to MAX_PAUSE.
FIRST_PAUSE = 0.05
MAX_PAUSE = 0.25


class Attempts:
    """``while await attempts.next():`` runs the first attempt at once and each next one
    after a pause (0.05 s, 0.10 s, ... at most 0.25 s), and none that would begin more
    than ``timeout`` seconds after the first. The loop's body returns (or breaks) when
    an attempt succeeds. (A class, not an async generator: one left early would be
    closed by a task of its own.)"""

    __slots__ = ("_count", "_deadline")

    def __init__(self, timeout: float) -> None:
        self._deadline = asyncio.get_running_loop().time() + timeout
        self._count = 0

    async def next(self) -> bool:
        count = self._count
        self._count = count + 1
        if count == 0:
            return True
        pause = min(FIRST_PAUSE * count, MAX_PAUSE)
        if asyncio.get_running_loop().time() + pause > self._deadline:
            return False
        await asyncio.sleep(pause)
        return True


def no_stream_took(bucket: str) -> BackendUnavailable:
    """The 503 once the attempts are over and no stream took a write to ``bucket``."""
    return BackendUnavailable(
        f"No stream took the write to the NATS bucket {bucket!r} (none made, none with "
        "a leader, or none taking its subjects) within the backend's timeout."
    )
