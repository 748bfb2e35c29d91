"""Access control (API.md section 7): bearer tokens granting read, write and admin on
namespace patterns, checked for every ``/v1`` call by one pure-ASGI middleware.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import Forbidden, Unauthorized, error_response
from app.settings import Settings

logger = logging.getLogger("corkboard.auth")

PERMISSIONS = ("read", "write", "admin")
#: /v1 paths that belong to no namespace: any valid token may call them.
UNSCOPED_PATHS = frozenset({"/v1/capabilities"})
#: The only calls that may carry the token in the query string (EventSource cannot set
#: headers); everywhere else a token in a URL would end up in logs and histories.
QUERY_TOKEN_PATHS = frozenset({"/v1/watch", "/v1/events"})
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
        return ns is None or any(p.fullmatch(ns) for p in self.namespaces)


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


def required_permission(method: str, path: str) -> str:
    if path.endswith("/force-release"):
        return "admin"
    return "read" if method in ("GET", "HEAD") else "write"


class AccessControl:
    """Refuses /v1 calls without a valid token (401) or outside its grant (403)."""

    def __init__(self, app: ASGIApp, grants: list[Grant]) -> None:
        self.app = app
        self.grants = grants

    def _authenticate(self, token: str) -> Grant | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for grant in self.grants:  # every grant compared: no early exit to time
            if hmac.compare_digest(digest, grant.digest):
                found = grant
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1") or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and credentials.strip():
                    token = credentials.strip()
                break
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        if token is None and method == "GET" and path in QUERY_TOKEN_PATHS:
            token = next((v for k, v in query if k == "access_token"), None)
        grant = self._authenticate(token) if token else None
        if grant is None:
            unauthorized = Unauthorized(
                "A valid bearer token is required (Authorization: Bearer <token>)."
                if token is None
                else "The bearer token is not valid.",
                headers={"WWW-Authenticate": 'Bearer realm="corkboard"'},
            )
            await error_response(unauthorized)(scope, receive, send)
            return
        ns = None if path in UNSCOPED_PATHS else next((v for k, v in query if k == "ns"), "default")
        permission = required_permission(method, path)
        if not grant.allows(ns, permission):
            where = f"namespace {ns!r}" if ns is not None else "this call"
            forbidden = Forbidden(f"This token does not grant {permission!r} on {where}.")
            await error_response(forbidden)(scope, receive, send)
            return
        scope["corkboard.token"] = grant.name
        await self.app(scope, receive, send)
