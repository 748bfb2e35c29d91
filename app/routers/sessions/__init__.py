"""Sessions (API.md section 5), one module a resource: session records (``records``),
typed variables (``variables``), chat state (``chat``: subscriptions, dedupe, thread and
channel state), snapshots that move between backends (``snapshot``) and session-scoped
locks (``locks``). Their bodies are in ``models``.

Every write honours ``Fence-Lock``/``Fence-Token`` (``Fence-Session`` for a session's own
lock) atomically with the change.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.routers.sessions import chat, locks, records, snapshot, variables
from app.routers.sessions.models import BatchWriteRequest
from app.routers.sessions.shared import PREFIX, TAGS
from app.routers.sessions.variables import write_values

__all__ = ["BatchWriteRequest", "router", "write_values"]

#: Every session route under /v1/sessions, in the order they are matched.
router = APIRouter()
for _part in (records, variables, chat, snapshot, locks):
    router.include_router(_part.router, prefix=PREFIX, tags=list(TAGS))
