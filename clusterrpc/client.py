"""``connect()``: the blocking client for scripts and admin tools.

::

    with clusterrpc.connect("tcp://127.0.0.1:7400", keyring=keyring) as n1:
        n1.election.status()
        n1.oneway.election.vote(3, "admin")       # returns once sent
        n1.system.listMethods()

It shares the sans-I/O core with :class:`~clusterrpc.Node` (codecs, packets, call tracking) but
needs no event loop: each call is sealed, written and answered in the calling thread over a
plain socket, which is also the fastest way to make one call after another.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from typing import Any, Self

from clusterrpc.envelope import DEFAULT_MAX_PACKET
from clusterrpc.errors import ConfigurationError
from clusterrpc.keyring import Keyring
from clusterrpc.node import check_timeout
from clusterrpc.rpc.gather import GroupReplies
from clusterrpc.rpc.proxy import DEFAULT, ProxyRoot
from clusterrpc.transports.addresses import parse_address
from clusterrpc.transports.base import BlockingChannel
from clusterrpc.transports.datagrams import BlockingDatagramChannel
from clusterrpc.transports.engine import Messenger
from clusterrpc.transports.multicast import BlockingGroupSender, check_ipv4_group
from clusterrpc.transports.streams import BlockingStreamChannel
from clusterrpc.values import DEFAULT_LIMITS, Limits, Value

__all__ = ["Client", "GroupClient", "connect", "connect_group"]


def _client_name(keyring: Keyring | None) -> str:
    """The sender name of a client's packets.

    A public-key (ed25519) keyring can only sign as the node it names. With a shared key, a
    unique name per client: receivers keep the newest epoch per sender name, so two clients
    (or a client and a node) sharing a name would make each other's packets look stale.
    """
    if keyring is not None and keyring.signing_key_id is not None:
        key = keyring.signing_key()
        if key.public is not None and keyring.node is not None:
            return keyring.node
    host = socket.gethostname().split(".")[0][:64] or "host"
    return f"client.{host}.{os.getpid()}.{secrets.token_hex(3)}"


class _BlockingRoot(ProxyRoot):
    """What the blocking clients share: attribute calls, ``close`` and ``with``."""

    __slots__ = ("timeout", "url")

    def close(self) -> None:
        """Close the socket; later calls raise
        :class:`~clusterrpc.errors.ConnectionClosedError`. Idempotent."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<clusterrpc.{type(self).__name__} {self.url}>"


class Client(_BlockingRoot):
    """A blocking client of one endpoint (build it with :func:`connect`).

    ``client.svc.method(*args, timeout=…)`` returns the method's value;
    ``client.oneway.svc.method(*args)`` returns ``None`` once the packet is sent;
    ``client.call("svc.method", *args, timeout=…, oneway=False)`` takes the name as a string.
    Failures raise :class:`~clusterrpc.errors.Fault` (the method answered with a fault) or the
    transport errors of :mod:`clusterrpc.transports.base` (timeouts included). Thread-safe;
    calls from several threads take turns. Close it (or use ``with``) to release the socket.
    """

    __slots__ = ("_channel",)

    def __init__(self, channel: BlockingChannel, *, timeout: float | None) -> None:
        super().__init__(self._invoke)
        self._channel = channel
        self.timeout = timeout
        self.url = channel.url

    def _invoke(self, method: str, params: tuple[Any, ...], timeout: Any, oneway: bool
                ) -> Value:
        timeout = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        return self._channel.call(method, params, timeout=timeout, oneway=oneway)

    def call(self, method: str, *params: Value, timeout: Any = DEFAULT,
             oneway: bool = False) -> Value:
        """Call ``method`` by its full name (see the class docstring)."""
        return self._invoke(method, params, timeout, oneway)

    def close(self) -> None:
        """Close the connection; later calls raise
        :class:`~clusterrpc.errors.ConnectionClosedError`. Idempotent."""
        self._channel.close()


