"""Generate the sync client (corkboard/client/_sync/) from the async one (_async/).

The async client is the one written by hand; this rewrites each module with ``await``
and ``async`` removed and the async names swapped for their sync twins (httpcore's
approach). ``python scripts/unasync.py`` writes the files; ``--check`` fails when a
generated file is out of date (a test runs it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "corkboard" / "client" / "_async"
TARGET = ROOT / "corkboard" / "client" / "_sync"

#: Whole-word replacements, applied in order.
NAMES = [
    ("corkboard.client._async", "corkboard.client._sync"),
    ("AsyncCorkboard", "Corkboard"),
    ("AsyncArtifacts", "Artifacts"),
    ("AsyncSessions", "Sessions"),
    ("AsyncLocks", "Locks"),
    ("AsyncLock", "Lock"),
    ("AsyncLeases", "Leases"),
    ("AsyncLease", "Lease"),
    ("AsyncTxn", "Txn"),
    ("AsyncKeys", "Keys"),
    ("AsyncFeed", "Feed"),
    ("AsyncWatch", "Watch"),
    ("AsyncBase", "Base"),
    ("AsyncTicker", "Ticker"),
    ("async_sleep", "sleep"),
    ("async_upload_body", "upload_body"),
    ("AsyncPageFetch", "PageFetch"),
    ("AsyncIterator", "Iterator"),
    ("AsyncIterable", "Iterable"),
    ("AsyncGenerator", "Generator"),
    ("asynccontextmanager", "contextmanager"),
    ("AsyncClient", "Client"),
    ("AsyncBaseTransport", "BaseTransport"),
    ("StopAsyncIteration", "StopIteration"),
    ("__aenter__", "__enter__"),
    ("__aexit__", "__exit__"),
    ("__aiter__", "__iter__"),
    ("__anext__", "__next__"),
    ("aclose", "close"),
    ("aiter_bytes", "iter_bytes"),
    ("aiter_lines", "iter_lines"),
    ("aread", "read"),
    ("An asyncio client", "A synchronous client"),
    ("asyncio client", "synchronous client"),
]
PHRASES = [
    (re.compile(r"\basync (def|with|for)\b"), r"\1"),
    (re.compile(r"\bawait "), ""),
]


def convert(text: str) -> str:
    for old, new in NAMES:
        text = re.sub(rf"\b{re.escape(old)}\b", new, text)
    for pattern, replacement in PHRASES:
        text = pattern.sub(replacement, text)
    return IMPORT_LINE.sub(_unique_names, text)


#: A one-line ``from ... import a, b``: both twins of a name (``AsyncIterator`` and
#: ``Iterator``) become the same name there, imported once.
IMPORT_LINE = re.compile(r"^(from \S+ import )([\w, ]+)$", re.MULTILINE)


def _unique_names(match: re.Match[str]) -> str:
    names = dict.fromkeys(name.strip() for name in match.group(2).split(","))
    return match.group(1) + ", ".join(names)


def generated() -> dict[Path, str]:
    out: dict[Path, str] = {}
    for source in sorted(SOURCE.glob("*.py")):
        text = source.read_text()
        if source.name == "__init__.py":
            body = '"""The sync client, generated from ``_async`` by ``scripts/unasync.py``."""\n'
        else:
            header = f"# Generated from _async/{source.name} by scripts/unasync.py: do not edit.\n"
            body = header + convert(text)
        out[TARGET / source.name] = body
    return out


def main(argv: list[str]) -> int:
    files = generated()
    if "--check" in argv:
        stale = [str(p.relative_to(ROOT)) for p, text in files.items()
                 if not p.exists() or p.read_text() != text]
        extra = [str(p.relative_to(ROOT)) for p in TARGET.glob("*.py") if p not in files]
        if stale or extra:
            print("out of date: " + ", ".join(stale + extra)
                  + " (run python scripts/unasync.py)", file=sys.stderr)
            return 1
        return 0
    TARGET.mkdir(exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
