"""The differential test's rules for transactions, pattern deletes and leases (API.md
sections 10 and 11), mixed into ``Differential`` in tests/test_differential.py.

Leases are granted with ids from a small fixed set or without an id; a generated id is
random, so each app keeps its own list of them (``self.generated``) and a request names
the n-th one with the placeholder ``GEN[n]``, replaced per app before it is sent; answers
and events map generated ids to ``<leaseN>`` (tests/differential_common.py).
"""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import strategies as st
from hypothesis.stateful import initialize, rule

from app.settings import Settings
from tests.differential_common import (
    JSON,
    KEYS,
    LOCKS,
    NUMBERS,
    OBJECTS,
    OWNERS,
    PATTERNS,
    REVISIONS,
    SIDS,
    TOKENS,
    Normalizer,
    Renumber,
    answer,
    needs,
)

#: Placeholders for the first generated lease ids (random strings of at most 4
#: characters cannot spell them).
GEN = ("<<generated-lease-0>>", "<<generated-lease-1>>")
#: What a placeholder becomes on an app that has not generated that many leases.
NOT_GENERATED = "never-granted"
MAX_TXN_OPS = Settings().max_txn_ops

LEASE_IDS = st.sampled_from(["L1", "L2", "L-3"])
LEASES = st.sampled_from(["L1", "L2", "L-3", "gone", *GEN])
LEASE_PATTERNS = st.sampled_from(["L*", "*", "lease-*", "L1", "zz*", "*-3"])
#: One call in five fenced.
FENCE = st.tuples(st.integers(0, 4), LOCKS, TOKENS).map(lambda t: None if t[0] else t[1:])


def fence_headers(fence: tuple[str, int] | None) -> dict[str, str]:
    return {"Fence-Lock": fence[0], "Fence-Token": str(fence[1])} if fence else {}


def _key_compare(key: str, what: str, value: Any) -> dict[str, Any]:
    return {"key": key, what: value}


def _lock_compare(lock: str, token: int, sid: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"lock": lock, "token": token}
    if sid is not None:
        out["session"] = sid
    return out


COMPARES = st.one_of(
    st.builds(_key_compare, KEYS, st.just("revision"), REVISIONS),
    st.builds(_key_compare, KEYS, st.just("version"), st.integers(0, 4)),
    st.builds(_key_compare, KEYS, st.just("value"), JSON | st.integers(-3, 3)),
    st.builds(_key_compare, KEYS, st.just("exists"), st.booleans()),
    st.builds(_lock_compare, LOCKS, TOKENS, st.none() | SIDS),
)
BAD_COMPARES = st.sampled_from([
    {}, {"key": "a"}, {"key": "a", "revision": 1, "version": 1}, {"key": "a", "revision": -1},
    {"key": "a", "revision": 1.5}, {"key": "a", "revision": "1"}, {"key": "a", "exists": 1},
    {"lock": "l1"}, {"lock": "l1", "token": 0}, {"lock": "l1", "token": 1, "session": "a/b"},
    {"key": "a", "lock": "l1", "token": 1}, {"key": "a", "revision": 1, "extra": 1},
    {"key": "", "exists": True}, {"key": "a", "version": True}, "a", None, [1],
])


def _put(key: str, value: Any, life: str, lease: str) -> dict[str, Any]:
    out = {"op": "put", "key": key, "value": value}
    if life == "ttl":
        out["ttl"] = "1h"
    elif life == "lease":
        out["lease"] = lease
    return out


def _merge(key: str, merge: Any, initial: Any) -> dict[str, Any]:
    out = {"op": "patch", "key": key, "merge": merge}
    if initial is not None:
        out["initial"] = initial
    return out


def _json_patch(key: str, ops: list[Any], initial: Any) -> dict[str, Any]:
    out = {"op": "patch", "key": key, "json_patch": ops}
    if initial is not None:
        out["initial"] = initial
    return out


def _increment(key: str, by: Any, initial: Any, ttl: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"op": "increment", "key": key}
    for name, value in (("by", by), ("initial", initial), ("ttl", ttl)):
        if value is not None:
            out[name] = value
    return out


