"""The UDP transport: one signed packet per datagram (``spec/packet.md``).

A :class:`DatagramEndpoint` is one UDP socket of a node. It serves the calls that arrive on it
(when it is a listening socket) and answers each to the datagram's source address; it also
sends the node's own UDP calls and receives their answers, matched by call id. One-way calls
are what UDP is best at: a datagram out, nothing back. Normal calls work too, for small calls
with a timeout: UDP may lose the call or its answer, so a lost datagram surfaces as
:class:`~clusterrpc.errors.CallTimeoutError` (calls are not retransmitted: a retried call could
run twice).

A datagram holds at most :data:`MAX_DATAGRAM` bytes; a larger call is refused with
:class:`~clusterrpc.errors.EncodeError` before sending, and a reply that would be larger is
replaced by a fault telling the caller to use a stream transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import typing
from collections.abc import Sequence
from typing import Any

from clusterrpc.errors import (
    CallTimeoutError,
    ClusterRPCError,
    ConfigurationError,
    ConnectionClosedError,
)
from clusterrpc.packet import Header
from clusterrpc.rpc.calls import value_of
from clusterrpc.rpc.protocol import Connection, Messenger
from clusterrpc.transports.addresses import Address
from clusterrpc.transports.base import AsyncChannel, BlockingChannel
from clusterrpc.transports.engine import AsyncDriver, Serving
from clusterrpc.transports.errors import (
    CONNECTING,
    LISTENING,
    SENDING,
    map_os_errors,
    translate,
)
from clusterrpc.transports.streams import limit_read_size
from clusterrpc.values import Value

__all__ = [
    "MAX_DATAGRAM",
    "BlockingDatagramChannel",
    "DatagramChannel",
    "DatagramEndpoint",
    "DatagramNetwork",
]

log = logging.getLogger("clusterrpc.transport")

MAX_DATAGRAM = 65507
"""The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers)."""

DRAIN_BATCH = 64
"""Datagrams an endpoint reads per event-loop wake-up at most (see ``DatagramEndpoint``)."""

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

SockAddr = tuple[Any, ...]


def _sockaddr_text(sockaddr: SockAddr) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class DatagramNetwork(typing.Protocol):
    """A simulated datagram network (e.g. :class:`clusterrpc.testing.MemoryNetwork`) that
    endpoints attach to instead of opening sockets."""

    def bind(self, endpoint: DatagramEndpoint) -> None:
        """Attach ``endpoint`` at ``endpoint.address`` (port 0: pick one; a multicast address:
        join that group): call ``endpoint.connection_made(transport)`` with a transport whose
        ``sendto(data, addr)`` delivers through the network, and ``endpoint.bound_to(address)``.
        Raises :class:`~clusterrpc.errors.TransportError` if the address is taken."""


class DatagramEndpoint(asyncio.DatagramProtocol):
    """One UDP socket of a node (see the module docstring): one
    :class:`~clusterrpc.rpc.protocol.Connection` in datagram mode, driven on the event loop.

    ``address``: where to bind (``udp://host:port``; port 0 for any). ``serving``: serves
    incoming calls; ``None`` for a client-only socket, which drops calls (counted as
    ``unexpected``). ``max_in_flight``: normal calls waiting for answers at once.
    ``receive_buffer``: the socket's receive buffer in bytes (``SO_RCVBUF``), asked of the
    kernel, which caps it (``net.core.rmem_max``): datagrams that arrive while it is full are
    lost, so a node receiving bursts of one-way calls wants a large one. ``first_call_id``:
    where this socket's call ids start. ``sock``: an already bound UDP socket to serve on instead
    of binding ``address`` (one a service manager passed, ``spec/systemd.md``); the endpoint
    owns it from :meth:`start` on.

    When woken for a datagram, the endpoint also reads the ones already queued behind it (up
    to :data:`DRAIN_BATCH`), instead of asyncio's one per event-loop turn, and writes the
    answers of the whole batch at once: this is what lets a caller gather the answers of a
    large group quickly.
    """

    def __init__(self, address: Address, messenger: Messenger, *,
                 serving: Serving | None, max_in_flight: int = 256,
                 receive_buffer: int = 4 << 20, first_call_id: int = 1,
                 sock: socket.socket | None = None) -> None:
        if address.scheme != "udp":
            raise ConfigurationError(f"{address} is not a UDP address")
        if sock is not None and sock.type != socket.SOCK_DGRAM:
            raise ConfigurationError(f"the socket given for {address} is not a UDP socket")
        self.address = address
        self.given_socket = sock
        """The socket given to serve on (``sock``), or ``None``."""
        self.messenger = messenger
        filtered = type(self).accepts_call is not DatagramEndpoint.accepts_call
        self.connection = Connection(
            messenger, dispatcher=None if serving is None else serving.dispatcher,
            transport="udp", stream=False, max_in_flight=max_in_flight,
            max_running=1 << 30,  # a datagram socket has no backlog to hold: UDP drops
            max_datagram=MAX_DATAGRAM, accept_call=self.accepts_call if filtered else None,
            first_call_id=first_call_id,
        )  # fmt: skip
        self.driver = AsyncDriver(self.connection, flush=self._flush, serving=serving)
        self.transport: asyncio.DatagramTransport | None = None
        self.send_errors = 0
        self.closed = False
        self.receive_buffer = receive_buffer
        self.network: DatagramNetwork | None = None
        """Set before :meth:`start` to attach to a simulated network instead of a socket."""
        self._bound: Address | None = None
        self._drain_socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """The address actually bound (port 0 resolved)."""
        return str(self._bound or self.address)

    @property
    def family(self) -> int:
        """The socket's address family (``AF_INET`` or ``AF_INET6``)."""
        host = (self._bound or self.address).host or ""
        return int(socket.AF_INET6 if ":" in host else socket.AF_INET)

    def bound_to(self, address: Address) -> None:
        """Record the address actually bound (a simulated network calls this)."""
        self._bound = address

    def make_socket(self) -> socket.socket | None:
        """A ready socket for :meth:`start`, or ``None`` to bind :attr:`address` plainly
        (subclasses for multicast prepare theirs). May raise ``OSError``."""
        return None

    async def start(self) -> None:
        """Bind the socket. Raises :class:`~clusterrpc.errors.TransportError` if it cannot."""
        if self.network is not None:
            self.network.bind(self)
            return
        loop = asyncio.get_running_loop()
        host, port = self.address.host, self.address.port
        assert host is not None
        assert port is not None
        with map_os_errors(f"cannot listen on {self.address}", LISTENING):
            sock = (self.given_socket or self.make_socket()
                    or await _bound_udp_socket(host, port))
            sock.setblocking(False)
        with contextlib.suppress(OSError):  # a buffer size the kernel refuses is not fatal
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        try:
            await loop.create_datagram_endpoint(lambda: self, sock=sock)
        except BaseException:
            sock.close()
            raise
        assert self.transport is not None
        if _DONTWAIT and sock.fileno() >= 0:  # a loop that took the descriptor over: no drain
            self._drain_socket = sock
        host, port = self.transport.get_extra_info("sockname")[:2]
        self._bound = (self.address if self.address.multicast
                       else Address("udp", host=host, port=port))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance() check: some loops' datagram transports do not subclass it.
        self.transport = typing.cast(asyncio.DatagramTransport, transport)
        limit_read_size(transport, MAX_DATAGRAM + 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._drain_socket = None  # the transport closed it
        self.driver.close(ConnectionClosedError(f"UDP socket {self.url} closed"))

    def error_received(self, exc: Exception) -> None:
        # An ICMP error for an earlier datagram (e.g. port unreachable). UDP cannot tell which
        # call it belongs to; the call times out. Count it for diagnosis.
        self.send_errors += 1
        log.debug("UDP socket %s: %s", self.url, exc)

    def datagram_received(self, data: bytes, addr: SockAddr) -> None:
        connection = self.connection
        now = asyncio.get_running_loop().time()
        connection.receive_datagram(data, addr, peer=_sockaddr_text(addr), now=now)
        if self._drain_socket is not None:
            self._drain(self._drain_socket, connection, now)
        self.driver.process()

    def _drain(self, sock: socket.socket, connection: Connection, now: float) -> None:
        # asyncio reads one datagram per event-loop turn; the answers to a multicast call
        # arrive together, and a full loop turn for each costs more than handling it. Read what
        # is already queued, never blocking (MSG_DONTWAIT), at most DRAIN_BATCH per wake-up so
        # that a flood on this socket cannot starve the loop's other work.
        for _ in range(DRAIN_BATCH):
            if self.closed:
                return
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM + 1, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # e.g. an ICMP error queued for an earlier datagram
                self.error_received(error)
                return
            connection.receive_datagram(data, addr, peer=_sockaddr_text(addr), now=now)

    def accepts_call(self, header: Header) -> bool:
        """Whether to serve this authentic call (subclasses filter; here: all)."""
        return True

    def _flush(self) -> None:
        datagrams = self.connection.datagrams_to_send()
        transport = self.transport
        if not datagrams or transport is None or transport.is_closing():
            return
        for data, destination in datagrams:
            transport.sendto(data, destination)

    async def call(self, destination: SockAddr, method: str, params: Sequence[Value], *,
                   timeout: float | None, oneway: bool = False) -> Value:
        """Call ``method`` at ``destination`` (a resolved socket address); contract as
        :meth:`clusterrpc.transports.base.AsyncChannel.call`. A normal call without a
        ``timeout`` is refused: over UDP a lost datagram would make it wait forever."""
        if self.closed or self.transport is None:
            raise ConnectionClosedError(f"UDP socket {self.url} is closed")
        if timeout is None and not oneway:
            raise ConfigurationError(
                "a UDP call needs a timeout: a lost datagram is never reported otherwise"
            )
        driver = self.driver
        if not oneway and not self.connection.has_capacity:
            try:
                async with asyncio.timeout(timeout):
                    await driver.wait_for_slot()
            except TimeoutError:
                raise CallTimeoutError(
                    f"call to {method!r} could not start within {timeout:g} s"
                ) from None
        return await driver.call(method, params, timeout=timeout, oneway=oneway,
                                 destinations=(destination,))

    async def wait_idle(self) -> None:
        """Return once no call of this socket waits for an answer (the caller bounds it)."""
        await self.driver.wait_idle()

    def close(self) -> None:
        """Close the socket; calls still waiting fail with
        :class:`~clusterrpc.errors.ConnectionClosedError`."""
        self.closed = True
        self.driver.close(ConnectionClosedError(f"UDP socket {self.url} closed"))
        if self.transport is not None:
            self.transport.close()


async def _bound_udp_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host``:``port`` (a name is resolved; the first
    address that binds wins, as asyncio's ``local_addr`` does). Raises ``OSError``."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                   flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"{host} has no address")
    last: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.bind(sockaddr)
            sock.setblocking(False)
        except OSError as error:
            sock.close()
            last = error
            continue
        return sock
    assert last is not None
    raise last


async def resolve_udp(address: Address) -> SockAddr:
    """The socket address of a ``udp://host:port`` URL (names are resolved, first result).
    Raises :class:`~clusterrpc.errors.ConnectError` if the name does not resolve."""
    loop = asyncio.get_running_loop()
    with map_os_errors(f"cannot resolve {address}", CONNECTING):
        infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_DGRAM)
    return tuple(infos[0][4])


class DatagramChannel(AsyncChannel):
    """Calls to one ``udp://`` endpoint through a node's :class:`DatagramEndpoint`."""

    def __init__(self, address: Address, endpoint_for: Any) -> None:
        self.address = address
        self.url = str(address)
        self._endpoint_for = endpoint_for  # async (family) -> DatagramEndpoint
        self._destination: SockAddr | None = None

    async def call(
        self, method: str, params: Sequence[Value], *, timeout: float | None,
        oneway: bool = False,
    ) -> Value:
        if self._destination is None:
            self._destination = await resolve_udp(self.address)
        family = socket.AF_INET6 if len(self._destination) == 4 else socket.AF_INET
        endpoint: DatagramEndpoint = await self._endpoint_for(family)
        return await endpoint.call(self._destination, method, params, timeout=timeout,
                                   oneway=oneway)

    async def aclose(self) -> None:
        """Nothing to close: the endpoint belongs to the node."""


class BlockingDatagramChannel(BlockingChannel):
    """Calls to one ``udp://`` endpoint from threads that block: a connected UDP socket of
    its own (so only the endpoint's datagrams are received) and a
    :class:`~clusterrpc.rpc.protocol.Connection` in datagram mode. Calls take turns (a
    lock)."""

    def __init__(self, address: Address, messenger: Messenger) -> None:
        if address.scheme != "udp" or address.multicast:
            raise ConfigurationError(f"{address} is not a unicast UDP address")
        self.address = address
        self.url = str(address)
        self.messenger = messenger
        self.connection = Connection(messenger, dispatcher=None, transport="udp", stream=False,
                                     peer=self.url, max_in_flight=1, max_datagram=MAX_DATAGRAM)
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _open_socket(self) -> socket.socket:
        with map_os_errors(f"cannot reach {self.url}", CONNECTING):
            infos = socket.getaddrinfo(self.address.host, self.address.port,
                                       type=socket.SOCK_DGRAM)
            family, kind, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, kind, proto)
            try:
                sock.connect(sockaddr)
            except BaseException:
                sock.close()
                raise
        return sock

    def call(
        self, method: str, params: Sequence[Value], *, timeout: float | None,
        oneway: bool = False,
    ) -> Value:
        if timeout is None and not oneway:
            raise ConfigurationError(
                "a UDP call needs a timeout: a lost datagram is never reported otherwise"
            )
        with self._lock:
            if self._closed:
                raise ConnectionClosedError(f"channel to {self.url} closed")
            if self._socket is None:
                self._socket = self._open_socket()
            sock = self._socket
            connection = self.connection
            now = time.monotonic()
            call_id = connection.send_call(method, params, now=now, timeout=timeout,
                                           oneway=oneway)
            try:
                for data, _ in connection.datagrams_to_send():
                    sock.send(data)
                if oneway:
                    return None
                assert timeout is not None
                return self._await_answer(sock, call_id, now + timeout)
            except ClusterRPCError:
                raise
            except TimeoutError:
                raise CallTimeoutError(
                    f"call to {method!r} at {self.url} got no reply within {timeout:g} s"
                ) from None
            except OSError as error:
                raise translate(error, f"UDP call to {self.url}", SENDING) from error
            finally:
                connection.cancel(call_id)

    def _await_answer(self, sock: socket.socket, call_id: int, deadline: float) -> Value:
        connection = self.connection
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            data = sock.recv(MAX_DATAGRAM + 1)
            connection.receive_datagram(data, None, peer=self.url, now=time.monotonic())
            outcome = connection.answer_of(call_id)
            if outcome is not None:
                return value_of(outcome)
            # Anything else: a late answer to an earlier call (counted, dropped), a refused
            # packet, or a call (this side serves none).

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    self._socket.close()
                self._socket = None
