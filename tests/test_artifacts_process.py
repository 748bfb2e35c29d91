"""Artifacts against a real uvicorn process: memory use while streaming, clients that
vanish mid-upload, a server killed mid-upload, and requests exactly as sent on the wire.

Memory is the server's peak resident set (VmHWM, reset before each measured transfer
through /proc/<pid>/clear_refs), so an implementation that held a body whole even for
a moment would show it. The test's own client streams bodies from generators.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import flush
from tests.support import ServiceProcess, running
from tests.support_artifacts import MiB, PatternBody, files_under, memory_status, reset_peak

STORES = ["memory", "redis", "file"]


@pytest.fixture
def redis_for_process(redis_url: str) -> str:
    flush(redis_url)
    return redis_url


def service_env(store: str, redis_url: str, root: Path, **extra: str) -> dict[str, str]:
    """State and artifacts for one store kind: memory/memory, Redis/Redis, Redis/files."""
    env = {
        "CORKBOARD_BACKEND": "memory://" if store == "memory" else redis_url,
        "CORKBOARD_ARTIFACT_GC_INTERVAL_SECONDS": "0.1",
        "CORKBOARD_ARTIFACT_GRACE_SECONDS": "0",
        "CORKBOARD_LOG_LEVEL": "warning",
    }
    if store == "file":
        env["CORKBOARD_ARTIFACTS"] = root.as_uri()
    env.update(extra)
    return env


def blob_count(store: str, redis_url: str, root: Path) -> int | None:
    """How many blobs the store holds, seen from outside (None for memory)."""
    if store == "file":
        return len(files_under(root / "blobs")) + len(files_under(root / "tmp"))
    if store == "redis":
        client = redis.Redis.from_url(redis_url)
        try:
            ids = {k.decode().split("}")[0] for k in client.scan_iter(match="cb:blob:{*")}
        finally:
            client.close()
        return len(ids)
    return None


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def warm_up(client: httpx.Client) -> None:
    """Exercise upload and download once, so that first-use allocations are not counted."""
    data = os.urandom(2 * MiB)
    assert client.put("/v1/artifacts/warm", content=data).status_code in (200, 201)
    assert client.get("/v1/artifacts/warm").content == data


def peak_growth(pid: int, baseline: int) -> int:
    return memory_status(pid)["VmHWM"] - baseline


def send_partial(port: int, path: str, declared: int, body: bytes) -> None:
    """Send a PUT declaring ``declared`` bytes, then only ``body``, then vanish."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: corkboard\r\nContent-Length: {declared}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        s.sendall(body)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def open_files(pid: int) -> list[str]:
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found.append(os.readlink(fd))
        except FileNotFoundError:  # closed meanwhile
            pass
    return found


