"""Cluster handles: a local program's way to a node's local services (``spec/local.md``).

``get_cluster_handle(cluster, domain)`` (blocking) and ``await open_cluster_handle(…)`` (asyncio)
return a handle that reaches every local service of ``cluster`` in ``domain``:
``handle.locks.acquire("disk1")`` calls ``locks.acquire`` over the ``locks`` service's socket,
``handle.oneway.svc.m(…)`` sends a one-way call, ``handle.system.listServices()`` browses.
Connections are made per service on first use, each with the handshake (``local.hello``) and
the check that the server runs as the daemon's uid; a broken one is remade by the next call.

Events: ``cookie = handle.events.register(callback)`` gives a cookie to pass with a request
(``notify=cookie``); the server later calls the client back with ``(cookie, payload)``, and the
handle runs ``callback(LocalEvent)`` — in the handle's event thread (blocking handles) or on
the event loop (async ones). ``handle.events.cancel(cookie)`` is final: an event already on
its way for it is discarded. The rules (cookies, the recovery flag, the server check) are
:mod:`clusterrpc.local.protocol`'s, shared by both handles.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from clusterrpc.errors import (
    CallTimeoutError,
    ClusterRPCError,
    ConfigurationError,
    ConnectionClosedError,
    ConnectionLostError,
    Fault,
    LocalAccessError,
)
from clusterrpc.local import protocol as wire
from clusterrpc.local.paths import (
    USER,
    check_cluster_name,
    check_domain_name,
    default_local_dir,
    socket_path,
)
from clusterrpc.local.protocol import CookieTable, LocalEvent, check_recovery, check_server_uid
from clusterrpc.rpc.calls import CallFailed, CallSucceeded, value_of
from clusterrpc.rpc.decorators import oneway
from clusterrpc.rpc.protocol import Connection, ConnectionBroken, Dispatcher
from clusterrpc.rpc.proxy import DEFAULT, ProxyRoot
from clusterrpc.rpc.service import ServiceRegistry
from clusterrpc.transports.engine import AsyncDriver, Messenger
from clusterrpc.transports.errors import EXCHANGING, translate
from clusterrpc.transports.local import (
    LocalStream,
    close_fds,
    connect_local,
    connect_local_async,
    peer_credentials,
    receive_with_fds,
    set_receive_timeout,
)
from clusterrpc.transports.streams import STREAM_READ_SIZE
from clusterrpc.values import Value

__all__ = [
    "AsyncClusterHandle",
    "ClusterHandle",
    "Events",
    "get_cluster_handle",
    "open_cluster_handle",
]

log = logging.getLogger("clusterrpc.local")

_ACCESS_DENIED = -32001  # clusterrpc.local.server.ACCESS_DENIED (not imported: server side)
_handle_numbers = itertools.count(1)


class Events:
    """A handle's cookies (``handle.events``): :meth:`register` a callback, pass the cookie
    with a request, :meth:`cancel` it when the request's object is gone."""

    __slots__ = ("_cookies", "_started")

    def __init__(self, cookies: CookieTable, started: Callable[[], None]) -> None:
        self._cookies = cookies
        self._started = started

    def register(self, callback: Callable[[LocalEvent], object]) -> int:
        """A new cookie whose events run ``callback(event)``; pass it to the service (e.g.
        ``notify=cookie``). ``callback`` must not block for long: other events wait."""
        cookie = self._cookies.register(callback)
        self._started()
        return cookie

    def cancel(self, cookie: int) -> bool:
        """Forget ``cookie``: once this returns its callback never starts again, and events
        for it still in flight are silently discarded. Returns whether it was registered."""
        return self._cookies.cancel(cookie)

    @property
    def delivered(self) -> int:
        """Events whose callback ran."""
        return self._cookies.delivered

    @property
    def discarded(self) -> int:
        """Events dropped because their cookie was cancelled (or unknown)."""
        return self._cookies.discarded


def _with_keywords(params: tuple[Any, ...], keywords: dict[str, Value]) -> tuple[Any, ...]:
    """``params`` with ``keywords`` as the trailing struct the server binds by name
    (:data:`clusterrpc.local.protocol.KEYWORDS`)."""
    return (*params, {wire.KEYWORDS: keywords}) if keywords else params


