"""The contract (docs/API.md) and the OpenAPI document agree: every operation of the
document is a call named in the contract, every ``/v1`` call the contract names is an
operation, every error code the service can send is explained, and every MCP tool is
listed. The section *Not built yet* is outside the check.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from app import errors
from app.mcp import TOOL_NAMES

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "API.md"
SPEC = ROOT / "openapi" / "openapi.json"
METHODS = ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE")
_CALL_RE = re.compile(r"`(" + "|".join(METHODS) + r") (/[^\s`?]*)")


def built_part() -> str:
    text = DOC.read_text()
    built, marker, _ = text.partition("\n## Not built yet")
    assert marker, "docs/API.md has no '## Not built yet' section"
    return built


def documented_calls() -> set[tuple[str, str]]:
    return {(m, p) for m, p in _CALL_RE.findall(built_part())}


def spec_operations() -> set[tuple[str, str]]:
    spec = orjson.loads(SPEC.read_bytes())
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item}


def test_every_operation_is_documented() -> None:
    missing = sorted(spec_operations() - documented_calls())
    assert not missing, f"operations of openapi.json not named in docs/API.md: {missing}"


def test_every_documented_call_exists() -> None:
    unknown = sorted(
        (m, p) for m, p in documented_calls() - spec_operations() if p.startswith("/v1")
    )
    assert not unknown, f"calls named in docs/API.md that openapi.json lacks: {unknown}"


def error_codes() -> set[str]:
    codes: set[str] = set(errors._STARLETTE_CODES.values())
    pending: list[type[errors.CorkboardError]] = [errors.CorkboardError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    # Codes given at the raise site (Conflict(..., code="lock_held"), ...).
    for source in (ROOT / "app").rglob("*.py"):
        codes.update(re.findall(r"""\bcode\s*=\s*["']([a-z_]+)["']""", source.read_text()))
    return codes


def test_every_error_code_is_explained() -> None:
    text = built_part()
    codes = error_codes()
    assert {"not_found", "stale_fence", "lock_held", "too_many_waiters"} <= codes
    missing = sorted(c for c in codes if f"`{c}`" not in text)
    assert not missing, f"error codes not explained in docs/API.md: {missing}"



def test_every_mcp_tool_is_listed() -> None:
    section = built_part().partition("## 12. Agents over MCP")[2]
    assert section, "docs/API.md has no MCP section"
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))
    assert listed == set(TOOL_NAMES)
