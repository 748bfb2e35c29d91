"""Variable types and constraints (API.md section 5) through HTTP, on every backend: each
type with valid and invalid values, each constraint, and the words of the messages."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import problem, revision

S = "/v1/sessions/s1"

# type, constraints, values that fit
VALID: list[tuple[str, dict[str, Any], list[Any]]] = [
    ("float", {"min": 0, "max": 1}, [0, 0.5, 1, 1.0, 0.0]),
    ("float", {}, [-1e300, 2**53 + 1, 3]),
    ("integer", {"min": -2, "max": 10}, [-2, 0, 10]),
    ("integer", {}, [2**62, -(2**62)]),
    ("string", {"min_length": 2, "max_length": 4, "pattern": "^[a-z]+$"}, ["ab", "abcd"]),
    ("string", {"pattern": "b"}, ["abc", "b"]),  # search: anywhere in the string
    ("string", {"max_length": 2}, ["üé", ""]),  # characters, not bytes
    ("boolean", {}, [True, False]),
    ("choice", {"choices": ["fast", "slow", 3, None]}, ["fast", "slow", 3, None, 3.0]),
    ("embedding", {"dimensions": 3}, [[0.1, 0.2, 0.3], [1, 2, 3], [0, -1.5, 2e10]]),
    ("embedding", {}, [[], [1.5]]),
    ("tensor", {"shape": [2, None]}, [
        {"shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
        {"shape": [2, 2], "data": [[1, 2], [3, 4]]},
        {"shape": [2, 0], "data": []},
        {"shape": [2, 1], "data": [[1.5], [2]], "dtype": "float32"},
    ]),
    ("tensor", {}, [{"shape": [], "data": [7]}, {"shape": [0], "data": []},
                    {"shape": [2, 2, 1], "data": [[[1], [2]], [[3], [4]]]}]),
    ("json", {}, [None, 1, "x", [1, {"a": None}], {"deep": {"er": [True]}}]),
]


@pytest.mark.parametrize(("type_", "constraints", "values"), VALID,
                         ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(VALID)])
async def test_each_type_accepts_its_values(
    client: httpx.AsyncClient, type_: str, constraints: dict[str, Any], values: list[Any]
) -> None:
    r = await client.post(f"{S}/variables", json={
        "name": "v", "type": type_, "value": values[0], "constraints": constraints,
    })
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["type"] == type_ and created["constraints"] == constraints
    assert created["value"] == values[0] and created["version"] == 1
    for i, value in enumerate(values[1:], start=2):
        r = await client.put(f"{S}/variables/v", json={"value": value})
        assert r.status_code == 200, (value, r.text)
        assert r.json()["value"] == value
        assert r.json()["version"] == i
        assert r.headers["etag"] == f'"{i}"'
    r = await client.get(f"{S}/variables/{created['id']}")
    assert r.json()["value"] == values[-1]


# type, constraints, a value that fits, one that does not, the broken constraint, the message
INVALID: list[tuple[str, dict[str, Any], Any, Any, str, str]] = [
    ("float", {}, 1, "hot", "type",
     "Variable 'v' must be a number, but \"hot\" (a string) was given."),
    ("float", {}, 1, True, "type",
     "Variable 'v' must be a number, but true (a boolean) was given."),
    ("float", {"min": 0, "max": 1}, 1, 1.5, "max",
     "Variable 'v' must be at most 1 (its max), but 1.5 was given."),
    ("float", {"min": 0.5}, 1, 0.25, "min",
     "Variable 'v' must be at least 0.5 (its min), but 0.25 was given."),
    ("integer", {}, 1, 2.5, "type",
     "Variable 'v' must be an integer, but 2.5 (a number with a fraction) was given."),
    ("integer", {}, 1, 3.0, "type",
     "Variable 'v' must be an integer, but 3.0 (a float) was given."),
    ("integer", {}, 1, False, "type",
     "Variable 'v' must be an integer, but false (a boolean) was given."),
    ("integer", {"max": 10}, 1, 11, "max",
     "Variable 'v' must be at most 10 (its max), but 11 was given."),
    ("integer", {"min": -2}, 1, -3, "min",
     "Variable 'v' must be at least -2 (its min), but -3 was given."),
    ("string", {}, "s", 5, "type",
     "Variable 'v' must be a string, but 5 (an integer) was given."),
    ("string", {"min_length": 3}, "abc", "ab", "min_length",
     "Variable 'v' must be at least 3 characters long (its min_length), but \"ab\" has 2."),
    ("string", {"max_length": 3}, "abc", "abcd", "max_length",
     "Variable 'v' must be at most 3 characters long (its max_length), but \"abcd\" has 4."),
    ("string", {"pattern": "^[a-z]+$"}, "bob", "Bob", "pattern",
     "Variable 'v' must match the pattern '^[a-z]+$' (its pattern), but \"Bob\" was given."),
    ("boolean", {}, True, 1, "type",
     "Variable 'v' must be true or false, but 1 (an integer) was given."),
    ("boolean", {}, True, "true", "type",
     "Variable 'v' must be true or false, but \"true\" (a string) was given."),
    ("choice", {"choices": ["fast", "slow"]}, "fast", "medium", "choices",
     "Variable 'v' must be one of \"fast\", \"slow\" (its choices), but \"medium\" was "
     "given."),
    ("choice", {"choices": [1, 2]}, 1, True, "choices",
     "Variable 'v' must be one of 1, 2 (its choices), but true was given."),
    ("embedding", {}, [1], [1, "2"], "type",
     "Variable 'v' must be a list of numbers, but [1,\"2\"] (a list) was given."),
    ("embedding", {}, [1], [True, 0.5], "type",
     "Variable 'v' must be a list of numbers, but [true,0.5] (a list) was given."),
    ("embedding", {"dimensions": 3}, [1, 2, 3], [0.1, 0.2], "dimensions",
     "Variable 'v' must have exactly 3 numbers (its dimensions), but 2 were given."),
    ("tensor", {}, {"shape": [1], "data": [1]}, [1, 2], "type",
     "Variable 'v' must be a tensor {\"shape\": [...], \"data\": [...]}, but [1,2] (a list) "
     "was given."),
    ("tensor", {}, {"shape": [1], "data": [1]}, {"shape": [2, 2], "data": [1, 2, 3]}, "type",
     "Variable 'v' must have 4 numbers in data for shape [2, 2], but data has 3."),
    ("tensor", {}, {"shape": [1], "data": [1]}, {"shape": [2, 2], "data": [[1, 2], [3]]},
     "type",
     "Variable 'v' must have data that is a flat list of 4 numbers or nested lists following "
     "shape [2, 2], but it does not."),
    ("tensor", {}, {"shape": [1], "data": [1]}, {"shape": [-1], "data": []}, "type",
     "Variable 'v' must be a tensor {\"shape\": [...], \"data\": [...]} whose shape is a list "
     "of non-negative integers, but {\"shape\":[-1],\"data\":[]} (an object) was given."),
    ("tensor", {}, {"shape": [1], "data": [1]}, {"shape": [1], "data": [1], "units": "m"},
     "type",
     "Variable 'v' must be a tensor {\"shape\": [...], \"data\": [...]} without the members "
     "['units'], but {\"shape\":[1],\"data\":[1],\"units\":\"m\"} (an object) was given."),
    ("tensor", {"shape": [None, 3]}, {"shape": [1, 3], "data": [1, 2, 3]},
     {"shape": [2, 2], "data": [1, 2, 3, 4]}, "shape",
     "Variable 'v' must have shape [null,3] (null: any size) (its shape), but shape [2,2] was "
     "given."),
]


@pytest.mark.parametrize(("type_", "constraints", "good", "bad", "constraint", "message"),
                         INVALID,
                         ids=[f"{r[0]}-{r[4]}-{i}" for i, r in enumerate(INVALID)])
async def test_each_type_refuses_what_does_not_fit(
    client: httpx.AsyncClient, type_: str, constraints: dict[str, Any], good: Any, bad: Any,
    constraint: str, message: str,
) -> None:
    definition = {"name": "v", "type": type_, "constraints": constraints}
    # registering with the bad value is refused and creates nothing
    body = problem(await client.post(f"{S}/variables", json={**definition, "value": bad}),
                   422, "constraint_violation")
    assert body["detail"] == message
    (error,) = body["errors"]
    assert error == {**error, "variable": "v", "value": bad, "constraint": constraint,
                     "message": message}
    assert (await client.get(S)).status_code == 404

    # writing the bad value is refused and changes nothing
    r = await client.post(f"{S}/variables", json={**definition, "value": good})
    assert r.status_code == 201, r.text
    before = (await client.get(f"{S}/variables/v")).json()
    rev = await revision(client)
    r = await client.put(f"{S}/variables/v", json={"value": bad})
    assert problem(r, 422, "constraint_violation")["detail"] == message
    assert (await client.get(f"{S}/variables/v")).json() == before
    assert await revision(client) == rev


@pytest.mark.parametrize(("type_", "constraints", "detail"), [
    ("floaty", {}, "type 'floaty' is not a variable type; use one of float, integer, string, "
                   "boolean, choice, embedding, tensor, json."),
    ("float", {"pattern": "x"}, "constraint 'pattern' does not apply to a float variable (a "
                                "float takes min, max)."),
    ("boolean", {"min": 0}, "constraint 'min' does not apply to a boolean variable (a boolean "
                            "takes no constraints)."),
    ("json", {"dimensions": 2}, "constraint 'dimensions' does not apply to a json variable (a "
                                "json takes no constraints)."),
    ("choice", {}, "a choice variable needs constraints.choices: a non-empty list of the "
                   "allowed values."),
    ("choice", {"choices": []}, "constraint choices must be a non-empty list of the allowed "
                                "values."),
    ("string", {"min_length": 5, "max_length": 2}, "constraint min_length must be at most "
                                                    "max_length (2), not 5."),
    ("string", {"min_length": -1}, "constraint min_length must be a non-negative integer."),
    ("float", {"min": 2, "max": 1}, "constraint min must be at most max (1), not 2."),
    ("integer", {"max": "10"}, "constraint max must be a number."),
    ("embedding", {"dimensions": 0}, "constraint dimensions must be a positive integer."),
    ("tensor", {"shape": [2, -1]}, "constraint shape must be a list of non-negative integers "
                                   "(null for any size)."),
])
async def test_bad_definitions_are_refused(
    client: httpx.AsyncClient, type_: str, constraints: dict[str, Any], detail: str
) -> None:
    r = await client.post(f"{S}/variables", json={
        "name": "v", "type": type_, "value": None, "constraints": constraints,
    })
    body = problem(r, 422, "validation_failed")
    assert body["detail"] == f"Variable 'v': {detail}"
    assert body["errors"][0]["variable"] == "v"
    assert (await client.get(S)).status_code == 404


@pytest.mark.parametrize(("pattern", "reason"), [
    ("(unclosed", "missing ): (unclosed"),
    ("(?=x)a", "invalid perl operator: (?="),  # lookahead: not RE2 (no backtracking)
    (r"(a)\1", "invalid escape sequence: \\1"),  # backreference: not RE2
])
async def test_patterns_re2_cannot_compile_are_invalid_constraints(
    client: httpx.AsyncClient, pattern: str, reason: str
) -> None:
    r = await client.post(f"{S}/variables", json={
        "name": "v", "type": "string", "value": None, "constraints": {"pattern": pattern},
    })
    body = problem(r, 422, "invalid_constraint")
    assert body["detail"] == (
        "Variable 'v': constraint pattern must be a regular expression in RE2 syntax "
        f"(https://github.com/google/re2/wiki/Syntax): {reason}."
    )
    assert body["errors"][0]["location"] == ["body", "constraints", "pattern"]
    assert (await client.get(S)).status_code == 404


@pytest.mark.parametrize("name", ["var_x", "", "a b", "x" * 129, "ü", "a/b"])
async def test_bad_names_are_refused(client: httpx.AsyncClient, name: str) -> None:
    r = await client.post(f"{S}/variables", json={"name": name, "type": "json", "value": 1})
    problem(r, 400, "invalid_key")


async def test_registration_body_is_validated(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{S}/variables", json={"name": "v", "type": "json"})
    assert problem(r, 422, "validation_failed")["errors"][0]["location"] == ["body", "value"]
    r = await client.post(f"{S}/variables", json={"name": "v", "type": "json", "value": 1,
                                                  "constraints": [1]})
    problem(r, 422, "validation_failed")
    r = await client.post(f"{S}/variables", json={"name": "v", "type": "json", "value": 1,
                                                  "colour": "red"})
    problem(r, 422, "validation_failed")
    r = await client.post(f"{S}/variables", content=b"{", headers={"content-type":
                                                                   "application/json"})
    problem(r, 400, "invalid_request")
    assert (await client.get(S)).status_code == 404


async def test_a_null_value_fits_json_and_choice_only_when_listed(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post(f"{S}/variables", json={
        "name": "j", "type": "json", "value": None})).status_code == 201
    r = await client.post(f"{S}/variables", json={
        "name": "c", "type": "choice", "value": None, "constraints": {"choices": ["a"]}})
    assert problem(r, 422, "constraint_violation")["errors"][0]["constraint"] == "choices"
    r = await client.post(f"{S}/variables", json={"name": "f", "type": "float", "value": None})
    assert problem(r, 422, "constraint_violation")["detail"] == (
        "Variable 'f' must be a number, but null (null) was given.")


async def test_values_are_stored_as_given(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{S}/variables", json={"name": "f", "type": "float", "value": 2})
    assert r.json()["value"] == 2 and isinstance(r.json()["value"], int)
    r = await client.put(f"{S}/variables/f", json={"value": 2.0})
    assert r.json()["value"] == 2.0 and isinstance(r.json()["value"], float)
