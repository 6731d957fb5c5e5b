"""``clusterrpc leader URL [--json]`` and ``clusterrpc leader transfer URL [--to NODE]``.

The first calls ``election.status()`` (``spec/election.md``, "Admin methods") on the node at
URL and prints what it knows: the leader, the term, this node's role and vote, every voter
with its address, and when the node last heard its leader (a follower) or each voter (the
leader). The second calls ``election.transfer(to)``: asked of a follower, the node forwards
it to the leader; the command prints the old and the new leader and the new term once the
new leader is known (exit 1 with the fault's message if it did not happen in time).
"""

from __future__ import annotations

import argparse
from typing import Any

from clusterrpc.cli.exits import EXIT_OK, UsageError
from clusterrpc.cli.notation import to_notation
from clusterrpc.cli.rpc import _EPILOG, _client, _connection_options, _Parser, _print_json
from clusterrpc.errors import Fault, TransportError

_METHOD_NOT_FOUND = -32601


def _call(args: argparse.Namespace, method: str, *params: Any) -> Any:
    full = f"{args.service}.{method}"
    with _client(args) as client:
        try:
            return client.call(full, *params)
        except Fault as fault:
            if fault.code == _METHOD_NOT_FOUND:
                raise Fault(fault.code, f"{args.url} runs no election "
                                        f"(no method {full})") from None
            raise


def _ago(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "never"
    return f"{seconds:.2f}s ago"


def _show(args: argparse.Namespace) -> int:
    status = _call(args, "status")
    if not isinstance(status, dict):
        raise TransportError(f"{args.url}: election.status did not answer a struct")
    if args.json:
        _print_json(to_notation(status))
        return EXIT_OK
    name = status.get("name", "?")
    leader = status.get("leader")
    print(f"leader:  {leader if leader is not None else '(none known)'}")
    print(f"term:    {status.get('term', '?')}")
    role = status.get("role", "?")
    print(f"node:    {name} ({role}, voted for {status.get('voted_for') or 'nobody'} "
          "in this term)")
    if role != "leader":
        print(f"last heartbeat: {_ago(status.get('last_heartbeat'))}")
    acks = status.get("acks") or {}
    print("voters:")
    rows = status.get("voters") or []
    width = max((len(str(row.get("name", ""))) for row in rows), default=0)
    for row in rows:
        voter = str(row.get("name", "?"))
        notes = []
        if voter == leader:
            notes.append("leader")
        if voter == name:
            notes.append("this node")
        elif role == "leader":
            notes.append(f"answered {_ago(acks.get(voter))}")
        print(f"  {voter.ljust(width)}  {row.get('address') or '-'}"
              f"{'  (' + ', '.join(notes) + ')' if notes else ''}")
    return EXIT_OK


def _transfer(args: argparse.Namespace) -> int:
    answer = _call(args, "transfer", args.to or "")
    if not isinstance(answer, dict):
        raise TransportError(f"{args.url}: election.transfer did not answer a struct")
    if args.json:
        _print_json(to_notation(answer))
    else:
        print(f"leadership moved from {answer.get('from')} to {answer.get('to')} "
              f"(term {answer.get('term')})")
    return EXIT_OK


def _cmd_leader(args: argparse.Namespace) -> int:
    if args.url == "transfer":
        if args.target is None:
            raise UsageError("usage: clusterrpc leader transfer URL [--to NODE]")
        args.url = args.target
        return _transfer(args)
    if args.target is not None:
        raise UsageError(f"unexpected argument {args.target!r} "
                         "(clusterrpc leader URL, or clusterrpc leader transfer URL)")
    if args.to is not None:
        raise UsageError("--to goes with `clusterrpc leader transfer URL`")
    return _show(args)


def register(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add ``leader`` to ``commands`` (the subparsers of ``clusterrpc``)."""
    leader = commands.add_parser(
        "leader", help="show the election's leader, or hand the leadership over",
        usage="clusterrpc leader [options] URL\n"
              "       clusterrpc leader transfer [options] URL [--to NODE]",
        description="Show what the node at URL knows of its election: the leader, the term, "
                    "the voters and when it last heard them. `leader transfer URL` asks the "
                    "leader (through the node at URL) to hand the leadership over: to NODE, "
                    "or to the voter that answered its newest heartbeat.",
        epilog=_EPILOG,
    )
    _connection_options(leader)
    leader.add_argument("target", nargs="?", metavar="URL", help=argparse.SUPPRESS)
    leader.add_argument("--to", metavar="NODE", help="transfer: the voter to hand over to")
    leader.add_argument("--json", action="store_true", help="print a JSON object")
    leader.add_argument("--service", default="election",
                        help="the election's service name (default: election)")
    leader.set_defaults(handler=_cmd_leader)
