"""The OpenAPI document as clients should read it, so that generated clients work.

FastAPI documents error responses as ``application/json`` and adds its own 422 schema;
this rewrites both to problem+json. It also writes what route declarations cannot say
once for all routes: the response headers each operation sends (``ETag``,
``Content-Range``, ``Retry-After``, ...), the syntax of names in paths and queries as
``app.syntax`` enforces it, the listing ``limit`` maximum of this deployment, and the
bearer-token security scheme. A client generated from ``openapi/openapi.json`` (see
tests/test_generated_client.py) can therefore do compare-and-swap, ranges and retries.
The ``ns`` parameter, resolved by the access layer for every namespaced call, is
documented on each such operation here.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from app.access import UNSCOPED_PATHS
from app.errors import PROBLEM_JSON
from app.schemas import NAMESPACE_SCHEMA, PATH_PARAMETERS, PATTERN_SCHEMA

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}

_HEADER_DOCS: dict[str, tuple[str, dict[str, Any]]] = {
    "ETag": ("The entry's current revision/version (quoted), or an artifact's quoted "
             "sha256: send it back in If-Match for compare-and-swap", {"type": "string"}),
    "Retry-After": ("Seconds to wait before retrying", {"type": "integer", "minimum": 0}),
    "Content-Range": ("bytes first-last/size of a 206; bytes */size of a 416",
                      {"type": "string"}),
    "Accept-Ranges": ("Always `bytes`: single byte ranges are served", {"type": "string"}),
    "Last-Modified": ("When this version of the artifact was stored (HTTP date)",
                      {"type": "string"}),
    "Content-Length": ("Bytes in the body (of a range: in the range)",
                       {"type": "integer", "minimum": 0}),
    "WWW-Authenticate": ('Bearer realm="corkboard"', {"type": "string"}),
}
_ENTRY: tuple[str, ...] = ("ETag",)
_CREATED_OR_REPLACED: dict[str, tuple[str, ...]] = {"200": _ENTRY, "201": _ENTRY}
_ARTIFACT_READ = ("ETag", "Last-Modified", "Accept-Ranges", "Content-Length")
#: Response headers each operation sends, by operation id and status (errors aside).
RESPONSE_HEADERS: dict[str, dict[str, tuple[str, ...]]] = {
    "get_key": {"200": _ENTRY, "304": _ENTRY},
    "put_key": _CREATED_OR_REPLACED,
    "patch_key": _CREATED_OR_REPLACED,
    "increment_key": _CREATED_OR_REPLACED,
    "touch_key": {"200": _ENTRY},
    "register_variable": {"201": _ENTRY},
    "get_variable": {"200": _ENTRY, "304": _ENTRY},
    "set_variable": {"200": _ENTRY},
    "get_snapshot": {"200": _ENTRY},
    "put_artifact": _CREATED_OR_REPLACED,
    **{
        op: {"200": _ARTIFACT_READ, "206": (*_ARTIFACT_READ, "Content-Range"),
             "304": ("ETag", "Last-Modified", "Accept-Ranges")}
        for op in ("get_artifact", "head_artifact")
    },
}
#: Headers of error responses, by status, wherever that status is documented.
ERROR_HEADERS: dict[str, tuple[str, ...]] = {
    "401": ("WWW-Authenticate",),
    "416": ("Content-Range",),
    "429": ("Retry-After",),
    "503": ("Retry-After",),
}
NS_PARAMETER: dict[str, Any] = {
    "name": "ns",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "default": "default", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
    "description": "Namespace: the unit of ordering, atomicity and access control",
}


def _header(name: str, *, required: bool) -> dict[str, Any]:
    description, schema = _HEADER_DOCS[name]
    return {"description": description, "required": required, "schema": dict(schema)}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": _PROBLEM_CONTENT}


def _constrain_parameters(operation: dict[str, Any], max_list_limit: int | None) -> None:
    for parameter in operation.get("parameters", []):
        name, where = parameter.get("name"), parameter.get("in")
        schema = parameter.setdefault("schema", {})
        if where == "path" and name in PATH_PARAMETERS:
            rules, description = PATH_PARAMETERS[name]
            parameter["schema"] = {**rules, "title": schema.get("title", name.title())}
            parameter["description"] = description
        elif where == "query" and name == "ns":
            parameter["schema"] = {**NAMESPACE_SCHEMA, "title": "Ns"}
        elif where == "query" and name == "pattern":
            pattern_schema = {**PATTERN_SCHEMA, "title": "Pattern"}
            if "default" in schema:
                pattern_schema["default"] = schema["default"]
            # Watch and long poll take no pattern as "everything" (null allowed).
            parameter["schema"] = (
                pattern_schema if "anyOf" not in schema
                else {"anyOf": [pattern_schema, {"type": "null"}], "title": "Pattern"}
            )
        elif where == "query" and name == "limit" and "maximum" not in schema:
            if max_list_limit is not None:
                schema["maximum"] = max_list_limit


def _document_headers(op_id: str, responses: dict[str, Any]) -> None:
    for status, names in RESPONSE_HEADERS.get(op_id, {}).items():
        if status not in responses:
            raise RuntimeError(f"OpenAPI: {op_id} documents no {status} response for its headers")
        headers = responses[status].setdefault("headers", {})
        for name in names:
            headers[name] = _header(name, required=True)
    for status, names in ERROR_HEADERS.items():
        if status in responses:
            headers = responses[status].setdefault("headers", {})
            for name in names:
                headers[name] = _header(name, required=True)


def _hoist_request_schemas(spec: dict[str, Any], schemas: dict[str, Any]) -> None:
    """Named inline request bodies (a model's JSON schema given in ``openapi_extra``)
    become components, so generated clients name their classes after the model
    (``LockAcquireRequest``), once, rather than once per operation."""
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in content.values():
                schema = media.get("schema", {})
                title = schema.get("title")
                if not title or "$defs" in schema or schema.get("type") != "object":
                    continue
                if schemas.setdefault(title, schema) != schema:
                    continue  # another schema has the name: leave this one inline
                media["schema"] = {"$ref": f"#/components/schemas/{title}"}


#: Documents built in this process, as JSON, by what they are made of (see _made_of).
_BUILT: dict[Hashable, bytes] = {}
_BUILT_MAX = 16


def _made_of(app: FastAPI, max_list_limit: int | None) -> Hashable:
    """What an app's document depends on: its texts, the page maximum and its documented
    routes (path, methods, endpoint function, operation id). Route documentation is
    written by the routers and app.models, not by other settings, so two apps alike in
    these have one document."""
    routes = tuple(
        (route.path, tuple(sorted(route.methods or ())), route.endpoint, route.unique_id)
        for route in app.routes
        if isinstance(route, APIRoute) and route.include_in_schema
    )
    return (app.title, app.version, app.description, max_list_limit, routes)


def build_openapi(app: FastAPI, *, max_list_limit: int | None = None) -> dict[str, Any]:
    """The app's OpenAPI document; ``max_list_limit`` is the deployment's page maximum.

    Generating it costs FastAPI 0.5-1 s of CPU, which every app start paid (a test
    suite starts thousands). Apps of one process alike in what the document is made
    of share the work: each gets its own copy, parsed from the JSON built once."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    made_of = _made_of(app, max_list_limit)
    built = _BUILT.get(made_of)
    if built is None:
        built = orjson.dumps(_generate(app, max_list_limit))
        if len(_BUILT) >= _BUILT_MAX:
            _BUILT.pop(next(iter(_BUILT)))
        _BUILT[made_of] = built
    spec: dict[str, Any] = orjson.loads(built)
    app.openapi_schema = spec
    return spec


def _generate(app: FastAPI, max_list_limit: int | None) -> dict[str, Any]:
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    seen: set[str] = set()
    for path, path_item in spec.get("paths", {}).items():
        for operation in path_item.values():
            if path.startswith("/v1") and path not in UNSCOPED_PATHS:
                # The access layer resolves `ns` for every call; routes take it from there.
                parameters = operation.setdefault("parameters", [])
                if not any(p.get("name") == "ns" and p.get("in") == "query" for p in parameters):
                    parameters.insert(0, dict(NS_PARAMETER))
            op_id = operation.get("operationId", "")
            seen.add(op_id)
            responses: dict[str, Any] = operation.get("responses", {})
            for status, response in responses.items():
                if not status.isdigit() or int(status) < 400:
                    continue
                if status == "422":
                    response["description"] = "The request body is not valid"
                response["content"] = _PROBLEM_CONTENT
            if operation.get("parameters") and "400" not in responses:
                responses["400"] = _problem("Invalid parameters")
            if path.startswith("/v1"):
                # Optional: with no tokens configured, every call is open.
                operation["security"] = [{"bearer": []}, {}]
                responses.setdefault("401", _problem(
                    "unauthorized: tokens are configured and none valid was sent"))
                if path not in UNSCOPED_PATHS:
                    responses.setdefault("403", _problem(
                        "forbidden: the token does not grant this permission on `ns`"))
            _constrain_parameters(operation, max_list_limit)
            _document_headers(op_id, responses)
    missing = set(RESPONSE_HEADERS) - seen
    if missing:
        raise RuntimeError(f"OpenAPI: response headers documented for unknown {sorted(missing)}")
    components = spec.setdefault("components", {})
    schemas = components.get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas["StateMap"] = {
        "type": "object", "additionalProperties": True, "title": "StateMap",
        "description": "A thread's or channel's state: any JSON object (as a merge patch, "
        "null members remove keys)",
    }
    _hoist_request_schemas(spec, schemas)
    components["schemas"] = schemas
    components["securitySchemes"] = {
        "bearer": {
            "type": "http", "scheme": "bearer",
            "description": "A token of CORKBOARD_TOKENS; without configured tokens every "
            "call is open. GET /v1/watch and /v1/events also take ?access_token=.",
        }
    }
    return spec
