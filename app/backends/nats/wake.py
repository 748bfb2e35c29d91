"""Wake-ups of long polls and watch feeds: one core NATS subscription per namespace
(``$KV.<ns>.>``), shared by every wait of this process on that namespace and kept
between waits, so that no message can fall between a wait's check and its wait.

A fresh subscription for each wait cannot promise that: a message the server routed
just before the subscription reached it is not delivered to it, and may not be stored
yet when the wait's check reads the stream, so the wait slept until its timeout (a
watch feed's tick, about 2 s late). Here a waiter notes the subscription's message
count *before* it checks, and waits only while the count has not moved; the
subscription is sent to the server before its first waiter checks (the check's requests
follow it on the same connection, so the server has the interest when it answers them).

A subscription holds no task and at most one message: the messages beyond it are
dropped but counted (a count is all a wait needs). One unused for ``LINGER_SECONDS`` is
removed at the next wait of any namespace, so a process holds one per namespace waited
on lately, not one per namespace ever seen (until then the server still sends it that
namespace's messages, which it drops), and at most ``MAX_IDLE`` + 1 unused ones (a wait
retires before it subscribes): the rest are the namespaces being waited on now
(CORKBOARD_MAX_WATCHERS bounds those waits).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

#: Seconds a namespace's subscription outlives its last waiter.
LINGER_SECONDS = 30.0
#: Unused subscriptions kept at most, lingering or not (the oldest retired first): a
#: caller polling many namespaces briefly leaves no more than this many behind.
MAX_IDLE = 256
#: Pauses (s) between checks that expect a message to be stored: a message reaches
#: subscribers before its stream stores it, and on a replicated bucket a direct get may
#: be answered by a follower a few ms behind the leader.
SETTLE_DELAYS: tuple[float, ...] = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02)
#: The same after a wake-up, then longer: a replicated bucket stores a message once a
#: quorum of its servers has it, which on a loaded machine takes longer than
#: ``SETTLE_DELAYS`` (a long poll then slept to its timeout with the event stored). A
#: message that never becomes an event (a refused compare-and-swap, a waiter leaving a
#: line) costs a waiter these few reads, about 1.6 s apart in all; a newer message ends
#: the pauses at once (the count moved).
WAKE_DELAYS: tuple[float, ...] = (*SETTLE_DELAYS, 0.05, 0.1, 0.2, 0.4, 0.8)


class Waker:
    """A namespace's subscription: how many messages it got, and a wait for the next.

    No task of its own: the subscription keeps at most one message (the rest are
    dropped, but counted by nats-py as received: ``count``), and one of the waiting
    callers at a time reads it, telling the others when the count moved."""

    def __init__(self) -> None:
        self.users = 0
        self.idle_since = 0.0
        self.sub: Subscription | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reading = False
        self._turn = asyncio.Event()

    @property
    def count(self) -> int:
        """Messages delivered to the subscription so far (kept or dropped)."""
        return self.sub._received if self.sub is not None else 0

    async def wait(self, seen: int, timeout: float) -> bool:
        """Whether a message came after the count was ``seen``, waiting up to ``timeout``."""
        assert self.sub is not None
        queue: asyncio.Queue[Msg] = self.sub._pending_queue
        try:
            async with asyncio.timeout(timeout):
                while self.count == seen:
                    if self._reading:  # another caller reads; it says when
                        await self._turn.wait()
                        continue
                    self._reading = True
                    try:
                        msg = await queue.get()  # empty queue: nothing came since
                        self.sub._pending_size -= len(msg.data)
                    finally:
                        self._reading = False
                        turn, self._turn = self._turn, asyncio.Event()
                        turn.set()
        except TimeoutError:
            pass
        return self.count != seen


class Wakers:
    """The subscriptions of one connection, by namespace (bucket)."""

    def __init__(self, connection: Callable[[], Client]) -> None:
        self.connection = connection
        self._wakers: OrderedDict[str, Waker] = OrderedDict()
        self._sids: set[int] = set()

    def __len__(self) -> int:
        return len(self._wakers)

    async def wait(
        self, bucket: str, timeout: float, changed: Callable[[], Awaitable[bool]],
        recheck: float | None = None,
    ) -> None:
        """Wait up to ``timeout`` until ``changed()`` (an awaitable that says whether
        something is there) is true: checked first, then after each message on the
        bucket's subjects. The message count is noted before each check, so a message
        during the check ends the wait at once. NATS delivers a message to subscribers
        before the stream stores it (and delivers one the stream then refuses), so after
        a wake-up, and on a fresh subscription, the check runs again a few times,
        briefly apart (``SETTLE_DELAYS``, ``WAKE_DELAYS``). With ``recheck`` (replicated
        buckets: store.py), the check also runs every ``recheck`` seconds without a
        message: on a loaded 3-server cluster a wake-up was missed now and then (1 to 2
        long polls of 60 answered only at their timeout), so this bounds the lateness."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self.watching(bucket) as (waker, fresh):
            seen = waker.count
            delays = SETTLE_DELAYS if fresh else (0.0,)
            while True:
                for delay in delays:
                    if delay:
                        if waker.count != seen:
                            break  # a newer message: check after it
                        await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                    if await changed():
                        return
                    if loop.time() >= deadline:
                        return
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                step = remaining if recheck is None else min(remaining, recheck)
                if not await waker.wait(seen, step):
                    if step >= remaining:
                        return
                    delays = (0.0,)  # no message for ``recheck`` seconds: check anyway
                    continue
                seen = waker.count
                delays = WAKE_DELAYS

    @contextlib.asynccontextmanager
    async def watching(self, bucket: str) -> AsyncIterator[tuple[Waker, bool]]:
        """The bucket's waker, subscribed, and whether it was
        made for this wait (it has seen nothing yet: messages routed just before it may
        still be on their way into the stream)."""
        await self._retire_idle()
        waker = self._wakers.get(bucket)
        fresh = waker is None
        if waker is None:
            waker = self._wakers[bucket] = Waker()
            try:
                # No flush (PING/PONG) to confirm the SUB: the first check's requests
                # follow it on the same connection, so the server has the interest before
                # it answers them; and nats-py's flush, when cancelled (a watcher leaving),
                # leaves its PONG future behind, which breaks the connection's read loop
                # at the next PONG.
                waker.sub = await self.connection().subscribe(
                    f"$KV.{bucket}.>", pending_msgs_limit=1, pending_bytes_limit=0
                )
                self._sids.add(waker.sub._id)
            except BaseException as exc:
                del self._wakers[bucket]
                waker.ready.set_exception(exc)
                waker.ready.exception()  # retrieved: the waiters sharing it get it raised
                await self._unsubscribe(waker)
                raise
            waker.ready.set_result(None)
        else:
            self._wakers.move_to_end(bucket)
            await asyncio.shield(waker.ready)
        waker.users += 1
        try:
            yield waker, fresh
        finally:
            waker.users -= 1
            waker.idle_since = asyncio.get_running_loop().time()

    async def _retire_idle(self) -> None:
        """Unsubscribe the oldest wakers unused for LINGER_SECONDS, and any beyond the
        newest MAX_IDLE unused ones (chosen first, unsubscribed after: no await between
        the choice and the removal)."""
        now = asyncio.get_running_loop().time()
        idle = [(b, w) for b, w in self._wakers.items() if not w.users and w.ready.done()]
        excess = len(idle) - MAX_IDLE
        retired: list[Waker] = []
        for bucket, waker in idle:  # oldest first (a long wait keeps its place)
            if excess <= 0 and now - waker.idle_since < LINGER_SECONDS:
                break  # the rest were used later
            excess -= 1
            del self._wakers[bucket]
            retired.append(waker)
        for waker in retired:
            await self._unsubscribe(waker)

    async def _unsubscribe(self, waker: Waker) -> None:
        if waker.sub is not None:
            self._sids.discard(waker.sub._id)
            with contextlib.suppress(nats.errors.Error):
                await waker.sub.unsubscribe()

    def owns(self, sub: Subscription | None) -> bool:
        """Whether ``sub`` is one of these subscriptions (their dropped messages, reported
        by nats-py as a slow consumer, are expected)."""
        return sub is not None and sub._id in self._sids

    def clear(self) -> None:
        """Forget every subscription (the connection is closing with them)."""
        self._wakers.clear()
        self._sids.clear()
