"""The test harness's own rules: pytest-xdist workers never share a Redis database."""

from __future__ import annotations

import pytest

from tests.conftest import worker_database


def test_each_xdist_worker_gets_its_own_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert worker_database("redis://h:1/3") == "redis://h:1/3"
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    assert worker_database("redis://h:1/3") == "redis://h:1/3"
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    assert worker_database("redis://h:1/3") == "redis://h:1/5"
    assert worker_database("redis://:pw@h:1") == "redis://:pw@h:1/2"
