"""The ``corkboard`` client commands, run as processes against a live service: output,
one-line errors and exit codes, live watch, lock around a command, session export/import,
artifact upload/download. Watch and lock run on both backends; the commands that only
format what the client (tested on both backends) returns run on memory, as each process
start costs a second or more."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from corkboard.client import Corkboard
from tests.support import ROOT, ServiceProcess, free_port
from tests.support_client import cb, ns, service  # noqa: F401

CLI = [sys.executable, "-m", "app.cli"]
memory_only = pytest.mark.parametrize("service", ["memory"], indirect=True)


def cli(service: ServiceProcess, ns: str, *args: str, stdin: bytes | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, "CORKBOARD_URL": service.url, "CORKBOARD_NS": ns, **(env or {})}
    full_env.pop("CORKBOARD_TOKEN", None)
    return subprocess.run([*CLI, *args], cwd=ROOT, env=full_env, input=stdin,
                          capture_output=True, timeout=60)


def one_error_line(run: subprocess.CompletedProcess[bytes], prefix: str) -> None:
    text = run.stderr.decode()
    assert text.startswith(f"corkboard: {prefix}"), text
    assert text.count("\n") == 1 and "Traceback" not in text, text


@memory_only
def test_keys_output_errors_and_exit_codes(service: ServiceProcess, ns: str) -> None:
    run = cli(service, ns, "put", "cfg", '{"a": 1}')
    assert (run.returncode, run.stdout) == (0, b"1\n")
    run = cli(service, ns, "get", "cfg")
    assert (run.returncode, run.stdout) == (0, b'{"a":1}\n')
    run = cli(service, ns, "put", "greeting", "hello")  # not JSON
    assert run.returncode == 2
    one_error_line(run, "the value is not JSON")
    assert b"--string" in run.stderr
    run = cli(service, ns, "put", "greeting", "-", "--string", "--ttl", "1h", stdin=b"hello")
    assert (run.returncode, run.stdout) == (0, b"2\n")
    run = cli(service, ns, "get", "greeting", "--raw")
    assert run.stdout == b"hello\n"
    run = cli(service, ns, "--ns", ns, "ls", "--values")
    assert run.stdout.decode().splitlines() == ['cfg\t{"a":1}', 'greeting\t"hello"']
    run = cli(service, ns, "put", "cfg", "2", "--if-revision", "7")
    assert run.returncode == 1
    one_error_line(run, "revision_mismatch: ")
    run = cli(service, ns, "put", "cfg", "[2]", "--if-revision", "1", "--json")
    entry = orjson.loads(run.stdout)
    assert (entry["value"], entry["revision"], entry["version"]) == ([2], 3, 2)
    assert cli(service, ns, "del", "cfg").returncode == 0
    run = cli(service, ns, "get", "cfg")
    assert run.returncode == 1
    one_error_line(run, "not_found: Key 'cfg' does not exist.")
    run = cli(service, ns, "get", "bad key")
    assert run.returncode == 2
    one_error_line(run, "invalid_key: ")


def test_unreachable_and_usage() -> None:
    env = {**os.environ, "CORKBOARD_URL": f"http://127.0.0.1:{free_port()}"}
    run = subprocess.run([*CLI, "get", "k"], cwd=ROOT, env=env, capture_output=True,
                         timeout=60)
    assert run.returncode == 3
    one_error_line(run, "unreachable: cannot reach http://127.0.0.1:")
    run = subprocess.run([*CLI, "put"], cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert run.returncode == 2 and b"usage:" in run.stderr


def test_watch_prints_events_live(service: ServiceProcess, ns: str, cb: Corkboard) -> None:
    cb.put("jobs/a", 1)
    env = {**os.environ, "CORKBOARD_URL": service.url, "CORKBOARD_NS": ns}
    with subprocess.Popen([*CLI, "watch", "jobs/*", "--since", "0", "--types", "kv"],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b'1 kv.put jobs/a 1\n'  # from the log
        cb.put("other", 0)
        cb.put("jobs/b", {"x": True})
        assert proc.stdout.readline() == b'3 kv.put jobs/b {"x":true}\n'  # live
        cb.delete("jobs/a")
        assert proc.stdout.readline() == b"4 kv.delete jobs/a 1\n"
        proc.terminate()
    with subprocess.Popen([*CLI, "watch", "--since", "3", "--json"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE) as json_run:
        assert json_run.stdout is not None
        event = orjson.loads(json_run.stdout.readline())
        assert (event["revision"], event["type"], event["key"]) == (4, "kv.delete", "jobs/a")
        json_run.terminate()


def test_lock_runs_a_command_with_its_fence(service: ServiceProcess, ns: str,
                                           cb: Corkboard) -> None:
    script = ('import os, subprocess, sys; '
              'print(os.environ["CORKBOARD_FENCE_LOCK"], os.environ["CORKBOARD_FENCE_TOKEN"]); '
              'sys.stdout.flush(); '
              f'r = subprocess.run({[*CLI]!r} + ["put", "report", "42"]); '
              'sys.exit(7 if r.returncode == 0 else 99)')
    run = cli(service, ns, "lock", "jobs/nightly", "--ttl", "10s", "--", sys.executable,
              "-c", script)
    assert run.returncode == 7, run.stderr
    name, token = run.stdout.decode().split()[:2]
    assert name == "jobs/nightly" and int(token) >= 1
    assert cb.get_value("report") == 42
    assert cb.get_lock("jobs/nightly") is None  # released after the command
    # The nested put was fenced: with the lock released, the same fence is refused.
    run = cli(service, ns, "put", "report", "43",
              env={"CORKBOARD_FENCE_LOCK": "jobs/nightly", "CORKBOARD_FENCE_TOKEN": token})
    assert run.returncode == 1
    one_error_line(run, "stale_fence: ")
    # A lock lost while the command runs: the command is stopped, the exit code is 5.
    with subprocess.Popen([*CLI, "lock", "short", "--ttl", "1", "--", sys.executable, "-c",
                           "import time; print('started', flush=True); time.sleep(60)"],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**os.environ, "CORKBOARD_URL": service.url,
                               "CORKBOARD_NS": ns}) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
        cb.force_release("short")
        assert proc.wait(30) == 5
        assert proc.stderr is not None
        assert proc.stderr.read().decode().startswith("corkboard: lock_lost: ")
    held = cb.acquire("busy", owner="someone")
    run = cli(service, ns, "lock", "busy", "--", "true")
    assert run.returncode == 1
    one_error_line(run, "lock_held: ")
    assert held is not None


@memory_only
def test_session_export_import_and_artifacts(service: ServiceProcess, ns: str, cb: Corkboard,
                                             tmp_path: Path) -> None:
    cb.register_variable("s1", "mode", "string", "fast")
    cb.put_state("s1", "thread", "t1", {"turn": 1})
    out = tmp_path / "s1.json"
    assert cli(service, ns, "session", "export", "s1", "-o", str(out)).returncode == 0
    run = cli(service, ns, "session", "import", "s2", "-", stdin=out.read_bytes())
    assert run.returncode == 0 and orjson.loads(run.stdout)["created"] is True
    assert cb.get_variable("s2", "mode").value == "fast"
    assert cb.get_state("s2", "thread", "t1") == {"turn": 1}

    data = os.urandom(300_000)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(data)
    run = cli(service, ns, "artifact", "put", "runs/r1.bin", str(blob),
              "--content-type", "application/x-test")
    assert orjson.loads(run.stdout)["sha256"] == hashlib.sha256(data).hexdigest()
    run = cli(service, ns, "artifact", "put", "runs/r2.bin", "-", stdin=data[:1000])
    assert orjson.loads(run.stdout)["size"] == 1000
    assert cli(service, ns, "artifact", "get", "runs/r1.bin").stdout == data
    copy = tmp_path / "copy.bin"
    assert cli(service, ns, "artifact", "get", "runs/r2.bin", "-o", str(copy)).returncode == 0
    assert copy.read_bytes() == data[:1000]
    assert cb.head_artifact("runs/r1.bin").content_type == "application/x-test"


@memory_only
def test_txn_pattern_delete_and_leases(service: ServiceProcess, ns: str, cb: Corkboard,
                                       tmp_path: Path) -> None:
    run = cli(service, ns, "lease", "grant", "30s", "--id", "agent-7")
    assert (run.returncode, run.stdout) == (0, b"agent-7\n")
    run = cli(service, ns, "put", "agents/agent-7", '{"role":"planner"}', "--lease", "agent-7")
    assert run.returncode == 0, run.stderr
    txn = {"compare": [{"key": "leader", "revision": 0}],
           "success": [{"op": "put", "key": "leader", "value": "agent-7", "lease": "agent-7"}],
           "failure": [{"op": "get", "key": "leader"}]}
    doc = tmp_path / "txn.json"
    doc.write_bytes(orjson.dumps(txn))
    run = cli(service, ns, "txn", str(doc))
    answer = orjson.loads(run.stdout)
    assert run.returncode == 0 and answer["succeeded"] is True
    assert answer["results"][0]["value"] == "agent-7"
    run = cli(service, ns, "txn", stdin=orjson.dumps(txn))  # the compare fails now: exit 1
    answer = orjson.loads(run.stdout)
    assert run.returncode == 1 and answer["succeeded"] is False
    assert answer["results"][0]["value"] == "agent-7"
    run = cli(service, ns, "txn", "-", stdin=b'{"success": [], "extra": 1}')
    assert run.returncode == 2
    one_error_line(run, "-: unknown member(s) extra")
    run = cli(service, ns, "txn", stdin=b'{"success": [{"op": "put", "key": "k", "value": 1, '
                                        b'"lease": "nobody"}]}')
    assert run.returncode == 1
    one_error_line(run, "lease_not_found: ")

    run = cli(service, ns, "lease", "keepalive", "agent-7", "--once")
    assert run.returncode == 0 and run.stdout.startswith(b"agent-7 ")
    run = cli(service, ns, "lease", "get", "agent-7")
    assert orjson.loads(run.stdout)["keys"] == ["agents/agent-7", "leader"]
    run = cli(service, ns, "lease", "ls", "agent-*")
    assert run.stdout == b"agent-7\n"
    run = cli(service, ns, "lease", "revoke", "agent-7")
    revoked = orjson.loads(run.stdout)
    assert run.returncode == 0 and revoked["keys"] == ["agents/agent-7", "leader"]
    assert cb.get_value("leader") is None
    run = cli(service, ns, "lease", "keepalive", "agent-7")
    assert run.returncode == 1
    one_error_line(run, "lease_not_found: ")

    cb.txn(success=[{"op": "put", "key": f"tmp/{i}", "value": i} for i in range(3)])
    run = cli(service, ns, "del", "--pattern", "tmp/*")
    assert run.returncode == 0
    assert orjson.loads(run.stdout)["keys"] == ["tmp/0", "tmp/1", "tmp/2"]
    run = cli(service, ns, "del")
    assert run.returncode == 2
    one_error_line(run, "give a KEY, or --pattern")


@memory_only
def test_lease_keepalive_runs_until_stopped(service: ServiceProcess, ns: str,
                                            cb: Corkboard) -> None:
    granted = cb.grant_lease(3, id="kept")
    env = {**os.environ, "CORKBOARD_URL": service.url, "CORKBOARD_NS": ns}
    with subprocess.Popen([*CLI, "lease", "keepalive", "kept"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]  # one every ttl/3
        assert all(line.startswith(b"kept ") for line in lines), lines
        # Four keepalives, a TTL apart from the first: kept alive past its TTL.
        assert cb.get_lease("kept").expires_at > granted.expires_at
        proc.terminate()
