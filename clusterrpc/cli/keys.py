"""``clusterrpc keys``: create and change keyring files (``spec/keyring.md``).

``clusterrpc keys new --scheme S [--id ID] [--node NAME] [--cluster NAME] [--force] [FILE]``
    create FILE with one new key, which signs (``ed25519`` needs ``--node``); ``--cluster``
    records the cluster name that ``clusterrpc call``/``methods`` and ``serve`` default to;
``clusterrpc keys add --scheme S [--id ID] [--sign] [--node NAME] [-k FILE]``
    add a new random key, accepted but not signing unless ``--sign``;
``clusterrpc keys import [-k FILE] SOURCE [KEYID ...]``
    copy keys and trusted public keys (all, or those with the given ids) from the keyring file
    SOURCE: how one shared key is installed on every node, and how exported public keys are
    trusted;
``clusterrpc keys use KEYID``, ``keys remove KEYID``, ``keys untrust NODE KEYID``
    switch the signing key, remove a key, stop trusting a node's public key;
``clusterrpc keys list [--json]``
    key ids, schemes, which one signs, trusted public keys with fingerprints; never secrets;
``clusterrpc keys export-public [-o OUT]``
    this node's public keys as a file that other nodes ``keys import``;
``clusterrpc keys http-credentials [-k FILE] [--key KEYID] [--url URL]``
    the HTTP Basic user name and token with which a foreign XML-RPC client (curl, Python's
    ``xmlrpc.client``, any other language's) calls a node's ``http(s)://`` endpoint
    (``spec/http.md``, "Credentials"): ``user: KEYID`` and ``token: TOKEN`` lines, or with
    ``--url`` the node's address with them in it, ``http://KEYID:TOKEN@host:port/path``. The key
    defaults to the signing key. The token is a secret (a warning on standard error says so).

Every subcommand takes the keyring the same ways: as the operand FILE (the first one:
``keys use FILE KEYID``, ``keys import FILE SOURCE``), as ``-k/--keyring FILE`` (both at once if
they name the same file; different files are a usage error), else from ``$CLUSTERRPC_KEYRING``,
else from ``keyring`` in the client configuration file (:mod:`clusterrpc.cli.defaults`).
``keys import`` has one ambiguity: without ``-k``, two operands ``A B`` are FILE SOURCE, but
while the keyring also defaults to a file other than ``A`` they could be SOURCE KEYID, so the
command refuses and asks for ``-k``. Every subcommand takes ``--json`` and then prints one
JSON document: the keyring as ``keys list --json`` shows it (never secrets), with ``action``
and what changed; ``export-public --json`` the public keys (and their TOML),
``http-credentials --json`` ``{"keyring", "user", "token", "url"}``.

Every change loads the file, checks it, and saves it atomically with mode 0600. Errors are one
line on standard error; the exit status is 2 for usage and keyring errors (they are all
:class:`~clusterrpc.errors.ConfigurationError` or :class:`~clusterrpc.cli.exits.UsageError`),
0 on success.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.parse
from typing import Any, TypeVar

from clusterrpc.auth import get_scheme
from clusterrpc.cli.defaults import ENV_KEYRING, load_defaults
from clusterrpc.cli.exits import UsageError
from clusterrpc.errors import ConfigurationError, KeyringError
from clusterrpc.keyring import Keyring, fingerprint
from clusterrpc.transports.addresses import parse_address

__all__ = ["ENV_KEYRING", "keyring_path", "register", "url_with_credentials"]

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)

_SCHEMES = "hmac-sha256, blake2b, ed25519, secretbox, or an installed plugin's scheme"


def _same_file(first: str, second: str) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return os.path.abspath(first) == os.path.abspath(second)


def keyring_path(args: argparse.Namespace) -> str:
    """The keyring file a ``keys`` subcommand works on: FILE or ``-k/--keyring FILE`` (both
    may be given if they name the same file), else ``$CLUSTERRPC_KEYRING``, else ``keyring``
    in the client configuration file (:mod:`clusterrpc.cli.defaults`). Raises
    :class:`~clusterrpc.cli.exits.UsageError` when FILE and ``-k`` name different files or the
    configuration file is invalid, and :class:`~clusterrpc.errors.KeyringError` when no
    keyring is named at all."""
    positional: str | None = getattr(args, "keyring_file", None)
    option: str | None = args.keyring
    if positional and option and not _same_file(positional, option):
        raise UsageError(f"the keyring is given twice, as FILE {positional} and as -k {option}: "
                         "give one of them")
    path, _source = load_defaults().keyring_path(positional or option)
    if not path:
        raise KeyringError(f"no keyring file: pass -k FILE or set {ENV_KEYRING} (or give FILE, "
                           "or set `keyring` in the client configuration file)")
    return path


def _load(args: argparse.Namespace) -> tuple[str, Keyring]:
    """The keyring path of ``args`` and the keyring in it.

    Changes are saved atomically, so two commands changing one file at the same moment cannot
    corrupt it, but the later one wins: run them one at a time.
    """
    path = keyring_path(args)
    return path, Keyring.load(path)


def _check_node_for(scheme: str, node: str | None) -> None:
    # Fail with a message that names the option, before Keyring's generic validation would.
    if get_scheme(scheme).public_key and node is None:
        raise KeyringError(f"an {scheme} key signs as one node: pass --node NAME")


def _print_json(document: dict[str, Any]) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False))


def _changed(args: argparse.Namespace, action: str, path: str, **details: Any) -> bool:
    """With ``--json``, print the document of a change (``action``, its ``details``, then
    the keyring as ``keys list --json`` shows it) and return True."""
    if not args.json:
        return False
    _print_json({"action": action, **details, **_describe(path, Keyring.load(path))})
    return True


def _cmd_new(args: argparse.Namespace) -> int:
    path = keyring_path(args)
    if os.path.lexists(path) and not args.force:
        raise KeyringError(
            f"{path} exists; pass --force to replace it (its keys are then lost)"
        )
    _check_node_for(args.scheme, args.node)
    key = Keyring.generate(args.scheme, key_id=args.id)
    Keyring(node=args.node, cluster=args.cluster, keys=[key],
            signing_key_id=key.key_id).save(path)
    if _changed(args, "new", path, key=key.key_id):
        return 0
    print(f"created {path}: key {key.key_id} ({key.scheme}) signs")
    if key.public is not None:
        print(f"share its public key with `clusterrpc keys export-public -k {path}`")
    return 0


def _cmd_add(args: argparse.Namespace) -> int:
    path, keyring = _load(args)
    node = keyring.node
    if args.node is not None and args.node != node:
        if node is not None:
            raise KeyringError(f"{path} belongs to node {node!r}, not {args.node!r}")
        node = args.node
    _check_node_for(args.scheme, node)
    key = Keyring.generate(args.scheme, key_id=args.id)
    renamed = Keyring(
        node=node,
        cluster=keyring.cluster,
        keys=keyring.keys.values(),
        trusted=keyring.trusted.values(),
        signing_key_id=keyring.signing_key_id,
    )
    renamed.with_key(key, sign=args.sign).save(path)
    if _changed(args, "add", path, key=key.key_id):
        return 0
    role = "signs" if args.sign else "accepted, not signing"
    print(f"added key {key.key_id} ({key.scheme}): {role}")
    return 0


def _import_operands(args: argparse.Namespace) -> None:
    """Split ``keys import``'s operands, ``[FILE] SOURCE [KEYID ...]``: with ``-k``, they are
    SOURCE and KEYIDs (after FILE, if the first names the same file as ``-k``: importing a
    keyring into itself means nothing); without, one operand is SOURCE and two or more start
    with FILE — unless the environment or the configuration file names a keyring other than
    the first operand, which could then be either (a usage error that asks for ``-k``)."""
    operands: list[str] = list(args.operands)
    args.keyring_file = None
    if args.keyring and len(operands) >= 2 and _same_file(args.keyring, operands[0]):
        args.keyring_file = operands.pop(0)
    elif not args.keyring and len(operands) >= 2:
        default, source = load_defaults().keyring_path(None)
        if default is not None and not _same_file(default, operands[0]):
            raise UsageError(
                f"keys import {' '.join(operands)}: is {operands[0]} the keyring to import "
                f"into (FILE) or the SOURCE? The keyring defaults to {default} (from "
                f"{source}); say which with -k FILE"
            )
        args.keyring_file = operands.pop(0)
    args.source, args.key_ids = operands[0], operands[1:]


def _cmd_import(args: argparse.Namespace) -> int:
    _import_operands(args)
    path, keyring = _load(args)
    source = Keyring.load(args.source)
    wanted = set(args.key_ids)
    keys = [key for key in source.keys.values() if not wanted or key.key_id in wanted]
    trusted = [entry for entry in source.trusted.values() if not wanted or entry.key_id in wanted]
    missing = wanted - {key.key_id for key in keys} - {entry.key_id for entry in trusted}
    if missing:
        raise KeyringError(f"{args.source} has no key {sorted(missing)[0]!r}")
    updated = keyring
    for key in keys:
        # A public-key key is one node's private identity: copying it to another node would let
        # that node sign as the first. Only the node itself may get it back (a restore).
        if key.public is not None and source.node != keyring.node:
            raise KeyringError(
                f"{args.source}: key {key.key_id!r} is the private {key.scheme} key of node "
                f"{source.node!r}; import its public key instead (`clusterrpc keys "
                "export-public` on that node), or name the keys to import"
            )
        updated = updated.with_key(key)  # an identical key already present changes nothing
    for entry in trusted:
        updated = updated.with_trusted(entry)
    updated.save(path)
    new_keys = len(updated.keys) - len(keyring.keys)
    new_trusted = len(updated.trusted) - len(keyring.trusted)
    if _changed(args, "import", path, source=args.source, new_keys=new_keys,
                new_trusted=new_trusted):
        return 0
    print(
        f"imported {new_keys} new key(s) and {new_trusted} new trusted public key(s) "
        f"from {args.source} into {path}"
    )
    return 0


def _cmd_use(args: argparse.Namespace) -> int:
    path, keyring = _load(args)
    keyring.with_signing_key(args.key_id).save(path)
    if _changed(args, "use", path, key=args.key_id):
        return 0
    print(f"key {args.key_id} now signs")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    path, keyring = _load(args)
    keyring.without_key(args.key_id).save(path)
    if _changed(args, "remove", path, key=args.key_id):
        return 0
    print(f"removed key {args.key_id}")
    return 0


def _cmd_untrust(args: argparse.Namespace) -> int:
    path, keyring = _load(args)
    keyring.without_trusted(args.node, args.key_id).save(path)
    if _changed(args, "untrust", path, node=args.node, key=args.key_id):
        return 0
    print(f"no longer trusting key {args.key_id} of node {args.node}")
    return 0


def _describe(path: str, keyring: Keyring) -> dict[str, Any]:
    """Everything ``keys list`` shows, as JSON-ready data: ids, schemes, public-key
    fingerprints; never secrets."""
    return {
        "keyring": path,
        "node": keyring.node,
        "cluster": keyring.cluster,
        "signing": keyring.signing_key_id,
        "keys": [
            {
                "id": key.key_id,
                "scheme": key.scheme,
                "signing": key.key_id == keyring.signing_key_id,
                "fingerprint": None if key.public is None else fingerprint(key.public),
            }
            for key in keyring.keys.values()
        ],
        "trusted": [
            {
                "node": entry.node,
                "id": entry.key_id,
                "scheme": entry.scheme,
                "fingerprint": fingerprint(entry.public),
            }
            for entry in keyring.trusted.values()
        ],
    }


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _cmd_list(args: argparse.Namespace) -> int:
    path, keyring = _load(args)
    info = _describe(path, keyring)
    if args.json:
        _print_json(info)
        return 0
    cluster = f", cluster {info['cluster']}" if info["cluster"] else ""
    print(f"keyring {path}, node {info['node'] or '(none)'}{cluster}")
    if info["keys"]:
        _table(
            ("KEY ID", "SCHEME", "SIGNS", "PUBLIC KEY"),
            [
                (key["id"], key["scheme"], "yes" if key["signing"] else "",
                 key["fingerprint"] or "-")
                for key in info["keys"]
            ],
        )
    else:
        print("no keys of its own")
    if info["trusted"]:
        print()
        _table(
            ("TRUSTED NODE", "KEY ID", "SCHEME", "PUBLIC KEY"),
            [(entry["node"], entry["id"], entry["scheme"], entry["fingerprint"])
             for entry in info["trusted"]],
        )
    return 0


def _cmd_export_public(args: argparse.Namespace) -> int:
    path, keyring = _load(args)
    entries = keyring.public_entries()
    if not entries:
        raise KeyringError(
            f"{path} has no public keys to export (only public-key schemes such as ed25519 "
            "have them; shared keys are installed with `keys import`)"
        )
    public = Keyring(trusted=entries)
    if args.output is not None:
        public.save(args.output)
    if args.json:
        _print_json({
            "keyring": path, "output": args.output,
            "public_keys": [
                {"node": entry.node, "id": entry.key_id, "scheme": entry.scheme,
                 "fingerprint": fingerprint(entry.public),
                 "public": base64.b64encode(entry.public).decode("ascii")}
                for entry in entries
            ],
            "toml": public.to_toml(),
        })
        return 0
    if args.output is None:
        print(public.to_toml(), end="")
    else:
        print(f"wrote {len(entries)} public key(s) to {args.output}")
    return 0


def url_with_credentials(url: str, user: str, token: str) -> str:
    """``url``, an ``http(s)://`` address as a node's ``listen`` gives it, with ``user:token@``
    in it: what ``xmlrpc.client.ServerProxy``, curl and most other clients take. The address is
    written out in full as the node reads it (port and path: no path means ``/RPC2``), and the
    user and token are percent-encoded (RFC 3986 userinfo), so any characters survive.

    Raises :class:`~clusterrpc.errors.ConfigurationError` for an address that is invalid, not
    HTTP, already holds credentials, or has port 0 (a port to listen on, not to call).
    """
    if "@" in urllib.parse.urlsplit(url).netloc:
        raise ConfigurationError(f"{url} already holds credentials: give the node's address")
    address = parse_address(url)
    if address.scheme not in ("http", "https"):
        raise ConfigurationError(
            f"{url} is not an HTTP address: HTTP credentials are for http:// and https:// "
            "endpoints only (packets authenticate with the keyring itself)"
        )
    if address.port == 0:
        raise ConfigurationError(f"{url} has port 0: give the port the node listens on")
    parts = urllib.parse.urlsplit(str(address))
    userinfo = f"{urllib.parse.quote(user, safe='')}:{urllib.parse.quote(token, safe='')}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def _cmd_http_credentials(args: argparse.Namespace) -> int:
    # Imported here: the HTTP transport (and h11) loads only when HTTP is used.
    from clusterrpc.transports.http import http_credentials  # noqa: PLC0415

    path, keyring = _load(args)
    if args.key_id is not None and args.key_id not in keyring.keys:
        known = ", ".join(sorted(keyring.keys)) or "none"
        raise KeyringError(f"{path} has no key {args.key_id!r} (its keys: {known})")
    user, token = http_credentials(keyring, args.key_id)
    url = None if args.url is None else url_with_credentials(args.url, user, token)
    if args.json:
        _print_json({"keyring": path, "user": user, "token": token, "url": url})
    elif url is None:
        print(f"user: {user}")
        print(f"token: {token}")
    else:
        print(url)
    https = url is not None and url.startswith("https:")
    print(
        "clusterrpc: warning: the token is a secret: anyone who has it can call every HTTP "
        f"endpoint that holds key {user} (of {path}) until the key is removed"
        + ("" if https else "; over http:// (not https://) it travels in clear text"),
        file=sys.stderr,
    )
    return 0


_KEYRING_HELP = (f"the keyring file (default: ${ENV_KEYRING}, else `keyring` in the client "
                 "configuration file)")


def _keyring_options(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """``-k/--keyring FILE`` and ``--json`` (and, with ``positional``, an optional FILE operand
    first among the positionals: the same keyring, spelt the other way)."""
    parser.add_argument("-k", "--keyring", metavar="FILE", help=_KEYRING_HELP)
    if positional:
        parser.add_argument("keyring_file", metavar="FILE", nargs="?",
                            help="the keyring file, as -k FILE (give one or both, the same)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document (the keyring as `keys list --json` "
                             "shows it, with what changed)")


def register(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add the ``keys`` command and its subcommands to ``commands`` (the top-level subparsers of
    ``clusterrpc``); the nested parsers are of the same class as ``keys`` itself."""
    keys = commands.add_parser(
        "keys", help="create and change keyring files",
        description="Create and change keyring files (spec/keyring.md). Every subcommand "
                    "takes the keyring as FILE or as -k/--keyring FILE (default: "
                    f"${ENV_KEYRING}, else `keyring` in the client configuration file) and "
                    "prints one JSON document with --json.",
        epilog="exit status: 0 ok, 2 usage or keyring error (see clusterrpc.cli.exits)",
    )
    sub = keys.add_subparsers(
        dest="keys_command", metavar="SUBCOMMAND", required=True, parser_class=type(keys)
    )

    new = sub.add_parser("new", help="create a keyring with one new key, which signs")
    new.add_argument("--scheme", required=True, help=_SCHEMES)
    new.add_argument("--id", help="key id (default: SCHEME-YYYYMMDD-XXXX)")
    new.add_argument("--node", help="the node the keyring belongs to (needed for ed25519)")
    new.add_argument("--cluster", help="the cluster name that clients and nodes default to")
    new.add_argument("--force", action="store_true", help="replace an existing FILE")
    _keyring_options(new)
    new.set_defaults(handler=_cmd_new)

    add = sub.add_parser("add", help="add a new random key (accepted, not signing)")
    add.add_argument("--scheme", required=True, help=_SCHEMES)
    add.add_argument("--id", help="key id (default: SCHEME-YYYYMMDD-XXXX)")
    add.add_argument("--sign", action="store_true", help="also make it the signing key")
    add.add_argument("--node", help="set the keyring's node name if it has none (for ed25519)")
    _keyring_options(add)
    add.set_defaults(handler=_cmd_add)

    imp = sub.add_parser(
        "import", help="copy keys and trusted public keys from another file",
        usage="clusterrpc keys import [-h] [-k FILE] [--json] [FILE] SOURCE [KEYID ...]",
        description="Copy keys and trusted public keys (all, or those with the KEYIDs) from "
                    "the keyring file SOURCE into the keyring. Without -k, two or more "
                    "operands start with FILE (when the keyring also defaults to a file from "
                    f"${ENV_KEYRING} or the client configuration, FILE must be that file, "
                    "else say which with -k); one operand is SOURCE.",
    )
    _keyring_options(imp, positional=False)
    imp.add_argument("operands", metavar="[FILE] SOURCE [KEYID ...]", nargs="+",
                     help="the keyring (without -k), the file to copy from, and the key ids "
                          "to copy (default: all)")
    imp.set_defaults(handler=_cmd_import)

    use = sub.add_parser("use", help="make KEYID the signing key",
                         usage="clusterrpc keys use [-h] [-k FILE] [--json] [FILE] KEYID")
    _keyring_options(use)
    use.add_argument("key_id", metavar="KEYID")
    use.set_defaults(handler=_cmd_use)

    remove = sub.add_parser("remove", help="remove key KEYID (not the signing key)",
                            usage="clusterrpc keys remove [-h] [-k FILE] [--json] [FILE] KEYID")
    _keyring_options(remove)
    remove.add_argument("key_id", metavar="KEYID")
    remove.set_defaults(handler=_cmd_remove)

    untrust = sub.add_parser(
        "untrust", help="stop trusting NODE's public key KEYID",
        usage="clusterrpc keys untrust [-h] [-k FILE] [--json] [FILE] NODE KEYID")
    _keyring_options(untrust)
    untrust.add_argument("node", metavar="NODE")
    untrust.add_argument("key_id", metavar="KEYID")
    untrust.set_defaults(handler=_cmd_untrust)

    listing = sub.add_parser("list", help="show keys and trusted public keys (never secrets)")
    _keyring_options(listing)
    listing.set_defaults(handler=_cmd_list)

    export = sub.add_parser("export-public", help="write this node's public keys for others")
    _keyring_options(export)
    export.add_argument("-o", "--output", metavar="OUT", help="write to OUT (default: stdout)")
    export.set_defaults(handler=_cmd_export_public)

    credentials = sub.add_parser(
        "http-credentials",
        help="print the HTTP user and token for foreign XML-RPC clients (a secret)",
        description="Print the HTTP Basic user name (a key id) and token with which a foreign "
        "XML-RPC client calls a node's http(s):// endpoint (spec/http.md, \"Credentials\"). "
        "The token is a secret: anyone who has it can call every endpoint that holds the key.",
    )
    _keyring_options(credentials)
    credentials.add_argument(
        "--key", dest="key_id", metavar="KEYID",
        help="the key to derive them from (default: the signing key); any key of the "
        "keyring is accepted by the node",
    )
    credentials.add_argument(
        "--url", metavar="URL",
        help="print the node's http(s):// address (as in its `listen`; no path means /RPC2) "
        "with the credentials in it, e.g. http://KEYID:TOKEN@127.0.0.1:7400/RPC2",
    )
    credentials.set_defaults(handler=_cmd_http_credentials)
