"""Standard XML-RPC over HTTP (``spec/http.md``): Python's own XML-RPC client calling our
endpoint, our channels calling Python's own XML-RPC server, credentials, TLS, HTTP edge cases.

Everything runs on 127.0.0.1 with ports chosen by the kernel. Our server runs in an event loop
on a background thread (so that the standard library's blocking clients can call it); every
thread, loop, socket and temporary file is closed by the fixture that made it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import shutil
import socket
import ssl
import subprocess
import threading
import time
import xmlrpc.client
import xmlrpc.server
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import pytest

from clusterrpc import current_call, oneway, remote
from clusterrpc.errors import (
    CallTimeoutError,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    Fault,
    FaultCode,
    HTTPError,
    KeyringError,
    LimitExceededError,
    TransportError,
)
from clusterrpc.keyring import Key, Keyring
from clusterrpc.rpc import ServiceRegistry
from clusterrpc.transports.http import (
    TOKEN_CONTEXT,
    HttpAuth,
    HttpBlockingChannel,
    HttpChannel,
    HttpServer,
    http_credentials,
    http_token,
    server_ssl_context,
)
from clusterrpc.values import Limits
from tests.conftest import time_scale
from tests.rpc_helpers import LoopThread

TIME_SCALE = time_scale()  # CLUSTERRPC_TEST_TIME_SCALE, checked
WAIT = 10.0 * TIME_SCALE
"""Upper bound for anything that should take milliseconds."""

T = TypeVar("T")

KEY1 = Key("k1", "hmac-sha256", bytes(range(32)))
KEY2 = Key("k2", "blake2b", bytes(range(32, 64)))
KEYRING = Keyring(keys=[KEY1, KEY2], signing_key_id="k1")
TOKEN1 = "786edd4903026a4a5ec36d128968196ad89d71e663d616aad919f6dd3f7017c8"  # spec/http.md


class Demo:
    """Methods for the tests."""

    def __init__(self) -> None:
        self.recorded: list[int] = []

    @remote
    def echo(self, value: Any) -> Any:
        """Return the value."""
        return value

    @remote
    def add(self, a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @remote
    def big(self) -> list[int]:
        return [2**40, -(2**63), 2**63 - 1]

    @remote
    def blob(self, size: int) -> bytes:
        return b"x" * size

    @remote
    def boom(self) -> None:
        raise KeyError("no such term")

    @remote
    def refuse(self) -> None:
        raise Fault(7, "not now")

    @remote
    def unencodable(self) -> Any:
        return {1, 2}

    @remote
    def whoami(self) -> dict[str, Any]:
        call = current_call()
        return {"key_id": call.key_id, "transport": call.transport, "peer": call.peer,
                "oneway": call.oneway, "method": call.method}  # fmt: skip

    @remote
    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @oneway
    def record(self, number: int) -> None:
        self.recorded.append(number)

    @oneway
    def fail(self) -> None:
        raise RuntimeError("one-way failure")


# -- fixtures -----------------------------------------------------------------------------------


class Served:
    """Starts :class:`HttpServer` instances on a loop thread; closes them all at teardown."""

    def __init__(self) -> None:
        self.loop = LoopThread(name="test-http-loop", wait=WAIT)
        self.servers: list[HttpServer] = []
        self.demo = Demo()
        self.registry = ServiceRegistry()
        self.registry.serve(self.demo, name="demo")

    def __call__(self, **config: Any) -> HttpServer:
        config.setdefault("address", "http://127.0.0.1:0/RPC2")
        config.setdefault("registry", self.registry)
        if not config.get("insecure"):
            config.setdefault("keyring", KEYRING)
        server = HttpServer(**config)
        self.loop.run(server.start())
        self.servers.append(server)
        return server

    def close(self) -> None:
        try:
            for server in self.servers:
                self.loop.run(server.close(drain_timeout=WAIT))
        finally:
            self.loop.stop()


@pytest.fixture
def serve() -> Iterator[Served]:
    served = Served()
    yield served
    served.close()


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + WAIT
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not set(threading.enumerate()) - before


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def authed(url: str, credentials: tuple[str, str] = ("k1", TOKEN1)) -> str:
    """``url`` with ``user:token@`` in it, as ServerProxy takes credentials."""
    return url.replace("://", f"://{credentials[0]}:{credentials[1]}@", 1)


def proxy(url: str, **options: Any) -> Any:
    """A ``ServerProxy`` for ``url``; typed ``Any`` because its methods are the server's and
    return whatever it sent."""
    options.setdefault("allow_none", True)
    options.setdefault("use_builtin_types", True)
    return xmlrpc.client.ServerProxy(url, **options)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def raw_request(url: str, data: bytes, *, read_timeout: float = WAIT) -> bytes:
    """Send ``data`` on a new connection and return everything read until the server closes."""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=read_timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def post(path: bytes, body: bytes, *extra: bytes) -> bytes:
    headers = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1",
               b"Content-Type: text/xml", b"Content-Length: %d" % len(body),
               b"Connection: close", *extra]  # fmt: skip
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


AUTH_HEADER = b"Authorization: Basic " + base64.b64encode(f"k1:{TOKEN1}".encode())


# -- credentials -------------------------------------------------------------------------------


def test_token_test_vector() -> None:
    assert TOKEN_CONTEXT == b"clusterrpc-http-token-v1\x00"
    assert http_token(KEY1) == TOKEN1
    assert http_credentials(KEYRING) == ("k1", TOKEN1)
    user, token = http_credentials(KEYRING, "k2")
    assert user == "k2"
    assert len(token) == 64
    assert token != TOKEN1


def test_credentials_errors() -> None:
    with pytest.raises(ConfigurationError, match="no keys"):
        http_credentials(Keyring())
    with pytest.raises(ConfigurationError, match="no key 'k9'"):
        http_credentials(KEYRING, "k9")
    with pytest.raises(KeyringError, match="no signing key"):
        http_credentials(Keyring(keys=[KEY1]))
    with pytest.raises(ConfigurationError, match="no keys"):
        HttpAuth(Keyring())


def test_auth_check() -> None:
    auth = HttpAuth(KEYRING)

    def basic(text: bytes) -> bytes:
        return b"Basic " + base64.b64encode(text)

    assert auth.check(basic(f"k1:{TOKEN1}".encode())) == "k1"
    assert auth.check(b"  basic " + base64.b64encode(f"k1:{TOKEN1}".encode()) + b" ") == "k1"
    assert auth.check(basic(f"k2:{http_token(KEY2)}".encode())) == "k2"  # every key: rotation
    assert auth.check(None) is None
    assert auth.check(basic(f"k2:{TOKEN1}".encode())) is None  # k1's token is not k2's
    assert auth.check(basic(f"k9:{TOKEN1}".encode())) is None
    assert auth.check(basic(TOKEN1.encode())) is None  # no colon
    assert auth.check(basic(f"k1:{TOKEN1}x".encode())) is None
    assert auth.check(b"Basic !!!") is None
    assert auth.check(b"Bearer " + TOKEN1.encode()) is None
    assert auth.check(basic(KEY1.secret.hex().encode())) is None  # never the secret itself


def test_server_configuration_errors() -> None:
    registry = ServiceRegistry()
    base: dict[str, Any] = {"address": "http://127.0.0.1:0/RPC2", "registry": registry,
                            "keyring": KEYRING}  # fmt: skip
    with pytest.raises(ConfigurationError, match="needs an ssl_context"):
        HttpServer(**{**base, "address": "https://127.0.0.1:0/RPC2"})
    with pytest.raises(ConfigurationError, match="use https://"):
        HttpServer(**base, ssl_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    with pytest.raises(ConfigurationError, match="requires credentials"):
        HttpServer(address="http://127.0.0.1:0/RPC2", registry=registry)
    with pytest.raises(ConfigurationError, match="http"):
        HttpServer(**{**base, "address": "tcp://127.0.0.1:0"})
    with pytest.raises(ConfigurationError, match="header_timeout"):
        HttpServer(**base, header_timeout=0)
    with pytest.raises(ConfigurationError, match="idle_timeout"):
        HttpServer(**base, idle_timeout=float("inf"))
    with pytest.raises(ConfigurationError, match="max_connections"):
        HttpServer(**base, max_connections=0)
    with pytest.raises(ConfigurationError, match="cannot load"):
        server_ssl_context("/nonexistent/cert.pem")
    server = HttpServer(address="http://127.0.0.1:0/RPC2", registry=registry, insecure=True)
    assert server.auth is None
    with pytest.raises(ConnectionClosedError, match="not started"):
        _ = server.url


def test_channel_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="http"):
        HttpBlockingChannel("tcp://127.0.0.1:1")
    with pytest.raises(ConfigurationError, match="use https://"):
        HttpChannel("http://127.0.0.1:1/RPC2", ssl_context=ssl.create_default_context())
    with pytest.raises(ConfigurationError, match="both"):
        HttpBlockingChannel("http://a:b@127.0.0.1:1/RPC2", credentials=("a", "b"))
    with pytest.raises(ConfigurationError, match="user:token@"):
        HttpBlockingChannel("http://a@127.0.0.1:1/RPC2")
    channel = HttpBlockingChannel("http://k1:secret-token@127.0.0.1:1/RPC2")
    assert channel.url == "http://127.0.0.1:1/RPC2"  # credentials stay out of the URL
    with pytest.raises(ConfigurationError, match="timeout"):
        channel.call("demo.echo", [1], timeout=-1)
    channel.close()
    with pytest.raises(ConnectionClosedError):
        channel.call("demo.echo", [1], timeout=1)


# -- the standard library's client calling our endpoint ---------------------------------------

VALUES: list[Any] = [
    0, 1, -1, 2**31 - 1, -(2**31), True, False, 0.0, -0.0, 1.5, 1e300, -2.5e-300,
    "", "héllo <&> ]]> \t\n", "\U0001f600", b"", b"\x00\x01\xfe\xff" * 10,
    dt.datetime(2026, 11, 22, 20, 37, 2), None, [], {}, [1, "a", [2.5, [None]]],
    {"a": {"b": [1, {"c": b"x"}]}, "": None, "flag": True},
]  # fmt: skip


def test_stdlib_client_every_type(serve: Served) -> None:
    server = serve()
    with proxy(authed(server.url)) as remote_proxy:
        for value in VALUES:
            assert remote_proxy.demo.echo(value) == value, value
        # ServerProxy cannot send ints beyond 32 bits, but reads our <i8> replies.
        assert remote_proxy.demo.big() == [2**40, -(2**63), 2**63 - 1]
        # dateTime arrives as the standard library's DateTime without use_builtin_types.
    with proxy(authed(server.url), use_builtin_types=False) as plain:
        moment = plain.demo.echo(xmlrpc.client.DateTime("20261122T20:37:02"))
        assert moment == xmlrpc.client.DateTime("20261122T20:37:02")
        assert plain.demo.echo(xmlrpc.client.Binary(b"\xff")) == xmlrpc.client.Binary(b"\xff")
    assert server.counters["calls"] == len(VALUES) + 3


def test_stdlib_client_faults(serve: Served) -> None:
    server = serve()
    with proxy(authed(server.url)) as remote_proxy:
        with pytest.raises(xmlrpc.client.Fault) as missing:
            remote_proxy.demo.nothing()
        assert missing.value.faultCode == FaultCode.METHOD_NOT_FOUND
        with pytest.raises(xmlrpc.client.Fault) as params:
            remote_proxy.demo.add("x", 1)
        assert params.value.faultCode == FaultCode.INVALID_PARAMS
        with pytest.raises(xmlrpc.client.Fault) as arity:
            remote_proxy.demo.add(1)
        assert arity.value.faultCode == FaultCode.INVALID_PARAMS
        with pytest.raises(xmlrpc.client.Fault) as application:
            remote_proxy.demo.boom()
        assert application.value.faultCode == FaultCode.APPLICATION_ERROR
        assert "KeyError" in application.value.faultString
        with pytest.raises(xmlrpc.client.Fault) as own:
            remote_proxy.demo.refuse()
        assert (own.value.faultCode, own.value.faultString) == (7, "not now")
        with pytest.raises(xmlrpc.client.Fault) as unencodable:
            remote_proxy.demo.unencodable()
        assert unencodable.value.faultCode == FaultCode.INTERNAL_ERROR
        assert "set" in unencodable.value.faultString
        assert remote_proxy.demo.add(2, 3) == 5  # the connection still works after faults
    assert server.counters["faults"] == 6


def test_stdlib_multicall(serve: Served) -> None:
    server = serve()
    with proxy(authed(server.url)) as remote_proxy:
        multicall = xmlrpc.client.MultiCall(remote_proxy)
        multicall.demo.add(1, 2)
        multicall.demo.echo("x")
        multicall.demo.boom()
        multicall.demo.add(4, 4)
        results = multicall()
        assert results[0] == 3
        assert results[1] == "x"
        with pytest.raises(xmlrpc.client.Fault) as fault:
            _ = results[2]
        assert fault.value.faultCode == FaultCode.APPLICATION_ERROR
        assert results[3] == 8


def test_stdlib_introspection(serve: Served) -> None:
    server = serve()
    with proxy(authed(server.url)) as remote_proxy:
        names = remote_proxy.system.listMethods()
        assert {"demo.add", "demo.echo", "system.multicall"} <= set(names)
        assert remote_proxy.system.methodHelp("demo.add") == "Add two integers."
        assert remote_proxy.system.methodSignature("demo.add") == [["int", "int", "int"]]
        assert remote_proxy.system.methodSignature("demo.echo") == "undef"
        assert "system.multicall" in remote_proxy.system.getCapabilities()


def test_call_context(serve: Served) -> None:
    server = serve()
    with proxy(authed(server.url, ("k2", http_token(KEY2)))) as remote_proxy:
        who = remote_proxy.demo.whoami()
    assert who["key_id"] == "k2"
    assert who["transport"] == "http"
    assert who["method"] == "demo.whoami"
    assert who["oneway"] is False
    assert who["peer"].startswith("127.0.0.1:")


def test_oneway_over_http(serve: Served) -> None:
    server = serve()
    with proxy(authed(server.url)) as remote_proxy:
        assert remote_proxy.demo.record(5) is None  # a nil reply, once the method has run
        assert serve.demo.recorded == [5]
        assert remote_proxy.demo.fail() is None  # the method's failure is not reported ...
        assert server.counters["oneway_errors"] == 1  # ... but counted
        with pytest.raises(xmlrpc.client.Fault) as bad:  # a call that cannot be made is
            remote_proxy.demo.record("x")
        assert bad.value.faultCode == FaultCode.INVALID_PARAMS
    assert serve.demo.recorded == [5]


def test_keep_alive(serve: Served) -> None:
    server = serve()
    with proxy(authed(server.url)) as remote_proxy:
        for number in range(5):
            assert remote_proxy.demo.add(number, 1) == number + 1
    assert server.counters["connections"] == 1
    assert server.counters["requests"] == 5


# -- credentials on the wire ---------------------------------------------------------------------


def test_unauthorized(serve: Served) -> None:
    server = serve()
    with proxy(server.url) as anonymous, pytest.raises(xmlrpc.client.ProtocolError) as none:
        anonymous.demo.add(1, 2)
    assert none.value.errcode == 401
    assert none.value.headers["WWW-Authenticate"] == 'Basic realm="clusterrpc"'
    with proxy(authed(server.url, ("k1", "0" * 64))) as wrong, pytest.raises(
        xmlrpc.client.ProtocolError
    ) as bad:
        wrong.demo.add(1, 2)
    assert bad.value.errcode == 401
    with proxy(authed(server.url, ("k9", TOKEN1))) as unknown, pytest.raises(
        xmlrpc.client.ProtocolError
    ) as nobody:
        unknown.demo.add(1, 2)
    assert nobody.value.errcode == 401
    assert server.counters["unauthorized"] == 3
    assert server.counters["calls"] == 0
    with proxy(authed(server.url)) as good:
        assert good.demo.add(1, 2) == 3


def test_insecure_endpoint(serve: Served) -> None:
    server = serve(insecure=True)
    with pytest.raises(TransportError, match="cannot listen"):
        serve(address=server.url, insecure=True)  # the port is taken
    with proxy(server.url) as anonymous:
        who = anonymous.demo.whoami()
    assert who["key_id"] is None
    assert server.counters["unauthorized"] == 0


# -- HTTP edge cases (raw sockets) ---------------------------------------------------------------


def test_wrong_path_and_method(serve: Served) -> None:
    server = serve()
    body = xmlrpc.client.dumps((1, 2), "demo.add").encode()
    assert status_of(raw_request(server.url, post(b"/other", body, AUTH_HEADER))) == 404
    with proxy(authed(server.url.replace("/RPC2", "/RPC3"))) as elsewhere, pytest.raises(
        xmlrpc.client.ProtocolError
    ) as missing:
        elsewhere.demo.add(1, 2)
    assert missing.value.errcode == 404
    response = raw_request(server.url, b"GET /RPC2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 405
    assert b"\r\nAllow: POST\r\n" in response
    head = raw_request(server.url, b"HEAD /RPC2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(head) == 405
    assert head.endswith(b"\r\n\r\n")  # the headers of the full response, no body
    assert status_of(raw_request(server.url, post(b"/RPC2?x=1", body, AUTH_HEADER))) == 200
    absolute = post(b"http://127.0.0.1/RPC2", body, AUTH_HEADER)
    assert status_of(raw_request(server.url, absolute)) == 200
    assert server.counters["bad_requests"] == 4


def test_malformed_http(serve: Served) -> None:
    server = serve()
    assert status_of(raw_request(server.url, b"NOT HTTP AT ALL\r\n\r\n")) == 400
    huge = b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    assert status_of(raw_request(server.url, huge)) == 431
    many = b"POST /RPC2 HTTP/1.1\r\nHost: x\r\n" + b"X-Many: a\r\n" * 2000 + b"\r\n"
    assert status_of(raw_request(server.url, many)) == 431
    assert server.counters["bad_requests"] == 3


def test_malformed_xml_is_a_fault(serve: Served) -> None:
    server = serve()
    for body, code in [(b"<methodCall><methodName>x", FaultCode.PARSE_ERROR),
                       (b"<?xml version='1.0'?><methodResponse/>", FaultCode.INVALID_REQUEST),
                       (b"", FaultCode.PARSE_ERROR)]:  # fmt: skip
        response = raw_request(server.url, post(b"/RPC2", body, AUTH_HEADER))
        assert status_of(response) == 200  # XML-RPC: faults travel in 200 responses
        head, _, payload = response.partition(b"\r\n\r\n")
        assert b"content-type: text/xml; charset=utf-8" in head.lower()
        with pytest.raises(xmlrpc.client.Fault) as fault:
            xmlrpc.client.loads(payload)
        assert fault.value.faultCode == code


def test_oversized_body(serve: Served) -> None:
    server = serve(limits=Limits(max_size=16 * 1024))
    # Declared too large: refused before a byte of the body is read.
    declared = (b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n" + AUTH_HEADER
                + b"\r\n\r\n")  # fmt: skip
    assert status_of(raw_request(server.url, declared)) == 413
    # Chunked: found too large while reading.
    chunk = b"a" * 10000
    chunked = (b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n" + AUTH_HEADER
               + b"\r\n\r\n" + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 3 + b"0\r\n\r\n")
    assert status_of(raw_request(server.url, chunked)) == 413
    # The standard library's client sends the whole body first, and still reads the 413.
    with proxy(authed(server.url)) as remote_proxy, pytest.raises(
        xmlrpc.client.ProtocolError
    ) as too_big:
        remote_proxy.demo.echo("x" * 200_000)
    assert too_big.value.errcode == 413
    assert server.counters["bad_requests"] == 3
    # A chunked body within the limit is fine.
    body = xmlrpc.client.dumps((20, 22), "demo.add").encode()
    small = (b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
             + b"Connection: close\r\n" + AUTH_HEADER + b"\r\n\r\n"
             + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    response = raw_request(server.url, small)
    assert xmlrpc.client.loads(response.partition(b"\r\n\r\n")[2])[0] == (42,)


def test_http_1_0_and_expect_continue(serve: Served) -> None:
    server = serve()
    body = xmlrpc.client.dumps((1, 2), "demo.add").encode()
    request = (b"POST /RPC2 HTTP/1.0\r\nContent-Length: %d\r\n" % len(body) + AUTH_HEADER
               + b"\r\n\r\n" + body)  # fmt: skip
    response = raw_request(server.url, request)  # HTTP/1.0: the server closes after it
    assert response.startswith(b"HTTP/1.1 200 ")
    assert xmlrpc.client.loads(response.partition(b"\r\n\r\n")[2])[0] == (3,)
    with socket.create_connection(("127.0.0.1", port_of(server.url)), timeout=WAIT) as sock:
        head = post(b"/RPC2", b"", AUTH_HEADER, b"Expect: 100-continue").replace(
            b"Content-Length: 0", b"Content-Length: %d" % len(body)
        )
        sock.sendall(head)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        assert b" 200 " in sock.recv(65536).split(b"\r\n", 1)[0]


def test_slow_headers_are_cut_off(serve: Served) -> None:
    server = serve(header_timeout=0.3 * TIME_SCALE)
    port = port_of(server.url)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: x\r\n")  # and never the end of the head
        assert sock.recv(100) == b""  # closed without an answer
    # Trickling one byte at a time does not extend the deadline.
    trickle = b"POST /RPC2 HTTP/1.1\r\nX-Slow: " + b"a" * 1000
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sent = 0
        try:
            for byte in trickle:  # 10 s at this pace, unless cut off
                sock.send(bytes([byte]))
                sent += 1
                time.sleep(0.01)
        except OSError:  # reset: the server closed the connection
            pass
        assert sent < len(trickle)
    elapsed = time.monotonic() - started
    assert elapsed < 5 * TIME_SCALE
    assert server.counters["timeouts"] == 2
    # A silent connection is dropped too.
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        assert sock.recv(100) == b""
    assert server.counters["timeouts"] == 3


def test_idle_keep_alive_connection_closed(serve: Served) -> None:
    server = serve(idle_timeout=0.2 * TIME_SCALE)
    body = xmlrpc.client.dumps((1, 2), "demo.add").encode()
    with socket.create_connection(("127.0.0.1", port_of(server.url)), timeout=WAIT) as sock:
        sock.sendall(post(b"/RPC2", body, AUTH_HEADER).replace(b"Connection: close\r\n", b""))
        response = b""
        while not response.endswith(b"</methodResponse>"):
            response += sock.recv(65536)
        assert sock.recv(100) == b""  # closed once idle for idle_timeout
    assert server.counters["timeouts"] == 0  # idle keep-alive closes are normal


def test_max_connections(serve: Served) -> None:
    server = serve(max_connections=1)
    port = port_of(server.url)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as first:
        first.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: x\r\n")  # holds the only slot
        wait_until(lambda: server.counters["connections"] == 1)
        body = xmlrpc.client.dumps((1, 2), "demo.add").encode()
        response = raw_request(server.url, post(b"/RPC2", body, AUTH_HEADER))
        assert status_of(response) == 503
    assert server.counters["overloaded"] == 1


def test_close_drains_requests_in_progress(serve: Served) -> None:
    server = serve()
    port = port_of(server.url)
    results: list[str] = []

    def slow_call() -> None:
        with proxy(authed(server.url)) as remote_proxy:
            results.append(remote_proxy.demo.slow(0.3 * TIME_SCALE))

    caller = threading.Thread(target=slow_call)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as idle:
        idle.sendall(post(b"/RPC2", xmlrpc.client.dumps((1, 2), "demo.add").encode(),
                          AUTH_HEADER).replace(b"Connection: close\r\n", b""))  # fmt: skip
        assert b" 200 " in idle.recv(65536)  # now an idle keep-alive connection
        caller.start()
        wait_until(lambda: server.counters["calls"] == 2)  # the slow call is in progress
        started = time.monotonic()
        serve.loop.run(server.close(drain_timeout=WAIT))
        assert time.monotonic() - started < 0.3 * TIME_SCALE + 2  # not the drain timeout
        assert idle.recv(100) == b""  # the idle connection was closed
    caller.join(WAIT)
    assert results == ["done"]  # the request in progress finished
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT).close()


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("TLS tests need the openssl command to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=WAIT,
    )  # fmt: skip
    yield str(cert), str(key)
    shutil.rmtree(directory)


def test_tls(serve: Served, certificate: tuple[str, str]) -> None:
    cert, key = certificate
    server = serve(address="https://127.0.0.1:0/RPC2", ssl_context=server_ssl_context(cert, key))
    assert server.url.startswith("https://127.0.0.1:")
    trusting = ssl.create_default_context(cafile=cert)
    with proxy(authed(server.url), context=trusting) as remote_proxy:
        assert remote_proxy.demo.add(1, 2) == 3
        assert remote_proxy.demo.whoami()["transport"] == "https"
    with HttpBlockingChannel(server.url, credentials=("k1", TOKEN1),
                             ssl_context=trusting) as channel:  # fmt: skip
        assert channel.call("demo.add", [2, 2], timeout=WAIT) == 4
        assert channel.call("demo.add", [3, 3], timeout=WAIT) == 6
    assert server.counters["connections"] == 2  # the TLS connection was kept alive

    async def async_calls() -> list[Any]:
        async with HttpChannel(server.url, credentials=("k1", TOKEN1),
                               ssl_context=trusting) as channel:  # fmt: skip
            return [await channel.call("demo.add", [n, n], timeout=WAIT) for n in range(3)]

    assert asyncio.run(async_calls()) == [0, 2, 4]
    # The default context verifies certificates: a self-signed one is refused.
    with HttpBlockingChannel(server.url, credentials=("k1", TOKEN1)) as untrusting:
        with pytest.raises(ConnectError, match="certificate") as refused:
            untrusting.call("demo.add", [1, 1], timeout=WAIT)
        assert isinstance(refused.value.__cause__, ssl.SSLError)
    # Plain HTTP to the TLS port gets nowhere.
    with HttpBlockingChannel(server.url.replace("https", "http"),
                             credentials=("k1", TOKEN1)) as plain, pytest.raises(
        ConnectionLostError
    ):  # fmt: skip
        plain.call("demo.add", [1, 1], timeout=WAIT)


# -- our clients calling the standard library's server -------------------------------------------


class StdlibServer:
    """Python's SimpleXMLRPCServer (HTTP/1.0: it closes after every response) on a thread."""

    def __init__(self) -> None:
        self.server = xmlrpc.server.SimpleXMLRPCServer(
            ("127.0.0.1", 0), logRequests=False, allow_none=True, use_builtin_types=True
        )
        self.server.register_function(lambda value: value, "echo")
        self.server.register_function(lambda a, b: a + b, "add")
        self.server.register_function(
            lambda seconds: time.sleep(seconds) or "slept",  # type: ignore[func-returns-value]
            "sleep",
        )
        self.server.register_function(lambda: (_ for _ in ()).throw(ValueError("bad")), "boom")
        self.server.register_introspection_functions()
        self.server.register_multicall_functions()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/RPC2"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT)


