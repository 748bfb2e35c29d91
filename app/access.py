"""The access layer (API.md sections 7 and 9): for every ``/v1`` call, tokens or none, one
pure-ASGI middleware parses the query string once (a repeated parameter is 400), resolves
and checks the namespace once, and checks the bearer token's grant against exactly that
namespace. The namespace and grant are left in the scope (``corkboard.ns``,
``corkboard.grant``) and every router, the hot path and the watch hub take the namespace
from there; no code reads ``ns`` from the query again. ``authorize`` lets other faces
(MCP) check a namespace named in their own arguments against the same grant.

Threat model in short: anyone who can reach the port is untrusted until they present a
configured token; a token reaches only the namespaces its patterns name, and only with the
permissions it lists. Tokens are compared in constant time, stored as SHA-256 digests
when configured that way, and never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import CorkboardError, Forbidden, InvalidRequest, Unauthorized, error_response
from app.settings import Settings
from app.syntax import check_namespace

logger = logging.getLogger("corkboard.access")

PERMISSIONS = ("read", "write", "admin")
#: /v1 paths that belong to no namespace: any valid token may call them.
UNSCOPED_PATHS = frozenset({"/v1/capabilities"})
#: The only calls that may carry the token in the query string (EventSource cannot set
#: headers); everywhere else a token in a URL would end up in logs and histories.
QUERY_TOKEN_PATHS = frozenset({"/v1/watch", "/v1/events"})
#: Faces outside /v1 whose callers are authenticated here but whose calls name their
#: namespaces in their own arguments, each checked with ``authorize`` (MCP's tools).
SELF_SCOPED_PATHS = frozenset({"/mcp"})
_NS_PATTERN_RE = re.compile(r"[a-z0-9_*-]{1,63}")


class TokenConfigError(ValueError):
    """The configured tokens cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Grant:
    """One configured token: its digest, the namespaces it reaches and what it may do."""

    digest: bytes
    name: str
    namespaces: tuple[re.Pattern[str], ...]
    permissions: frozenset[str]

    def allows(self, ns: str | None, permission: str) -> bool:
        if permission not in self.permissions:
            return False
        if ns is None:
            return True
        for pattern in self.namespaces:
            if pattern.fullmatch(ns):
                return True
        return False


#: The grant of every call when no tokens are configured: everything, everywhere.
OPEN = Grant(b"", "", (re.compile(".*"),), frozenset(PERMISSIONS))


def _namespace_regex(pattern: str) -> re.Pattern[str]:
    # Whole names only: 'team-a' never reaches 'team-ab'; 'team-*' grants the family.
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def parse_grants(raw: Any, source: str) -> list[Grant]:
    if not isinstance(raw, list):
        raise TokenConfigError(f"{source} must be a JSON list of token objects")
    grants = []
    for i, item in enumerate(raw):
        where = f"{source}[{i}]"
        if not isinstance(item, dict):
            raise TokenConfigError(f"{where} must be an object")
        unknown = set(item) - {"token", "token_sha256", "namespaces", "permissions", "name"}
        if unknown:
            raise TokenConfigError(f"{where} has unknown fields {sorted(unknown)}")
        if ("token" in item) == ("token_sha256" in item):
            raise TokenConfigError(f"{where} needs exactly one of 'token' or 'token_sha256'")
        if "token" in item:
            token = item["token"]
            if not isinstance(token, str) or len(token) < 16:
                raise TokenConfigError(f"{where}.token must be a string of 16 characters or more")
            digest = hashlib.sha256(token.encode()).digest()
        else:
            hexdigest = item["token_sha256"]
            if not isinstance(hexdigest, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigest):
                raise TokenConfigError(f"{where}.token_sha256 must be 64 hex digits")
            digest = bytes.fromhex(hexdigest)
        namespaces = item.get("namespaces")
        if (
            not isinstance(namespaces, list)
            or not namespaces
            or not all(isinstance(p, str) and _NS_PATTERN_RE.fullmatch(p) for p in namespaces)
        ):
            raise TokenConfigError(
                f"{where}.namespaces must be a non-empty list of namespace patterns "
                "([a-z0-9_-] and '*')"
            )
        permissions = item.get("permissions")
        if (
            not isinstance(permissions, list)
            or not permissions
            or not all(p in PERMISSIONS for p in permissions)
        ):
            raise TokenConfigError(f"{where}.permissions must list some of {list(PERMISSIONS)}")
        name = item.get("name", f"token-{i}")
        if not isinstance(name, str):
            raise TokenConfigError(f"{where}.name must be a string")
        grants.append(
            Grant(digest, name, tuple(_namespace_regex(p) for p in namespaces),
                  frozenset(permissions))
        )
    return grants


