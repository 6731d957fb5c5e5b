"""``clusterrpc call`` and ``clusterrpc methods``: call a node (or any XML-RPC server) from a
shell.

``clusterrpc call [OPTIONS] URL METHOD [ARG ...]``
    call ``METHOD`` with the arguments, each one JSON value in the notation of
    :mod:`clusterrpc.cli.notation` (``3``, ``'"n1"'``, ``'{"$bytes": "AAE="}'``), and print the
    result: a string as it is, anything else as indented JSON notation; nothing for ``nil`` or
    with ``--oneway`` (which returns once the call is sent: there is no answer). ``--json``
    prints every result, ``nil`` and strings included, as JSON notation (and a fault as
    ``{"fault": {"code": …, "message": …}}``). With ``--group``, URL is a group (a multicast
    ``udp://GROUP:PORT?iface=ADDR``, or members' ``udp://`` URLs separated by commas): one
    call reaches every member and each answer is printed as ``NAME  RESULT`` (``--json``:
    ``{"replies": {…}, "missing": […], "timed_out": …}``); ``--members N1,N2`` names the
    members expected to answer (those missing are listed), ``--quorum N`` returns after N
    answers. Exit 1 if any member answered with a fault, 4 if an expected member did not
    answer (or nobody did), else 0.
``clusterrpc methods [OPTIONS] URL``
    list the methods ``URL`` publishes, each with its signatures (``election.vote(int, string)
    -> nil``, or ``election.echo(undef)`` when unknown) and the first paragraph of its help as
    one line (``system.listMethods``, then ``system.methodSignature`` and ``system.methodHelp``
    in one ``system.multicall`` where the server has it); ``--verbose`` prints the whole help,
    ``--json`` a list of ``{"name", "signatures", "help"}`` objects (``signatures`` is ``null``
    when unknown).

Connection options (both commands, and ``members``, ``leader``, ``status``): ``-k/--keyring
FILE`` (``tcp://``, ``unix://`` and ``udp://`` calls are signed with it), ``--cluster NAME``
(default: the keyring's ``cluster``), ``--timeout SECONDS`` (default 10), ``--codec NAME`` (the
codec of signed packets; default ``xmlrpc``) — each defaulting first to the environment
(``$CLUSTERRPC_KEYRING``) and the client configuration file (:mod:`clusterrpc.cli.defaults`);
``--insecure`` (no keyring: unauthenticated packets, for insecure nodes only),
``--user USER[:PASSWORD]`` (HTTP Basic credentials for a foreign ``http(s)://`` server; the
password, if not given here, comes from ``$CLUSTERRPC_PASSWORD``; ``http://USER:PASSWORD@host/…``
works too; a node's own HTTP credentials are derived from the keyring without either).

Exit statuses: :mod:`clusterrpc.cli.exits`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from clusterrpc.cli.defaults import (
    DEFAULT_CODEC,
    DEFAULT_TIMEOUT,
    ENV_KEYRING,
    ClientDefaults,
    load_defaults,
)
from clusterrpc.cli.exits import EXIT_FAULT, EXIT_OK, EXIT_TIMEOUT, UsageError
from clusterrpc.cli.notation import from_notation, to_notation
from clusterrpc.errors import CallTimeoutError, DecodeError, Fault, TransportError
from clusterrpc.keyring import Keyring
from clusterrpc.transports.addresses import parse_address
from clusterrpc.values import Value

__all__ = ["DEFAULT_TIMEOUT", "ENV_PASSWORD", "parse_argument", "register"]

ENV_PASSWORD = "CLUSTERRPC_PASSWORD"  # noqa: S105 - a variable name, not a password
"""The environment variable holding the HTTP Basic password for ``--user USER``."""

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)

_SILENT_NODE_HINT = (
    " (a node also stays silent when a call does not authenticate: check the keyring and the "
    "cluster name)"
)


def parse_argument(text: str, position: int) -> Any:
    """The value of the command-line argument ``text`` (JSON notation); ``position`` counts
    from 1 for messages. Raises :class:`~clusterrpc.cli.exits.UsageError`."""
    try:
        node = json.loads(text)
    except ValueError as error:
        hint = ""
        stripped = text.strip()
        if stripped and not stripped.startswith(("{", "[", '"')):
            quoted = json.dumps(text, ensure_ascii=False)
            hint = f"; to pass the string {text!r}, quote it for JSON: '{quoted}'"
        raise UsageError(f"argument {position} ({text!r}) is not JSON: {error}{hint}") from None
    try:
        return from_notation(node)
    except ValueError as error:
        raise UsageError(f"argument {position} ({text!r}): {error}") from None


def _timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return seconds


def _credentials(args: argparse.Namespace) -> tuple[str, str] | None:
    user: str | None = args.user
    if user is None:
        return None
    name, colon, password = user.partition(":")
    if not colon:
        env_password = os.environ.get(ENV_PASSWORD)
        if env_password is None:
            raise UsageError(f"--user {name}: give the password as USER:PASSWORD or in "
                             f"${ENV_PASSWORD}")
        password = env_password
    if not name:
        raise UsageError("--user needs a user name")
    return name, password


def _split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """``http(s)://USER:PASSWORD@host…`` as the URL without the credentials (so that they stay
    out of messages) and the credentials; other URLs unchanged, with ``None``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url, None  # parse_address says what is wrong
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not colon or not user:
        raise UsageError("credentials in an HTTP URL are USER:PASSWORD@")
    credentials = (urllib.parse.unquote(user), urllib.parse.unquote(password))
    return urllib.parse.urlunsplit(parts._replace(netloc=hostport)), credentials


