"""The request and response bodies of the sessions API (API.md section 5).

Responses are serialized with orjson and not re-validated: their models document them.
Request models validate the bodies the handlers read themselves (``common.validated``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, WithJsonSchema

from app.models import Duration
from app.schemas import VARIABLE_SCHEMA
from app.snapshots import MAX_DEDUPE_KEY
from app.variables import MAX_DESCRIPTION_LENGTH

DEFAULT_DEDUPE_LIMIT = 1000
MAX_DEDUPE_LIMIT = 100_000


# -- session records -------------------------------------------------------------------


class SessionPutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, Any] | None = Field(None, description="Any JSON object")
    ttl: Duration | None = Field(
        None, description="Idle TTL: the session expires this long after its last write"
    )


class SessionModel(BaseModel):
    session_id: str
    metadata: dict[str, Any]
    ttl: float | None = Field(description="Idle TTL in seconds; null = none")
    created_at: str
    updated_at: str = Field(description="Time of the last write to the session")
    expires_at: str | None
    variable_count: int


class SessionList(BaseModel):
    items: list[SessionModel]
    next_cursor: str | None


# -- variables -------------------------------------------------------------------------


class VariableRegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Documented with the name syntax; checked by ``check_name`` (400 invalid_key).
    name: Annotated[str, WithJsonSchema(VARIABLE_SCHEMA)] = Field(
        description="1-128 of [A-Za-z0-9_.-], not starting with 'var_'")
    type: str = Field(description="float, integer, string, boolean, choice, embedding, "
                                  "tensor or json")
    value: Any = Field(description="The initial value; validated against type and constraints")
    constraints: dict[str, Any] | None = Field(None, description="Per type: see the docs")
    metadata: dict[str, Any] | None = None
    description: str | None = Field(None, max_length=MAX_DESCRIPTION_LENGTH)


class VariableSetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: Any = Field(description="The new value; validated")
    metadata: dict[str, Any] | None = Field(
        None, description="Merged into the variable's metadata (RFC 7396 merge patch)"
    )


class VariableModel(BaseModel):
    id: str
    name: str
    type: str
    value: Any
    constraints: dict[str, Any]
    metadata: dict[str, Any]
    description: str | None
    version: int = Field(description="Writes since registration, from 1; the ETag")
    created_at: str
    updated_at: str


class VariableList(BaseModel):
    items: list[VariableModel]


class ValuesModel(BaseModel):
    values: dict[str, Any]


class BatchWriteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    updates: dict[str, Any] = Field(description="Variable name (or id) -> new value")
    metadata: dict[str, Any] | None = Field(None, description="Merged into each variable's")
    atomic: StrictBool = Field(True, description="All or nothing (default), or partial")


class BatchWriteModel(BaseModel):
    updated: list[str] = Field(description="The names written, in request order")
    errors: dict[str, Any] = Field(description="Per name: code, message (and constraint)")
    revision: int | None = Field(description="The one revision of the batch")
    versions: dict[str, int]


# -- chat state ------------------------------------------------------------------------


class SubscribedModel(BaseModel):
    subscribed: bool


class ThreadList(BaseModel):
    items: list[str]


class DedupeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=MAX_DEDUPE_KEY, description="e.g. a message id")
    limit: StrictInt = Field(DEFAULT_DEDUPE_LIMIT, ge=1, le=MAX_DEDUPE_LIMIT,
                             description="Keep only this many most recent keys")


class DedupeModel(BaseModel):
    duplicate: bool


# -- snapshots -------------------------------------------------------------------------


class ImportModel(BaseModel):
    session_id: str
    revision: int = Field(description="The revision of the import")
    created: bool
    tokens: dict[str, int] = Field(description="Each imported held lock's fencing token here")