class _ClientEndpoint:
    """What the server calls back on a handle's connections (one-way calls ``local.*``)."""

    def __init__(self, core: _HandleCore) -> None:
        self._core = core

    @oneway
    def event(self, cookie: int, payload: Any, sequence: int) -> None:
        self._core.event_arrived(LocalEvent(cookie, payload, sequence))

    @oneway
    def evicted(self, reason: str) -> None:
        log.warning("the local server evicted this client: %s", reason)
        self._core.evicted = reason

    @oneway
    def granted(self, number: int, domain: str, service: str) -> None:
        self._core.grant_arrived(number, domain, service)


class _HandleCore:
    """What the blocking and the async handle share: names, paths, the handshake and the
    server check, the messenger, cookies and grants."""

    def __init__(self, cluster: str, domain: str, *, recovery_ok: bool, local_dir: str | None,
                 daemon_uid: int | Iterable[int] | None, codec: str | int,
                 timeout: float | None, abstract: bool) -> None:
        self.cluster = check_cluster_name(cluster)
        self.domain = check_domain_name(domain)
        check_recovery(domain, recovery_ok)
        self.recovery_ok = recovery_ok
        self.local_dir = os.path.abspath(local_dir or default_local_dir(
            uid=os.geteuid(), runtime_dir=os.environ.get("XDG_RUNTIME_DIR")))
        if daemon_uid is None:
            self.daemon_uids = frozenset({0, os.geteuid()})
        elif isinstance(daemon_uid, int):
            self.daemon_uids = frozenset({daemon_uid})
        else:
            self.daemon_uids = frozenset(daemon_uid)
        self.timeout = timeout
        self.abstract = abstract
        self.cookies = CookieTable()
        self.prefix = f"local:{os.getpid()}:{next(_handle_numbers)}"
        # Built now, while the process may still read every module and plugin (a daemon may
        # drop its privileges between creating a handle and its first call).
        self.messenger = Messenger(node=self.prefix, cluster=cluster, keyring=None,
                                   insecure=True, codec=codec)
        self._connection_numbers = itertools.count(1)
        registry = ServiceRegistry()
        registry.serve(_ClientEndpoint(self), name="local")
        self.dispatcher = Dispatcher(registry)
        self.evicted: str | None = None
        self.pending_events: list[LocalEvent] = []
        self.received_fds: list[int] = []
        self.grants: dict[int, tuple[int, str, str]] = {}
        self.on_event: Callable[[LocalEvent], None] = self.pending_events.append

    def new_messenger(self) -> Messenger:
        """The packet layer of one new connection: a sender name and a replay window of its
        own (``local:<pid>:<handle>.<connection>``). Shared by several connections, one
        window would see the server's node-wide sequence numbers out of order — a slow
        connection's packets arrive after a busy one's later ones — and refuse them as too
        old; each stream is in order by itself."""
        return self.messenger.sibling(f"{self.prefix}.{next(self._connection_numbers)}")

    def path(self, service: str) -> str:
        return socket_path(self.local_dir, self.cluster, service, self.domain)

    @staticmethod
    def service_of(method: str) -> str:
        """The service whose socket carries ``method``: ``system.*`` and ``local.*`` go to
        the ``system`` socket, ``a.b.m`` to ``a.b``'s."""
        service, _, name = method.rpartition(".")
        if not service or not name:
            raise ConfigurationError(f"name a service's method, e.g. locks.acquire, not "
                                     f"{method!r}")
        return "system" if service in ("system", "local") else service

    def check_server(self, sock: socket.socket, path: str) -> None:
        check_server_uid(peer_credentials(sock).uid, self.daemon_uids, path=path)

    def hello(self) -> tuple[Value, ...]:
        return ({"version": wire.PROTOCOL_VERSION, "recovery_ok": self.recovery_ok},)

    @staticmethod
    def hello_failed(fault: Fault, path: str) -> ClusterRPCError:
        if fault.code == _ACCESS_DENIED:
            return LocalAccessError(f"{path}: {fault.message}")
        return fault

    def event_arrived(self, event: LocalEvent) -> None:
        self.on_event(event)

    def grant_arrived(self, number: int, domain: str, service: str) -> None:
        if not self.received_fds:
            log.warning("grant %d announced without a file descriptor; ignored", number)
            return
        self.grants[number] = (self.received_fds.pop(0), domain, service)

    def take_grant(self, number: int) -> tuple[socket.socket, str, str]:
        entry = self.grants.pop(number, None)
        if entry is None:
            raise ConfigurationError(f"no grant {number} has arrived on this handle")
        fd, domain, service = entry
        return socket.socket(fileno=fd), domain, service

    def lost(self, what: str) -> ConnectionLostError:
        if self.evicted is not None:
            return ConnectionLostError(f"{what}: the server evicted this client: {self.evicted}")
        return ConnectionLostError(f"{what}: the server closed the connection")

    def close(self) -> None:
        close_fds(self.received_fds)
        self.received_fds.clear()
        for fd, _, _ in self.grants.values():
            close_fds((fd,))
        self.grants.clear()