def connect(
    url: str,
    *,
    keyring: Keyring | None = None,
    cluster: str | None = None,
    node: str | None = None,
    timeout: float | None = 30.0,
    codec: str | int = "xmlrpc",
    insecure: bool = False,
    limits: Limits = DEFAULT_LIMITS,
    max_packet: int = DEFAULT_MAX_PACKET,
    credentials: tuple[str, str] | None = None,
) -> Client:
    """A blocking :class:`Client` for the endpoint ``url``.

    ``tcp://``, ``unix://`` and ``udp://`` endpoints speak signed packets: ``keyring`` signs
    the calls and verifies the answers, and ``cluster`` names the cluster (default: the
    keyring's ``cluster``). ``node`` is the name the calls are signed as (default: the keyring's
    node for ed25519 keys, else a unique ``client.HOST.PID.RANDOM``). ``insecure=True`` with no
    keyring sends unauthenticated packets, for explicitly insecure nodes only.

    ``http://`` and ``https://`` endpoints speak standard XML-RPC: any XML-RPC server works.
    ``credentials`` (or ``user:password@`` in the URL) is the HTTP Basic ``(user, password)``;
    without them, a ``keyring`` with keys gives a clusterrpc node's credentials (its signing
    key's token, ``spec/http.md``), so pass a keyring only to your own nodes.

    ``timeout``: the default per-call timeout in seconds (``None``: wait forever; UDP calls
    always need one). Nothing is connected until the first call. Raises
    :class:`~clusterrpc.errors.ConfigurationError` for a bad URL or configuration.
    """
    timeout = check_timeout(timeout)
    channel: BlockingChannel
    if url.lower().startswith(("http://", "https://")):
        # Imported on use: scripts that never speak HTTP do not load h11.
        from clusterrpc.transports.http import (  # noqa: PLC0415
            HttpBlockingChannel,
            http_credentials,
            split_userinfo,
        )

        url, in_url = split_userinfo(url)
        parse_address(url)  # the URL's errors, in the same words as for other schemes
        credentials = credentials or in_url
        if credentials is None and keyring is not None and keyring.keys:
            credentials = http_credentials(keyring)
        channel = HttpBlockingChannel(url, credentials=credentials, limits=limits)
        return Client(channel, timeout=timeout)
    address = parse_address(url)
    if address.multicast:
        raise ConfigurationError(f"{url} is a multicast group; connect() calls one endpoint")
    cluster = cluster or (keyring.cluster if keyring is not None else None)
    if not cluster:
        raise ConfigurationError(
            "connect() needs the cluster name: pass cluster=… or set `cluster` in the keyring"
        )
    messenger = Messenger(
        node=node or _client_name(keyring), cluster=cluster, keyring=keyring,
        insecure=insecure, codec=codec, limits=limits, max_packet=max_packet,
    )  # fmt: skip
    if address.stream:
        channel = BlockingStreamChannel(address, messenger)
    else:
        channel = BlockingDatagramChannel(address, messenger)
    return Client(channel, timeout=timeout)


class GroupClient(_BlockingRoot):
    """A blocking client of a whole group (build it with :func:`connect_group`).

    ``group.svc.method(*args, timeout=…, quorum=…)`` sends one datagram (one per member for a
    fan-out group) and returns a :class:`~clusterrpc.rpc.gather.GroupReplies` — member name →
    value or :class:`~clusterrpc.errors.Fault`, with ``missing`` naming the expected members
    that did not answer — as soon as every expected member answered, ``quorum`` answers
    arrived, or the timeout passed. ``group.oneway.svc.method(…)`` returns once sent.
    ``group.call("svc.method", *args, …)`` takes the name as a string. Thread-safe (calls take
    turns). Close it (or use ``with``) to release the socket.
    """

    __slots__ = ("_sender",)

    def __init__(self, sender: BlockingGroupSender, *, timeout: float | None) -> None:
        super().__init__(self._invoke)
        self._sender = sender
        self.timeout = timeout
        self.url = sender.url

    def _invoke(self, method: str, params: tuple[Any, ...], timeout: Any, oneway: bool, *,
                quorum: int | None = None) -> GroupReplies | None:
        timeout = self.timeout if timeout is DEFAULT else check_timeout(timeout)
        return self._sender.call(method, params, timeout=timeout, oneway=oneway, quorum=quorum)

    def call(self, method: str, *params: Value, timeout: Any = DEFAULT,
             quorum: int | None = None, oneway: bool = False) -> GroupReplies | None:
        """Call ``method`` by its full name on every member (see the class docstring);
        ``None`` for a one-way call."""
        return self._invoke(method, params, timeout, oneway, quorum=quorum)

    def close(self) -> None:
        """Close the socket; later calls raise
        :class:`~clusterrpc.errors.ConnectionClosedError`. Idempotent."""
        self._sender.close()


def connect_group(
    address: str | Sequence[str],
    *,
    keyring: Keyring | None = None,
    cluster: str | None = None,
    node: str | None = None,
    members: Sequence[str] | None = None,
    timeout: float | None = 5.0,
    codec: str | int = "xmlrpc",
    insecure: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> GroupClient:
    """A blocking :class:`GroupClient` for a group: a multicast ``udp://group:port?iface=…``
    URL, or a list of the members' unicast ``udp://`` URLs (fan-out).

    ``members``: the node names expected to answer, when known (then the calls report who did
    not answer, and return as soon as all did). ``timeout``: the default per-call timeout
    (required for calls that gather answers). ``keyring``, ``cluster``, ``node``, ``codec``
    and ``insecure`` as for :func:`connect`. Raises
    :class:`~clusterrpc.errors.ConfigurationError` for a bad address or configuration.
    """
    timeout = check_timeout(timeout)
    urls = [address] if isinstance(address, str) else list(address)
    addresses = [parse_address(url) for url in urls]
    multicast = addresses[0] if len(addresses) == 1 and addresses[0].multicast else None
    if multicast is not None:
        check_ipv4_group(multicast)
    elif not addresses or any(a.scheme != "udp" or a.multicast for a in addresses):
        raise ConfigurationError(
            "a group is one multicast udp:// URL (with ?iface=) or a list of unicast udp:// "
            "member URLs"
        )
    cluster = cluster or (keyring.cluster if keyring is not None else None)
    if not cluster:
        raise ConfigurationError(
            "connect_group() needs the cluster name: pass cluster=… or set `cluster` in the "
            "keyring"
        )
    messenger = Messenger(
        node=node or _client_name(keyring), cluster=cluster, keyring=keyring,
        insecure=insecure, codec=codec, limits=limits,
    )  # fmt: skip
    sender = BlockingGroupSender(addresses, messenger, multicast=multicast, members=members)
    return GroupClient(sender, timeout=timeout)
