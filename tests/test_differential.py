"""The differential test: memory and Redis, and memory and NATS JetStream, give the same
answers to the same requests.

A hypothesis ``RuleBasedStateMachine`` drives two apps through HTTP, one on memory://
and one on a real Redis, with the same random operations (keys with TTL, CAS, merge and
JSON patch, increments, history, listings, pattern deletes; locks in every mode,
fencing; sessions, variables of every type, batches, chat state, dedupe, snapshot export
and import; artifacts; session locks; transactions with every compare, op and malformed
shape; leases granted with and without an id, kept alive, read, listed, revoked, with
keys, locks and transaction puts on them: tests/differential_txn.py) in a fresh
namespace per example. After every step it asserts equal answers (status, problem
``code`` and ``detail``, headers that carry state, and bodies modulo timestamps, random
variable ids and generated lease ids) and equal event streams (every event of the
namespace, read through the long poll, compared at the end of each example: type, key,
session, values, revisions and every other field).

TTLs are long (an hour), except in ``short_lived``: a key, lock, session, artifact or
lease (with a key and a lock on it) of 0.2-1 s, after which both apps are waited for
until each has sent the expiry event, with nothing else happening meanwhile. The number
of examples is bounded in the suite (20); ``CORKBOARD_PARITY_EXAMPLES=2000`` runs more.

On NATS (``test_memory_and_nats_answer_alike``, never skipped with
CORKBOARD_REQUIRE_NATS=1) the machine draws only the rule families whose feature the
NATS app lists in ``supports`` (``needs``; session-scoped lock calls become namespace
lock calls without "sessions"), so the families join by themselves when NATS offers
them. Revisions differ there legitimately
(docs/nats.md: an atomic batch takes a sequence per message, a touch-only session step
or a waiter leaving a line one with no event): every revision of every answer and
event is compared as its place among the namespace's events, and a drawn revision is
sent as each engine's revision of that place (``Renumber``,
tests/differential_common.py); the memory-vs-Redis run compares revisions as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    rule,
    run_state_machine_as_test,
)

from app.settings import Settings
from tests.conftest import flush
from tests.differential_common import (
    ARTIFACTS,
    EVERY_FEATURE,
    JSON,
    KEYS,
    LOCKS,
    LONG_TTL,
    NAMES,
    NUMBERS,
    OBJECTS,
    OWNERS,
    PATTERNS,
    REVISIONS,
    SIDS,
    THREADS,
    TOKENS,
    VAR_TYPES,
    Normalizer,
    Renumber,
    answer,
    json_text,
    needs,
)
from tests.differential_txn import GEN, NOT_GENERATED, TxnLeaseRules
from tests.nats_server import flush_nats
from tests.support import app_client

T = TypeVar("T")

#: Filtered reads of an example's events, compared at its end.
FILTERS = [{"pattern": "c/*"}, {"types": "kv.delete,lease"}, {"session": "s1"}]

EXAMPLES = int(os.environ.get("CORKBOARD_PARITY_EXAMPLES", "20"))
STEPS = int(os.environ.get("CORKBOARD_PARITY_STEPS", "40"))
#: Shrinking replays real HTTP steps and can take many minutes; off unless asked for
#: (the failing sequence is printed either way).
SHRINK = os.environ.get("CORKBOARD_PARITY_SHRINK") == "1"

class Differential(TxnLeaseRules, RuleBasedStateMachine):
    """Each rule sends one request to both apps and compares the answers."""

    loop: asyncio.AbstractEventLoop
    clients: tuple[httpx.AsyncClient, httpx.AsyncClient]
    #: The features whose rules are drawn (``needs``): the second engine's ``supports``.
    features: frozenset[str] = EVERY_FEATURE
    #: Compare revisions as places among the events (``Renumber``: on NATS).
    renumbered = False

    def __init__(self) -> None:
        super().__init__()
        self.ns = "p" + uuid.uuid4().hex[:12]
        self.renumber = Renumber()
        if self.renumbered:
            self.norms = tuple(Normalizer(functools.partial(self.renumber.canonical, n))
                               for n in range(2))
        else:
            self.norms = (Normalizer(), Normalizer())
        self.since = [0, 0]
        self.last_snapshot: list[Any] = [None, None]
        self.generated: list[list[str]] = [[], []]  # each app's generated lease ids
        progress = os.environ.get("CORKBOARD_PARITY_PROGRESS")
        if progress:  # a long run's examples, one line each, for whoever watches it
            with open(progress, "a") as out:
                out.write(self.ns + "\n")

    # -- plumbing --------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
             body: Any = ..., raw: bytes | None = None, headers: dict[str, str] | None = None,
             same: bool = True) -> list[httpx.Response]:
        """Send one request to both apps, in turn; assert equal answers unless ``same`` is
        False (the caller compares what it can)."""
        query = {"ns": self.ns, **{k: v for k, v in (params or {}).items() if v is not None}}
        hdrs = dict(headers or {})
        content: bytes | None = raw
        if body is not ...:
            content = json_text(body)
            hdrs.setdefault("Content-Type", "application/json")

        async def both() -> list[httpx.Response]:
            out = []
            for engine, (client, mine) in enumerate(zip(self.clients, self.generated,
                                                         strict=True)):
                ids = [mine[n] if n < len(mine) else NOT_GENERATED for n in range(len(GEN))]
                sub = functools.partial(self.renumber.substitute, engine)
                sent = None if content is None else self.named_bytes(content, ids)
                if sent is not None and b"<<rev:" in sent:
                    sent = sub(sent.decode(), json=True).encode()
                out.append(await client.request(
                    method, self.named(path, ids),
                    headers={k: sub(v) for k, v in hdrs.items()},
                    params={k: sub(self.named(str(v), ids)) for k, v in query.items()},
                    content=sent))
            if self.renumbered:
                await self.events_seen()
            return out

        responses = self.run(both())
        for r in responses:
            assert r.status_code != 500, (method, path, r.text)
            # A call of a feature the engines lack means a rule family was drawn that
            # ``needs`` should have left out.
            assert r.status_code != 501, (method, path, r.text)
        if same:
            memory, redis = (answer(r, n) for r, n in zip(responses, self.norms, strict=True))
            assert memory == redis, (method, path, query, content, memory, redis)
        return responses

    @staticmethod
    def named(text: str, ids: list[str]) -> str:
        """``text`` with the placeholders of generated lease ids replaced by an app's."""
        for placeholder, lease_id in zip(GEN, ids, strict=True):
            text = text.replace(placeholder, lease_id)
        return text

    @staticmethod
    def named_bytes(content: bytes, ids: list[str]) -> bytes:
        for placeholder, lease_id in zip(GEN, ids, strict=True):
            content = content.replace(placeholder.encode(), lease_id.encode())
        return content

    def rev(self, number: int) -> int | str:
        """A revision for a request (a place among the events when renumbered)."""
        return Renumber.placeholder(number) if self.renumbered else number

    async def events_seen(self) -> None:
        """Tell ``renumber`` of each engine's events since the last call, and its current
        revision. The poll's ``revision`` is its last event's when it found one, and a
        NATS namespace may be past that (a touch-only session step takes a sequence with
        no event), so the current revision is read from a listing, first (the larger of
        the two wins: an expiry may land between the reads)."""
        current = await self.revisions()
        for n, client in enumerate(self.clients):
            seen = self.renumber.revs[n]
            r = await client.get("/v1/events", params={
                "ns": self.ns, "since": seen[-1] if seen else 0, "limit": 10_000})
            assert r.status_code == 200, r.text
            body = r.json()
            self.renumber.saw(n, [e["revision"] for e in body["events"]
                                  if e["type"] != "reset"], max(current[n], body["revision"]))

    def teardown(self) -> None:
        self.events_are_equal()
        for flt in FILTERS:  # as a watcher with a filter sees them (txn changes filtered)
            responses = self.call("GET", "/v1/events", params={"since": 0, **flt})
            assert responses[0].status_code == 200, responses[0].text

    def events_are_equal(self) -> None:
        async def read(client: httpx.AsyncClient, since: int) -> dict[str, Any]:
            r = await client.get("/v1/events", params={"ns": self.ns, "since": since})
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        async def both() -> list[dict[str, Any]]:
            return [await read(c, s) for c, s in zip(self.clients, self.since, strict=True)]

        found = self.run(both())
        if self.renumbered:
            self.run(self.events_seen())
        memory, redis = (n(f["events"]) for f, n in zip(found, self.norms, strict=True))
        assert memory == redis, (memory, redis)
        assert self.norms[0](found[0])["revision"] == self.norms[1](found[1])["revision"]
        self.since = [f["revision"] for f in found]

    # -- keys ------------------------------------------------------------------------

    @rule(key=KEYS, value=JSON, ttl=LONG_TTL,
          cond=st.sampled_from([None, "match", "any", "none"]), rev=REVISIONS)
    def kv_put(self, key: str, value: Any, ttl: Any, cond: str | None, rev: int) -> None:
        headers = {"match": {"If-Match": f'"{self.rev(rev)}"'}, "any": {"If-Match": "*"},
                   "none": {"If-None-Match": "*"}}.get(cond or "", {})
        self.call("PUT", f"/v1/kv/{key}", params={"ttl": ttl}, body=value, headers=headers)

    @rule(key=KEYS, text=st.text(max_size=5))
    def kv_put_text(self, key: str, text: str) -> None:
        self.call("PUT", f"/v1/kv/{key}", raw=text.encode(),
                  headers={"Content-Type": "text/plain"})

    @rule(key=KEYS, rev=st.none() | REVISIONS)
    def kv_get(self, key: str, rev: int | None) -> None:
        self.call("GET", f"/v1/kv/{key}",
                  params={"revision": None if rev is None else self.rev(rev)})

    @rule(key=KEYS)
    def kv_history(self, key: str) -> None:
        self.call("GET", f"/v1/kv/{key}/history")

    @rule(key=KEYS, patch=OBJECTS, initial=st.none() | OBJECTS,
          cond=st.sampled_from([None, "match"]), rev=REVISIONS, ttl=LONG_TTL)
    def kv_merge(self, key: str, patch: Any, initial: Any, cond: str | None, rev: int,
                 ttl: Any) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        if cond:
            headers["If-Match"] = f'"{self.rev(rev)}"'
        params = {"ttl": ttl}
        if initial is not None:
            params["initial"] = orjson.dumps(initial).decode()
        self.call("PATCH", f"/v1/kv/{key}", params=params, raw=orjson.dumps(patch),
                  headers=headers)

    @rule(key=KEYS, ops=st.lists(st.fixed_dictionaries({
        "op": st.sampled_from(["add", "replace", "remove", "test", "copy", "move"]),
        "path": st.sampled_from(["/x", "/y", "/x/0", "/z", "", "/x/-"]),
        "from": st.sampled_from(["/x", "/y"]),
        "value": JSON,
    }), max_size=3))
    def kv_json_patch(self, key: str, ops: list[dict[str, Any]]) -> None:
        self.call("PATCH", f"/v1/kv/{key}", raw=orjson.dumps(ops),
                  headers={"Content-Type": "application/json-patch+json"})

    @rule(key=KEYS, by=st.none() | NUMBERS, initial=st.none() | NUMBERS, ttl=LONG_TTL)
    def kv_increment(self, key: str, by: Any, initial: Any, ttl: Any) -> None:
        parts = []
        if by is not None:
            parts.append(b'"by":' + json_text(by))
        if initial is not None:
            parts.append(b'"initial":' + json_text(initial))
        if ttl is not None:
            parts.append(b'"ttl":' + json_text(ttl))
        self.call("POST", f"/v1/kv/{key}/increment", raw=b"{" + b",".join(parts) + b"}",
                  headers={"Content-Type": "application/json"})

    @rule(key=KEYS, ttl=st.sampled_from(["1h", 0, "2h"]))
    def kv_touch(self, key: str, ttl: Any) -> None:
        self.call("POST", f"/v1/kv/{key}/touch", body={"ttl": ttl})

    @rule(key=KEYS, cond=st.booleans(), rev=REVISIONS)
    def kv_delete(self, key: str, cond: bool, rev: int) -> None:
        self.call("DELETE", f"/v1/kv/{key}",
                  headers={"If-Match": f'"{self.rev(rev)}"'} if cond else {})

    @rule(pattern=PATTERNS, values=st.booleans(), limit=st.integers(1, 3))
    def kv_list(self, pattern: str, values: bool, limit: int) -> None:
        cursor = None
        for _ in range(10):
            responses = self.call("GET", "/v1/kv", params={
                "pattern": pattern, "values": str(values).lower(), "limit": limit,
                "cursor": cursor})
            if responses[0].status_code != 200:
                return
            cursor = responses[0].json()["next_cursor"]
            if cursor is None:
                return

    @needs("locks")
    @rule(key=KEYS, value=JSON, lock=LOCKS, token=TOKENS)
    def kv_fenced_put(self, key: str, value: Any, lock: str, token: int) -> None:
        self.call("PUT", f"/v1/kv/{key}", body=value,
                  headers={"Fence-Lock": lock, "Fence-Token": str(token)})

    @needs("locks")
    @rule(key=KEYS, patch=OBJECTS, lock=LOCKS, token=TOKENS)
    def kv_fenced_patch(self, key: str, patch: Any, lock: str, token: int) -> None:
        self.call("PATCH", f"/v1/kv/{key}", raw=orjson.dumps(patch),
                  headers={"Content-Type": "application/merge-patch+json",
                           "Fence-Lock": lock, "Fence-Token": str(token)})

    # -- locks -----------------------------------------------------------------------

    def lock_base(self, sid: str | None) -> str:
        """A session's locks, or the namespace's (always, without the sessions feature:
        the lock rules then draw namespace locks only)."""
        return f"/v1/sessions/{sid}/locks" if sid and "sessions" in self.features \
            else "/v1/locks"

    @needs("locks")
    @rule(sid=st.none() | SIDS, name=LOCKS, owner=OWNERS,
          mode=st.sampled_from(["exclusive", "queue", "debounce"]),
          ttl=st.sampled_from([None, "1h", 0, 60]), entry=JSON)
    def lock_acquire(self, sid: str | None, name: str, owner: str, mode: str, ttl: Any,
                     entry: Any) -> None:
        body: dict[str, Any] = {"owner": owner, "mode": mode, "entry": entry}
        if ttl is not None:
            body["ttl"] = ttl
        self.call("POST", f"{self.lock_base(sid)}/{name}", body=body)

    @needs("locks")
    @rule(sid=st.none() | SIDS, name=LOCKS, owner=OWNERS, token=TOKENS,
          ttl=st.sampled_from([None, "2h"]))
    def lock_refresh(self, sid: str | None, name: str, owner: str, token: int,
                     ttl: Any) -> None:
        body: dict[str, Any] = {"owner": owner, "token": token}
        if ttl is not None:
            body["ttl"] = ttl
        self.call("POST", f"{self.lock_base(sid)}/{name}/refresh", body=body)

    @needs("locks")
    @rule(sid=st.none() | SIDS, name=LOCKS, owner=OWNERS, token=TOKENS)
    def lock_release(self, sid: str | None, name: str, owner: str, token: int) -> None:
        self.call("POST", f"{self.lock_base(sid)}/{name}/release",
                  body={"owner": owner, "token": token})

    @needs("locks")
    @rule(sid=st.none() | SIDS, name=LOCKS)
    def lock_force_release(self, sid: str | None, name: str) -> None:
        self.call("POST", f"{self.lock_base(sid)}/{name}/force-release")

    @needs("locks")
    @rule(sid=st.none() | SIDS, name=st.none() | LOCKS)
    def lock_read(self, sid: str | None, name: str | None) -> None:
        if name is None:
            self.call("GET", self.lock_base(sid), params={"pattern": "*"})
        else:
            self.call("GET", f"{self.lock_base(sid)}/{name}")

    # -- sessions --------------------------------------------------------------------

    @needs("sessions")
    @rule(sid=SIDS, metadata=OBJECTS, ttl=LONG_TTL)
    def session_put(self, sid: str, metadata: Any, ttl: Any) -> None:
        body: dict[str, Any] = {"metadata": metadata}
        if ttl is not None:
            body["ttl"] = ttl
        self.call("PUT", f"/v1/sessions/{sid}", body=body)

    @needs("sessions")
    @rule(sid=SIDS)
    def session_get(self, sid: str) -> None:
        self.call("GET", f"/v1/sessions/{sid}")

    @needs("sessions")
    @rule(sid=SIDS, lock=st.none() | LOCKS, token=TOKENS)
    def session_delete(self, sid: str, lock: str | None, token: int) -> None:
        headers = {"Fence-Lock": lock, "Fence-Token": str(token),
                   "Fence-Session": sid} if lock else {}
        self.call("DELETE", f"/v1/sessions/{sid}", headers=headers)

    @needs("sessions")
    @rule(pattern=PATTERNS, limit=st.integers(1, 3))
    def session_list(self, pattern: str, limit: int) -> None:
        self.call("GET", "/v1/sessions", params={"pattern": pattern.replace("/", ""),
                                                  "limit": limit})

    @needs("sessions")
    @rule(sid=SIDS, name=NAMES, type_=st.sampled_from(sorted(VAR_TYPES)), data=st.data(),
          with_constraints=st.booleans())
    def var_register(self, sid: str, name: str, type_: str, data: st.DataObject,
                     with_constraints: bool) -> None:
        constraints, values = VAR_TYPES[type_]
        body: dict[str, Any] = {"name": name, "type": type_, "value": data.draw(values)}
        if with_constraints and constraints is not None:
            body["constraints"] = constraints
        elif type_ == "choice":
            body["constraints"] = constraints
        self.call("POST", f"/v1/sessions/{sid}/variables", body=body)

    @needs("sessions")
    @rule(sid=SIDS, name=NAMES, type_=st.sampled_from(sorted(VAR_TYPES)), data=st.data(),
          cond=st.none() | st.integers(0, 4), metadata=st.none() | OBJECTS)
    def var_set(self, sid: str, name: str, type_: str, data: st.DataObject,
                cond: int | None, metadata: Any) -> None:
        body: dict[str, Any] = {"value": data.draw(VAR_TYPES[type_][1])}
        if metadata is not None:
            body["metadata"] = metadata
        headers = {"If-Match": f'"{cond}"'} if cond is not None else {}
        self.call("PUT", f"/v1/sessions/{sid}/variables/{name}", body=body, headers=headers)

    @needs("sessions")
    @rule(sid=SIDS, name=st.none() | NAMES)
    def var_get(self, sid: str, name: str | None) -> None:
        path = f"/v1/sessions/{sid}/variables" + (f"/{name}" if name else "")
        self.call("GET", path)

    @needs("sessions")
    @rule(sid=SIDS, name=NAMES)
    def var_delete(self, sid: str, name: str) -> None:
        self.call("DELETE", f"/v1/sessions/{sid}/variables/{name}")

    @needs("sessions")
    @rule(sid=SIDS, updates=st.dictionaries(NAMES, JSON | st.integers(-5, 105), max_size=3),
          atomic=st.booleans(), metadata=st.none() | OBJECTS)
    def values_write(self, sid: str, updates: dict[str, Any], atomic: bool,
                     metadata: Any) -> None:
        body: dict[str, Any] = {"updates": updates, "atomic": atomic}
        if metadata is not None:
            body["metadata"] = metadata
        self.call("PATCH", f"/v1/sessions/{sid}/values", body=body)

    @needs("sessions")
    @rule(sid=SIDS, names=st.lists(NAMES, min_size=1, max_size=3))
    def values_read(self, sid: str, names: list[str]) -> None:
        self.call("GET", f"/v1/sessions/{sid}/values", params={"names": ",".join(names)})

    @needs("sessions")
    @rule(sid=SIDS, thread=THREADS, on=st.sampled_from(["PUT", "DELETE", "GET"]))
    def subscription(self, sid: str, thread: str, on: str) -> None:
        self.call(on, f"/v1/sessions/{sid}/subscriptions/{thread}")
        self.call("GET", f"/v1/sessions/{sid}/subscriptions")

    @needs("sessions")
    @rule(sid=SIDS, key=st.sampled_from(["m1", "m/2", "m3"]), limit=st.integers(1, 3))
    def dedupe(self, sid: str, key: str, limit: int) -> None:
        self.call("POST", f"/v1/sessions/{sid}/dedupe", body={"key": key, "limit": limit})

    @needs("sessions")
    @rule(sid=SIDS, kind=st.sampled_from(["threads", "channels"]), ident=THREADS,
          method=st.sampled_from(["PUT", "PATCH", "DELETE", "GET"]), state=OBJECTS)
    def chat_state(self, sid: str, kind: str, ident: str, method: str, state: Any) -> None:
        path = f"/v1/sessions/{sid}/{kind}/{ident}/state"
        if method in ("PUT", "PATCH"):
            headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" \
                else {}
            self.call(method, path, raw=orjson.dumps(state),
                      headers=headers or {"Content-Type": "application/json"})
        else:
            self.call(method, path)

    @needs("sessions")
    @rule(sid=SIDS)
    def snapshot_export(self, sid: str) -> None:
        responses = self.call("GET", f"/v1/sessions/{sid}/snapshot")
        self.last_snapshot = [r.json() if r.status_code == 200 else None for r in responses]

    @needs("sessions")
    @rule(sid=SIDS)
    def snapshot_reimport(self, sid: str) -> None:
        """Each backend imports its own last export (their variable ids differ)."""
        if self.last_snapshot[0] is None:
            return

        async def both() -> list[httpx.Response]:
            return [await c.put(f"/v1/sessions/{sid}/snapshot", params={"ns": self.ns},
                                content=orjson.dumps(doc),
                                headers={"Content-Type": "application/json"})
                    for c, doc in zip(self.clients, self.last_snapshot, strict=True)]

        responses = self.run(both())
        if self.renumbered:
            self.run(self.events_seen())
        memory, redis = (answer(r, n) for r, n in zip(responses, self.norms, strict=True))
        assert memory == redis, (memory, redis)

    @needs("sessions")
    @rule(sid=SIDS, doc=st.fixed_dictionaries({}, optional={
        "metadata": OBJECTS,
        "ttl": st.sampled_from([None, 3600, "1h"]),
        "variables": st.dictionaries(
            st.sampled_from(["var_a", "var_b"]),
            st.fixed_dictionaries({"name": NAMES, "type": st.sampled_from(["integer", "json"]),
                                   "value": st.integers(-3, 3)},
                                  optional={"version": st.sampled_from([1, 7, 2**52 - 1,
                                                                        2**52, 2**53 + 1])}),
            max_size=2),
        "subscriptions": st.lists(THREADS, max_size=2),
        "dedupe": st.lists(st.sampled_from(["m1", "m2"]), max_size=2),
        "thread_state": st.dictionaries(THREADS, OBJECTS | st.none(), max_size=2),
        "locks": st.dictionaries(LOCKS, st.fixed_dictionaries(
            {"owner": OWNERS, "token": st.sampled_from([1, 3, 9, 2**52 - 1, 2**53, 2**63])},
            optional={"expires_at": st.sampled_from([None, "1970-01-01T00:00:00Z",
                                                     "2001-01-01T00:00:00Z",
                                                     "2999-01-01T00:00:00Z"]),
                      "ttl": st.sampled_from([30, "1h"])}), max_size=2),
        "pending_locks": st.dictionaries(LOCKS, st.lists(JSON, max_size=2), max_size=2),
    }))
    def snapshot_import(self, sid: str, doc: dict[str, Any]) -> None:
        self.call("PUT", f"/v1/sessions/{sid}/snapshot", body=doc)

    # -- expiry ----------------------------------------------------------------------

    @rule(kind=st.sampled_from(["kv", "lock", "session_lock", "session", "artifact", "lease"]),
          key=KEYS, sid=SIDS, name=LOCKS, owner=OWNERS, artifact=ARTIFACTS)
    def short_lived(self, kind: str, key: str, sid: str, name: str, owner: str,
                    artifact: str) -> None:
        """Something with a short TTL, then wait until both backends have expired it:
        nothing else happens meanwhile, so the expiry is deterministic."""
        if kind not in self.short_kinds():
            kind = "kv"
        before = self.run(self.revisions())
        if kind == "kv":
            responses = self.call("PUT", f"/v1/kv/{key}", params={"ttl": "0.2s"}, body=1)
            wanted = ("kv.expire", key)
        elif kind in ("lock", "session_lock"):
            base = self.lock_base(sid if kind == "session_lock" else None)
            responses = self.call("POST", f"{base}/{name}", body={"owner": owner, "ttl": 0.2})
            wanted = ("lock.expired", name)
        elif kind == "session":
            responses = self.call("PUT", f"/v1/sessions/{sid}", body={"ttl": 0.2})
            wanted = ("session.deleted", sid)
        elif kind == "lease":
            # A key and a lock on a lease of 1 s: three quick calls on each app, then
            # both expire the lease (deleting the key, releasing the lock) in one event.
            responses = self.call("POST", "/v1/leases", body={"id": "Ls", "ttl": 1})
            if responses[0].status_code == 201:
                self.call("PUT", f"/v1/kv/{key}", params={"lease": "Ls"}, body=2)
                base = self.lock_base(sid if owner == "o1" else None)
                self.call("POST", f"{base}/{name}", body={"owner": owner, "lease": "Ls"})
            wanted = ("lease.expired", "Ls")
        else:
            responses = self.call("PUT", f"/v1/artifacts/{artifact}", params={"ttl": "0.2s"},
                                  raw=b"x")
            wanted = ("artifact.delete", artifact)
        if responses[0].status_code >= 300:
            return

        async def expired(client: httpx.AsyncClient, since: int) -> None:
            for _ in range(50):
                r = await client.get("/v1/events", params={
                    "ns": self.ns, "since": since, "wait": "2s", "types": wanted[0]})
                found = r.json()["events"]
                if any(e["key"] == wanted[1] for e in found):
                    return
                since = r.json()["revision"]
            raise AssertionError(f"{wanted} never came")

        async def both() -> None:
            await asyncio.gather(*(expired(c, s) for c, s in
                                   zip(self.clients, before, strict=True)))

        self.run(both())

    def short_kinds(self) -> set[str]:
        """The kinds of ``short_lived`` the engines under test support."""
        wanted = {"kv": {"keys", "ttl"}, "lock": {"locks"}, "session_lock": {"locks", "sessions"},
                  "session": {"sessions"}, "artifact": {"artifacts"},
                  "lease": {"leases", "locks"}}
        return {kind for kind, features in wanted.items() if features <= self.features}

    async def revisions(self) -> list[int]:
        out = []
        for client in self.clients:
            r = await client.get("/v1/kv", params={"ns": self.ns, "pattern": "zz", "limit": 1})
            out.append(r.json()["revision"])  # the namespace's revision
        return out

    # -- artifacts -------------------------------------------------------------------

    @needs("artifacts")
    @rule(key=ARTIFACTS, content=st.binary(max_size=16),
          content_type=st.sampled_from([None, "text/plain", "text/plain;\tq=\"a/b\"",
                                        "application/x.y+json; v=1"]),
          cond=st.sampled_from([None, "none"]), ttl=LONG_TTL)
    def artifact_put(self, key: str, content: bytes, content_type: str | None,
                     cond: str | None, ttl: Any) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        if cond == "none":
            headers["If-None-Match"] = "*"
        self.call("PUT", f"/v1/artifacts/{key}", params={"ttl": ttl}, raw=content,
                  headers=headers)

    @needs("artifacts")
    @rule(key=ARTIFACTS, method=st.sampled_from(["GET", "HEAD", "DELETE"]))
    def artifact_other(self, key: str, method: str) -> None:
        self.call(method, f"/v1/artifacts/{key}")

    @needs("artifacts")
    @rule(pattern=PATTERNS, limit=st.integers(1, 3))
    def artifact_list(self, pattern: str, limit: int) -> None:
        self.call("GET", "/v1/artifacts", params={"pattern": pattern, "limit": limit})


