"""Standard XML-RPC over HTTP: a node's endpoint for any XML-RPC client, and our client for any
XML-RPC server (``spec/http.md``).

The HTTP interop is the one place where clusterrpc speaks plain, standard XML-RPC: no packet
header, no signature, one ``POST`` per call. So that Python's :class:`xmlrpc.client.ServerProxy`
(or any other language's XML-RPC client) can call node methods, and our channels can call any
XML-RPC server.

Theory of operation
-------------------
HTTP/1.1 is parsed by h11, a sans-I/O HTTP library: we hand it bytes and get events back
(``Request``, ``Data``, ``EndOfMessage`` …), and it tells us whether the connection can carry
another request. No HTTP is parsed by hand here. Around it:

* :class:`HttpServer` accepts connections with :func:`asyncio.start_server`; each connection is
  served by one task (:class:`_ServerConnection`) that reads a request with deadlines (the
  headers within ``header_timeout`` of the first byte, the body within ``body_timeout``, and an
  idle keep-alive connection is closed after ``idle_timeout``), checks path, method, credentials
  and size in that order, decodes the body with :class:`~clusterrpc.codecs.xmlrpc.XmlRpcCodec`,
  runs the call through :meth:`ServiceRegistry.invoke` and writes the response. Requests on one
  connection are served one after another (HTTP/1.1 answers in request order).
* :class:`_ClientProtocol` is the sans-I/O client half: it turns a body into request bytes and
  response bytes into a :class:`_Response`. :class:`HttpBlockingChannel` drives it with a
  blocking socket, :class:`HttpChannel` with asyncio streams. Each keeps one keep-alive
  connection and reconnects when the server closed it.

Credentials are HTTP Basic: the user name is a key id of the server's keyring, the password a
*token* derived from that key (:func:`http_token`), so the key's secret itself never travels.
Over plain ``http://`` the token travels in clear text and can be replayed by anyone who sees
it: use ``https://`` (or loopback) where that matters.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import dataclasses
import email.utils
import hashlib
import hmac
import http
import inspect
import logging
import math
import select
import socket
import ssl
import threading
import time
import typing
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Final

import h11

from clusterrpc.codecs.base import Codec, FaultMessage
from clusterrpc.codecs.xmlrpc import XmlRpcCodec
from clusterrpc.errors import (
    CallTimeoutError,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    DecodeError,
    EncodeError,
    Fault,
    FaultCode,
    HTTPError,
    LimitExceededError,
    TransportError,
)
from clusterrpc.keyring import Key, Keyring
from clusterrpc.rpc.context import new_call_context
from clusterrpc.rpc.protocol import NO_ANSWER, Dispatcher
from clusterrpc.rpc.service import ServiceRegistry
from clusterrpc.transports.addresses import Address, parse_address
from clusterrpc.transports.base import AsyncChannel, BlockingChannel
from clusterrpc.transports.errors import (
    CONFIGURING,
    CONNECTING,
    CONNECTION_LOST,
    LISTENING,
    map_os_errors,
    translate,
)
from clusterrpc.values import DEFAULT_LIMITS, Limits, Value

__all__ = [
    "REALM",
    "TOKEN_CONTEXT",
    "HttpAuth",
    "HttpBlockingChannel",
    "HttpChannel",
    "HttpServer",
    "Page",
    "http_credentials",
    "http_token",
    "server_ssl_context",
    "split_userinfo",
]

_log = logging.getLogger("clusterrpc.http")

TOKEN_CONTEXT: Final = b"clusterrpc-http-token-v1\x00"
"""What the HMAC of an HTTP token covers before the key id (``spec/http.md``, "Credentials"):
it keeps tokens apart from every other use of the same key."""

REALM: Final = "clusterrpc"
"""The HTTP Basic realm named in ``WWW-Authenticate``."""

_CHUNK = 65536
"""Bytes read from a socket at a time."""
_MAX_HEAD = 16 * 1024
"""Largest request or response head (request line and headers); beyond it: 431 / an error."""
_LINGER = 2.0
"""Most seconds the server keeps reading (and dropping) a refused request before it closes
(see ``_ServerConnection._linger``)."""
_CLOSE_WAIT = 1.0
"""Seconds to wait for a closed connection to finish closing (a TLS close) before aborting."""
_PRODUCT = b"clusterrpc"
_PHRASES = {status.value: status.phrase.encode("ascii") for status in http.HTTPStatus}
_XML_TYPE = b"text/xml; charset=utf-8"
# A page may load only what its own origin serves, and may not be framed or sniffed.
_PAGE_HEADERS = (
    (b"Cache-Control", b"no-store"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Content-Security-Policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
     b"connect-src 'self'; frame-ancestors 'none'; form-action 'self'"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    """A resource an :class:`HttpServer` serves to ``GET`` (its ``pages``): the
    ``Content-Type`` header's value and the body."""

    content_type: bytes
    body: bytes


# -- credentials ------------------------------------------------------------------------------


def http_token(key: Key) -> str:
    """The HTTP Basic password for ``key``: the hex HMAC-SHA256, keyed with ``key.secret``, of
    :data:`TOKEN_CONTEXT` followed by the key id in UTF-8 (``spec/http.md``, "Credentials").

    64 lower-case hex digits. The token grants access to every HTTP endpoint that holds ``key``;
    it does not reveal the secret (nor any other key's token).
    """
    message = TOKEN_CONTEXT + key.key_id.encode("utf-8")
    return hmac.new(key.secret, message, hashlib.sha256).hexdigest()