# -- blocking ----------------------------------------------------------------------------------


class _BlockingConnection:
    """One service's socket, for threads that block: the caller reads its own answer."""

    def __init__(self, core: _HandleCore, path: str, sock: socket.socket) -> None:
        self.core = core
        self.path = path
        self.sock = sock
        self.lock = threading.Lock()
        self.connection = Connection(core.new_messenger(), dispatcher=core.dispatcher,
                                     transport="local", peer=path, max_in_flight=1)
        self.timeout: float | None = None
        self.broken = False
        self.reader_waiting = False
        """The event thread found :attr:`lock` taken and waits to be woken for this socket."""
        self._buffer = bytearray(STREAM_READ_SIZE)
        self._view = memoryview(self._buffer)

    def call(self, method: str, params: Sequence[Value], *, timeout: float | None,
             oneway: bool) -> Value:
        """Under :attr:`lock`: send the call and read until its answer."""
        connection, sock = self.connection, self.sock
        now = time.monotonic()
        call_id = connection.send_call(method, params, now=now, timeout=timeout, oneway=oneway)
        try:
            if timeout != self.timeout:
                set_receive_timeout(sock, timeout)
                self.timeout = timeout
            sock.sendall(connection.data_to_send())
            if oneway:
                return None
            deadline = None if timeout is None else now + timeout
            while True:
                outcome = self._read(call_id)
                if outcome is not None:
                    return value_of(outcome)
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BlockingIOError
                    set_receive_timeout(sock, left)
                    self.timeout = left
        except BlockingIOError:
            connection.cancel(call_id)
            raise CallTimeoutError(
                f"local call to {method!r} got no reply within {timeout or 0:g} s") from None
        except ClusterRPCError:
            connection.cancel(call_id)
            self.broken = True
            raise
        except OSError as error:
            self.broken = True
            raise translate(error, f"local connection {self.path} lost", EXCHANGING
                            ) from error

    def _read(self, call_id: int | None) -> Any:
        count, fds = receive_with_fds(self.sock, self._view)
        if fds:
            self.core.received_fds.extend(fds)
        if not count:
            self.broken = True
            raise self.core.lost(f"local connection {self.path} lost")
        self.connection.receive_data(self._view[:count], now=time.monotonic())
        found = None
        for event in self.connection.events_received():
            kind = type(event)
            if kind is CallSucceeded or kind is CallFailed:
                if event.call_id == call_id:  # type: ignore[union-attr]
                    found = event
            elif kind is ConnectionBroken:
                self.broken = True
                raise event.error  # type: ignore[union-attr]
        return found

    def pump(self) -> bool | None:
        """Read what waits without blocking (the event thread); return whether the
        connection still stands, or ``None`` if a caller holds it: that caller reads what
        waits, and wakes the event thread when it lets go (:attr:`reader_waiting`)."""
        # Flag first, then try: a caller that lets go after a failed try sees the flag.
        self.reader_waiting = True
        if not self.lock.acquire(blocking=False):
            return None
        try:
            self.reader_waiting = False
            if self.broken:
                return False
            try:
                self.sock.setblocking(False)
                try:
                    self._read(None)
                finally:
                    self.sock.setblocking(True)
                    self.timeout = None  # setblocking cleared the kernel timeouts' meaning
                    set_receive_timeout(self.sock, None)
            except BlockingIOError:
                pass
            except (ClusterRPCError, OSError):
                self.broken = True
                return False
            return True
        finally:
            self.lock.release()

    def close(self) -> None:
        self.broken = True
        self.sock.close()