@pytest.fixture(scope="module")
def event_loop_for_machine() -> Any:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_memory_and_redis_answer_alike(redis_url: str, event_loop_for_machine: Any) -> None:
    flush(redis_url)
    run_machine(event_loop_for_machine, redis_url)


def test_memory_and_nats_answer_alike(nats_url: str, event_loop_for_machine: Any) -> None:
    """The same machine on memory vs NATS JetStream, drawing only the rule families the
    NATS app lists in ``supports`` (the others join when their feature lands there).
    Never skipped with CORKBOARD_REQUIRE_NATS=1 (the ``nats_url`` fixture fails then)."""
    flush_nats(nats_url)
    run_machine(event_loop_for_machine, nats_url)


def test_a_touch_only_step_keeps_nats_revisions_in_place(
    nats_url: str, event_loop_for_machine: Any
) -> None:
    """A sequence the machine drew once in CI, cut to its core. On NATS a duplicate
    dedupe key takes a sequence with no event, and the poll's revision stays at the last
    event; a revision named past the events (``rev=2`` while only 1 event exists) must
    not then claim the pattern delete's answer at that sequence (the answer is a place
    after one event on both engines, not the request's second)."""
    flush_nats(nats_url)
    with machine(event_loop_for_machine, nats_url):
        state = Differential()
        state.dedupe(key="m/2", limit=2, sid="s1")
        state.kv_delete(cond=True, key="n", rev=2)
        state.dedupe(key="m/2", limit=2, sid="s1")  # a duplicate: touch-only on NATS
        state.kv_delete_pattern(fence=None, pattern="*d")
        state.teardown()