def http_credentials(keyring: Keyring, key_id: str | None = None) -> tuple[str, str]:
    """The ``(username, token)`` a client presents to a node's HTTP endpoint: the key id and its
    :func:`http_token`. ``key_id`` defaults to the keyring's signing key.

    Raises :class:`~clusterrpc.errors.ConfigurationError` if the keyring has no keys, and
    :class:`~clusterrpc.errors.KeyringError` (a ``ConfigurationError``) if ``key_id`` is not in
    it, or it is ``None`` and the keyring has no signing key.
    """
    if not keyring.keys:
        raise ConfigurationError("the keyring has no keys to derive HTTP credentials from")
    if key_id is None:
        key = keyring.signing_key()
    else:
        found = keyring.keys.get(key_id)
        if found is None:
            raise ConfigurationError(f"no key {key_id!r} in the keyring for HTTP credentials")
        key = found
    return key.key_id, http_token(key)


def _basic_authorization(credentials: tuple[str, str]) -> bytes:
    username, token = credentials
    if ":" in username:
        raise ConfigurationError("an HTTP Basic user name cannot contain ':'")
    pair = f"{username}:{token}".encode()
    return b"Basic " + binascii.b2a_base64(pair, newline=False)


class HttpAuth:
    """The server's credential check: HTTP Basic with a key id of ``keyring`` as the user name
    and that key's :func:`http_token` as the password.

    Every key of the keyring is accepted (not only the signing key), so keys rotate as they do
    for packets (``spec/keyring.md``, "Rotation"). Tokens are computed once, here; a keyring
    change means a new ``HttpAuth``. Raises :class:`~clusterrpc.errors.ConfigurationError` if
    the keyring has no keys: nobody could ever authenticate.
    """

    __slots__ = ("_tokens",)

    def __init__(self, keyring: Keyring) -> None:
        if not keyring.keys:
            raise ConfigurationError(
                "the keyring has no keys, so no HTTP client could authenticate "
                "(add a key, or make the endpoint explicitly insecure)"
            )
        self._tokens = {
            key_id.encode("utf-8"): http_token(key).encode("ascii")
            for key_id, key in keyring.keys.items()
        }

    def check(self, authorization: bytes | None) -> str | None:
        """The key id that the ``Authorization`` header value ``authorization`` proves, or
        ``None`` if it is missing, malformed or wrong. Tokens are compared in constant time."""
        if authorization is None:
            return None
        scheme, _, encoded = authorization.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return None
        try:
            decoded = binascii.a2b_base64(encoded.strip(), strict_mode=True)
        except binascii.Error:
            return None
        username, colon, password = decoded.partition(b":")
        expected = self._tokens.get(username)
        if not colon or expected is None:
            return None  # key ids are not secret: no need to hide which ones exist
        if not hmac.compare_digest(password, expected):
            return None
        return username.decode("utf-8")


def server_ssl_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A TLS server context for :class:`HttpServer` with the certificate chain in ``certfile``
    and its private key in ``keyfile`` (or in ``certfile`` too), TLS 1.2 or newer.

    Raises :class:`~clusterrpc.errors.ConfigurationError` if the files cannot be read or do not
    hold a matching certificate and key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with map_os_errors(f"cannot load the TLS certificate {certfile!r} (key "
                       f"{keyfile or certfile!r})", CONFIGURING):  # ssl.SSLError is an OSError
        context.load_cert_chain(certfile, keyfile)
    return context


# -- shared helpers ---------------------------------------------------------------------------


def _check_seconds(name: str, value: float | None, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
        value > 0 and math.isfinite(value)
    ):
        allowed = " or None" if optional else ""
        raise ConfigurationError(
            f"{name} must be a positive, finite number of seconds{allowed}, not {value!r}"
        )


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case; h11 lower-cases received names), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


def _request_path(target: bytes) -> bytes:
    """The path of a request target, without its query; absolute-form targets
    (``http://host/RPC2``, which RFC 9112 requires servers to accept) give their path."""
    path = target.partition(b"?")[0]
    if not path.startswith(b"/"):
        path = b"/" + path.partition(b"://")[2].partition(b"/")[2]
    return path


def _sent(data: bytes | None) -> bytes:
    """What ``h11.Connection.send`` returned for an event other than ``ConnectionClosed``."""
    assert data is not None
    return data


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- server -----------------------------------------------------------------------------------


