"""``clusterrpc``: the admin command.

``clusterrpc call [OPTIONS] URL METHOD [ARG …]``
    call a method of a node (or of any XML-RPC server over ``http(s)://``) and print its
    result; each ARG is one JSON value in the notation of ``spec/vectors/README.md``
    (``3``, ``'"n1"'``, ``'{"$bytes": "AAE="}'``); ``--oneway``, ``--json``; ``--group`` calls
    every member of a group and prints a line per member (:mod:`clusterrpc.cli.rpc`);
``clusterrpc methods [OPTIONS] URL``
    list the methods a node publishes, with signatures and help (``--json``, ``--verbose``);
    both take ``-k/--keyring FILE``, ``--cluster NAME`` (default: the keyring's ``cluster``),
    ``--timeout SECONDS`` (default 10), ``--codec NAME``, ``--insecure`` and
    ``--user USER[:PASSWORD]`` (HTTP Basic for foreign servers);
``clusterrpc serve --config FILE [--print-addresses] [--check] [--log-level LEVEL]``
    run a node described by a TOML file until SIGINT or SIGTERM (:mod:`clusterrpc.cli.serve`);
``clusterrpc roundtrip [--codec NAME …] [--show]``
    encode a sample election-vote call, reply and fault with every installed codec (or the named
    ones), decode them again, and report sizes and whether each round trip was exact;
``clusterrpc codecs``
    list the installed codecs with their wire ids and where they come from;
``clusterrpc encode [--codec NAME] call METHOD [ARG …] | reply VALUE | fault CODE MESSAGE``
    write an encoded body to standard output; arguments and values are JSON in the same
    notation;
``clusterrpc decode [--codec NAME] call|response [FILE]``
    read a body (from FILE or standard input) and print it as JSON in the same notation;
``clusterrpc keys new|add|import|use|remove|untrust|list|export-public|http-credentials …``
    manage keyring files, each subcommand taking the keyring as FILE or ``-k FILE``
    (:mod:`clusterrpc.cli.keys`, ``spec/keyring.md``);
``clusterrpc local ls [--cluster C] [--domain D] [--local-dir DIR] [--json]``
    show a node's local API: its local services and the local programs connected to it, for
    cluster C or every cluster with sockets under DIR (:mod:`clusterrpc.cli.local`,
    ``spec/local.md``);
``clusterrpc members URL``, ``clusterrpc leader URL``, ``clusterrpc leader transfer URL``
    a node's membership view, its election, a leadership hand-over
    (:mod:`clusterrpc.cli.members`, :mod:`clusterrpc.cli.leader`);
``clusterrpc status URL [--json]``
    a node at a glance: name, cluster, uptime, members by state, leader and term, local
    clients, counters (``node.status``: :mod:`clusterrpc.cli.status`, :mod:`clusterrpc.admin`).

Every command that prints something takes ``--json`` and then prints one JSON document on
standard output (``encode``, which writes a binary body, and ``serve``/``daemon`` do not).
Every command that takes a keyring, and the connection options ``--timeout``, ``--codec`` and
``--cluster``, default to ``$CLUSTERRPC_KEYRING`` and the client configuration file
(``$CLUSTERRPC_CONFIG``, else ``$XDG_CONFIG_HOME/clusterrpc/client.toml``, else
``~/.config/clusterrpc/client.toml``): option > environment > file > built-in default
(:mod:`clusterrpc.cli.defaults`).

Errors are one line on standard error, ``clusterrpc: error: …`` (``clusterrpc: fault CODE:
message`` for a fault), never a traceback. Exit status (:mod:`clusterrpc.cli.exits` has the
table of which command returns which):

* 0 success;
* 1 the remote method answered with a fault; for ``roundtrip``/``decode``, a round trip that is
  not exact or a body that cannot be decoded;
* 2 usage or configuration error: bad arguments, an ARG that is not JSON, an unknown codec, a
  value that cannot be encoded, a missing or invalid keyring, config or client configuration
  file, a service that cannot be imported;
* 3 transport error: cannot connect, connection lost, an HTTP error status, an answer that
  cannot be decoded, an address ``serve`` cannot listen on; for ``local ls``, no cluster with
  local sockets, or a local socket that cannot be reached;
* 4 timeout: no answer within ``--timeout`` (a node does not answer calls that fail to
  authenticate, so a wrong key or cluster name ends here too);
* 5 authentication refused where it is visible: HTTP 401 or 403; for ``local ls``, the local
  API refusing this process (``LocalAccessError``);
* 130 interrupted by Ctrl-C; 141 standard output closed early (``… | head``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from clusterrpc import __version__
from clusterrpc.cli import demo, keys, leader, local, members, plugins, rpc, serve, status
from clusterrpc.cli.exits import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    status_of,
)
from clusterrpc.cli.notation import from_notation, to_notation
from clusterrpc.codecs import (
    CallMessage,
    Codec,
    FaultMessage,
    ReplyMessage,
    default_registry,
)
from clusterrpc.errors import ClusterRPCError
from clusterrpc.values import same_value

SAMPLE_VOTE: dict[str, Any] = {
    "term": 42,
    "candidate": "node-17",
    "last_log_index": 1_234_567,
    "last_log_term": 41,
    "granted": True,
    "sent_at": dt.datetime(2026, 11, 22, 18, 51, 39, 250_000, tzinfo=dt.UTC),
    "nonce": bytes.fromhex("00ff10c0ffee"),
    "load": 0.75,
    "note": None,
}


def _json_argument(text: str, what: str) -> Any:
    try:
        return from_notation(json.loads(text))
    except ValueError as error:
        raise UsageError(f"{what} is not valid JSON notation: {error}") from None


def _codec(name: str) -> Codec:
    return default_registry().create(name)


def _cmd_codecs(args: argparse.Namespace) -> int:
    registry = default_registry()
    rows = [
        (name, str(registry.by_name(name).codec_id), registry.by_name(name).media_type,
         registry.origin(name))
        for name in registry.names()
    ]
    if args.json:
        keys = ("name", "id", "media_type", "origin")
        print(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], indent=2))
        return EXIT_OK
    widths = [max(len(row[i]) for row in [("NAME", "ID", "MEDIA TYPE", ""), *rows])
              for i in range(3)]
    print(f"{'NAME':<{widths[0]}}  {'ID':>{widths[1]}}  {'MEDIA TYPE':<{widths[2]}}  ORIGIN")
    for name, codec_id, media, origin in rows:
        print(f"{name:<{widths[0]}}  {codec_id:>{widths[1]}}  {media:<{widths[2]}}  {origin}")
    return EXIT_OK



def _cmd_roundtrip(args: argparse.Namespace) -> int:
    registry = default_registry()
    names = args.codec or registry.names()
    params = [SAMPLE_VOTE]
    if not args.json:
        print("clusterrpc", __version__, "- round trip of an election vote through each "
              "codec\n")
        print(f"{'CODEC':<10} {'ID':>3}  {'CALL':>6}  {'REPLY':>6}  {'FAULT':>6}  RESULT")
    failures = 0
    results = []
    for name in names:
        codec = _codec(name)
        call = codec.encode_call("election.vote", params)
        reply = codec.encode_reply({"granted": True, "term": 42})
        fault = codec.encode_fault(-32601, "method 'election.bogus' not found")
        exact = (
            codec.decode_call(call) == CallMessage("election.vote", tuple(params))
            and same_value(list(codec.decode_call(call).params), params)
            and codec.decode_response(reply) == ReplyMessage({"granted": True, "term": 42})
            and codec.decode_response(fault)
            == FaultMessage(-32601, "method 'election.bogus' not found")
        )
        failures += not exact
        entry: dict[str, Any] = {"codec": name, "id": codec.codec_id, "call": len(call),
                                 "reply": len(reply), "fault": len(fault), "exact": exact}
        if args.show:
            entry["call_body"] = call.decode("utf-8", "replace")
        results.append(entry)
        if args.json:
            continue
        print(f"{name:<10} {codec.codec_id:>3}  {len(call):>5}B  {len(reply):>5}B  "
              f"{len(fault):>5}B  {'exact' if exact else 'MISMATCH'}")
        if args.show:
            print(f"  call body: {call.decode('utf-8', 'replace')}\n")
    if args.json:
        print(json.dumps({"version": __version__, "codecs": results,
                          "exact": len(names) - failures, "total": len(names)}, indent=2,
                         ensure_ascii=False))
    else:
        print(f"\n{len(names) - failures} of {len(names)} codecs round-tripped exactly.")
    return EXIT_OK if not failures else EXIT_FAILED


def _cmd_encode(args: argparse.Namespace) -> int:
    codec = _codec(args.codec)
    if args.kind == "call":
        params = [_json_argument(arg, f"argument {i}") for i, arg in enumerate(args.args)]
        body = codec.encode_call(args.method, params)
    elif args.kind == "reply":
        body = codec.encode_reply(_json_argument(args.value, "VALUE"))
    else:
        body = codec.encode_fault(args.code, args.message)
    sys.stdout.buffer.write(body)
    if sys.stdout.isatty():
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return EXIT_OK


def _cmd_decode(args: argparse.Namespace) -> int:
    codec = _codec(args.codec)
    if args.file in (None, "-"):
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(args.file, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
    message: CallMessage | ReplyMessage | FaultMessage
    message = codec.decode_call(data) if args.kind == "call" else codec.decode_response(data)
    if isinstance(message, CallMessage):
        out: dict[str, Any] = {"method": message.method, "params": to_notation(message.params)}
    elif isinstance(message, ReplyMessage):
        out = {"result": to_notation(message.value)}
    else:
        out = {"fault": {"code": message.code, "message": message.message}}
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"clusterrpc: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``clusterrpc`` command."""
    parser = _Parser(
        prog="clusterrpc",
        description="RPC for the messages that hold a cluster together.",
        epilog="Every command that prints something takes --json (one JSON document on "
               "standard output). The keyring, timeout, codec and cluster default to "
               "$CLUSTERRPC_KEYRING and the client configuration file ($CLUSTERRPC_CONFIG, "
               "else $XDG_CONFIG_HOME/clusterrpc/client.toml, else "
               "~/.config/clusterrpc/client.toml). Exit status: 0 ok, 1 fault (or a codec "
               "check that failed), 2 usage or configuration error, 3 transport error, "
               "4 timeout, 5 authentication refused, 130 interrupted, 141 output closed; "
               "the table of which command returns which is in the docstring of "
               "clusterrpc.cli.exits (`python -m pydoc clusterrpc.cli.exits`) and in the "
               "README's \"Exit status\" section.",
    )
    parser.add_argument("--version", action="version", version=f"clusterrpc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    roundtrip = commands.add_parser(
        "roundtrip", help="round-trip a sample election vote through every codec"
    )
    roundtrip.add_argument("--codec", action="append", help="only this codec (repeatable)")
    roundtrip.add_argument("--show", action="store_true", help="print each encoded call")
    roundtrip.add_argument("--json", action="store_true",
                           help="print one JSON document: sizes and exactness per codec")
    roundtrip.set_defaults(handler=_cmd_roundtrip)

    codecs = commands.add_parser("codecs", help="list installed codecs")
    codecs.add_argument("--json", action="store_true", help="print JSON")
    codecs.set_defaults(handler=_cmd_codecs)

    encode = commands.add_parser("encode", help="encode a call, reply or fault to stdout")
    encode.add_argument("--codec", default="xmlrpc", help="codec name (default: xmlrpc)")
    kinds = encode.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    call = kinds.add_parser("call", help="METHOD [ARG ...], each ARG in JSON notation")
    call.add_argument("method")
    call.add_argument("args", nargs="*")
    reply = kinds.add_parser("reply", help="VALUE in JSON notation")
    reply.add_argument("value")
    fault = kinds.add_parser("fault", help="CODE MESSAGE")
    fault.add_argument("code", type=int)
    fault.add_argument("message")
    encode.set_defaults(handler=_cmd_encode)

    decode = commands.add_parser("decode", help="decode a body and print it as JSON")
    decode.add_argument("--codec", default="xmlrpc", help="codec name (default: xmlrpc)")
    decode.add_argument("kind", choices=["call", "response"])
    decode.add_argument("file", nargs="?", help="file to read (default: standard input)")
    decode.add_argument("--json", action="store_true",
                        help="print JSON (what decode always prints; accepted for symmetry)")
    decode.set_defaults(handler=_cmd_decode)

    rpc.register(commands)
    serve.register(commands)
    keys.register(commands)
    local.register(commands)
    members.register(commands)
    leader.register(commands)
    status.register(commands)
    plugins.register(commands)
    demo.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status
    (argparse exits with status 2 by itself on usage errors)."""
    try:
        args = build_parser().parse_args(argv)
        status: int = args.handler(args)
        sys.stdout.flush()  # here, so that a closed pipe is reported below, not at exit
    except (UsageError, ClusterRPCError, KeyboardInterrupt) as error:
        status, message = status_of(error)
        print(f"clusterrpc: {message}", file=sys.stderr)
    except BrokenPipeError:
        # The reader of standard output went away (`clusterrpc methods URL | head`): end
        # quietly, as a process killed by SIGPIPE would, without a traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return status


if __name__ == "__main__":
    sys.exit(main())
