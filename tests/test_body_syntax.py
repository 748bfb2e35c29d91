"""Names sent in request bodies are documented with the syntax the service checks
(openapi/openapi.json): a lease's ``id`` (``check_id``) and a variable's ``name``
(``check_name``). The documented pattern is never stricter than the check, so a client
validating against the document never refuses a name the service takes, and a name
outside it gets the service's own 400, with nothing created."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import InvalidKey
from app.syntax import check_id
from app.variables import check_name
from tests.helpers import problem

SPEC = json.loads((Path(__file__).resolve().parent.parent / "openapi" / "openapi.json")
                  .read_text())
#: Valid characters of both syntaxes and a few that neither allows.
NAMES = st.text(alphabet="ab9._:@=+-/ *%é\x00", min_size=0, max_size=20) | st.text(
    alphabet="a", min_size=120, max_size=600)


def documented(model: str, field: str) -> dict[str, Any]:
    schema: dict[str, Any] = SPEC["components"]["schemas"][model]["properties"][field]
    strings = [s for s in schema.get("anyOf", [schema]) if s.get("type") == "string"]
    assert len(strings) == 1, schema
    return strings[0]


def within(schema: dict[str, Any], name: str) -> bool:
    return (schema["minLength"] <= len(name) <= schema["maxLength"]
            and re.fullmatch(schema["pattern"].strip("^$"), name) is not None)


def accepted(check: Any, name: str) -> bool:
    try:
        check(name)
    except InvalidKey:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(NAMES)
def test_the_documented_syntax_is_never_stricter_than_the_check(name: str) -> None:
    lease_id = documented("LeaseGrantRequest", "id")
    variable = documented("VariableRegisterRequest", "name")
    if accepted(lambda n: check_id(n, what="lease id"), name):
        assert within(lease_id, name), name
    if accepted(check_name, name):
        assert within(variable, name), name


@pytest.mark.parametrize("bad", ["a/b", "a b", "", "x" * 513])
async def test_a_lease_id_outside_the_syntax_is_400_and_grants_nothing(
    client: httpx.AsyncClient, bad: str,
) -> None:
    assert not within(documented("LeaseGrantRequest", "id"), bad)
    problem(await client.post("/v1/leases", json={"ttl": "10s", "id": bad}), 400, "invalid_key")
    assert (await client.get("/v1/leases")).json()["items"] == []


@pytest.mark.parametrize("bad", ["a/b", "a b", "", "x" * 129])
async def test_a_variable_name_outside_the_syntax_is_400_and_registers_nothing(
    client: httpx.AsyncClient, bad: str,
) -> None:
    assert not within(documented("VariableRegisterRequest", "name"), bad)
    assert (await client.put("/v1/sessions/s1", json={})).status_code in (200, 201)
    body = {"name": bad, "type": "integer", "value": 1}
    problem(await client.post("/v1/sessions/s1/variables", json=body), 400, "invalid_key")
    assert (await client.get("/v1/sessions/s1/variables")).json()["items"] == []
