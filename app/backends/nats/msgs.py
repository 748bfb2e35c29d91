"""Messages as the NATS backend reads them: ``Msg`` (a stored message of a bucket's
stream, with its sequence and headers) built from a direct get's answer, and the wait
for a core subscription's next message."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import nats
from nats.aio.msg import Msg as CoreMsg
from nats.aio.subscription import Subscription

from app.backends.nats.names import Meta


@dataclass(frozen=True, slots=True)
class Msg:
    """A stored message: its subject, sequence (the revision), bytes and headers."""

    subject: str
    seq: int
    data: bytes
    headers: dict[str, str]

    @property
    def deleted(self) -> bool:
        """A KV delete or purge marker (Corkboard's or any client's, or the server's)."""
        return (
            self.headers.get("KV-Operation") in ("DEL", "PURGE")
            or "Nats-Marker-Reason" in self.headers
        )

    @property
    def meta(self) -> Meta | None:
        return Meta.parse(self.headers.get("Cb-Meta"))

    @property
    def time_ms(self) -> int:
        """When the server stored it (epoch ms)."""
        stamp = self.headers.get("Nats-Time-Stamp", "")
        try:
            head, _, frac = stamp.rstrip("Z").partition(".")
            base = datetime.fromisoformat(head + "+00:00").timestamp()
            return int(base * 1000) + int((frac + "000")[:3])
        except ValueError:
            return 0


async def next_msg(sub: Subscription, timeout: float) -> CoreMsg:
    """The subscription's next message within ``timeout`` (nats.errors.TimeoutError).

    nats-py's ``Subscription.next_msg`` runs each wait in two tasks of its own; this one
    waits on the subscription's queue in the caller's task, so a reader, a long poll or
    the sweeper holds no extra task while the server answers."""
    queue: asyncio.Queue[CoreMsg] = sub._pending_queue
    try:
        async with asyncio.timeout(timeout):
            msg = await queue.get()
    except TimeoutError:
        raise nats.errors.TimeoutError from None
    sub._pending_size -= len(msg.data)
    queue.task_done()
    return msg


class TooManyResults(Exception):
    """A direct get's answer would exceed the server's limit (status 413)."""


def message_of(reply: CoreMsg) -> Msg | None:
    headers = dict(reply.headers or {})
    if "Status" in headers or "Nats-Sequence" not in headers:
        return None
    return Msg(headers["Nats-Subject"], int(headers["Nats-Sequence"]), reply.data, headers)


def message_of_api(body: dict[str, Any]) -> Msg | None:
    """The message of a ``$JS.API.STREAM.MSG.GET`` answer (the stream leader's), as a
    direct get would give it; None for "no message" (or no stream)."""
    found = body.get("message")
    if not isinstance(found, dict):
        return None
    headers: dict[str, str] = {}
    raw = base64.b64decode(found.get("hdrs") or "").decode("utf-8", "replace")
    for line in raw.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    subject, seq = str(found["subject"]), int(found["seq"])
    headers.update({"Nats-Subject": subject, "Nats-Sequence": str(seq),
                    "Nats-Time-Stamp": str(found.get("time", ""))})
    return Msg(subject, seq, base64.b64decode(found.get("data") or ""), headers)
