"""Who calls /mcp: the bearer token of the request, checked against the configured
grants exactly as app.auth checks /v1 calls (constant-time SHA-256 comparison; the same
401 problem). The grant found is kept in the request scope for the per-namespace checks
of app.mcp.server. This is the seam to the one access layer (app.auth today).
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.types import Scope

from app.auth import Grant
from app.errors import Unauthorized

#: Where McpEndpoint keeps the caller's grant in the ASGI scope.
GRANT_SCOPE_KEY = "corkboard.grant"


def find_grant(grants: list[Grant], token: str) -> Grant | None:
    digest = hashlib.sha256(token.encode()).digest()
    found = None
    for grant in grants:  # every grant compared: no early exit to time
        if hmac.compare_digest(digest, grant.digest):
            found = grant
    return found


def authenticated(grants: list[Grant], scope: Scope) -> Grant | Unauthorized:
    """The grant of the request's ``Authorization: Bearer`` token, or the 401 to answer."""
    token = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                token = credentials.strip()
            break
    grant = find_grant(grants, token) if token else None
    if grant is not None:
        return grant
    return Unauthorized(
        "A valid bearer token is required (Authorization: Bearer <token>)."
        if token is None
        else "The bearer token is not valid.",
        headers={"WWW-Authenticate": 'Bearer realm="corkboard"'},
    )
