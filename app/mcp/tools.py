"""The MCP tools (API.md section 12): each one's JSON Schema input (a pydantic model),
the permission it needs on its ``ns``, and what it does, through the same checks and
backend calls as the HTTP routers (app.routers.*), so the rules are written once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt
from starlette.datastructures import Headers

from app.artifacts.base import BlobMissing, BlobStore
from app.backends.base import NO_CONDITION, Backend, Precondition
from app.domain.artifacts import NO_ARTIFACT_CONDITION
from app.errors import BackendUnavailable, InvalidRequest, NotFound, PayloadTooLarge
from app.events import EventFilter, Hub
from app.models import Duration
from app.routers.artifacts.parsing import artifact_key, content_type_of
from app.routers.artifacts.transfer import RESOLVE_ATTEMPTS, store_artifact
from app.routers.common import MERGE_PATCH, PageRequest, dump_json
from app.routers.events import poll
from app.routers.kv import (
    JSON_PATCH,
    key_of,
    lease_of,
    patch_update,
    read_key,
    stored_value,
)
from app.routers.leases import LeaseGrantRequest, grant, keepalive
from app.routers.locks import (
    LockAcquireRequest,
    LockRefreshRequest,
    LockReleaseRequest,
    acquire_request,
    lock_name,
    refresh_ttl_ms,
)
from app.routers.sessions import BatchWriteRequest, write_values
from app.routers.txn import run_txn
from app.settings import Settings
from app.syntax import check_id, duration_ms, parse_duration
from app.variables import check_ident

#: The longest wait_for_change may wait, in seconds (API.md section 12).
MAX_CHANGE_WAIT_SECONDS = 60.0
#: The largest artifact artifact_get_text returns whole.
MAX_TEXT_BYTES = 1024 * 1024
Permission = Literal["read", "write"]


@dataclass(frozen=True, slots=True)
class Parts:
    """What the tools work on: the app's own backend, hub, artifact store and settings."""

    backend: Backend
    hub: Hub
    store: BlobStore
    settings: Settings


# -- inputs --------------------------------------------------------------------------

_NS = Field("default", description="Namespace (1-63 of [a-z0-9_-]); default 'default'")
_KEY = Field(description="Key: 1-512 bytes of [A-Za-z0-9._:/@=+-], '/' separates segments")
_TTL = Field(None, description="Expiry: seconds (30, 0.25) or '250ms', '30s', '5m'; 0 = none")
_IF_REVISION = Field(
    None, ge=0, description="Apply only if the key is at this revision (0: only if absent)"
)


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ns: str = _NS


class KvGet(_Input):
    key: str = _KEY
    revision: int | None = Field(None, ge=0, description="Read the value at this revision")


class KvPut(_Input):
    key: str = _KEY
    value: Any = Field(description="Any JSON value")
    if_revision: int | None = _IF_REVISION
    ttl: Duration | None = _TTL
    lease: str | None = Field(
        None, description="Attach the key to this live lease (not with ttl)"
    )


class KvDelete(_Input):
    key: str = _KEY
    if_revision: int | None = _IF_REVISION


class KvList(_Input):
    pattern: str = Field("*", description="'*' matches any run of characters")
    values: bool = Field(True, description="Include values")
    limit: int | None = Field(
        None, ge=1,
        description="Page size (at most the listing maximum); 100, or that maximum when lower",
    )
    cursor: str | None = Field(None, description="next_cursor of the previous page")


class KvPatch(_Input):
    key: str = _KEY
    merge: Any = Field(None, description="An RFC 7396 merge patch (give this or operations)")
    operations: list[dict[str, Any]] | None = Field(
        None, description="RFC 6902 operations [{op, path, value?, from?}] (or merge)"
    )
    initial: Any = Field(None, description="Starting value when the key is missing")
    if_revision: int | None = _IF_REVISION
    ttl: Duration | None = Field(None, description="New expiry; absent keeps the current")


class KvIncrement(_Input):
    key: str = _KEY
    by: StrictInt | StrictFloat = Field(1, description="Amount to add (may be negative)")
    initial: StrictInt | StrictFloat = Field(0, description="Value when the key is missing")
    ttl: Duration | None = Field(None, description="Expiry applied only when created")