class HttpServer:
    """A node's standard XML-RPC endpoint: answers ``POST`` requests to ``address``'s path with
    calls to ``registry`` (``spec/http.md``).

    Configuration (keyword-only):

    ``address``
        an ``http://host:port/path`` or ``https://…`` :class:`Address` (or URL); port 0 binds
        any free port (see :attr:`url`).
    ``registry``
        the methods served.
    ``keyring``, ``insecure``
        requests must carry HTTP Basic credentials for a key of ``keyring`` (:class:`HttpAuth`)
        unless ``insecure=True``, which serves anyone without credentials (the call context then
        has no ``key_id``). ``keyring=None`` without ``insecure`` is a configuration error.
    ``ssl_context``
        required for ``https://`` addresses (see :func:`server_ssl_context`), refused for
        ``http://`` ones, so the URL always says whether TLS is on.
    ``limits``
        the codec limits; ``limits.max_size`` bounds the request body (413 beyond it).
    ``header_timeout``
        seconds a request's head may take to arrive, from its first byte (for a connection's
        first request, from the connection's acceptance; it also bounds the TLS handshake).
        A client too slow is disconnected without an answer: slow-header attacks stay bounded.
    ``body_timeout``
        seconds the body may take after the head.
    ``idle_timeout``
        seconds a keep-alive connection may wait for its next request.
    ``max_connections``
        connections served at once; a connection beyond it is answered 503 and closed.
    ``pages``
        resources served to ``GET``/``HEAD`` beside the XML-RPC path, behind the same
        credentials: request path → :class:`Page` (the web console, ``clusterrpc.console``).
        Each is sent with ``Cache-Control: no-store``, ``X-Content-Type-Options: nosniff``,
        ``X-Frame-Options: DENY`` and a ``Content-Security-Policy`` allowing only this origin.
    ``sock``
        an already bound, listening TCP socket to serve on instead of binding ``address``
        (one a service manager passed, ``spec/systemd.md``); ``address`` gives the scheme and
        path, and :attr:`url` reports where the socket is bound. The endpoint owns it from
        :meth:`start` on.

    Raises :class:`~clusterrpc.errors.ConfigurationError` for an invalid configuration. Counts
    what it does in :attr:`counters` and logs to the ``clusterrpc.http`` logger.
    """

    def __init__(
        self,
        *,
        address: Address | str,
        registry: ServiceRegistry,
        keyring: Keyring | None = None,
        insecure: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        limits: Limits = DEFAULT_LIMITS,
        dispatcher: Dispatcher | None = None,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        max_connections: int = 256,
        sock: socket.socket | None = None,
        pages: Mapping[str, Page] | None = None,
    ) -> None:
        if isinstance(address, str):
            address = parse_address(address)
        if sock is not None and (sock.type != socket.SOCK_STREAM
                                 or sock.family not in (socket.AF_INET, socket.AF_INET6)):
            raise ConfigurationError(f"the socket given for {address} is not a TCP socket")
        self.given_socket = sock
        """The socket given to serve on (``sock``), or ``None``."""
        if address.scheme not in ("http", "https"):
            raise ConfigurationError(f"an HTTP endpoint needs an http(s):// address, not {address}")
        if address.scheme == "https" and ssl_context is None:
            raise ConfigurationError(
                f"{address} needs an ssl_context (see server_ssl_context(certfile, keyfile))"
            )
        if address.scheme == "http" and ssl_context is not None:
            raise ConfigurationError(f"an ssl_context was given for {address}: use https://")
        auth = None
        if not insecure:
            if keyring is None:
                raise ConfigurationError(
                    "an HTTP endpoint requires credentials: give a keyring, or insecure=True "
                    "to serve anyone"
                )
            auth = HttpAuth(keyring)
        for name, value in (("header_timeout", header_timeout), ("body_timeout", body_timeout),
                            ("idle_timeout", idle_timeout)):
            _check_seconds(name, value)
        if isinstance(max_connections, bool) or not isinstance(max_connections, int) or (
            max_connections <= 0
        ):
            raise ConfigurationError(
                f"max_connections must be a positive integer, not {max_connections!r}"
            )
        self.address = address
        self.registry = registry
        self.pages: dict[bytes, Page] = {}
        for where, page in (pages or {}).items():
            if not where.startswith("/") or where == (address.path or "/RPC2"):
                raise ConfigurationError(f"a page's path must start with '/' and differ from "
                                         f"the XML-RPC path, not {where!r}")
            self.pages[where.encode("ascii")] = page
        self.auth = auth
        """The credential check, or ``None`` when insecure. To rotate keys while serving,
        assign an :class:`HttpAuth` of the new keyring."""
        self.ssl_context = ssl_context
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.codec = XmlRpcCodec(limits=limits)
        self._nil_reply = self.codec.encode_reply(None)
        self.dispatcher = dispatcher if dispatcher is not None else Dispatcher(registry)
        """The serving rules and their counters, shared with a node's packet transports."""
        self.http_counters: dict[str, int] = dict.fromkeys(
            ("connections", "requests", "unauthorized", "bad_requests", "overloaded",
             "timeouts"), 0,
        )  # fmt: skip
        """``connections`` accepted; HTTP ``requests`` received (complete heads);
        ``unauthorized`` (401); ``bad_requests`` (400, 404, 405, 413, 431); ``overloaded``
        (503); ``timeouts`` (connections dropped for a slow head or body)."""
        self.path = (address.path or "/RPC2").encode("ascii")
        """The request path XML-RPC is served on (other paths are answered 404)."""
        self._transport = address.scheme
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _ServerConnection] = {}
        self._closing = False
        self._url: str | None = None
        self._date = (0, b"")

    @property
    def url(self) -> str:
        """The URL the endpoint is bound to, with the real port (``http://127.0.0.1:39731/RPC2``).
        Raises :class:`~clusterrpc.errors.ConnectionClosedError` before :meth:`start`."""
        if self._url is None:
            raise ConnectionClosedError("the HTTP endpoint is not started")
        return self._url

    @property
    def counters(self) -> dict[str, int]:
        """:attr:`http_counters` and the dispatcher's serving counters (``calls``,
        ``oneway_calls``, ``faults``, ``oneway_errors``, ``bad_calls`` …: ``spec/rpc.md``,
        "Counters"), as a snapshot. The serving counters are the node's when the endpoint
        belongs to a :class:`~clusterrpc.Node`."""
        return {**self.http_counters, **self.dispatcher.counters}

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closing

    async def start(self) -> None:
        """Bind and start accepting connections. Raises
        :class:`~clusterrpc.errors.TransportError` if the address cannot be bound (in use, not
        local, no permission), and
        :class:`~clusterrpc.errors.ConnectionClosedError` after :meth:`close`."""
        if self._closing:
            raise ConnectionClosedError("the HTTP endpoint was closed")
        if self._server is not None:
            return
        with map_os_errors(f"cannot listen on {self.address}", LISTENING):
            where = ({"sock": self.given_socket} if self.given_socket is not None
                     else {"host": self.address.host, "port": self.address.port})
            self._server = await asyncio.start_server(
                self._accept,
                **where,
                ssl=self.ssl_context,
                ssl_handshake_timeout=self.header_timeout if self.ssl_context else None,
                limit=_CHUNK,
            )
        host, port = self._server.sockets[0].getsockname()[:2]
        bound = dataclasses.replace(self.address, port=port)
        if self.given_socket is not None:  # an inherited socket: say where it really is bound
            bound = dataclasses.replace(bound, host=host)
        self._url = str(bound)
        _log.info("serving XML-RPC on %s", self._url)

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting connections, close idle ones, let requests in progress finish (their
        responses say ``Connection: close``) for up to ``drain_timeout`` seconds, then cancel
        what remains and close every connection. Idempotent."""
        _check_seconds("drain_timeout", drain_timeout)
        self._closing = True
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in self._connections.values():
            if connection.idle:
                # Closing the transport ends the pending read: the task ends by itself
                # (cancelling would do too, but a connection task that ends cancelled makes
                # Python 3.12.1's stream machinery log an error).
                connection.writer.close()
        tasks = set(self._connections)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        _log.info("stopped serving XML-RPC on %s", self._url)

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.http_counters["connections"] += 1
        connection = _ServerConnection(self, reader, writer)
        if self._closing:  # accepted just before close(), started just after it
            await connection.close()
            return
        overloaded = len(self._connections) >= self.max_connections
        self._connections[task] = connection
        try:
            await connection.run(overloaded=overloaded)
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # close() cancelled this request after its drain timeout: the connection is
            # closed and the task ends normally (see close()).
        finally:
            del self._connections[task]

    def _date_header(self) -> bytes:
        """The ``Date`` header value for now (RFC 9110 asks origin servers for one), computed
        at most once a second."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True).encode("ascii"))
        return self._date[1]

    def _fault(self, fault: Fault) -> bytes:
        """The fault response for ``fault``, or an ``INTERNAL_ERROR`` fault if it cannot be
        encoded (an application's message with characters XML cannot carry, a code beyond 32
        bits)."""
        try:
            return self.codec.encode_fault(fault.code, fault.message)
        except EncodeError as error:
            _log.warning("fault %r cannot be encoded (%s); answering %d", fault.code, error,
                         FaultCode.INTERNAL_ERROR)
            return self.codec.encode_fault(
                FaultCode.INTERNAL_ERROR, f"the fault cannot be encoded: {error.reason}"
            )

    async def dispatch(self, body: bytes, *, key_id: str | None, peer: str) -> bytes:
        """Run the XML-RPC request ``body`` and return the response body (a reply or a fault;
        never raises for anything the body holds). The serving rules and counters are the
        :class:`~clusterrpc.rpc.protocol.Dispatcher`'s, as for packets; HTTP differs only where
        ``spec/http.md`` says ("Requests and their answers"): a one-way method is answered with
        a nil reply once it has run, and a one-way call that cannot be made is answered with its
        fault."""
        dispatcher = self.dispatcher
        try:
            call = self.codec.decode_call(body)
        except DecodeError as error:
            _log.debug("undecodable request from %s: %s", peer, error)
            refusal = dispatcher.undecodable(error, oneway=False, sender="?", peer=peer)
            assert isinstance(refusal, Fault)
            return self._fault(refusal)
        method = self.registry.find(call.method)
        context = new_call_context(call.method, None, key_id, self._transport, peer, None,
                                   method is not None and method.oneway, False)
        answer = dispatcher.start(call, context, answer_refusals=True)
        if inspect.iscoroutine(answer):
            answer = await dispatcher.complete(answer, context)
        if answer is NO_ANSWER:
            # HTTP has no one-way request: the client waits for a response. The method's own
            # outcome is not reported, exactly as for a one-way packet; the answer is a nil
            # reply, sent once the method has run, so calls on a connection stay in order.
            return self._nil_reply
        if isinstance(answer, Fault):
            return self._fault(answer)
        try:
            return self.codec.encode_reply(typing.cast(Value, answer))
        except EncodeError as error:
            _log.warning("the result of %s cannot be encoded: %s", call.method, error)
            dispatcher.counters["faults"] += 1
            return self._fault(Fault(
                FaultCode.INTERNAL_ERROR, f"the result of {call.method} cannot be encoded: {error}"
            ))