@pytest.fixture
def stdlib_server() -> Iterator[StdlibServer]:
    server = StdlibServer()
    yield server
    server.close()


STDLIB_VALUES = [v for v in VALUES if not (isinstance(v, float) and str(v) == "-0.0")]


def test_blocking_channel_calls_stdlib_server(stdlib_server: StdlibServer) -> None:
    with HttpBlockingChannel(stdlib_server.url) as channel:
        for value in STDLIB_VALUES:
            assert channel.call("echo", [value], timeout=WAIT) == value, value
        assert channel.call("add", [40, 2], timeout=WAIT) == 42
        assert "add" in cast(list[str], channel.call("system.listMethods", [], timeout=WAIT))
        assert channel.call("echo", [7], timeout=WAIT, oneway=True) is None
        with pytest.raises(Fault) as fault:
            channel.call("boom", [], timeout=WAIT)
        assert fault.value.code == 1  # the standard library's code for an exception
        assert "bad" in fault.value.message
        with pytest.raises(Fault):
            channel.call("nothing", [], timeout=WAIT)
        with pytest.raises(CallTimeoutError):
            channel.call("sleep", [1.0], timeout=0.2)
        # The timed-out connection was dropped; the next call works on a fresh one.
        assert channel.call("add", [1, 1], timeout=WAIT) == 2
    with HttpBlockingChannel(stdlib_server.url.replace("/RPC2", "/nowhere")) as elsewhere:
        with pytest.raises(HTTPError) as missing:
            elsewhere.call("add", [1, 1], timeout=WAIT)
        assert missing.value.status == 404


