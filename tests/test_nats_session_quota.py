"""Sessions' bytes in the namespace byte quota on NATS beyond the shared suite
(test_quotas, test_session_locks run there too): each session record carries the bytes
it counts (``"bytes"``, sessionstate.py), so the counter of ``_corkboard_quota`` always
equals what the records count; writers of three processes racing on one session never
take the namespace past its quota (a lost compare-and-swap gives its reservation back);
an idle expiry and a lease's end (which rewrites the record) keep the count exact."""

from __future__ import annotations

import asyncio

import nats
import orjson

from app.backends.nats.names import session_subject
from app.backends.nats.sessionstate import decode, quota_bytes
from app.backends.nats.store import Msg
from tests.helpers import events, problem, revision
from tests.nats_server import flush_nats
from tests.test_nats_quotas import apps, used


async def record_bytes(nats_url: str, sid: str, ns: str = "default") -> tuple[int, int]:
    """(what session ``sid``'s record says it counts, its session's bytes recounted),
    read with nats-py."""
    nc = await nats.connect(nats_url)
    try:
        try:
            raw = await nc.jetstream().get_last_msg(f"KV_{ns}", session_subject(ns, sid))
        except nats.js.errors.NotFoundError:
            return 0, 0
        counted = orjson.loads(raw.data or b"{}").get("bytes", 0) if raw.data else 0
        record = decode(Msg(raw.subject, raw.seq, raw.data or b"", dict(raw.headers or {})), sid)
        return counted, quota_bytes(record.session)
    finally:
        await nc.close()


async def test_racing_writers_of_one_session_never_pass_the_quota(nats_url: str) -> None:
    flush_nats(nats_url)
    async with apps(nats_url, 3, namespace_max_bytes=1024) as clients:
        value = {"x": "y" * 92}  # 100 bytes of JSON each
        results = await asyncio.gather(*(
            clients[n % 3].put(f"/v1/sessions/s/threads/t{n}/state", json=value)
            for n in range(20)
        ))
        codes = [r.status_code for r in results]
        assert set(codes) <= {201, 507}, codes
        stored = codes.count(201)
        assert 1 <= stored <= 10  # '{}' + 10 x 100 = 1002 fits; an 11th does not
        counted, recount = await record_bytes(nats_url, "s")
        assert counted == recount == 2 + 100 * stored
        assert (await used(nats_url)).bytes == counted
        assert (await used(nats_url)).keys == 0  # a session is no key
        assert (await clients[1].delete("/v1/sessions/s")).status_code == 204
        assert (await used(nats_url)).bytes == 0


async def test_an_idle_expiry_gives_the_room_back(nats_url: str) -> None:
    flush_nats(nats_url)
    async with apps(nats_url, 1, namespace_max_bytes=1024) as [c]:
        start = await revision(c)
        r = await c.put("/v1/sessions/idle", json={"metadata": {"m": "x" * 600}, "ttl": 0.1})
        assert r.status_code == 201
        assert (await used(nats_url)).bytes == 608
        problem(await c.put("/v1/sessions/other", json={"metadata": {"m": "x" * 600}}), 507,
                "quota_exceeded")
        found = await events(c, since=start, types="session.deleted", wait="5s")  # swept
        assert found and found[0]["expired"] is True
        assert (await used(nats_url)).bytes == 0
        r = await c.put("/v1/sessions/other", json={"metadata": {"m": "x" * 600}})
        assert r.status_code == 201
        assert (await used(nats_url)).bytes == 608


async def test_a_lease_end_rewriting_the_record_keeps_its_count(nats_url: str) -> None:
    flush_nats(nats_url)
    async with apps(nats_url, 1, namespace_max_bytes=1024) as [c]:
        assert (await c.post("/v1/leases", json={"ttl": "30s", "id": "a1"})).status_code == 201
        r = await c.post("/v1/sessions/s1/locks/l", json={"owner": "a1", "lease": "a1"})
        assert r.status_code == 200, r.text
        r = await c.put("/v1/sessions/s1/channels/c/state", json={"n": "z" * 50})  # 58 bytes
        assert r.status_code in (200, 201)
        before = await record_bytes(nats_url, "s1")
        assert before == (2 + 58, 2 + 58) and (await used(nats_url)).bytes == 60
        assert (await c.delete("/v1/leases/a1")).status_code == 200
        problem(await c.get("/v1/sessions/s1/locks/l"), 404, "not_found")
        assert await record_bytes(nats_url, "s1") == before
        assert (await used(nats_url)).bytes == 60
        assert (await c.delete("/v1/sessions/s1")).status_code == 204
        assert (await used(nats_url)).bytes == 0


async def test_a_lock_call_refused_for_its_session_writes_nothing(
    nats_url: str,
) -> None:
    """The check before a session lock call reserves nothing: the counter is unchanged."""
    flush_nats(nats_url)
    async with apps(nats_url, 1, namespace_max_bytes=1024) as [c]:
        assert (await c.put("/v1/kv/k", json="x" * 1021)).status_code == 201  # 1023 bytes
        r = await c.post("/v1/sessions/new/locks/l", json={"owner": "a"})
        problem(r, 507, "quota_exceeded")
        assert (await used(nats_url)).bytes == 1023
