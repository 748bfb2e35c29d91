"""Service endpoints (API.md section 7): liveness, readiness and capabilities."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import PlainTextResponse, Response

from app import __version__
from app.domain.leases import MAX_PATTERN_DELETE
from app.errors import BackendUnavailable
from app.grammar import MAX_KEY_BYTES
from app.models import Capabilities, Health, Problem
from app.routers.common import MAX_JSON_DEPTH, BackendDep, SettingsDep, json_response
from app.routers.events import MAX_EVENTS_LIMIT
from app.routers.events import MAX_WAIT_SECONDS as POLL_WAIT_SECONDS
from app.routers.locks import MAX_WAIT_SECONDS as LOCK_WAIT_SECONDS
from app.settings import Settings
from app.syntax import MAX_DIGITS, MAX_DURATION_SECONDS
from app.variables import MAX_PATTERN_LENGTH

router = APIRouter(tags=["service"])

#: Everything a backend may offer; a backend lacking some would list what it has in its
#: ``info.extra["supports"]`` (every engine offers all today); ``info.extra["limits"]``
#: holds the limits a backend lowers (``max_pattern_delete_keys`` on NATS).
ALL_FEATURES = (
    "keys", "events", "watch", "ttl", "history", "locks", "sessions", "artifacts", "leases",
    "txn",
)


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Response:
    return json_response(b'{"status":"ok"}')


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Problem}},
    summary="The backend is reachable",
)
async def readyz(backend: BackendDep) -> Response:
    try:
        await backend.ping()
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"Not ready: {exc.detail}") from exc
    return json_response(b'{"status":"ready"}')


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics of this process",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    # Rendered in a worker thread: with a series per route, method and status (and a
    # latency histogram per route and method) the text takes ~100 ms of CPU, which would
    # hold the event loop; in a thread, the interpreter switches back to the loop every
    # few milliseconds meanwhile.
    registry = request.scope["state"]["metrics"].registry
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def limits_of(settings: Settings) -> dict[str, Any]:
    """Every limit in force; the Limits model documents each (a test checks they agree)."""
    return {
        "max_value_bytes": settings.max_value_bytes,
        "max_request_bytes": settings.max_request_bytes,
        "max_snapshot_bytes": settings.max_snapshot_bytes,
        "max_artifact_bytes": settings.max_artifact_bytes,
        "max_key_bytes": MAX_KEY_BYTES,
        "max_ttl_seconds": MAX_DURATION_SECONDS,
        "max_list_limit": settings.max_list_limit,
        "max_events_limit": MAX_EVENTS_LIMIT,
        "max_poll_wait_seconds": POLL_WAIT_SECONDS,
        "max_lock_wait_seconds": LOCK_WAIT_SECONDS,
        "key_history": settings.key_history,
        "event_retention": settings.event_retention,
        "event_retention_bytes": settings.event_retention_bytes,
        "namespace_max_keys": settings.namespace_max_keys,
        "namespace_max_bytes": settings.namespace_max_bytes,
        "namespace_max_leases": settings.namespace_max_leases,
        "namespace_max_locks": settings.namespace_max_locks,
        "lock_max_waiters": settings.lock_max_waiters,
        "lock_max_pending": settings.lock_max_pending,
        "max_watchers": settings.max_watchers,
        "max_patch_ops": settings.max_patch_ops,
        "max_txn_ops": settings.max_txn_ops,
        "max_pattern_delete_keys": MAX_PATTERN_DELETE,
        "max_json_depth": MAX_JSON_DEPTH,
        "max_number_digits": MAX_DIGITS,
        "max_pattern_length": MAX_PATTERN_LENGTH,
    }


@router.get("/v1/capabilities", response_model=Capabilities, summary="What this deployment offers")
async def capabilities(request: Request, backend: BackendDep, settings: SettingsDep) -> Response:
    info = backend.info
    artifacts_url = settings.artifacts or settings.backend
    body = {
        "backend": info.name,
        "artifact_store": artifacts_url.split("://", 1)[0],
        "atomic_updates": True,
        "streaming": True,
        "persistence": info.persistence,
        "distribution": info.distribution,
        "limits": {
            **limits_of(settings),
            # A backend's own limits where they are lower (NATS: its atomic batch size).
            **info.extra.get("limits", {}),
            # Writes are acknowledged once this many Redis replicas have them.
            "redis_wait_replicas": settings.redis_wait_replicas if info.name != "memory" else 0,
        },
        "supports": list(info.extra.get("supports", ALL_FEATURES)),
        "version": __version__,
    }
    return json_response(orjson.dumps(body))
