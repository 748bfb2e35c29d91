"""``AsyncCorkboard``: every resource of the API on one asyncio client."""

from __future__ import annotations

from corkboard.client._async.artifacts import AsyncArtifacts
from corkboard.client._async.keys import AsyncKeys
from corkboard.client._async.leases import AsyncLeases
from corkboard.client._async.locks import AsyncLocks
from corkboard.client._async.sessions import AsyncSessions
from corkboard.client._async.txn import AsyncTxn
from corkboard.client._async.watch import AsyncFeed
from corkboard.client._protocol import Call
from corkboard.client.types import Capabilities


class AsyncCorkboard(
    AsyncKeys, AsyncTxn, AsyncFeed, AsyncLocks, AsyncLeases, AsyncSessions, AsyncArtifacts
):
    """An asyncio client of one Corkboard service and namespace.

    ``AsyncCorkboard(url, token=..., ns=...)``; the URL defaults to ``CORKBOARD_URL`` (else
    http://127.0.0.1:8000) and the token to ``CORKBOARD_TOKEN``. ``namespace(ns)`` gives a
    view on another namespace sharing the connections. Close it with ``aclose()`` or
    ``async with``.
    """

    async def capabilities(self) -> Capabilities:
        """What the deployment offers: backend, artifact store, limits, version."""
        return Capabilities.from_json(await self._json(Call.read("/v1/capabilities")))

    async def ready(self) -> bool:
        """Whether the service answers and reaches its backend (``/readyz``)."""
        response = await self._http.get("/readyz")
        return response.status_code == 200
