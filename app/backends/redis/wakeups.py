"""Wake-ups of Redis lock waiters: one pub/sub listener per process, no connection per waiter.

A waiter in line for a Redis lock used to block in BLPOP on its own wake list, holding a
pooled connection for its whole wait: 64 waiters took every connection. Now the script
that hands a lock to a waiter (``lk_handoff`` in lib_locks.lua) pushes the waiter's wake
list *and* publishes its ticket on ``WAKE_CHANNEL``. Each process runs one listener on
one connection; a waiter registers its ticket here and awaits a future, so a thousand
waiters hold one connection between them.

Pub/sub is lossy only while the listener's connection is down. Every (re)subscription
therefore wakes every registered waiter with ``RESYNC``: the waiter checks its wake list
(which the hand-off also pushed) and, if the lock was not handed to it, waits on. A
waiter also checks once when its wait ends ('final' step), so a lost message can delay
a waiter, never lose it the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from app.backends.parts.log import raise_if_cancelling

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("corkboard.redis")

#: The channel lock hand-offs publish waiter tickets on (LK_WAKE_CHANNEL in lib_locks.lua).
WAKE_CHANNEL = "cb:lockwake"
#: A message: the lock was handed to this ticket. A resync: a message may have been lost.
WAKE: Literal["wake"] = "wake"
RESYNC: Literal["resync"] = "resync"
Wake = Literal["wake", "resync"]
_MAX_BACKOFF = 2.0


class LockWakeups:
    """The process's listener: tickets of waiting callers and the futures they await."""

    def __init__(self, client: Redis | Callable[[int], Redis]) -> None:
        """``client``: the client to subscribe with, or a function of the number of
        earlier subscriptions giving it (on a cluster: any master, the next after a
        failure; hand-offs PUBLISH, which a cluster broadcasts to every node)."""
        self._client_for = client if callable(client) else (lambda _attempt: client)
        self._waiting: dict[str, asyncio.Future[Wake]] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def register(self, ticket: str) -> asyncio.Future[Wake]:
        """A new future for ``ticket``, set when the lock is handed to it (or on resync).

        Register before the ticket joins the line, so no hand-off can come first."""
        future: asyncio.Future[Wake] = asyncio.get_running_loop().create_future()
        self._waiting[ticket] = future
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="corkboard-lock-wakeups"
            )
        return future

    def unregister(self, ticket: str) -> None:
        future = self._waiting.pop(ticket, None)
        if future is not None and not future.done():
            future.cancel()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def _listen(self) -> None:
        backoff = 0.05
        attempt = 0
        while True:
            pubsub = self._client_for(attempt).pubsub()
            attempt += 1
            try:
                await pubsub.subscribe(WAKE_CHANNEL)
                self.subscribed.set()
                self._wake_all(RESYNC)  # what was published before this subscription
                backoff = 0.05
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=30.0
                    )
                    if message is not None and message.get("type") == "message":
                        self._wake(_text(message["data"]), WAKE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: resubscribe, then resync
                raise_if_cancelling()  # (not if it is a cancel redis-py swallowed)
                self.subscribed.clear()
                logger.warning("lock wake-up listener: %s; resubscribing", exc)
                await asyncio.sleep(backoff)
                backoff = min(_MAX_BACKOFF, backoff * 2)
            finally:
                with contextlib.suppress(Exception):
                    # (untyped before redis-py 8.2, typed since)
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    def _wake(self, ticket: str, why: Wake) -> None:
        future = self._waiting.get(ticket)
        if future is not None and not future.done():
            future.set_result(why)

    def _wake_all(self, why: Wake) -> None:
        for ticket in list(self._waiting):
            self._wake(ticket, why)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        self._wake_all(RESYNC)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
