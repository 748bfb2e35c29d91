"""Transactions and leases across real service processes: live watch streams filtered
per watcher, a bank transfer over three replicas on one Redis (or NATS), leader election
on a stream-bound lease whose process is killed, and a presence list of 50 agents; on
memory, Redis and NATS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.sse import Stream, watch
from tests.support import ServiceProcess, running

#: How long the bank transfer runs (seconds); keep at least 5 in the suite.
BANK_SECONDS = float(os.environ.get("CORKBOARD_TEST_BANK_SECONDS", "6"))
ACCOUNTS = 10
CLIENTS = 20
OPENING_BALANCE = 1000


@pytest.fixture(scope="module", params=["memory", "redis", "nats"])
def service(request: pytest.FixtureRequest) -> Iterator[ServiceProcess]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue(
        f"{request.param}_url")
    env = {"CORKBOARD_BACKEND": url, "CORKBOARD_SWEEP_INTERVAL_SECONDS": "0.1",
           "CORKBOARD_LOG_LEVEL": "warning"}
    with running(ServiceProcess(env)) as [svc]:
        yield svc


def client_for(svc: ServiceProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=svc.url, timeout=30, limits=httpx.Limits(max_connections=200)
    )


def fresh_ns() -> str:
    return "t" + uuid.uuid4().hex[:12]


async def next_events(stream: Stream, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < count:
        frame = await stream.event()
        if frame.event != "progress":
            out.append(frame.json)
    return out


async def test_live_streams_get_only_the_matching_changes(service: ServiceProcess) -> None:
    ns = fresh_ns()
    async with client_for(service) as c:
        async with (
            watch(c, ns=ns, pattern="agents/*") as agents,
            watch(c, ns=ns, pattern="other/*") as other,
            watch(c, ns=ns, types="kv.delete") as deletes,
            watch(c, ns=ns) as everything,
        ):
            await c.put("/v1/kv/agents/gone", params={"ns": ns}, json=0)
            r = await c.post("/v1/txn", params={"ns": ns}, json={"success": [
                {"op": "put", "key": "agents/a1", "value": 1},
                {"op": "put", "key": "config", "value": 2},
                {"op": "delete", "key": "agents/gone"},
            ]})
            txn_revision = r.json()["revision"]
            await c.put("/v1/kv/other/x", params={"ns": ns}, json=3)
            got = await next_events(agents, 2)
            assert got[1]["type"] == "txn" and got[1]["revision"] == txn_revision
            assert [ch["key"] for ch in got[1]["changes"]] == ["agents/a1", "agents/gone"]
            [skipped] = await next_events(other, 1)  # nothing of the txn under other/*
            assert skipped["key"] == "other/x"
            [only] = await next_events(deletes, 1)
            assert only["changes"] == [{"type": "kv.delete", "key": "agents/gone",
                                        "value": None, "old_value": 0}]
            full = await next_events(everything, 3)
            assert len(full[1]["changes"]) == 3


async def test_snapshot_stream_replays_transactions(service: ServiceProcess) -> None:
    ns = fresh_ns()
    async with client_for(service) as c:
        ops = [{"op": "put", "key": f"s/{i}", "value": i} for i in range(5)]
        await c.post("/v1/txn", params={"ns": ns}, json={"success": ops})
        await c.delete("/v1/kv", params={"ns": ns, "pattern": "s/3"})
        async with watch(c, ns=ns, pattern="s/*", snapshot=True) as stream:
            keys = []
            while True:
                frame = await stream.event()
                if frame.event == "synced":
                    break
                keys.append(frame.json["key"])
        assert keys == ["s/0", "s/1", "s/2", "s/4"]


def server_time(event: dict[str, Any]) -> float:
    """When the service made an event (its ``at``), as a Unix timestamp."""
    return datetime.fromisoformat(event["at"]).timestamp()


async def next_event_before(stream: Stream, deadline: float) -> dict[str, Any] | None:
    """The next event (progress skipped) if one comes before ``deadline`` (monotonic),
    else None. A timeout ends the stream's reader: use it last."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = await stream.frame(timeout=left)
        except TimeoutError:
            return None
        assert frame is not None, "the stream ended"
        if frame.is_event and frame.event != "progress":
            return frame.json
    return None