class _Refused(Exception):
    """Raised inside :class:`_ServerConnection` to answer with an HTTP error and close."""

    def __init__(self, status: int, counter: str, headers: Sequence[tuple[bytes, bytes]] = ()):
        super().__init__(status)
        self.status = status
        self.counter = counter
        self.headers = list(headers)


class _ServerConnection:
    """One accepted connection of :class:`HttpServer`: reads requests, answers them."""

    __slots__ = ("conn", "head_request", "idle", "peer", "reader", "server", "writer")

    def __init__(
        self, server: HttpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self.idle = False
        """Whether nothing is in progress: the connection waits for a next request, or lingers
        after a refusal (``HttpServer.close`` closes it at once then)."""
        self.head_request = False
        """Whether the request being answered is a ``HEAD`` (answered without a body)."""
        peername = writer.get_extra_info("peername")
        self.peer = (
            _host_port(peername[0], peername[1]) if isinstance(peername, tuple) else "?"
        )

    async def run(self, *, overloaded: bool) -> None:
        server = self.server
        loop = asyncio.get_running_loop()
        deadline = loop.time() + server.header_timeout
        try:
            while True:
                request = await self._receive_request(deadline)
                if request is None:
                    return
                server.http_counters["requests"] += 1
                if overloaded:
                    raise _Refused(503, "overloaded", [(b"Retry-After", b"1")])
                if not await self._answer(request):
                    return
                self.conn.start_next_cycle()
                next_deadline = await self._wait_for_next_request()
                if next_deadline is None:
                    return
                deadline = next_deadline
        except _Refused as refusal:
            await self._refuse(refusal)
        except h11.RemoteProtocolError as error:
            # Not HTTP, or a head over _MAX_HEAD (431). h11 lets a server answer even then.
            _log.debug("bad HTTP from %s: %s", self.peer, error)
            await self._refuse(_Refused(error.error_status_hint, "bad_requests"))
        except TimeoutError as error:
            if error.errno is None:  # a deadline of ours, not the system's ETIMEDOUT
                server.http_counters["timeouts"] += 1
            _log.debug("dropped %s: request not received in time", self.peer)
        except OSError as error:
            _log.debug("connection from %s broke: %s", self.peer, error)
        except Exception:  # a bug: log it, drop this connection, keep serving the others
            _log.exception("internal error serving %s", self.peer)
        finally:
            self.idle = False
            await self.close()

    async def _wait_for_next_request(self) -> float | None:
        """Wait, idle, for the first byte of the next request (or use a pipelined one already
        buffered); return the deadline for its head, or ``None`` to close."""
        loop = asyncio.get_running_loop()
        if not self.conn.trailing_data[0]:
            if self.server.closing:
                return None
            self.idle = True
            try:
                async with asyncio.timeout(self.server.idle_timeout):
                    data = await self.reader.read(_CHUNK)
            except TimeoutError:
                return None  # an idle keep-alive connection: closing it is normal
            finally:
                self.idle = False
            self.conn.receive_data(data)
        return loop.time() + self.server.header_timeout

    async def _next_event(self) -> h11.Event:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                assert event is not h11.PAUSED  # we never read past a request's end
                return event  # type: ignore[return-value]
            self.conn.receive_data(await self.reader.read(_CHUNK))

    async def _receive_request(self, deadline: float) -> h11.Request | None:
        async with asyncio.timeout_at(deadline):
            event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        assert isinstance(event, h11.Request)
        self.head_request = event.method == b"HEAD"
        # h11 bounds only a head that is still incomplete; one that arrived whole in a single
        # read is measured here (target, names, values, separators), so the bound holds
        # however the head arrives.
        size = len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers)
        if size > _MAX_HEAD:
            raise _Refused(431, "bad_requests")
        return event

    async def _answer(self, request: h11.Request) -> bool:
        """Answer one request; return whether the connection may carry another one. Raises
        :class:`_Refused` for requests refused before their body is read."""
        server = self.server
        path = _request_path(request.target)
        page = server.pages.get(path)
        if page is not None:
            return await self._answer_page(request, page)
        if path != server.path:
            raise _Refused(404, "bad_requests")
        if request.method != b"POST":
            raise _Refused(405, "bad_requests", [(b"Allow", b"POST")])
        return await self._read_body_and_dispatch(request, self._authenticate(request))

    async def _answer_page(self, request: h11.Request, page: Page) -> bool:
        if request.method not in (b"GET", b"HEAD"):
            raise _Refused(405, "bad_requests", [(b"Allow", b"GET, HEAD")])
        self._authenticate(request)
        # A GET carries no body worth reading: one is read and dropped (h11 needs it read),
        # bounded like a call's, in time and in size.
        size = 0
        async with asyncio.timeout(self.server.body_timeout):
            while not isinstance(event := await self._next_event(), h11.EndOfMessage):
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > self.server.codec.limits.max_size:
                        raise _Refused(413, "bad_requests")
        headers = [(b"Content-Type", page.content_type), *_PAGE_HEADERS]
        if self.server.closing:
            headers.append((b"Connection", b"close"))
        await self._send(200, headers, page.body)
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    def _authenticate(self, request: h11.Request) -> str | None:
        """The key id of the request's credentials (``None`` when the endpoint is insecure);
        raises :class:`_Refused` (401) without valid ones."""
        server = self.server
        key_id = None
        if server.auth is not None:
            key_id = server.auth.check(_header(request.headers, b"authorization"))
            if key_id is None:
                _log.debug("unauthorized request from %s", self.peer)
                raise _Refused(401, "unauthorized", [
                    (b"WWW-Authenticate", f'Basic realm="{REALM}"'.encode("ascii")),
                ])  # fmt: skip
        return key_id

    async def _read_body_and_dispatch(self, request: h11.Request, key_id: str | None) -> bool:
        server = self.server
        max_size = server.codec.limits.max_size
        length = _header(request.headers, b"content-length")  # h11 checked its syntax
        if length is not None and int(length) > max_size:
            raise _Refused(413, "bad_requests")
        if self.conn.they_are_waiting_for_100_continue:
            go_on = h11.InformationalResponse(status_code=100, headers=[])
            self.writer.write(_sent(self.conn.send(go_on)))
        chunks: list[bytes] = []
        size = 0
        async with asyncio.timeout(server.body_timeout):
            while True:
                event = await self._next_event()
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > max_size:  # a chunked body, whose size is known only now
                        raise _Refused(413, "bad_requests")
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        response = await server.dispatch(body, key_id=key_id, peer=self.peer)
        headers = [(b"Content-Type", _XML_TYPE)]
        if server.closing:
            headers.append((b"Connection", b"close"))
        await self._send(200, headers, response)
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    async def _send(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        headers += [
            (b"Content-Length", str(len(body)).encode("ascii")),
            (b"Date", self.server._date_header()),
            (b"Server", _PRODUCT),
        ]
        conn = self.conn
        response = h11.Response(status_code=status, headers=headers,
                                reason=_PHRASES.get(status, b""))  # fmt: skip
        if self.head_request:
            body = b""  # a response to HEAD has the headers of the full one, and no body
        parts = (
            _sent(conn.send(response)),
            _sent(conn.send(h11.Data(data=body))),
            _sent(conn.send(h11.EndOfMessage())),  # b"" with Content-Length framing
        )
        # No empty parts: on Python 3.12.1, an empty buffer given to writelines stays queued
        # for ever, so a later write_eof or close never completes.
        self.writer.writelines([part for part in parts if part])
        await self.writer.drain()

    async def _refuse(self, refusal: _Refused) -> None:
        """Answer ``refusal`` with ``Connection: close``, then close gracefully."""
        self.server.http_counters[refusal.counter] += 1
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # a response is already under way: nothing more can be said
        headers = [
            *refusal.headers,
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Connection", b"close"),
        ]
        try:
            text = b"%d %s\n" % (refusal.status, _PHRASES[refusal.status])
            await self._send(refusal.status, headers, text)
            if self.writer.can_write_eof():
                self.writer.write_eof()
            # Nothing is in progress any more: close() need not wait for the lingering.
            self.idle = True
            async with asyncio.timeout(_LINGER):
                await self._linger()
        except (OSError, TimeoutError, h11.RemoteProtocolError):
            pass

    async def _linger(self) -> None:
        """Read and drop what the client still sends of the refused request: closing with
        unread input makes the kernel reset the connection, which can destroy the response
        before the client reads it (the "lingering close" of web servers)."""
        conn = self.conn
        while conn.their_state is h11.SEND_BODY:  # the body's end is known: stop there
            if conn.next_event() is h11.NEED_DATA:
                data = await self.reader.read(_CHUNK)
                if not data:
                    return
                conn.receive_data(data)
        if conn.their_state is h11.ERROR:  # a request h11 could not parse: read until EOF
            while await self.reader.read(_CHUNK):
                pass

    async def close(self) -> None:
        """Close the connection, waiting a little for it to close cleanly (a TLS close)."""
        self.writer.close()
        try:
            async with asyncio.timeout(_CLOSE_WAIT):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            self.writer.transport.abort()


# -- client -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Response:
    status: int
    reason: str
    body: bytes


class _ClientProtocol:
    """The sans-I/O client half of one HTTP/1.1 connection: request bytes out, a
    :class:`_Response` in. One request at a time (no pipelining).

    ``receive`` raises :class:`~clusterrpc.errors.ConnectionLostError` when the server closed
    the connection before a complete response or sent something that is not HTTP, and
    :class:`~clusterrpc.errors.LimitExceededError` for a response body over ``max_size``; the
    connection must be closed after either.
    """

    __slots__ = ("_body", "_broken", "_conn", "_headers", "_max_size", "_path", "_size",
                 "_status")

    def __init__(self, *, path: bytes, headers: list[tuple[bytes, bytes]], max_size: int) -> None:
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self._path = path
        self._headers = headers
        self._max_size = max_size
        self._status: tuple[int, str] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._broken = False

    def request(self, body: bytes) -> bytes:
        """The bytes of a ``POST`` carrying ``body``."""
        conn = self._conn
        headers = [*self._headers, (b"Content-Length", str(len(body)).encode("ascii"))]
        head = _sent(conn.send(h11.Request(method=b"POST", target=self._path, headers=headers)))
        data = _sent(conn.send(h11.Data(data=body)))  # Content-Length framing: body as it is
        return head + data + _sent(conn.send(h11.EndOfMessage()))

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request (true after a complete 200
        response on a keep-alive connection)."""
        conn = self._conn
        return not self._broken and conn.our_state is h11.IDLE and conn.their_state is h11.IDLE

    def receive(self, data: bytes) -> _Response | None:
        """Feed bytes read from the connection (``b""`` for end of file); return the response
        once complete, else ``None``."""
        conn = self._conn
        conn.receive_data(data)
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    return None
                if isinstance(event, h11.Response):
                    reason = event.reason.decode("latin-1")
                    if event.status_code != 200:
                        # An HTTP error: its body is not XML-RPC and is not read (the
                        # connection is then closed rather than drained).
                        self._broken = True
                        return _Response(event.status_code, reason, b"")
                    self._status = (event.status_code, reason)
                    length = _header(event.headers, b"content-length")
                    if length is not None and int(length) > self._max_size:
                        raise self._too_large(int(length))
                elif isinstance(event, h11.Data):
                    self._size += len(event.data)
                    if self._size > self._max_size:
                        raise self._too_large(self._size)
                    self._body.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    return self._complete()
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionLostError("the server closed the connection without answering")
                # InformationalResponse (100 Continue): nothing to do
        except h11.RemoteProtocolError as error:
            raise ConnectionLostError(f"malformed HTTP response: {error}") from error

    def _too_large(self, size: int) -> LimitExceededError:
        return LimitExceededError(
            f"HTTP response of {size} bytes exceeds max_size={self._max_size}"
        )

    def _complete(self) -> _Response:
        assert self._status is not None
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        response = _Response(self._status[0], self._status[1], body)
        self._status, self._body, self._size = None, [], 0
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        return response


class _HttpChannelBase:
    """What both channels share: configuration, the request template and the reply's
    interpretation."""

    def __init__(
        self,
        url: str,
        *,
        credentials: tuple[str, str] | None,
        ssl_context: ssl.SSLContext | None,
        codec: Codec | None,
        limits: Limits | None,
    ) -> None:
        url, in_url = split_userinfo(url)
        if in_url is not None:
            if credentials is not None:
                raise ConfigurationError("credentials given both in the URL and as an argument")
            credentials = in_url
        address = parse_address(url)
        if address.scheme not in ("http", "https"):
            raise ConfigurationError(f"an HTTP channel needs an http(s):// URL, not {url!r}")
        if codec is not None and limits is not None:
            raise ConfigurationError("give either a codec (with its limits) or limits, not both")
        if address.scheme == "https" and ssl_context is None:
            ssl_context = ssl.create_default_context()
        elif address.scheme == "http" and ssl_context is not None:
            raise ConfigurationError(f"an ssl_context was given for {url!r}: use https://")
        self.url = url
        """The endpoint's URL, as given but without credentials (they stay out of logs)."""
        self.address = address
        self.codec = codec if codec is not None else XmlRpcCodec(limits=limits or DEFAULT_LIMITS)
        self.ssl_context = ssl_context
        assert address.host is not None
        assert address.port is not None
        self._host, self._port = address.host, address.port
        try:
            host = address.host if address.host.isascii() else address.host.encode("idna").decode()
        except UnicodeError as error:
            raise ConfigurationError(f"invalid host name in {url!r}: {error}") from None
        headers = [
            (b"Host", _host_port(host, address.port).encode("ascii")),
            (b"User-Agent", _PRODUCT),
            (b"Content-Type", self.codec.media_type.encode("ascii")),
            (b"Accept", self.codec.media_type.encode("ascii")),
        ]
        if credentials is not None:
            headers.append((b"Authorization", _basic_authorization(credentials)))
        self._headers = headers
        self._path = (address.path or "/RPC2").encode("ascii")
        self._closed = False

    def _new_protocol(self) -> _ClientProtocol:
        return _ClientProtocol(
            path=self._path, headers=self._headers, max_size=self.codec.limits.max_size
        )

    def _prepare(self, method: str, params: Sequence[Value], timeout: float | None) -> bytes:
        _check_seconds("timeout", timeout, optional=True)
        if self._closed:
            raise ConnectionClosedError(f"the channel to {self.url} is closed")
        return self.codec.encode_call(method, params)

    def _result(self, response: _Response, oneway: bool) -> Value:
        if response.status != 200:
            raise HTTPError(response.status, response.reason)
        if oneway:
            return None  # HTTP answers every request; a one-way caller does not look
        message = self.codec.decode_response(response.body)
        if isinstance(message, FaultMessage):
            raise Fault(message.code, message.message)
        return message.value

    def _timed_out(self, method: str, timeout: float | None) -> CallTimeoutError:
        return CallTimeoutError(
            f"call to {method!r} at {self.url} got no reply in time"
            if timeout is None
            else f"call to {method!r} at {self.url} got no reply within {timeout:g} s"
        )


def split_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """Take ``user:token@`` out of an http(s) URL (as :class:`xmlrpc.client.ServerProxy`
    accepts it); return the URL without it and the credentials, or ``None``."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url, None  # parse_address will say what is wrong
    if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    username, colon, token = userinfo.partition(":")
    if not colon:
        raise ConfigurationError("an HTTP URL with a user name needs user:token@")
    credentials = (urllib.parse.unquote(username), urllib.parse.unquote(token))
    return urllib.parse.urlunsplit(parts._replace(netloc=hostport)), credentials


class HttpBlockingChannel(_HttpChannelBase, BlockingChannel):
    """Calls to an XML-RPC server at an ``http(s)://`` URL, from threads that block
    (:class:`~clusterrpc.transports.base.BlockingChannel`; ``spec/http.md``, "Our client").

    ``credentials`` is ``(username, token)`` for HTTP Basic (:func:`http_credentials` for a
    clusterrpc node), or may be given in the URL as ``http://user:token@host:port/RPC2``; they
    are never derived from a keyring here, so a node's token is never sent to a server that did
    not ask for it. ``ssl_context`` defaults to :func:`ssl.create_default_context` for
    ``https://`` (certificates verified) and is refused for ``http://``. ``codec`` defaults to
    :class:`~clusterrpc.codecs.xmlrpc.XmlRpcCodec` with ``limits``; ``max_size`` also bounds the
    response body.

    One keep-alive connection, opened by the first call and again whenever the server has
    closed it; calls from several threads are serialised by a lock (HTTP/1.1 carries one
    request at a time). ``call`` raises, beyond the channel contract:
    :class:`~clusterrpc.errors.HTTPError` for a status other than 200 (e.g. 401),
    :class:`~clusterrpc.errors.ConnectError` when connecting fails (TLS included),
    :class:`~clusterrpc.errors.ConnectionLostError` when the connection breaks mid-call (the
    call may have run), :class:`~clusterrpc.errors.DecodeError` for a response that is not
    XML-RPC. ``oneway=True`` still waits for the HTTP response (HTTP has no one-way request)
    but discards it unless its status is an error.
    """

    def __init__(
        self,
        url: str,
        *,
        credentials: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        codec: Codec | None = None,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(
            url, credentials=credentials, ssl_context=ssl_context, codec=codec, limits=limits
        )
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._protocol = self._new_protocol()

    def call(
        self, method: str, params: Sequence[Value], *, timeout: float | None,
        oneway: bool = False,
    ) -> Value:
        """Call ``method`` with ``params`` (see the class and the channel contract)."""
        body = self._prepare(method, params, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise self._timed_out(method, timeout)
        try:
            if self._closed:
                raise ConnectionClosedError(f"the channel to {self.url} is closed")
            try:
                response = self._exchange(body, deadline)
            except _Expired:
                self._disconnect()
                raise self._timed_out(method, timeout) from None
            except BaseException:
                self._disconnect()  # the connection is in an unknown state
                if self._closed:
                    raise ConnectionClosedError(
                        f"the channel to {self.url} was closed during the call"
                    ) from None
                raise
        finally:
            self._lock.release()
        return self._result(response, oneway)

    def close(self) -> None:
        """Close the channel; a call in progress in another thread fails with
        :class:`~clusterrpc.errors.ConnectionClosedError`. Idempotent."""
        self._closed = True
        sock = self._sock
        if sock is not None:
            # Wakes a thread blocked in recv (closing the descriptor would not). The plain
            # socket method, so that a TLS socket's state is left to its own thread.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        with self._lock:
            self._disconnect()

    def __enter__(self) -> HttpBlockingChannel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
        """Seconds left until ``deadline`` (a socket timeout); raises :class:`_Expired`."""
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Expired
        return remaining

    def _failure(
        self, error: OSError, kind: type[TransportError], what: str
    ) -> TransportError | _Expired:
        """What ``error`` from a socket means: the call's deadline (a socket timeout, which
        has no errno, unlike the system's ETIMEDOUT), or a ``kind`` error saying ``what``."""
        if isinstance(error, TimeoutError) and error.errno is None:
            return _Expired()
        translated = translate(error, f"{what} {self.url}", {OSError: kind})
        assert isinstance(translated, TransportError)
        return translated

    def _exchange(self, body: bytes, deadline: float | None) -> _Response:
        sock = self._sock
        if sock is not None and _readable(sock):
            # An idle keep-alive connection has nothing to read unless the server closed it
            # (or broke the protocol): reconnect rather than send into a dead connection.
            self._disconnect()
            sock = None
        if sock is None:
            sock = self._connect(deadline)
        protocol = self._protocol
        try:
            sock.settimeout(self._remaining(deadline))
            sock.sendall(protocol.request(body))
            while True:
                sock.settimeout(self._remaining(deadline))
                response = protocol.receive(sock.recv(_CHUNK))
                if response is not None:
                    break
        except OSError as error:
            raise self._failure(error, ConnectionLostError, "connection lost to") from error
        if not protocol.reusable:
            self._disconnect()
        return response

    def _connect(self, deadline: float | None) -> socket.socket:
        try:
            sock = socket.create_connection(
                (self._host, self._port), timeout=self._remaining(deadline)
            )
        except OSError as error:
            raise self._failure(error, ConnectError, "cannot connect to") from error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock.settimeout(self._remaining(deadline))
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self._host)
        except BaseException as error:
            sock.close()
            if isinstance(error, OSError):
                raise self._failure(error, ConnectError, "TLS failed with") from error
            raise
        self._sock = sock
        self._protocol = self._new_protocol()
        return sock

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


