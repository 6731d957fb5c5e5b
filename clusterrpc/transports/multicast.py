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

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence

from clusterrpc.codecs import CallMessage, FaultMessage, ReplyMessage
from clusterrpc.envelope import ReceivedPacket
from clusterrpc.errors import (
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    DecodeError,
    EncodeError,
    TransportError,
)
from clusterrpc.packet import CALL, Header
from clusterrpc.rpc.gather import GatherTracker, GroupReplies
from clusterrpc.transports.addresses import Address
from clusterrpc.transports.datagrams import MAX_DATAGRAM, DatagramEndpoint, SockAddr
from clusterrpc.transports.engine import CallServer, DeadlineTimer, Messenger
from clusterrpc.transports.streams import describe_os_error
from clusterrpc.values import Value

__all__ = [
    "BlockingGroupSender",
    "GatherCalls",
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

    def __init__(self, address: Address, messenger: Messenger, *, call_server: CallServer,
                 own_call: Callable[[Header], bool] | None = None,
                 receive_buffer: int = 4 << 20) -> None:
        check_ipv4_group(address)
        super().__init__(address, messenger, call_server=call_server,
                         receive_buffer=receive_buffer)
        self._own_call = own_call

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


class GatherCalls:
    """The asyncio side of a :class:`~clusterrpc.rpc.gather.GatherTracker`: one future per
    multicast call and one deadline timer. One event loop."""

    def __init__(self, *, max_in_flight: int = 64, first_call_id: int = 1) -> None:
        self.tracker = GatherTracker(max_in_flight=max_in_flight, first_call_id=first_call_id)
        self._waiters: dict[int, asyncio.Future[GroupReplies]] = {}
        self._timer = DeadlineTimer(self.tracker.next_deadline, self._expire)

    def start(self, method: str, *, timeout: float, expected: Collection[str] | None,
              quorum: int | None) -> tuple[int, asyncio.Future[GroupReplies]]:
        loop = asyncio.get_running_loop()
        call_id = self.tracker.start(method, now=loop.time(), timeout=timeout,
                                     expected=expected, quorum=quorum)
        waiter: asyncio.Future[GroupReplies] = loop.create_future()
        self._waiters[call_id] = waiter
        self._timer.arm()
        return call_id, waiter

    def answer(self, call_id: int, sender: str, message: ReplyMessage | FaultMessage) -> None:
        """Record ``sender``'s answer; settle the call's future if it is now complete."""
        result = self.tracker.receive(call_id, sender, message)
        if result is not None:
            self._settle(call_id, result)

    def cancel(self, call_id: int) -> None:
        self.tracker.cancel(call_id)
        self._waiters.pop(call_id, None)

    def close(self, error: Exception) -> None:
        self._timer.cancel()
        for call_id, waiter in list(self._waiters.items()):
            self.tracker.cancel(call_id)
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()

    def _settle(self, call_id: int, result: GroupReplies) -> None:
        waiter = self._waiters.pop(call_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def _expire(self, now: float) -> None:
        for call_id, result in self.tracker.expire(now):
            self._settle(call_id, result)


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
                 max_in_flight: int = 64, first_call_id: int = 1,
                 receive_buffer: int = 4 << 20) -> None:
        super().__init__(address, messenger, call_server=None, receive_buffer=receive_buffer)
        self.group = multicast
        self.destinations = list(destinations)
        self.gather = GatherCalls(max_in_flight=max_in_flight, first_call_id=first_call_id)
        self.replies_dropped = 0
        self._oneway_ids = 0

    def make_socket(self) -> socket.socket | None:
        group = self.group
        if group is None:
            return None
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

    def answer_received(self, packet: ReceivedPacket) -> None:
        header = packet.header
        if header.call_id not in self.gather.tracker:
            if header.call_id in self.pending.tracker:
                super().answer_received(packet)
                return
            self.gather.tracker.late_replies += 1  # after the deadline, or a duplicate's echo
            return
        try:
            message = self.messenger.decode_answer(packet)
        except DecodeError:
            self.replies_dropped += 1
            return
        self.gather.answer(header.call_id, header.sender, message)

    def _send_all(self, packet: bytes, method: str) -> None:
        if len(packet) > MAX_DATAGRAM:
            raise EncodeError(
                f"multicast call to {method!r} of {len(packet)} bytes does not fit in one "
                f"datagram ({MAX_DATAGRAM} bytes at most); multicast payloads must be small"
            )
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionClosedError(f"group socket {self.url} is closed")
        for destination in self.destinations:
            transport.sendto(packet, destination)

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
        call_id, waiter = self.gather.start(method, timeout=timeout, expected=expected,
                                            quorum=quorum)
        try:
            packet = self.messenger.seal_call(call_id, CallMessage(method, tuple(params)),
                                              multicast=True, timeout=timeout)
            if exclude is not None:
                exclude(call_id)
            self._send_all(packet, method)
        except BaseException:
            self.gather.cancel(call_id)
            raise
        try:
            return await waiter
        except asyncio.CancelledError:
            self.gather.cancel(call_id)
            raise

    async def oneway_group(self, method: str, params: Sequence[Value], *,
                           exclude: Callable[[int], None] | None = None) -> None:
        """Send a one-way call to the whole group: nothing comes back."""
        # Ids of their own (the top half of the id space): no answer is ever matched to them.
        self._oneway_ids = self._oneway_ids % (1 << 63) + 1
        call_id = (1 << 63) + self._oneway_ids
        packet = self.messenger.seal_call(call_id, CallMessage(method, tuple(params)),
                                          oneway=True, multicast=True)
        if exclude is not None:
            exclude(call_id)
        self._send_all(packet, method)

    def close(self) -> None:
        self.gather.close(ConnectionClosedError(f"group socket {self.url} closed"))
        super().close()



class BlockingGroupSender:
    """Group calls from threads that block (``clusterrpc.connect_group``): one UDP socket,
    multicast options as :class:`GroupSender` sets them, answers read in the calling thread and
    gathered by a :class:`~clusterrpc.rpc.gather.GatherTracker`. Calls take turns (a lock)."""

    def __init__(self, addresses: Sequence[Address], messenger: Messenger, *,
                 multicast: Address | None, members: Collection[str] | None) -> None:
        self.addresses = list(addresses)
        self.multicast = multicast
        self.members = None if members is None else frozenset(members)
        self.messenger = messenger
        self.url = str(multicast) if multicast is not None else ", ".join(map(str, addresses))
        self.tracker = GatherTracker(max_in_flight=1)
        self._socket: socket.socket | None = None
        self._destinations: list[SockAddr] = []
        self._lock = threading.Lock()
        self._closed = False
        self._oneway_ids = 0

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            group = self.multicast
            if group is not None:
                assert group.iface is not None
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                socket.inet_aton(group.iface))
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, group.ttl or 1)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                sock.bind((group.iface, 0))
                self._destinations = [(group.host, group.port)]
            else:
                sock.bind(("0.0.0.0", 0))  # noqa: S104 - port 0: it only receives answers
                self._destinations = [
                    socket.getaddrinfo(address.host, address.port, socket.AF_INET,
                                       socket.SOCK_DGRAM)[0][4]
                    for address in self.addresses
                ]
        except OSError as error:
            sock.close()
            raise ConnectError(
                f"cannot open a socket for {self.url}: {describe_os_error(error)}"
            ) from error
        return sock

    def _send(self, sock: socket.socket, packet: bytes, method: str) -> None:
        if len(packet) > MAX_DATAGRAM:
            raise EncodeError(
                f"multicast call to {method!r} of {len(packet)} bytes does not fit in one "
                f"datagram ({MAX_DATAGRAM} bytes at most); multicast payloads must be small"
            )
        for destination in self._destinations:
            try:
                sock.sendto(packet, destination)
            except OSError as error:
                raise TransportError(
                    f"sending to {self.url} failed: {describe_os_error(error)}"
                ) from error

    def call(self, method: str, params: Sequence[Value], *, timeout: float | None,
             oneway: bool, quorum: int | None) -> GroupReplies | None:
        """Send the call; gather and return the answers (``None`` for one-way)."""
        with self._lock:
            if self._closed:
                raise ConnectionClosedError(f"group client for {self.url} closed")
            if self._socket is None:
                self._socket = self._open()
            sock = self._socket
            message = CallMessage(method, tuple(params))
            if oneway:
                self._oneway_ids = self._oneway_ids % (1 << 63) + 1
                packet = self.messenger.seal_call((1 << 63) + self._oneway_ids, message,
                                                  oneway=True, multicast=True)
                self._send(sock, packet, method)
                return None
            if timeout is None:
                raise ConfigurationError(
                    "a multicast call needs a timeout: it cannot know who will answer"
                )
            started = time.monotonic()
            call_id = self.tracker.start(method, now=started, timeout=timeout,
                                         expected=self.members, quorum=quorum)
            try:
                packet = self.messenger.seal_call(call_id, message, multicast=True,
                                                  timeout=timeout)
                self._send(sock, packet, method)
                return self._gather(sock, call_id, started + timeout)
            finally:
                self.tracker.cancel(call_id)

    def _gather(self, sock: socket.socket, call_id: int, deadline: float) -> GroupReplies:
        messenger = self.messenger
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                for ended, result in self.tracker.expire(deadline):
                    if ended == call_id:
                        return result
                raise AssertionError("a gathered call outlived its deadline")
            sock.settimeout(left)
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM + 1)
            except TimeoutError:
                continue
            except OSError:
                continue  # an ICMP error for one fan-out member: it will be missing
            packet = messenger.open(data, peer=f"{addr[0]}:{addr[1]}")
            if packet is None or packet.header.flags & CALL:
                continue
            try:
                answer = messenger.decode_answer(packet)
            except DecodeError:
                continue
            done = self.tracker.receive(packet.header.call_id, packet.header.sender, answer)
            if done is not None and packet.header.call_id == call_id:
                return done

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._socket is not None:
                self._socket.close()
                self._socket = None