async def test_presence_list_of_fifty_agents(service: ServiceProcess) -> None:
    """50 agents hold a stream with a lease and a key; closing 10 streams removes exactly
    their 10 keys within TTL + 1 s of each close (measured by the service's event time,
    not by when this loaded test process reads it), and no other lease ends meanwhile nor
    for 1.5 TTLs after. Every wait is on an event, with a generous bound."""
    ns = fresh_ns()
    ttl = 2.0  # keepalives every ttl/3: a 2-core machine under load can stall 0.3 s
    patience = 30.0  # the bound on waiting for an event that is due
    async with client_for(service) as c, client_for(service) as streams_client:
        # Every lease ending in this namespace, from before the first grant.
        async with watch(c, ns=ns, types="lease.expired") as ended:
            stacks: list[contextlib.AsyncExitStack] = []
            try:
                for i in range(50):
                    lease = f"agent-{i}"
                    r = await c.post("/v1/leases", params={"ns": ns},
                                     json={"ttl": ttl, "id": lease})
                    assert r.status_code == 201, r.text
                    stack = contextlib.AsyncExitStack()
                    stacks.append(stack)
                    await stack.enter_async_context(
                        watch(streams_client, ns=ns, lease=lease, pattern="none")
                    )
                    r = await c.put(f"/v1/kv/agents/{i}", params={"ns": ns, "lease": lease},
                                    json={"agent": i})
                    assert r.status_code == 201, r.text
                leaving = sorted(random.sample(range(50), 10))
                closed_at: dict[str, float] = {}
                for i in leaving:
                    await stacks[i].aclose()
                    closed_at[f"agent-{i}"] = time.time()
                expired: dict[str, list[str]] = {}
                deadline = time.monotonic() + ttl + patience
                while len(expired) < 10:
                    event = await next_event_before(ended, deadline)
                    assert event is not None, f"only {sorted(expired)} ended"
                    assert event["type"] == "lease.expired"
                    assert event["key"] in closed_at, f"{event['key']} ended with its stream open"
                    took = server_time(event) - closed_at[event["key"]]
                    assert took <= ttl + 1.0, (event["key"], took)
                    expired[event["key"]] = [ch["key"] for ch in event["changes"]]
                assert expired == {f"agent-{i}": [f"agents/{i}"] for i in leaving}
                # The other streams keep their leases alive well past their TTL.
                late = await next_event_before(ended, time.monotonic() + ttl * 1.5)
                assert late is None, f"{late['key']} ended with its stream open"
                r = await c.get("/v1/kv", params={"ns": ns, "pattern": "agents/*"})
                remaining = {item["key"] for item in r.json()["items"]}
                assert remaining == {f"agents/{i}" for i in range(50) if i not in leaving}
            finally:
                for stack in stacks:
                    await stack.aclose()


# -- several replicas on one Redis (or one NATS) --------------------------------------------


