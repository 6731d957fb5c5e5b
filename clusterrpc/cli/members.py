"""``clusterrpc members URL [--json]``: the membership view of the node at URL.

It calls ``membership.members()`` (``spec/membership.md``, "Admin methods") with the same
connection options as ``clusterrpc call`` and prints one line per member: name, state,
incarnation, addresses, how long ago the node last heard from it, and its metadata.
"""

from __future__ import annotations

import argparse
from typing import Any

from clusterrpc.cli.exits import EXIT_OK
from clusterrpc.cli.notation import to_notation
from clusterrpc.cli.rpc import _EPILOG, _client, _connection_options, _Parser, _print_json
from clusterrpc.errors import Fault, TransportError

_METHOD_NOT_FOUND = -32601


def _rows(raw: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(row, dict) for row in raw):
        raise TransportError(f"{url}: membership.members did not answer a list of structs")
    return raw


def _ago(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "never"
    return f"{seconds:.1f}s ago"


def _cmd_members(args: argparse.Namespace) -> int:
    method = f"{args.service}.members"
    with _client(args) as client:
        try:
            rows = _rows(client.call(method), args.url)
        except Fault as fault:
            if fault.code == _METHOD_NOT_FOUND:
                raise Fault(fault.code, f"{args.url} runs no membership "
                                        f"(no method {method})") from None
            raise
    if args.json:
        _print_json(to_notation(rows))
        return EXIT_OK
    header = ("NAME", "STATE", "INC", "LAST HEARD", "ADDRESSES", "META")
    lines = [header]
    for row in rows:
        name = str(row.get("name", "?")) + (" (this node)" if row.get("self") else "")
        meta = ",".join(f"{key}={value}" for key, value in sorted(
            (row.get("meta") or {}).items()))
        lines.append((name, str(row.get("state", "?")), str(row.get("incarnation", "?")),
                      "-" if row.get("self") else _ago(row.get("last_heard")),
                      " ".join(map(str, row.get("addresses") or [])) or "-", meta or "-"))
    widths = [max(len(line[column]) for line in lines) for column in range(len(header) - 1)]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False))
              + "  " + line[-1])
    return EXIT_OK


def register(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add ``members`` to ``commands`` (the subparsers of ``clusterrpc``)."""
    members = commands.add_parser(
        "members", help="show a node's membership view",
        description="Show the members the node at URL knows, with their states "
                    "(alive, suspect, dead, left), incarnations, addresses, when it last "
                    "heard from each, and their metadata.",
        epilog=_EPILOG,
    )
    _connection_options(members)
    members.add_argument("--json", action="store_true", help="print a JSON list")
    members.add_argument("--service", default="membership",
                         help="the membership's service name (default: membership)")
    members.set_defaults(handler=_cmd_members)