PATCH_OPS = st.lists(st.fixed_dictionaries({
    "op": st.sampled_from(["add", "replace", "remove", "test"]),
    "path": st.sampled_from(["/x", "/y", "/x/0", ""]),
    "value": JSON,
}), max_size=2)
OPS = st.one_of(
    st.builds(_put, KEYS, JSON, st.sampled_from(["", "", "", "ttl", "lease", "lease"]),
              st.sampled_from(["L1", "L1", "L2", "gone", GEN[0]])),
    st.builds(lambda key: {"op": "delete", "key": key}, KEYS),
    st.builds(lambda key: {"op": "get", "key": key}, KEYS),
    st.builds(_merge, KEYS, OBJECTS, st.none() | OBJECTS),
    st.builds(_json_patch, KEYS, PATCH_OPS, st.none() | OBJECTS),
    st.builds(_increment, KEYS, st.none() | NUMBERS, st.none() | st.integers(-3, 3),
              st.sampled_from([None, None, "1h"])),
)
BAD_OPS = st.sampled_from([
    {"op": "frob", "key": "a"}, {"op": "put"}, {"op": "put", "key": "a"},
    {"op": "patch", "key": "a"}, {"op": "patch", "key": "a", "merge": {}, "json_patch": []},
    {"op": "patch", "key": "a", "json_patch": {}}, {"op": "get", "key": "a", "x": 1},
    {"op": "put", "key": "a", "value": 1, "ttl": "soon"}, {"op": "increment", "key": "a",
                                                            "by": "1"},
    {"op": "put", "key": "a/", "value": 1}, {"op": "put", "key": "a", "value": 1, "lease": "a/b"},
    {"op": "put", "key": "a", "value": 1, "ttl": "1h", "lease": "L1"},
    {"op": "put", "key": "a", "value": 1, "ttl": -1}, "put", None,
])
BRANCH = st.lists(OPS, max_size=4, unique_by=lambda op: op["key"])
SHAPES = st.sampled_from(["good"] * 8 + ["bad_compare", "bad_op", "two_writes", "too_many",
                                         "too_many_compares", "not_object", "unknown_member"])


