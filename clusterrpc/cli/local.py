"""``clusterrpc local ls``: show a node's local API — its local services and the local
programs connected to it (``spec/local.md``).

``clusterrpc local ls [--cluster C] [--domain D] [--local-dir DIR] [--json]``
    connect to the ``system`` socket of cluster ``C`` under ``DIR`` and print what
    ``system.listServices`` and ``system.listClients`` answer: a header line per cluster (its
    name, the domain used, the socket directory), a table of services (name, the domains
    serving it, its methods) and a table of clients (pid, uid, domain, service, registered
    name, events queued for it). This command's own connection is left out of the clients.

``--local-dir`` defaults to the nodes' default: ``/run/clusterrpc`` for root, else
``$XDG_RUNTIME_DIR/clusterrpc``. Without ``--cluster`` every cluster under it is listed: every
directory holding ``sockets/system/<DOMAIN>`` socket files, named by its path below ``DIR``
(``DIR/ORG/UK/sockets/system/USER`` is cluster ``ORG/UK``). Without ``--domain`` the command
uses ``SYSTEM`` when this process may connect to it (that domain sees every domain's clients),
else ``USER`` (only ``USER``'s clients); the header says which.

``--json`` prints one document, ``{"local_dir": DIR, "clusters": [{"cluster", "domain",
"services": [{"name", "domains", "methods"}], "clients": [{"uid", "gid", "pid", "domain",
"service", "name", "recovery", "events_queued"}]}]}``.

Exit status (:mod:`clusterrpc.cli.exits`): 0 when every cluster was listed; 3 when no cluster
has sockets under ``DIR`` (or ``DIR`` does not exist), or a socket cannot be reached (no such
socket, nobody listening: a node that is not running); 5 when the local API refuses this
process (:class:`~clusterrpc.errors.LocalAccessError`: the domain does not admit its uid, or
the server does not run as root or this user); 4 when the node does not answer in time; 2 for
an invalid cluster or domain name, or no default ``DIR``. Each failure is one line on standard
error naming the cluster or the path; clusters that could be listed are printed all the same.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from typing import Any, TypeVar

from clusterrpc.cli.exits import EXIT_AUTH, EXIT_OK, status_of
from clusterrpc.cli.rpc import DEFAULT_TIMEOUT
from clusterrpc.errors import (
    ClusterRPCError,
    ConfigurationError,
    ConnectError,
    LocalAccessError,
    TransportError,
)
from clusterrpc.local.paths import (
    SYSTEM,
    USER,
    check_cluster_name,
    check_domain_name,
    default_local_dir,
)

__all__ = ["find_clusters", "register"]

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)

_SOCKETS = "sockets"
_SYSTEM_SERVICE = "system"


# -- finding clusters ---------------------------------------------------------------------------


def _is_directory(path: str) -> bool:
    """Whether ``path`` is a directory itself (not a symlink to one)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _domains_in(directory: str) -> list[str]:
    """The security domains with a socket file in ``directory`` (a service's socket
    directory), sorted; none if it is not a directory."""
    if not _is_directory(directory):
        return []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    domains = []
    for name in names:
        try:
            check_domain_name(name)
            is_socket = stat.S_ISSOCK(os.lstat(os.path.join(directory, name)).st_mode)
        except (ConfigurationError, OSError):
            continue
        if is_socket:
            domains.append(name)
    return sorted(domains)


