"""The server side of the local API: a node's local services on Unix sockets, one per service
and security domain, and a :class:`LocalClient` per connection (``spec/local.md``).

A :class:`~clusterrpc.Node` builds one :class:`LocalServer` when it serves something locally
(``node.serve_local(obj, name="locks")``) and starts it with its listeners. Each connection
is one packet :class:`~clusterrpc.rpc.protocol.Connection` (unauthenticated ``none`` packets:
the kernel vouches for the peer) on a :class:`~clusterrpc.transports.local.LocalStream`; it
serves the client's calls and carries the server's one-way event calls back to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import grp
import logging
import os
import socket
import typing
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Final

from clusterrpc.codecs import CallMessage
from clusterrpc.errors import (
    ConfigurationError,
    ConnectionClosedError,
    ConnectionLostError,
    EncodeError,
    Fault,
    FaultCode,
)
from clusterrpc.local import protocol as wire
from clusterrpc.local.paths import (
    SYSTEM,
    USER,
    check_directory,
    check_domain_name,
    check_service_name,
    make_directories,
    socket_path,
)
from clusterrpc.local.protocol import DomainPolicy, EventQueue, Holds, TransitionGate
from clusterrpc.rpc.context import CallContext, current_call
from clusterrpc.rpc.protocol import Connection, Dispatcher, Messenger, Started
from clusterrpc.rpc.service import ServiceRegistry
from clusterrpc.transports.addresses import local_fd_name
from clusterrpc.transports.engine import AsyncDriver
from clusterrpc.transports.local import (
    Credentials,
    LocalListener,
    LocalStream,
    bind_local_socket,
    check_inherited_local_socket,
    peer_credentials,
)
from clusterrpc.values import Value

if typing.TYPE_CHECKING:
    from clusterrpc.transports.engine import Serving

__all__ = [
    "ACCESS_DENIED",
    "NAME_TAKEN",
    "NOT_GREETED",
    "SYSTEM_SERVICE",
    "LocalClient",
    "LocalDomain",
    "LocalServer",
]

log = logging.getLogger("clusterrpc.local")

ACCESS_DENIED: Final = -32001
"""Fault code: the domain does not admit the caller, or ``recovery_ok`` outside ``SYSTEM``."""
NOT_GREETED: Final = -32002
"""Fault code: a call before ``local.hello`` (the connection is then closed)."""
NAME_TAKEN: Final = -32003
"""Fault code: ``local.registerClient`` with a name another live client holds."""

SYSTEM_SERVICE: Final = "system"
"""The socket every local API has in every domain: ``system.*`` and ``local.*`` only."""

EVICTION_LINGER: Final = 1.0
"""Seconds an evicted client's last frame may wait to be read before the socket is dropped."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalDomain:
    """A security domain's socket permissions. ``mode``: the socket files' mode; ``owner`` and
    ``group``: user and group (names or numbers) of the files; ``None`` means the daemon's own
    uid, and for the group: the ``clusterrpc`` group where it exists (``SYSTEM``'s default),
    else the daemon's primary group. The defaults: ``USER`` 0666, ``SYSTEM`` 0660
    ``root:clusterrpc`` (when the daemon runs as root). Raises
    :class:`~clusterrpc.errors.ConfigurationError` for a mode outside 0o000-0o777."""

    mode: int = 0o660
    owner: int | str | None = None
    group: int | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.mode, bool) or not isinstance(self.mode, int) or not (
                0 <= self.mode <= 0o777):
            raise ConfigurationError(f"a domain's mode is 0o000-0o777, not {self.mode!r}")

    def policy(self, name: str) -> DomainPolicy:
        """Resolve owner and group into a :class:`~clusterrpc.local.protocol.DomainPolicy`.
        Raises :class:`~clusterrpc.errors.ConfigurationError` for an unknown user or group."""
        import pwd  # noqa: PLC0415 - only where domains are built

        uid = os.geteuid()
        if isinstance(self.owner, str):
            try:
                uid = pwd.getpwnam(self.owner).pw_uid
            except KeyError:
                raise ConfigurationError(f"domain {name}: no user {self.owner!r}") from None
        elif isinstance(self.owner, int):
            uid = self.owner
        gid = os.getegid()
        if isinstance(self.group, str):
            try:
                gid = grp.getgrnam(self.group).gr_gid
            except KeyError:
                raise ConfigurationError(f"domain {name}: no group {self.group!r}") from None
        elif isinstance(self.group, int):
            gid = self.group
        elif name == SYSTEM:
            # No clusterrpc group on this host: the daemon's own group.
            with contextlib.suppress(KeyError):
                gid = grp.getgrnam("clusterrpc").gr_gid
        return DomainPolicy(name, self.mode, uid, gid)