def test_async_channel_calls_stdlib_server(stdlib_server: StdlibServer) -> None:
    async def main() -> None:
        async with HttpChannel(stdlib_server.url) as channel:
            for value in STDLIB_VALUES:
                assert await channel.call("echo", [value], timeout=WAIT) == value, value
            calls = [channel.call("add", [n, 1], timeout=WAIT) for n in range(5)]
            assert await asyncio.gather(*calls) == [1, 2, 3, 4, 5]  # serialised, all answered
            with pytest.raises(Fault):
                await channel.call("boom", [], timeout=WAIT)
            with pytest.raises(CallTimeoutError):
                await channel.call("sleep", [1.0], timeout=0.2)
            assert await channel.call("add", [1, 1], timeout=WAIT) == 2

    asyncio.run(main())


def test_connect_errors() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # nobody listens here
        url = f"http://127.0.0.1:{port}/RPC2"
        with HttpBlockingChannel(url) as channel, pytest.raises(ConnectError) as refused:
            channel.call("x", [], timeout=WAIT)
        assert isinstance(refused.value.__cause__, ConnectionRefusedError)

        async def main() -> None:
            async with HttpChannel(url) as channel:
                with pytest.raises(ConnectError):
                    await channel.call("x", [], timeout=WAIT)

        asyncio.run(main())