def _defaults(args: argparse.Namespace) -> ClientDefaults:
    """The client defaults (:mod:`clusterrpc.cli.defaults`) for this command, read once; the
    timeout and codec options are resolved against them on the way."""
    defaults: ClientDefaults | None = getattr(args, "_client_defaults", None)
    if defaults is None:
        defaults = load_defaults()
        args._client_defaults = defaults
        if hasattr(args, "timeout"):
            args.timeout = defaults.timeout_or_default(args.timeout)
        if hasattr(args, "codec"):
            args.codec = defaults.codec_or_default(args.codec)
    return defaults


def _keyring_and_cluster(args: argparse.Namespace, *, check_insecure: bool
                         ) -> tuple[Keyring | None, str | None]:
    """The keyring the options, ``$CLUSTERRPC_KEYRING`` or the client configuration name
    (loaded), and the cluster name (option, configuration file, keyring). Raises
    :class:`~clusterrpc.cli.exits.UsageError` for a keyring together with ``--insecure``
    (when ``check_insecure``) and :class:`~clusterrpc.errors.KeyringError` for a keyring
    that cannot be loaded."""
    defaults = _defaults(args)
    path, source = defaults.keyring_path(args.keyring)
    if path is not None and args.insecure and check_insecure:
        hint = "" if source == "-k" else f" (it comes from {source}: unset it there)"
        raise UsageError(
            f"--insecure sends unauthenticated packets, but a keyring was given ({path}); "
            f"drop one of them{hint}"
        )
    keyring = Keyring.load(path) if path else None
    cluster = defaults.cluster_or(args.cluster, keyring.cluster if keyring else None)
    return keyring, cluster


@contextmanager
def _client(args: argparse.Namespace) -> Iterator[Any]:
    """The connected :class:`clusterrpc.Client` that the options describe."""
    from clusterrpc.client import connect  # noqa: PLC0415 - the I/O layers load on use

    url, in_url = _split_userinfo(args.url)
    address = parse_address(url)
    http = address.scheme in ("http", "https")
    credentials = _credentials(args)
    if credentials is not None and not http:
        raise UsageError("--user is for http(s):// endpoints; signed packets use the keyring")
    if in_url is not None:
        if credentials is not None:
            raise UsageError("credentials are given both in the URL and with --user")
        credentials = in_url
    keyring, cluster = _keyring_and_cluster(args, check_insecure=not http)
    if not http:
        if keyring is None and not args.insecure:
            raise UsageError(
                f"{url} takes signed packets: pass --keyring FILE or set {ENV_KEYRING} "
                "(or `keyring` in the client configuration file, or --insecure for a node "
                "that accepts unauthenticated calls)"
            )
        if not cluster:
            raise UsageError(
                "no cluster name: pass --cluster NAME or set `cluster` in the keyring "
                "or the client configuration file"
            )
    _defaults(args)
    client = connect(
        url, keyring=keyring, cluster=cluster, timeout=args.timeout, codec=args.codec,
        insecure=args.insecure, credentials=credentials,
    )  # fmt: skip
    try:
        yield client
    except CallTimeoutError as error:
        message = str(error).replace("within the timeout", f"within {args.timeout:g} s")
        if f"{args.timeout:g} s" not in message:
            message += f" (timeout {args.timeout:g} s)"
        raise CallTimeoutError(message + ("" if http else _SILENT_NODE_HINT)) from None
    except DecodeError as error:
        raise TransportError(f"the answer from {url} cannot be decoded: {error}") from None
    finally:
        client.close()


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _print_readable(value: Value) -> None:
    if value is None:
        return
    if isinstance(value, str):
        print(value)
    elif isinstance(value, dt.datetime):
        print(value.isoformat())
    else:
        _print_json(to_notation(value))


