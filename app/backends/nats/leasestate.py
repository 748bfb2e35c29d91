"""A NATS lease's record: the newest message of the KV key ``_cbe.<escaped id>`` in its
namespace's bucket, ``{"lease": {"id", "ttl_ms", "granted_at", "expires_at"}, "event":
<the lease.granted event of a grant, else null>}`` (times epoch ms). A grant is its
first message (the ``lease.granted`` event, as lock messages are their events), a
keepalive a new message that is no event (as is each write attaching a key or lock to
it: ``attach``), the end of the lease a delete marker inside
the atomic batch that deletes its keys and releases its locks, namespace and session
ones (leases.py).
"""

from __future__ import annotations

from typing import Any

import orjson

from app.backends.nats.batch import Out
from app.backends.nats.names import LEASE_PREFIX, lease_subject
from app.backends.nats.store import Msg, NatsStore
from app.domain.events import ChangeEvent, build_event
from app.domain.leases import LeaseInfo, lease_not_found, ttl_seconds
from app.syntax import iso_ms


def decode_lease(msg: Msg | None) -> LeaseInfo | None:
    """The lease a record message holds (expired or not); None for none."""
    if msg is None or msg.deleted:
        return None
    try:
        body = orjson.loads(msg.data)["lease"]
        return LeaseInfo(str(body["id"]), int(body["ttl_ms"]), int(body["granted_at"]),
                         int(body["expires_at"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def live_lease(msg: Msg | None, lease_id: str, now: int) -> LeaseInfo:
    """The lease ``lease_id`` if its record ``msg`` says it is live; else 404."""
    lease = decode_lease(msg)
    if lease is None or lease.id != lease_id or lease.expires_at <= now:
        raise lease_not_found(lease_id)
    return lease


def encode_lease(lease: LeaseInfo, *, granted: bool) -> bytes:
    event: dict[str, Any] | None = None
    if granted:
        event = {"at": lease.granted_at}
    return orjson.dumps({
        "lease": {"id": lease.id, "ttl_ms": lease.ttl_ms, "granted_at": lease.granted_at,
                  "expires_at": lease.expires_at},
        "event": event,
    })


def attach(msg: Msg) -> Out:
    """The message a write attaching something to the lease (record ``msg``, live) adds
    to its batch: the record again, compare-and-swap on its sequence, no event. So the
    lease's end, which checks the record's sequence, cannot miss what attached after
    it listed what is attached, and an attachment cannot follow the end."""
    lease = decode_lease(msg)
    assert lease is not None
    return Out(msg.subject, encode_lease(lease, granted=False), {}, msg.seq)


async def attach_live(store: NatsStore, ns: str, lease_id: str, now: int) -> Out:
    """``attach`` for lease ``lease_id`` of namespace ``ns`` read now; 404 unless live."""
    msg = await store.last(ns, lease_subject(ns, lease_id))
    live_lease(msg, lease_id, now)
    assert msg is not None
    return attach(msg)


def is_lease_subject(ns: str, subject: str) -> bool:
    return subject.startswith(f"$KV.{ns}.{LEASE_PREFIX}")


def lease_event(ns: str, msg: Msg) -> ChangeEvent | None:
    """The ``lease.granted`` event a grant's message is; None for other messages."""
    if not is_lease_subject(ns, msg.subject):
        return None
    lease = decode_lease(msg)
    try:
        granted = orjson.loads(msg.data).get("event") is not None
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if lease is None or not granted:
        return None
    return build_event(
        ns, msg.seq, "lease.granted", lease.id, lease.granted_at, with_values=False,
        extra={"ttl": ttl_seconds(lease.ttl_ms), "expires_at": iso_ms(lease.expires_at)},
    )
