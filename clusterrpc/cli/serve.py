"""``clusterrpc serve --config FILE``: run a :class:`~clusterrpc.Node` until SIGINT or SIGTERM.

The configuration file is TOML::

    name = "n1"                                  # required: the node's name
    cluster = "ORG/UK/EDIN"                      # default: the keyring's `cluster`
    keyring = "cluster.keys"                     # relative to this file's directory
    listen = ["tcp://127.0.0.1:7400", "udp://127.0.0.1:7400"]   # port 0: any free port
    # optional Node options: timeout, drain_timeout, insecure, http_insecure, http_console
    # (the web console at /console of every http:// listener), tls_certfile,
    # tls_keyfile (relative paths: to this file's directory), debug, max_in_flight, max_packet,
    # replay_window, freshness, codec

    [services]                                   # published as election.*, ...
    election = "mypkg.election:Election"

    [local_services]                             # optional: served to local programs over
    locks = "clusterrpc.local.examples:Locks"    # Unix sockets (spec/local.md), under
                                                 # local_dir = "PATH" (default: /run/clusterrpc
                                                 # as root, $XDG_RUNTIME_DIR/clusterrpc)

    [membership]                                 # optional: SWIM membership (spec/membership.md)
    seeds = ["udp://10.0.0.2:7400"]              # udp:// addresses to join through
    # optional: group (a [groups] name it manages), meta (a table of strings), advertise,
    # and the timers of MembershipConfig (probe_interval, probe_timeout, suspicion_mult, ...)

    [election]                                   # optional: leader election (spec/election.md)
    voters = { n1 = "udp://10.0.0.1:7400", n2 = "udp://10.0.0.2:7400", n3 = "udp://10.0.0.3:7400" }
    state_dir = "state"                          # required: the persisted term and vote
    # (relative to this file's directory); voters may be a list of names with [membership];
    # optional: name (the service, default "election"), election_timeout, heartbeat_interval,
    # transfer_timeout, prevote, check_quorum, leader_stickiness. SIGTERM on the leader hands
    # the leadership over before the node stops.

    [plugins.kvstore]                            # optional: a service plugin to run, one
    max_keys = 100                               # table each; checked against the plugin's
                                                 # metadata (`clusterrpc plugins describe
                                                 # NAME`), every problem reported, exit 2

    [groups]                                     # optional: groups to join and call
    all = "udp://239.192.0.1:7401?iface=127.0.0.1"
    [groups.peers]                               # or a table: address (a URL, or a list of
    address = ["udp://10.0.0.2:7400"]            # udp:// URLs for fan-out), members, join
    members = ["n2"]

A service is ``"module:attribute"`` (the attribute may be dotted): a class is instantiated with
no arguments, a function is called with none (a factory), any other object is served as it is.
The module must be importable (``PYTHONPATH``). Unknown keys, wrong types, a missing keyring and
services that cannot be imported are refused before anything listens (exit status 2).

Once every address is bound, ``clusterrpc: listening on URL`` is written to standard error for
each address (with the port chosen when it was 0), and with ``--print-addresses`` the bare URLs
are also written to standard output, one per line, so that scripts can read them. SIGINT or
SIGTERM stops the node cleanly (calls in flight get ``drain_timeout`` seconds) and the command
exits 0. ``--check`` loads the configuration, the keyring and the services, then exits 0 without
listening.

Logging goes to standard error (``--log-level``, default ``info``): one human line a record,
or with ``--log-format json`` one JSON object a line carrying the node, cluster, election term
and membership view (:mod:`clusterrpc.cli.logs`). The keyring's secrets, in every text form,
are masked in both.

Under systemd (``spec/systemd.md``, ``contrib/``): with ``$NOTIFY_SOCKET`` set, ``READY=1`` is
sent once every listener is bound and membership and election run, ``WATCHDOG=1`` at half of
``WatchdogSec=``, ``STOPPING=1`` when a stop begins. A ``listen`` URL ``fd://NAME`` serves on
the socket-activated descriptor of that ``FileDescriptorName=`` (``cluster``, ``http``,
``local.SERVICE.DOMAIN``) instead of binding.

SIGHUP reads the keyring file again and rotates the node onto it without closing a connection
(``RELOADING=1`` then ``READY=1``): calls in flight finish, answers are signed with the new
signing key. A file that is unreadable, invalid or for another cluster is logged and the
current keyring stays in use.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import inspect
import logging
import math
import signal
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from clusterrpc.cli.exits import EXIT_OK, UsageError
from clusterrpc.cli.logs import LOG_FORMATS, SecretRedactor, configure_logging
from clusterrpc.config import Group, NodeConfig
from clusterrpc.errors import ClusterRPCError, ConfigProblemsError, ConfigurationError
from clusterrpc.keyring import Keyring

__all__ = ["ServeConfig", "keyring_secrets", "load_config", "register", "reload_keyring",
           "resolve_service"]

log = logging.getLogger("clusterrpc.serve")

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)

# Node keyword options a config file may set, by the type check they need.
_BOOL_OPTIONS = ("insecure", "http_insecure", "http_console", "debug")
_SECONDS_OPTIONS = ("timeout", "drain_timeout", "freshness")
_COUNT_OPTIONS = ("max_in_flight", "max_packet", "replay_window")
_PATH_OPTIONS = ("tls_certfile", "tls_keyfile")
_KNOWN = ("name", "cluster", "keyring", "listen", "services", "groups", "codec",
          "local_dir", "local_services", "membership", "election", "plugins",
          *_BOOL_OPTIONS, *_SECONDS_OPTIONS, *_COUNT_OPTIONS, *_PATH_OPTIONS)  # fmt: skip


@dataclasses.dataclass
class ServeConfig:
    """A checked ``serve`` configuration file."""

    path: Path
    name: str
    cluster: str
    keyring: Keyring | None
    listen: list[str]
    services: dict[str, str]
    options: dict[str, Any]
    local_services: dict[str, str] = dataclasses.field(default_factory=dict)
    """Served with :meth:`~clusterrpc.Node.serve_local`: name → ``"module:attribute"``."""
    """The other :class:`~clusterrpc.Node` keyword arguments."""
    groups: dict[str, Any] = dataclasses.field(default_factory=dict)
    """``Node(groups=…)``: name → URL, list of URLs, or ``{"address", "members", "join"}``."""
    membership: dict[str, Any] | None = None
    """``Membership(node, **membership)`` keywords, checked, or ``None`` for no membership."""
    election: dict[str, Any] | None = None
    """``Election(node, **election)`` keywords, checked, or ``None`` for no election."""
    node: NodeConfig | None = None
    """The node's configuration, parsed and checked once from all of the above."""
    keyring_path: Path | None = None
    """Where :attr:`keyring` was read from: SIGHUP reads it again (a key rotation)."""
    plugins: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Service plugins to run: name → configuration, validated, defaults filled in."""


def _type_name(value: object) -> str:
    return type(value).__name__


def load_config(path: str | Path) -> ServeConfig:
    """Read and check the configuration file ``path`` (and load its keyring). Raises
    :class:`~clusterrpc.cli.exits.UsageError` or
    :class:`~clusterrpc.errors.KeyringError` with a message naming the file and the key."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML: {error}") from None

    def bad(key: str, wanted: str) -> UsageError:
        return UsageError(f"{path}: `{key}` must be {wanted}, not {document[key]!r}")

    unknown = sorted(set(document) - set(_KNOWN))
    if unknown:
        raise UsageError(f"{path}: unknown key `{unknown[0]}` (known: {', '.join(_KNOWN)})")
    base = path.parent

    name = document.get("name")
    if name is None:
        raise UsageError(f'{path}: `name` is required (the node\'s name, e.g. name = "n1")')
    if not isinstance(name, str) or not name:
        raise bad("name", "a non-empty string")

    options: dict[str, Any] = {}
    for key in _BOOL_OPTIONS:
        if key in document:
            if not isinstance(document[key], bool):
                raise bad(key, "true or false")
            options[key] = document[key]
    for key in _SECONDS_OPTIONS:
        if key in document:
            value = document[key]
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not 0 < value < math.inf):
                raise bad(key, "a positive number of seconds")
            options[key] = float(value)
    for key in _COUNT_OPTIONS:
        if key in document:
            value = document[key]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise bad(key, "a positive integer")
            options[key] = value
    for key in _PATH_OPTIONS:
        if key in document:
            if not isinstance(document[key], str) or not document[key]:
                raise bad(key, "a file name")
            options[key] = str(base / document[key])
    if "codec" in document:
        codec = document["codec"]
        if isinstance(codec, bool) or not isinstance(codec, str | int):
            raise bad("codec", "a codec name or wire id")
        options["codec"] = codec
    if "local_dir" in document:
        if not isinstance(document["local_dir"], str) or not document["local_dir"]:
            raise bad("local_dir", "a directory name")
        options["local_dir"] = str(base / document["local_dir"])

    keyring: Keyring | None = None
    keyring_path: Path | None = None
    if "keyring" in document:
        if not isinstance(document["keyring"], str) or not document["keyring"]:
            raise bad("keyring", "a file name")
        keyring_path = base / document["keyring"]
        keyring = Keyring.load(keyring_path)
    elif not options.get("insecure", False):
        raise UsageError(
            f'{path}: no keyring: set keyring = "FILE" (`clusterrpc keys new` makes one), or '
            "insecure = true for a node that sends and accepts unauthenticated packets"
        )

    cluster = document.get("cluster")
    if cluster is None:
        cluster = keyring.cluster if keyring is not None else None
        if cluster is None:
            raise UsageError(f"{path}: no cluster name: set `cluster` here or in the keyring")
    elif not isinstance(cluster, str) or not cluster:
        raise bad("cluster", "a non-empty string")

    listen = document.get("listen")
    if listen is None:
        raise UsageError(
            f'{path}: `listen` is required, e.g. listen = ["tcp://127.0.0.1:7400"]'
        )
    # A node that only joins groups, or only serves local programs, may listen nowhere else.
    if (not isinstance(listen, list)
            or not (listen or document.get("groups") or document.get("local_services"))
            or not all(isinstance(url, str) for url in listen)):
        raise bad("listen", "a non-empty list of URLs")

    services = _service_table(document, "services", path)
    local_services = _service_table(document, "local_services", path)
    groups = document.get("groups", {})
    if not isinstance(groups, dict):
        raise bad("groups", 'a table, e.g. [groups] all = "udp://239.192.0.1:7401?iface=…"')
    for group, spec in groups.items():
        if isinstance(spec, dict):
            extra = sorted(set(spec) - {"address", "members", "join"})
            if extra or "address" not in spec:
                raise UsageError(
                    f"{path}: group `{group}` is a table of address (required), members and "
                    f"join{f', not {extra[0]}' if extra else ''}"
                )
        elif not isinstance(spec, str | list):
            raise UsageError(f"{path}: group `{group}` must be a URL, a list of URLs or a table")
    try:
        node = NodeConfig.from_options(
            name, cluster=cluster, keyring=keyring, listen=list(listen),
            groups={group: Group(**spec) if isinstance(spec, dict) else spec
                    for group, spec in groups.items()},
            **options,
        )  # fmt: skip
    except ConfigurationError as error:
        raise UsageError(f"{path}: {error}") from None
    plugins = plugin_tables(document, path)
    clash = sorted(set(plugins) & set(services))
    if clash:
        raise UsageError(f"{path}: `{clash[0]}` is both a [services] entry and a [plugins] table")
    membership = _membership_table(document, path, groups)
    election = _election_table(document, path, name, has_membership=membership is not None)
    return ServeConfig(path=path, name=name, cluster=cluster, keyring=keyring,
                       listen=list(listen), services=services, options=options,
                       groups=dict(groups), node=node, local_services=local_services,
                       membership=membership, election=election, keyring_path=keyring_path,
                       plugins=plugins)