class TxnLeaseRules:
    """Rules for ``Differential`` (which provides ``call``, ``run``, ``clients``, ``ns``,
    ``norms`` and ``generated``)."""

    generated: list[list[str]]
    norms: tuple[Normalizer, Normalizer]
    ns: str
    features: frozenset[str]
    renumbered: bool
    renumber: Renumber

    def call(self, method: str, path: str, **kwargs: Any) -> list[httpx.Response]:
        raise NotImplementedError

    def lock_base(self, sid: str | None) -> str:
        raise NotImplementedError

    @initialize(fixed=st.booleans(), generated=st.booleans())
    def some_leases(self, fixed: bool, generated: bool) -> None:
        """Most examples start with a live lease or two, for the rules that attach."""
        if "leases" not in self.features:  # (an initialize rule takes no precondition)
            return
        if fixed:
            self.lease_grant("L1", "1h")
        if generated:
            self.lease_grant(None, 3600)

    # -- transactions ----------------------------------------------------------------

    @needs("txn")
    @rule(compare=st.lists(COMPARES, max_size=3), success=BRANCH, failure=BRANCH,
          shape=SHAPES, data=st.data(), peek=st.booleans(), fence=FENCE)
    def txn(self, compare: list[Any], success: list[Any], failure: list[Any], shape: str,
            data: st.DataObject, peek: bool, fence: tuple[str, int] | None) -> None:
        if "sessions" not in self.features:  # namespace locks only (lock_base)
            compare[:] = [{k: v for k, v in c.items() if k != "session"} for c in compare]
        if peek:  # compare against things as they are, so that success branches run
            compare[:] = [self.as_it_is(c) for c in compare]
        if self.renumbered:  # each engine's revision of that place among the events
            compare[:] = [{**c, "revision": Renumber.placeholder(c["revision"])}
                          if "revision" in c else c for c in compare]
        body: dict[str, Any] = {"compare": compare, "success": success, "failure": failure}
        if shape == "bad_compare":
            compare.insert(data.draw(st.integers(0, len(compare))), data.draw(BAD_COMPARES))
        elif shape == "bad_op":
            branch = data.draw(st.sampled_from([success, failure]))
            branch.insert(data.draw(st.integers(0, len(branch))), data.draw(BAD_OPS))
        elif shape == "two_writes":
            key = data.draw(KEYS)
            success += [{"op": "delete", "key": key}, {"op": "put", "key": key, "value": 1}]
        elif shape == "too_many":
            body["failure"] = [{"op": "get", "key": "a"}] * (MAX_TXN_OPS + 1)
        elif shape == "too_many_compares":
            body["compare"] = [{"key": "a", "exists": True}] * (MAX_TXN_OPS + 1)
        elif shape == "not_object":
            body = data.draw(st.sampled_from([[], "txn", None, {"compare": {}},
                                              {"success": "put"}]))  # type: ignore[assignment]
        elif shape == "unknown_member":
            body["then"] = []
        elif data.draw(st.integers(0, 4)) == 0:  # members may be left out
            for name in data.draw(st.sets(st.sampled_from(["compare", "success", "failure"]))):
                body.pop(name)
        responses = self.call("POST", "/v1/txn", body=body, headers=fence_headers(fence),
                              same=False)
        memory, redis = (answer(r, n) for r, n in zip(responses, self.norms, strict=True))
        assert memory == redis, (body, fence, memory, redis)

    def as_it_is(self, compare: dict[str, Any]) -> dict[str, Any]:
        """``compare`` made to hold now (as both apps agree), by reading what it names."""
        if "lock" in compare:
            found = self.call("GET", f"{self.lock_base(compare.get('session'))}/"
                                     f"{compare['lock']}")[0]
            return {**compare, "token": found.json()["token"]} if found.status_code == 200 \
                else compare
        found = self.call("GET", f"/v1/kv/{compare['key']}")[0]
        entry = found.json() if found.status_code == 200 else None
        what = next(name for name in compare if name != "key")
        if what == "exists":
            return {"key": compare["key"], "exists": entry is not None}
        if what == "value":
            return {"key": compare["key"], "value": entry["value"]} if entry else compare
        if what == "revision" and entry and self.renumbered:  # memory's, as a place
            return {"key": compare["key"], what: self.renumber.canonical(0, entry[what])}
        return {"key": compare["key"], what: entry[what] if entry else 0}

    @needs("txn")
    @rule(pattern=PATTERNS | st.sampled_from(["", "a b", "**"]), fence=FENCE)
    def kv_delete_pattern(self, pattern: str, fence: tuple[str, int] | None) -> None:
        self.call("DELETE", "/v1/kv", params={"pattern": pattern},
                  headers=fence_headers(fence))

    # -- leases ----------------------------------------------------------------------

    @needs("leases")
    @rule(lease_id=st.none() | LEASE_IDS | st.sampled_from(["a/b", ""]),
          ttl=st.sampled_from(["1h"] * 6 + [3600, 0, "0s", -1, "soon", None]))
    def lease_grant(self, lease_id: str | None, ttl: Any) -> None:
        body: dict[str, Any] = {}
        if ttl is not None:
            body["ttl"] = ttl
        if lease_id is not None:
            body["id"] = lease_id
        responses = self.call("POST", "/v1/leases", body=body)
        if lease_id is None and responses[0].status_code == 201:
            for mine, r in zip(self.generated, responses, strict=True):
                mine.append(r.json()["id"])

    @needs("leases")
    @rule(lease=LEASES, what=st.sampled_from(["keepalive", "get", "revoke"]))
    def lease_other(self, lease: str, what: str) -> None:
        if what == "keepalive":
            self.call("POST", f"/v1/leases/{lease}/keepalive")
        else:
            self.call("GET" if what == "get" else "DELETE", f"/v1/leases/{lease}")

    @needs("leases")
    @rule(pattern=LEASE_PATTERNS, limit=st.integers(1, 3))
    def lease_list(self, pattern: str, limit: int) -> None:
        if pattern in ("*", "lease-*"):
            # Generated ids sort differently on each app: one page, compared as a set.
            responses = self.call("GET", "/v1/leases", params={"pattern": pattern,
                                                               "limit": 1000}, same=False)
            found = [answer(r, n) for r, n in zip(responses, self.norms, strict=True)]
            for one in found:
                one["body"]["items"].sort(key=lambda item: item["id"])
            assert found[0] == found[1], found
            return
        cursor = None
        for _ in range(10):
            responses = self.call("GET", "/v1/leases", params={
                "pattern": pattern, "limit": limit, "cursor": cursor})
            if responses[0].status_code != 200:
                return
            cursor = responses[0].json()["next_cursor"]
            if cursor is None:
                return

    @needs("leases")
    @rule(key=KEYS, value=JSON, lease=LEASES, ttl=st.sampled_from([None, None, "1h"]),
          merge=st.booleans())
    def kv_write_on_lease(self, key: str, value: Any, lease: str, ttl: Any,
                          merge: bool) -> None:
        params = {"lease": lease, "ttl": ttl}
        if merge:
            params["initial"] = "{}"
            self.call("PATCH", f"/v1/kv/{key}", params=params, body={"x": value},
                      headers={"Content-Type": "application/merge-patch+json"})
        else:
            self.call("PUT", f"/v1/kv/{key}", params=params, body=value)

    @needs("leases", "locks")
    @rule(sid=st.none() | SIDS, name=LOCKS, owner=OWNERS, lease=LEASES,
          mode=st.sampled_from(["exclusive", "queue", "debounce"]),
          extra=st.sampled_from([None, None, None, "ttl", "wait"]), entry=JSON)
    def lock_acquire_on_lease(self, sid: str | None, name: str, owner: str, lease: str,
                              mode: str, extra: str | None, entry: Any) -> None:
        body: dict[str, Any] = {"owner": owner, "mode": mode, "entry": entry, "lease": lease}
        if extra is not None:
            body[extra] = 60 if extra == "ttl" else 0
        self.call("POST", f"{self.lock_base(sid)}/{name}", body=body)