class WaitForChange(_Input):
    pattern: str | None = Field(None, description="Key pattern; absent: every change")
    since: int | None = Field(
        None, ge=0, description="Revision already seen; absent: changes from now on"
    )
    timeout: float = Field(
        30.0, ge=0, le=MAX_CHANGE_WAIT_SECONDS, description="Seconds to wait (at most 60)"
    )
    types: str | None = Field(None, description="Comma list of event types or prefixes")


class Transaction(_Input):
    compare: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Compares, all of which must hold: {key, revision|version|value|exists} "
        "or {lock, token, session?}",
    )
    success: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Ops applied when every compare holds: {op: put|delete|get|patch|"
        "increment, key, ...} as in POST /v1/txn",
    )
    failure: list[dict[str, Any]] = Field(
        default_factory=list, description="Ops applied otherwise (same shape as success)"
    )


class LeaseGrant(LeaseGrantRequest):
    ns: str = _NS


class LeaseKeepalive(_Input):
    id: str = Field(description="The lease id")


class LockAcquire(LockAcquireRequest):
    name: str = Field(description="Lock name (key syntax)")
    ns: str = _NS


class LockRefresh(LockRefreshRequest):
    name: str = Field(description="Lock name")
    ns: str = _NS


class LockRelease(LockReleaseRequest):
    name: str = Field(description="Lock name")
    ns: str = _NS


class SessionGetVariables(_Input):
    session: str = Field(description="Session id")
    names: list[str] | None = Field(None, description="Names or ids; absent: every variable")


class SessionSetVariables(BatchWriteRequest):
    session: str = Field(description="Session id")
    ns: str = _NS


class ArtifactGetText(_Input):
    key: str = Field(description="Artifact key")


class ArtifactPutText(_Input):
    key: str = Field(description="Artifact key")
    text: str = Field(description="The content, stored as UTF-8")
    content_type: str = Field("text/plain; charset=utf-8", description="Content-Type kept")
    ttl: Duration | None = _TTL


# -- what each tool does ---------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-ready Python data of a domain value (entries hold raw JSON fragments)."""
    return orjson.loads(orjson.dumps(value))


def _condition(if_revision: int | None) -> Precondition:
    if if_revision is None:
        return NO_CONDITION
    if if_revision == 0:
        return Precondition(must_not_exist=True)
    return Precondition(match_revision=if_revision)


def _ttl_ms(ttl: Duration | None) -> int:
    return duration_ms(parse_duration(ttl))


async def kv_get(parts: Parts, a: KvGet) -> dict[str, Any]:
    entry = await read_key(parts.backend, a.ns, key_of(a.key), a.revision)
    return {**_plain(entry.as_dict())}


async def kv_put(parts: Parts, a: KvPut) -> dict[str, Any]:
    key = key_of(a.key)
    value = stored_value(a.value, parts.settings.max_value_bytes)
    lease = lease_of(a.lease, None if a.ttl is None else str(a.ttl))
    result = await parts.backend.kv_put(
        a.ns, key, value, ttl_ms=_ttl_ms(a.ttl), condition=_condition(a.if_revision),
        lease=lease,
    )
    return {**_plain(result.entry.as_dict()), "created": result.created}


async def kv_delete(parts: Parts, a: KvDelete) -> dict[str, Any]:
    deleted = await parts.backend.kv_delete(
        a.ns, key_of(a.key), condition=_condition(a.if_revision)
    )
    return {"deleted": deleted is not None}


async def kv_list(parts: Parts, a: KvList) -> dict[str, Any]:
    page = PageRequest.parse(a.pattern, a.limit, a.cursor, parts.settings.max_list_limit)
    found = await parts.backend.kv_list(a.ns, page.pattern, limit=page.limit, after=page.after)
    return {
        "items": [_plain(e.as_dict(with_value=a.values)) for e in found.items],
        "next_cursor": page.next_cursor(found.next_cursor),
        "revision": found.revision,
    }


