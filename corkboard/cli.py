"""The client half of the ``corkboard`` command (etcdctl/nats style): get, put, del, ls,
watch, txn, lock, lease grant/keepalive/get/list/revoke, session export/import and
artifact put/get against a running service.

Connection: ``--url``/``CORKBOARD_URL``, ``--token``/``CORKBOARD_TOKEN``,
``--ns``/``CORKBOARD_NS``. Inside ``corkboard lock NAME -- CMD``, writes made by a nested
``corkboard`` carry the lock's fence (``CORKBOARD_FENCE_LOCK``/``CORKBOARD_FENCE_TOKEN``).
Exit codes: 0 ok; 1 refused by the service (not found, precondition failed, lock held,
stale fence, invalid value; for ``txn``, compares that failed); 2 usage; 3 unreachable
or unavailable; 4 unauthorized or forbidden; 5 the lock was lost while the command ran;
a command's own code for ``lock``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import orjson

from corkboard.cli_base import (
    INTERRUPTED,
    OK,
    USAGE,
    Command,
    UsageError,
    dumps,
    exit_code,
    fail,
    read_input,
    write_line,
)
from corkboard.cli_txn import add_txn_commands
from corkboard.client import (
    Corkboard,
    CorkboardError,
    Event,
    Fence,
    LockLost,
    Reset,
    Synced,
)

# -- connection -----------------------------------------------------------------------


def connect(args: argparse.Namespace) -> Corkboard:
    url = args.url or os.environ.get("CORKBOARD_URL")
    token = args.token if args.token is not None else os.environ.get("CORKBOARD_TOKEN")
    ns = args.ns or os.environ.get("CORKBOARD_NS") or "default"
    return Corkboard(url, token=token, ns=ns)


def inherited_fence() -> Fence | None:
    """The fence ``corkboard lock`` passes to its command, if this runs inside one."""
    name = os.environ.get("CORKBOARD_FENCE_LOCK")
    token = os.environ.get("CORKBOARD_FENCE_TOKEN")
    if not name or not token or not token.isdigit():
        return None
    return Fence(name, int(token), os.environ.get("CORKBOARD_FENCE_SESSION") or None)


def run(command: Command, args: argparse.Namespace) -> int:
    """Run a client command: connect, apply an inherited fence, map errors to exit codes."""
    try:
        with connect(args) as client:
            fence = inherited_fence()
            with client.fenced(fence) if fence else contextlib.nullcontext():
                return command(client, args)
    except CorkboardError as exc:
        return fail(str(exc), exit_code(exc))
    except UsageError as exc:
        return fail(str(exc), USAGE)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # `corkboard watch | head`: the reader is gone; say nothing more.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except OSError as exc:
        return fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), USAGE)


# -- keys -----------------------------------------------------------------------------


def parse_value(text: str, as_string: bool) -> Any:
    if as_string:
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(
            f"the value is not JSON ({exc}); quote it as JSON ('\"text\"') or pass --string"
        ) from exc


def cmd_get(client: Corkboard, args: argparse.Namespace) -> int:
    entry = client.get(args.key, revision=args.revision)
    if args.json:
        write_line(dumps(entry.raw))
    elif args.raw and isinstance(entry.value, str):
        write_line(entry.value)
    else:
        write_line(dumps(entry.value))
    return OK


def cmd_put(client: Corkboard, args: argparse.Namespace) -> int:
    text = args.value
    if args.value == "-":  # stdin, without the newline that `echo` adds
        text = read_input("-").decode()
        text = text.strip() if not args.string else text.removesuffix("\n")
    value = parse_value(text, args.string)
    entry = client.put(args.key, value, ttl=args.ttl, if_revision=args.if_revision,
                       lease=args.lease)
    write_line(dumps(entry.raw) if args.json else str(entry.revision))
    return OK


def cmd_del(client: Corkboard, args: argparse.Namespace) -> int:
    if (args.key is None) == (args.pattern is None):
        raise UsageError("give a KEY, or --pattern PATTERN to delete every matching key")
    if args.pattern is not None:
        if args.if_revision is not None:
            raise UsageError("--if-revision applies to one key, not to --pattern")
        done = client.delete_pattern(args.pattern)
        write_line(dumps({"deleted": done.deleted, "keys": done.keys,
                          "revision": done.revision}))
        return OK
    client.delete(args.key, if_revision=args.if_revision)
    return OK


def cmd_ls(client: Corkboard, args: argparse.Namespace) -> int:
    values = args.values or args.json
    for entry in client.iter_keys(args.pattern, values=values):
        if args.json:
            write_line(dumps(entry.raw))
        elif args.values:
            write_line(f"{entry.key}\t{dumps(entry.value)}")
        else:
            write_line(entry.key)
    return OK


# -- watch ----------------------------------------------------------------------------


def watch_line(item: Event | Reset | Synced, as_json: bool) -> str:
    if isinstance(item, Event):
        if as_json:
            return dumps(item.data)
        value = item.value if not item.type.endswith(("delete", "expire")) else item.old_value
        return f"{item.revision} {item.type} {item.key or ''} {dumps(value)}".rstrip()
    if isinstance(item, Reset):
        doc = {"type": "reset", "compacted_revision": item.compacted_revision,
               "current_revision": item.current_revision}
        return dumps(doc) if as_json else (
            f"{item.current_revision} reset compacted_revision={item.compacted_revision}")
    return dumps({"type": "synced", "revision": item.revision}) if as_json else (
        f"{item.revision} synced")


def cmd_watch(client: Corkboard, args: argparse.Namespace) -> int:
    types = [t for part in args.types or [] for t in part.split(",") if t] or None
    with client.watch(args.pattern, since=args.since, types=types, session=args.session,
                      snapshot=args.snapshot, on_reset="yield", lease=args.lease) as stream:
        for item in stream:
            if not isinstance(item, Event | Reset | Synced):
                continue
            write_line(watch_line(item, args.json))
    return OK


# -- lock -----------------------------------------------------------------------------


def cmd_lock(client: Corkboard, args: argparse.Namespace) -> int:
    command = list(args.cmd)
    if not command:
        raise UsageError("give the command to run: corkboard lock NAME -- CMD [ARGS...]")
    with client.lock(args.name, ttl=args.ttl, wait=args.wait, owner=args.owner,
                     session=args.session) as held:
        env = {**os.environ, "CORKBOARD_FENCE_LOCK": args.name,
               "CORKBOARD_FENCE_TOKEN": str(held.token)}
        if args.session:
            env["CORKBOARD_FENCE_SESSION"] = args.session
        try:
            proc = subprocess.Popen(command, env=env)
        except OSError as exc:
            raise UsageError(f"cannot run {command[0]!r}: {exc.strerror}") from exc
        code = _wait(proc, held.check)
    return code


def _wait(proc: subprocess.Popen[bytes], check: Callable[[], None]) -> int:
    """The command's exit code; if the lock is lost first, the command is stopped."""
    while True:
        try:
            return proc.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:
            # The terminal sent SIGINT to the command as well; let it finish.
            return proc.wait()
        try:
            check()
        except LockLost:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise


