"""What the NATS backend offers (``SUPPORTS``, the ``supports`` list of
/v1/capabilities: every part, now that artifacts are built), and ``refusal``, the 501
``not_supported_by_backend`` of what it does not (a session-scoped lock on a lease:
locks.py)."""

from __future__ import annotations

from app.errors import NotSupportedByBackend

#: What the NATS backend offers so far (the ``supports`` list of /v1/capabilities).
SUPPORTS = (
    "keys", "events", "watch", "ttl", "history", "locks", "sessions", "artifacts", "leases",
    "txn",
)


def refusal(what: str) -> NotSupportedByBackend:
    return NotSupportedByBackend(
        f"The NATS backend does not support {what} yet; GET /v1/capabilities lists what "
        "it supports (see docs/nats.md)."
    )