DEFAULT_DOMAINS: Final[Mapping[str, LocalDomain]] = {
    USER: LocalDomain(mode=0o666),
    SYSTEM: LocalDomain(mode=0o660),
}
"""The domains every node has (configure more, or other permissions, in ``local_domains=``)."""


class LocalClient:
    """One local connection, as a served method sees it (``current_call().client``).

    ``uid``, ``gid``, ``groups`` and ``pid`` are the kernel's ``SO_PEERCRED`` and
    ``SO_PEERGROUPS`` of the connecting process, read at accept (the pid is advisory: the
    process may have exited and its number been reused); ``domain`` and ``service`` name the
    socket it connected to; ``recovery`` is whether it is a recovery handle; ``name`` the name
    it registered, if any.

    :meth:`hold` ties a resource's release to the connection: it runs exactly once when the
    connection ends for any reason (EOF, reset, the process killed, a protocol error,
    eviction). :meth:`notify` sends an event for a cookie the client gave. Use it from the
    node's event loop only.
    """

    def __init__(self, server: LocalServer, endpoint: _Endpoint, sock: socket.socket,
                 credentials: Credentials, *, granted: bool = False) -> None:
        self.server = server
        self.uid = credentials.uid
        self.gid = credentials.gid
        self.groups = credentials.groups
        self.pid = credentials.pid
        self.domain = endpoint.domain
        self.service = endpoint.service
        self.recovery = False
        self.greeted = False
        self.admitted = granted or endpoint.policy.admits(credentials.uid, credentials.gid,
                                                          credentials.groups)
        """Whether the domain admits the peer (the server's own check; a grant admits)."""
        self.name: str | None = None
        self.evicted: str | None = None
        """Why the server evicted the client, or ``None``."""
        self._holds = Holds()
        self._loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._events = EventQueue(max_events=server.max_events, max_bytes=server.max_event_bytes,
                                  grace=server.eviction_grace)
        self.connection = Connection(
            server.messenger, dispatcher=endpoint.dispatcher, transport="local",
            peer=f"local:pid={self.pid},uid={self.uid}", max_in_flight=server.max_in_flight,
            max_running=server.max_in_flight, client=self,
        )  # fmt: skip
        self.driver = AsyncDriver(self.connection, flush=self._flush, serving=server.serving,
                                  broken=self._broken)
        self.stream = LocalStream(sock, receive=self._receive, lost=self._lost,
                                  drained=self._drained)
        self._read_paused = False

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return (f"<LocalClient{name} pid={self.pid} uid={self.uid} {self.domain}/"
                f"{self.service}>")

    # -- what services use ---------------------------------------------------------------------

    @property
    def closed(self) -> asyncio.Future[None]:
        """An awaitable that completes when the connection has ended (and every release
        ran)."""
        return self._closed

    @property
    def is_closed(self) -> bool:
        """Whether the connection has ended."""
        return self._closed.done()

    @property
    def events_queued(self) -> int:
        """Events waiting because the client does not read fast enough."""
        return len(self._events)

    def hold(self, resource: Hashable, release: Callable[[], object]) -> None:
        """Run ``release()`` exactly once when this client's connection ends, unless
        :meth:`forget` comes first. If the client has already gone, ``release()`` runs now.
        Raises ``ValueError`` if ``resource`` is already held by this client."""
        if not self._holds.hold(resource, release):
            _run_release(resource, release, self)

    def forget(self, resource: Hashable) -> bool:
        """The client released ``resource`` itself: drop its release callback without running
        it. Returns whether it was held."""
        return self._holds.forget(resource)

    def holds(self, resource: Hashable) -> bool:
        """Whether ``resource`` is held by this client (registered with :meth:`hold`)."""
        return resource in self._holds

    def notify(self, cookie: int, payload: Value = None) -> int | None:
        """Send the event ``(cookie, payload)`` to the client as a one-way call on its
        connection; return the event's sequence number, or ``None`` if the client has gone
        (nothing is sent). Never blocks: if the client does not read, the event waits in a
        bounded queue, and a client whose queue stays over its bound is evicted
        (``spec/local.md``, "Eviction"). Raises :class:`~clusterrpc.errors.EncodeError` for
        a payload the codec cannot carry."""
        if self.is_closed:
            return None
        sequence = self.server.next_sequence()
        self.connection.send_call(wire.EVENT, (cookie, payload, sequence), now=self._loop.time(),
                                  timeout=None, oneway=True)
        data = self.connection.data_to_send()
        stream = self.stream
        if not len(self._events) and not stream.write_paused:
            stream.write(data)
        elif not self._events.push(data, now=self._loop.time()):
            self.evict(f"its event queue passed its bound ({self.server.max_events} events, "
                       f"{self.server.max_event_bytes} bytes) and did not shrink")
        return sequence

    def evict(self, reason: str) -> None:
        """Disconnect the client: its resources are released now, its queued events dropped,
        and a last frame tells it ``reason`` where the socket can still take it."""
        if self.is_closed:
            return
        self.evicted = reason
        self.server.counters["evicted"] += 1
        log.warning("evicting local client %r: %s", self, reason)
        self._events.clear()
        try:
            self.connection.send_call(wire.EVICTED, (reason,), now=self._loop.time(),
                                      timeout=None, oneway=True)
            self.stream.write(self.connection.data_to_send())
        except EncodeError:
            pass
        self.stream.close(linger=EVICTION_LINGER)
        self._end(ConnectionLostError(f"evicted: {reason}"))

    def grant_domain(self, domain: str, service: str | None = None) -> int:
        """Hand the client a connection to ``service`` (default: the one it called) in
        ``domain``, with this connection's credentials: the security server's primitive
        (``spec/local.md``, "fd passing"). The socket travels by ``SCM_RIGHTS`` ahead of the
        answer of the method calling this; return the grant's number, which the method returns
        so the client can take it (``handle.accept_grant(number)``). Only a service that has
        checked the client's right to ``domain`` may call this. Raises
        :class:`~clusterrpc.errors.ConfigurationError` if the service is not served in
        ``domain``, :class:`~clusterrpc.errors.ConnectionClosedError` if the client has
        gone."""
        if self.is_closed:
            raise ConnectionClosedError("the client has gone")
        return self.server.grant(self, domain, service or self.service)

    def close(self) -> None:
        """End the connection (answers already queued are sent first)."""
        self.stream.close(linger=EVICTION_LINGER)

    # -- the stream ------------------------------------------------------------------------

    def _receive(self, data: memoryview, fds: list[int]) -> None:
        connection = self.connection
        connection.receive_data(data, now=self._loop.time())
        self.driver.process()
        if self._must_pause():
            self._pause()

    def _must_pause(self) -> bool:
        connection = self.connection
        if self.stream.write_paused:
            return True
        if connection.held:
            # Stalled calls are read into the backlog, so that their deadlines count from
            # their arrival; reading stops once max_in_flight of them wait.
            return connection.waiting >= self.server.max_in_flight
        return connection.paused

    def _flush(self) -> None:
        data = self.connection.data_to_send()
        if data:
            self.stream.write(data)
        if self._must_pause():
            self._pause()
        elif self._read_paused:
            self._resume()

    def _drained(self) -> None:
        events, stream = self._events, self.stream
        now = self._loop.time()
        while not stream.write_paused:
            packet = events.pop(now=now)
            if packet is None:
                break
            stream.write(packet)
        if self._read_paused and not self._must_pause():
            self._resume()

    def _pause(self) -> None:
        if not self._read_paused:
            self._read_paused = True
            self.stream.pause_reading()

    def _resume(self) -> None:
        if self._read_paused:
            self._read_paused = False
            self.stream.resume_reading()

    def stall(self, stalled: bool) -> None:
        """Hold this connection's calls (a transition opened) or let them go (it closed);
        recovery clients are never held."""
        if self.recovery or self.is_closed:
            return
        self.connection.held = stalled
        if not stalled:
            self.driver.process()
            if self._read_paused and not self._must_pause():
                self._resume()

    def _broken(self, error: Exception) -> None:
        log.warning("closing local connection %r: %s", self, error)
        self.stream.abort()

    def _lost(self, error: Exception | None) -> None:
        self._end(error or ConnectionLostError("the local client closed the connection"))

    def _end(self, error: Exception) -> None:
        if self._closed.done():
            return
        server = self.server
        server.clients.discard(self)
        server.release_name(self)
        self._events.clear()
        self.driver.close(error if isinstance(error, ConnectionLostError)
                          else ConnectionLostError(str(error)))
        for resource, release in self._holds.end():
            _run_release(resource, release, self)
        self._closed.set_result(None)


