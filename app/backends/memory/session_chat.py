"""The chat state of memory sessions: thread subscriptions, the dedupe window, and
thread and channel state maps; a part of ``MemorySessions`` (sessions.py), each call one
atomic step as there."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from app.backends.memory.session_state import Session
from app.backends.memory.store import MemoryStore
from app.buffers import compact
from app.domain.fence import Fence
from app.domain.sessions import StateKind, StateUpdate
from app.syntax import now_ms


class MemoryChatState(ABC):
    """Subscriptions, dedupe and state maps, on the session table of ``MemorySessions``."""

    store: MemoryStore

    @abstractmethod
    def _session_live(self, ns: str, sid: str, now: int) -> Session | None: ...

    @abstractmethod
    def _session_read(self, ns: str, sid: str) -> Session | None: ...

    @abstractmethod
    def _session_touch(self, ns: str, sid: str, sess: Session | None, now: int) -> Session: ...

    @abstractmethod
    def _session_charge(self, ns: str, sess: Session, nbytes: int) -> None: ...

    @abstractmethod
    def _session_event(self, ns: str, sid: str, now: int, change: str, **fields: Any) -> int: ...

    async def subscription_set(
        self, ns: str, sid: str, thread: str, subscribed: bool, *, fence: Fence | None = None
    ) -> bool:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        sess = self._session_live(ns, sid, now)
        present = sess is not None and thread in sess.subscriptions
        if present == subscribed:
            if sess is not None:
                self._session_touch(ns, sid, sess, now)
            return False
        sess = self._session_touch(ns, sid, sess, now)
        if subscribed:
            sess.subscriptions.add(thread)
        else:
            sess.subscriptions.discard(thread)
        self._session_event(ns, sid, now, "subscribe" if subscribed else "unsubscribe",
                            thread=thread)
        return True

    async def subscription_list(self, ns: str, sid: str) -> list[str]:
        sess = self._session_read(ns, sid)
        return sorted(sess.subscriptions) if sess is not None else []

    async def subscription_get(self, ns: str, sid: str, thread: str) -> bool:
        sess = self._session_read(ns, sid)
        return sess is not None and thread in sess.subscriptions

    async def dedupe_check(
        self, ns: str, sid: str, key: str, limit: int, *, fence: Fence | None = None
    ) -> bool:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        sess = self._session_touch(ns, sid, self._session_live(ns, sid, now), now)
        if key in sess.dedupe:
            return True
        sess.dedupe[key] = None
        evicted: list[str] = []
        while len(sess.dedupe) > limit:
            oldest = next(iter(sess.dedupe))
            del sess.dedupe[oldest]
            evicted.append(oldest)
        self._session_event(ns, sid, now, "dedupe", dedupe_key=key, evicted=evicted)
        return False

    async def state_get(self, ns: str, sid: str, kind: StateKind, ident: str) -> bytes | None:
        sess = self._session_read(ns, sid)
        return sess.states(kind).get(ident) if sess is not None else None

    async def state_update(
        self,
        ns: str,
        sid: str,
        kind: StateKind,
        ident: str,
        update: StateUpdate,
        *,
        fence: Fence | None = None,
    ) -> tuple[bytes | None, bool]:
        now = now_ms()
        self.store.fence_holds(ns, fence, now)
        sess = self._session_live(ns, sid, now)
        old = sess.states(kind).get(ident) if sess is not None else None
        new = update(old)
        if new is None and old is None:
            if sess is not None:
                self._session_touch(ns, sid, sess, now)
            return None, False
        grow = len(new or b"") - len(old or b"") + (0 if sess else 2)
        self.store.check_quota(ns, 0, grow)
        sess = self._session_touch(ns, sid, sess, now)
        self._session_charge(ns, sess, len(new or b"") - len(old or b""))
        if new is None:
            del sess.states(kind)[ident]
        else:
            sess.states(kind)[ident] = compact(new)
        self._session_event(ns, sid, now, kind + "_state", value=new, old_value=old,
                            **{kind: ident})
        return new, old is None
