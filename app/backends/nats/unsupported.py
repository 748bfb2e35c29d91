"""What the NATS backend offers: ``SUPPORTS``, the ``supports`` list of /v1/capabilities.
Every part is built (docs/nats.md); what a server cannot do (atomic batches on a
nats-server older than 2.12) answers 501 ``not_supported_by_backend`` where it is met
(batch.py)."""

from __future__ import annotations

#: What the NATS backend offers (the ``supports`` list of /v1/capabilities).
SUPPORTS = (
    "keys", "events", "watch", "ttl", "history", "locks", "sessions", "artifacts", "leases",
    "txn",
)
