"""A node's configuration, checked once: :class:`NodeConfig` (and :class:`Group`).

Everything a :class:`~clusterrpc.Node` is configured with — from keywords
(``Node("n1", cluster=…, keyring=…, listen=[…])``) or from a ``clusterrpc serve`` TOML file — is
parsed into one frozen :class:`NodeConfig`, which the node passes down to its listeners; nothing
re-reads or re-checks it later. No I/O happens here: addresses are parsed, not resolved, and the
TLS files are only named (they are read when the node builds its listeners).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from clusterrpc.envelope import DEFAULT_MAX_PACKET
from clusterrpc.errors import ConfigurationError
from clusterrpc.transports.addresses import Address, parse_address, parse_listen_address
from clusterrpc.values import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from clusterrpc.keyring import Keyring
    from clusterrpc.local.server import LocalDomain
    from clusterrpc.transports.datagrams import DatagramNetwork
    from clusterrpc.transports.systemd import InheritedSocket

__all__ = ["Group", "GroupConfig", "NodeConfig", "check_timeout"]


def check_timeout(timeout: Any, what: str = "timeout") -> float | None:
    """``timeout`` if it is ``None`` or a positive finite number of seconds; else raise
    :class:`~clusterrpc.errors.ConfigurationError`."""
    if timeout is None:
        return None
    if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
            or not timeout > 0 or not math.isfinite(timeout)):
        raise ConfigurationError(
            f"{what} must be a positive number of seconds or None, not {timeout!r}"
        )
    return float(timeout)


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """A named group of nodes that one call reaches (``Node(groups={"all": …})``).

    ``address``: an IP multicast group URL, ``udp://239.192.0.1:7401?iface=127.0.0.1`` (the
    interface is required; TTL 1 unless ``&ttl=`` says otherwise), or — for networks without
    IP multicast — a list of the members' unicast ``udp://`` URLs (*fan-out*: one datagram to
    each). ``members``: the node names expected to answer, when known; then a call reports who
    did not answer and returns as soon as all did. ``join``: whether this node is a member of a
    multicast group (serves its calls); a fan-out member serves through its ``udp://`` listen
    address instead. A plain string or list given in ``groups=`` is ``Group(address=…)``.
    """

    address: str | Sequence[str]
    members: Sequence[str] | None = None
    join: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class GroupConfig:
    """A checked :class:`Group`: ``multicast`` is its IP multicast address, or ``None`` for a
    fan-out group whose members are ``fan_out``."""

    name: str
    group: Group
    multicast: Address | None
    fan_out: tuple[Address, ...]

    @staticmethod
    def parse(name: str, spec: object) -> GroupConfig:
        """Check one ``groups=`` entry. Raises :class:`~clusterrpc.errors.ConfigurationError`."""
        from clusterrpc.transports.multicast import check_ipv4_group  # noqa: PLC0415

        group = spec if isinstance(spec, Group) else Group(address=spec)  # type: ignore[arg-type]
        if group.members is not None and isinstance(group.members, str):
            raise ConfigurationError(f"group {name!r}: members is a list of node names")
        if isinstance(group.address, str):
            address = parse_address(group.address)
            if address.multicast:
                check_ipv4_group(address)
                return GroupConfig(name, group, address, ())
            fan_out = [address]
        else:
            fan_out = [parse_address(url) for url in group.address]
        for address in fan_out:
            if address.scheme != "udp" or address.multicast:
                raise ConfigurationError(
                    f"group {name!r}: {address} — a group is one multicast udp:// URL (with "
                    "?iface=) or a list of unicast udp:// member URLs"
                )
        if not fan_out:
            raise ConfigurationError(f"group {name!r} has no address")
        return GroupConfig(name, group, None, tuple(fan_out))


@dataclasses.dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything a :class:`~clusterrpc.Node` is configured with, checked at construction
    (raises :class:`~clusterrpc.errors.ConfigurationError` for anything invalid).

    ``name``: this node's name in packets (what ``current_call().node`` shows its peers).
    ``cluster``: the cluster name; packets of other clusters are refused. ``keyring``: signs and
    verifies packets; ``None`` only with ``insecure=True``, which sends and accepts
    unauthenticated packets (never across an untrusted network).
    ``listen``: URLs to serve on — ``tcp://``, ``unix://``, ``udp://`` and ``http(s)://``
    (standard XML-RPC; it needs the keyring's credentials unless ``http_insecure=True``, and
    TLS via ``tls_certfile``/``tls_keyfile`` for ``https://``). Port 0 picks a free port.
    ``http_console``: every ``http(s)://`` endpoint also serves the web console at
    ``/console`` (:mod:`clusterrpc.console`), behind the same credentials as its XML-RPC.
    ``groups``: name → :class:`Group` (or its address) for ``node.group()`` calls.
    ``network``: a simulated datagram network (:class:`clusterrpc.testing.MemoryNetwork`) that
    every UDP socket and group of the node uses instead of the operating system's; then only
    ``udp://`` listen addresses are allowed.

    Socket activation (``spec/systemd.md``): a ``listen`` URL ``fd://NAME`` serves on the
    sockets passed under that file-descriptor name instead of binding — ``fd://cluster`` each
    TCP, Unix-stream or UDP socket so named (by its type), ``fd://http[/path]`` the XML-RPC
    endpoint (HTTPS with ``tls_certfile``); a local-API socket named
    ``local.SERVICE.DOMAIN`` is taken by ``serve_local`` for that service and domain.
    ``inherited``: the sockets to take them from
    (:func:`clusterrpc.transports.systemd.inherited_sockets`); the node serves on duplicates,
    and they stay the caller's. ``None`` (the default): the node takes them from its process
    environment when it starts (``$LISTEN_PID``/``$LISTEN_FDS``/``$LISTEN_FDNAMES``, which it
    then unsets), owns them and closes them when it stops — so ``clusterrpc serve`` under
    systemd needs nothing but ``fd://`` URLs in its file. ``()``: never inherit.

    ``codec``: how the node encodes its calls (answers use the codec of the call). ``limits`` and
    ``max_packet`` bound what is accepted. ``max_in_flight``: calls per connection, each way,
    before back-pressure. ``timeout``: the default per-call timeout of ``node.peer()``
    (``None``: none). ``drain_timeout``: how long ``stop()`` waits for calls in flight.
    ``replay_window`` and ``freshness``: the packet layer's replay protection
    (``spec/packet.md``). ``debug``: fault messages carry tracebacks (they reveal code to
    callers).

    The local API (``spec/local.md``; used once something is served with
    ``node.serve_local``): ``local_dir`` — where its sockets go (default ``/run/clusterrpc`` as
    root, ``$XDG_RUNTIME_DIR/clusterrpc`` otherwise); ``local_domains`` — domain name →
    :class:`~clusterrpc.local.server.LocalDomain`, added to (or replacing the permissions of)
    ``USER`` and ``SYSTEM``; ``local_abstract`` — Linux abstract sockets instead of files (no
    file permissions: only the server's own credential check guards the domains);
    ``local_max_events``/``local_max_event_bytes`` — each client's event-queue bound, and
    ``local_eviction_grace`` — seconds a queue may stay over it without shrinking before the
    client is evicted.
    """

    name: str
    cluster: str
    keyring: Keyring | None
    listen: tuple[Address, ...] = ()
    groups: Mapping[str, GroupConfig] = dataclasses.field(default_factory=dict)
    network: DatagramNetwork | None = None
    insecure: bool = False
    codec: str | int = "xmlrpc"
    limits: Limits = DEFAULT_LIMITS
    max_packet: int = DEFAULT_MAX_PACKET
    max_in_flight: int = 256
    timeout: float | None = 30.0
    drain_timeout: float = 5.0
    replay_window: int = 1024
    freshness: float = 30.0
    http_insecure: bool = False
    http_console: bool = False
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    debug: bool = False
    local_dir: str | None = None
    local_domains: Mapping[str, LocalDomain] = dataclasses.field(default_factory=dict)
    local_abstract: bool = False
    local_max_events: int = 1024
    local_max_event_bytes: int = 1 << 20
    local_eviction_grace: float = 2.0
    inherited: Sequence[InheritedSocket] | None = None

    @classmethod
    def from_options(cls, name: str, *, listen: Iterable[str] = (),
                     groups: Mapping[str, Group | str | Sequence[str]] | None = None,
                     **options: Any) -> NodeConfig:
        """A configuration from ``Node``'s keywords: ``listen`` as URLs and ``groups`` as
        :class:`Group` values or addresses, parsed here; every other keyword is a field.
        Raises :class:`~clusterrpc.errors.ConfigurationError`, or ``TypeError`` for an unknown
        keyword."""
        if isinstance(listen, str):
            raise ConfigurationError("listen takes a list of URLs, not one string")
        return cls(
            name=name, listen=tuple(parse_listen_address(url) for url in listen),
            groups={group: GroupConfig.parse(group, spec)
                    for group, spec in (groups or {}).items()},
            **options,
        )  # fmt: skip

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError(f"a node needs a non-empty name, not {self.name!r}")
        set_field = object.__setattr__  # frozen: normalise once, here
        set_field(self, "timeout", check_timeout(self.timeout))
        set_field(self, "drain_timeout",
                  check_timeout(self.drain_timeout, "drain_timeout") or 0.0)
        set_field(self, "listen", tuple(self.listen))
        if self.inherited is not None:
            set_field(self, "inherited", tuple(self.inherited))
        if self.local_dir is not None:
            from clusterrpc.local.paths import check_cluster_name  # noqa: PLC0415

            check_cluster_name(self.cluster)
        set_field(self, "local_eviction_grace",
                  check_timeout(self.local_eviction_grace, "local_eviction_grace"))
        for count in ("max_in_flight", "max_packet", "replay_window", "local_max_events",
                      "local_max_event_bytes"):
            value = getattr(self, count)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigurationError(f"{count} must be a positive integer, not {value!r}")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ConfigurationError("tls_certfile and tls_keyfile go together")
        tls = self.tls_certfile is not None
        for address in self.listen:
            if address.scheme == "fd":
                self._check_inherited(address)
                continue
            if address.multicast:
                raise ConfigurationError(f"{address}: multicast groups are not listen addresses")
            if address.scheme == "https" and not tls:
                raise ConfigurationError(f"{address} needs tls_certfile and tls_keyfile")
            if address.scheme == "http" and tls:
                raise ConfigurationError(
                    f"{address}: a certificate is configured, so listen on https:// instead"
                )
            if (address.scheme in ("http", "https") and self.keyring is None
                    and not self.http_insecure):
                raise ConfigurationError(
                    f"{address} needs a keyring for its credentials, or http_insecure=True"
                )
            if self.network is not None and address.scheme != "udp":
                raise ConfigurationError(
                    f"{address}: a node on a simulated network listens on udp:// only"
                )

    def _check_inherited(self, address: Address) -> None:
        from clusterrpc.transports.addresses import FD_HTTP, fd_name_kind  # noqa: PLC0415

        assert address.name is not None
        if self.network is not None:
            raise ConfigurationError(
                f"{address}: a node on a simulated network listens on udp:// only"
            )
        if (fd_name_kind(address.name) == FD_HTTP and self.keyring is None
                and not self.http_insecure):
            raise ConfigurationError(
                f"{address} needs a keyring for its credentials, or http_insecure=True"
            )