def _run_release(resource: Hashable, release: Callable[[], object], client: LocalClient
                 ) -> None:
    try:
        release()
    except Exception:
        log.exception("releasing %r held by %r failed", resource, client)


class _Endpoint:
    """One socket: a service in a domain, with its dispatcher."""

    __slots__ = ("dispatcher", "domain", "inherited", "listener", "path", "policy", "service")

    def __init__(self, service: str, domain: str, policy: DomainPolicy, path: str,
                 dispatcher: _LocalDispatcher) -> None:
        self.service = service
        self.domain = domain
        self.policy = policy
        self.path = path
        self.dispatcher = dispatcher
        self.listener: LocalListener | None = None
        self.inherited = False  # served on a socket a service manager passed (not ours)


class _LocalDispatcher(Dispatcher):
    """The serving rules of a local socket: nothing but ``local.hello`` before the handshake,
    and nothing at all for a peer the domain does not admit."""

    __slots__ = ()

    def start(self, message: Any, context: CallContext, *,
              answer_refusals: bool = False) -> Started:
        client = context.client
        if client is not None and not client.greeted and message.method != wire.HELLO:
            asyncio.get_running_loop().call_soon(client.close)
            return Fault(NOT_GREETED, "call local.hello first (spec/local.md, 'Handshake')")
        params = message.params
        if params and type(last := params[-1]) is dict and wire.KEYWORDS in last:
            try:
                message = self._bind_keywords(message, last)
            except Fault as fault:
                return self.finished(fault, context)
        return super().start(message, context, answer_refusals=answer_refusals)

    def _bind_keywords(self, message: CallMessage, last: dict[str, Value]) -> CallMessage:
        keywords = last[wire.KEYWORDS]
        method = self.registry.lookup(message.method)
        if len(last) != 1 or not isinstance(keywords, dict):
            raise Fault(FaultCode.INVALID_PARAMS, f"{message.method}: malformed keywords")
        try:
            bound = method.signature.bind(*message.params[:-1], **keywords)
        except TypeError as error:
            raise Fault(FaultCode.INVALID_PARAMS, f"{message.method}: {error}") from None
        bound.apply_defaults()
        if bound.kwargs:
            raise Fault(FaultCode.INVALID_PARAMS,
                        f"{message.method}: keyword-only parameters cannot be called")
        return CallMessage(message.method, tuple(bound.args))


