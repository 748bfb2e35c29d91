"""What a watch stream carries: SSE frames, built once, and the control frames the hub
adds (reset, progress, synced, overflow, shutdown) and the snapshot's ``kv.put`` data.
"""

from __future__ import annotations

from typing import Final

import orjson

from app.backends.base import ChangeEvent, KeyEntry
from app.syntax import iso_ms

EVENT: Final = "event"
RESET: Final = "reset"
PROGRESS: Final = "progress"
SYNCED: Final = "synced"
SNAPSHOT: Final = "snapshot"
OVERFLOW: Final = "overflow"
SHUTDOWN: Final = "shutdown"


def sse_frame(
    revision: int | None,
    event: str | None,
    data: bytes | None,
    *,
    retry_ms: int | None = None,
    comment: str | None = None,
) -> bytes:
    """One Server-Sent Events frame; lines end in LF, a blank line ends the frame."""
    parts: list[bytes] = []
    if comment is not None:
        parts.append(b": " + comment.encode() + b"\n")
    if revision is not None:
        parts.append(b"id: %d\n" % revision)
    if event is not None:
        parts.append(b"event: " + event.encode() + b"\n")
    if data is not None:
        if b"\n" in data or b"\r" in data:  # never from orjson; kept correct regardless
            lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            parts.extend(b"data: " + line + b"\n" for line in lines)
        else:
            parts.append(b"data: " + data + b"\n")
    if retry_ms is not None:
        parts.append(b"retry: %d\n" % retry_ms)
    parts.append(b"\n")
    return b"".join(parts)


class Frame:
    """One item of a stream: its revision, its JSON ``data`` and its SSE bytes.

    Event frames are built once per event and shared by every matching watcher.
    """

    __slots__ = ("data", "kind", "revision", "sse")

    def __init__(self, kind: str, revision: int, data: bytes, sse: bytes) -> None:
        self.kind = kind
        self.revision = revision
        self.data = data
        self.sse = sse

    @classmethod
    def of_event(cls, event: ChangeEvent) -> Frame:
        sse = sse_frame(event.revision, event.type, event.data)
        return cls(EVENT, event.revision, event.data, sse)

    @property
    def is_event(self) -> bool:
        """A change event or a reset: what the long poll returns."""
        return self.kind == EVENT or self.kind == RESET


def _control(kind: str, ns: str, revision: int, *, with_id: bool = True, **fields: object) -> Frame:
    data = orjson.dumps({"type": kind, "ns": ns, "revision": revision, **fields})
    return Frame(kind, revision, data, sse_frame(revision if with_id else None, kind, data))


def reset_frame(ns: str, compacted: int, current: int) -> Frame:
    """The resume point is gone: what is retained starts after ``compacted``; the stream
    continues after ``current`` and the client must resync (e.g. with snapshot=true)."""
    return _control(RESET, ns, current, compacted_revision=compacted, current_revision=current)


def progress_frame(ns: str, revision: int) -> Frame:
    """A quiet stream has seen everything up to ``revision``; its id makes resume cheap."""
    return _control(PROGRESS, ns, revision)


def synced_frame(ns: str, revision: int) -> Frame:
    """The snapshot before it is the state at ``revision``; live events follow it."""
    return _control(SYNCED, ns, revision)


def overflow_frame(ns: str, last: int, queue_size: int, retry_ms: int) -> Frame:
    """The watcher fell more than its queue behind: reconnect with Last-Event-ID ``last``."""
    data = orjson.dumps({
        "type": OVERFLOW, "ns": ns, "revision": last, "last_event_id": last,
        "detail": f"This stream fell more than {queue_size} events behind and was closed; "
                  "reconnect with Last-Event-ID to resume without loss.",
    })
    return Frame(OVERFLOW, last, data, sse_frame(last, OVERFLOW, data, retry_ms=retry_ms))


def shutdown_frame(last: int, retry_ms: int) -> Frame:
    """The server is stopping: a comment, the id to resume from and a reconnect delay."""
    sse = sse_frame(last, None, None, retry_ms=retry_ms, comment="server shutting down")
    return Frame(SHUTDOWN, last, b"", sse)


def snapshot_frame(revision: int, data: bytes) -> Frame:
    """A key of a snapshot (no id: the stream's position is the ``synced`` after them)."""
    return Frame(SNAPSHOT, revision, data, sse_frame(None, "kv.put", data))


def snapshot_data(ns: str, entry: KeyEntry) -> bytes:
    """A live key as a ``kv.put`` event flagged ``snapshot``."""
    return orjson.dumps({
        "revision": entry.revision, "type": "kv.put", "ns": ns, "key": entry.key,
        "at": iso_ms(entry.modified_at), "value": orjson.Fragment(entry.value),
        "old_value": None, "snapshot": True,
    })


def snapshot_from_event(event: ChangeEvent) -> bytes:
    """A logged ``kv.put`` as the snapshot's data of its key."""
    body = orjson.loads(event.data)
    body["old_value"] = None
    body["snapshot"] = True
    return orjson.dumps(body)