# -- our clients calling our endpoint -------------------------------------------------------------


def test_our_clients_with_our_endpoint(serve: Served) -> None:
    server = serve()
    with HttpBlockingChannel(server.url, credentials=http_credentials(KEYRING)) as channel:
        for value in VALUES:
            assert channel.call("demo.echo", [value], timeout=WAIT) == value, value
        assert channel.call("demo.big", [], timeout=WAIT) == [2**40, -(2**63), 2**63 - 1]
        assert channel.call("demo.echo", [2**62], timeout=WAIT) == 2**62
        with pytest.raises(Fault) as fault:
            channel.call("demo.refuse", [], timeout=WAIT)
        assert fault.value == Fault(7, "not now")
        assert channel.call("demo.record", [9], timeout=WAIT, oneway=True) is None
        assert cast(dict[str, Any], channel.call("demo.whoami", [], timeout=WAIT))["key_id"] == "k1"
    assert server.counters["connections"] == 1  # one keep-alive connection for all of it
    assert serve.demo.recorded == [9]
    with HttpBlockingChannel(server.url) as anonymous, pytest.raises(HTTPError) as refused:
        anonymous.call("demo.add", [1, 2], timeout=WAIT)
    assert refused.value.status == 401
    with HttpBlockingChannel(authed(server.url)) as in_url:
        assert in_url.call("demo.add", [1, 2], timeout=WAIT) == 3

    async def main() -> None:
        async with HttpChannel(server.url, credentials=("k1", TOKEN1)) as channel:
            calls = [channel.call("demo.slow", [0.01], timeout=WAIT) for _ in range(4)]
            assert await asyncio.gather(*calls) == ["done"] * 4
            with pytest.raises(CallTimeoutError):
                await channel.call("demo.slow", [1.0], timeout=0.1)
            assert await channel.call("demo.add", [1, 2], timeout=WAIT) == 3
        async with HttpChannel(server.url) as anonymous:
            with pytest.raises(HTTPError) as refused:
                await anonymous.call("demo.add", [1, 2], timeout=WAIT)
            assert refused.value.status == 401

    asyncio.run(main())