def raw_status(port: int, method: str, path: str, body: bytes = b"") -> int:
    """The status of one request whose path is sent exactly as given."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: corkboard\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode() + body
        )
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize("store", STORES)
def test_oversized_upload_is_refused_without_growing_memory(
    store: str, redis_for_process: str, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    env = service_env(store, redis_for_process, root, CORKBOARD_MAX_ARTIFACT_BYTES=str(8 * MiB))
    with running(ServiceProcess(env)) as (svc,), httpx.Client(base_url=svc.url) as client:
        assert svc.proc is not None
        pid = svc.proc.pid
        warm_up(client)
        blobs_before = blob_count(store, redis_for_process, root)
        baseline = memory_status(pid)["VmRSS"]
        reset_peak(pid)

        upload = PatternBody(64 * MiB)  # chunked: the limit is found while reading
        r = client.put("/v1/artifacts/huge", content=iter(upload), timeout=60)
        assert r.status_code == 413
        assert r.json()["code"] == "payload_too_large"
        declared = PatternBody(64 * MiB)  # with a Content-Length: refused before reading
        r = client.put(
            "/v1/artifacts/huge", content=iter(declared),
            headers={"Content-Length": str(64 * MiB)}, timeout=60,
        )
        assert r.status_code == 413

        growth = peak_growth(pid, baseline)
        assert growth < 24 * MiB, f"server peak memory grew by {growth / MiB:.1f} MiB"
        assert client.get("/v1/artifacts/huge").status_code == 404
        assert [i["key"] for i in client.get("/v1/artifacts").json()["items"]] == ["warm"]
        assert blob_count(store, redis_for_process, root) == blobs_before


@pytest.mark.parametrize("store", STORES)
def test_client_vanishing_mid_upload_changes_nothing(
    store: str, redis_for_process: str, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    env = service_env(store, redis_for_process, root)
    with running(ServiceProcess(env)) as (svc,), httpx.Client(base_url=svc.url) as client:
        old = os.urandom(MiB)
        assert client.put("/v1/artifacts/doc", content=old).status_code == 201
        revision = client.get("/v1/events").json()["revision"]
        blobs_before = blob_count(store, redis_for_process, root)

        send_partial(svc.port, "/v1/artifacts/doc", 10 * MiB, os.urandom(3 * MiB))
        send_partial(svc.port, "/v1/artifacts/other", 10 * MiB, os.urandom(MiB))

        if blobs_before is not None:
            wait_until(lambda: blob_count(store, redis_for_process, root) == blobs_before)
        assert client.get("/v1/artifacts/doc").content == old
        assert client.get("/v1/artifacts/other").status_code == 404
        assert client.get("/v1/events", params={"since": revision}).json()["events"] == []
        # The server is healthy and takes the next upload.
        assert client.put("/v1/artifacts/doc", content=b"new").status_code == 200
        assert "Traceback" not in svc.output()


def test_paths_sent_on_the_wire_cannot_leave_the_root(
    redis_for_process: str, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    env = service_env("file", redis_for_process, root)
    with running(ServiceProcess(env)) as (svc,):
        for path in ("/v1/artifacts/../../escape", "/v1/artifacts/a/../../../../escape",
                     "/v1/artifacts/%2e%2e/%2e%2e/escape", "/v1/artifacts/..%2f..%2fescape",
                     "/v1/artifacts//tmp/escape", "/v1/artifacts/%2Ftmp%2Fescape"):
            for method in ("PUT", "GET", "DELETE"):
                status = raw_status(svc.port, method, path, b"evil")
                assert status == 400, (method, path, status)  # invalid_key
    assert [p for p in files_under(tmp_path) if root not in p.parents] == []
    assert files_under(root) == []


def test_200_mib_through_the_file_store_in_bounded_memory(
    redis_for_process: str, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    env = service_env(
        "file", redis_for_process, root, CORKBOARD_MAX_ARTIFACT_BYTES=str(256 * MiB)
    )
    with running(ServiceProcess(env)) as (svc,), httpx.Client(base_url=svc.url) as client:
        assert svc.proc is not None
        pid = svc.proc.pid
        warm_up(client)
        baseline = memory_status(pid)["VmRSS"]
        reset_peak(pid)

        body = PatternBody(200 * MiB)
        r = client.put("/v1/artifacts/big.bin", content=iter(body), timeout=120)
        assert r.status_code == 201
        expected = body.digest.hexdigest()
        assert r.json() == {**r.json(), "size": 200 * MiB, "sha256": expected}

        digest = hashlib.sha256()
        size = 0
        with client.stream("GET", "/v1/artifacts/big.bin", timeout=120) as r:
            assert r.status_code == 200
            assert r.headers["content-length"] == str(200 * MiB)
            for piece in r.iter_raw(MiB):
                digest.update(piece)
                size += len(piece)
        assert (size, digest.hexdigest()) == (200 * MiB, expected)

        growth = peak_growth(pid, baseline)
        assert growth < 50 * MiB, f"server peak memory grew by {growth / MiB:.1f} MiB"


@pytest.mark.parametrize("store", ["redis", "file"])
def test_server_killed_mid_upload_keeps_the_previous_version(
    store: str, redis_for_process: str, tmp_path: Path
) -> None:
    root = tmp_path / "artifacts"
    env = service_env(store, redis_for_process, root, CORKBOARD_ARTIFACT_UPLOAD_TIMEOUT_SECONDS="1")
    old = os.urandom(MiB)
    first = ServiceProcess(env)
    with running(first) as (svc,):
        assert httpx.put(svc.url + "/v1/artifacts/doc", content=old).status_code == 201
        with socket.create_connection(("127.0.0.1", svc.port)) as s:
            s.sendall(
                f"PUT /v1/artifacts/doc HTTP/1.1\r\nHost: corkboard\r\n"
                f"Content-Length: {10 * MiB}\r\n\r\n".encode() + os.urandom(2 * MiB)
            )
            # Part of the new version is in the store when the server dies.
            wait_until(lambda: (blob_count(store, redis_for_process, root) or 0) >= 2)
            svc.kill()

    with running(ServiceProcess(env)) as (svc,):
        r = httpx.get(svc.url + "/v1/artifacts/doc")
        assert r.status_code == 200
        assert r.content == old
        # The dead upload's bytes are removed once its reservation lapses (2 x timeout).
        wait_until(lambda: blob_count(store, redis_for_process, root) == 1, timeout=15)
        assert httpx.get(svc.url + "/v1/artifacts/doc").content == old


@pytest.mark.parametrize("store", STORES)
def test_client_vanishing_mid_download(store: str, redis_for_process: str, tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    env = service_env(store, redis_for_process, root, CORKBOARD_MAX_ARTIFACT_BYTES=str(64 * MiB))
    with running(ServiceProcess(env)) as (svc,), httpx.Client(base_url=svc.url) as client:
        assert svc.proc is not None
        data = os.urandom(24 * MiB)
        assert client.put("/v1/artifacts/big", content=data, timeout=60).status_code == 201
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", svc.port)) as s:
                s.sendall(b"GET /v1/artifacts/big HTTP/1.1\r\nHost: corkboard\r\n\r\n")
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00" + b"\x00" * 6)
        assert client.get("/v1/artifacts/big", timeout=60).content == data
        if store == "file":  # every reader closed its file
            pid = svc.proc.pid
            wait_until(lambda: not any(str(root) in f for f in open_files(pid)))
        assert "Traceback" not in svc.output()
