"""Small assertions shared by the HTTP tests."""

from __future__ import annotations

import re
from typing import Any

import httpx

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is a problem+json document with this status and code."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["title"] and body["detail"], body
    return body


async def revision(client: httpx.AsyncClient, ns: str = "default") -> int:
    """The namespace's current revision (read through the listing call)."""
    r = await client.get("/v1/kv", params={"ns": ns, "limit": 1})
    assert r.status_code == 200, r.text
    value: int = r.json()["revision"]
    return value


async def events(
    client: httpx.AsyncClient, since: int = 0, **params: Any
) -> list[dict[str, Any]]:
    r = await client.get("/v1/events", params={"since": since, **params})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["events"]
    return found


def next_revision(backend: str, start: int, got: int) -> int:
    """Assert ``got`` is the one revision a write took after ``start``: ``start + 1``,
    or on NATS any later one (its revisions are stream sequences, with gaps for the
    messages that are no events, such as the parts of an atomic batch); ``got``."""
    if backend.startswith("nats"):
        assert got > start, (start, got)
    else:
        assert got == start + 1, (start, got)
    return got
