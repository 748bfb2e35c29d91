"""The ``corkboard txn`` and ``corkboard lease ...`` commands (API.md sections 10, 11)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from corkboard.cli_base import OK, REFUSED, UsageError, dumps, read_input, write_line
from corkboard.client import Corkboard, LeaseDetail

# -- txn and leases -------------------------------------------------------------------

TXN_MEMBERS = ("compare", "success", "failure")


def cmd_txn(client: Corkboard, args: argparse.Namespace) -> int:
    """Apply a transaction document (API.md section 10); prints the answer. Exit 0 when
    the compares held, 1 when they did not (the failure branch ran)."""
    try:
        doc = orjson.loads(read_input(args.file))
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{args.file}: not a JSON transaction ({exc})") from exc
    if not isinstance(doc, dict):
        raise UsageError(f"{args.file}: a transaction is a JSON object with "
                         "compare, success and failure")
    extra = sorted(set(doc) - set(TXN_MEMBERS))
    if extra:
        raise UsageError(f"{args.file}: unknown member(s) {', '.join(extra)}; a transaction "
                         "has compare, success and failure")
    for member in TXN_MEMBERS:
        items = doc.get(member, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise UsageError(f"{args.file}: '{member}' is a list of JSON objects")
    result = client.txn(doc.get("compare"), doc.get("success"), doc.get("failure"))
    write_line(dumps(result.raw))
    return OK if result.succeeded else REFUSED


def lease_line(detail: LeaseDetail) -> str:
    return dumps({"id": detail.id, "ttl": detail.ttl, "granted_at": detail.granted_at,
                  "expires_at": detail.expires_at, "keys": detail.keys,
                  "locks": [{"name": lk.name, "owner": lk.owner, "token": lk.token,
                             **({"session": lk.session} if lk.session else {})}
                            for lk in detail.locks],
                  **({"revision": detail.revision} if detail.revision is not None else {})})


def cmd_lease_grant(client: Corkboard, args: argparse.Namespace) -> int:
    info = client.grant_lease(args.ttl, id=args.id)
    write_line(dumps({"id": info.id, "ttl": info.ttl, "granted_at": info.granted_at,
                      "expires_at": info.expires_at}) if args.json else info.id)
    return OK


def cmd_lease_keepalive(client: Corkboard, args: argparse.Namespace) -> int:
    """One keepalive (``--once``), or one every ttl/3 until interrupted or the lease ends;
    prints the new expiry each time."""
    while True:
        info = client.keepalive(args.id)
        write_line(f"{info.id} {info.expires_at}")
        if args.once:
            return OK
        time.sleep(info.ttl / 3)


def cmd_lease_get(client: Corkboard, args: argparse.Namespace) -> int:
    write_line(lease_line(client.get_lease(args.id)))
    return OK


def cmd_lease_list(client: Corkboard, args: argparse.Namespace) -> int:
    for info in client.iter_leases(args.pattern):
        write_line(dumps({"id": info.id, "ttl": info.ttl, "granted_at": info.granted_at,
                          "expires_at": info.expires_at}) if args.json else info.id)
    return OK


def cmd_lease_revoke(client: Corkboard, args: argparse.Namespace) -> int:
    write_line(lease_line(client.revoke_lease(args.id)))
    return OK


def add_txn_commands(command: Callable[..., Any], sub: Any) -> None:
    """Add ``txn`` and ``lease ...`` with the parser's ``command`` helper."""
    p = command("txn", cmd_txn, "apply a transaction: a JSON object with compare, success "
                "and failure (docs/txn.md); prints the answer; exits 1 when the compares "
                "failed")
    p.add_argument("file", nargs="?", default="-", help="the transaction file (default - : "
                   "stdin)")

    lease = sub.add_parser("lease", help="grant, keep alive, show, list or revoke leases")
    lease_sub = lease.add_subparsers(dest="lease_command", required=True)
    p = command("grant", cmd_lease_grant, "grant a lease; prints its id", lease_sub)
    p.add_argument("ttl", help="its lifetime without keepalives: 10, 500ms, 30s")
    p.add_argument("--id", help="the lease id (default: generated)")
    p.add_argument("--json", action="store_true", help="print the whole lease")
    p = command("keepalive", cmd_lease_keepalive, "keep a lease alive (every ttl/3 until "
                "interrupted); prints each new expiry", lease_sub)
    p.add_argument("id")
    p.add_argument("--once", action="store_true", help="one keepalive, then exit")
    p = command("get", cmd_lease_get, "show a lease with its keys and locks (JSON)",
                lease_sub)
    p.add_argument("id")
    p = command("list", cmd_lease_list, "list live leases whose ids match a pattern",
                lease_sub, aliases=["ls"])
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--json", action="store_true", help="print each lease as a JSON line")
    p = command("revoke", cmd_lease_revoke, "end a lease now: its keys are deleted and its "
                "locks released; prints what it removed (JSON)", lease_sub)
    p.add_argument("id")