# -- sessions and artifacts -----------------------------------------------------------


@contextlib.contextmanager
def output(path: str | None) -> Iterator[BinaryIO]:
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with open(path, "wb") as file:
        yield file


def cmd_session_export(client: Corkboard, args: argparse.Namespace) -> int:
    snapshot = client.export_session(args.sid)
    with output(args.output) as out:
        out.write(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2) + b"\n")
    return OK


def cmd_session_import(client: Corkboard, args: argparse.Namespace) -> int:
    try:
        snapshot = orjson.loads(read_input(args.file))
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{args.file}: not a JSON snapshot ({exc})") from exc
    if not isinstance(snapshot, dict):
        raise UsageError(f"{args.file}: a snapshot is a JSON object")
    result = client.import_session(args.sid, snapshot)
    write_line(dumps({"session_id": result.session_id, "revision": result.revision,
                      "created": result.created, "tokens": result.tokens}))
    return OK


def cmd_artifact_put(client: Corkboard, args: argparse.Namespace) -> int:
    if args.file == "-":
        meta = client.put_artifact(args.key, sys.stdin.buffer, content_type=args.content_type,
                                   ttl=args.ttl)
    else:
        with open(args.file, "rb") as file:
            meta = client.put_artifact(args.key, file, content_type=args.content_type,
                                       ttl=args.ttl)
    write_line(dumps({"key": meta.key, "size": meta.size, "sha256": meta.sha256,
                      "content_type": meta.content_type, "revision": meta.revision}))
    return OK


def cmd_artifact_get(client: Corkboard, args: argparse.Namespace) -> int:
    with client.open_artifact(args.key) as (_info, chunks), output(args.output) as out:
        for chunk in chunks:
            out.write(chunk)
    return OK


# -- the parser -----------------------------------------------------------------------


def add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """--url, --token, --ns; on subcommands with SUPPRESS so that both places work."""
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection")
    group.add_argument("--url", default=default,
                       help="service URL (CORKBOARD_URL; default http://127.0.0.1:8000)")
    group.add_argument("--token", default=default, help="bearer token (CORKBOARD_TOKEN)")
    group.add_argument("--ns", default=default, help="namespace (CORKBOARD_NS; default default)")


