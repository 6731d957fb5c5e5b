"""``Node``: a cluster member that serves methods and calls other nodes (asyncio).

::

    node = Node("n1", cluster="ORG/UK/EDIN", keyring=Keyring.load("cluster.keys"),
                listen=["tcp://127.0.0.1:7400", "udp://127.0.0.1:7400"])
    node.serve(Election(), name="election")
    async with node:                                  # binds; on exit drains and closes
        peer = node.peer("tcp://127.0.0.1:7500")
        status = await peer.election.status()
        await peer.oneway.election.vote(3, "n1")      # returns once sent; no reply exists

A node signs every packet it sends with its keyring's signing key and serves only packets that
authenticate (``spec/packet.md``). Its epoch is its start time in microseconds, so receivers'
replay windows restart cleanly when it restarts. One node runs in one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from clusterrpc.config import Group, GroupConfig, NodeConfig, check_timeout
from clusterrpc.errors import ClusterRPCError, ConfigurationError, ConnectionClosedError
from clusterrpc.local.protocol import TransitionGate
from clusterrpc.packet import MULTICAST, Header
from clusterrpc.rpc.gather import GroupReplies
from clusterrpc.rpc.protocol import Messenger as PacketMessenger
from clusterrpc.rpc.proxy import DEFAULT, ProxyRoot
from clusterrpc.rpc.service import ServiceRegistry
from clusterrpc.transports.addresses import (
    FD_HTTP,
    FD_LOCAL,
    Address,
    fd_name_kind,
    parse_address,
)
from clusterrpc.transports.base import AsyncChannel
from clusterrpc.transports.datagrams import DatagramChannel, DatagramEndpoint, resolve_udp
from clusterrpc.transports.engine import Messenger, Serving
from clusterrpc.transports.multicast import GroupMember, GroupSender
from clusterrpc.transports.streams import StreamChannel, StreamServer
from clusterrpc.values import Value

if TYPE_CHECKING:
    from clusterrpc.keyring import Keyring
    from clusterrpc.local.server import LocalServer
    from clusterrpc.transports.systemd import InheritedSocket

__all__ = ["Group", "GroupPeer", "Node", "NodeConfig", "Peer", "check_timeout"]

log = logging.getLogger("clusterrpc.node")


class Peer(ProxyRoot):
    """Calls to one remote endpoint from a :class:`Node` (``node.peer(url)``).

    ``await peer.svc.method(*args, timeout=…)`` calls ``svc.method`` and returns its value;
    ``await peer.oneway.svc.method(*args)`` sends a one-way call and returns ``None`` once the
    packet is handed to the operating system. ``await peer.call("svc.method", *args)`` does
    the same for names that are not Python identifiers (or collide with ``call``/``oneway``).
    Errors: :class:`~clusterrpc.errors.Fault` from the method, and the transport errors of
    :mod:`clusterrpc.transports.base`.
    """

    __slots__ = ("_channel", "_timeout", "url")

    def __init__(self, channel: AsyncChannel, *, timeout: float | None) -> None:
        super().__init__(self._invoke)
        self._channel = channel
        self._timeout = timeout
        self.url = channel.url

    def _invoke(self, method: str, params: tuple[Any, ...], timeout: Any, oneway: bool
                ) -> Any:
        timeout = self._timeout if timeout is DEFAULT else check_timeout(timeout)
        return self._channel.call(method, params, timeout=timeout, oneway=oneway)

    async def call(self, method: str, *params: Value, timeout: Any = DEFAULT,
                   oneway: bool = False) -> Value:
        """Call ``method`` by its full name (see the class docstring)."""
        result: Value = await self._invoke(method, params, timeout, oneway)
        return result

    def __repr__(self) -> str:
        return f"<Peer {self.url}>"


class GroupPeer(ProxyRoot):
    """Calls to every member of a group at once (``node.group(name)``).

    ``await group.svc.method(*args, timeout=…, quorum=…, include_self=True)`` sends one
    datagram (one per member for fan-out) and returns a
    :class:`~clusterrpc.rpc.gather.GroupReplies`: member name → value or
    :class:`~clusterrpc.errors.Fault`, with ``missing`` naming the expected members that did
    not answer. It returns when every expected member answered, ``quorum`` answers arrived, or
    the timeout passed — never later. ``include_self=False`` keeps this node from serving its
    own call. ``await group.oneway.svc.method(…)`` sends a one-way call to all; nothing comes
    back. Raises :class:`~clusterrpc.errors.EncodeError` for a payload over one datagram and
    :class:`~clusterrpc.errors.ConnectionClosedError` unless the node is started.
    """

    __slots__ = ("_call_group", "_name")

    def __init__(self, call_group: Callable[..., Any], name: str) -> None:
        super().__init__(self._invoke)
        self._call_group = call_group  # Node.call_group
        self._name = name

    def _invoke(self, method: str, params: tuple[Any, ...], timeout: Any, oneway: bool, *,
                quorum: int | None = None, include_self: bool = True) -> Any:
        return self._call_group(self._name, method, params, timeout=timeout, oneway=oneway,
                                quorum=quorum, include_self=include_self)

    async def call(self, method: str, *params: Value, timeout: Any = DEFAULT,
                   quorum: int | None = None, include_self: bool = True) -> GroupReplies:
        """Call ``method`` by its full name on every member (see the class docstring)."""
        result: GroupReplies = await self._invoke(method, params, timeout, False,
                                                  quorum=quorum, include_self=include_self)
        return result

    def __repr__(self) -> str:
        return f"<GroupPeer {self._name}>"


class Listener(Protocol):
    """What a node listens with, whatever the scheme (built from :data:`LISTENERS`)."""

    @property
    def url(self) -> str:
        """The address bound (port 0 resolved once started)."""

    async def start(self) -> None:
        """Bind; raises :class:`~clusterrpc.errors.TransportError` if it cannot."""

    def stop_accepting(self) -> None:
        """Stop taking new connections (what is open keeps being served)."""

    async def close(self, drain_timeout: float) -> None:
        """Stop serving and close everything it opened."""

    def http_counters(self) -> dict[str, int]:
        """Counters of its own beyond the serving ones (HTTP's), or an empty dict."""


class _NodeListeners:
    """What every listener factory gets: the node's configuration, its serving state and the
    filter for its own excluded multicast calls."""

    __slots__ = ("config", "own_call", "serving", "ssl_context")

    def __init__(self, config: NodeConfig, serving: Serving,
                 own_call: Callable[[Header], bool]) -> None:
        self.config = config
        self.serving = serving
        self.own_call = own_call
        self.ssl_context: ssl.SSLContext | None = None
        if config.tls_certfile is not None and config.tls_keyfile is not None:
            from clusterrpc.transports.http import server_ssl_context  # noqa: PLC0415

            self.ssl_context = server_ssl_context(config.tls_certfile, config.tls_keyfile)


class _ListenerOf:
    """A listener around a transport object with ``url``, ``start()`` and
    ``stop_accepting()``; subclasses say how it closes and what it counts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def url(self) -> str:
        return str(self.inner.url)

    async def start(self) -> None:
        await self.inner.start()

    def stop_accepting(self) -> None:
        self.inner.stop_accepting()

    async def close(self, drain_timeout: float) -> None:
        self.inner.close()

    def http_counters(self) -> dict[str, int]:
        return {}


class _StreamListener(_ListenerOf):
    def __init__(self, node: _NodeListeners, address: Address, *,
                 sock: socket.socket | None = None) -> None:
        super().__init__(StreamServer(address, node.serving,
                                      max_in_flight=node.config.max_in_flight,
                                      max_frame=node.serving.messenger.max_packet, sock=sock))

    async def close(self, drain_timeout: float) -> None:
        await self.inner.close()


class _DatagramListener(_ListenerOf):
    def __init__(self, node: _NodeListeners, address: Address, *,
                 sock: socket.socket | None = None) -> None:
        endpoint = _ListeningEndpoint(address, node.serving.messenger, serving=node.serving,
                                      max_in_flight=node.config.max_in_flight,
                                      own_call=node.own_call, sock=sock)
        endpoint.network = node.config.network
        super().__init__(endpoint)
        self.endpoint = endpoint

    def stop_accepting(self) -> None:
        """A datagram socket accepts nothing: it keeps serving until closed."""


def _console_pages(config: NodeConfig, rpc_path: str) -> Any:
    if not config.http_console:
        return None
    from clusterrpc.console import console_pages  # noqa: PLC0415 - only consoles read it

    return console_pages(rpc_path=rpc_path)


class _HttpListener(_ListenerOf):
    def __init__(self, node: _NodeListeners, address: Address, *,
                 sock: socket.socket | None = None) -> None:
        from clusterrpc.transports.http import HttpServer  # noqa: PLC0415 - h11 on use

        config = node.config
        super().__init__(HttpServer(
            address=address, registry=node.serving.dispatcher.registry, keyring=config.keyring,
            insecure=config.http_insecure, ssl_context=node.ssl_context, limits=config.limits,
            dispatcher=node.serving.dispatcher, sock=sock,
            pages=_console_pages(config, address.path or "/RPC2"),
        ))  # fmt: skip

    def stop_accepting(self) -> None:
        """HTTP stops accepting in ``close`` (which drains requests in progress)."""

    async def close(self, drain_timeout: float) -> None:
        await self.inner.close(drain_timeout=drain_timeout)

    def http_counters(self) -> dict[str, int]:
        return dict(self.inner.http_counters)


LISTENERS: dict[str, Callable[..., Listener]] = {
    "tcp": _StreamListener,
    "unix": _StreamListener,
    "udp": _DatagramListener,
    "http": _HttpListener,
    "https": _HttpListener,
}
"""How a node listens on each scheme of its ``listen`` URLs: ``factory(node, address)``, or
``factory(node, address, sock=…)`` to serve on a socket already bound there (``fd://``)."""


def _discard(listener: Listener) -> None:
    """Close the inherited duplicate a listener that never started was given (a started one
    closes it itself)."""
    given = getattr(getattr(listener, "inner", None), "given_socket", None)
    if isinstance(given, socket.socket):
        given.close()


def _inherited_listeners(node: _NodeListeners, address: Address,
                         sockets: Sequence[InheritedSocket]) -> list[Listener]:
    """The listeners of one ``fd://NAME`` URL (``spec/systemd.md``): one per inherited socket
    so named, each on a duplicate of it (the original stays its owner's), of the scheme its
    family and type say. Raises :class:`~clusterrpc.errors.ConfigurationError` for no such
    socket, or one that cannot serve the name's purpose."""
    from clusterrpc.transports.systemd import (  # noqa: PLC0415 - only activated nodes
        bound_address,
        is_listening,
    )

    assert address.name is not None
    chosen = [each for each in sockets if each.name == address.name]
    if not chosen:
        names = ", ".join(sorted({each.name for each in sockets})) or "none"
        raise ConfigurationError(
            f"{address}: no inherited socket is named {address.name!r} (inherited: {names}); "
            "set FileDescriptorName= in the .socket unit (spec/systemd.md)")
    http = fd_name_kind(address.name) == FD_HTTP
    listeners: list[Listener] = []
    for each in chosen:
        scheme = each.scheme
        what = f"{address}: inherited descriptor {each.fd}"
        if scheme is None or (http and scheme != "tcp"):
            wanted = "a TCP socket" if http else "a TCP, Unix-stream or UDP socket"
            raise ConfigurationError(f"{what} is not {wanted}")
        if scheme != "udp" and not is_listening(each.socket):
            raise ConfigurationError(
                f"{what} does not listen (a connection from Accept=yes?): use Accept=no")
        if http:
            scheme = "http" if node.ssl_context is None else "https"
            bound = bound_address(each.socket, scheme, path=address.path or "/RPC2")
        else:
            bound = bound_address(each.socket, scheme)
        duplicate = each.socket.dup()
        try:
            listeners.append(LISTENERS[bound.scheme](node, bound, sock=duplicate))
        except BaseException:
            duplicate.close()
            for listener in listeners:
                _discard(listener)
            raise
    return listeners


class Node:
    """A cluster member: serves its objects' methods and calls other nodes (module docstring).

    Configured either with keywords — ``Node("n1", cluster=…, keyring=…, listen=[…], …)``, every
    keyword a field of :class:`~clusterrpc.config.NodeConfig`, which documents them — or with a
    ready configuration, ``Node(config=NodeConfig(…))`` (what ``clusterrpc serve`` does). The
    keywords are parsed into :attr:`config` once, here. Port 0 picks a free port; see
    :attr:`addresses` after :meth:`start`.

    Raises :class:`~clusterrpc.errors.ConfigurationError` for an invalid configuration, and
    ``TypeError`` for an unknown keyword or for both a name and a ``config``.
    """

    def __init__(self, name: str | None = None, *, config: NodeConfig | None = None,
                 **options: Any) -> None:
        if config is None:
            if name is None:
                raise TypeError("Node() needs a name (or config=NodeConfig(...))")
            config = NodeConfig.from_options(name, **options)
        elif name is not None or options:
            raise TypeError("give Node either config= or a name and keywords, not both")
        self.config = config
        self.name = config.name
        self.cluster = config.cluster
        self.keyring = config.keyring
        self.timeout = config.timeout
        self.services = ServiceRegistry(debug=config.debug)
        self.messenger = Messenger(
            node=config.name, cluster=config.cluster, keyring=config.keyring,
            insecure=config.insecure, codec=config.codec, limits=config.limits,
            max_packet=config.max_packet, replay_window=config.replay_window,
            freshness=config.freshness,
        )  # fmt: skip
        self.serving = Serving(self.messenger, self.services)
        # Every node describes the plugins installed with it, so a remote GUI can build a
        # configuration form for each from its metadata alone (spec/metadata.md).
        from clusterrpc.plugins import describe_plugin, list_plugins  # noqa: PLC0415

        self.services.publish("system.listPlugins", list_plugins)
        self.services.publish("system.describePlugin", describe_plugin)
        self._listener_context = _NodeListeners(config, self.serving, self._is_own_excluded_call)
        self._groups: dict[str, GroupConfig] = dict(config.groups)
        self._group_members: list[GroupMember] = []
        self._group_senders: dict[str, GroupSender] = {}
        self._own_calls: set[int] = set()
        self._member_sources: dict[str, Callable[[], Iterable[str]]] = {}
        self._udp_endpoints: list[DatagramEndpoint] = []
        self._listeners: list[Listener] = []
        self._client_udp: dict[int, DatagramEndpoint] = {}
        self._channels: dict[tuple[str, tuple[str, str] | None], _StartedOnly] = {}
        self._started = False
        self._stopping = False
        self.gate = TransitionGate()
        """The transition gate under :meth:`transition`."""
        self.local: LocalServer | None = None
        """The local API's server, once something is served locally (:meth:`serve_local`)."""
        self._own_inherited: list[InheritedSocket] = []  # taken from the environment: ours
        from clusterrpc.admin import NodeAdmin  # noqa: PLC0415 - it reads this module's Node

        NodeAdmin.publish(self)  # "node": node.status(), what `clusterrpc status` shows

    # -- serving -------------------------------------------------------------------------------

    def serve(self, obj: object, *, name: str) -> list[str]:
        """Publish ``obj``'s ``@remote``/``@oneway`` methods as ``name.<method>`` (see
        :meth:`clusterrpc.rpc.ServiceRegistry.serve`); works before and after :meth:`start`.
        Returns the names published."""
        return self.services.serve(obj, name=name)

    def serve_local(self, obj: object, *, name: str, domains: Sequence[str] | None = None
                    ) -> list[str]:
        """Serve ``obj``'s methods to local processes, on a Unix socket per security domain
        at ``<local_dir>/<cluster path>/sockets/<name>/<DOMAIN>`` (``spec/local.md``);
        ``domains``: where it is visible (default: every configured domain). Works before and
        after :meth:`start`. Returns the names published. Raises
        :class:`~clusterrpc.errors.ConfigurationError` for a bad name or domain, an invalid
        cluster name, or no default ``local_dir``."""
        return self._local_server().serve(obj, name=name, domains=domains)

    def _local_server(self) -> LocalServer:
        if self.local is None:
            from clusterrpc.local.paths import (  # noqa: PLC0415 - only nodes that serve locally
                check_cluster_name,
                default_local_dir,
            )
            from clusterrpc.local.server import DEFAULT_DOMAINS, LocalServer  # noqa: PLC0415

            config = self.config
            check_cluster_name(config.cluster)
            local_dir = config.local_dir or default_local_dir(
                uid=os.geteuid(), runtime_dir=os.environ.get("XDG_RUNTIME_DIR"))
            self.local = LocalServer(
                node=self.name, cluster=self.cluster, local_dir=local_dir,
                domains={**DEFAULT_DOMAINS, **config.local_domains}, serving=self.serving,
                abstract=config.local_abstract, max_in_flight=config.max_in_flight,
                max_events=config.local_max_events,
                max_event_bytes=config.local_max_event_bytes,
                eviction_grace=config.local_eviction_grace, debug=config.debug,
                codec=config.codec, gate=self.gate,
            )  # fmt: skip
            if self._started:
                self.local.start()
        return self.local

    @contextlib.asynccontextmanager
    async def transition(self) -> AsyncIterator[None]:
        """A cluster transition, for its duration: local calls from ordinary handles stall
        (they wait, their deadline running, and proceed in order when the last open
        transition ends, seeing nothing else); recovery handles' calls go on. Transitions may
        overlap. The membership component opens one per view change."""
        self.begin_transition()
        try:
            yield
        finally:
            self.end_transition()

    def begin_transition(self) -> None:
        """Open a transition now (what :meth:`transition` does on entry), for callers that
        cannot wait: each call must be matched by one :meth:`end_transition`."""
        if self.gate.open() and self.local is not None:
            self.local.stall(True)

    def end_transition(self) -> None:
        """Close a transition opened by :meth:`begin_transition`."""
        if self.gate.close() and self.local is not None:
            self.local.stall(False)

    @property
    def started(self) -> bool:
        """Whether the node is started (between :meth:`start` and :meth:`stop`)."""
        return self._started

    @property
    def addresses(self) -> list[str]:
        """The URLs this node listens on, in ``listen`` order, with ports resolved once
        started; an ``fd://NAME`` URL stands for the addresses its inherited sockets are
        really bound to (one each, in descriptor order) once started, for itself before."""
        if not self._started:
            return [str(address) for address in self.config.listen]
        return [listener.url for listener in self._listeners]

    def use_keyring(self, keyring: Keyring) -> None:
        """Sign, verify and check HTTP credentials with ``keyring`` from now on — a key
        rotation's step (``spec/keyring.md``, "Rotation"), what ``clusterrpc serve`` does on
        SIGHUP. Connections stay open and calls in flight finish: their answers are sealed
        with the new signing key, and replay windows and sequence numbers carry on (the epoch
        is unchanged), so a packet already seen is still refused.

        The swap is all or nothing: everything is checked before anything changes. Raises
        :class:`~clusterrpc.errors.ConfigurationError` for a node built without a keyring
        (``insecure`` or ``http_insecure`` nodes do not rotate into authentication), a keyring
        with no signing key, one whose public-key signing key speaks for another node, or one
        with no keys for an HTTP endpoint that checks credentials."""
        if self.keyring is None:
            raise ConfigurationError(f"node {self.name} runs without a keyring: "
                                     "restart it with one rather than reloading")
        try:
            keyring.signing_key()
        except ClusterRPCError as error:
            raise ConfigurationError(f"the new keyring cannot sign: {error}") from None
        http = [listener for listener in self._listeners if isinstance(listener, _HttpListener)
                and listener.inner.auth is not None]
        auth = None
        if http:
            from clusterrpc.transports.http import HttpAuth  # noqa: PLC0415 - h11 on use

            auth = HttpAuth(keyring)  # raises for a keyring without keys, before any change
        # The sealer's own check (a public-key key must speak for this node) runs first: if it
        # refuses, nothing has been swapped yet.
        self.messenger.use_keyring(keyring)
        for listener in http:
            listener.inner.auth = auth
        self.keyring = keyring
        self.config = dataclasses.replace(self.config, keyring=keyring)
        self._listener_context.config = self.config

    @property
    def counters(self) -> dict[str, int]:
        """Packet-layer counters (accepted, ``refused_*``), the serving counters of every
        transport (``spec/rpc.md``, "Counters": calls, one-way calls, faults, one-way errors …)
        and the HTTP endpoints' own, prefixed ``http_``."""
        counts = self.messenger.counters
        counts.update(self.serving.counters)
        for listener in self._listeners:
            for name, value in listener.http_counters().items():
                counts[f"http_{name}"] = counts.get(f"http_{name}", 0) + value
        return counts

    async def start(self) -> None:
        """Bind every listen address (serve on the inherited sockets of ``fd://`` ones: see
        :class:`~clusterrpc.config.NodeConfig`, "Socket activation"). Raises
        :class:`~clusterrpc.errors.TransportError` if one cannot be bound (those already bound
        are closed again), and :class:`~clusterrpc.errors.ConfigurationError` for an
        ``fd://`` URL no inherited socket answers."""
        if self._started:
            return
        self._stopping = False
        network = self.config.network
        try:
            inherited = self._inherited()
            for address in self.config.listen:
                if address.scheme == "fd":
                    listeners = _inherited_listeners(self._listener_context, address,
                                                     inherited)
                else:
                    listeners = [LISTENERS[address.scheme](self._listener_context, address)]
                for index, listener in enumerate(listeners):
                    try:
                        await listener.start()
                    except BaseException:
                        for unstarted in listeners[index:]:
                            _discard(unstarted)
                        raise
                    self._listeners.append(listener)
                    if isinstance(listener, _DatagramListener):
                        self._udp_endpoints.append(listener.endpoint)
            for index, (name, group) in enumerate(self._groups.items()):
                multicast = group.multicast
                if multicast is not None and group.group.join:
                    member = GroupMember(multicast, self.messenger, serving=self.serving,
                                         own_call=self._is_own_excluded_call)
                    member.network = network
                    await member.start()
                    self._group_members.append(member)
                destinations = ([(multicast.host, multicast.port)] if multicast is not None
                                else [await resolve_udp(address) for address in group.fan_out])
                sender = GroupSender(
                    Address("udp", host="0.0.0.0", port=0), self.messenger,  # noqa: S104
                    destinations=destinations, multicast=multicast,
                    # Each group's call ids in a range of their own: see _own_calls.
                    first_call_id=(index + 1) << 48,
                )  # fmt: skip
                sender.network = network
                await sender.start()
                self._group_senders[name] = sender
            if self.local is not None:
                self.local.start(inherited={each.name: each.socket for each in inherited
                                            if each.name.startswith(f"{FD_LOCAL}.")})
            self._warn_unused(inherited)
        except BaseException:
            await self._close_transports()
            raise
        self._started = True

    def _inherited(self) -> Sequence[InheritedSocket]:
        """The sockets ``fd://`` URLs and local endpoints are served on: the configured ones,
        or those this process was passed (taken from the environment once, then ours)."""
        if self.config.inherited is not None:
            return self.config.inherited
        if not self._own_inherited:
            from clusterrpc.transports.systemd import inherited_sockets  # noqa: PLC0415

            self._own_inherited = inherited_sockets()
        return self._own_inherited

    def _warn_unused(self, inherited: Sequence[InheritedSocket]) -> None:
        used = {address.name for address in self.config.listen if address.scheme == "fd"}
        if self.local is not None:
            used.update(self.local.inherited_names)
        for each in inherited:
            if each.name not in used:
                log.warning("inherited socket %r (descriptor %d) is not used: no fd://%s "
                            "listen URL or local service takes it", each.name, each.fd,
                            each.name)

    async def stop(self) -> None:
        """Stop serving: stop accepting, let calls in flight (served and sent) finish for up to
        ``drain_timeout`` seconds, then close every socket. Calls still waiting then fail with
        :class:`~clusterrpc.errors.ConnectionClosedError`. Idempotent."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        for listener in self._listeners:
            listener.stop_accepting()
        if self.local is not None:
            self.local.stop_accepting()
        # Served calls of async methods, and our own calls still waiting for answers.
        running = self.serving.tasks
        waits: list[asyncio.Future[Any]] = [*running]
        waits += [asyncio.ensure_future(endpoint.wait_idle()) for endpoint in self._all_udp()]
        waits += [asyncio.ensure_future(channel.wait_idle())
                  for channel in self._channels.values()]
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.config.drain_timeout)
            for waiter in late:
                if waiter not in running:
                    waiter.cancel()
        await self._close_transports()
        self._started = False

    # -- groups --------------------------------------------------------------------------------

    def group(self, name: str) -> GroupPeer:
        """A :class:`GroupPeer` for calls to every member of the group ``name`` (configured in
        ``groups=``). Raises :class:`~clusterrpc.errors.ConfigurationError` for an unknown
        name."""
        if name not in self._groups:
            known = ", ".join(sorted(self._groups)) or "none"
            raise ConfigurationError(f"no group {name!r} (configured groups: {known})")
        return GroupPeer(self.call_group, name)

    def manage_group(self, name: str, members: Callable[[], Iterable[str]] | None) -> None:
        """Let ``members()`` name who a call to group ``name`` waits for, when the group has
        no ``members=`` list (the membership component passes the names alive in its view);
        ``None`` stops it. A gather then returns as soon as exactly those answered. Raises
        :class:`~clusterrpc.errors.ConfigurationError` for an unknown group."""
        if name not in self._groups:
            known = ", ".join(sorted(self._groups)) or "none"
            raise ConfigurationError(f"no group {name!r} (configured groups: {known})")
        if members is None:
            self._member_sources.pop(name, None)
        else:
            self._member_sources[name] = members

    async def call_group(self, name: str, method: str, params: Sequence[Value], *,
                         timeout: Any = DEFAULT, oneway: bool = False,
                         quorum: int | None = None, include_self: bool = True
                         ) -> GroupReplies | None:
        """Call ``method`` on every member of the group ``name``: what :class:`GroupPeer`
        does (see there; ``None`` for one-way)."""
        timeout = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        sender = self._group_senders.get(name)
        if not self._started or sender is None:
            raise ConnectionClosedError(
                f"node {self.name!r} is not started; use `async with node:` before group calls"
            )
        group = self._groups[name].group
        exclude = None if include_self else self._exclude_own_call
        if oneway:
            await sender.oneway_group(method, params, exclude=exclude)
            return None
        source = self._member_sources.get(name)
        if group.members is not None:
            expected: set[str] | None = set(group.members)
        elif source is not None:
            expected = set(source())
        else:
            expected = None
        if expected is not None and not include_self:
            expected.discard(self.name)
        return await sender.call_group(method, params, timeout=timeout, expected=expected,
                                       quorum=quorum, exclude=exclude)

    def _exclude_own_call(self, call_id: int) -> None:
        # Remembered a little longer than any own datagram takes to loop back to us.
        self._own_calls.add(call_id)
        asyncio.get_running_loop().call_later(60.0, self._own_calls.discard, call_id)

    def _is_own_excluded_call(self, header: Header) -> bool:
        return (header.sender == self.name and header.epoch == self.messenger.epoch
                and header.call_id in self._own_calls)

    def _all_udp(self) -> list[DatagramEndpoint]:
        return [*self._udp_endpoints, *self._client_udp.values(),
                *self._group_senders.values()]

    async def _close_transports(self) -> None:
        for channel in list(self._channels.values()):
            await channel.aclose()
        self._channels.clear()
        for endpoint in [*self._client_udp.values(), *self._group_senders.values(),
                         *self._group_members]:
            endpoint.close()
        self._client_udp.clear()
        self._group_members.clear()
        self._group_senders.clear()
        self._udp_endpoints.clear()
        for listener in self._listeners:
            await listener.close(self.config.drain_timeout)
        self._listeners.clear()
        if self.local is not None:
            self.local.close()
        # The listeners served on duplicates; what the environment passed is ours to close (the
        # service manager keeps its own copies for the next process).
        for each in self._own_inherited:
            each.socket.close()
        self._own_inherited = []

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- calling -------------------------------------------------------------------------------

    def peer(self, url: str, *, timeout: Any = DEFAULT,
             credentials: tuple[str, str] | None = None) -> Peer:
        """A :class:`Peer` for calls to ``url`` (``tcp://``, ``unix://``, ``udp://`` or
        ``http(s)://``), sharing this node's connection to it. ``timeout``: the default for
        its calls (this node's ``timeout`` if not given). A ``tcp://`` or ``unix://``
        connection also serves this node's methods to the peer, which may call back on it.

        ``http(s)://`` URLs reach any standard XML-RPC server. ``credentials`` (or
        ``user:password@`` in the URL) is the HTTP Basic ``(user, password)`` to present;
        a clusterrpc node's are ``clusterrpc.transports.http.http_credentials(keyring)``. They
        are never sent unless given: the keyring's token must not reach a foreign server.

        Raises :class:`~clusterrpc.errors.ConfigurationError` for a bad URL. Calls through it
        raise :class:`~clusterrpc.errors.ConnectionClosedError` unless the node is started.
        """
        in_url = None
        if url.lower().startswith(("http://", "https://")):
            from clusterrpc.transports.http import split_userinfo  # noqa: PLC0415

            url, in_url = split_userinfo(url)
        address = parse_address(url)
        if address.multicast:
            raise ConfigurationError(f"{url} is a multicast group, not a peer")
        channel = self._channel(address, credentials or in_url)
        return Peer(channel, timeout=self.timeout if timeout is DEFAULT
                    else check_timeout(timeout))

    def _channel(self, address: Address, credentials: tuple[str, str] | None
                 ) -> AsyncChannel:
        key = (str(address), credentials)
        channel = self._channels.get(key)
        if channel is None:
            channel = _StartedOnly(self, self._new_channel(address, credentials))
            self._channels[key] = channel
        return channel

    def _new_channel(self, address: Address, credentials: tuple[str, str] | None
                     ) -> AsyncChannel:
        if address.stream:
            return StreamChannel(address, self.messenger, max_in_flight=self.config.max_in_flight,
                                 serving=self.serving)
        if address.scheme == "udp":
            return DatagramChannel(address, self._udp_endpoint_for)
        from clusterrpc.transports.http import HttpChannel  # noqa: PLC0415 - h11 on use

        return HttpChannel(str(address), credentials=credentials, limits=self.config.limits)

    async def _udp_endpoint_for(self, family: int) -> DatagramEndpoint:
        """The UDP socket to send from: a listening one of that family (so peers can answer
        and call back), else a client-only socket made on first use."""
        for endpoint in self._udp_endpoints:
            if endpoint.family == family:
                return endpoint
        client = self._client_udp.get(family)
        if client is None:
            # Any local address, port 0: the socket only receives answers to its own calls.
            host = "::" if family == socket.AF_INET6 else "0.0.0.0"  # noqa: S104
            client = DatagramEndpoint(Address("udp", host=host, port=0), self.messenger,
                                      serving=None, max_in_flight=self.config.max_in_flight)
            client.network = self.config.network
            await client.start()
            self._client_udp[family] = client
        return client


class _ListeningEndpoint(DatagramEndpoint):
    """A node's ``udp://`` listen socket: as a fan-out group member, it skips the node's own
    calls that asked to exclude it."""

    def __init__(self, address: Address, messenger: PacketMessenger, *, serving: Serving,
                 max_in_flight: int, own_call: Callable[[Header], bool],
                 sock: socket.socket | None = None) -> None:
        self._own_call = own_call
        super().__init__(address, messenger, serving=serving, max_in_flight=max_in_flight,
                         sock=sock)

    def accepts_call(self, header: Header) -> bool:
        return not (header.flags & MULTICAST and self._own_call(header))


class _StartedOnly(AsyncChannel):
    """A channel usable only while its node is started (so nothing outlives ``stop``)."""

    def __init__(self, node: Node, channel: AsyncChannel) -> None:
        self._node = node
        self.inner = channel
        self.url = channel.url

    async def call(
        self, method: str, params: Sequence[Value], *, timeout: float | None,
        oneway: bool = False,
    ) -> Value:
        if not self._node.started:
            raise ConnectionClosedError(
                f"node {self._node.name!r} is not started; use `async with node:` or "
                "`await node.start()` before calling peers"
            )
        return await self.inner.call(method, params, timeout=timeout, oneway=oneway)

    async def wait_idle(self) -> None:
        """Return once no call through this channel waits for an answer."""
        await self.inner.wait_idle()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.inner.aclose()
