"""Service endpoints (API.md section 7): liveness, readiness and capabilities."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import PlainTextResponse, Response

from app import __version__
from app.errors import BackendUnavailable
from app.models import Capabilities, Health, Problem
from app.routers.common import BackendDep, SettingsDep, json_response

router = APIRouter(tags=["service"])


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
    registry = request.scope["state"]["metrics"].registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


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
            "max_value_bytes": settings.max_value_bytes,
            "max_artifact_bytes": settings.max_artifact_bytes,
            "max_key_bytes": 512,
            "max_list_limit": settings.max_list_limit,
            "key_history": settings.key_history,
            "event_retention": settings.event_retention,
            "max_ttl_seconds": 365 * 24 * 3600,
            # Writes are acknowledged once this many Redis replicas have them.
            "redis_wait_replicas": settings.redis_wait_replicas if info.name != "memory" else 0,
        },
        "version": __version__,
    }
    return json_response(orjson.dumps(body))
