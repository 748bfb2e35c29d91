"""The ``corkboard`` command: ``serve`` runs the service, ``openapi`` writes its spec;
the client commands (get, put, ls, watch, lock, ...) live in ``corkboard.cli``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from corkboard.cli import add_commands, dispatch

if TYPE_CHECKING:
    from app.settings import Settings

# The service's modules are imported by the commands that need them, so that the client
# commands start without loading the server.


def _fail(message: str) -> int:
    print(f"corkboard: {message}", file=sys.stderr)
    return 2


async def _check_backend(settings: Settings) -> None:
    from app.artifacts import artifacts_url, store_from_url
    from app.backends import backend_from_url

    backend = backend_from_url(settings.backend, settings)
    try:
        await backend.start()
        store = store_from_url(artifacts_url(settings), settings, backend)
        try:
            await store.start()
        finally:
            await store.close()
    finally:
        await backend.close()


def serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from app.access import TokenConfigError, load_grants
    from app.artifacts import UnknownArtifactStore, artifacts_url
    from app.backends import UnknownBackend
    from app.errors import BackendUnavailable
    from app.settings import Settings

    overrides = {
        "CORKBOARD_HOST": args.host,
        "CORKBOARD_PORT": args.port,
        "CORKBOARD_BACKEND": args.backend,
        "CORKBOARD_ARTIFACTS": args.artifacts,
        "CORKBOARD_WORKERS": args.workers,
        "CORKBOARD_LOG_LEVEL": args.log_level,
    }
    # Workers import app.main:app in their own processes: they read the environment.
    os.environ.update({k: str(v) for k, v in overrides.items() if v is not None})
    try:
        settings = Settings()
    except ValidationError as exc:
        return _fail(f"invalid settings: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    scheme = settings.backend.split("://", 1)[0]
    if scheme == "memory" and settings.workers > 1:
        return _fail(
            "the memory backend lives in one process and cannot serve "
            f"{settings.workers} workers; use --workers 1, or a shared backend: "
            "--backend redis://host:6379/0"
        )
    if artifacts_url(settings).startswith("memory:") and settings.workers > 1:
        return _fail(
            f"memory:// artifacts live in one process and cannot serve {settings.workers} "
            "workers; use --artifacts file:///shared/dir or redis://host:6379/0"
        )
    try:
        load_grants(settings)
    except TokenConfigError as exc:
        return _fail(f"cannot start: {exc}")
    try:
        asyncio.run(_check_backend(settings))
    except (UnknownBackend, UnknownArtifactStore) as exc:
        return _fail(str(exc))
    except BackendUnavailable as exc:
        return _fail(f"cannot start: {exc.detail}")

    import uvicorn

    from app.serving import JoinedHttpToolsProtocol

    uvicorn.run(
        "app.main:app",
        http=JoinedHttpToolsProtocol,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        # The app reads neither the client's address nor the scheme, so uvicorn's
        # X-Forwarded-* layer (a dict of the headers per request) would change nothing.
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def write_openapi(args: argparse.Namespace) -> int:
    import orjson

    from app.main import create_app
    from app.settings import Settings

    spec = create_app(Settings()).openapi()
    text = orjson.dumps(spec, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    if args.output == "-":
        sys.stdout.buffer.write(text)
    else:
        Path(args.output).write_bytes(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corkboard", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the service")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to bind (default 8000)")
    p.add_argument(
        "--backend", help="memory:// (default), redis://host:6379/0 or nats://host:4222"
    )
    p.add_argument(
        "--artifacts", help="memory://, redis://host:6379/0 or file:///dir (default: the backend)"
    )
    p.add_argument("--workers", type=int, help="worker processes (Redis backend for >1)")
    p.add_argument("--log-level", help="debug, info, warning, error")
    p.set_defaults(func=serve)
    o = sub.add_parser("openapi", help="write the OpenAPI document")
    o.add_argument("--output", default="openapi/openapi.json", help="file, or - for stdout")
    o.set_defaults(func=write_openapi)
    add_commands(sub, parser)
    return dispatch(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
