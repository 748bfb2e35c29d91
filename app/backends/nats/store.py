"""What every part of the NATS backend runs on: one nats-py connection, the JetStream
requests the parts make (direct gets, batched direct gets, publishes with an expected
last subject sequence), bucket creation, and the one boundary where NATS failures
become 503 backend_unavailable, ``mapped_errors``.

Every change is one JetStream publish carrying ``Nats-Expected-Last-Subject-Sequence``:
the stream stores it only if the key's subject is still at the sequence the change was
computed from, so a check (condition, fence, expiry) and the change it allows are one
atomic step. The stream sequence the publish gets is the namespace's new revision.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError, NotFoundError

from app.backends.nats.msgs import Msg, TooManyResults, message_of, message_of_api, next_msg
from app.backends.nats.names import SYSTEM_BUCKET, stream_of
from app.backends.nats.payload import check_size
from app.backends.nats.retry import Attempts, no_stream_took
from app.backends.nats.wake import SETTLE_DELAYS, Wakers
from app.backends.parts.log import raise_if_cancelling
from app.errors import BackendUnavailable, backend_unavailable, redact_url

#: ``Msg`` lives in msgs.py; the parts import it from here, with the store.
__all__ = ["Msg", "NatsStore", "TooManyResults", "mapped_errors", "message_of", "next_msg"]

logger = logging.getLogger("corkboard.backend")

#: JetStream's error code for a failed Nats-Expected-Last-Subject-Sequence check.
WRONG_LAST_SEQUENCE = 10071
#: A long poll on a replicated bucket checks the log this often even without a message
#: (wake.py: a missed wake-up answers at most this late, not at the poll's timeout).
RECHECK_SECONDS = 0.5


class NatsStore:
    """The connection and the JetStream requests the parts share."""

    def __init__(
        self, servers: list[str], *, timeout: float, key_history: int, retention: int,
        replicas: int, url: str,
    ) -> None:
        self.servers = servers
        self.timeout = timeout
        self.key_history = key_history
        #: Events kept per namespace: the revisions at or below ``last - retention`` are
        #: compacted (trim.py); also the bucket's limit of messages per key.
        self.retention = retention
        #: Told of every stored message of a namespace's bucket (the compaction's count).
        self.written: Callable[[str], None] | None = None
        self.replicas = replicas
        self.url = url
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self.buckets: set[str] = set()
        #: Buckets with more than one replica: their reads go to the stream's leader.
        self.replicated: set[str] = set()
        self._making: dict[str, asyncio.Future[None]] = {}
        #: The subscriptions long polls and watch feeds wait on, one per namespace.
        self.wakers = Wakers(lambda: self.nc)

    @property
    def nc(self) -> Client:
        if self._nc is None:
            raise BackendUnavailable("The NATS backend is not connected.")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BackendUnavailable("The NATS backend is not connected.")
        return self._js

    async def start(self) -> None:
        async with self.mapped_errors():
            self._nc = await nats.connect(
                self.servers, connect_timeout=self.timeout, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnect_time_wait=0.5, error_cb=self._on_error,
            )
            self._js = self._nc.jetstream(timeout=self.timeout)
            await self.ensure(SYSTEM_BUCKET, history=1)

    async def _on_error(self, exc: Exception) -> None:
        """nats-py's asynchronous errors: a wake-up subscription dropping messages is
        how it works (wake.py); the rest are logged, the URL's password redacted."""
        if isinstance(exc, nats.errors.SlowConsumerError) and self.wakers.owns(exc.sub):
            return
        logger.warning("NATS: %s", str(exc).replace(self.url, redact_url(self.url)))

    async def close(self) -> None:
        if self._nc is not None:
            nc, self._nc, self._js = self._nc, None, None
            self.wakers.clear()
            try:
                await nc.close()
            except Exception:  # closing a broken connection must not fail the shutdown
                pass

    def mapped_errors(self) -> AbstractAsyncContextManager[None]:
        return mapped_errors(self.url)

    async def ping(self) -> None:
        async with self.mapped_errors():
            await self.js.account_info()

    # -- buckets -----------------------------------------------------------------------

    async def ensure(self, bucket: str, *, history: int | None = None) -> None:
        """Create the bucket ``bucket`` unless it exists (see ``bind``): once per process
        at a time, the concurrent first writes of a new namespace waiting on that one
        creation (on a cluster, a replicated stream takes a while to make)."""
        if bucket in self.buckets:
            return
        making = self._making.get(bucket)
        if making is None:
            making = self._making[bucket] = asyncio.ensure_future(self._create(bucket, history))
            making.add_done_callback(lambda done: self._made(bucket, done))
        await asyncio.shield(making)

    def _made(self, bucket: str, done: asyncio.Future[None]) -> None:
        self._making.pop(bucket, None)
        if not done.cancelled():
            done.exception()  # retrieved: the callers awaiting it got it raised

    async def _create(self, bucket: str, history: int | None) -> None:
        if await self.bind(bucket):
            return
        config = StreamConfig(
            name=stream_of(bucket), subjects=[f"$KV.{bucket}.>"],
            max_msgs_per_subject=history or max(self.retention, self.key_history),
            discard=DiscardPolicy.NEW, allow_direct=True, allow_rollup_hdrs=True,
            allow_atomic=True,
            deny_delete=True, deny_purge=False, max_age=0, num_replicas=self.replicas,
            storage=StorageType.FILE, duplicate_window=120.0,
        )
        try:
            await self.js.add_stream(config)
        except BadRequestError:  # created meanwhile by another process
            pass
        if self.replicas > 1:
            self.replicated.add(bucket)
        self.buckets.add(bucket)

    async def bind(self, bucket: str) -> bool:
        """Whether the bucket exists; an existing one, made by any NATS client, is used
        as it is, with direct gets and atomic batches (batch.py) switched on if it lacks
        them."""
        if bucket in self.buckets:
            return True
        try:
            info = await self.js.stream_info(stream_of(bucket))
        except NotFoundError:
            return False
        if not info.config.allow_direct or not info.config.allow_atomic:
            info.config.allow_direct = True
            info.config.allow_atomic = True
            await self.js.update_stream(info.config)
        kept = info.config.max_msgs_per_subject or 0
        if bucket != SYSTEM_BUCKET and 0 < kept < self.retention:
            logger.warning(
                "NATS bucket %r keeps %d messages per key (history), fewer than "
                "CORKBOARD_EVENT_RETENTION: a key written more often than that before a "
                "watcher reads it resets the watchers behind (docs/nats.md)", bucket, kept,
            )
        if (info.config.num_replicas or 1) > 1:
            self.replicated.add(bucket)
        self.buckets.add(bucket)
        return True

    async def last_seq(self, bucket: str) -> int:
        """The bucket's stream sequence (the namespace revision); 0 without a bucket."""
        async with self.mapped_errors():
            try:
                info = await self.js.stream_info(stream_of(bucket))
            except NotFoundError:
                return 0
            return int(info.state.last_seq)

    # -- reads ---------------------------------------------------------------------------

    async def last(self, bucket: str, subject: str) -> Msg | None:
        """The subject's newest message, or None. On a replicated bucket the stream's
        leader answers (a follower's direct get may be a few ms behind): read-your-writes."""
        async with self.mapped_errors():
            if bucket not in self.buckets and not await self.bind(bucket):
                return None  # no namespace: one request (not a direct get, a bind again)
            if bucket in self.replicated:
                return await self._leader_last(bucket, subject)
            retries = Attempts(self.timeout)
            while await retries.next():
                try:
                    reply = await self.nc.request(
                        f"$JS.API.DIRECT.GET.{stream_of(bucket)}.{subject}", b"",
                        timeout=self.timeout,
                    )
                except nats.errors.NoRespondersError:
                    # No bucket, one without direct gets yet (bind switches them on), or
                    # none of its replicas answering yet (just made on a cluster: wait a
                    # little), or none at all (its servers down).
                    self.buckets.discard(bucket)
                    if not await self.bind(bucket):
                        return None
                    continue
                return message_of(reply)
        raise BackendUnavailable(f"No replica of the NATS bucket {bucket!r} answered.")

    async def _leader_last(self, bucket: str, subject: str) -> Msg | None:
        reply = await self.nc.request(
            f"$JS.API.STREAM.MSG.GET.{stream_of(bucket)}",
            orjson.dumps({"last_by_subj": subject}), timeout=self.timeout,
        )
        body = orjson.loads(reply.data)
        error = body.get("error")
        if isinstance(error, dict) and error.get("err_code") not in (10037, 10059):
            # not "no message found" / "stream not found": no leader yet, or gone
            raise BackendUnavailable(
                f"The NATS bucket {bucket!r} has no leader to answer: "
                f"{str(error.get('description', ''))[:200]}"
            )
        return message_of_api(body)

    async def at(self, bucket: str, seq: int) -> Msg | None:
        """The message at sequence ``seq``, or None when it is gone (see ``settled``)."""
        for delay in SETTLE_DELAYS:
            if delay:
                await asyncio.sleep(delay)
            found = await self.batch(bucket, {"seq": seq, "batch": 1})
            if found[0] and found[0][0].seq == seq:
                return found[0][0]
        return None

    async def settled(self, bucket: str, request: dict[str, Any]) -> list[Msg]:
        """A batched direct get of messages known to be stored (at or below the
        stream's last sequence as its leader said), asked again a few times, briefly
        apart, while the answer is empty: on a replicated bucket any replica answers a
        direct get, a follower a few ms behind the leader included. Empty only when the
        messages are really gone (purged)."""
        for delay in SETTLE_DELAYS:
            if delay:
                await asyncio.sleep(delay)
            found, _ = await self.batch(bucket, request)
            if found:
                return found
        return []

    async def batch(self, bucket: str, request: dict[str, Any]) -> tuple[list[Msg], int]:
        """A batched direct get (``seq``/``next_by_subj``/``multi_last`` with ``batch``):
        the messages, and the sequence the answer is consistent at (multi_last)."""
        if bucket not in self.buckets:
            async with self.mapped_errors():
                if not await self.bind(bucket):
                    return [], 0
        found: list[Msg] = []
        upto = 0
        async with self.mapped_errors():
            nc = self.nc
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            try:
                await nc.publish(
                    f"$JS.API.DIRECT.GET.{stream_of(bucket)}", orjson.dumps(request),
                    reply=inbox,
                )
                while True:
                    try:
                        reply = await next_msg(sub, self.timeout)
                    except nats.errors.TimeoutError:
                        if not found and not await self._exists(bucket):
                            return [], 0
                        raise
                    msg = message_of(reply)
                    if msg is not None:
                        found.append(msg)
                        continue
                    headers = reply.headers or {}
                    if headers.get("Status") == "413":
                        raise TooManyResults(headers.get("Description", ""))
                    upto = int(headers.get("Nats-UpTo-Sequence", 0) or 0)
                    break  # EOB (204), no messages (404), no bucket (503)
            finally:
                await sub.unsubscribe()
        return found, upto

    async def _exists(self, bucket: str) -> bool:
        try:
            await self.js.stream_info(stream_of(bucket))
        except NotFoundError:
            return False
        return True

    async def history(self, bucket: str, subject: str) -> list[Msg]:
        """Every kept message of ``subject``, oldest first."""
        msgs: list[Msg] = []
        seq = 1
        while True:
            found, _ = await self.batch(
                bucket, {"seq": seq, "next_by_subj": subject, "batch": 256}
            )
            msgs.extend(found)
            if len(found) < 256:
                return msgs
            seq = found[-1].seq + 1

    async def multi_last(
        self, bucket: str, subject: str, *, up_to: int = 0
    ) -> tuple[list[Msg], int]:
        """The newest message of every subject matching ``subject`` (at or below
        sequence ``up_to`` when given), and the sequence the answer is consistent at (0:
        not known). One batched direct get when the server allows that many answers
        (1,024 subjects), else an ordered consumer delivering the last per subject."""
        request: dict[str, Any] = {"multi_last": [subject], "batch": 1_000_000}
        if up_to:
            request["up_to_seq"] = up_to
        try:
            return await self.batch(bucket, request)
        except TooManyResults:
            if up_to:
                raise
        return await self.last_per_subject(bucket, subject), 0

    async def last_per_subject(self, bucket: str, subject: str) -> list[Msg]:
        """The newest message of every subject matching ``subject``, through an ordered
        consumer (what NATS KV clients' ``keys()`` and ``watch()`` use)."""
        found: list[Msg] = []
        async with self.mapped_errors():
            sub = await self.js.subscribe(
                subject, ordered_consumer=True, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                inactive_threshold=30.0,
            )
            try:
                # Only asked after a direct get found over 1,024 subjects, so at least one
                # message comes (the consumer's own pending count may read 0 at first).
                while True:
                    reply = await sub.next_msg(timeout=self.timeout)
                    meta = reply.metadata
                    headers = dict(reply.headers or {})
                    headers["Nats-Time-Stamp"] = meta.timestamp.isoformat().replace("+00:00", "Z")
                    found.append(Msg(reply.subject, meta.sequence.stream, reply.data, headers))
                    if meta.num_pending == 0:
                        return found
            finally:
                await sub.unsubscribe()

    # -- writes --------------------------------------------------------------------------

    async def publish(
        self, bucket: str, subject: str, data: bytes, headers: dict[str, str],
        expected: int | None, *, expected_stream: int | None = None,
    ) -> int | None:
        """Store a message if ``subject`` is still at sequence ``expected`` (0: has no
        message; None: no check) and, with ``expected_stream``, the whole stream is still
        at that sequence (``Nats-Expected-Last-Sequence``: nothing in the bucket changed
        since); its sequence, or None when a check failed."""
        if expected is not None:
            headers = {**headers, "Nats-Expected-Last-Subject-Sequence": str(expected)}
        if expected_stream is not None:
            headers = {**headers, "Nats-Expected-Last-Sequence": str(expected_stream)}
        check_size(self.nc.max_payload, subject, data, headers)
        async with self.mapped_errors():
            await self.ensure(bucket)
            retries = Attempts(self.timeout)
            while await retries.next():
                try:
                    ack = await self.js.publish(
                        subject, data, timeout=self.timeout, headers=headers
                    )
                except NoStreamResponseError:
                    await self.remake(bucket)
                    continue
                except APIError as exc:
                    if exc.err_code == WRONG_LAST_SEQUENCE:
                        return None
                    raise
                if self.written is not None and bucket != SYSTEM_BUCKET:
                    self.written(bucket)
                return int(ack.seq)
        raise no_stream_took(bucket)

    async def remake(self, bucket: str) -> None:
        """After a publish no stream took (so nothing was stored): the bucket was deleted
        under us (make it again), or, on a cluster, it was just made and its replicas
        are still electing a leader (the retries wait: retry.py)."""
        self.buckets.discard(bucket)
        await self.ensure(bucket)

    async def wait_for_change(
        self, bucket: str, timeout: float, changed: Callable[[], Awaitable[bool]]
    ) -> None:
        """Wait up to ``timeout`` until ``changed()`` is true (wake.py says how)."""
        async with self.mapped_errors():
            recheck = RECHECK_SECONDS if bucket in self.replicated else None
            await self.wakers.wait(bucket, timeout, changed, recheck)


@asynccontextmanager
async def mapped_errors(url: str) -> AsyncIterator[None]:
    """The one boundary where NATS failures become 503 backend_unavailable; a failure
    raised in a task being cancelled is the cancel, which nats-py turned into an error
    of its own (its publish does, when the cancel lands while it waits for its turn)."""
    try:
        yield
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise_if_cancelling()
        raise backend_unavailable("NATS", exc, url) from exc