def add_commands(sub: Any, parser: argparse.ArgumentParser) -> None:
    """Add the client commands to the ``corkboard`` parser and its subparsers."""
    add_connection_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    add_connection_options(common, suppress=True)

    def command(name: str, func: Command, help: str, parent: Any = sub, **extra: Any) -> Any:
        p = parent.add_parser(name, help=help, parents=[common], description=help, **extra)
        p.set_defaults(func=lambda args: run(func, args))
        return p

    p = command("get", cmd_get, "print a key's value (JSON)")
    p.add_argument("key")
    p.add_argument("--revision", type=int, help="the value the key had at this revision")
    p.add_argument("--json", action="store_true", help="print the whole entry")
    p.add_argument("--raw", action="store_true", help="print a string value without quotes")

    p = command("put", cmd_put, "store a value; prints the new revision")
    p.add_argument("key")
    p.add_argument("value", help="a JSON value, or - to read it from stdin")
    p.add_argument("--string", action="store_true", help="store VALUE as a string, not JSON")
    p.add_argument("--ttl", help="expire after this long: 30, 0.5, 250ms, 5m")
    p.add_argument("--if-revision", type=int,
                   help="only if the key is still at this revision (0: only if absent)")
    p.add_argument("--lease", help="attach the key to this live lease (not with --ttl)")
    p.add_argument("--json", action="store_true", help="print the whole entry")

    p = command("del", cmd_del, "delete a key (fine when absent), or every key matching "
                "--pattern at one revision (prints what was deleted)")
    p.add_argument("key", nargs="?")
    p.add_argument("--pattern", help="delete every key matching this pattern ('*': all)")
    p.add_argument("--if-revision", type=int, help="only if the key is at this revision")

    p = command("ls", cmd_ls, "list keys matching a pattern ('*' matches anything)")
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--values", action="store_true", help="print KEY<TAB>VALUE")
    p.add_argument("--json", action="store_true", help="print each entry as a JSON line")

    p = command("watch", cmd_watch, "print changes live, one per line (resumes by itself)")
    p.add_argument("pattern", nargs="?")
    p.add_argument("--since", type=int, help="start after this revision (0: all retained)")
    p.add_argument("--types", action="append",
                   help="event types or prefixes, comma separated: kv, lock, kv.put...")
    p.add_argument("--session", help="only events of this session")
    p.add_argument("--snapshot", action="store_true",
                   help="start with the matching keys, then 'synced', then live changes")
    p.add_argument("--lease", help="presence: keep this lease alive while watching")
    p.add_argument("--json", action="store_true", help="print each event as a JSON line")

    add_txn_commands(command, sub)

    p = command("lock", cmd_lock, "run a command while holding a lock (fence in its "
                "environment: CORKBOARD_FENCE_LOCK, CORKBOARD_FENCE_TOKEN); exits with its code")
    p.add_argument("name")
    p.add_argument("--ttl", default="30s", help="lease, refreshed every ttl/3 (default 30s)")
    p.add_argument("--wait", help="wait this long for the lock (at most 60s; default 0)")
    p.add_argument("--owner", help="owner name (default host:pid:random)")
    p.add_argument("--session", help="a session-scoped lock of this session")
    p.add_argument("cmd", nargs="*", metavar="-- CMD [ARGS...]",
                   help="the command to run, after --")

    session = sub.add_parser("session", help="export or import a session snapshot")
    session_sub = session.add_subparsers(dest="session_command", required=True)
    p = command("export", cmd_session_export, "write a session's snapshot (JSON)",
                session_sub)
    p.add_argument("sid")
    p.add_argument("-o", "--output", help="file (default stdout)")
    p = command("import", cmd_session_import, "replace a session with a snapshot",
                session_sub)
    p.add_argument("sid")
    p.add_argument("file", help="snapshot file, or - for stdin")

    artifact = sub.add_parser("artifact", help="upload or download an artifact")
    artifact_sub = artifact.add_subparsers(dest="artifact_command", required=True)
    p = command("put", cmd_artifact_put, "upload a file (streamed)", artifact_sub)
    p.add_argument("key")
    p.add_argument("file", help="file, or - for stdin")
    p.add_argument("--content-type", default="application/octet-stream")
    p.add_argument("--ttl", help="expire after this long")
    p = command("get", cmd_artifact_get, "download an artifact (streamed)", artifact_sub)
    p.add_argument("key")
    p.add_argument("-o", "--output", help="file (default stdout)")


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``lock NAME [options] -- CMD ARGS``: the arguments before ``--``, and the command
    after it (argparse does not pass ``--`` through subcommands)."""
    if "--" not in argv or "lock" not in argv[: argv.index("--")]:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def main(argv: list[str] | None = None) -> int:
    """The client commands alone (``python -m corkboard.cli``)."""
    parser = argparse.ArgumentParser(prog="corkboard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub, parser)
    return dispatch(parser, argv)


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` (default: the process's) and run the chosen command; the words
    after ``lock NAME --`` are its command, not options (see split_command)."""
    argv, command = split_command(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if command is not None:
        args.cmd = command
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
