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
import math
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from clusterrpc.envelope import DEFAULT_MAX_PACKET
from clusterrpc.errors import ConfigurationError, ConnectionClosedError
from clusterrpc.keyring import Keyring
from clusterrpc.packet import MULTICAST, Header
from clusterrpc.rpc.gather import GroupReplies
from clusterrpc.rpc.proxy import DEFAULT, ProxyRoot
from clusterrpc.rpc.service import ServiceRegistry
from clusterrpc.transports.addresses import Address, parse_address
from clusterrpc.transports.base import AsyncChannel
from clusterrpc.transports.datagrams import (
    DatagramChannel,
    DatagramEndpoint,
    DatagramNetwork,
    resolve_udp,
)
from clusterrpc.transports.engine import CallServer, Messenger, PendingCalls
from clusterrpc.transports.multicast import GroupMember, GroupSender, check_ipv4_group
from clusterrpc.transports.streams import StreamChannel, StreamServer
from clusterrpc.values import DEFAULT_LIMITS, Limits, Value

__all__ = ["Group", "GroupPeer", "Node", "Peer", "check_timeout"]

log = logging.getLogger("clusterrpc.node")


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

    __slots__ = ("_name", "_node")

    def __init__(self, node: Node, name: str) -> None:
        super().__init__(self._invoke)
        self._node = node
        self._name = name

    def _invoke(self, method: str, params: tuple[Any, ...], timeout: Any, oneway: bool, *,
                quorum: int | None = None, include_self: bool = True) -> Any:
        return self._node._call_group(self._name, method, params, timeout=timeout,
                                      oneway=oneway, quorum=quorum, include_self=include_self)

    async def call(self, method: str, *params: Value, timeout: Any = DEFAULT,
                   quorum: int | None = None, include_self: bool = True) -> GroupReplies:
        """Call ``method`` by its full name on every member (see the class docstring)."""
        result: GroupReplies = await self._invoke(method, params, timeout, False,
                                                  quorum=quorum, include_self=include_self)
        return result

    def __repr__(self) -> str:
        return f"<GroupPeer {self._name}>"


def _as_group(name: str, spec: object) -> tuple[Group, Address | None, list[Address]]:
    """Check one ``groups=`` entry: the group, its multicast address or its fan-out ones."""
    group = spec if isinstance(spec, Group) else Group(address=spec)  # type: ignore[arg-type]
    if isinstance(group.address, str):
        address = parse_address(group.address)
        if address.multicast:
            check_ipv4_group(address)
            if group.members is not None and isinstance(group.members, str):
                raise ConfigurationError(f"group {name!r}: members is a list of node names")
            return group, address, []
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
    return group, None, fan_out