def find_clusters(local_dir: str) -> list[str]:
    """The clusters with a local API under ``local_dir``: every directory below it that holds
    ``sockets/system/<DOMAIN>`` socket files, named by its relative path joined with ``/``
    (only valid cluster names; symlinks are not followed), sorted. Raises
    :class:`~clusterrpc.errors.ConnectError` when ``local_dir`` is not a directory or holds
    no cluster (the message names it)."""
    if not os.path.isdir(local_dir):
        raise ConnectError(f"no local socket directory {local_dir} (no node serves a local API "
                           "there; --local-dir DIR names another)")
    unreadable: list[str] = []

    def note(error: OSError) -> None:
        unreadable.append(f"cannot read {error.filename}: {error.strerror}")

    found = []
    for root, directories, _files in os.walk(local_dir, onerror=note):
        directories.sort()
        if root == local_dir:
            continue
        sockets = os.path.join(root, _SOCKETS)
        if _is_directory(sockets) and _domains_in(os.path.join(sockets, _SYSTEM_SERVICE)):
            name = "/".join(os.path.relpath(root, local_dir).split(os.sep))
            try:
                found.append(check_cluster_name(name))
            except ConfigurationError:
                continue  # not a directory a node made
    if not found:
        detail = f" ({unreadable[0]})" if unreadable else ""
        raise ConnectError(f"no cluster has local sockets under {local_dir}{detail}")
    return sorted(found)


# -- listing one cluster ------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _services(answer: Any) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise TransportError("system.listServices did not answer a list of services")
    return [{"name": _text(item.get("name")),
             "domains": [_text(domain) for domain in item.get("domains") or []],
             "methods": [_text(method) for method in item.get("methods") or []]}
            for item in answer]


def _clients(answer: Any, domain: str) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise TransportError("system.listClients did not answer a list of clients")
    clients = [{"uid": _number(item.get("uid")), "gid": _number(item.get("gid")),
                "pid": _number(item.get("pid")), "domain": _text(item.get("domain")),
                "service": _text(item.get("service")), "name": _text(item.get("name")),
                "recovery": item.get("recovery") is True,
                "events_queued": _number(item.get("events_queued"))}
               for item in answer]
    # This command's own connection (the system socket of the domain it used, no name).
    own = {"pid": os.getpid(), "domain": domain, "service": _SYSTEM_SERVICE, "name": ""}
    return [client for client in clients
            if any(client[key] != value for key, value in own.items())]


def _ask(cluster: str, domain: str, local_dir: str) -> dict[str, Any]:
    """``cluster``'s services and clients as ``domain`` sees them."""
    from clusterrpc.local.handle import get_cluster_handle  # noqa: PLC0415 - I/O loads on use

    with get_cluster_handle(cluster, domain, local_dir=local_dir,
                            timeout=DEFAULT_TIMEOUT) as handle:
        services = _services(handle.system.listServices())
        clients = _clients(handle.system.listClients(), domain)
    return {"cluster": cluster, "domain": domain, "services": services, "clients": clients}


def _listing(cluster: str, domain: str | None, local_dir: str) -> tuple[dict[str, Any], str]:
    """The listing of ``cluster`` in ``domain`` (default: ``SYSTEM`` if this process may
    connect to it, else ``USER``) and the note for its header."""
    if domain is not None:
        note = "" if domain == SYSTEM else "; only this domain's clients"
        return _ask(cluster, domain, local_dir), note
    try:
        return _ask(cluster, SYSTEM, local_dir), "; every domain's clients"
    except LocalAccessError:
        # Every node has both domains, so anything else (no socket, nobody listening) would
        # fail in USER too: only a refusal moves on.
        pass
    note = f"; only {USER}'s clients ({SYSTEM} refused this process)"
    return _ask(cluster, USER, local_dir), note


