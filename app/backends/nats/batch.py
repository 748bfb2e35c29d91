"""JetStream atomic batch publish (ADR-50, nats-server 2.12+): several messages of one
namespace's bucket stored all at once, at consecutive sequences, or none of them.

nats-py does not wrap it, so the messages go out with the raw headers: each carries
``Nats-Batch-Id`` (one random id) and ``Nats-Batch-Sequence`` (1, 2, ...), the last
``Nats-Batch-Commit: 1`` as well. The first is a request (the server answers an empty
acknowledgement once the batch is open); the rest follow without waiting, and the
commit's answer is the publish acknowledgement of the whole batch: the sequence of its
last message. The stream must allow it (``allow_atomic``, store.py switches it on).

Every message may carry ``Nats-Expected-Last-Subject-Sequence`` (its own subject's
compare-and-swap), optionally for another subject
(``Nats-Expected-Last-Subject-Sequence-Subject``): a *check* message on the reserved
subject ``_cbc`` guards a subject the batch reads but does not write (a compared key,
a lock, a lease). The server checks them all against the stream as it is before the
batch, under its lock, at the commit: one failed check and nothing is stored (``None``).

Limits of the server: at most ``jetstream { limits { batch { max_msgs: N } } }``
messages per batch (1,000 by default, ``DEFAULT_MAX_BATCH``; Corkboard's
``nats://...?max_batch=N`` says how many it may send, and its callers, txn.py and
leases.py, refuse larger ones before sending anything), and one subject may not be
checked twice in a batch. A batch the server refuses as larger than its own limit (a
``?max_batch=`` above the server's) is 409 ``too_many_keys``, nothing stored. A server
older than 2.12 would store the messages one by one: a batch to it is refused (501)
before anything is sent.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import nats
import orjson
from nats.js.errors import NoStreamResponseError

from app.backends.nats.names import CHECK_TOKEN, SYSTEM_BUCKET
from app.backends.nats.payload import check_size
from app.backends.nats.retry import Attempts, no_stream_took
from app.backends.nats.store import WRONG_LAST_SEQUENCE, NatsStore, next_msg
from app.errors import BackendUnavailable, NotSupportedByBackend, TooManyKeys

#: The most messages one atomic batch holds unless configured (nats-server's default
#: ``max_msgs``; ``?max_batch=`` in the backend URL).
DEFAULT_MAX_BATCH = 1000

#: The largest ``?max_batch=`` accepted (each batch is held whole by the server, and
#: read back whole by a change-log reader).
LARGEST_BATCH = 100_000

#: JetStream's error code of a batch larger than the server's ``max_msgs``.
TOO_LARGE = 10199

#: JetStream's error codes of a batch refused for its checks (a conflict: try again).
CONFLICTS = frozenset({WRONG_LAST_SEQUENCE, 10164})

#: Attempts of a batch the server refuses for a reason other than its checks (the
#: stream's or the server's limit of batches in flight reached).
BUSY_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Out:
    """One message of a batch: its subject, bytes and headers, and the sequence its own
    subject (or ``checked``, another subject) must be at (None: no check)."""

    subject: str
    data: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    expected: int | None = None
    checked: str | None = None

    def wire_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.expected is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(self.expected)
            if self.checked is not None:
                headers["Nats-Expected-Last-Subject-Sequence-Subject"] = self.checked
        return headers


def check(ns: str, subject: str, seq: int) -> Out:
    """A message that only guards ``subject`` (of bucket ``ns``) at sequence ``seq``
    (0: no message): stored on the reserved ``_cbc``, no event, no key."""
    return Out(f"$KV.{ns}.{CHECK_TOKEN}", b"", {}, seq, subject)


class BatchRefused(BackendUnavailable):
    """The server refused a batch for another reason than its checks."""


class BatchTooLarge(TooManyKeys):
    """The server refused a batch as larger than its ``max_msgs`` (409, nothing stored)."""


async def publish_batch(store: NatsStore, ns: str, msgs: list[Out]) -> int | None:
    """Store ``msgs`` in namespace ``ns``'s bucket atomically: the sequence of the last
    one (the others precede it, consecutively), or None when a check failed and nothing
    was stored."""
    if not msgs or len(msgs) > LARGEST_BATCH:
        raise ValueError(f"an atomic batch holds 1 to {LARGEST_BATCH} messages, not {len(msgs)}")
    version = store.nc.connected_server_version
    if (version.major, version.minor) < (2, 12):
        # An older server ignores the batch headers and stores each message as it comes.
        raise NotSupportedByBackend(
            f"This needs JetStream atomic batch publish, nats-server 2.12 or later; the "
            f"server is {version} (see docs/nats.md)."
        )
    batch_headers = {"Nats-Batch-Id": "x" * 22, "Nats-Batch-Sequence": str(len(msgs)),
                     "Nats-Batch-Commit": "1"}  # the largest a message gets
    for out in msgs:  # all before any is sent (payload.py)
        check_size(store.nc.max_payload, out.subject, out.data,
                   {**out.wire_headers(), **batch_headers})
    async with store.mapped_errors():
        await store.ensure(ns)
        busy = 0
        retries = Attempts(store.timeout)
        while await retries.next():
            try:
                seq = await _send(store, msgs)
            except NoStreamResponseError:
                await store.remake(ns)
                continue
            except BatchRefused:
                busy += 1
                if busy == BUSY_ATTEMPTS:
                    raise BackendUnavailable(
                        f"The NATS server refused an atomic batch to {ns!r}; retry."
                    ) from None
                continue
            if seq is not None and store.written is not None and ns != SYSTEM_BUCKET:
                for _ in msgs:
                    store.written(ns)
            return seq
    raise no_stream_took(ns)


async def _send(store: NatsStore, msgs: list[Out]) -> int | None:
    nc = store.nc
    batch_id = secrets.token_hex(11)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        last = len(msgs)
        for i, out in enumerate(msgs, 1):
            headers = out.wire_headers()
            headers["Nats-Batch-Id"] = batch_id
            headers["Nats-Batch-Sequence"] = str(i)
            if i == last:
                headers["Nats-Batch-Commit"] = "1"
            ask = i in (1, last)
            await nc.publish(out.subject, out.data, reply=inbox if ask else "",
                             headers=headers)
            if not ask:
                continue
            reply = await next_msg(sub, store.timeout)  # a timeout is a 503
            if reply.headers and reply.headers.get("Status") == "503":
                raise NoStreamResponseError
            if i == last or reply.data:
                return _ack(reply.data)
        return None  # unreachable: the last message is always asked
    finally:
        try:
            await sub.unsubscribe()
        except nats.errors.Error:
            pass


def _ack(data: bytes) -> int | None:
    """The batch's sequence from the server's answer; None for a failed check."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BatchRefused(f"The NATS server answered a batch with {data[:200]!r}.") from exc
    error = body.get("error")
    if error is None:
        return int(body["seq"])
    if error.get("err_code") in CONFLICTS:
        return None
    if error.get("err_code") == TOO_LARGE:
        raise BatchTooLarge(
            f"The NATS server refused an atomic batch as too large ({error.get('description')})"
            ": Corkboard's ?max_batch= is above the server's jetstream { limits { batch { "
            "max_msgs } } } (1000 by default). Nothing was written: write fewer keys at once, "
            "or raise the server's limit (docs/nats.md)."
        )
    raise BatchRefused(f"The NATS server refused an atomic batch: {error.get('description')}.")