class Node:
    """A cluster member: serves its objects' methods and calls other nodes (module docstring).

    ``name``: this node's name in packets (what ``current_call().node`` shows its peers).
    ``cluster``: the cluster name; packets of other clusters are refused. ``keyring``: signs and
    verifies packets; ``None`` only with ``insecure=True``, which sends and accepts
    unauthenticated packets (never across an untrusted network).
    ``groups``: name → :class:`Group` (or its address) for :meth:`group` calls; the node
    joins the multicast ones (see :class:`Group`). ``network``: a simulated datagram network
    (:class:`clusterrpc.testing.MemoryNetwork`) that every UDP socket and group of this node
    uses instead of the operating system's; then only ``udp://`` listen addresses are allowed.
    ``listen``: URLs to serve on — ``tcp://``, ``unix://``, ``udp://`` and ``http(s)://``
    (standard XML-RPC; it needs the keyring's credentials unless ``http_insecure=True``, and
    TLS via ``tls_certfile``/``tls_keyfile`` for ``https://``). Port 0 picks a free port; see
    :attr:`addresses` after :meth:`start`.

    ``codec``: how this node encodes its calls (answers use the codec of the call).
    ``limits`` and ``max_packet`` bound what is accepted. ``max_in_flight``: calls per
    connection, each way, before back-pressure. ``timeout``: the default per-call timeout of
    :meth:`peer` (``None``: none). ``drain_timeout``: how long :meth:`stop` waits for calls in
    flight. ``debug``: fault messages carry tracebacks (they reveal code to callers).

    Raises :class:`~clusterrpc.errors.ConfigurationError` for an invalid configuration.
    """

    def __init__(
        self,
        name: str,
        *,
        cluster: str,
        keyring: Keyring | None,
        listen: Iterable[str] = (),
        groups: Mapping[str, Group | str | Sequence[str]] | None = None,
        network: DatagramNetwork | None = None,
        insecure: bool = False,
        codec: str | int = "xmlrpc",
        limits: Limits = DEFAULT_LIMITS,
        max_packet: int = DEFAULT_MAX_PACKET,
        max_in_flight: int = 256,
        timeout: float | None = 30.0,
        drain_timeout: float = 5.0,
        replay_window: int = 1024,
        freshness: float = 30.0,
        http_insecure: bool = False,
        tls_certfile: str | None = None,
        tls_keyfile: str | None = None,
        debug: bool = False,
    ) -> None:
        if isinstance(listen, str):
            raise ConfigurationError("listen takes a list of URLs, not one string")
        self.name = name
        self.cluster = cluster
        self.keyring = keyring
        self.timeout = check_timeout(timeout)
        self.drain_timeout = check_timeout(drain_timeout, "drain_timeout") or 0.0
        self.max_in_flight = max_in_flight
        self.limits = limits
        self.services = ServiceRegistry(debug=debug)
        self.messenger = Messenger(
            node=name, cluster=cluster, keyring=keyring, insecure=insecure, codec=codec,
            limits=limits, max_packet=max_packet, replay_window=replay_window,
            freshness=freshness,
        )  # fmt: skip
        self.call_server = CallServer(self.messenger, self.services)
        self._listen = [parse_address(url) for url in listen]
        self._http_insecure = http_insecure
        self._ssl_context: ssl.SSLContext | None = None
        if (tls_certfile is None) != (tls_keyfile is None):
            raise ConfigurationError("tls_certfile and tls_keyfile go together")
        if tls_certfile is not None and tls_keyfile is not None:
            from clusterrpc.transports.http import server_ssl_context  # noqa: PLC0415

            self._ssl_context = server_ssl_context(tls_certfile, tls_keyfile)
        for address in self._listen:
            if address.multicast:
                raise ConfigurationError(f"{address}: multicast groups are not listen addresses")
            if address.scheme == "https" and self._ssl_context is None:
                raise ConfigurationError(f"{address} needs tls_certfile and tls_keyfile")
            if address.scheme == "http" and self._ssl_context is not None:
                raise ConfigurationError(
                    f"{address}: a certificate is configured, so listen on https:// instead"
                )
            if address.scheme in ("http", "https") and keyring is None and not http_insecure:
                raise ConfigurationError(
                    f"{address} needs a keyring for its credentials, or http_insecure=True"
                )
        self.network = network
        if network is not None:
            for address in self._listen:
                if address.scheme != "udp":
                    raise ConfigurationError(
                        f"{address}: a node on a simulated network listens on udp:// only"
                    )
        self._groups = {name: _as_group(name, spec) for name, spec in (groups or {}).items()}
        self._group_members: list[GroupMember] = []
        self._group_senders: dict[str, GroupSender] = {}
        self._own_calls: set[int] = set()
        self._stream_servers: list[StreamServer] = []
        self._udp_endpoints: list[DatagramEndpoint] = []
        self._http_servers: list[Any] = []  # transports.http.HttpServer, imported on use
        self._listeners: list[Any] = []  # all of the above, in listen order
        self._client_udp: dict[int, DatagramEndpoint] = {}
        self._channels: dict[tuple[str, tuple[str, str] | None], AsyncChannel] = {}
        self._started = False
        self._stopping = False

    # -- serving -------------------------------------------------------------------------------

    def serve(self, obj: object, *, name: str) -> list[str]:
        """Publish ``obj``'s ``@remote``/``@oneway`` methods as ``name.<method>`` (see
        :meth:`clusterrpc.rpc.ServiceRegistry.serve`); works before and after :meth:`start`.
        Returns the names published."""
        return self.services.serve(obj, name=name)

    @property
    def addresses(self) -> list[str]:
        """The URLs this node listens on, in ``listen`` order, with ports resolved once
        started."""
        if not self._started:
            return [str(address) for address in self._listen]
        return [listener.url for listener in self._listeners]

    @property
    def counters(self) -> dict[str, int]:
        """Packet-layer counters (accepted, ``refused_*``) and serving counters (calls,
        one-way calls, faults, one-way errors …)."""
        counts = self.messenger.counters
        counts.update(self.call_server.counters)
        for http in self._http_servers:  # prefixed: HTTP requests are not packets
            for name, value in http.counters.items():
                counts[f"http_{name}"] = counts.get(f"http_{name}", 0) + value
        return counts

    async def start(self) -> None:
        """Bind every listen address. Raises :class:`~clusterrpc.errors.TransportError` if one
        cannot be bound (those already bound are closed again)."""
        if self._started:
            return
        self._stopping = False
        try:
            for address in self._listen:
                if address.stream:
                    server = StreamServer(address, self.call_server,
                                          max_in_flight=self.max_in_flight,
                                          max_frame=self.messenger.max_packet)
                    await server.start()
                    self._stream_servers.append(server)
                    self._listeners.append(server)
                elif address.scheme == "udp":
                    endpoint = _ListeningEndpoint(address, self.messenger,
                                                  call_server=self.call_server,
                                                  max_in_flight=self.max_in_flight,
                                                  own_call=self._is_own_excluded_call)
                    endpoint.network = self.network
                    await endpoint.start()
                    self._udp_endpoints.append(endpoint)
                    self._listeners.append(endpoint)
                else:
                    from clusterrpc.transports.http import HttpServer  # noqa: PLC0415 - h11 on use

                    http = HttpServer(
                        address=address, registry=self.services, keyring=self.keyring,
                        insecure=self._http_insecure, ssl_context=self._ssl_context,
                        limits=self.limits,
                    )  # fmt: skip
                    await http.start()
                    self._http_servers.append(http)
                    self._listeners.append(http)
            for index, (name, (group, multicast, fan_out)) in enumerate(self._groups.items()):
                if multicast is not None and group.join:
                    member = GroupMember(multicast, self.messenger, call_server=self.call_server,
                                         own_call=self._is_own_excluded_call)
                    member.network = self.network
                    await member.start()
                    self._group_members.append(member)
                destinations = ([(multicast.host, multicast.port)] if multicast is not None
                                else [await resolve_udp(address) for address in fan_out])
                sender = GroupSender(
                    Address("udp", host="0.0.0.0", port=0), self.messenger,  # noqa: S104
                    destinations=destinations, multicast=multicast,
                    # Each group's call ids in a range of their own: see _own_calls.
                    first_call_id=(index + 1) << 48,
                )  # fmt: skip
                sender.network = self.network
                await sender.start()
                self._group_senders[name] = sender
        except BaseException:
            await self._close_transports()
            raise
        self._started = True

    async def stop(self) -> None:
        """Stop serving: stop accepting, let calls in flight (served and sent) finish for up to
        ``drain_timeout`` seconds, then close every socket. Calls still waiting then fail with
        :class:`~clusterrpc.errors.ConnectionClosedError`. Idempotent."""
        if not self._started or self._stopping:
            return
        self._stopping = True
        for server in self._stream_servers:
            server.stop_accepting()
        # Served calls of async methods, and our own calls still waiting for answers.
        waits = [*self.call_server.tasks]
        waits += [asyncio.ensure_future(pending.wait_idle()) for pending in self._pendings()]
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.drain_timeout)
            for waiter in late:
                if waiter not in self.call_server.tasks:
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
        return GroupPeer(self, name)

    async def _call_group(self, name: str, method: str, params: tuple[Any, ...], *,
                          timeout: Any, oneway: bool, quorum: int | None,
                          include_self: bool) -> GroupReplies | None:
        timeout = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        sender = self._group_senders.get(name)
        if not self._started or sender is None:
            raise ConnectionClosedError(
                f"node {self.name!r} is not started; use `async with node:` before group calls"
            )
        group = self._groups[name][0]
        exclude = None if include_self else self._exclude_own_call
        if oneway:
            await sender.oneway_group(method, params, exclude=exclude)
            return None
        expected = None if group.members is None else set(group.members)
        if expected is not None and not include_self:
            expected.discard(self.name)
        return await sender.call_group(method, params, timeout=timeout, expected=expected,
                                       quorum=quorum, exclude=exclude)

    def _exclude_own_call(self, call_id: int) -> None:
        # Remembered a little longer than any own datagram takes to loop back to us.
        self._own_calls.add(call_id)
        asyncio.get_running_loop().call_later(60.0, self._own_calls.discard, call_id)

    def _is_own_excluded_call(self, header: Header) -> bool:
        return (header.sender == self.name and header.epoch == self.messenger.sealer.epoch
                and header.call_id in self._own_calls)

    def _pendings(self) -> list[PendingCalls]:
        found = [endpoint.pending for endpoint in self._all_udp()]
        for channel in self._channels.values():
            inner = channel.inner if isinstance(channel, _StartedOnly) else channel
            if isinstance(inner, StreamChannel):
                found.append(inner.pending)
        return found

    def _all_udp(self) -> list[DatagramEndpoint]:
        return [*self._udp_endpoints, *self._client_udp.values(),
                *self._group_senders.values()]

    async def _close_transports(self) -> None:
        for channel in list(self._channels.values()):
            await channel.aclose()
        self._channels.clear()
        for endpoint in [*self._all_udp(), *self._group_members]:
            endpoint.close()
        self._client_udp.clear()
        self._group_members.clear()
        self._group_senders.clear()
        self._udp_endpoints.clear()
        for server in self._stream_servers:
            await server.close()
        self._stream_servers.clear()
        for http in self._http_servers:
            await http.close(drain_timeout=self.drain_timeout)
        self._http_servers.clear()
        self._listeners.clear()

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
        its calls (this node's ``timeout`` if not given).

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
            channel = self._new_channel(address, credentials)
            self._channels[key] = channel
        return channel

    def _new_channel(self, address: Address, credentials: tuple[str, str] | None
                     ) -> AsyncChannel:
        if address.stream:
            return _StartedOnly(self, StreamChannel(address, self.messenger,
                                                    max_in_flight=self.max_in_flight))
        if address.scheme == "udp":
            return _StartedOnly(self, DatagramChannel(address, self._udp_endpoint_for))
        from clusterrpc.transports.http import HttpChannel  # noqa: PLC0415 - h11 on use

        return _StartedOnly(self, HttpChannel(str(address), credentials=credentials,
                                              limits=self.limits))

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
                                      call_server=None, max_in_flight=self.max_in_flight)
            client.network = self.network
            await client.start()
            self._client_udp[family] = client
        return client


class _ListeningEndpoint(DatagramEndpoint):
    """A node's ``udp://`` listen socket: as a fan-out group member, it skips the node's own
    calls that asked to exclude it."""

    def __init__(self, address: Address, messenger: Messenger, *, call_server: CallServer,
                 max_in_flight: int, own_call: Callable[[Header], bool]) -> None:
        super().__init__(address, messenger, call_server=call_server,
                         max_in_flight=max_in_flight)
        self._own_call = own_call

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
        if not self._node._started:
            raise ConnectionClosedError(
                f"node {self._node.name!r} is not started; use `async with node:` or "
                "`await node.start()` before calling peers"
            )
        return await self.inner.call(method, params, timeout=timeout, oneway=oneway)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.inner.aclose()
