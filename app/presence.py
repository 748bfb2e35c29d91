"""Presence (API.md section 11): a watch stream opened with ``lease=`` keeps that lease
alive while it is open. This process sends the keepalives, every third of the lease's
TTL; when the stream closes (the client went away) or the process dies, they stop and
the lease lapses after its TTL, taking its keys with it.

A keeper stops on its flag, not on the cancel alone: a cancel that lands inside a
backend call can be swallowed by the client library (nats-py's publish turns one into
an error of its own, or finishes the publish as if none came; redis-py can do either),
and a loop that survives backend errors would then keep the lease alive for good.
"""

from __future__ import annotations

import asyncio
import logging

from app.backends.parts.txn import LeaseStore
from app.errors import CorkboardError, LeaseNotFound

logger = logging.getLogger("corkboard.presence")

#: Keepalives per TTL: one may be lost (a slow backend) before the lease lapses.
KEEPALIVES_PER_TTL = 3


class LeaseKeeper:
    """Keeps one lease alive until ``stop``; started once its lease is known to live."""

    def __init__(self, backend: LeaseStore, ns: str, lease_id: str, ttl_ms: int) -> None:
        self.backend = backend
        self.ns = ns
        self.lease_id = lease_id
        self.interval = max(0.01, ttl_ms / 1000 / KEEPALIVES_PER_TTL)
        self.task: asyncio.Task[None] | None = None
        self.stopped = False

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"corkboard-presence-{self.lease_id}"
        )

    def stop(self) -> None:
        self.stopped = True
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        while not self.stopped:
            await asyncio.sleep(self.interval)
            if self.stopped:
                return
            try:
                info = await self.backend.lease_keepalive(self.ns, self.lease_id)
            except LeaseNotFound:
                logger.info("presence lease %s ended; keepalives stop", self.lease_id)
                return
            except CorkboardError as exc:  # e.g. a backend outage: try again next time
                if not self.stopped:
                    logger.warning(
                        "presence keepalive of %s failed: %s", self.lease_id, exc.detail
                    )
                continue
            self.interval = max(0.01, info.ttl_ms / 1000 / KEEPALIVES_PER_TTL)


async def keep_alive(backend: LeaseStore, ns: str, lease_id: str) -> LeaseKeeper:
    """A running keeper for a live lease; LeaseNotFound (404) when it is not live."""
    info = await backend.lease_keepalive(ns, lease_id)
    keeper = LeaseKeeper(backend, ns, lease_id, info.ttl_ms)
    keeper.start()
    return keeper