def plugin_tables(document: Mapping[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    """The ``[plugins.NAME]`` tables of a configuration document, each validated against its
    service plugin's metadata and with defaults filled in (``spec/metadata.md``). Raises
    :class:`~clusterrpc.errors.ConfigProblemsError` listing every problem of every table —
    unknown plugins included — with its field path (``plugins.NAME.FIELD``), so one run shows
    an operator everything to fix."""
    tables = document.get("plugins", {})
    if not isinstance(tables, dict):
        raise UsageError(f"{path}: `plugins` must be tables: [plugins.NAME]")
    if not tables:
        return {}
    from clusterrpc.metadata import ConfigProblem  # noqa: PLC0415
    from clusterrpc.services import default_services  # noqa: PLC0415

    registry = default_services()
    problems: list[ConfigProblem] = []
    checked: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        where = f"plugins.{name}"
        if name not in registry:
            installed = ", ".join(registry.names()) or "none"
            problems.append(ConfigProblem(
                path=where, expected=f"an installed service plugin ({installed})",
                value=repr(name), message=f"no service plugin {name!r} is installed "
                                          "(`clusterrpc plugins list`)"))
            continue
        if not isinstance(table, dict):
            problems.append(ConfigProblem(path=where, expected="a table",
                                          value=_type_name(table),
                                          message=f"write it as [{where}]"))
            continue
        try:
            checked[name] = registry.configuration(name, table, path=where)
        except ConfigProblemsError as error:
            problems.extend(error.problems)
    if problems:
        raise ConfigProblemsError(problems, where=str(path))
    return checked


def _election_table(document: dict[str, Any], path: Path, name: str, *,
                    has_membership: bool) -> dict[str, Any] | None:
    """The ``[election]`` table as ``Election`` keywords, every value checked now."""
    table = document.get("election")
    if table is None:
        return None
    from clusterrpc.components.election.protocol import ElectionConfig  # noqa: PLC0415

    if not isinstance(table, dict):
        raise UsageError(f"{path}: `election` must be a table, e.g. [election] voters = "
                         '{ n1 = "udp://10.0.0.1:7400", … } and state_dir = "state"')
    table = dict(table)
    options: dict[str, Any] = {}
    voters = table.pop("voters", None)
    if isinstance(voters, dict):
        if not all(isinstance(url, str) and "://" in url for url in voters.values()):
            raise UsageError(f"{path}: election `voters` maps node names to URLs, "
                             f"not {voters!r}")
    elif isinstance(voters, list):
        if not all(isinstance(voter, str) for voter in voters):
            raise UsageError(f"{path}: election `voters` must be node names, not {voters!r}")
        if not has_membership:
            raise UsageError(f"{path}: election `voters` given by name need a [membership] "
                             "table to find their addresses (or map each name to its URL)")
    else:
        raise UsageError(f"{path}: election `voters` is required: a table of node name = URL "
                         "(this node included), or a list of names with [membership]")
    if name not in voters:
        raise UsageError(f"{path}: election `voters` must include this node ({name!r})")
    options["voters"] = voters
    state_dir = table.pop("state_dir", None)
    if not isinstance(state_dir, str) or not state_dir:
        raise UsageError(f"{path}: election `state_dir` (a directory for the persisted term "
                         "and vote) is required")
    options["state_dir"] = str(path.parent / state_dir)
    if "name" in table:
        service = table.pop("name")
        if not isinstance(service, str):
            raise UsageError(f"{path}: election `name` must be a string, not {service!r}")
        options["name"] = service
    try:
        ElectionConfig(**table)
    except TypeError:
        known = sorted(field.name for field in dataclasses.fields(ElectionConfig))
        unknown = sorted(set(table) - set(known))
        raise UsageError(f"{path}: unknown election key `{unknown[0]}` (known: voters, "
                         f"state_dir, name, {', '.join(known)})") from None
    except ConfigurationError as error:
        raise UsageError(f"{path}: election: {error}") from None
    options.update(table)
    return options


def _membership_table(document: dict[str, Any], path: Path, groups: dict[str, Any]
                      ) -> dict[str, Any] | None:
    """The ``[membership]`` table as ``Membership`` keywords, every value checked now (so a
    bad one stops the command before anything listens)."""
    table = document.get("membership")
    if table is None:
        return None
    from clusterrpc.components.membership.protocol import (  # noqa: PLC0415
        MembershipConfig,
        check_meta,
    )

    if not isinstance(table, dict):
        raise UsageError(f'{path}: `membership` must be a table, e.g. [membership] seeds = '
                         f'["udp://10.0.0.2:7400"]')
    table = dict(table)
    options: dict[str, Any] = {}
    seeds = table.pop("seeds", [])
    if not isinstance(seeds, list) or not all(isinstance(seed, str)
                                              and seed.startswith("udp://") for seed in seeds):
        raise UsageError(f"{path}: membership `seeds` must be a list of udp:// URLs, "
                         f"not {seeds!r}")
    options["seeds"] = seeds
    for key in ("group", "advertise"):
        if key in table:
            value = table.pop(key)
            if not isinstance(value, str):
                raise UsageError(f"{path}: membership `{key}` must be a string, not {value!r}")
            options[key] = value
    if "group" in options and options["group"] not in groups:
        raise UsageError(f"{path}: membership group `{options['group']}` is not in [groups]")
    if "meta" in table:
        try:
            options["meta"] = check_meta(table.pop("meta"))
        except ConfigurationError as error:
            raise UsageError(f"{path}: membership meta: {error}") from None
    try:
        MembershipConfig(**table)
    except TypeError:
        known = sorted(field.name for field in dataclasses.fields(MembershipConfig))
        unknown = sorted(set(table) - set(known))
        raise UsageError(f"{path}: unknown membership key `{unknown[0]}` (known: seeds, "
                         f"group, meta, advertise, {', '.join(known)})") from None
    except ConfigurationError as error:
        raise UsageError(f"{path}: {error}") from None
    options.update(table)
    return options


def _service_table(document: dict[str, Any], key: str, path: Path) -> dict[str, str]:
    services = document.get(key, {})
    if not isinstance(services, dict):
        raise UsageError(f'{path}: `{key}` must be a table, e.g. [{key}] election = '
                         f'"mypkg.election:Election", not {services!r}')
    for service, target in services.items():
        if not isinstance(target, str) or ":" not in target:
            raise UsageError(
                f"{path}: service `{service}` must be \"module:attribute\" "
                f"(e.g. \"mypkg.election:Election\"), not {target!r}"
            )
    return dict(services)


def resolve_service(service: str, target: str) -> object:
    """The object to serve as ``service`` from ``"module:attribute"`` (see the module
    docstring). Raises :class:`~clusterrpc.cli.exits.UsageError` with a one-line reason."""
    module_name, _, attribute = target.partition(":")
    where = f"service `{service}` ({target})"
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise UsageError(f"{where}: cannot import {module_name}: "
                         f"{_type_name(error)}: {error}") from None
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError(f"{where}: {module_name} has no attribute {attribute!r}") from None
    if inspect.isclass(found) or inspect.isfunction(found):
        try:
            return found()
        except Exception as error:
            raise UsageError(f"{where}: {attribute}() failed: "
                             f"{_type_name(error)}: {error}") from None
    return found


def _build_node(config: ServeConfig) -> tuple[Any, Any]:
    """The node of ``config`` with its services and plugins served, and its
    :class:`~clusterrpc.services.host.PluginHost`."""
    from clusterrpc.node import Node  # noqa: PLC0415 - the I/O layers load on use

    assert config.node is not None  # load_config always sets it
    node = Node(config=config.node)
    for service, target in config.services.items():
        published = node.serve(resolve_service(service, target), name=service)
        log.info("serving %s: %s", service, ", ".join(published))
    for service, target in config.local_services.items():
        published = node.serve_local(resolve_service(service, target), name=service)
        log.info("serving %s to local programs: %s", service, ", ".join(published))
    from clusterrpc.services import default_services  # noqa: PLC0415
    from clusterrpc.services.host import PluginHost  # noqa: PLC0415

    host = PluginHost(default_services())
    for name, plugin_config in config.plugins.items():
        try:
            plugin = host.start(name, plugin_config)
        except ConfigurationError as error:
            raise UsageError(f"{config.path}: [plugins.{name}]: {error}") from None
        published = node.serve(plugin, name=name)
        log.info("serving plugin %s: %s", name, ", ".join(published))
    node.serve(host, name="plugins")
    return node, host


class _LogContext:
    """The node/cluster/term/view fields of every JSON log line (``clusterrpc.cli.logs``),
    read from the components once they run."""

    def __init__(self, config: ServeConfig) -> None:
        self.node = config.name
        self.cluster = config.cluster
        self.membership: Any = None
        self.election: Any = None

    def __call__(self) -> dict[str, object]:
        return {
            "node": self.node, "cluster": self.cluster,
            "term": None if self.election is None else self.election.term,
            "view": None if self.membership is None else self.membership.view_number,
        }  # fmt: skip


def keyring_secrets(keyring: Keyring) -> list[str]:
    """Every text form a key's secret material could take in a log line — the base64 the file
    holds, hex, and the HTTP Basic token derived from it — for
    :class:`~clusterrpc.cli.logs.SecretRedactor`. Public keys are not secrets."""
    import base64  # noqa: PLC0415

    from clusterrpc.transports.http import http_token  # noqa: PLC0415

    found: list[str] = []
    for key in keyring.keys.values():
        found += [base64.b64encode(key.secret).decode("ascii"), key.secret.hex(),
                  http_token(key)]
    return found


def _redact_keyring(redactor: SecretRedactor | None, keyring: Keyring | None) -> None:
    if redactor is not None and keyring is not None:
        for secret in keyring_secrets(keyring):
            redactor.add(secret)


def _status_line(node: Any, membership: Any = None, election: Any = None) -> str:
    """The ``STATUS=`` line ``systemctl status`` shows: where the node serves, and what its
    components saw when it became ready (or was last reloaded)."""
    parts = [f"serving on {', '.join(node.addresses) or 'local sockets only'}"]
    if membership is not None:
        parts.append(f"membership view {membership.view_number}, "
                     f"{len(membership.alive())} alive")
    if election is not None:
        parts.append(f"election term {election.term}, leader {election.leader or 'none yet'}")
    return "; ".join(parts)


def reload_keyring(config: ServeConfig, node: Any, *,
                   redactor: SecretRedactor | None = None) -> bool:
    """Read ``config``'s keyring file again and make ``node`` use it (SIGHUP's work; a key
    rotation's step, ``spec/keyring.md``). All or nothing: a file that cannot be read or is
    invalid, a keyring for another cluster, or one the node cannot sign with leaves the
    current keyring in use, logs why at ERROR and returns ``False``. Never raises for such
    a file: a daemon must not die because an operator saved a bad one."""
    if config.keyring_path is None:
        log.warning("SIGHUP: %s names no keyring file; nothing to reload", config.path)
        return False
    try:
        keyring = Keyring.load(config.keyring_path)
        if keyring.cluster is not None and keyring.cluster != config.cluster:
            raise ConfigurationError(f"{config.keyring_path} is for cluster {keyring.cluster!r}, "
                                     f"not {config.cluster!r}")
        _redact_keyring(redactor, keyring)  # before anything could log one of its secrets
        node.use_keyring(keyring)
    except (ClusterRPCError, ValueError) as error:
        log.error("SIGHUP: keeping the current keyring: %s", error)
        return False
    config.keyring = keyring
    log.info("SIGHUP: reloaded %s: %d key(s), signing with %s", config.keyring_path,
             len(keyring.keys), keyring.signing_key_id)
    return True


def reload_plugins(config: ServeConfig, host: Any, *,
                   redactor: SecretRedactor | None = None) -> bool:
    """Read ``config``'s file again and reconfigure the running service plugins from its
    ``[plugins.*]`` tables (SIGHUP's work, :meth:`PluginHost.reload`). All or nothing: a file
    that cannot be read or has any problem leaves every plugin as it was, logs every problem
    at ERROR and returns ``False``. Secret fields' new values are masked in logs from now on."""
    try:
        with config.path.open("rb") as handle:
            document = tomllib.load(handle)
        tables = plugin_tables(document, config.path)
        for name, table in tables.items():
            _redact_plugin_secrets(redactor, host.registry.metadata(name), table)
        changed = host.reload(tables)
    except (OSError, tomllib.TOMLDecodeError, UsageError, ClusterRPCError) as error:
        log.error("SIGHUP: keeping the plugins' configuration: %s", error)
        return False
    config.plugins = {name: dict(host.running[name].config) for name in host.running}
    log.info("SIGHUP: plugins reconfigured: %s", ", ".join(changed) or "none changed")
    return True


def _redact_plugin_secrets(redactor: SecretRedactor | None, metadata: Any,
                           table: Mapping[str, Any]) -> None:
    if redactor is None:
        return
    for field in metadata.fields:
        value = table.get(field.fieldname)
        if field.secret and isinstance(value, str):
            redactor.try_add(value)


async def _run(config: ServeConfig, *, print_addresses: bool,
               log_context: _LogContext | None = None,
               redactor: SecretRedactor | None = None) -> int:
    from clusterrpc.transports.systemd import Notifier  # noqa: PLC0415 - spec/systemd.md

    notifier = Notifier()  # off without $NOTIFY_SOCKET; a malformed one stops us here
    node, host = _build_node(config)
    if redactor is not None:
        host.on_secret = redactor.try_add  # a secret set by plugins.configure is masked too
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    ready = False
    membership: Any = None
    election: Any = None

    def request_stop(signum: int) -> None:
        if stop.is_set():
            log.info("already stopping (%s)", signal.Signals(signum).name)
        else:
            log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    def request_reload() -> None:
        # Synchronous on the loop: a reload is a file read and a swap, and running it here
        # means two SIGHUPs can never interleave. Before READY the node is still starting;
        # the file is read again on the next SIGHUP.
        if not ready or stop.is_set():
            log.warning("SIGHUP ignored: the node is %s", "stopping" if stop.is_set()
                        else "still starting")
            return
        notifier.reloading()
        try:
            reload_keyring(config, node, redactor=redactor)
            reload_plugins(config, host, redactor=redactor)
        finally:
            notifier.ready(status=_status_line(node, membership, election))

    for signum in signals:
        loop.add_signal_handler(signum, request_stop, signum)
    loop.add_signal_handler(signal.SIGHUP, request_reload)
    try:
        await node.start()
        try:
            for url in node.addresses:
                print(f"clusterrpc: listening on {url}", file=sys.stderr, flush=True)
            if node.local is not None:
                for (service, domain), where in sorted(node.local.paths.items()):
                    print(f"clusterrpc: serving {service} to local programs in {domain} at "
                          f"{where}", file=sys.stderr, flush=True)
            if print_addresses:
                print("\n".join(node.addresses), flush=True)
            log.info("node %s of cluster %s started", config.name, config.cluster)
            if config.membership is not None:
                from clusterrpc.components import Membership  # noqa: PLC0415

                membership = Membership(node, **config.membership)
                await membership.start()
                if log_context is not None:
                    log_context.membership = membership
            try:
                if config.election is not None:
                    from clusterrpc.components import Election  # noqa: PLC0415

                    election = Election(node, membership=membership, **config.election)
                    await election.start()
                    if log_context is not None:
                        log_context.election = election
                # READY only now: every listener is bound and membership and election run
                # (spec/systemd.md), so a unit ordered After= this one finds a working node.
                notifier.ready(status=_status_line(node, membership, election))
                ready = True
                watchdog = asyncio.ensure_future(notifier.keep_alive())
                await stop.wait()
                watchdog.cancel()
            finally:
                notifier.stopping()
                if election is not None:
                    await election.stop()  # the leader hands over first (transfer)
                if membership is not None:
                    await membership.stop()
        finally:
            await node.stop()
        log.info("node %s stopped", config.name)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        loop.remove_signal_handler(signal.SIGHUP)
    return EXIT_OK


def check_config(path: str | Path) -> dict[str, Any]:
    """Everything the daemon checks before it listens — the file, its keyring, its services
    (imported and created) and its plugins' tables — without listening. Returns a summary
    (``node``, ``cluster``, ``services``, ``plugins``, ``listen``). Raises
    :class:`~clusterrpc.errors.ConfigProblemsError` with every problem of the plugin tables,
    :class:`~clusterrpc.cli.exits.UsageError` or :class:`~clusterrpc.errors.KeyringError` for
    the first other problem."""
    config = load_config(path)
    _build_node(config)
    return {"node": config.name, "cluster": config.cluster, "listen": config.listen,
            "services": sorted(config.services), "plugins": sorted(config.plugins)}


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.check:
        summary = check_config(args.config)
        print(f"{args.config}: ok (node {summary['node']}, cluster {summary['cluster']}, "
              f"{len(summary['services'])} service(s))")
        return EXIT_OK
    config = load_config(args.config)
    # Configured here, not at import: only a process that runs a node owns its logging.
    log_context = _LogContext(config)
    redactor = SecretRedactor()
    _redact_keyring(redactor, config.keyring)
    from clusterrpc.services import default_services  # noqa: PLC0415

    for name, table in config.plugins.items():
        _redact_plugin_secrets(redactor, default_services().metadata(name), table)
    handler = configure_logging(level=args.log_level, log_format=args.log_format,
                                context=log_context, redactor=redactor)
    try:
        return asyncio.run(_run(config, print_addresses=args.print_addresses,
                                log_context=log_context, redactor=redactor))
    finally:
        # The command's logging ends with it (main() may be called again in one process).
        logging.getLogger().removeHandler(handler)
        handler.close()


def register(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add ``daemon`` and its older name ``serve`` to ``commands`` (the subparsers of
    ``clusterrpc``): one command, two names, so existing scripts and units keep working."""
    for command, summary in (
        ("daemon", "run this node's daemon (listeners, local API, membership, election, "
                   "services) from node.toml"),
        ("serve", "the same as daemon (its first name)"),
    ):
        parser = commands.add_parser(
            command, help=summary,
            description="Run a node from a TOML configuration file until SIGINT or SIGTERM "
                        "(SIGHUP: reload the keyring). Under systemd: contrib/clusterrpc.service.",
        )
        parser.add_argument("--config", "-c", metavar="FILE", required=True,
                            help="the node's TOML configuration")
        parser.add_argument("--print-addresses", action="store_true",
                            help="write the bound URLs to standard output, one per line")
        parser.add_argument("--check", action="store_true",
                            help="check the configuration and the services, then exit")
        parser.add_argument("--log-level", default="info",
                            choices=["debug", "info", "warning", "error"],
                            help="logging to standard error (default: info)")
        parser.add_argument("--log-format", default="text", choices=list(LOG_FORMATS),
                            help="text: one human line a record (default); json: one JSON "
                                 "object a line with node, cluster, term and view fields")
        parser.set_defaults(handler=_cmd_serve)
