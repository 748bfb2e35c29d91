"""The container image definition: hadolint finds nothing, the build is
multi-stage on the pinned base, the runtime stage is small and non-root, the
HEALTHCHECK works with the standard library alone, and .dockerignore keeps the
build context to what the build copies. No Docker engine is needed."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

BASE_IMAGE = "python:3.11-slim-bookworm"
BUILD_TOOLS = ("apt-get", "apk ", "gcc", "g++", "build-essential", "make ", "pip install")

Instruction = tuple[str, str]  # (INSTRUCTION, arguments)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, "dangling line continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


@pytest.fixture(scope="module")
def dockerfile(repo_root: Path) -> list[Instruction]:
    return parse_dockerfile((repo_root / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def final_stage(dockerfile: list[Instruction]) -> list[Instruction]:
    return stages(dockerfile)[-1]


def run_hadolint(
    hadolint: Path, target: str, tmp_path: Path, stdin: str | None = None
) -> tuple[int, list[dict[str, object]]]:
    """hadolint with an empty configuration and inline ignore pragmas off, so
    neither a user's config, HADOLINT_* variables nor a comment can hide a rule."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\ntrustedRegistries: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    proc = subprocess.run(
        [
            str(hadolint),
            "--config",
            str(config),
            "--disable-ignore-pragma",
            "--no-color",
            "--format",
            "json",
            "--failure-threshold",
            "style",
            target,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.stderr == "", proc.stderr
    findings: list[dict[str, object]] = json.loads(proc.stdout or "[]")
    return proc.returncode, findings


# --- hadolint ---------------------------------------------------------------


def test_hadolint_reports_nothing(hadolint: Path, repo_root: Path, tmp_path: Path) -> None:
    returncode, findings = run_hadolint(hadolint, str(repo_root / "Dockerfile"), tmp_path)
    assert findings == []
    assert returncode == 0


def test_hadolint_does_report_problems(hadolint: Path, tmp_path: Path) -> None:
    """The linter works: a Dockerfile with known faults yields their rules."""
    bad = "FROM python:latest\nRUN apt-get update && apt-get install -y curl\nRUN pip install x\n"
    returncode, findings = run_hadolint(hadolint, "-", tmp_path, stdin=bad)
    assert returncode != 0
    assert {"DL3007", "DL3008", "DL3013", "DL3042"} <= {f["code"] for f in findings}


# --- structure --------------------------------------------------------------


def test_multi_stage_on_the_pinned_base(dockerfile: list[Instruction]) -> None:
    froms = [args for keyword, args in dockerfile if keyword == "FROM"]
    assert len(froms) >= 2, "build and runtime stages"
    for args in froms:
        image = args.split()[0]
        assert image == BASE_IMAGE, f"every stage starts from {BASE_IMAGE}, not {image}"


def test_runtime_stage_has_no_build_tools(final_stage: list[Instruction]) -> None:
    for keyword, args in final_stage:
        if keyword == "RUN":
            for tool in BUILD_TOOLS:
                assert tool not in args, f"runtime stage runs {tool!r}: {args}"
    copies = [args for keyword, args in final_stage if keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"], "only the built venv is copied in"


def test_runtime_stage_runs_as_non_root(final_stage: list[Instruction]) -> None:
    users = [args for keyword, args in final_stage if keyword == "USER"]
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root uid (for runAsNonRoot)"
    # Nothing after USER may switch back.
    after = final_stage[[k for k, _ in final_stage].index("USER") :]
    assert [k for k, _ in after].count("USER") == 1


def test_server_starts_with_settings_from_the_environment(
    final_stage: list[Instruction],
) -> None:
    entrypoint = [json.loads(a) for k, a in final_stage if k == "ENTRYPOINT"]
    cmd = [json.loads(a) for k, a in final_stage if k == "CMD"]
    assert entrypoint == [["corkboard"]], "exec form, so the server is PID 1 and gets SIGTERM"
    assert cmd == [["serve", "--host", "0.0.0.0", "--port", "8000"]]
    baked = [a for k, a in final_stage if k in ("ENV", "ARG") and "CORKBOARD_" in a]
    assert baked == [], "CORKBOARD_* settings come from the environment at run time"
    assert ("EXPOSE", "8000") in final_stage


def healthcheck_command(final_stage: list[Instruction]) -> list[str]:
    (args,) = [a for k, a in final_stage if k == "HEALTHCHECK"]
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", args)
    assert match, f"HEALTHCHECK in exec form: {args}"
    command: list[str] = json.loads(match.group(1))
    return command


def test_healthcheck_uses_the_standard_library(final_stage: list[Instruction]) -> None:
    command = healthcheck_command(final_stage)
    assert command[:2] == ["python", "-c"], "slim has no curl"
    assert "urllib.request" in command[2]
    assert "http://127.0.0.1:8000/healthz" in command[2]
    (args,) = [a for k, a in final_stage if k == "HEALTHCHECK"]
    assert "--timeout=" in args and "--interval=" in args


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"status": 200})
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1], handler
        finally:
            server.shutdown()
            thread.join()


def run_healthcheck(final_stage: list[Instruction], port: int) -> int:
    code = healthcheck_command(final_stage)[2].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=30, check=False
    )
    return proc.returncode


def test_healthcheck_command_passes_and_fails(
    final_stage: list[Instruction], health_server: tuple[int, type[_Health]]
) -> None:
    port, handler = health_server
    assert run_healthcheck(final_stage, port) == 0
    handler.status = 503
    assert run_healthcheck(final_stage, port) != 0


def test_healthcheck_fails_when_nothing_listens(final_stage: list[Instruction]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert run_healthcheck(final_stage, port) != 0


# --- build context -------------------------------------------------------------


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent
    directories decides; '!' re-includes; '**' spans directories."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out += pattern[i : end + 1]
                i = end + 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        compiled = regex(pattern.strip("/"))
        if any(compiled.match(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def dockerignore(repo_root: Path) -> list[str]:
    lines = (repo_root / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "app/__init__.py",
        "app/main.py",
        "app/backends/lua/acquire_lock.lua",
    ],
)
def test_build_context_keeps_what_the_build_needs(dockerignore: list[str], path: str) -> None:
    assert not dockerignore_excludes(dockerignore, path)


@pytest.mark.parametrize(
    "path",
    [
        ".git",
        ".git/config",
        ".venv/bin/python",
        "tests/deploy/test_dockerfile.py",
        "helm/corkboard/Chart.yaml",
        "bench/run.py",
        "app/__pycache__/main.cpython-311.pyc",
        "app/backends/__pycache__/redis.cpython-311.pyc",
        ".env",
        "Dockerfile",
    ],
)
def test_build_context_leaves_out_the_rest(dockerignore: list[str], path: str) -> None:
    assert dockerignore_excludes(dockerignore, path)


def test_dockerfile_copies_only_what_exists(
    dockerfile: list[Instruction], repo_root: Path, dockerignore: list[str]
) -> None:
    sources: list[str] = []
    for keyword, args in dockerfile:
        if keyword == "COPY" and not args.startswith("--from"):
            sources.extend(args.split()[:-1])
    assert sources, "the build stage copies the project in"
    for source in sources:
        if "*" in source:
            continue  # optional files (README*)
        assert (repo_root / source).exists(), source
        assert not dockerignore_excludes(dockerignore, source), source
