"""The change feed: one reader per namespace in use fans each event out, encoded once,
to every matching watcher's bounded queue; subscriptions resume from any revision.

How a subscription reaches live delivery without a gap or a duplicate:

1. *catch-up*: read the backend's change log from the resume point, page by page, until
   a page comes back short (the log's head is near);
2. *attach*: join the namespace's ``Feed`` (starting its reader when it is the first
   watcher). Attaching does not await, so everything up to the feed's ``position`` has
   already been fanned out and everything after it will reach this watcher's queue;
3. *backfill*: read the log from where catch-up stopped up to that position;
4. *live*: take frames from the queue, skipping any revision already delivered. A
   stream parked on its queue with a sink (``Subscription.write_to``) is not woken:
   the feed's next pass writes its frames for it (``Feed.deliver``).

Each event's SSE frame is built once, by the feed's reader, and the same ``bytes`` go to
every watcher whose filter matches. A watcher that lets its queue fill up is detached
and told, by a last ``overflow`` event, to resume from the last id it received: memory
stays bounded and nothing is dropped silently. When the log no longer holds a resume
point the subscription says so with a ``reset`` event.

The parts, each importing only those before it: ``frames`` (SSE frames and control
events), ``filters`` (``EventFilter``), ``feed`` (``Watcher``, ``Feed``: the reader),
``snapshot`` (``watch?snapshot=true``), ``subscription`` (one client's view) and ``hub``
(``Hub``: feeds and subscriptions of the process).
"""

from __future__ import annotations

from app.events.feed import LOG_PAGE, Feed, Watcher
from app.events.filters import EVENT_PREFIXES, EventFilter
from app.events.frames import (
    EVENT,
    OVERFLOW,
    PROGRESS,
    RESET,
    SHUTDOWN,
    SNAPSHOT,
    SYNCED,
    Frame,
    sse_frame,
    synced_frame,
)
from app.events.hub import SHUTDOWN_GRACE_SECONDS, Hub
from app.events.subscription import MAX_BATCH, Subscription

__all__ = [
    "EVENT",
    "EVENT_PREFIXES",
    "LOG_PAGE",
    "MAX_BATCH",
    "OVERFLOW",
    "PROGRESS",
    "RESET",
    "SHUTDOWN",
    "SHUTDOWN_GRACE_SECONDS",
    "SNAPSHOT",
    "SYNCED",
    "EventFilter",
    "Feed",
    "Frame",
    "Hub",
    "Subscription",
    "Watcher",
    "sse_frame",
    "synced_frame",
]
