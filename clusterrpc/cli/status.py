"""``clusterrpc status URL [--json]``: a node at a glance.

It calls ``node.status()`` (:mod:`clusterrpc.admin`, the service every node publishes) with the
connection options of ``clusterrpc call`` and prints the node's name, cluster, version and pid,
its uptime, its addresses, its membership (members by state), its election (the leader, the
term and this node's role), its local API (clients connected) and its counters::

    node:      n1 (cluster ORG/UK/EDIN, clusterrpc 0.1.0, pid 4242)
    uptime:    1h 02m 03s (started 2026-11-22T18:51:39Z)
    addresses: udp://127.0.0.1:7400 tcp://127.0.0.1:7400
    members:   3 (alive 2, dead 1; view 5)
    leader:    n2 (term 4; this node: follower)
    local:     2 clients (services: locks, system)
    counters:  accepted 10, calls 3; 16 more at 0

``--json`` prints the struct ``node.status()`` answered as one JSON object (``started`` as an
ISO 8601 string in UTC, ``nil`` as ``null``, every counter). Exit statuses are those of ``call``
(:mod:`clusterrpc.cli.exits`); a node without the ``node`` service (another implementation)
answers a fault: exit 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from clusterrpc.admin import SERVICE
from clusterrpc.cli.exits import EXIT_OK
from clusterrpc.cli.notation import to_notation
from clusterrpc.cli.rpc import _EPILOG, _client, _connection_options, _Parser, _print_json
from clusterrpc.errors import Fault, TransportError

__all__ = ["format_status", "register"]

_METHOD_NOT_FOUND = -32601


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "?"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{seconds:.1f}s"


def _members_line(members: Any) -> str:
    if not isinstance(members, dict):
        return "(no membership)"
    states = members.get("states") or {}
    by_state = ", ".join(f"{state} {count}" for state, count in sorted(states.items()))
    view = members.get("view")
    details = "; ".join(part for part in (by_state, f"view {view}" if view is not None else "")
                        if part)
    return f"{members.get('count', 0)}" + (f" ({details})" if details else "")


def _leader_line(election: Any) -> str:
    if not isinstance(election, dict):
        return "(no election)"
    leader = election.get("leader")
    return (f"{leader if leader is not None else '(none known)'} (term "
            f"{election.get('term', '?')}; this node: {election.get('role', '?')})")


def _local_line(local: Any) -> str:
    if not isinstance(local, dict):
        return "(no local API)"
    clients = local.get("clients", 0)
    services = ", ".join(local.get("services") or []) or "none"
    return f"{clients} client{'' if clients == 1 else 's'} (services: {services})"


def format_status(status: dict[str, Any]) -> list[str]:
    """The lines ``clusterrpc status`` prints for the answer ``status`` of ``node.status()``
    (missing or odd parts print as ``?`` or "(no …)"; it raises nothing)."""
    started = status.get("started")
    since = (f" (started {_iso(started, timespec='seconds')})"
             if isinstance(started, dt.datetime) else "")
    counters = status.get("counters") or {}
    shown = [(name, value) for name, value in sorted(counters.items()) if value]
    counter_text = ", ".join(f"{name} {value}" for name, value in shown)
    zeros = len(counters) - len(shown)
    if zeros:
        counter_text += f"{'; ' if shown else ''}{zeros} more at 0"
    addresses = " ".join(map(str, status.get("addresses") or [])) or "(none)"
    return [
        f"node:      {status.get('name', '?')} (cluster {status.get('cluster', '?')}, "
        f"clusterrpc {status.get('version', '?')}, pid {status.get('pid', '?')})",
        f"uptime:    {_duration(status.get('uptime'))}{since}",
        f"addresses: {addresses}",
        f"members:   {_members_line(status.get('members'))}",
        f"leader:    {_leader_line(status.get('election'))}",
        f"local:     {_local_line(status.get('local'))}",
        f"counters:  {counter_text or '(none)'}",
    ]


def _iso(moment: dt.datetime, timespec: str = "auto") -> str:
    """``moment`` in ISO 8601 (extended format, UTC; a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _as_json(status: dict[str, Any]) -> Any:
    document = dict(status)
    started = document.get("started")
    if isinstance(started, dt.datetime):
        document["started"] = _iso(started)
    return to_notation(document)


def _cmd_status(args: argparse.Namespace) -> int:
    method = f"{SERVICE}.status"
    with _client(args) as client:
        try:
            status = client.call(method)
        except Fault as fault:
            if fault.code == _METHOD_NOT_FOUND:
                raise Fault(fault.code, f"{args.url} has no {method} (not a clusterrpc node, "
                                        "or an older one)") from None
            raise
    if not isinstance(status, dict):
        raise TransportError(f"{args.url}: {method} did not answer a struct")
    if args.json:
        _print_json(_as_json(status))
        return EXIT_OK
    for line in format_status(status):
        print(line)
    return EXIT_OK


def register(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add ``status`` to ``commands`` (the subparsers of ``clusterrpc``)."""
    status = commands.add_parser(
        "status", help="show a node at a glance (members, leader, counters)",
        description="Show what the node at URL says of itself (node.status): its name, "
                    "cluster, version, uptime and addresses, its members by state, the "
                    "leader and term of its election, its local clients and its counters.",
        epilog=_EPILOG,
    )
    _connection_options(status)
    status.add_argument("--json", action="store_true", help="print a JSON object")
    status.set_defaults(handler=_cmd_status)
