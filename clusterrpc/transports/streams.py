"""TCP and Unix-stream transports: length-prefixed packets on a connection (``spec/packet.md``,
"Framing"), many calls in flight per connection, answers matched by call id in any order.

Every connection, accepted or made, is one :class:`~clusterrpc.rpc.protocol.Connection` driven
by an :class:`asyncio.Protocol` (:class:`StreamProtocol`): it serves the calls that arrive and
carries the calls this side makes, both ways at once. Server side (:class:`StreamServer`):
back-pressure — when a connection has ``max_in_flight`` calls of ``async`` methods still running,
or the peer does not read its answers (the write buffer is full), the server stops reading from
that connection until it catches up. Plain methods run inline in arrival order, so one-way calls
on one connection run in the order they were sent (``async`` ones *start* in that order). A frame
over ``max_frame`` breaks framing: the connection is closed (counted as ``refused_malformed``); a
packet that fails authentication is dropped, and the connection keeps serving.

Client side: :class:`StreamChannel` (asyncio; it serves the calls the server makes back on the
same connection when its node gives it a dispatcher) and :class:`BlockingStreamChannel` (a
blocking socket, for ``clusterrpc.connect``) use one connection per endpoint, made on first use
and remade after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from clusterrpc.errors import (
    CallTimeoutError,
    ClusterRPCError,
    ConfigurationError,
    ConnectionClosedError,
    ConnectionLostError,
    TransportError,
)
from clusterrpc.rpc.calls import value_of
from clusterrpc.rpc.protocol import Connection, Messenger
from clusterrpc.transports.addresses import Address
from clusterrpc.transports.base import AsyncChannel, BlockingChannel
from clusterrpc.transports.engine import AsyncDriver, Serving
from clusterrpc.transports.errors import (
    CONNECTING,
    CONNECTION_LOST,
    EXCHANGING,
    LISTENING,
    map_os_errors,
    translate,
)
from clusterrpc.values import Value

__all__ = [
    "BlockingStreamChannel",
    "StreamChannel",
    "StreamServer",
    "limit_read_size",
]

log = logging.getLogger("clusterrpc.transport")


def limit_read_size(transport: asyncio.BaseTransport, size: int) -> None:
    """Make the selector loop's transport read at most ``size`` bytes at a time.

    asyncio reads into a fresh 256 KiB buffer for every datagram or stream read and then
    shrinks it; with glibc's allocator that costs up to ~40 µs per packet, more than opening the
    packet. ``max_size`` is an undocumented attribute of those transports, so it is set only
    where it exists (other loops, e.g. uvloop, manage their buffers themselves).
    """
    if isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = size  # type: ignore[attr-defined]


STREAM_READ_SIZE = 65536
"""Bytes a stream connection reads at a time (see :func:`limit_read_size`)."""


def _peer_text(address: Address, peername: Any) -> str:
    if address.scheme == "unix":
        return f"unix:{address.path}"
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(peername)


# -- one connection, either side --------------------------------------------------------------


class StreamProtocol(asyncio.BufferedProtocol):
    """One stream connection on the event loop: bytes into its
    :class:`~clusterrpc.rpc.protocol.Connection`, what it queues written out.

    Reads go into one preallocated buffer (no allocation per read). ``accepted``: the server's
    side of a connection, which stops reading while the peer does not read its answers (the
    caller's side never does: it would stop reading the answers its own writes wait for).
    """

    def __init__(self, connection: Connection, *, serving: Serving | None, accepted: bool,
                 on_lost: Any = None) -> None:
        self.connection = connection
        self.driver = AsyncDriver(connection, flush=self._flush, serving=serving,
                                  broken=self._broken)
        self.accepted = accepted
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.closing = False
        self.read_paused = False
        self.write_paused = False
        self.write_ready: asyncio.Future[None] | None = None
        self._buffer = bytearray(STREAM_READ_SIZE)
        self._view = memoryview(self._buffer)
        self._on_lost = on_lost  # (protocol, exc) -> error for calls in flight, or None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    @property
    def usable(self) -> bool:
        """Whether calls may still be written on this connection."""
        return (not self.lost and not self.closing and self.transport is not None
                and not self.transport.is_closing())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        connection = self.connection
        connection.receive_data(self._view[:nbytes], now=asyncio.get_running_loop().time())
        self.driver.process()
        if connection.paused:
            self._pause_reading()

    def _flush(self) -> None:
        data = self.connection.data_to_send()
        if data and self.transport is not None and not self.lost:
            self.transport.write(data)
        if self.read_paused and not self.connection.paused and not self.write_paused:
            self._resume_reading()

    def _broken(self, error: ClusterRPCError) -> None:
        log.warning("closing connection with %s: %s", self.connection.peer, error)
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        if self.connection.buffered:
            log.debug("connection with %s ended inside a frame (%d bytes dropped)",
                      self.connection.peer, self.connection.buffered)
        # The peer closed its side (it stopped, or dropped an idle connection): close ours
        # too; calls in flight fail in connection_lost, and a client's next call reconnects.
        self.lost = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        # Served calls still running are left to finish (a one-way call may be followed at
        # once by the sender's close, and stopping a method halfway is worse than finishing
        # it); their answers go nowhere.
        self.lost = True
        if self._on_lost is not None:
            error = self._on_lost(self, exc)
        elif isinstance(exc, OSError):
            error = translate(exc, f"connection with {self.connection.peer} lost",
                              CONNECTION_LOST)
        elif exc is not None:
            error = ConnectionLostError(f"connection with {self.connection.peer} lost: {exc}")
            error.__cause__ = exc
        else:
            error = ConnectionLostError(f"{self.connection.peer} closed the connection")
        self.driver.close(error)
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.accepted:
            self._pause_reading()  # the peer does not read its answers: take no new calls
        if self.write_ready is None or self.write_ready.done():
            self.write_ready = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)
        if self.read_paused and not self.connection.paused:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.lost:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.lost:
            self.read_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close the connection (answers already written are sent first)."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()


# -- server ------------------------------------------------------------------------------------


class StreamServer:
    """Listens on a ``tcp://`` or ``unix://`` address and serves calls (module docstring).

    ``serving``: the node's messenger, dispatcher and running calls. ``max_in_flight``: calls of
    ``async`` methods running per connection before the server stops reading from it (and calls
    the server makes back on the connection). ``max_frame``: the largest packet accepted. For a
    Unix socket, a stale socket file left by a dead process is replaced; a socket someone still
    listens on is not.

    ``sock``: an already bound, listening socket to serve on instead of binding ``address``
    (one a service manager passed, ``spec/systemd.md``); ``address`` must then be where it is
    bound. The server owns it from :meth:`start` on (closing the server closes it) but never
    removes its Unix socket file: the socket's file belongs to whoever bound it.
    """

    def __init__(self, address: Address, serving: Serving, *, max_in_flight: int = 256,
                 max_frame: int, sock: socket.socket | None = None) -> None:
        if not address.stream:
            raise ConfigurationError(f"{address} is not a stream address")
        self.address = address
        self.given_socket = sock
        """The socket given to serve on (``sock``), or ``None``."""
        self.serving = serving
        self.max_in_flight = max_in_flight
        self.max_frame = max_frame
        self.connections: set[StreamProtocol] = set()
        self._server: asyncio.Server | None = None
        self._bound: Address | None = None

    @property
    def url(self) -> str:
        """The address actually bound (port 0 resolved); the configured one before start."""
        return str(self._bound or self.address)

    def _accept(self) -> StreamProtocol:
        return _AcceptedProtocol(self)

    async def start(self) -> None:
        """Bind and listen. Raises :class:`~clusterrpc.errors.TransportError` (with the
        ``OSError`` as cause) when the address cannot be bound."""
        loop = asyncio.get_running_loop()
        address = self.address
        with map_os_errors(f"cannot listen on {address}", LISTENING):
            given = self.given_socket
            if given is not None:
                # The socket listens already; asyncio's listen() again only sets the backlog.
                if address.scheme == "unix":
                    if sys.version_info >= (3, 13):
                        # 3.13 unlinks a Unix server's path on close by default: the path of
                        # an inherited socket is its service manager's, kept for the next
                        # activation (spec/systemd.md).
                        self._server = await loop.create_unix_server(
                            self._accept, sock=given, cleanup_socket=False)
                    else:
                        self._server = await loop.create_unix_server(self._accept, sock=given)
                    self._bound = address
                else:
                    self._server = await loop.create_server(self._accept, sock=given)
                    host, port = self._server.sockets[0].getsockname()[:2]
                    self._bound = Address("tcp", host=host, port=port)
            elif address.scheme == "unix":
                assert address.path is not None
                _remove_stale_socket(address.path)
                self._server = await loop.create_unix_server(self._accept, address.path)
                self._bound = address
            else:
                assert address.port is not None
                self._server = await loop.create_server(
                    self._accept, address.host, address.port, reuse_address=True,
                )  # fmt: skip
                host, port = self._server.sockets[0].getsockname()[:2]
                self._bound = Address("tcp", host=host, port=port)

    def stop_accepting(self) -> None:
        """Stop accepting connections (those open keep being served)."""
        if self._server is not None:
            self._server.close()

    async def close(self) -> None:
        """Stop accepting, close every connection, remove a Unix socket file."""
        self.stop_accepting()
        for connection in list(self.connections):
            connection.close()
        if self._server is not None:
            # Server.wait_closed() waits for connections only from 3.12.1 on; bound it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None
        if self.address.scheme == "unix" and self.address.path and self.given_socket is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address.path)


class _AcceptedProtocol(StreamProtocol):
    """A connection :class:`StreamServer` accepted."""

    def __init__(self, server: StreamServer) -> None:
        serving = server.serving
        connection = Connection(
            serving.messenger, dispatcher=serving.dispatcher, transport=server.address.scheme,
            max_in_flight=server.max_in_flight, max_running=server.max_in_flight,
            max_frame=server.max_frame,
        )  # fmt: skip
        super().__init__(connection, serving=serving, accepted=True)
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.connection.peer = _peer_text(self.server.address,
                                          transport.get_extra_info("peername"))
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        super().connection_lost(exc)


def _remove_stale_socket(path: str) -> None:
    """Remove ``path`` if it is a socket nobody listens on (left by a process that died)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigurationError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: nobody accepts on it
    except OSError:
        pass  # let the bind report the real problem
    else:
        raise TransportError(f"cannot listen on unix:{path}: another process listens there")
    finally:
        probe.close()


# -- asyncio client ----------------------------------------------------------------------------


class StreamChannel(AsyncChannel):
    """Calls over one TCP or Unix-stream connection, for asyncio code (contract:
    :mod:`clusterrpc.transports.base`).

    Many calls share the connection; up to ``max_in_flight`` wait for answers at once, and
    further calls wait for a free slot (within their own timeout). The connection is made on
    first use and remade by the next call after it broke; calls that were in flight when it
    broke fail with :class:`~clusterrpc.errors.ConnectionLostError`. One-way calls are written
    in call order and return once written (waiting while the socket's buffer is full).
    ``serving``: when given, calls the server makes back on this connection are served with
    the node's methods (else they are dropped, counted as ``unexpected``).

    A peer may close an idle connection at any time (a node stopping does). The channel notices
    when the event loop delivers the close; a call made in the instant before that is written to
    the closing connection and fails with ``ConnectionLostError`` (it did not run), and the
    next call connects again.
    """

    def __init__(self, address: Address, messenger: Messenger, *,
                 max_in_flight: int = 256, serving: Serving | None = None) -> None:
        if not address.stream:
            raise ConfigurationError(f"{address} is not a stream address")
        self.address = address
        self.url = str(address)
        self.messenger = messenger
        self.max_in_flight = max_in_flight
        self.serving = serving
        self.protocol: StreamProtocol | None = None
        self.closed = False
        self._connecting: asyncio.Future[StreamProtocol] | None = None

    def _new_protocol(self) -> StreamProtocol:
        serving = self.serving
        connection = Connection(
            self.messenger, dispatcher=None if serving is None else serving.dispatcher,
            transport=self.address.scheme, peer=self.url, max_in_flight=self.max_in_flight,
            max_running=self.max_in_flight,
        )  # fmt: skip
        return StreamProtocol(connection, serving=serving, accepted=False,
                              on_lost=self._lost)

    def _lost(self, protocol: StreamProtocol, exc: Exception | None) -> ClusterRPCError:
        if self.protocol is protocol:
            self.protocol = None
        if self.closed:
            return ConnectionClosedError(f"channel to {self.url} closed")
        if isinstance(exc, OSError):
            return translate(exc, f"connection to {self.url} lost", CONNECTION_LOST)
        if exc is not None:
            error = ConnectionLostError(f"connection to {self.url} lost: {exc}")
            error.__cause__ = exc
            return error
        return ConnectionLostError(f"{self.url} closed the connection")

    async def _connect(self) -> StreamProtocol:
        loop = asyncio.get_running_loop()
        address = self.address
        with map_os_errors(f"cannot connect to {self.url}", CONNECTING):
            if address.scheme == "unix":
                assert address.path is not None
                _, protocol = await loop.create_unix_connection(self._new_protocol,
                                                                address.path)
            else:
                assert address.host is not None
                assert address.port is not None
                _, protocol = await loop.create_connection(self._new_protocol, address.host,
                                                           address.port)
        if self.closed:
            protocol.close()
            raise ConnectionClosedError(f"channel to {self.url} closed")
        self.protocol = protocol
        return protocol

    async def _ensure_connection(self) -> StreamProtocol:
        protocol = self.protocol
        if protocol is not None and protocol.usable:
            return protocol
        # One connect at a time: concurrent first calls share it.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def call(
        self, method: str, params: Sequence[Value], *, timeout: float | None,
        oneway: bool = False,
    ) -> Value:
        if self.closed:
            raise ConnectionClosedError(f"channel to {self.url} closed")
        protocol = self.protocol
        remaining = timeout
        if protocol is None or not protocol.usable or (
                not oneway and not protocol.connection.calls.has_capacity):
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                async with asyncio.timeout(timeout):
                    protocol = await self._ensure_connection()
                    if not oneway:
                        await protocol.driver.wait_for_slot()
            except TimeoutError:
                raise CallTimeoutError(
                    f"call to {method!r} at {self.url} could not start within {timeout:g} s"
                ) from None
            if timeout is not None:
                remaining = max(timeout - (loop.time() - start), 1e-3)
            if not protocol.usable:
                raise ConnectionLostError(f"connection to {self.url} lost")
        driver = protocol.driver
        call_id, waiter = driver.start_call(method, params, timeout=remaining, oneway=oneway)
        if waiter is None:
            ready = protocol.write_ready
            if ready is not None and not ready.done():
                await ready  # flow control: wait until the buffer drains
            return None
        return await driver.wait(call_id, waiter)

    @property
    def in_flight(self) -> int:
        """Calls waiting for their answers."""
        return 0 if self.protocol is None else self.protocol.connection.in_flight

    async def wait_idle(self) -> None:
        """Return once no call waits for an answer (the caller bounds the wait)."""
        if self.protocol is not None:
            await self.protocol.driver.wait_idle()

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        protocol = self.protocol
        self.protocol = None
        if protocol is not None:
            protocol.driver.close(ConnectionClosedError(f"channel to {self.url} closed"))
            protocol.close()