# -- output -------------------------------------------------------------------------------------


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]], *, numeric: set[int],
           indent: str = "  ") -> list[str]:
    """Aligned lines, ``numeric`` columns right-aligned."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def _methods_cell(service: dict[str, Any]) -> str:
    prefix = service["name"] + "."
    names = [method[len(prefix):] if method.startswith(prefix) else method
             for method in service["methods"]]
    return f"{len(names)}: {', '.join(names)}" if names else "0"


def _print_cluster(listing: dict[str, Any], note: str, local_dir: str) -> None:
    sockets = os.path.join(local_dir, *listing["cluster"].split("/"), _SOCKETS)
    print(f"cluster {listing['cluster']}: domain {listing['domain']}{note}; sockets in "
          f"{sockets}")
    services = listing["services"]
    print(f"services ({len(services)}):")
    for line in _table(("NAME", "DOMAINS", "METHODS"),
                       [(service["name"], ",".join(service["domains"]) or "-",
                         _methods_cell(service)) for service in services],
                       numeric=set()):
        print(line)
    clients = listing["clients"]
    print(f"clients ({len(clients)}):")
    if not clients:
        print("  (none)")
        return
    for line in _table(("PID", "UID", "DOMAIN", "SERVICE", "NAME", "EVENTS QUEUED"),
                       [(str(client["pid"]), str(client["uid"]), client["domain"],
                         client["service"],
                         (client["name"] or "-") + (" (recovery)" if client["recovery"] else ""),
                         str(client["events_queued"])) for client in clients],
                       numeric={0, 1, 5}):
        print(line)


def _failure(cluster: str, error: ClusterRPCError) -> int:
    """Say on standard error why ``cluster`` could not be listed; its exit status."""
    if isinstance(error, LocalAccessError):
        status = EXIT_AUTH
        message = f"error: {cluster}: access refused: {error}"
        if isinstance(error.__cause__, PermissionError):  # the kernel refused the connect
            message += " (the socket's permissions do not admit this user; another --domain may)"
    else:
        status, message = status_of(error)
        prefix = "error: "
        if message.startswith(prefix):
            message = f"{prefix}{cluster}: {message[len(prefix):]}"
        else:
            message = f"{message} (cluster {cluster})"  # "fault CODE: …", "cannot decode: …"
    print(f"clusterrpc: {message}", file=sys.stderr)
    return status


def _cmd_ls(args: argparse.Namespace) -> int:
    local_dir = os.path.abspath(args.local_dir or default_local_dir(
        uid=os.geteuid(), runtime_dir=os.environ.get("XDG_RUNTIME_DIR")))
    domain = None if args.domain is None else check_domain_name(args.domain)
    clusters = ([check_cluster_name(args.cluster)] if args.cluster is not None
                else find_clusters(local_dir))
    listings: list[tuple[dict[str, Any], str]] = []
    status = EXIT_OK
    for cluster in clusters:
        try:
            listings.append(_listing(cluster, domain, local_dir))
        except ClusterRPCError as error:
            failed = _failure(cluster, error)
            status = status or failed
    if args.json and listings:
        print(json.dumps({"local_dir": local_dir,
                          "clusters": [listing for listing, _ in listings]},
                         indent=2, ensure_ascii=False))
    elif listings:
        for index, (listing, note) in enumerate(listings):
            if index:
                print()
            _print_cluster(listing, note, local_dir)
    return status


# -- registration -------------------------------------------------------------------------------

_EPILOG = ("exit status: 0 ok, 2 invalid cluster or domain name (or no default DIR), 3 no "
           "cluster found or a socket cannot be reached, 4 timeout, 5 the local API refused "
           "this process")


def register(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add the ``local`` command and its subcommand ``ls`` to ``commands`` (the subparsers of
    ``clusterrpc``)."""
    local = commands.add_parser(
        "local", help="look at a node's local API (services and connected programs)",
        description="Look at the local API of the nodes on this host (spec/local.md).",
    )
    sub = local.add_subparsers(dest="local_command", metavar="SUBCOMMAND", required=True,
                               parser_class=type(local))
    ls = sub.add_parser(
        "ls", help="list local services and connected clients",
        description="List the local services of a cluster's node and the local programs "
                    "connected to it; without --cluster, every cluster with sockets under "
                    "the local directory.",
        epilog=_EPILOG,
    )
    ls.add_argument("--cluster", metavar="C",
                    help="the cluster (default: every cluster found under DIR)")
    ls.add_argument("--domain", metavar="D",
                    help=f"the security domain to ask in (default: {SYSTEM} if this process "
                         f"may connect to it, which sees every domain's clients, else {USER})")
    ls.add_argument("--local-dir", metavar="DIR",
                    help="where the nodes' sockets are (default: /run/clusterrpc for root, "
                         "else $XDG_RUNTIME_DIR/clusterrpc)")
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(handler=_cmd_ls)
