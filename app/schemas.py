"""The syntax rules of ``app.syntax`` as JSON Schema, for the OpenAPI document
(``app.openapi``), the request models that document names in bodies, and the routing
rule of which path parameters may hold '/' (``app.methods``), built from the character
sets and lengths in ``app.grammar`` that ``app.syntax`` validates with. Nothing here
validates: ``app.syntax`` does, with its own errors.
"""

from __future__ import annotations

from typing import Any

from app import grammar as g

#: The syntax rules of app.syntax as JSON Schema (ECMA-262 regexes without look-around,
#: so that property-based tools can generate from them), from app.grammar's character
#: sets and lengths. What a regex cannot say (no empty or '..' segment, no leading '/',
#: no action word last) is in the description.
KEY_SCHEMA: dict[str, Any] = {
    "type": "string", "minLength": 1, "maxLength": g.MAX_KEY_BYTES,
    "pattern": f"^{g.KEY_CLASS}+$",
}
ID_SCHEMA: dict[str, Any] = {
    "type": "string", "minLength": 1, "maxLength": g.MAX_KEY_BYTES, "pattern": f"^{g.ID_CLASS}+$",
}
VARIABLE_SCHEMA: dict[str, Any] = {
    "type": "string", "minLength": 1, "maxLength": g.MAX_VARIABLE_CHARS,
    "pattern": f"^{g.VARIABLE_CLASS}+$",
}
PATTERN_SCHEMA: dict[str, Any] = {
    "type": "string", "minLength": 1, "maxLength": g.MAX_KEY_BYTES,
    "pattern": f"^{g.PATTERN_CLASS}+$",
}
NAMESPACE_SCHEMA: dict[str, Any] = {
    "type": "string", "default": "default", "minLength": 1,
    "maxLength": g.MAX_NAMESPACE_CHARS, "pattern": f"^{g.NAMESPACE_REGEX}$",
}
_KEY_RULES = (
    f"1-{g.MAX_KEY_BYTES} bytes of {g.KEY_CLASS}, not starting with '/', with no empty or '..' "
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
    "var": (VARIABLE_SCHEMA,
            f"A variable's name (1-{g.MAX_VARIABLE_CHARS} of {g.VARIABLE_CLASS}) "
            "or its id (var_...)"),
}