# -- blocking client ---------------------------------------------------------------------------

_SOCKET_TIMEOUT = struct.Struct("@ll")  # struct timeval, for SO_RCVTIMEO / SO_SNDTIMEO


class BlockingStreamChannel(BlockingChannel):
    """Calls over one TCP or Unix-stream connection from threads that block (contract:
    :mod:`clusterrpc.transports.base`).

    A plain socket, no event loop: the call is sealed, written with one ``send``, and its
    answer read with ``recv_into`` a preallocated buffer in the calling thread — two system
    calls per call, no thread switch. The timeout is the kernel's (``SO_RCVTIMEO`` and
    ``SO_SNDTIMEO``), set only when it changes, so calls with the same timeout pay nothing for
    it. Calls from several threads take turns (a lock). After a timeout the connection stays
    usable: the late answer is recognised by its call id and dropped. ``connect_timeout``
    bounds connecting when the call has no timeout.
    """

    def __init__(self, address: Address, messenger: Messenger, *,
                 connect_timeout: float = 10.0) -> None:
        if not address.stream:
            raise ConfigurationError(f"{address} is not a stream address")
        self.address = address
        self.url = str(address)
        self.messenger = messenger
        self.connect_timeout = connect_timeout
        self._connection: Connection | None = None
        self._poller: select.poll | None = None
        self._socket: socket.socket | None = None
        self._socket_timeout: float | None = None  # what SO_RCVTIMEO/SO_SNDTIMEO hold now
        self._buffer = bytearray(STREAM_READ_SIZE)
        self._view = memoryview(self._buffer)
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self, timeout: float | None) -> socket.socket:
        address = self.address
        limit = self.connect_timeout if timeout is None else min(timeout, self.connect_timeout)
        with map_os_errors(f"cannot connect to {self.url}", CONNECTING):
            if address.scheme == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(limit)
                    sock.connect(address.path or "")
                except BaseException:
                    sock.close()
                    raise
            else:
                assert address.host is not None
                assert address.port is not None
                sock = socket.create_connection((address.host, address.port), timeout=limit)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Blocking from now on; deadlines are the kernel's socket timeouts (_set_timeout).
            sock.settimeout(None)
        self._socket_timeout = None
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self._connection = Connection(self.messenger, dispatcher=None,
                                      transport=address.scheme, peer=self.url,
                                      max_in_flight=1)
        return sock

    def _set_timeout(self, sock: socket.socket, seconds: float | None) -> None:
        if seconds == self._socket_timeout:
            return
        if seconds is None:
            value = _SOCKET_TIMEOUT.pack(0, 0)  # 0: block for ever
        else:
            micros = max(int(seconds * 1e6), 1)  # never 0, which would mean "for ever"
            value = _SOCKET_TIMEOUT.pack(micros // 1_000_000, micros % 1_000_000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        self._socket_timeout = seconds

    def _drop_connection(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._connection = None
        self._poller = None

    def _check_idle_connection(self, sock: socket.socket, connection: Connection) -> bool:
        """Whether the idle connection still stands: read what arrived while we were idle
        (late answers: dropped) without blocking; an EOF or a reset means the server closed
        it, and a call must not be written on a connection known to be dead, since its failure
        could not be told apart from a server that died while running it. One ``poll`` system
        call when nothing waits (no exception raised, unlike a non-blocking read)."""
        if self._poller is None or not self._poller.poll(0):
            return True
        try:
            count = sock.recv_into(self._buffer, STREAM_READ_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not count:
            return False
        connection.receive_data(self._view[:count], now=time.monotonic())
        connection.events_received()  # late answers are counted by the tracker, and dropped
        return connection.broken is None

    def call(
        self, method: str, params: Sequence[Value], *, timeout: float | None,
        oneway: bool = False,
    ) -> Value:
        with self._lock:
            if self._closed:
                raise ConnectionClosedError(f"connection to {self.url} closed")
            sock = self._socket
            connection = self._connection
            if sock is not None and connection is not None and (
                    not self._check_idle_connection(sock, connection)):
                self._drop_connection()  # the server closed it while we were idle
                sock = None
            if sock is None or self._connection is None:
                sock = self._socket = self._connect(timeout)
            connection = self._connection
            assert connection is not None
            now = time.monotonic()
            call_id = connection.send_call(method, params, now=now, timeout=timeout,
                                           oneway=oneway)
            try:
                return self._exchange(sock, connection, call_id, oneway=oneway,
                                      timeout=timeout, deadline=None if timeout is None
                                      else now + timeout, method=method)
            except BaseException:
                connection.cancel(call_id)  # timed out or broken: a late answer is dropped
                raise

    def _exchange(self, sock: socket.socket, connection: Connection, call_id: int, *,
                  oneway: bool, timeout: float | None, deadline: float | None, method: str
                  ) -> Value:
        try:
            self._set_timeout(sock, timeout)
            sock.sendall(connection.data_to_send())
            if oneway:
                return None
            buffer, view = self._buffer, self._view
            while True:
                try:
                    count = sock.recv_into(buffer)
                except BlockingIOError:  # SO_RCVTIMEO passed
                    raise TimeoutError from None
                if not count:
                    self._drop_connection()
                    raise ConnectionLostError(
                        f"connection to {self.url} lost: the server closed it")
                connection.receive_data(view[:count], now=time.monotonic())
                try:
                    outcome = connection.answer_of(call_id)
                except ClusterRPCError:
                    self._drop_connection()  # it broke framing
                    raise
                if outcome is not None:
                    return value_of(outcome)
                # Not our answer yet (a partial frame, or a late answer): wait for the rest of
                # the time left.
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    self._set_timeout(sock, left)
        except ClusterRPCError:
            raise  # some of ours are OSErrors too (ConnectionError, TimeoutError)
        except TimeoutError:
            raise CallTimeoutError(
                f"call to {method!r} at {self.url} got no reply within {timeout or 0:g} s"
            ) from None
        except OSError as error:
            self._drop_connection()
            raise translate(error, f"connection to {self.url} lost", EXCHANGING) from error

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_connection()