class _Expired(Exception):
    """Inside :class:`HttpBlockingChannel`: the call's deadline passed."""


def _readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has something to read (or an end of file) right now."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class HttpChannel(_HttpChannelBase, AsyncChannel):
    """Calls to an XML-RPC server at an ``http(s)://`` URL, from asyncio code
    (:class:`~clusterrpc.transports.base.AsyncChannel`; ``spec/http.md``, "Our client").

    Configuration and errors as :class:`HttpBlockingChannel`. One keep-alive connection;
    concurrent calls wait for one another on an :class:`asyncio.Lock`, because HTTP/1.1 without
    pipelining carries one request at a time (open several channels for parallel calls). The
    ``timeout`` covers that wait too.
    """

    def __init__(
        self,
        url: str,
        *,
        credentials: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        codec: Codec | None = None,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(
            url, credentials=credentials, ssl_context=ssl_context, codec=codec, limits=limits
        )
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._protocol = self._new_protocol()

    async def call(
        self, method: str, params: Sequence[Value], *, timeout: float | None,
        oneway: bool = False,
    ) -> Value:
        """Call ``method`` with ``params`` (see the class and the channel contract)."""
        body = self._prepare(method, params, timeout)
        try:
            async with asyncio.timeout(timeout) as scope, self._lock:
                if self._closed:
                    raise ConnectionClosedError(f"the channel to {self.url} is closed")
                try:
                    response = await self._exchange(body)
                except BaseException:
                    self._disconnect()  # the connection is in an unknown state
                    if self._closed:
                        raise ConnectionClosedError(
                            f"the channel to {self.url} was closed during the call"
                        ) from None
                    raise
        except TimeoutError:
            if not scope.expired():
                raise
            raise self._timed_out(method, timeout) from None
        return self._result(response, oneway)

    async def aclose(self) -> None:
        """Close the channel; a call in progress fails with
        :class:`~clusterrpc.errors.ConnectionClosedError`. Idempotent."""
        self._closed = True
        writer = self._writer
        self._disconnect()
        if writer is not None:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(_CLOSE_WAIT):
                    await writer.wait_closed()

    async def __aenter__(self) -> HttpChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _exchange(self, body: bytes) -> _Response:
        reader, writer = self._reader, self._writer
        if reader is not None and reader.at_eof():
            self._disconnect()  # the server closed the idle keep-alive connection
            reader = writer = None
        if reader is None or writer is None:
            reader, writer = await self._connect()
        protocol = self._protocol
        with map_os_errors(f"connection lost to {self.url}", CONNECTION_LOST):
            writer.write(protocol.request(body))
            await writer.drain()
            while True:
                response = protocol.receive(await reader.read(_CHUNK))
                if response is not None:
                    break
        if not protocol.reusable:
            self._disconnect()
        return response

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = self.ssl_context
        with map_os_errors(f"cannot connect to {self.url}", CONNECTING):
            reader, writer = await asyncio.open_connection(
                self._host, self._port, ssl=context,
                server_hostname=self._host if context is not None else None, limit=_CHUNK,
            )  # fmt: skip
        if self._closed:  # aclose ran while connecting
            writer.close()
            raise ConnectionClosedError(f"the channel to {self.url} is closed")
        self._reader, self._writer = reader, writer
        self._protocol = self._new_protocol()
        return reader, writer

    def _disconnect(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