async def kv_patch(parts: Parts, a: KvPatch) -> dict[str, Any]:
    key = key_of(a.key)
    if ("merge" in a.model_fields_set) == (a.operations is not None):
        raise InvalidRequest("Give either merge (RFC 7396) or operations (RFC 6902).")
    media, patch = (JSON_PATCH, a.operations) if a.operations is not None else (
        MERGE_PATCH, a.merge)
    initial = (
        dump_json(a.initial, what="initial value") if "initial" in a.model_fields_set else None
    )
    result = await parts.backend.kv_update(
        a.ns, key,
        patch_update(media, patch, parts.settings.max_value_bytes, parts.settings.max_patch_ops),
        initial=initial, ttl_ms=_ttl_ms(a.ttl) if a.ttl is not None else None,
        condition=_condition(a.if_revision),
    )
    return {**_plain(result.entry.as_dict()), "created": result.created}


async def kv_increment(parts: Parts, a: KvIncrement) -> dict[str, Any]:
    result = await parts.backend.kv_increment(
        a.ns, key_of(a.key), a.by, initial=a.initial, ttl_ms=_ttl_ms(a.ttl)
    )
    return {**_plain(result.entry.as_dict()), "created": result.created}


async def wait_for_change(parts: Parts, a: WaitForChange) -> dict[str, Any]:
    flt = EventFilter.parse(a.pattern, a.types, None)
    since = a.since if a.since is not None else await parts.backend.current_revision(a.ns)
    found, revision = await poll(parts.hub, a.ns, flt, since, a.timeout, 1000)
    return {"events": [orjson.loads(f.data) for f in found], "revision": revision}


async def txn(parts: Parts, a: Transaction) -> dict[str, Any]:
    body = {"compare": a.compare, "success": a.success, "failure": a.failure}
    outcome = await run_txn(parts.backend, parts.settings, a.ns, body, fence=None)
    result: dict[str, Any] = orjson.loads(outcome.to_json())
    return result


async def lease_grant(parts: Parts, a: LeaseGrant) -> dict[str, Any]:
    info = await grant(parts.backend, a.ns, a)
    return {**_plain(info.as_dict())}


async def lease_keepalive(parts: Parts, a: LeaseKeepalive) -> dict[str, Any]:
    info = await keepalive(parts.backend, a.ns, a.id)
    return {**_plain(info.as_dict())}


async def lock_acquire(parts: Parts, a: LockAcquire) -> dict[str, Any]:
    name = lock_name(a.name)
    outcome = await parts.backend.lock_acquire(
        a.ns, "", name, acquire_request(a, parts.settings)
    )
    result: dict[str, Any] = orjson.loads(outcome.to_json())
    return result


async def lock_refresh(parts: Parts, a: LockRefresh) -> dict[str, Any]:
    info = await parts.backend.lock_refresh(
        a.ns, "", lock_name(a.name), a.owner, a.token, refresh_ttl_ms(a)
    )
    return {"status": "refreshed", **_plain(info.as_dict())}


async def lock_release(parts: Parts, a: LockRelease) -> dict[str, Any]:
    released = await parts.backend.lock_release(a.ns, "", lock_name(a.name), a.owner, a.token)
    result: dict[str, Any] = orjson.loads(released.to_json())
    return result


async def session_get_variables(parts: Parts, a: SessionGetVariables) -> dict[str, Any]:
    sid = check_id(a.session, what="session id")
    if a.names is None:
        found = {v.name: v for v in await parts.backend.var_list(a.ns, sid)}
    else:
        idents = list(dict.fromkeys(check_ident(n) for n in a.names))
        found = await parts.backend.var_read(a.ns, sid, idents)
    return {"variables": {ident: _plain(v.as_dict()) for ident, v in found.items()}}


async def session_set_variables(parts: Parts, a: SessionSetVariables) -> dict[str, Any]:
    sid = check_id(a.session, what="session id")
    result = await write_values(parts.backend, parts.settings, a.ns, sid, a, fence=None)
    return {**_plain(result)}


