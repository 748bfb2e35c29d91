"""A session's typed variables: register, list, read, set, delete, and many values read
or written at once in one revision. Values are checked by ``app.variables``.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.backends.base import Fence
from app.backends.parts.sessions import SessionStore
from app.domain.sessions import Variable, WriteOutcome
from app.errors import NotFound, Unprocessable
from app.models import Problem
from app.routers.common import (
    FENCE_PARAMETERS,
    NamespaceDep,
    SessionsDep,
    SettingsDep,
    check_json_body,
    condition_from_headers,
    fence_from_headers,
    json_body,
    json_response,
    read_body,
    validated,
)
from app.routers.sessions.models import (
    BatchWriteModel,
    BatchWriteRequest,
    ValuesModel,
    VariableList,
    VariableModel,
    VariableRegisterRequest,
    VariableSetRequest,
)
from app.routers.sessions.shared import ERRORS, WRITE, SessionDep, encoded_value, read_model
from app.settings import Settings
from app.variables import check_definition, check_ident, check_name, new_variable_id, value_error

router = APIRouter()

_IF_MATCH: dict[str, Any] = {
    "name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
    "description": 'Write only if the variable is at this version ("3")',
}


def variable_response(var: Variable, status_code: int = 200) -> Response:
    return json_response(var.to_json(), status_code, {"ETag": var.etag})


def write_failure(outcome: WriteOutcome) -> Unprocessable | NotFound:
    """The error of a single write that wrote nothing."""
    (error,) = outcome.errors.values()
    if error["code"] == "not_found":
        return NotFound(error["message"])
    return Unprocessable(error["message"], code=error["code"], errors=[error])


@router.post(
    "/{sid}/variables",
    status_code=201,
    response_model=VariableModel,
    responses={409: {"model": Problem, "description": "already_exists (name taken) or "
                                                       "stale_fence"},
               413: {"model": Problem},
               422: {"model": Problem, "description": "constraint_violation (the value) or "
                                                      "validation_failed (type, constraints)"},
               400: ERRORS[400], 503: ERRORS[503]},
    summary="Register a typed variable",
    openapi_extra={**WRITE, "requestBody": json_body(VariableRegisterRequest)},
)
async def register_variable(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: SessionsDep,
    settings: SettingsDep,
) -> Response:
    body = await read_model(request, settings, VariableRegisterRequest)
    name = check_name(body.name)
    constraints = check_definition(name, body.type, body.constraints)
    error = value_error(name, body.type, constraints, body.value)
    if error is not None:
        raise error.to_problem()
    var = Variable(
        new_variable_id(), name, body.type, encoded_value(body.value, settings.max_value_bytes),
        constraints, body.metadata or {}, body.description, 0, 0, 0,
    )
    var = await backend.var_register(ns, sid, var, fence=fence_from_headers(request.headers))
    return variable_response(var, 201)


@router.get(
    "/{sid}/variables",
    response_model=VariableList,
    responses={**ERRORS},
    summary="The session's variables, by name",
)
async def list_variables(sid: SessionDep, ns: NamespaceDep, backend: SessionsDep) -> Response:
    items = await backend.var_list(ns, sid)
    return json_response(orjson.dumps({"items": [v.as_dict() for v in items]}))


@router.get(
    "/{sid}/variables/{var}",
    response_model=VariableModel,
    responses={304: {"description": "Not modified (If-None-Match)"},
               404: {"model": Problem}, **ERRORS},
    summary="One variable, by name or id; ETag is its version",
)
async def get_variable(
    sid: SessionDep, var: str, request: Request, ns: NamespaceDep, backend: SessionsDep
) -> Response:
    found = await backend.var_get(ns, sid, check_ident(var))
    if found is None:
        raise NotFound(f"No variable {var!r} in session {sid!r}.")
    if request.headers.get("if-none-match", "").strip().strip('"') == str(found.version):
        return Response(status_code=304, headers={"ETag": found.etag})
    return variable_response(found)


@router.put(
    "/{sid}/variables/{var}",
    response_model=VariableModel,
    responses={404: {"model": Problem}, 412: {"model": Problem, "description":
                                              "If-Match failed; `current` is the variable"},
               413: {"model": Problem},
               422: {"model": Problem, "description": "constraint_violation"}, **ERRORS},
    summary="Set a variable's value (validated; version + 1)",
    openapi_extra={"parameters": [_IF_MATCH, *FENCE_PARAMETERS],
                   "requestBody": json_body(VariableSetRequest)},
)
async def set_variable(
    sid: SessionDep, var: str, request: Request, ns: NamespaceDep, backend: SessionsDep,
    settings: SettingsDep,
) -> Response:
    ident = check_ident(var)
    body = await read_model(request, settings, VariableSetRequest)
    encoded_value(body.value, settings.max_value_bytes)
    outcome = await backend.var_write(
        ns, sid, [(ident, body.value)], metadata=body.metadata,
        condition=condition_from_headers(request.headers),
        fence=fence_from_headers(request.headers),
    )
    if not outcome.updated:
        raise write_failure(outcome)
    return variable_response(outcome.updated[0])


@router.delete(
    "/{sid}/variables/{var}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": Problem}, 412: {"model": Problem}, **ERRORS},
    summary="Delete a variable (404 when absent)",
    openapi_extra={"parameters": [_IF_MATCH, *FENCE_PARAMETERS]},
)
async def delete_variable(
    sid: SessionDep, var: str, request: Request, ns: NamespaceDep, backend: SessionsDep
) -> Response:
    await backend.var_delete(
        ns, sid, check_ident(var),
        condition=condition_from_headers(request.headers),
        fence=fence_from_headers(request.headers),
    )
    return Response(status_code=204)


@router.get(
    "/{sid}/values",
    response_model=ValuesModel,
    responses={**ERRORS},
    summary="Read many values at once; missing names are skipped",
)
async def get_values(
    sid: SessionDep,
    ns: NamespaceDep,
    backend: SessionsDep,
    names: Annotated[str | None, Query(description="Comma list of names (or ids); "
                                                   "absent: every variable")] = None,
) -> Response:
    if names is None:
        found = {v.name: v for v in await backend.var_list(ns, sid)}
    else:
        idents = [check_ident(n.strip()) for n in names.split(",") if n.strip()]
        found = await backend.var_read(ns, sid, list(dict.fromkeys(idents)))
    values = {ident: orjson.Fragment(v.value) for ident, v in found.items()}
    return json_response(orjson.dumps({"values": values}))


@router.patch(
    "/{sid}/values",
    response_model=BatchWriteModel,
    responses={413: {"model": Problem},
               422: {"model": Problem, "description": "Atomic batch refused: `errors` per "
                                                      "name; nothing was written"},
               **ERRORS},
    summary="Write many values in one revision: all or nothing, or partial",
    openapi_extra={**WRITE, "requestBody": json_body(BatchWriteRequest)},
)
async def patch_values(
    sid: SessionDep, request: Request, ns: NamespaceDep, backend: SessionsDep,
    settings: SettingsDep,
) -> Response:
    check_json_body(request)
    body = validated(BatchWriteRequest, await read_body(request, settings.max_snapshot_bytes))
    result = await write_values(
        backend, settings, ns, sid, body, fence=fence_from_headers(request.headers)
    )
    return json_response(orjson.dumps(result))


async def write_values(
    backend: SessionStore, settings: Settings, ns: str, sid: str, body: BatchWriteRequest,
    *, fence: Fence | None,
) -> dict[str, Any]:
    """A batch write (also MCP's session_set_variables): one revision, all or nothing
    (422 listing each name's error) or partial; the answer of PATCH .../values."""
    updates = [(check_ident(ident), value) for ident, value in body.updates.items()]
    for ident, value in updates:
        encoded_value(value, settings.max_value_bytes, f"value of {ident!r}")
    outcome = await backend.var_write(
        ns, sid, updates, metadata=body.metadata, atomic=body.atomic, batch=True, fence=fence,
    )
    if body.atomic and outcome.errors:
        codes = {e["code"] for e in outcome.errors.values()}
        code = "constraint_violation" if "constraint_violation" in codes else "validation_failed"
        listed = "; ".join(e["message"] for e in outcome.errors.values())
        raise Unprocessable(f"Nothing was written: {listed}", code=code, errors=outcome.errors)
    written = [ident for ident, _ in updates if ident not in outcome.errors]
    return {
        "updated": written,
        "errors": outcome.errors,
        "revision": outcome.revision,
        "versions": {ident: v.version for ident, v in zip(written, outcome.updated,
                                                          strict=True)},
    }