class ClusterHandle(ProxyRoot):
    """A blocking handle to a cluster's local services in one domain (module docstring).

    Use it as a context manager, or :meth:`close` it. Calls from several threads take turns
    per service. Errors: :class:`~clusterrpc.errors.LocalAccessError` (the domain refused this
    process, ``recovery_ok`` outside ``SYSTEM``, a server not running as the daemon's uid),
    :class:`~clusterrpc.errors.ConnectError` (no such service or cluster here),
    :class:`~clusterrpc.errors.Fault` from the method, :class:`~clusterrpc.errors.CallTimeoutError`,
    :class:`~clusterrpc.errors.ConnectionLostError`.
    """

    def __init__(self, core: _HandleCore) -> None:
        super().__init__(self._invoke)
        self._core = core
        self._connections: dict[str, _BlockingConnection] = {}
        self._connect_lock = threading.Lock()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._event_lock = threading.Lock()
        core.on_event = self._event_arrived
        self.events = Events(core.cookies, self._start_events)
        """This handle's cookies (:class:`Events`)."""

    @property
    def cluster(self) -> str:
        """The cluster this handle reaches."""
        return self._core.cluster

    @property
    def domain(self) -> str:
        """The security domain of this handle."""
        return self._core.domain

    @property
    def recovery_ok(self) -> bool:
        """Whether this is a recovery handle (its calls go on during transitions)."""
        return self._core.recovery_ok

    def _invoke(self, method: str, params: tuple[Any, ...], timeout: Any, oneway: bool,
                **keywords: Value) -> Any:
        return self.call(method, *_with_keywords(params, keywords), timeout=timeout,
                         oneway=oneway)

    def call(self, method: str, *params: Value, timeout: Any = DEFAULT,
             oneway: bool = False) -> Value:
        """Call ``method`` (``service.name``) with ``params``; see the class docstring."""
        if self._closed:
            raise ConnectionClosedError("the cluster handle is closed")
        limit = self._core.timeout if timeout is DEFAULT else timeout
        connection = self._connection(self._core.service_of(method), limit)
        with connection.lock:
            result = connection.call(method, params, timeout=limit, oneway=oneway)
        if connection.reader_waiting:
            self._wake()
        return result

    def register_client(self, name: str) -> None:
        """Register ``name`` for this process in the cluster and domain (unique there; freed
        when this handle closes or the process dies). Raises
        :class:`~clusterrpc.errors.Fault` (code -32003) if a live client holds it."""
        self.call(wire.REGISTER_CLIENT, name)

    def accept_grant(self, number: int) -> GrantedService:
        """The connection a service granted this process (``client.grant_domain`` on the
        server, which returned ``number``): a proxy for that service in the granted domain."""
        sock, domain, service = self._core.take_grant(number)
        sock.setblocking(True)
        connection = _BlockingConnection(self._core, f"grant {number} ({domain}/{service})",
                                         sock)
        with connection.lock:
            self._greet(connection, self._core.timeout)
        return GrantedService(self, connection, domain, service)

    def _connection(self, service: str, timeout: float | None) -> _BlockingConnection:
        connection = self._connections.get(service)
        if connection is not None and not connection.broken:
            return connection
        with self._connect_lock:
            connection = self._connections.get(service)
            if connection is not None and not connection.broken:
                return connection
            if connection is not None:
                connection.close()
            core = self._core
            path = core.path(service)
            sock = connect_local(path, timeout=timeout, abstract=core.abstract)
            try:
                core.check_server(sock, path)
                connection = _BlockingConnection(core, path, sock)
                with connection.lock:
                    self._greet(connection, timeout)
            except BaseException:
                sock.close()
                raise
            self._connections[service] = connection
            self._wake()
            return connection

    def _greet(self, connection: _BlockingConnection, timeout: float | None) -> None:
        try:
            connection.call(wire.HELLO, self._core.hello(), timeout=timeout, oneway=False)
        except Fault as fault:
            raise self._core.hello_failed(fault, connection.path) from None
        except ConnectionLostError as error:
            # A refused peer is closed right after its fault; a lost hello is a refusal too.
            raise LocalAccessError(f"{connection.path}: the server refused this client "
                                   f"({error})") from error

    # -- events --------------------------------------------------------------------------------

    def _event_arrived(self, event: LocalEvent) -> None:
        if self._thread is None:  # no cookie was ever registered: counted as discarded
            self._core.cookies.deliver(event)
            return
        with self._event_lock:
            self._core.pending_events.append(event)
        # Run the callback now, not when the call that read the event returns.
        self._wake()

    def _wake(self) -> None:
        if self._thread is not None:
            self._write_wake()

    def _write_wake(self) -> None:
        # A full pipe already holds a wake-up the thread has not read: nothing to add.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")

    def _start_events(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._event_thread, daemon=True,
                                            name=f"clusterrpc-events-{self._core.cluster}")
            self._thread.start()

    def _event_thread(self) -> None:
        """Read events from every connection while no caller does, and run their callbacks
        (outside every lock but the cookie table's)."""
        busy: set[_BlockingConnection] = set()  # a caller reads these; it wakes us after
        while not self._closed:
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            by_fd = {}
            for connection in list(self._connections.values()):
                if not connection.broken and connection not in busy:
                    by_fd[connection.sock.fileno()] = connection
                    poller.register(connection.sock, select.POLLIN)
            for fd, _ in poller.poll():
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                    busy.clear()
                elif fd in by_fd and by_fd[fd].pump() is None:
                    busy.add(by_fd[fd])
            with self._event_lock:
                events = list(self._core.pending_events)
                self._core.pending_events.clear()
            for event in events:
                try:
                    self._core.cookies.deliver(event)
                except Exception:
                    log.exception("event callback for cookie %d failed", event.cookie)

    def close(self) -> None:
        """Close every connection (the server releases what this handle held) and stop the
        event thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._write_wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        for connection in self._connections.values():
            with connection.lock:
                connection.close()
        self._connections.clear()
        self._core.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> ClusterHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ClusterHandle {self._core.cluster} {self._core.domain}>"


class GrantedService(ProxyRoot):
    """A connection a privileged service granted (:meth:`ClusterHandle.accept_grant`): calls
    ``service.*`` in ``domain`` with this process's own credentials."""

    def __init__(self, handle: ClusterHandle, connection: _BlockingConnection, domain: str,
                 service: str) -> None:
        super().__init__(self._invoke)
        self._handle = handle
        self._connection = connection
        self.domain = domain
        self.service = service

    def _invoke(self, method: str, params: tuple[Any, ...], timeout: Any, oneway: bool,
                **keywords: Value) -> Any:
        limit = self._handle._core.timeout if timeout is DEFAULT else timeout
        with self._connection.lock:
            return self._connection.call(method, _with_keywords(params, keywords),
                                         timeout=limit, oneway=oneway)

    def close(self) -> None:
        """Close the granted connection."""
        self._connection.close()


