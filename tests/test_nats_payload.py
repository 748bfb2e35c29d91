"""A key's message on NATS must fit the server's ``max_payload`` (1 MiB by default), which
counts the message's headers too: a value within ``CORKBOARD_MAX_VALUE_BYTES`` but too
large for one message is refused with 413 and writes nothing, and the connection (which
the server would close, failing every other request on it) stays up."""

from __future__ import annotations

import asyncio

import pytest

from app.backends.nats import NatsBackend
from app.errors import PayloadTooLarge
from app.settings import Settings
from tests.helpers import problem, revision
from tests.nats_server import flush_nats
from tests.support import app_client

MIB = 1_048_576
#: 1 MiB of JSON, within the default CORKBOARD_MAX_VALUE_BYTES; with its headers one
#: message of more than the server's default max_payload.
BIG = b'"' + b"x" * (MIB - 2) + b'"'


async def test_a_value_too_large_for_one_message_is_413_and_the_connection_stays(
    nats_engine: NatsBackend,
) -> None:
    b = nats_engine
    await b.kv_put("default", "small", b"1")
    waiting = asyncio.create_task(b.read_events("default", 1, timeout=1.0))
    await asyncio.sleep(0)
    with pytest.raises(PayloadTooLarge, match="max_payload"):
        await b.kv_put("default", "big", BIG)
    assert await b.kv_get("default", "big") is None
    # Everything else on the connection goes on: a waiter wakes, writes succeed.
    put = await b.kv_put("default", "small", b"2")
    assert put.entry.revision == 2
    assert [e.revision for e in (await waiting).events] == [2]
    assert b.store.nc.stats["reconnects"] == 0
    # The largest value that fits is stored.
    fits = b'"' + b"x" * (b.store.nc.max_payload - 400) + b'"'
    assert (await b.kv_put("default", "big", fits)).entry.revision == 3


async def test_over_http_the_refused_write_changes_nothing(nats_url: str) -> None:
    flush_nats(nats_url)
    async with app_client(Settings(backend=nats_url)) as c:
        await c.put("/v1/kv/k", json=1)
        before = await revision(c)
        r = await c.put("/v1/kv/k", content=BIG, headers={"content-type": "application/json"})
        problem(r, 413, "payload_too_large")
        assert (await c.get("/v1/kv/k")).json()["value"] == 1
        assert await revision(c) == before


async def test_a_transaction_with_a_message_too_large_is_413_and_sends_nothing(
    nats_url: str,
) -> None:
    """A transaction is one atomic batch (batch.py): every message is checked before the
    first is sent, so none of them is, and the connection stays up."""
    flush_nats(nats_url)
    async with app_client(Settings(backend=nats_url)) as c:
        await c.put("/v1/kv/k", json=1)
        before = await revision(c)
        r = await c.post("/v1/txn", content=b'{"success": [{"op": "put", "key": "a", "value": 2}, '
                         b'{"op": "put", "key": "big", "value": ' + BIG + b"}]}",
                         headers={"content-type": "application/json"})
        problem(r, 413, "payload_too_large")
        assert await revision(c) == before
        problem(await c.get("/v1/kv/a"), 404, "not_found")
        r = await c.post("/v1/txn", json={"success": [{"op": "put", "key": "a", "value": 3}]})
        assert r.status_code == 200, r.text
        assert (await c.get("/v1/kv/a")).json()["value"] == 3
