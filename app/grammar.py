"""The names' character sets and lengths, in one place for the two modules that state
them: ``app.syntax`` validates with them, ``app.schemas`` writes them into the OpenAPI
document as JSON Schema. This module imports nothing, so both can import it (``app.syntax``
importing ``app.schemas``, or the reverse, would be an import cycle through
``app.errors`` and ``app.methods``).

Each ``*_CLASS`` is a regex character class valid both in Python's ``re`` and in
ECMA-262 (JSON Schema's dialect): a '-' stands last, so it needs no escape in either.
"""

from __future__ import annotations

#: Keys, lock names, artifact names: the characters, and the length in bytes.
KEY_CLASS = "[A-Za-z0-9._:/@=+-]"
MAX_KEY_BYTES = 512
#: Session, thread, channel and lease ids: key characters without '/'.
ID_CLASS = KEY_CLASS.replace("/", "")
#: Patterns: key characters and the wildcard '*'.
PATTERN_CLASS = "[A-Za-z0-9._:/@=+*-]"
#: Session variable names.
VARIABLE_CLASS = "[A-Za-z0-9_.-]"
MAX_VARIABLE_CHARS = 128
#: Namespaces: 1-63 characters, the first a lowercase letter or a digit.
MAX_NAMESPACE_CHARS = 63
NAMESPACE_REGEX = f"[a-z0-9][a-z0-9_-]{{0,{MAX_NAMESPACE_CHARS - 1}}}"
