# Generated from _async/client.py by scripts/unasync.py: do not edit.
"""``Corkboard``: every resource of the API on one synchronous client."""

from __future__ import annotations

from corkboard.client._sync.artifacts import Artifacts
from corkboard.client._sync.keys import Keys
from corkboard.client._sync.leases import Leases
from corkboard.client._sync.locks import Locks
from corkboard.client._sync.sessions import Sessions
from corkboard.client._sync.txn import Txn
from corkboard.client._sync.watch import Feed
from corkboard.client._protocol import Call
from corkboard.client.types import Capabilities


class Corkboard(
    Keys, Txn, Feed, Locks, Leases, Sessions, Artifacts
):
    """A synchronous client of one Corkboard service and namespace.

    ``Corkboard(url, token=..., ns=...)``; the URL defaults to ``CORKBOARD_URL`` (else
    http://127.0.0.1:8000) and the token to ``CORKBOARD_TOKEN``. ``namespace(ns)`` gives a
    view on another namespace sharing the connections. Close it with ``close()`` or
    ``with``.
    """

    def capabilities(self) -> Capabilities:
        """What the deployment offers: backend, artifact store, limits, version."""
        return Capabilities.from_json(self._json(Call.read("/v1/capabilities")))

    def ready(self) -> bool:
        """Whether the service answers and reaches its backend (``/readyz``)."""
        response = self._http.get("/readyz")
        return response.status_code == 200