async def artifact_get_text(parts: Parts, a: ArtifactGetText) -> dict[str, Any]:
    key = artifact_key(a.key)
    for _ in range(RESOLVE_ATTEMPTS):
        meta = await parts.backend.artifact_get(a.ns, key)
        if meta is None:
            raise NotFound(f"Artifact {key!r} does not exist.")
        if meta.size > MAX_TEXT_BYTES:
            raise PayloadTooLarge(
                f"Artifact {key!r} is {meta.size} bytes; artifact_get_text returns at most "
                f"{MAX_TEXT_BYTES} (download it over HTTP)."
            )
        try:
            reader = await parts.store.open(meta.blob, meta.size)
        except BlobMissing:
            continue  # replaced between the two reads: resolve again
        try:
            data = b"".join([piece async for piece in reader.stream(0, meta.size)])
        finally:
            await reader.close()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                f"Artifact {key!r} is not UTF-8 text ({meta.content_type}); download it "
                "over HTTP."
            ) from exc
        return {**_plain(meta.as_dict()), "text": text}
    raise BackendUnavailable(f"The artifact store has no bytes for artifact {key!r}.")


async def artifact_put_text(parts: Parts, a: ArtifactPutText) -> dict[str, Any]:
    key = artifact_key(a.key)
    content_type = content_type_of(Headers({"content-type": a.content_type}))
    data = a.text.encode("utf-8")

    async def body() -> AsyncIterator[bytes]:
        yield data

    result = await store_artifact(
        parts.backend, parts.settings, parts.store, a.ns, key, body(),
        content_type=content_type, ttl_ms=_ttl_ms(a.ttl), condition=NO_ARTIFACT_CONDITION,
        fence=None,
    )
    return {**_plain(result.meta.as_dict()), "created": result.created}


# -- the catalogue ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool: its input model, the permission it needs on ``ns``, and its function."""

    name: str
    description: str
    model: type[BaseModel]
    permission: Permission
    run: Callable[[Parts, Any], Awaitable[dict[str, Any]]]


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("kv_get", "Read a key's entry (value, revision, version, expiry).", KvGet,
             "read", kv_get),
    ToolSpec("kv_put", "Store a JSON value at a key; if_revision makes it a compare-and-swap "
             "(0: only if absent); lease attaches it to a live lease.", KvPut, "write",
             kv_put),
    ToolSpec("kv_delete", "Delete a key (deleted: false when it did not exist).", KvDelete,
             "write", kv_delete),
    ToolSpec("kv_list", "List keys matching a pattern, in key order, paged by cursor.", KvList,
             "read", kv_list),
    ToolSpec("kv_patch", "Update a key's value atomically with a merge patch or JSON Patch "
             "operations.", KvPatch, "write", kv_patch),
    ToolSpec("kv_increment", "Add a number to a key's value atomically.", KvIncrement,
             "write", kv_increment),
    ToolSpec("wait_for_change", "Wait up to timeout seconds (at most 60) for changes after "
             "since (absent: now) and return them with the revision to continue from.",
             WaitForChange, "read", wait_for_change),
    ToolSpec("txn", "Compare keys (and lock tokens), then apply the success or the failure "
             "ops atomically, at one revision.", Transaction, "write", txn),
    ToolSpec("lease_grant", "Grant a lease of ttl (keys put with lease=id live as long as "
             "it is kept alive).", LeaseGrant, "write", lease_grant),
    ToolSpec("lease_keepalive", "Keep a lease alive for another ttl.", LeaseKeepalive,
             "write", lease_keepalive),
    ToolSpec("lock_acquire", "Acquire a lock (fencing token), or queue/debounce an entry "
             "for its holder.", LockAcquire, "write", lock_acquire),
    ToolSpec("lock_refresh", "Extend a held lock's lease.", LockRefresh, "write", lock_refresh),
    ToolSpec("lock_release", "Release a lock and take its pending entries.", LockRelease,
             "write", lock_release),
    ToolSpec("session_get_variables", "Read a session's typed variables (all, or by name).",
             SessionGetVariables, "read", session_get_variables),
    ToolSpec("session_set_variables", "Write session variables in one revision, validated "
             "(atomic by default).", SessionSetVariables, "write", session_set_variables),
    ToolSpec("artifact_get_text", "Read a UTF-8 text artifact (at most 1 MiB).",
             ArtifactGetText, "read", artifact_get_text),
    ToolSpec("artifact_put_text", "Store text as an artifact.", ArtifactPutText, "write",
             artifact_put_text),
)
TOOL_NAMES: tuple[str, ...] = tuple(t.name for t in TOOLS)