def _signed_keyring(args: argparse.Namespace, what: str) -> tuple[Keyring | None, str]:
    """The keyring and cluster name for signed packets, as the options give them."""
    keyring, cluster = _keyring_and_cluster(args, check_insecure=True)
    if keyring is None and not args.insecure:
        raise UsageError(
            f"{what} takes signed packets: pass --keyring FILE or set {ENV_KEYRING} "
            "(or `keyring` in the client configuration file, or --insecure for nodes that "
            "accept unauthenticated calls)"
        )
    if not cluster:
        raise UsageError("no cluster name: pass --cluster NAME or set `cluster` in the keyring "
                "or the client configuration file")
    return keyring, cluster


def _cmd_call_group(args: argparse.Namespace, params: list[Any]) -> int:
    """``call --group``: one call to every member; a line (or a JSON entry) per member."""
    from clusterrpc.client import connect_group  # noqa: PLC0415 - the I/O layers load on use

    if args.user:
        raise UsageError("--user is for http(s):// endpoints; groups take signed packets")
    urls = [part.strip() for part in args.url.split(",") if part.strip()]
    keyring, cluster = _signed_keyring(args, "a group")
    members = ([name.strip() for name in args.members.split(",") if name.strip()]
               if args.members else None)
    with connect_group(urls[0] if len(urls) == 1 else urls, keyring=keyring, cluster=cluster,
                       members=members, timeout=args.timeout, codec=args.codec,
                       insecure=args.insecure) as group:
        if args.oneway:
            group.call(args.method, *params, oneway=True)
            return EXIT_OK
        replies = group.call(args.method, *params, quorum=args.quorum)
        assert replies is not None
    if args.json:
        _print_json({
            "replies": {
                name: ({"fault": {"code": answer.code, "message": answer.message}}
                       if isinstance(answer, Fault) else to_notation(answer))
                for name, answer in sorted(replies.items())
            },
            "missing": list(replies.missing),
            "timed_out": replies.timed_out,
        })
    else:
        width = max((len(name) for name in [*replies, *replies.missing]), default=4)
        for name, answer in sorted(replies.items()):
            if isinstance(answer, Fault):
                text = f"fault {answer.code}: {answer.message}"
            elif isinstance(answer, str):
                text = answer
            else:
                text = json.dumps(to_notation(answer), ensure_ascii=False)
            print(f"{name:<{width}}  {text}")
        for name in replies.missing:
            print(f"{name:<{width}}  (no answer within {args.timeout:g} s)")
        if not replies and not replies.missing:
            print(f"no member answered within {args.timeout:g} s")
    if replies.faults:
        return EXIT_FAULT
    if replies.missing or not replies:
        return EXIT_TIMEOUT
    return EXIT_OK


def _cmd_call(args: argparse.Namespace) -> int:
    params = [parse_argument(text, index) for index, text in enumerate(args.args, start=1)]
    if args.group:
        return _cmd_call_group(args, params)
    if args.members or args.quorum is not None:
        raise UsageError("--members and --quorum go with --group")
    with _client(args) as client:
        try:
            result = client.call(args.method, *params, oneway=args.oneway)
        except Fault as fault:
            if args.json:
                _print_json({"fault": {"code": fault.code, "message": fault.message}})
            raise
    if args.oneway:
        return EXIT_OK
    if args.json:
        _print_json(to_notation(result))
    else:
        _print_readable(result)
    return EXIT_OK


# -- methods ------------------------------------------------------------------------------------


def _signatures(raw: Any) -> list[list[str]] | None:
    """``system.methodSignature``'s answer as a list of [return, params…], or ``None`` when it
    says the signature is unknown (``"undef"``, or anything that is not a list of lists of
    strings, which servers without the convention return)."""
    if not isinstance(raw, list) or not raw:
        return None
    if not all(isinstance(sig, list) and sig and all(isinstance(t, str) for t in sig)
               for sig in raw):
        return None
    return [list(sig) for sig in raw]


def _introspect(client: Any, names: list[str]) -> list[tuple[Any, Any]]:
    """(signature answer, help answer) for each name; a fault answer becomes ``None``.

    One ``system.multicall`` when the server has it, else two calls per method."""
    calls = []
    for name in names:
        calls += [{"methodName": "system.methodSignature", "params": [name]},
                  {"methodName": "system.methodHelp", "params": [name]}]
    answers: list[Any]
    try:
        results = client.call("system.multicall", calls) if calls else []
        if not isinstance(results, list) or len(results) != len(calls):
            raise Fault(0, "not a multicall answer")
        answers = [item[0] if isinstance(item, list) and len(item) == 1 else None
                   for item in results]
    except Fault:
        answers = []
        for call in calls:
            try:
                answers.append(client.call(call["methodName"], *call["params"]))
            except Fault:
                answers.append(None)
    return [(answers[i], answers[i + 1]) for i in range(0, len(answers), 2)]


