"""The connection every resource shares: base URL, token, namespace, timeouts, and the one
place a call is sent (fencing headers added, safe calls retried on 503 and lost
connections, errors turned into typed exceptions)."""

from __future__ import annotations

import copy
import os
from types import TracebackType
from typing import Any, Self

import httpx

from corkboard.client._concurrency import async_sleep
from corkboard.client._protocol import (
    DEFAULT_RETRIES,
    DEFAULT_URL,
    Call,
    error_from_response,
    fence_for,
    is_retryable_status,
    retry_delay,
)
from corkboard.client.errors import ConnectionFailed

DEFAULT_TIMEOUT = 10.0
#: httpx's defaults, but an idle connection is let go after 4 s: before the server's
#: 5 s (uvicorn's keep-alive), so a call never goes out on a connection the server is
#: closing at that moment (a reset, and for a POST no safe retry).
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=4.0)


class AsyncBase:
    """Base URL (``CORKBOARD_URL``), bearer token (``CORKBOARD_TOKEN``), namespace."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        ns: str = "default",
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("CORKBOARD_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("CORKBOARD_TOKEN")
        all_headers = {"User-Agent": "corkboard-python", **(headers or {})}
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        self.ns = ns
        self.timeout = timeout
        self.retries = retries
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=all_headers, timeout=timeout, transport=transport,
            limits=LIMITS,
        )
        #: What fences are scoped to: this connection (shared by namespace views).
        self._scope: object = self._http

    def namespace(self, ns: str) -> Self:
        """A view of this client on another namespace, sharing its connections."""
        view = copy.copy(self)
        view.ns = ns
        return view

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(
        self, call: Call, *, stream: bool = False,
        timeout: float | httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send ``call`` in this namespace; the answer, or a typed exception."""
        headers = dict(call.headers)
        if call.fenced and "Fence-Lock" not in headers:
            fence = fence_for(self._scope, self.ns)
            if fence is not None:
                headers.update(fence.headers)
        query = {"ns": self.ns, **call.params}
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        attempt = 0
        while True:
            request = self._http.build_request(
                call.method, call.path, params=query, headers=headers, content=call.content,
                **extra,
            )
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                if call.retry and attempt < self.retries:
                    await async_sleep(retry_delay(attempt, None))
                    attempt += 1
                    continue
                raise ConnectionFailed(
                    f"cannot reach {self.url}: {type(exc).__name__}: {exc}"
                ) from exc
            if response.status_code < 400:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            if is_retryable_status(response.status_code) and call.retry and (
                attempt < self.retries
            ):
                await async_sleep(retry_delay(attempt, response))
                attempt += 1
                continue
            raise error_from_response(response)

    async def _json(self, call: Call, *, timeout: float | None = None) -> Any:
        response = await self._send(call, timeout=timeout)
        return response.json() if response.content else None
