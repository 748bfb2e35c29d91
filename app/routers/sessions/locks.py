"""A session's locks, ``/v1/sessions/{sid}/locks``: the lock API of app/routers/locks.py
with the session id as the scope. A lock call that changes something counts as a write
to its session: the lock engine creates or touches the session (and indexes the lock's
name, so the snapshot finds its pending list) in the same atomic step as the lock change,
after checking the session quota; a refused call, or one that changed nothing, leaves the
session alone (``LockEngine``, ``session=True``).
"""

from __future__ import annotations

from fastapi import APIRouter

from app.routers.locks import lock_router
from app.routers.sessions.shared import TAGS
from app.syntax import check_id

router = APIRouter()


def session_lock_scope(sid: str) -> str:
    """A session's locks have the session id as their scope."""
    return check_id(sid, what="session id")


router.include_router(
    lock_router("/{sid}/locks", session_lock_scope, kind="session_lock", tags=list(TAGS),
                session=True)
)
