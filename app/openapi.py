"""The OpenAPI document as clients should read it: every error is problem+json.

FastAPI documents error responses as ``application/json`` and adds its own 422 schema;
this rewrites both so ``openapi/openapi.json`` matches what the service really sends. The
``ns`` parameter, resolved by the access layer for every namespaced call, is documented on
each such operation here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.access import UNSCOPED_PATHS
from app.errors import PROBLEM_JSON

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
NS_PARAMETER: dict[str, Any] = {
    "name": "ns",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "default": "default", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
    "description": "Namespace: the unit of ordering, atomicity and access control",
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for path, path_item in spec.get("paths", {}).items():
        for operation in path_item.values():
            if path.startswith("/v1") and path not in UNSCOPED_PATHS:
                # The access layer resolves `ns` for every call; routes take it from there.
                parameters = operation.setdefault("parameters", [])
                if not any(p.get("name") == "ns" and p.get("in") == "query" for p in parameters):
                    parameters.insert(0, NS_PARAMETER)
            responses: dict[str, Any] = operation.get("responses", {})
            for status, response in responses.items():
                if not status.isdigit() or int(status) < 400:
                    continue
                if status == "422":
                    response["description"] = "The request body is not valid"
                response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
            if operation.get("parameters") and "400" not in responses:
                responses["400"] = {
                    "description": "Invalid parameters",
                    "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
                }
    schemas = spec.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = spec
    return spec
