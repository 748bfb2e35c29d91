"""``watch?snapshot=true``: the live keys a filter matches, consistent at one revision."""

from __future__ import annotations

import asyncio

from app.backends.base import Backend, ChangeEvent
from app.errors import BackendUnavailable
from app.event_changes import COMPOUND_TYPES, kv_changes
from app.events.feed import LOG_PAGE
from app.events.filters import EventFilter
from app.events.frames import Frame, snapshot_data, snapshot_frame, snapshot_from_event
from app.syntax import Pattern

#: Attempts at a consistent snapshot before giving up with 503.
SNAPSHOT_ATTEMPTS = 3

#: A key's snapshot entry: the revision it was collected at and its event data.
Entries = dict[str, tuple[int, bytes]]


async def consistent_snapshot(
    backend: Backend, ns: str, flt: EventFilter, page_size: int
) -> tuple[list[Frame], int]:
    """The live keys ``flt`` matches as ``kv.put`` frames, consistent at one revision.

    Listing pages are each atomic at their own revision; the log between the first
    and the last page's revision is replayed onto the collected keys, so the result
    is the state at the last page's revision. Returns the frames and that revision.
    """
    if not flt.wants_keys:
        return [], await backend.current_revision(ns)
    for _ in range(SNAPSHOT_ATTEMPTS):
        found = await _consistent_keys(backend, ns, flt.pattern, page_size)
        if found is not None:
            entries, revision = found
            frames = [snapshot_frame(rev, data) for _, (rev, data) in sorted(entries.items())]
            return frames, revision
    raise BackendUnavailable(
        "The namespace changed faster than a consistent snapshot could be read; retry."
    )


async def _consistent_keys(
    backend: Backend, ns: str, pattern: Pattern, page_size: int
) -> tuple[Entries, int] | None:
    entries: Entries = {}
    first: int | None = None
    after: str | None = None
    while True:
        page = await backend.kv_list(ns, pattern, limit=page_size, after=after)
        if first is None:
            first = page.revision
        last = page.revision
        for entry in page.items:
            entries[entry.key] = (entry.revision, snapshot_data(ns, entry))
        if page.next_cursor is None:
            break
        after = page.next_cursor
        await asyncio.sleep(0)  # let other requests in between pages
    assert first is not None
    position = first
    while position < last:
        batch = await backend.read_events(ns, position, limit=LOG_PAGE)
        if batch.compacted_revision > position or not batch.events:
            return None  # the log no longer covers the pages: start again
        for event in batch.events:
            if event.revision > last:
                break
            position = event.revision
            if event.type in COMPOUND_TYPES:
                for change in kv_changes(event):
                    if pattern.matches(change.key):
                        _replay(entries, change)
            elif event.type.startswith("kv.") and pattern.matches(event.key):
                _replay(entries, event)
        if batch.events[-1].revision >= last:
            break
    return entries, last


def _replay(entries: Entries, event: ChangeEvent) -> None:
    """Apply one logged key change to collected snapshot entries.

    Each listing page already shows its keys at its own revision, so only a change newer
    than what was collected for the key is applied; replayed in order, the last change of
    each key wins, whichever page the key was on.
    """
    held = entries.get(event.key)
    if held is not None and held[0] >= event.revision:
        return
    if event.type == "kv.put":
        entries[event.key] = (event.revision, snapshot_from_event(event))
    else:
        entries.pop(event.key, None)
