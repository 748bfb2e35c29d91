"""A session's locks, ``/v1/sessions/{sid}/locks``: the lock API of app/routers/locks.py
with the session id as the scope. A lock call that changes something counts as a write
to its session.

Not atomic (issue 12): the lock's name is indexed in the session before the lock call
and the session is created or touched after it, three backend writes in all. A failure
between them leaves a lock whose session was not created or refreshed; a session
deleted between them is created again, empty, by the touch. Making this one atomic step
needs the lock engine to do the index and the touch itself (see ``use_session_for_lock``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from app.errors import InvalidRequest
from app.routers.common import BackendDep, NamespaceDep
from app.routers.locks import lock_router
from app.routers.sessions.shared import TAGS
from app.syntax import LOCK_ACTIONS, check_id, check_key

router = APIRouter()


async def use_session_for_lock(
    sid: str, request: Request, ns: NamespaceDep, backend: BackendDep
) -> AsyncIterator[str]:
    """A successful lock call (POST) counts as a write to its session: it creates the
    session on first use and refreshes its idle TTL. A refused one changes nothing. The
    lock's name is remembered before the call, so the snapshot finds its pending list.

    The backend has no call that does this with the lock change in one atomic step: it
    would take a session scope on ``lock_acquire``/``lock_refresh``/``lock_release``/
    ``lock_force_release`` that indexes the name and, only when the call changed
    something, creates or touches the session within the same script or critical
    section (what ``session_lock_index`` and ``session_use`` do apart today).
    """
    sid = check_id(sid, what="session id")
    name: str | None = request.path_params.get("name") if request.method == "POST" else None
    try:
        name = check_key(name, what="lock name", actions=LOCK_ACTIONS) if name else None
    except InvalidRequest:
        name = None  # the lock route refuses it
    if name is not None:
        await backend.session_lock_index(ns, sid, name)
    yield sid
    # Only reached when the lock call succeeded; a force-release of a free lock with
    # nothing pending changed nothing, so it creates no session either.
    if name is not None and not getattr(request.state, "lock_changed_nothing", False):
        await backend.session_use(ns, sid, name)


def session_lock_scope(
    sid: Annotated[str, Depends(use_session_for_lock, scope="function")],
) -> str:
    """A session's locks have the session id as their scope."""
    return sid


router.include_router(
    lock_router("/{sid}/locks", session_lock_scope, kind="session_lock", tags=list(TAGS))
)
