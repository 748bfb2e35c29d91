"""The artifact index on NATS: each artifact is one record in its namespace's bucket (the
KV key ``_cba.<escaped key>``, names.py), and every change of it is one message there,
published with ``Nats-Expected-Last-Subject-Sequence`` set to the sequence the change
was decided on (another writer came between: decide again from a fresh read), as lock
changes are (locks.py).

A message holds the version's metadata and the event the change is, ``{"artifact":
{key, blob, size, sha256, content_type, created_at, expires_at, grace_ms} | null,
"event": {"type", "at", "old", "reason"}}`` (times epoch ms, ``expires_at`` 0 for none,
``old`` the replaced version's metadata as events show it): the message *is* the
``artifact.put`` / ``artifact.delete`` event at its sequence (``artifact_event``), so a
change and its event never come apart, and the version's revision is the sequence. A
deletion or expiry is a KV delete marker (``KV-Operation: DEL``) carrying its event, so
NATS clients see the artifact gone.

A fenced change checks its fence as a fenced key write does (keys.py): the namespace's
last sequence is read first and the change is published with
``Nats-Expected-Last-Sequence`` too, so nothing in the namespace changed between the
check and the change. A due TTL is expired (a ``artifact.delete`` with reason
``expired``) by whoever meets it first, the sweeper included (log.py).

Blob ids' life cycle (reserved, committed, garbage) lives in rows of ``_corkboard``
(blobrows.py): not in the namespace's stream, so an upload takes no revision.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson

from app.backends.nats.blobrows import BlobRows
from app.backends.nats.entries import lower_deadline
from app.backends.nats.names import (
    ARTIFACT_PREFIX,
    artifact_subject,
    fence_subject,
    is_artifact_subject,
)
from app.backends.nats.sessionstate import fence_holds
from app.backends.nats.store import Msg, NatsStore
from app.backends.paging import page_sorted
from app.backends.parts.artifacts import ArtifactIndex
from app.domain.artifacts import ArtifactMeta, ArtifactPage, ArtifactPut
from app.domain.conditions import ARTIFACT, NO_CONDITION, Condition
from app.domain.events import ChangeEvent, build_event
from app.domain.fence import Fence
from app.errors import BackendUnavailable, RequestTimeout
from app.syntax import Pattern, now_ms

__all__ = ["NatsArtifacts", "artifact_event"]

#: Compare-and-swap attempts of one change racing other writers of the artifact.
WRITE_ATTEMPTS = 200

#: How long a commit has, once it took its reservation, before the collector may judge
#: it dead (at least; the reservation's own deadline when that is later).
COMMIT_WINDOW_MS = 60_000

#: Due rows the collector examines per call, per blob it may claim.
EXAMINED_PER_CLAIM = 4


def _lapsed() -> RequestTimeout:
    return RequestTimeout("The upload took too long; its bytes were discarded.")


def _contended(key: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"Artifact {key!r} changed under {WRITE_ATTEMPTS} consecutive attempts; retry."
    )


def decode(msg: Msg | None) -> ArtifactMeta | None:
    """The version a record's newest message holds (its revision the message's
    sequence), or None (deleted, or not a record)."""
    if msg is None or msg.deleted:
        return None
    try:
        a = orjson.loads(msg.data)["artifact"]
        return ArtifactMeta(
            str(a["key"]), str(a["blob"]), int(a["size"]), str(a["sha256"]),
            str(a["content_type"]), int(a["created_at"]), int(a["expires_at"]) or None,
            msg.seq, int(a["grace_ms"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _stored(meta: ArtifactMeta) -> dict[str, Any]:
    return {"key": meta.key, "blob": meta.blob, "size": meta.size, "sha256": meta.sha256,
            "content_type": meta.content_type, "created_at": meta.created_at,
            "expires_at": meta.expires_at or 0, "grace_ms": meta.grace_ms}


def artifact_event(ns: str, msg: Msg) -> ChangeEvent | None:
    """The ``artifact.*`` event a record's message is (log.py), encoded by
    ``build_event`` as on the other engines; None for anything else."""
    if not is_artifact_subject(ns, msg.subject):
        return None
    try:
        body = orjson.loads(msg.data)
        event = body["event"]
        meta = decode(msg)
        if event["type"] == "artifact.put" and meta is not None:
            return build_event(ns, msg.seq, "artifact.put", meta.key, int(event["at"]),
                               value=meta.as_dict(), old_value=event["old"])
        if event["type"] == "artifact.delete" and event["old"] is not None:
            key = str(event["old"]["key"])
            return build_event(ns, msg.seq, "artifact.delete", key, int(event["at"]),
                               value=None, old_value=event["old"],
                               extra={"reason": str(event["reason"])})
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return None


class NatsArtifacts(ArtifactIndex):
    """The artifact index on a ``NatsStore`` (see the module)."""

    def __init__(self, store: NatsStore) -> None:
        self.store = store
        self.rows = BlobRows(store)

    # -- internals, also used by the sweeper -------------------------------------------

    async def _publish(
        self, ns: str, subject: str, at: Msg | None, body: dict[str, Any], *,
        deleted: bool = False, upto: int | None = None,
    ) -> Msg | None:
        """Store a record message if the artifact is still at ``at`` (and, with
        ``upto``, the namespace at that sequence); the new message, or None."""
        data = orjson.dumps(body)
        headers = {"KV-Operation": "DEL"} if deleted else {}
        seq = await self.store.publish(
            ns, subject, data, headers, at.seq if at is not None else 0, expected_stream=upto
        )
        return None if seq is None else Msg(subject, seq, data, headers)

    async def _remove(
        self, ns: str, msg: Msg, meta: ArtifactMeta, now: int, reason: str,
        upto: int | None = None,
    ) -> Msg | None:
        """Replace the version ``meta`` (at ``msg``) by a delete marker carrying its
        ``artifact.delete`` event; its blob becomes garbage after its grace. The marker,
        or None when the artifact changed meanwhile."""
        due = now + meta.grace_ms
        await self.rows.write(ns, meta.blob, "garbage", due, meta.key)
        event = {"type": "artifact.delete", "at": now, "old": meta.as_dict(), "reason": reason}
        marker = await self._publish(
            ns, msg.subject, msg, {"artifact": None, "event": event}, deleted=True, upto=upto
        )
        if marker is not None:
            await self.rows.write(ns, meta.blob, "garbage", due, meta.key)
        return marker

    async def _live(self, ns: str, key: str, now: int) -> tuple[Msg | None, ArtifactMeta | None]:
        """The record's newest message and live version, a due expiry done first."""
        subject = artifact_subject(ns, key)
        while True:
            msg = await self.store.last(ns, subject)
            meta = decode(msg)
            if msg is None or meta is None or meta.expires_at is None or meta.expires_at > now:
                return msg, meta
            marker = await self._remove(ns, msg, meta, now, "expired")
            if marker is not None:
                return marker, None

    async def _decided(
        self, ns: str, key: str, fence: Fence | None, condition: Condition | None, now: int
    ) -> tuple[Msg | None, ArtifactMeta | None, int | None] | None:
        """The live version, its fence and precondition checked (the fence as keys.py
        does, a session-scoped one in its session's record): (message, version, the
        namespace's sequence to publish at), or None to read again."""
        upto = await self.store.last_seq(ns) if fence is not None else None
        msg, meta = await self._live(ns, key, now)
        if fence is not None and upto is not None:
            lock = await self.store.last(ns, fence_subject(ns, fence.scope, fence.name))
            if any(m is not None and m.seq > upto for m in (msg, lock)):
                return None
            if not fence_holds(lock, fence, now):
                raise fence.stale()
        (condition or NO_CONDITION).check(meta, ARTIFACT)
        return msg, meta, upto

    async def sweep(self, ns: str, msgs: list[Msg], now: int) -> tuple[int, int]:
        """Expire the due artifacts among a namespace's newest messages ``msgs``;
        (how many, the earliest deadline ahead or 0)."""
        count = 0
        deadlines: list[int] = []
        for msg in msgs:
            meta = decode(msg) if is_artifact_subject(ns, msg.subject) else None
            if meta is None or meta.expires_at is None:
                continue
            if meta.expires_at <= now:
                _, live = await self._live(ns, meta.key, now)
                count += live is None
                if live is not None and live.expires_at is not None:
                    deadlines.append(live.expires_at)
            else:
                deadlines.append(meta.expires_at)
        return count, min(deadlines, default=0)

    async def _names(self, ns: str, key: str, blob: str) -> bool:
        """Whether artifact ``key``'s newest record names ``blob``."""
        meta = decode(await self.store.last(ns, artifact_subject(ns, key)))
        return meta is not None and meta.blob == blob

    # -- the index ---------------------------------------------------------------------

    async def artifact_reserve(self, ns: str, blob: str, deadline_ms: int) -> None:
        await self.rows.write(ns, blob, "reserved", deadline_ms)

    async def artifact_discard(self, ns: str, blob: str) -> None:
        await self.rows.remove(ns, blob)

    async def artifact_put(
        self,
        ns: str,
        key: str,
        *,
        blob: str,
        size: int,
        sha256: str,
        content_type: str,
        ttl_ms: int = 0,
        grace_ms: int = 0,
        condition: Condition | None = None,
        fence: Fence | None = None,
    ) -> ArtifactPut:
        subject = artifact_subject(ns, key)
        taken = False
        for _ in range(WRITE_ATTEMPTS):
            now = now_ms()
            found = await self._decided(ns, key, fence, condition, now)
            if found is None:
                continue
            msg, old, upto = found
            if not taken:
                # Take the reservation, so the collector cannot judge it lapsed now.
                row = await self.rows.read(ns, blob)
                if row is None or row.state != "reserved" or row.due <= now:
                    raise _lapsed()
                due = max(row.due, now + COMMIT_WINDOW_MS)
                if not await self.rows.write(ns, blob, "commit", due, key, row.seq):
                    raise _lapsed()
                taken = True
            if old is not None:
                await self.rows.write(ns, old.blob, "garbage", now + old.grace_ms, key)
            meta = ArtifactMeta(key, blob, size, sha256, content_type, now,
                                now + ttl_ms if ttl_ms else None, 0, grace_ms)
            event = {"type": "artifact.put", "at": now,
                     "old": old.as_dict() if old is not None else None}
            stored = await self._publish(
                ns, subject, msg, {"artifact": _stored(meta), "event": event}, upto=upto
            )
            if stored is None:
                await asyncio.sleep(0)
                continue
            if old is not None:
                await self.rows.write(ns, old.blob, "garbage", now + old.grace_ms, key)
            await self.rows.remove(ns, blob)  # live now: no row
            if meta.expires_at is not None:
                await lower_deadline(self.store, ns, meta.expires_at)
            return ArtifactPut(replace(meta, revision=stored.seq), old is None)
        raise _contended(key)

    async def artifact_get(self, ns: str, key: str) -> ArtifactMeta | None:
        meta = decode(await self.store.last(ns, artifact_subject(ns, key)))
        if meta is not None and meta.expires_at is not None and meta.expires_at <= now_ms():
            return None
        return meta

    async def artifact_delete(
        self,
        ns: str,
        key: str,
        *,
        condition: Condition | None = None,
        fence: Fence | None = None,
    ) -> ArtifactMeta | None:
        for _ in range(WRITE_ATTEMPTS):
            now = now_ms()
            found = await self._decided(ns, key, fence, condition, now)
            if found is None:
                continue
            msg, current, upto = found
            if msg is None or current is None:
                return None
            if await self._remove(ns, msg, current, now, "deleted", upto) is not None:
                return current
            await asyncio.sleep(0)
        raise _contended(key)

    async def artifact_list(
        self, ns: str, pattern: Pattern, *, limit: int, after: str | None
    ) -> ArtifactPage:
        before = await self.store.last_seq(ns)
        msgs, upto = await self.store.multi_last(ns, f"$KV.{ns}.{ARTIFACT_PREFIX}>")
        now = now_ms()
        live: dict[str, ArtifactMeta] = {}
        for meta in map(decode, msgs):
            if meta is not None and (meta.expires_at is None or meta.expires_at > now):
                live[meta.key] = meta
        items, cursor = page_sorted(sorted(live), pattern, after, limit, live.get)
        return ArtifactPage(items, cursor, upto or before)

    async def artifact_garbage(self, *, limit: int, lease_ms: int) -> list[tuple[str, str]]:
        now = now_ms()
        claimed: list[tuple[str, str]] = []
        examined = 0
        for row in await self.rows.all():
            if len(claimed) >= limit or examined >= limit * EXAMINED_PER_CLAIM:
                break
            if row.due > now:
                continue
            examined += 1
            if row.state in ("commit", "garbage") and await self._names(ns=row.ns, key=row.key,
                                                                         blob=row.blob):
                # Committed (a live version's bytes), or a change that did not happen:
                # the blob stays, its row goes (unless rewritten meanwhile).
                await self.rows.remove(row.ns, row.blob, row.seq)
                continue
            if await self.rows.write(row.ns, row.blob, "claimed", now + lease_ms, row.key,
                                     row.seq):
                claimed.append((row.ns, row.blob))
        return claimed

    async def artifact_garbage_done(self, ns: str, blobs: list[str]) -> None:
        for blob in blobs:
            await self.rows.remove(ns, blob)