class LocalServer:
    """The local API of one node (module docstring). Built by the node; ``serve`` adds
    services before or after ``start``. Counters: ``connections``, ``refused`` (domain or
    recovery refusals), ``evicted``, ``grants``."""

    def __init__(self, *, node: str, cluster: str, local_dir: str,
                 domains: Mapping[str, LocalDomain], serving: Serving, abstract: bool = False,
                 max_in_flight: int = 256, max_events: int = 1024,
                 max_event_bytes: int = 1 << 20, eviction_grace: float = 2.0,
                 debug: bool = False, codec: str | int = "xmlrpc",
                 gate: TransitionGate | None = None) -> None:
        for name in domains:
            check_domain_name(name)
        self.node = node
        self.cluster = cluster
        self.local_dir = os.path.abspath(local_dir)
        self.abstract = abstract
        self.domains = {name: domain.policy(name) for name, domain in domains.items()}
        self.serving = serving
        self.debug = debug
        self.max_in_flight = max_in_flight
        self.max_events = max_events
        self.max_event_bytes = max_event_bytes
        self.eviction_grace = eviction_grace
        # Local packets are unauthenticated (scheme none): the kernel vouches for the peer.
        self.messenger = Messenger(node=node, cluster=cluster, keyring=None, insecure=True,
                                   codec=codec, epoch=serving.messenger.epoch,
                                   clock=serving.messenger.clock)
        self.gate = gate if gate is not None else TransitionGate()
        """The node's transition gate (``node.transition()`` opens and closes it and calls
        :meth:`stall`)."""
        self.clients: set[LocalClient] = set()
        self.counters: dict[str, int] = dict.fromkeys(
            ("connections", "refused", "evicted", "grants"), 0)
        self._services: dict[str, tuple[ServiceRegistry, tuple[str, ...]]] = {}
        self._endpoints: dict[tuple[str, str], _Endpoint] = {}
        self._names: dict[tuple[str, str], LocalClient] = {}
        self._grants: dict[int, socket.socket] = {}
        self._sequence = 0
        self._grant_numbers = 0
        self._started = False
        self._inherited: Mapping[str, socket.socket] = {}
        self._add_service(SYSTEM_SERVICE, None, tuple(self.domains))

    # -- services ------------------------------------------------------------------------------

    def serve(self, obj: object, *, name: str, domains: Sequence[str] | None = None
              ) -> list[str]:
        """Serve ``obj``'s methods as ``name.*`` on a socket in each of ``domains`` (default:
        every configured domain; leaving one out hides the service there). Raises
        :class:`~clusterrpc.errors.ConfigurationError` for a bad name, an unknown domain or a
        name already served."""
        check_service_name(name)
        if name == SYSTEM_SERVICE or name in self._services:
            raise ConfigurationError(f"local service {name!r} is already served")
        chosen = tuple(self.domains) if domains is None else tuple(domains)
        for domain in chosen:
            if domain not in self.domains:
                known = ", ".join(sorted(self.domains))
                raise ConfigurationError(f"no domain {domain!r} (configured: {known})")
        return self._add_service(name, obj, chosen)

    def _add_service(self, name: str, obj: object | None, domains: tuple[str, ...]
                     ) -> list[str]:
        registry = ServiceRegistry(debug=self.debug)
        published = registry.serve(obj, name=name) if obj is not None else []
        registry.publish(wire.HELLO, self._hello)
        registry.publish(wire.REGISTER_CLIENT, self._register_client)
        registry.publish(wire.LIST_SERVICES, self._list_services)
        registry.publish(wire.LIST_CLIENTS, self._list_clients)
        self._services[name] = (registry, domains)
        for domain in domains:
            path = socket_path(self.local_dir, self.cluster, name, domain)
            dispatcher = _LocalDispatcher(registry)
            dispatcher.counters = self.serving.counters  # one set of serving counters per node
            endpoint = _Endpoint(name, domain, self.domains[domain], path, dispatcher)
            self._endpoints[(name, domain)] = endpoint
            if self._started:
                self._listen(endpoint)
        return published

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, *, inherited: Mapping[str, socket.socket] | None = None) -> None:
        """Create the directories and bind every socket. Raises
        :class:`~clusterrpc.errors.LocalAccessError` for an unsafe directory (a symlink, or
        writable by others) or permissions that cannot be set, and
        :class:`~clusterrpc.errors.TransportError` for a socket that cannot be bound.

        ``inherited``: sockets a service manager passed, by file-descriptor name; the
        endpoint of ``SERVICE`` in ``DOMAIN`` serves on a duplicate of the one named
        ``local.SERVICE.DOMAIN`` instead of binding (``spec/systemd.md``), once
        :func:`~clusterrpc.transports.local.check_inherited_local_socket` accepts it (else
        :class:`~clusterrpc.errors.ConfigurationError` or ``LocalAccessError``); services
        added later look there too. Its file is never removed: it is the manager's."""
        if self._started:
            return
        self._inherited = dict(inherited or {})
        try:
            for endpoint in self._endpoints.values():
                self._listen(endpoint)
        except BaseException:
            self.close()
            raise
        self._started = True

    def _owners(self) -> frozenset[int]:
        return frozenset({0, os.geteuid()})

    @property
    def inherited_names(self) -> list[str]:
        """The file-descriptor names of the inherited sockets endpoints serve on."""
        return [local_fd_name(endpoint.service, endpoint.domain)
                for endpoint in self._endpoints.values() if endpoint.inherited]

    def _listen(self, endpoint: _Endpoint) -> None:
        policy = endpoint.policy
        given = self._inherited.get(local_fd_name(endpoint.service, endpoint.domain))
        if given is not None:
            if not self.abstract:
                # The manager made the directories; they must be as safe as ours would be.
                check_directory(os.path.dirname(endpoint.path), below=self.local_dir,
                                owners=self._owners())
            check_inherited_local_socket(given, endpoint.path, mode=policy.mode,
                                         uid=policy.uid, gid=policy.gid,
                                         abstract=self.abstract)
            sock = given.dup()
            sock.setblocking(False)
            endpoint.inherited = True
        else:
            if not self.abstract:
                make_directories(os.path.dirname(endpoint.path), below=self.local_dir,
                                 owners=self._owners())
            sock = bind_local_socket(endpoint.path, mode=policy.mode, uid=policy.uid,
                                     gid=policy.gid, abstract=self.abstract)
            endpoint.inherited = False
        # Every connection goes through _accept: the peer's credentials against the domain,
        # whoever bound the socket.
        endpoint.listener = LocalListener(
            sock, endpoint.path, lambda accepted: self._accept(endpoint, accepted),
            abstract=self.abstract)

    def stop_accepting(self) -> None:
        """Stop accepting connections (those open keep being served); the socket files go."""
        for endpoint in self._endpoints.values():
            if endpoint.listener is not None:
                endpoint.listener.close(unlink=not endpoint.inherited)
                endpoint.listener = None

    def close(self) -> None:
        """Stop accepting, close every connection (their releases run), remove the socket
        files."""
        self._started = False
        self.stop_accepting()
        for client in list(self.clients):
            client.stream.abort()
        for sock in self._grants.values():
            sock.close()
        self._grants.clear()

    @property
    def paths(self) -> dict[tuple[str, str], str]:
        """(service, domain) → socket path."""
        return {key: endpoint.path for key, endpoint in self._endpoints.items()}

    # -- connections ---------------------------------------------------------------------------

    def _accept(self, endpoint: _Endpoint, sock: socket.socket,
                credentials: Credentials | None = None) -> LocalClient | None:
        try:
            granted = credentials is not None
            client = LocalClient(self, endpoint, sock,
                                 credentials or peer_credentials(sock), granted=granted)
        except ConnectionLostError as error:  # the peer left before we looked at it
            log.debug("local connection on %s lost at accept: %s", endpoint.path, error)
            sock.close()
            return None
        except BaseException:
            sock.close()
            raise
        self.clients.add(client)
        self.counters["connections"] += 1
        if not client.admitted:
            log.info("local domain %s refuses uid %d (pid %d)", endpoint.domain, client.uid,
                     client.pid)
        return client

    def next_sequence(self) -> int:
        """The next event sequence number (node-wide, increasing)."""
        self._sequence += 1
        return self._sequence

    @property
    def sequence(self) -> int:
        """The last event sequence number given out: a snapshot taken now is followed by the
        events numbered above it."""
        return self._sequence

    def release_name(self, client: LocalClient) -> None:
        """Forget the name ``client`` registered (it has gone)."""
        if client.name is not None and self._names.get((client.domain, client.name)) is client:
            del self._names[(client.domain, client.name)]

    def grant(self, client: LocalClient, domain: str, service: str) -> int:
        """See :meth:`LocalClient.grant_domain`."""
        endpoint = self._endpoints.get((service, domain))
        if endpoint is None:
            raise ConfigurationError(f"local service {service!r} is not served in {domain}")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setblocking(False)
        self._accept(endpoint, ours, Credentials(client.pid, client.uid, client.gid,
                                                 client.groups))
        self._grant_numbers += 1
        number = self._grant_numbers
        client.connection.send_call(wire.GRANTED, (number, domain, service),
                                    now=asyncio.get_running_loop().time(), timeout=None,
                                    oneway=True)
        fd = os.dup(theirs.fileno())
        theirs.close()
        client.stream.write(client.connection.data_to_send(), (fd,))  # the stream closes fd
        self.counters["grants"] += 1
        return number

    # -- transitions ---------------------------------------------------------------------------

    def stall(self, stalled: bool) -> None:
        """The gate opened (``True``: ordinary clients' calls stall from now on) or closed
        (stalled calls proceed, in order)."""
        for client in list(self.clients):
            if client.greeted or not stalled:
                client.stall(stalled)

    # -- built-in methods ----------------------------------------------------------------------

    def _hello(self, options: dict[str, Value]) -> dict[str, Value]:
        client = _client()
        if client.greeted:
            raise Fault(FaultCode.INVALID_REQUEST, "local.hello was already called")
        loop = asyncio.get_running_loop()
        if options.get("version") != wire.PROTOCOL_VERSION:
            loop.call_soon(client.close)
            raise Fault(FaultCode.INVALID_REQUEST,
                        f"local API version {options.get('version')!r} is not supported "
                        f"(this server speaks {wire.PROTOCOL_VERSION})")
        recovery = options.get("recovery_ok") is True
        refusal = None
        if not client.admitted:
            refusal = (f"domain {client.domain} does not admit uid {client.uid} "
                       f"(gid {client.gid})")
        elif recovery and client.domain != SYSTEM:
            refusal = (f"recovery_ok handles are allowed only in the SYSTEM domain, not "
                       f"{client.domain}")
        if refusal is not None:
            self.counters["refused"] += 1
            loop.call_soon(client.close)
            raise Fault(ACCESS_DENIED, refusal)
        client.greeted = True
        client.recovery = recovery
        if self.gate.is_open and not recovery:
            client.stall(True)  # what follows the handshake waits for the transition's end
        return {"version": wire.PROTOCOL_VERSION, "node": self.node, "cluster": self.cluster,
                "service": client.service, "domain": client.domain, "uid": client.uid,
                "gid": client.gid, "pid": client.pid, "sequence": self._sequence}

    def _register_client(self, name: str) -> bool:
        client = _client()
        if not name or len(name) > 128:
            raise Fault(FaultCode.INVALID_PARAMS, "a client name is 1-128 characters")
        key = (client.domain, name)
        holder = self._names.get(key)
        if holder is client:
            return True
        if holder is not None and not holder.is_closed:
            raise Fault(NAME_TAKEN, f"{name!r} is registered by pid {holder.pid} in "
                                    f"{client.domain}")
        if client.name is not None:
            self.release_name(client)
        client.name = name
        self._names[key] = client
        return True

    def _list_services(self) -> list[Value]:
        domain = _client().domain
        listed: list[Value] = []
        for name, (registry, domains) in sorted(self._services.items()):
            if domain not in domains:
                continue  # hidden from this domain: the namespace is not browsable here
            methods: list[Value] = [method for method in registry.names()
                                    if not method.startswith(("system.", "local."))]
            listed.append({"name": name, "domains": list(domains), "methods": methods})
        return listed

    def _list_clients(self) -> list[Value]:
        domain = _client().domain
        listed: list[Value] = []
        for client in sorted(self.clients, key=lambda each: (each.domain, each.pid)):
            if domain not in (SYSTEM, client.domain):
                continue  # only SYSTEM sees every domain's clients
            listed.append({
                "uid": client.uid, "gid": client.gid, "pid": client.pid,
                "domain": client.domain, "service": client.service,
                "name": client.name or "", "recovery": client.recovery,
                "events_queued": client.events_queued,
            })  # fmt: skip
        return listed


def _client() -> LocalClient:
    client = current_call().client
    if client is None:  # a local built-in called over the network: never published there
        raise Fault(FaultCode.INVALID_REQUEST, "a local API method, for local clients only")
    return client