def test_reconnect_after_server_closed_idle_connection(serve: Served) -> None:
    server = serve(idle_timeout=0.1 * TIME_SCALE)
    with HttpBlockingChannel(server.url, credentials=("k1", TOKEN1)) as channel:
        assert channel.call("demo.add", [1, 2], timeout=WAIT) == 3
        time.sleep(0.5 * TIME_SCALE)  # the server closes the idle connection meanwhile
        assert channel.call("demo.add", [2, 2], timeout=WAIT) == 4

    async def main() -> None:
        async with HttpChannel(server.url, credentials=("k1", TOKEN1)) as channel:
            assert await channel.call("demo.add", [1, 2], timeout=WAIT) == 3
            await asyncio.sleep(0.5 * TIME_SCALE)
            assert await channel.call("demo.add", [2, 2], timeout=WAIT) == 4

    asyncio.run(main())
    assert server.counters["connections"] == 4


def test_response_over_limit(serve: Served) -> None:
    server = serve()
    small = Limits(max_size=1024)
    with HttpBlockingChannel(server.url, credentials=("k1", TOKEN1), limits=small) as channel:
        with pytest.raises(LimitExceededError):
            channel.call("demo.blob", [2000], timeout=WAIT)
        assert channel.call("demo.add", [1, 2], timeout=WAIT) == 3  # and it reconnects


def test_close_during_call(serve: Served) -> None:
    server = serve()

    async def main() -> None:
        channel = HttpChannel(server.url, credentials=("k1", TOKEN1))
        call = asyncio.ensure_future(channel.call("demo.slow", [1.0], timeout=WAIT))
        await asyncio.to_thread(wait_until, lambda: server.counters["calls"] == 1)
        await channel.aclose()
        with pytest.raises(ConnectionClosedError):
            await call
        with pytest.raises(ConnectionClosedError):
            await channel.call("demo.add", [1, 2], timeout=WAIT)

    asyncio.run(main())

    channel = HttpBlockingChannel(server.url, credentials=("k1", TOKEN1))
    errors: list[BaseException] = []

    def blocked_call() -> None:
        try:
            channel.call("demo.slow", [1.0], timeout=WAIT)
        except BaseException as error:
            errors.append(error)

    caller = threading.Thread(target=blocked_call)
    caller.start()
    wait_until(lambda: server.counters["calls"] == 2)
    channel.close()
    caller.join(WAIT)
    assert len(errors) == 1
    assert isinstance(errors[0], ConnectionClosedError)

