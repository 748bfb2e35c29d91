"""The syntax rules of ``app.syntax`` as JSON Schema, for the OpenAPI document
(``app.openapi``), the request models that document names in bodies, and the routing
rule of which path parameters may hold '/' (``app.methods``). Nothing here validates:
``app.syntax`` does, with its own errors.
"""

from __future__ import annotations

from typing import Any

#: The syntax rules of app.syntax as JSON Schema (ECMA-262 regexes without look-around,
#: so that property-based tools can generate from them). What a regex cannot say (no
#: empty or '..' segment, no leading '/', no action word last) is in the description.
_KEY_CHARS = r"[A-Za-z0-9._:/@=+-]"
KEY_SCHEMA: dict[str, Any] = {
    "type": "string", "minLength": 1, "maxLength": 512, "pattern": f"^{_KEY_CHARS}+$",
}
ID_SCHEMA: dict[str, Any] = {
    "type": "string", "minLength": 1, "maxLength": 512, "pattern": r"^[A-Za-z0-9._:@=+-]+$",
}
VARIABLE_SCHEMA: dict[str, Any] = {
    "type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^[A-Za-z0-9_.-]+$",
}
PATTERN_SCHEMA: dict[str, Any] = {
    "type": "string", "minLength": 1, "maxLength": 512, "pattern": r"^[A-Za-z0-9._:/@=+*-]+$",
}
NAMESPACE_SCHEMA: dict[str, Any] = {
    "type": "string", "default": "default", "minLength": 1, "maxLength": 63,
    "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$",
}
_KEY_RULES = (
    "1-512 bytes of [A-Za-z0-9._:/@=+-], not starting with '/', with no empty or '..' "
    "segment; '/' is sent unescaped or as %2F"
)
#: Path parameters by name: (schema, description).
PATH_PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "key": (KEY_SCHEMA, _KEY_RULES + "; a key may not end in the segment history, "
            "increment or touch (invalid_key)"),
    "name": (KEY_SCHEMA, _KEY_RULES + "; a lock name may not end in the segment refresh, "
             "release or force-release (invalid_key)"),
    "sid": (ID_SCHEMA, "Session id: key syntax without '/'"),
    "thread": (ID_SCHEMA, "Thread id: key syntax without '/'"),
    "channel": (ID_SCHEMA, "Channel id: key syntax without '/'"),
    "lease_id": (ID_SCHEMA, "Lease id: key syntax without '/'"),
    "var": (VARIABLE_SCHEMA, "A variable's name (1-128 of [A-Za-z0-9_.-]) or its id (var_...)"),
}