def run_machine(loop: asyncio.AbstractEventLoop, url: str) -> None:
    """Run ``Differential`` on memory:// vs ``url``, with the features ``url`` supports."""
    with machine(loop, url):
        run_state_machine_as_test(
            Differential,
            settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                              suppress_health_check=list(HealthCheck), database=None,
                              phases=[Phase.explicit, Phase.generate,
                                      *([Phase.shrink] if SHRINK else [])]),
        )


@contextlib.contextmanager
def machine(loop: asyncio.AbstractEventLoop, url: str) -> Iterator[None]:
    """``Differential`` set up on an app on memory:// and one on ``url``, with the
    features ``url`` supports; the apps closed after."""
    stack = contextlib.AsyncExitStack()
    clients = []
    try:
        for backend in ("memory://", url):
            settings_ = Settings(backend=backend, sweep_interval_seconds=0.05)
            clients.append(loop.run_until_complete(
                stack.enter_async_context(app_client(settings_))))
        capabilities = loop.run_until_complete(clients[1].get("/v1/capabilities")).json()
        Differential.loop = loop
        Differential.clients = (clients[0], clients[1])
        Differential.features = frozenset(capabilities["supports"])
        Differential.renumbered = url.startswith("nats://")
        yield
    finally:
        Differential.features = EVERY_FEATURE
        Differential.renumbered = False
        loop.run_until_complete(stack.aclose())
