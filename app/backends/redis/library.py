"""The Corkboard scripts as one Redis Functions library (Redis 7.0 or later).

``common.lua`` and the ``lib_*.lua`` libraries define the helpers every script uses;
each other ``lua/*.lua`` file is a script's body. As ``EVALSHA`` scripts, every call ran
the whole prelude again (about 80 closures and their tables: some 30 us of the server's
time per call, more than the commands the script then ran). Loaded once with
``FUNCTION LOAD``, the helpers are made when the library loads, and a call (``FCALL``)
only sets its state (``begin`` in common.lua: the namespace, the bounds, the time) and
runs its body.

The library's name and its functions' names carry a hash of its source
(``cb_<hash>`` and ``cb_<hash>_<script>``), so processes of two versions (a rolling
upgrade) each call their own code; a server that lost its functions (a restart without
persistence, ``FUNCTION FLUSH``, a new cluster master) answers "Function not found",
and the caller loads the library there and sends the call again (``nodes.py``).
Libraries of older versions stay on the server until deleted (``FUNCTION DELETE``;
docs/deploy.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from redis.exceptions import ResponseError


@dataclass(frozen=True, slots=True)
class Library:
    """The library's source and the function name of each script."""

    name: str
    source: str
    functions: dict[str, str]


def load_library() -> Library:
    return build_library(resources.files("app.backends") / "lua")


def build_library(folder: Traversable, name: str | None = None) -> Library:
    """The library of the scripts in ``folder`` (common.lua, lib_*.lua, and a body per
    other file), named ``name`` or ``cb_<hash of the source>``."""
    prelude = (folder / "common.lua").read_text()
    libraries = sorted(
        p.name for p in folder.iterdir() if p.name.startswith("lib_") and p.name.endswith(".lua")
    )
    prelude += "".join("\n" + (folder / lib).read_text() for lib in libraries)
    bodies = {
        p.name[:-4]: p.read_text()
        for p in folder.iterdir()
        if p.name.endswith(".lua") and p.name != "common.lua" and not p.name.startswith("lib_")
    }
    if name is None:
        digest = hashlib.sha1(prelude.encode())
        for script in sorted(bodies):
            digest.update(b"\0" + script.encode() + b"\0" + bodies[script].encode())
        name = f"cb_{digest.hexdigest()[:16]}"
    functions = {script: f"{name}_{script}" for script in bodies}
    parts = [f"#!lua name={name}\n", prelude]
    for script in sorted(bodies):
        # Each body is a function of its own; `begin` sets the call's state first, and
        # `finish` flags a deadline the global index must hear of (common.lua).
        parts.append(
            f"\ndo\nlocal function body()\n{bodies[script]}\nend\n"
            f"redis.register_function('{functions[script]}', function(keys, args)\n"
            "  local refused = begin(keys, args)\n"
            "  if refused then return refused end\n"
            "  return finish(body())\nend)\nend\n"
        )
    return Library(name, "".join(parts), functions)


def function_missing(answer: object) -> bool:
    """Whether a reply says the called function is not on that server (it was refused
    before running anything)."""
    return isinstance(answer, ResponseError) and str(answer).startswith("Function not found")
