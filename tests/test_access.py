"""Access control (API.md section 7): tokens, grants on namespace patterns, 401 and 403
through every route family, on both backends."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from app.access import TokenConfigError, load_grants
from app.settings import Settings
from tests.helpers import problem

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

READER = "reader-token-0123456789"
WRITER = "writer-token-0123456789"
ADMIN = "admin-token-012345678901"
OTHER = "other-team-token-0123456"
HASHED = "hashed-token-0123456789"
TOKENS = json.dumps([
    {"token": READER, "namespaces": ["team-a", "shared-*"], "permissions": ["read"]},
    {"token": WRITER, "namespaces": ["team-a"], "permissions": ["read", "write"]},
    {"token": ADMIN, "namespaces": ["*"], "permissions": ["read", "write", "admin"]},
    {"token": OTHER, "namespaces": ["team-b"], "permissions": ["read", "write"]},
    {"token_sha256": hashlib.sha256(HASHED.encode()).hexdigest(), "namespaces": ["team-a"],
     "permissions": ["read"], "name": "hashed"},
])

# (method, path, body, permission needed): one row per route family and kind of call.
# Resources add their rows here as they land.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/v1/kv/k", None, "read"),
    ("GET", "/v1/kv", None, "read"),
    ("GET", "/v1/kv/k/history", None, "read"),
    ("GET", "/v1/events", None, "read"),
    ("PUT", "/v1/kv/k", 1, "write"),
    ("PATCH", "/v1/kv/k", {}, "write"),
    ("POST", "/v1/kv/k/increment", {}, "write"),
    ("POST", "/v1/kv/k/touch", {"ttl": 5}, "write"),
    ("DELETE", "/v1/kv/k", None, "write"),
    ("GET", "/v1/locks", None, "read"),
    ("GET", "/v1/locks/l", None, "read"),
    ("POST", "/v1/locks/l", {"owner": "o"}, "write"),
    ("POST", "/v1/locks/l/refresh", {"owner": "o", "token": 1}, "write"),
    ("POST", "/v1/locks/l/release", {"owner": "o", "token": 1}, "write"),
    ("POST", "/v1/locks/l/force-release", None, "admin"),
    ("GET", "/v1/sessions", None, "read"),
    ("PUT", "/v1/sessions/s1", {"metadata": {}}, "write"),
    ("GET", "/v1/sessions/s1/snapshot", None, "read"),
    ("PUT", "/v1/sessions/s1/snapshot", {"session_id": "s1"}, "write"),
    ("GET", "/v1/sessions/s1/variables", None, "read"),
    ("POST", "/v1/sessions/s1/variables", {"name": "t", "type": "float", "value": 1}, "write"),
    ("GET", "/v1/sessions/s1/values", None, "read"),
    ("POST", "/v1/sessions/s1/dedupe", {"key": "m1", "limit": 10}, "write"),
    ("GET", "/v1/sessions/s1/locks", None, "read"),
    ("POST", "/v1/sessions/s1/locks/l/force-release", None, "admin"),
    ("DELETE", "/v1/sessions/s1", None, "write"),
    ("GET", "/v1/artifacts/a", None, "read"),
    ("GET", "/v1/artifacts", None, "read"),
    ("PUT", "/v1/artifacts/a", 1, "write"),
    ("DELETE", "/v1/artifacts/a", None, "write"),
]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: Any, ns: str, token: str | None
) -> httpx.Response:
    headers = bearer(token) if token else {}
    if method == "PATCH":
        headers["content-type"] = "application/merge-patch+json"
        return await client.request(method, path, params={"ns": ns}, headers=headers,
                                    content=json.dumps(body))
    return await client.request(method, path, params={"ns": ns}, headers=headers,
                                json=body if body is not None else None)


@pytest.fixture
async def secured(make_client: ClientFactory) -> Any:
    async with make_client(tokens=TOKENS) as client:
        yield client


async def test_permission_matrix(secured: httpx.AsyncClient) -> None:
    for method, path, body, needed in ROUTES:
        # no token, a wrong token: 401 with a challenge
        r = await call(secured, method, path, body, "team-a", None)
        assert problem(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        problem(await call(secured, method, path, body, "team-a", "not-a-configured-token"),
                401, "unauthorized")
        # a token without the permission: 403
        if needed != "read":
            problem(await call(secured, method, path, body, "team-a", READER), 403, "forbidden")
        if needed == "admin":
            problem(await call(secured, method, path, body, "team-a", WRITER), 403, "forbidden")
        # a token of another namespace: 403, whatever its permissions
        problem(await call(secured, method, path, body, "team-a", OTHER), 403, "forbidden")
        # the granted token is served (any status but 401/403)
        token = {"read": READER, "write": WRITER}.get(needed)
        if token is not None:
            r = await call(secured, method, path, body, "team-a", token)
            assert r.status_code not in (401, 403), (method, path, r.text)
        r = await call(secured, method, path, body, "team-c", ADMIN)
        assert r.status_code not in (401, 403), (method, path, r.text)


async def test_namespace_patterns_match_whole_names(secured: httpx.AsyncClient) -> None:
    problem(await secured.get("/v1/kv", params={"ns": "team-ab"}, headers=bearer(WRITER)),
            403, "forbidden")
    problem(await secured.get("/v1/kv", headers=bearer(WRITER)), 403, "forbidden")  # default
    for ns in ["shared-x", "shared-"]:
        r = await secured.get("/v1/kv", params={"ns": ns}, headers=bearer(READER))
        assert r.status_code == 200
    problem(await secured.get("/v1/kv", params={"ns": "shared"}, headers=bearer(READER)),
            403, "forbidden")


async def test_hashed_tokens_and_unscoped_calls(secured: httpx.AsyncClient) -> None:
    assert (await secured.get("/v1/kv", params={"ns": "team-a"},
                              headers=bearer(HASHED))).status_code == 200
    assert (await secured.get("/v1/capabilities", headers=bearer(READER))).status_code == 200
    problem(await secured.get("/v1/capabilities"), 401, "unauthorized")
    # service endpoints stay open for probes and scrapers
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"]:
        assert (await secured.get(path)).status_code == 200


async def test_query_token_only_for_streams(secured: httpx.AsyncClient) -> None:
    params = {"ns": "team-a", "access_token": READER}
    assert (await secured.get("/v1/events", params=params)).status_code == 200
    problem(await secured.get("/v1/kv", params=params), 401, "unauthorized")
    problem(await secured.get("/v1/kv/k", params=params), 401, "unauthorized")
    problem(await secured.request("PUT", "/v1/kv/k", params={**params, "access_token": WRITER},
                                  json=1), 401, "unauthorized")


async def test_scheme_must_be_bearer(secured: httpx.AsyncClient) -> None:
    for value in [f"Basic {WRITER}", WRITER, "Bearer", "Bearer "]:
        r = await secured.get("/v1/kv", params={"ns": "team-a"}, headers={"authorization": value})
        problem(r, 401, "unauthorized")
    r = await secured.get("/v1/kv", params={"ns": "team-a"},
                          headers={"authorization": f"bearer {WRITER}"})
    assert r.status_code == 200


async def test_refusals_change_nothing_and_do_not_echo_tokens(
    secured: httpx.AsyncClient,
) -> None:
    r = await secured.put("/v1/kv/k", params={"ns": "team-a"}, json=1, headers=bearer(READER))
    body = problem(r, 403, "forbidden")
    assert READER not in r.text and WRITER not in json.dumps(body)
    r = await secured.get("/v1/kv/k", params={"ns": "team-a"}, headers=bearer(WRITER))
    problem(r, 404, "not_found")


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"token": "x"}', "JSON list"),
        ('[{"token": "short", "namespaces": ["a"], "permissions": ["read"]}]', "16 characters"),
        ('[{"namespaces": ["a"], "permissions": ["read"]}]', "exactly one"),
        ('[{"token_sha256": "abc", "namespaces": ["a"], "permissions": ["read"]}]', "64 hex"),
        ('[{"token": "0123456789abcdefg", "namespaces": [], "permissions": ["read"]}]',
         "namespaces"),
        ('[{"token": "0123456789abcdefg", "namespaces": ["A B"], "permissions": ["read"]}]',
         "namespaces"),
        ('[{"token": "0123456789abcdefg", "namespaces": ["a"], "permissions": ["root"]}]',
         "permissions"),
        ('[{"token": "0123456789abcdefg", "namespaces": ["a"], "permissions": ["read"], '
         '"x": 1}]', "unknown fields"),
    ],
)
def test_bad_token_configuration_is_refused(tokens: str, message: str) -> None:
    with pytest.raises(TokenConfigError, match=message) as info:
        load_grants(Settings(tokens=tokens))
    assert "0123456789abcdefg" not in str(info.value)


def test_tokens_file_and_required_tokens(tmp_path: Any) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([{"token": WRITER, "namespaces": ["a"], "permissions": ["read"]}]))
    assert len(load_grants(Settings(tokens_file=str(path)))) == 1
    with pytest.raises(TokenConfigError, match="cannot read"):
        load_grants(Settings(tokens_file=str(tmp_path / "missing.json")))
    with pytest.raises(TokenConfigError, match="CORKBOARD_REQUIRE_TOKENS"):
        load_grants(Settings(require_tokens=True))
