"""Multicast calls: one datagram to a group, answers gathered from its members.

A group is either an IP multicast group (``udp://239.192.0.1:7401?iface=127.0.0.1``: the
interface is required and the TTL defaults to 1, so nothing leaves the local link unless asked)
or, for networks without IP multicast, a list of unicast ``udp://`` addresses (*fan-out*: the same
packet goes to each). Members answer by unicast to the caller's sending socket; the caller's
:class:`~clusterrpc.rpc.gather.GatherTracker` collects the answers by authenticated sender name.

* :class:`GroupMember` — a node's membership of a multicast group: a socket bound to the group
  port, joined on the configured interface, serving the calls that arrive. A member that does not
  publish the method stays silent (``spec/rpc.md``, "Multicast").
* :class:`GroupSender` — the socket a node sends one group's calls from (multicast options set:
  interface, TTL, loopback) and gathers their answers on.

IPv4 groups only for now: IPv6 membership is per interface *index*, which the URL does not name.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence

from clusterrpc.errors import (
    ConfigurationError,
    ConnectionClosedError,
)
from clusterrpc.packet import Header
from clusterrpc.rpc.gather import GroupReplies
from clusterrpc.rpc.protocol import Connection, GatherEnded, Messenger
from clusterrpc.transports.addresses import Address
from clusterrpc.transports.datagrams import MAX_DATAGRAM, DatagramEndpoint, SockAddr
from clusterrpc.transports.engine import Serving
from clusterrpc.transports.errors import CONNECTING, SENDING, map_os_errors
from clusterrpc.values import Value

__all__ = [
    "BlockingGroupSender",
    "GroupMember",
    "GroupSender",
    "check_ipv4_group",
]


def check_ipv4_group(address: Address) -> None:
    """Raise :class:`~clusterrpc.errors.ConfigurationError` unless ``address`` is an IPv4
    multicast group with an IPv4 interface address."""
    if not address.multicast:
        raise ConfigurationError(f"{address} is not a multicast group")
    try:
        socket.inet_aton(address.host or "")
        socket.inet_aton(address.iface or "")
    except OSError:
        raise ConfigurationError(
            f"{address}: only IPv4 multicast groups (with an IPv4 iface address) are supported"
        ) from None


class GroupMember(DatagramEndpoint):
    """A node's membership of the multicast group ``address`` (module docstring).

    ``own_call``: tells the node's own calls that asked to exclude it (they are then not
    served here). Several members may share one host and port (``SO_REUSEADDR``), as nodes on
    one machine do in tests; each receives every datagram.
    """

    def __init__(self, address: Address, messenger: Messenger, *, serving: Serving,
                 own_call: Callable[[Header], bool] | None = None,
                 receive_buffer: int = 4 << 20) -> None:
        check_ipv4_group(address)
        self._own_call = own_call
        super().__init__(address, messenger, serving=serving, receive_buffer=receive_buffer)

    def make_socket(self) -> socket.socket:
        address = self.address
        assert address.host is not None
        assert address.iface is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Bound to the group address, not INADDR_ANY: only this group's datagrams arrive.
            sock.bind((address.host, address.port or 0))
            membership = socket.inet_aton(address.host) + socket.inet_aton(address.iface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            # Answers leave by the same interface, with the same TTL rule.
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            socket.inet_aton(address.iface))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, address.ttl or 1)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def accepts_call(self, header: Header) -> bool:
        return not (self._own_call is not None and self._own_call(header))


class GroupSender(DatagramEndpoint):
    """The socket one group's calls leave from, and their answers arrive on.

    For a multicast group it is bound to the group's interface address with the group's TTL as
    its multicast TTL (and multicast loopback on, so members on this host hear it too). For a
    fan-out group it is bound to any address. ``destinations``: the group address, or the
    fan-out members' socket addresses. ``first_call_id``: where its call ids start (a node
    gives each of its groups its own range, so its own calls are told apart).
    """

    def __init__(self, address: Address, messenger: Messenger, *,
                 destinations: Sequence[SockAddr], multicast: Address | None,
                 first_call_id: int = 1, receive_buffer: int = 4 << 20) -> None:
        super().__init__(address, messenger, serving=None, receive_buffer=receive_buffer,
                         first_call_id=first_call_id)
        self.group = multicast
        self.destinations = list(destinations)

    def make_socket(self) -> socket.socket | None:
        group = self.group
        if group is None:
            return None
        return _multicast_sender_socket(group)

    def _check_open(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionClosedError(f"group socket {self.url} is closed")

    async def call_group(self, method: str, params: Sequence[Value], *, timeout: float | None,
                         expected: Collection[str] | None = None, quorum: int | None = None,
                         exclude: Callable[[int], None] | None = None) -> GroupReplies:
        """Send one call to the whole group and gather the answers (module docstring).

        ``exclude(call_id)`` is told the call id before sending, so the sending node can skip
        serving its own call. Raises :class:`~clusterrpc.errors.ConfigurationError` for a
        missing or bad ``timeout``, :class:`~clusterrpc.errors.EncodeError` for a payload that
        does not fit in a datagram (before anything is sent).
        """
        if timeout is None:
            raise ConfigurationError(
                "a multicast call needs a timeout: it cannot know who will answer"
            )
        self._check_open()
        return await self.driver.call_group(
            method, params, timeout=timeout, destinations=self.destinations,
            expected=expected, quorum=quorum, before_send=exclude,
        )  # fmt: skip

    async def oneway_group(self, method: str, params: Sequence[Value], *,
                           exclude: Callable[[int], None] | None = None) -> None:
        """Send a one-way call to the whole group: nothing comes back."""
        self._check_open()
        self.driver.send_group_oneway(method, params, destinations=self.destinations,
                                      before_send=exclude)


def _multicast_sender_socket(group: Address) -> socket.socket:
    """A UDP socket that sends to ``group``: bound to its interface, its TTL, loopback on (so
    members on this host hear it too). Raises ``OSError``."""
    assert group.iface is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                        socket.inet_aton(group.iface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, group.ttl or 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.bind((group.iface, 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class BlockingGroupSender:
    """Group calls from threads that block (``clusterrpc.connect_group``): one UDP socket,
    multicast options as :class:`GroupSender` sets them, answers read in the calling thread and
    gathered by a :class:`~clusterrpc.rpc.protocol.Connection`. Calls take turns (a lock)."""

    def __init__(self, addresses: Sequence[Address], messenger: Messenger, *,
                 multicast: Address | None, members: Collection[str] | None) -> None:
        self.addresses = list(addresses)
        self.multicast = multicast
        self.members = None if members is None else frozenset(members)
        self.messenger = messenger
        self.url = str(multicast) if multicast is not None else ", ".join(map(str, addresses))
        self.connection = Connection(messenger, dispatcher=None, transport="udp", stream=False,
                                     peer=self.url, max_datagram=MAX_DATAGRAM,
                                     gather_in_flight=1)
        self._socket: socket.socket | None = None
        self._destinations: list[SockAddr] = []
        self._lock = threading.Lock()
        self._closed = False

    def _open(self) -> socket.socket:
        group = self.multicast
        with map_os_errors(f"cannot open a socket for {self.url}", CONNECTING):
            if group is not None:
                sock = _multicast_sender_socket(group)
                sock.setblocking(True)
                self._destinations = [(group.host, group.port)]
                return sock
            destinations = [
                socket.getaddrinfo(address.host, address.port, socket.AF_INET,
                                   socket.SOCK_DGRAM)[0][4]
                for address in self.addresses
            ]
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.bind(("0.0.0.0", 0))  # noqa: S104 - port 0: it only receives answers
            except BaseException:
                sock.close()
                raise
            self._destinations = destinations
            return sock

    def _send(self, sock: socket.socket) -> None:
        with map_os_errors(f"sending to {self.url} failed", SENDING):
            for data, destination in self.connection.datagrams_to_send():
                sock.sendto(data, destination)

    def call(self, method: str, params: Sequence[Value], *, timeout: float | None,
             oneway: bool, quorum: int | None) -> GroupReplies | None:
        """Send the call; gather and return the answers (``None`` for one-way)."""
        with self._lock:
            if self._closed:
                raise ConnectionClosedError(f"group client for {self.url} closed")
            if self._socket is None:
                self._socket = self._open()
            sock = self._socket
            connection = self.connection
            if oneway:
                connection.send_group_oneway(method, params, destinations=self._destinations)
                self._send(sock)
                return None
            if timeout is None:
                raise ConfigurationError(
                    "a multicast call needs a timeout: it cannot know who will answer"
                )
            started = time.monotonic()
            call_id = connection.send_group_call(
                method, params, now=started, timeout=timeout, destinations=self._destinations,
                expected=self.members, quorum=quorum,
            )  # fmt: skip
            try:
                self._send(sock)
                return self._gather(sock, call_id, started + timeout)
            finally:
                connection.cancel(call_id)

    def _gather(self, sock: socket.socket, call_id: int, deadline: float) -> GroupReplies:
        connection = self.connection
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                connection.expire(deadline)
            else:
                sock.settimeout(left)
                try:
                    data, addr = sock.recvfrom(MAX_DATAGRAM + 1)
                except OSError:
                    # A timeout (the loop ends the call at its deadline), or an ICMP error for
                    # one fan-out member, which will then be missing.
                    continue
                connection.receive_datagram(data, addr, peer=f"{addr[0]}:{addr[1]}",
                                            now=time.monotonic())
            for event in connection.events_received():
                if type(event) is GatherEnded and event.call_id == call_id:
                    return event.replies
            if left <= 0:
                raise AssertionError("a gathered call outlived its deadline")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._socket is not None:
                self._socket.close()
                self._socket = None