@pytest.fixture(params=["redis", "nats"])
def shared_url(request: pytest.FixtureRequest) -> str:
    """The URL of a store several replicas share: Redis, or NATS JetStream."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def replica_env(url: str) -> dict[str, str]:
    return {"CORKBOARD_BACKEND": url, "CORKBOARD_LOG_LEVEL": "warning",
            "CORKBOARD_WATCH_PROGRESS_SECONDS": "1"}


async def test_bank_transfer_over_three_replicas(shared_url: str) -> None:
    ns = fresh_ns()
    accounts = [f"acct/{i}" for i in range(ACCOUNTS)]
    with running(*(ServiceProcess(replica_env(shared_url)) for _ in range(3))) as replicas:
        cs = [client_for(s) for s in replicas]
        stacks = contextlib.AsyncExitStack()
        try:
            for key in accounts:
                await cs[0].put(f"/v1/kv/{key}", params={"ns": ns}, json=OPENING_BALANCE)
            watchers = [await stacks.enter_async_context(watch(c, ns=ns, types="txn"))
                        for c in cs]
            deadline = time.monotonic() + BANK_SECONDS
            applied: list[tuple[str, int]] = []

            async def transfer_loop(c: httpx.AsyncClient, rng: random.Random) -> None:
                while time.monotonic() < deadline:
                    a, b = rng.sample(accounts, 2)
                    ra, rb = await asyncio.gather(c.get(f"/v1/kv/{a}", params={"ns": ns}),
                                                  c.get(f"/v1/kv/{b}", params={"ns": ns}))
                    ea, eb = ra.json(), rb.json()
                    amount = rng.randint(1, 50)
                    transfer = uuid.uuid4().hex
                    r = await c.post("/v1/txn", params={"ns": ns}, json={
                        "compare": [{"key": a, "revision": ea["revision"]},
                                    {"key": b, "revision": eb["revision"]}],
                        "success": [
                            {"op": "put", "key": a, "value": ea["value"] - amount},
                            {"op": "put", "key": b, "value": eb["value"] + amount},
                            {"op": "put", "key": f"transfers/{transfer}",
                             "value": {"from": a, "to": b, "amount": amount}},
                        ],
                    })
                    assert r.status_code == 200, r.text
                    if r.json()["succeeded"]:
                        applied.append((transfer, r.json()["revision"]))

            await asyncio.gather(*(transfer_loop(cs[i % 3], random.Random(i))
                                   for i in range(CLIENTS)))
            assert applied  # the test measured something (how much depends on the machine)
            balances = [(await cs[1].get(f"/v1/kv/{k}", params={"ns": ns})).json()["value"]
                        for k in accounts]
            assert sum(balances) == ACCOUNTS * OPENING_BALANCE
            transfers: list[str] = []
            cursor = None
            while True:
                params: dict[str, Any] = {"ns": ns, "pattern": "transfers/*", "limit": 1000,
                                          "values": "false"}
                if cursor:
                    params["cursor"] = cursor
                page = (await cs[2].get("/v1/kv", params=params)).json()
                transfers += [item["key"] for item in page["items"]]
                cursor = page["next_cursor"]
                if not cursor:
                    break
            assert sorted(transfers) == sorted(f"transfers/{t}" for t, _ in applied)
            revisions = sorted(rev for _, rev in applied)
            assert len(set(revisions)) == len(revisions)  # no revision applied twice
            for stream in watchers:
                seen = await next_events(stream, len(revisions))
                assert [e["revision"] for e in seen] == revisions  # once each, in order
                assert all(len(e["changes"]) == 3 for e in seen)
        finally:
            await stacks.aclose()
            for c in cs:
                await c.aclose()


async def test_leader_election_hands_on_when_the_leader_dies(shared_url: str) -> None:
    ns = fresh_ns()
    ttl = 2.0
    sweep = 0.25  # the default CORKBOARD_SWEEP_INTERVAL_SECONDS
    services = [ServiceProcess(replica_env(shared_url)) for _ in range(3)]
    with running(*services) as replicas:
        cs = [client_for(s) for s in replicas]
        stacks = [contextlib.AsyncExitStack() for _ in replicas]
        leader = -1
        try:
            for i, c in enumerate(cs):
                r = await c.post("/v1/leases", params={"ns": ns},
                                 json={"ttl": ttl, "id": f"cand-{i}"})
                assert r.status_code == 201
                await stacks[i].enter_async_context(
                    watch(c, ns=ns, lease=f"cand-{i}", pattern="leader")
                )
            campaign = {"compare": [{"key": "leader", "revision": 0}]}

            async def campaign_once(i: int) -> bool:
                body = {**campaign, "success": [{"op": "put", "key": "leader",
                                                 "value": f"cand-{i}", "lease": f"cand-{i}"}]}
                r = await cs[i].post("/v1/txn", params={"ns": ns}, json=body)
                assert r.status_code == 200, r.text
                won: bool = r.json()["succeeded"]
                return won

            wins = await asyncio.gather(*(campaign_once(i) for i in range(3)))
            assert wins.count(True) == 1
            leader = wins.index(True)
            r = await cs[(leader + 1) % 3].get("/v1/kv/leader", params={"ns": ns})
            assert r.json()["value"] == f"cand-{leader}"
            # Leadership holds while the leader's stream is open: nobody else wins.
            for _ in range(int(ttl / 0.2) + 3):
                assert not any(await asyncio.gather(
                    *(campaign_once(i) for i in range(3) if i != leader)))
                await asyncio.sleep(0.2)
            replicas[leader].kill()  # its stream, and so its keepalives, die with it
            killed_at = time.monotonic()
            with contextlib.suppress(Exception):
                await stacks[leader].aclose()
            others = [i for i in range(3) if i != leader]
            new_leaders: list[int] = []
            while not new_leaders:
                results = await asyncio.gather(*(campaign_once(i) for i in others))
                new_leaders = [i for i, won in zip(others, results, strict=True) if won]
                assert time.monotonic() - killed_at < ttl + sweep + 2.0
                await asyncio.sleep(0.05)
            took = time.monotonic() - killed_at
            assert len(new_leaders) == 1
            assert took <= ttl + sweep + 0.5, took
            r = await cs[others[0]].get("/v1/kv/leader", params={"ns": ns})
            assert r.json()["value"] == f"cand-{new_leaders[0]}"
        finally:
            for i, stack in enumerate(stacks):
                if i != leader:
                    await stack.aclose()
            for c in cs:
                await c.aclose()
