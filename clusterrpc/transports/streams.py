"""TCP and Unix-stream transports: length-prefixed packets on a connection (``spec/packet.md``,
"Framing"), many calls in flight per connection, answers matched by call id in any order.

Server side (:class:`StreamServer`): one :class:`asyncio.Protocol` per connection feeds a
:class:`~clusterrpc.packet.FrameDecoder`; each authentic call goes to the node's
:class:`~clusterrpc.transports.engine.CallServer`. Back-pressure: when a connection has
``max_in_flight`` calls of ``async`` methods still running, or the peer does not read its answers
(the write buffer is full), the server stops reading from that connection until it catches up.
Plain methods run inline in arrival order, so one-way calls on one connection run in the order
they were sent (``async`` ones *start* in that order). A frame over ``max_frame`` breaks
framing: the connection is closed (counted as ``refused_malformed``); a packet that fails
authentication is dropped, and the connection keeps serving.

Client side: :class:`StreamChannel` (asyncio) and :class:`BlockingStreamChannel` (a blocking
socket, for ``clusterrpc.connect``) both use one connection per endpoint, made on first use and
remade after a failure, and a :class:`~clusterrpc.rpc.CallTracker` for call ids and deadlines.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Sequence
from typing import Any

from clusterrpc.errors import (
    CallTimeoutError,
    ClusterRPCError,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    DecodeError,
    PacketError,
    TransportError,
)
from clusterrpc.packet import CALL, FrameDecoder, frame
from clusterrpc.rpc.calls import CallFailed, CallOutcome, CallTracker
from clusterrpc.transports.addresses import Address
from clusterrpc.transports.base import AsyncChannel, BlockingChannel
from clusterrpc.transports.engine import CallServer, Messenger, PendingCalls
from clusterrpc.values import Value

__all__ = [
    "BlockingStreamChannel",
    "StreamChannel",
    "StreamServer",
    "describe_os_error",
    "limit_read_size",
]

log = logging.getLogger("clusterrpc.transport")


def describe_os_error(error: BaseException) -> str:
    """A short text for an ``OSError`` (``[Errno 111] Connection refused`` →
    ``connection refused``)."""
    if isinstance(error, OSError):
        # asyncio puts its own text in strerror ("Connect call failed (…)"); the errno's
        # standard text is what a person recognises.
        text = os.strerror(error.errno) if error.errno else error.strerror
        if text:
            return text[0].lower() + text[1:]
    return str(error) or type(error).__name__


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


# -- server ------------------------------------------------------------------------------------


class _ServerConnection(asyncio.Protocol):
    """One accepted connection: frames in, calls served, answers out."""

    def __init__(self, owner: StreamServer) -> None:
        self.owner = owner
        self.server = owner.call_server
        self.messenger = owner.call_server.messenger
        self.decoder = FrameDecoder(max_frame=owner.max_frame)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.running = 0  # calls of async methods still running
        self.backlog: collections.deque[bytes] = collections.deque()  # frames not yet served
        self.write_paused = False
        self.read_paused = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        limit_read_size(transport, STREAM_READ_SIZE)
        self.peer = _peer_text(self.owner.address, transport.get_extra_info("peername"))
        self.owner.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # Calls still running are left to finish: a one-way call may be followed at once by
        # the sender's close, and stopping a method halfway is worse than finishing it.
        self.closing = True
        self.owner.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except PacketError as error:
            self.messenger.opener.counters.increment(error.counter)
            log.warning("closing connection from %s: %s", self.peer, error)
            self._abort()
            return
        if self.backlog:
            self.backlog.extend(frames)
        else:
            self.backlog = collections.deque(frames)
        self._serve_backlog()

    def _serve_backlog(self) -> None:
        """Serve queued frames in order while fewer than ``max_in_flight`` calls run; leave
        the rest queued (and reading paused) until calls finish."""
        backlog = self.backlog
        server = self.server
        messenger = self.messenger
        transport_name = self.owner.address.scheme
        limit = self.owner.max_in_flight
        while backlog and self.running < limit:
            if self.closing:
                backlog.clear()
                return
            packet = messenger.open(backlog.popleft(), peer=self.peer)
            if packet is None:
                continue  # refused and counted; keep serving the others on this connection
            if not packet.header.flags & CALL:
                server.counters["unexpected"] += 1
                continue
            task = server.serve(packet, transport=transport_name, peer=self.peer,
                                respond=self._respond)
            if task is not None:
                self.running += 1
                task.add_done_callback(self._call_done)
        if backlog or self.running >= limit:
            self._pause_reading()

    def _respond(self, packet: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(frame(packet))

    def _call_done(self, _task: asyncio.Task[None]) -> None:
        self.running -= 1
        if self.backlog:
            self._serve_backlog()
        if not self.backlog and self.running < self.owner.max_in_flight and (
                not self.write_paused):
            self._resume_reading()

    def pause_writing(self) -> None:
        # The peer does not read its answers: stop taking new calls from it.
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.backlog and self.running < self.owner.max_in_flight:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = False
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        if self.decoder.buffered:
            log.debug("connection from %s ended inside a frame (%d bytes dropped)",
                      self.peer, self.decoder.buffered)
        # Answers to calls still running are lost with the connection; close our side now.
        return None

    def _abort(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class StreamServer:
    """Listens on a ``tcp://`` or ``unix://`` address and serves calls (module docstring).

    ``max_in_flight``: calls of ``async`` methods running per connection before the server stops
    reading from it. ``max_frame``: the largest packet accepted. For a Unix socket, a stale
    socket file left by a dead process is replaced; a socket someone still listens on is not.
    """

    def __init__(self, address: Address, call_server: CallServer, *, max_in_flight: int = 256,
                 max_frame: int) -> None:
        if not address.stream:
            raise ConfigurationError(f"{address} is not a stream address")
        self.address = address
        self.call_server = call_server
        self.max_in_flight = max_in_flight
        self.max_frame = max_frame
        self.connections: set[_ServerConnection] = set()
        self._server: asyncio.Server | None = None
        self._bound: Address | None = None

    @property
    def url(self) -> str:
        """The address actually bound (port 0 resolved); the configured one before start."""
        return str(self._bound or self.address)

    async def start(self) -> None:
        """Bind and listen. Raises :class:`~clusterrpc.errors.TransportError` (with the
        ``OSError`` as cause) when the address cannot be bound."""
        loop = asyncio.get_running_loop()
        address = self.address
        try:
            if address.scheme == "unix":
                assert address.path is not None
                _remove_stale_socket(address.path)
                self._server = await loop.create_unix_server(
                    lambda: _ServerConnection(self), address.path
                )
                self._bound = address
            else:
                assert address.port is not None
                self._server = await loop.create_server(
                    lambda: _ServerConnection(self), address.host, address.port,
                    reuse_address=True,
                )  # fmt: skip
                host, port = self._server.sockets[0].getsockname()[:2]
                self._bound = Address("tcp", host=host, port=port)
        except OSError as error:
            raise TransportError(
                f"cannot listen on {address}: {describe_os_error(error)}"
            ) from error

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
        if self.address.scheme == "unix" and self.address.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address.path)


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


class _ClientConnection(asyncio.Protocol):
    """The client half of one connection: answers in, futures settled."""

    def __init__(self, channel: StreamChannel) -> None:
        self.channel = channel
        self.decoder = FrameDecoder(max_frame=channel.messenger.max_packet)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.write_ready: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        limit_read_size(transport, STREAM_READ_SIZE)

    @property
    def usable(self) -> bool:
        """Whether calls may still be written on this connection."""
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def eof_received(self) -> bool | None:
        # The server closed its side (it stopped, or dropped an idle connection): close
        # ours too; calls in flight fail in connection_lost and the next call reconnects.
        self.lost = True
        return None

    def data_received(self, data: bytes) -> None:
        channel = self.channel
        try:
            frames = self.decoder.feed(data)
        except PacketError as error:
            channel.messenger.opener.counters.increment(error.counter)
            self._fail(ConnectionLostError(f"{channel.url} broke framing: {error}"))
            return
        messenger = channel.messenger
        for data_frame in frames:
            packet = messenger.open(data_frame, peer=channel.url)
            if packet is None:
                continue
            header = packet.header
            if header.flags & CALL:
                channel.unexpected += 1  # this side does not serve calls
                continue
            try:
                message = messenger.decode_answer(packet)
            except DecodeError as error:
                channel.pending.fail(header.call_id, error)
                continue
            channel.pending.answer(header.call_id, message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        channel = self.channel
        if channel.connection is self:
            channel.connection = None
        if channel.closed:
            error: ClusterRPCError = ConnectionClosedError(f"channel to {channel.url} closed")
        elif exc is not None:
            error = ConnectionLostError(
                f"connection to {channel.url} lost: {describe_os_error(exc)}"
            )
            error.__cause__ = exc
        else:
            error = ConnectionLostError(f"{channel.url} closed the connection")
        channel.pending.fail_all(error)
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)

    def pause_writing(self) -> None:
        if self.write_ready is None or self.write_ready.done():
            self.write_ready = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.write_ready is not None and not self.write_ready.done():
            self.write_ready.set_result(None)

    def _fail(self, error: ClusterRPCError) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.channel.pending.fail_all(error)


class StreamChannel(AsyncChannel):
    """Calls over one TCP or Unix-stream connection, for asyncio code (contract:
    :mod:`clusterrpc.transports.base`).

    Many calls share the connection; up to ``max_in_flight`` wait for answers at once, and
    further calls wait for a free slot (within their own timeout). The connection is made on
    first use and remade by the next call after it broke; calls that were in flight when it
    broke fail with :class:`~clusterrpc.errors.ConnectionLostError`. One-way calls are written
    in call order and return once written (waiting while the socket's buffer is full).

    A peer may close an idle connection at any time (a node stopping does). The channel notices
    when the event loop delivers the close; a call made in the instant before that is written to
    the closing connection and fails with ``ConnectionLostError`` (it did not run), and the
    next call connects again.
    """

    def __init__(self, address: Address, messenger: Messenger, *,
                 max_in_flight: int = 256) -> None:
        if not address.stream:
            raise ConfigurationError(f"{address} is not a stream address")
        self.address = address
        self.url = str(address)
        self.messenger = messenger
        self.pending = PendingCalls(max_in_flight=max_in_flight)
        self.connection: _ClientConnection | None = None
        self.closed = False
        self.unexpected = 0
        self._connecting: asyncio.Future[_ClientConnection] | None = None

    async def _connect(self) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        address = self.address
        try:
            if address.scheme == "unix":
                assert address.path is not None
                _, protocol = await loop.create_unix_connection(
                    lambda: _ClientConnection(self), address.path
                )
            else:
                assert address.host is not None
                assert address.port is not None
                _, protocol = await loop.create_connection(
                    lambda: _ClientConnection(self), address.host, address.port
                )
        except OSError as error:
            raise ConnectError(
                f"cannot connect to {self.url}: {describe_os_error(error)}"
            ) from error
        if self.closed:
            if protocol.transport is not None:
                protocol.transport.close()
            raise ConnectionClosedError(f"channel to {self.url} closed")
        self.connection = protocol
        return protocol

    async def _ensure_connection(self) -> _ClientConnection:
        connection = self.connection
        if connection is not None and connection.usable:
            return connection
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
        connection = self.connection
        remaining = timeout
        if connection is None or not connection.usable or (
                not oneway and not self.pending.tracker.has_capacity):
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                async with asyncio.timeout(timeout):
                    connection = await self._ensure_connection()
                    if not oneway:
                        await self.pending.wait_for_slot()
            except TimeoutError:
                raise CallTimeoutError(
                    f"call to {method!r} at {self.url} could not start within {timeout:g} s"
                ) from None
            if timeout is not None:
                remaining = max(timeout - (loop.time() - start), 1e-3)
        pending = self.pending
        outgoing = pending.start(method, params, timeout=remaining, oneway=oneway)
        try:
            packet = self.messenger.seal_call(outgoing.call_id, outgoing.message, oneway=oneway,
                                              timeout=None if oneway else remaining)
        except BaseException:
            pending.cancel(outgoing.call_id)
            raise
        transport = connection.transport
        if transport is None or not connection.usable:
            pending.cancel(outgoing.call_id)
            raise ConnectionLostError(f"connection to {self.url} lost")
        transport.write(frame(packet))
        if oneway:
            if connection.write_ready is not None and not connection.write_ready.done():
                await connection.write_ready  # flow control: wait until the buffer drains
            return None
        return await pending.wait(outgoing.call_id)

    @property
    def in_flight(self) -> int:
        """Calls waiting for their answers."""
        return self.pending.tracker.in_flight

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.pending.close(ConnectionClosedError(f"channel to {self.url} closed"))
        connection = self.connection
        self.connection = None
        if connection is not None and connection.transport is not None:
            connection.transport.close()


# -- blocking client ---------------------------------------------------------------------------


class BlockingStreamChannel(BlockingChannel):
    """Calls over one TCP or Unix-stream connection from threads that block (contract:
    :mod:`clusterrpc.transports.base`).

    A plain socket, no event loop: the call is sealed, written, and its answer read in the
    calling thread, so a call costs two system calls and no thread switch. Calls from several
    threads take turns (a lock). After a timeout the connection stays usable: the late answer
    is recognised by its call id and dropped. ``connect_timeout`` bounds connecting when the
    call has no timeout.
    """

    def __init__(self, address: Address, messenger: Messenger, *,
                 connect_timeout: float = 10.0) -> None:
        if not address.stream:
            raise ConfigurationError(f"{address} is not a stream address")
        self.address = address
        self.url = str(address)
        self.messenger = messenger
        self.connect_timeout = connect_timeout
        self.tracker = CallTracker(max_in_flight=1)
        self.unexpected = 0
        self._socket: socket.socket | None = None
        self._decoder = FrameDecoder(max_frame=messenger.max_packet)
        self._lock = threading.Lock()
        self._closed = False

    def _connect(self, timeout: float | None) -> socket.socket:
        address = self.address
        limit = self.connect_timeout if timeout is None else min(timeout, self.connect_timeout)
        try:
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
        except TimeoutError as error:
            raise ConnectError(f"cannot connect to {self.url}: timed out") from error
        except OSError as error:
            raise ConnectError(
                f"cannot connect to {self.url}: {describe_os_error(error)}"
            ) from error
        self._decoder = FrameDecoder(max_frame=self.messenger.max_packet)
        return sock

    def _drop_connection(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def call(
        self, method: str, params: Sequence[Value], *, timeout: float | None,
        oneway: bool = False,
    ) -> Value:
        with self._lock:
            if self._closed:
                raise ConnectionClosedError(f"connection to {self.url} closed")
            start = time.monotonic()
            outgoing = self.tracker.start(method, params, now=start, timeout=timeout,
                                          oneway=oneway)
            try:
                packet = self.messenger.seal_call(outgoing.call_id, outgoing.message,
                                                  oneway=oneway,
                                                  timeout=None if oneway else timeout)
                sock = self._socket
                if sock is not None and _closed_by_peer(sock):
                    self._drop_connection()  # the server closed it while we were idle
                    sock = None
                if sock is None:
                    sock = self._socket = self._connect(timeout)
                return self._exchange(sock, frame(packet), call_id=outgoing.call_id,
                                      oneway=oneway, deadline=outgoing.deadline, method=method)
            finally:
                self.tracker.cancel(outgoing.call_id)  # a no-op once the call is settled

    def _exchange(self, sock: socket.socket, data: bytes, *, call_id: int, oneway: bool,
                  deadline: float | None, method: str) -> Value:
        try:
            sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0))
            sock.sendall(data)
            if oneway:
                return None
            while True:
                outcome = self._read_answer(sock, call_id, deadline)
                if outcome is not None:
                    break
        except TimeoutError:
            raise CallTimeoutError(
                f"call to {method!r} at {self.url} got no reply within the timeout"
            ) from None
        except OSError as error:
            self._drop_connection()
            raise ConnectionLostError(
                f"connection to {self.url} lost: {describe_os_error(error)}"
            ) from error
        if isinstance(outcome, CallFailed):
            raise outcome.error
        return outcome.value

    def _read_answer(self, sock: socket.socket, call_id: int, deadline: float | None
                     ) -> CallOutcome | None:
        """Read until a frame arrives; return the outcome if it answers ``call_id``."""
        messenger = self.messenger
        while True:
            if deadline is not None:
                sock.settimeout(max(deadline - time.monotonic(), 0) or 1e-6)
            data = sock.recv(STREAM_READ_SIZE)
            if not data:
                self._drop_connection()
                raise ConnectionLostError(f"{self.url} closed the connection")
            try:
                frames = self._decoder.feed(data)
            except PacketError as error:
                self._drop_connection()
                raise ConnectionLostError(f"{self.url} broke framing: {error}") from None
            result: CallOutcome | None = None
            for data_frame in frames:
                packet = messenger.open(data_frame, peer=self.url)
                if packet is None:
                    continue
                header = packet.header
                if header.flags & CALL:
                    self.unexpected += 1
                    continue
                if header.call_id != call_id:
                    # A late answer to a call that timed out: counted as late, dropped.
                    with contextlib.suppress(DecodeError):
                        self.tracker.receive(header.call_id, messenger.decode_answer(packet))
                    continue
                try:
                    message = messenger.decode_answer(packet)
                except DecodeError as error:
                    self.tracker.cancel(call_id)
                    raise error from None
                result = self.tracker.receive(call_id, message)
            if result is not None or frames:
                return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_connection()


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the peer has closed ``sock`` (an EOF or a reset is pending), checked without
    blocking: a call must not be written on a connection known to be dead, since its failure
    could not be told apart from a server that died while running it."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
