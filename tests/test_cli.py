"""The `corkboard` command refuses bad configurations with one clear line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import ROOT, free_port


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


def test_unknown_backend_scheme() -> None:
    r = run_cli("serve", "--backend", "postgres://localhost/x", "--port", str(free_port()))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1, r.stderr
    assert "unknown backend URL" in r.stderr and "memory://" in r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_redis() -> None:
    r = run_cli("serve", "--backend", f"redis://127.0.0.1:{free_port()}/0",
                "--port", str(free_port()))
    assert r.returncode == 2
    assert r.stderr.startswith("corkboard: cannot start: The Redis backend is unavailable")
    assert r.stderr.count("\n") == 1, r.stderr


def test_memory_backend_with_several_workers_is_refused() -> None:
    r = run_cli("serve", "--workers", "2", "--port", str(free_port()))
    assert r.returncode == 2
    assert "memory backend" in r.stderr and "redis://" in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr


def test_password_is_not_printed() -> None:
    r = run_cli("serve", "--backend", f"redis://:s3cret@127.0.0.1:{free_port()}/0",
                "--port", str(free_port()))
    assert r.returncode == 2
    assert "s3cret" not in r.stderr


@pytest.mark.parametrize("engine,url", [
    ("Redis", "redis://:s3cret@127.0.0.1:1/0"),
    ("NATS", "nats://ops:s3cret@127.0.0.1:1,127.0.0.1:2"),
])
def test_an_unavailable_backend_never_names_the_password(engine: str, url: str) -> None:
    from app.errors import backend_unavailable

    error = backend_unavailable(engine, OSError(f"cannot reach {url}"), url)
    assert error.status == 503 and "s3cret" not in error.detail
    assert f"The {engine} backend is unavailable (OSError: cannot reach " in error.detail
    assert "://***@127.0.0.1:1" in error.detail


def test_openapi_to_stdout() -> None:
    r = run_cli("openapi", "--output", "-")
    assert r.returncode == 0
    assert '"openapi"' in r.stdout


def test_required_tokens_missing_is_refused() -> None:
    import os

    env = {**os.environ, "CORKBOARD_REQUIRE_TOKENS": "true"}
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )
    assert r.returncode == 2
    assert "CORKBOARD_REQUIRE_TOKENS" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_invalid_setting_is_one_line() -> None:
    r = run_cli("serve", "--port", "99999")
    assert r.returncode == 2
    assert r.stderr.startswith("corkboard: invalid settings: port:"), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