def get_cluster_handle(cluster: str, domain: str = USER, *, recovery_ok: bool = False,
                       local_dir: str | None = None,
                       daemon_uid: int | Iterable[int] | None = None,
                       timeout: float | None = 30.0, codec: str | int = "xmlrpc",
                       abstract: bool = False) -> ClusterHandle:
    """A blocking handle to ``cluster``'s local services in ``domain`` (module docstring).

    ``recovery_ok``: calls go on during transitions — legal only in ``SYSTEM``, else
    :class:`~clusterrpc.errors.LocalAccessError` here (and the server refuses it again).
    ``local_dir``: where the node's sockets are (its default otherwise). ``daemon_uid``: the
    uid(s) the server must run as (default: root or this process's uid). ``timeout``: the
    default per call. Raises :class:`~clusterrpc.errors.ConfigurationError` for an invalid
    cluster or domain name. Connections are made on first use, so a missing node shows on the
    first call (:class:`~clusterrpc.errors.ConnectError`).
    """
    return ClusterHandle(_HandleCore(cluster, domain, recovery_ok=recovery_ok,
                                     local_dir=local_dir, daemon_uid=daemon_uid, codec=codec,
                                     timeout=timeout, abstract=abstract))


# -- asyncio -----------------------------------------------------------------------------------


class _AsyncConnection:
    def __init__(self, core: _HandleCore, path: str, sock: socket.socket) -> None:
        self.core = core
        self.path = path
        self.connection = Connection(core.new_messenger(), dispatcher=core.dispatcher,
                                     transport="local", peer=path)
        self.driver = AsyncDriver(self.connection, flush=self._flush,
                                  broken=lambda error: self.stream.abort())
        self.stream = LocalStream(sock, receive=self._receive, lost=self._lost,
                                  accept_fds=True)

    @property
    def usable(self) -> bool:
        return not self.stream.closed

    def _receive(self, data: memoryview, fds: list[int]) -> None:
        if fds:
            self.core.received_fds.extend(fds)
        self.connection.receive_data(data, now=asyncio.get_running_loop().time())
        self.driver.process()

    def _flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.stream.write(data)

    def _lost(self, error: ClusterRPCError | None) -> None:
        self.driver.close(error if isinstance(error, ConnectionLostError)
                          else self.core.lost(f"local connection {self.path} lost"))


