"""``clusterrpc keys``: create and change keyring files (``spec/keyring.md``).

``clusterrpc keys new --scheme S [--id ID] [--node NAME] [--cluster NAME] [--force] FILE``
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

``-k/--keyring FILE`` defaults to the environment variable ``CLUSTERRPC_KEYRING``. Every change
loads the file, checks it, and saves it atomically with mode 0600. Errors are one line on
standard error; the exit status is 2 for usage and keyring errors (they are all
:class:`~clusterrpc.errors.ConfigurationError`), 0 on success.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from typing import Any, TypeVar

from clusterrpc.auth import get_scheme
from clusterrpc.errors import ConfigurationError, KeyringError
from clusterrpc.keyring import Keyring, fingerprint
from clusterrpc.transports.addresses import parse_address

__all__ = ["ENV_KEYRING", "register", "url_with_credentials"]

ENV_KEYRING = "CLUSTERRPC_KEYRING"
"""The environment variable naming the keyring file when ``-k`` is not given."""

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)

_SCHEMES = "hmac-sha256, blake2b, ed25519, secretbox, or an installed plugin's scheme"


def _keyring_path(args: argparse.Namespace) -> str:
    path: str | None = args.keyring or os.environ.get(ENV_KEYRING)
    if not path:
        raise KeyringError(f"no keyring file: pass -k FILE or set {ENV_KEYRING}")
    return path


def _load(args: argparse.Namespace) -> tuple[str, Keyring]:
    """The keyring path of ``args`` and the keyring in it.

    Changes are saved atomically, so two commands changing one file at the same moment cannot
    corrupt it, but the later one wins: run them one at a time.
    """
    path = _keyring_path(args)
    return path, Keyring.load(path)


def _check_node_for(scheme: str, node: str | None) -> None:
    # Fail with a message that names the option, before Keyring's generic validation would.
    if get_scheme(scheme).public_key and node is None:
        raise KeyringError(f"an {scheme} key signs as one node: pass --node NAME")


def _cmd_new(args: argparse.Namespace) -> int:
    if os.path.lexists(args.file) and not args.force:
        raise KeyringError(
            f"{args.file} exists; pass --force to replace it (its keys are then lost)"
        )
    _check_node_for(args.scheme, args.node)
    key = Keyring.generate(args.scheme, key_id=args.id)
    Keyring(node=args.node, cluster=args.cluster, keys=[key],
            signing_key_id=key.key_id).save(args.file)
    print(f"created {args.file}: key {key.key_id} ({key.scheme}) signs")
    if key.public is not None:
        print(f"share its public key with `clusterrpc keys export-public -k {args.file}`")
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
    role = "signs" if args.sign else "accepted, not signing"
    print(f"added key {key.key_id} ({key.scheme}): {role}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
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
    print(
        f"imported {new_keys} new key(s) and {new_trusted} new trusted public key(s) "
        f"from {args.source} into {path}"
    )
    return 0


def _cmd_use(args: argparse.Namespace) -> int:
    path, keyring = _load(args)
    keyring.with_signing_key(args.key_id).save(path)
    print(f"key {args.key_id} now signs")
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    path, keyring = _load(args)
    keyring.without_key(args.key_id).save(path)
    print(f"removed key {args.key_id}")
    return 0


def _cmd_untrust(args: argparse.Namespace) -> int:
    path, keyring = _load(args)
    keyring.without_trusted(args.node, args.key_id).save(path)
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
        print(json.dumps(info, indent=2, ensure_ascii=False))
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
    if args.output is None:
        print(public.to_toml(), end="")
    else:
        public.save(args.output)
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
    if url is None:
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


def _keyring_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-k", "--keyring", metavar="FILE",
        help=f"the keyring file (default: ${ENV_KEYRING})",
    )


def register(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add the ``keys`` command and its subcommands to ``commands`` (the top-level subparsers of
    ``clusterrpc``); the nested parsers are of the same class as ``keys`` itself."""
    keys = commands.add_parser(
        "keys", help="create and change keyring files",
        description="Create and change keyring files (spec/keyring.md).",
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
    new.add_argument("file", metavar="FILE")
    new.set_defaults(handler=_cmd_new)

    add = sub.add_parser("add", help="add a new random key (accepted, not signing)")
    add.add_argument("--scheme", required=True, help=_SCHEMES)
    add.add_argument("--id", help="key id (default: SCHEME-YYYYMMDD-XXXX)")
    add.add_argument("--sign", action="store_true", help="also make it the signing key")
    add.add_argument("--node", help="set the keyring's node name if it has none (for ed25519)")
    _keyring_option(add)
    add.set_defaults(handler=_cmd_add)

    imp = sub.add_parser("import", help="copy keys and trusted public keys from another file")
    _keyring_option(imp)
    imp.add_argument("source", metavar="SOURCE", help="keyring file to copy from")
    imp.add_argument("key_ids", metavar="KEYID", nargs="*", help="only these ids (default: all)")
    imp.set_defaults(handler=_cmd_import)

    use = sub.add_parser("use", help="make KEYID the signing key")
    use.add_argument("key_id", metavar="KEYID")
    _keyring_option(use)
    use.set_defaults(handler=_cmd_use)

    remove = sub.add_parser("remove", help="remove key KEYID (not the signing key)")
    remove.add_argument("key_id", metavar="KEYID")
    _keyring_option(remove)
    remove.set_defaults(handler=_cmd_remove)

    untrust = sub.add_parser("untrust", help="stop trusting NODE's public key KEYID")
    untrust.add_argument("node", metavar="NODE")
    untrust.add_argument("key_id", metavar="KEYID")
    _keyring_option(untrust)
    untrust.set_defaults(handler=_cmd_untrust)

    listing = sub.add_parser("list", help="show keys and trusted public keys (never secrets)")
    _keyring_option(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_cmd_list)

    export = sub.add_parser("export-public", help="write this node's public keys for others")
    _keyring_option(export)
    export.add_argument("-o", "--output", metavar="OUT", help="write to OUT (default: stdout)")
    export.set_defaults(handler=_cmd_export_public)

    credentials = sub.add_parser(
        "http-credentials",
        help="print the HTTP user and token for foreign XML-RPC clients (a secret)",
        description="Print the HTTP Basic user name (a key id) and token with which a foreign "
        "XML-RPC client calls a node's http(s):// endpoint (spec/http.md, \"Credentials\"). "
        "The token is a secret: anyone who has it can call every endpoint that holds the key.",
    )
    _keyring_option(credentials)
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