def load_grants(settings: Settings) -> list[Grant]:
    """The tokens of CORKBOARD_TOKENS and CORKBOARD_TOKENS_FILE (both may be set)."""
    grants: list[Grant] = []
    if settings.tokens:
        try:
            raw = json.loads(settings.tokens)
        except json.JSONDecodeError as exc:
            raise TokenConfigError(f"CORKBOARD_TOKENS is not valid JSON: {exc.msg}") from None
        grants += parse_grants(raw, "CORKBOARD_TOKENS")
    if settings.tokens_file:
        path = Path(settings.tokens_file)
        try:
            raw = json.loads(path.read_text())
        except OSError as exc:
            raise TokenConfigError(
                f"cannot read CORKBOARD_TOKENS_FILE {path}: {exc.strerror}"
            ) from None
        except json.JSONDecodeError as exc:
            raise TokenConfigError(
                f"CORKBOARD_TOKENS_FILE {path} is not valid JSON: {exc.msg}"
            ) from None
        grants += parse_grants(raw, str(path))
    if not grants and settings.require_tokens:
        raise TokenConfigError(
            "no access tokens are configured but CORKBOARD_REQUIRE_TOKENS is set: "
            "configure CORKBOARD_TOKENS or CORKBOARD_TOKENS_FILE"
        )
    return grants


def required_permission(method: str, path: str, query: Mapping[str, str] | None = None) -> str:
    if path.endswith("/force-release"):
        return "admin"
    if path == "/v1/watch" and query is not None and query.get("lease"):
        return "write"  # a stream that keeps a lease alive changes state (presence)
    return "read" if method in ("GET", "HEAD") else "write"


def authorize(scope_or_grant: Mapping[str, Any] | Grant | None, ns: str | None,
              permission: str) -> None:
    """Raise Forbidden unless the grant (or the grant the access layer left in a request's
    scope) allows ``permission`` on namespace ``ns`` (None: a call of no namespace). A scope
    the access layer never saw has no grant and is refused."""
    grant = (
        scope_or_grant
        if scope_or_grant is None or isinstance(scope_or_grant, Grant)
        else scope_or_grant.get("corkboard.grant")
    )
    if not isinstance(grant, Grant) or not grant.allows(ns, permission):
        where = f"namespace {ns!r}" if ns is not None else "this call"
        raise Forbidden(f"This token does not grant {permission!r} on {where}.")


def parse_query(query_string: bytes) -> dict[str, str]:
    """Every query parameter, percent-decoded, by name; 400 naming a parameter given twice
    (however encoded: ``ns`` and ``n%73`` are the same name). No API parameter takes
    several values."""
    params: dict[str, str] = {}
    if not query_string:
        return params
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in params:
            raise InvalidRequest(
                f"The query parameter {name[:40]!r} is given more than once; it takes one "
                "value.",
                errors=[{"location": ["query", name[:40]], "message": "repeated parameter"}],
            )
        params[name] = value
    return params


def bearer_token(scope: Scope) -> str | None:
    """The token of the first Authorization header if it is a Bearer one."""
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None


class Gate:
    """The access checks of one call, on its scope: the query parsed once
    (``corkboard.query``), the namespace resolved once (``corkboard.ns``; None on calls of
    no namespace) and, when tokens are configured, the bearer token checked against it
    (401 without a valid token, 403 outside its grant); ``corkboard.grant`` is the grant
    (``OPEN`` without tokens). Used by ``Access`` and by app.hotpath's front."""

    def __init__(self, grants: list[Grant]) -> None:
        self.grants = grants

    def _authenticate(self, token: str) -> Grant | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for grant in self.grants:  # every grant compared: no early exit to time
            if hmac.compare_digest(digest, grant.digest):
                found = grant
        return found

    def admit(self, scope: Scope) -> None:
        """Check the call (raising the CorkboardError to answer) and mark its scope."""
        path = scope["path"]
        method = scope["method"]
        query = parse_query(scope["query_string"])
        scope["corkboard.query"] = query
        grant = OPEN
        if self.grants:
            token = bearer_token(scope)
            if token is None and method == "GET" and path in QUERY_TOKEN_PATHS:
                token = query.get("access_token") or None
            found = self._authenticate(token) if token else None
            if found is None:
                raise Unauthorized(
                    "A valid bearer token is required (Authorization: Bearer <token>)."
                    if token is None
                    else "The bearer token is not valid.",
                    headers={"WWW-Authenticate": 'Bearer realm="corkboard"'},
                )
            grant = found
            scope["corkboard.token"] = grant.name
        if path in SELF_SCOPED_PATHS:
            scope["corkboard.grant"] = grant
            return
        ns = None if path in UNSCOPED_PATHS else check_namespace(query.get("ns", "default"))
        if grant is not OPEN:  # OPEN grants every permission on every (checked) namespace
            authorize(grant, ns, required_permission(method, path, query))
        scope["corkboard.ns"] = ns
        scope["corkboard.grant"] = grant


class Access:
    """For every /v1 call, and for calls to a self-scoped face (/mcp): ``Gate.admit``
    (query, namespace, token and grant), answering its refusal as problem+json."""

    def __init__(self, app: ASGIApp, grants: list[Grant]) -> None:
        self.app = app
        self.gate = Gate(grants)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not (path.startswith("/v1") or path in SELF_SCOPED_PATHS)
            or scope["method"] == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        try:
            self.gate.admit(scope)
        except CorkboardError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)