class AsyncClusterHandle(ProxyRoot):
    """The asyncio form of :class:`ClusterHandle`: ``await handle.locks.acquire("disk1")``;
    ``async with`` it, or ``await`` :meth:`aclose`. Event callbacks run on the event loop
    (a coroutine function's coroutine is scheduled as a task). Errors as
    :class:`ClusterHandle`'s. One event loop. Granted connections (fd passing,
    :meth:`ClusterHandle.accept_grant`) are accepted by blocking handles only: a security
    server's clients are small tools, and one code path for received fds is easier to audit."""

    def __init__(self, core: _HandleCore) -> None:
        super().__init__(self._invoke)
        self._core = core
        self._connections: dict[str, _AsyncConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._closed = False
        core.on_event = self._event_arrived
        self.events = Events(core.cookies, lambda: None)
        """This handle's cookies (:class:`Events`)."""

    cluster = ClusterHandle.cluster
    domain = ClusterHandle.domain
    recovery_ok = ClusterHandle.recovery_ok

    def _event_arrived(self, event: LocalEvent) -> None:
        try:
            self._core.cookies.deliver(event)
        except Exception:
            log.exception("event callback for cookie %d failed", event.cookie)

    def _invoke(self, method: str, params: tuple[Any, ...], timeout: Any, oneway: bool,
                **keywords: Value) -> Any:
        return self.call(method, *_with_keywords(params, keywords), timeout=timeout,
                         oneway=oneway)

    async def call(self, method: str, *params: Value, timeout: Any = DEFAULT,
                   oneway: bool = False) -> Value:
        """Call ``method`` (``service.name``) with ``params``; see :class:`ClusterHandle`."""
        if self._closed:
            raise ConnectionClosedError("the cluster handle is closed")
        limit = self._core.timeout if timeout is DEFAULT else timeout
        connection = await self._connection(self._core.service_of(method), limit)
        return await connection.driver.call(method, params, timeout=limit, oneway=oneway)

    async def register_client(self, name: str) -> None:
        """See :meth:`ClusterHandle.register_client`."""
        await self.call(wire.REGISTER_CLIENT, name)

    async def _connection(self, service: str, timeout: float | None) -> _AsyncConnection:
        connection = self._connections.get(service)
        if connection is not None and connection.usable:
            return connection
        lock = self._connecting.setdefault(service, asyncio.Lock())
        async with lock:
            connection = self._connections.get(service)
            if connection is not None and connection.usable:
                return connection
            core = self._core
            path = core.path(service)
            async with asyncio.timeout(timeout):
                sock = await connect_local_async(path, abstract=core.abstract)
            try:
                core.check_server(sock, path)
                connection = _AsyncConnection(core, path, sock)
            except BaseException:
                sock.close()
                raise
            try:
                await connection.driver.call(wire.HELLO, core.hello(), timeout=timeout)
            except Fault as fault:
                connection.stream.abort()
                raise core.hello_failed(fault, path) from None
            except ConnectionLostError as error:
                raise LocalAccessError(f"{path}: the server refused this client ({error})"
                                       ) from error
            self._connections[service] = connection
            return connection

    async def aclose(self) -> None:
        """Close every connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        for connection in self._connections.values():
            connection.driver.close(ConnectionClosedError("the cluster handle is closed"))
            connection.stream.close()
        self._connections.clear()
        self._core.close()

    async def __aenter__(self) -> AsyncClusterHandle:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncClusterHandle {self._core.cluster} {self._core.domain}>"


async def open_cluster_handle(cluster: str, domain: str = USER, *, recovery_ok: bool = False,
                              local_dir: str | None = None,
                              daemon_uid: int | Iterable[int] | None = None,
                              timeout: float | None = 30.0, codec: str | int = "xmlrpc",
                              abstract: bool = False) -> AsyncClusterHandle:
    """The asyncio :func:`get_cluster_handle` (same arguments and errors)."""
    return AsyncClusterHandle(_HandleCore(cluster, domain, recovery_ok=recovery_ok,
                                          local_dir=local_dir, daemon_uid=daemon_uid,
                                          codec=codec, timeout=timeout, abstract=abstract))
