"""People's face of the service (API.md section 13): the ``/ui`` dashboard and the
``/docs`` and ``/redoc`` pages, every asset served from the package so they work offline.

The dashboard is plain HTML, CSS and JavaScript modules in ``static/`` (no build step);
it calls ``/v1`` like any client, with the tab's token. Swagger UI and ReDoc come from
the ``fastapi-offline`` package, which ships their distribution files. None of these
routes is under ``/v1``: the pages are public, the data they load is not.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

STATIC_DIR = Path(__file__).parent / "static"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
#: The dashboard loads nothing from elsewhere; the policy makes that a rule.
UI_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'none'"
)


async def dashboard() -> Response:
    return FileResponse(
        STATIC_DIR / "index.html",
        headers={"Content-Security-Policy": UI_CSP, "Cache-Control": "no-cache",
                 "X-Content-Type-Options": "nosniff"},
    )


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


async def swagger_ui(request: Request) -> HTMLResponse:
    base, app = _root(request), request.app
    return get_swagger_ui_html(
        openapi_url=f"{base}{app.openapi_url}",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{base}/ui/docs-assets/swagger-ui-bundle.js",
        swagger_css_url=f"{base}/ui/docs-assets/swagger-ui.css",
        swagger_favicon_url=f"{base}/ui/static/favicon.svg",
    )


async def redoc(request: Request) -> HTMLResponse:
    base, app = _root(request), request.app
    return get_redoc_html(
        openapi_url=f"{base}{app.openapi_url}",
        title=f"{app.title} - ReDoc",
        redoc_js_url=f"{base}/ui/docs-assets/redoc.standalone.js",
        redoc_favicon_url=f"{base}/ui/static/favicon.svg",
        with_google_fonts=False,
    )


def install_ui(app: FastAPI) -> None:
    """Serve ``/ui`` (and its assets under ``/ui/static``), ``/docs`` and ``/redoc``.

    The pages are module functions that find their app on the request, not closures
    over ``app``: FastAPI keeps every endpoint in process-wide caches (4,096 entries
    each), so a closure per app kept up to a thousand apps alive in a process that
    makes many (a test run grew to 10 million objects and 6 s collections)."""
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.mount("/ui/docs-assets", StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    app.add_api_route("/ui", dashboard, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)