def _help_lines(text: str, *, verbose: bool) -> list[str]:
    """The whole help (``verbose``), or its first paragraph as one line: the summary, which a
    docstring often wraps over several lines."""
    text = inspect.cleandoc(text)
    if verbose:
        return text.splitlines()
    summary = " ".join(text.split("\n\n", 1)[0].split())
    return [summary] if summary else []


def _format_signature(name: str, signature: list[str]) -> str:
    returns, *params = signature
    return f"{name}({', '.join(params)}) -> {returns}"


def _cmd_methods(args: argparse.Namespace) -> int:
    with _client(args) as client:
        names = client.call("system.listMethods")
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise TransportError(f"{args.url}: system.listMethods did not answer a list of "
                                 "names")
        details = _introspect(client, names)
    entries = []
    for name, (raw_signature, raw_help) in zip(names, details, strict=True):
        help_text = raw_help if isinstance(raw_help, str) else ""
        entries.append({"name": name, "signatures": _signatures(raw_signature),
                        "help": help_text})
    if args.json:
        _print_json(entries)
        return EXIT_OK
    for entry in entries:
        signatures = entry["signatures"]
        if signatures is None:
            print(f"{entry['name']}(undef)")
        else:
            for signature in signatures:
                print(_format_signature(entry["name"], signature))
        for line in _help_lines(entry["help"], verbose=args.verbose):
            print(f"    {line}".rstrip())
    return EXIT_OK


# -- registration -------------------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL",
                        help="tcp://HOST:PORT, unix:///PATH, udp://HOST:PORT or http(s)://…")
    group = parser.add_argument_group("connection")
    group.add_argument("-k", "--keyring", metavar="FILE",
                       help=f"keyring that signs the calls (default: ${ENV_KEYRING}, else "
                            "`keyring` in the client configuration file)")
    group.add_argument("--cluster", metavar="NAME",
                       help="cluster name (default: `cluster` in the client configuration "
                            "file, else the keyring's)")
    group.add_argument("--timeout", metavar="SECONDS", type=_timeout,
                       help="how long to wait for an answer (default: `timeout` in the "
                            f"client configuration file, else {DEFAULT_TIMEOUT:g})")
    group.add_argument("--codec",
                       help="codec of signed packets (default: `codec` in the client "
                            f"configuration file, else {DEFAULT_CODEC}; http is always "
                            "xmlrpc)")
    group.add_argument("--insecure", action="store_true",
                       help="send unauthenticated packets (no keyring; insecure nodes only)")
    group.add_argument("--user", metavar="USER[:PASSWORD]",
                       help="HTTP Basic credentials for a foreign XML-RPC server "
                            f"(password default: ${ENV_PASSWORD})")


_EPILOG = ("exit status: 0 ok, 1 the method answered with a fault, 2 usage or configuration "
           "error (a bad client configuration file too), 3 transport error, 4 timeout, "
           "5 authentication refused (HTTP 401/403); the table: clusterrpc.cli.exits")


def register(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add ``call`` and ``methods`` to ``commands`` (the subparsers of ``clusterrpc``)."""
    call = commands.add_parser(
        "call", help="call a method and print its result",
        description="Call METHOD at URL with the ARGs (each one JSON value: 3, '\"n1\"', "
                    "'{\"$bytes\": \"AAE=\"}') and print the result.",
        epilog=_EPILOG,
    )
    _connection_options(call)
    call.add_argument("method", metavar="METHOD", help="the full name, e.g. election.status")
    call.add_argument("args", metavar="ARG", nargs="*", help="one argument in JSON notation")
    call.add_argument("--oneway", action="store_true",
                      help="send a one-way call: return once sent, print nothing")
    call.add_argument("--json", action="store_true",
                      help="print the result (or the fault) as JSON notation")
    call.add_argument("--group", action="store_true",
                      help="URL is a group: a multicast udp://GROUP:PORT?iface=ADDR, or "
                           "members' udp:// URLs separated by commas; print one line per "
                           "member (exit 1 if any fault, 4 if an expected member is missing)")
    call.add_argument("--members", metavar="N1,N2,…",
                      help="with --group: the node names expected to answer")
    call.add_argument("--quorum", metavar="N", type=int,
                      help="with --group: return after N answers")
    call.set_defaults(handler=_cmd_call)

    methods = commands.add_parser(
        "methods", help="list the methods a node publishes",
        description="List the methods URL publishes, with signatures and help.",
        epilog=_EPILOG,
    )
    _connection_options(methods)
    methods.add_argument("--json", action="store_true", help="print a JSON list")
    methods.add_argument("-v", "--verbose", action="store_true", help="print the whole help")
    methods.set_defaults(handler=_cmd_methods)
