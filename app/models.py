"""Request and response schemas shared by the routers and the generated ``openapi/``.

Responses are serialized once with orjson and not re-validated; these models document
them and validate the small JSON request bodies.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

Duration = StrictFloat | StrictInt | str
#: An integer JSON storage can hold (orjson encodes 64-bit integers only).
Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**64 - 1)]


class Problem(BaseModel):
    """An RFC 9457 problem document; ``code`` is the stable machine-readable code."""

    type: str = "about:blank"
    status: int
    title: str
    detail: str
    code: str
    errors: Any = None
    current: Any = Field(None, description="On 412: the current entry, or null when absent")


class KeyEntryModel(BaseModel):
    key: str
    value: Any = Field(None, description="Any JSON value (omitted in listings with values=false)")
    revision: int = Field(description="Namespace revision of the key's last write; its ETag")
    created_revision: int
    version: int = Field(description="Writes since the key was created, from 1")
    created_at: str
    modified_at: str
    expires_at: str | None


class KeyList(BaseModel):
    items: list[KeyEntryModel]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end"
    )
    revision: int = Field(description="The namespace's revision when the page was read")


class KeyHistory(BaseModel):
    items: list[KeyEntryModel] = Field(description="Kept revisions, newest first")


class IncrementRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Int64 | StrictFloat = Field(1, description="Amount to add (may be negative)")
    initial: Int64 | StrictFloat = Field(
        0, description="Starting value when the key is missing"
    )
    ttl: Duration | None = Field(None, description="Expiry applied only when the key is created")


class TouchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl: Duration = Field(description="New time to live from now; 0 removes the expiry")


class EventList(BaseModel):
    events: list[dict[str, Any]]
    revision: int = Field(description="Pass as ?since= to continue")


class Capabilities(BaseModel):
    backend: str
    artifact_store: str
    atomic_updates: bool
    streaming: bool
    persistence: bool
    distribution: bool
    limits: dict[str, Any]
    version: str


class Health(BaseModel):
    status: str


class ArtifactModel(BaseModel):
    """An artifact's metadata: the PUT answer, a listing item, an event's value."""

    key: str
    size: int = Field(description="Length of the content in bytes")
    sha256: str = Field(description="Lowercase hex SHA-256 of the content; the quoted ETag")
    content_type: str = Field(description="As uploaded; application/octet-stream by default")
    created_at: str = Field(description="When this version was stored")
    expires_at: str | None = Field(description="When it expires (?ttl=), or null")
    revision: int = Field(description="Namespace revision of this version's artifact.put")


class ArtifactList(BaseModel):
    items: list[ArtifactModel]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end")
    revision: int = Field(description="The namespace's revision when the page was read")
