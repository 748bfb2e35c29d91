"""The artifact store at run time: started beside the backend, with the collector that
removes the blobs no artifact references any more (replaced, deleted or expired versions
after their grace, and uploads whose server died), as the state backend lists them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from app.artifacts import artifacts_url, store_from_url
from app.artifacts.base import BlobStore
from app.backends.base import Backend, raise_if_cancelling
from app.errors import BackendUnavailable
from app.settings import Settings

logger = logging.getLogger("corkboard.artifacts")

#: Blobs claimed per backend call.
BATCH = 100
#: A claimed blob whose removal is not confirmed within this is handed out again.
LEASE_MS = 60_000


async def collect_garbage(backend: Backend, store: BlobStore) -> int:
    """Remove every blob that is due for removal now; returns how many."""
    total = 0
    while True:
        claimed = await backend.artifact_garbage(limit=BATCH, lease_ms=LEASE_MS)
        done: dict[str, list[str]] = defaultdict(list)
        for ns, blob in claimed:
            await store.delete(blob)
            done[ns].append(blob)
        for ns, blobs in done.items():
            await backend.artifact_garbage_done(ns, blobs)
        total += len(claimed)
        if len(claimed) < BATCH:
            return total


async def run_collector(backend: Backend, store: BlobStore, interval: float) -> None:
    """Collect every ``interval`` seconds until cancelled, surviving errors."""
    while True:
        await asyncio.sleep(interval)
        try:
            await collect_garbage(backend, store)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a flaky store must not end collection for good
            logger.warning("artifact collection failed: %s", exc)
        raise_if_cancelling()


@asynccontextmanager
async def running_store(settings: Settings, backend: Backend) -> AsyncIterator[BlobStore]:
    """Start the artifact store for ``settings`` beside a started ``backend``, with its
    collector; stop both on exit."""
    store = store_from_url(artifacts_url(settings), settings, backend)
    try:
        await store.start()
    except BackendUnavailable as exc:
        logger.error("corkboard cannot start its artifact store: %s", exc.detail)
        await store.close()
        raise
    try:
        if not backend.info.persistence:
            # Nothing can reference blobs of an earlier run: the state that did is gone.
            purged = await store.purge()
            if purged:
                logger.info("removed %d artifact blobs left by an earlier run", purged)
        elif store.name == "memory":
            logger.warning(
                "artifact bytes in memory:// do not survive a restart (nor are they shared "
                "between replicas), while their metadata in the %s backend does; use "
                "file:// or redis:// for artifacts", backend.info.name,
            )
        collector = asyncio.create_task(
            run_collector(backend, store, settings.artifact_gc_interval_seconds),
            name="corkboard-artifact-collector",
        )
        try:
            yield store
        finally:
            collector.cancel()
            with suppress(asyncio.CancelledError):
                await collector
    finally:
        await store.close()
