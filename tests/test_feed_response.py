"""FeedResponse (app/routers/feed_response.py) driven as an ASGI response on the memory
backend: the send loop of its own, with and without the request observer's body sender.
Streams through the whole service are tested in test_watch.py (real uvicorn processes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.events import EventFilter, Hub
from app.observability import STREAM_BODY
from app.routers.feed_response import FeedResponse
from tests.support import started_hub

NS = "feedresponse"


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with started_hub("memory://") as h:
        yield h


async def stream_one_event(hub: Hub, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """Serves a stream until its first kv.put has been sent, then disconnects."""
    sub = await hub.subscribe(NS, EventFilter.parse(None, None, None), None)
    response = FeedResponse(sub, b": opening\n\n", None, None, ping=0, sep="\n")
    sent: list[dict[str, Any]] = []
    delivered = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if b"event: kv.put" in message.get("body", b""):
            delivered.set()

    body_sender = scope.get(STREAM_BODY)
    if body_sender is not None:

        async def stream_body(body: bytes) -> None:
            await body_sender(body)
            if b"event: kv.put" in body:
                delivered.set()

        scope = {**scope, STREAM_BODY: stream_body}

    async def receive() -> dict[str, Any]:
        await delivered.wait()
        return {"type": "http.disconnect"}

    served = asyncio.create_task(response(scope, receive, send))
    await hub.backend.kv_put(NS, "k", b"1")
    await asyncio.wait_for(served, 10)
    assert sub.phase == "closed" and hub.open_subscriptions == 0
    return sent


def http_scope() -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/v1/watch", "headers": []}


async def test_without_the_observer_chunks_take_the_send_it_was_given(hub: Hub) -> None:
    sent = await stream_one_event(hub, http_scope())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert sent[1] == {"type": "http.response.body", "body": b": opening\n\n", "more_body": True}
    assert b'"key":"k"' in sent[2]["body"] and sent[2]["more_body"] is True


async def test_with_the_observer_chunks_take_its_body_sender(hub: Hub) -> None:
    """The start goes through the send the response was given; every chunk of events
    through STREAM_BODY (the observer counts them for the access log)."""
    chunks: list[bytes] = []

    async def stream_body(body: bytes) -> None:
        chunks.append(body)

    scope = {**http_scope(), STREAM_BODY: stream_body}
    sent = await stream_one_event(hub, scope)
    assert sent[0]["type"] == "http.response.start"
    assert chunks[0] == b": opening\n\n" and b'"key":"k"' in chunks[1]
    assert not [m for m in sent if m.get("more_body")]  # no chunk took the plain send
