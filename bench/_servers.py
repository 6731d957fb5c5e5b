"""The server processes of ``bench_rpc.py``: one kind per process, loopback only.

Run by the benchmark, not by hand::

    python bench/_servers.py KIND CONFIG_JSON

``KIND`` is one of :data:`KINDS`; ``CONFIG_JSON`` a JSON object (``tmpdir``, ``keyring``,
``cluster``, ``call_size``/``reply_size`` for the echo servers, ``unix`` for the Pyro5 Unix
daemon, optional ``profile``: a path where the server writes its cProfile statistics when it
stops). Once listening, the process prints one JSON line on standard output naming its
addresses (``{"tcp": …, "unix": …, "udp": …}``), then serves until its standard input reaches
end of file — which is also what happens when the benchmark dies, so no server outlives it.

Every server runs the same service: ``election.vote(ballot)`` returns a small struct,
``election.cast(ballot)`` is one-way and counts what it receives, ``election.stats()`` returns
that count with the first and last arrival times, ``election.reset()`` clears them.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import os
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

KINDS = ("clusterrpc", "stdlib", "pyro5", "echo-blocking", "echo-asyncio")

SERVER_NODE = "bench-server"


class Ballots:
    """The service's state and logic, shared by every framework's wrapper."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # Pyro5 and the stdlib server call from threads
        self.received = 0
        self.first = 0.0
        self.last = 0.0

    @staticmethod
    def vote(ballot: dict[str, Any]) -> dict[str, Any]:
        return {"term": ballot["term"], "granted": True, "voter": SERVER_NODE}

    def cast(self, ballot: dict[str, Any]) -> None:
        now = time.perf_counter()
        with self.lock:
            if not self.received:
                self.first = now
            self.received += 1
            self.last = now

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"received": self.received, "first": self.first, "last": self.last}

    def reset(self) -> bool:
        with self.lock:
            self.received = 0
            self.first = self.last = 0.0
        return True


def announce(addresses: dict[str, str]) -> None:
    sys.stdout.write(json.dumps(addresses) + "\n")
    sys.stdout.flush()


def wait_for_stdin_eof() -> None:
    """Block until the benchmark closes our standard input (or dies)."""
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(65536):
            pass


class _Profiler:
    """cProfile of the serving thread when the config asks for it; written on stop."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.profile = cProfile.Profile() if path else None

    def __enter__(self) -> _Profiler:
        if self.profile is not None:
            self.profile.enable()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.profile is not None and self.path:
            self.profile.disable()
            self.profile.dump_stats(self.path)


# -- clusterrpc ------------------------------------------------------------------------------------


def serve_clusterrpc(config: dict[str, Any]) -> None:
    from clusterrpc import Keyring, Node, oneway, remote  # noqa: PLC0415

    ballots = Ballots()

    class Election:
        @remote
        def vote(self, ballot: dict) -> dict:
            return ballots.vote(ballot)

        @oneway
        def cast(self, ballot: dict) -> None:
            ballots.cast(ballot)

        @remote
        def stats(self) -> dict:
            return ballots.stats()

        @remote
        def reset(self) -> bool:
            return ballots.reset()

    async def main() -> None:
        keyring = Keyring.load(config["keyring"])
        unix_path = os.path.join(config["tmpdir"], "clusterrpc.sock")
        node = Node(SERVER_NODE, cluster=config["cluster"], keyring=keyring,
                    listen=["tcp://127.0.0.1:0", f"unix://{unix_path}", "udp://127.0.0.1:0"])
        node.serve(Election(), name="election")
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        async with node:
            urls = {url.split(":", 1)[0]: url for url in node.addresses}
            threading.Thread(
                target=lambda: (wait_for_stdin_eof(), loop.call_soon_threadsafe(stopped.set)),
                daemon=True,
            ).start()
            announce(urls)
            with _Profiler(config.get("profile")):
                await stopped.wait()

    asyncio.run(main())


# -- the standard library: SimpleXMLRPCServer, HTTP/1.1 keep-alive --------------------------


def serve_stdlib(config: dict[str, Any]) -> None:
    from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer  # noqa: PLC0415

    class Handler(SimpleXMLRPCRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: ServerProxy reuses its connection

    class Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
        # A thread per connection: with keep-alive a single-threaded server would serve one
        # client until it hung up. (The request handler already sets TCP_NODELAY.)
        daemon_threads = True
        request_queue_size = 128  # 32 clients connect at once; the default backlog is 5

    ballots = Ballots()
    server = Server(("127.0.0.1", 0), requestHandler=Handler, logRequests=False,
                    allow_none=True, use_builtin_types=True)
    server.register_function(ballots.vote, "election.vote")
    server.register_function(ballots.cast, "election.cast")
    server.register_function(ballots.stats, "election.stats")
    server.register_function(ballots.reset, "election.reset")
    host, port = server.server_address[:2]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                              daemon=True)
    thread.start()
    announce({"tcp": f"http://{host}:{port}/RPC2"})
    wait_for_stdin_eof()
    server.shutdown()
    server.server_close()


# -- Pyro5 -------------------------------------------------------------------------------------


def serve_pyro5(config: dict[str, Any]) -> None:
    import Pyro5.api  # noqa: PLC0415

    # Defaults (thread pool server, serpent), except Nagle off as on every other contender.
    Pyro5.config.SERVERTYPE = "thread"
    Pyro5.config.SOCK_NODELAY = True
    ballots = Ballots()

    @Pyro5.api.expose
    class Election:
        def vote(self, ballot: dict[str, Any]) -> dict[str, Any]:
            return ballots.vote(ballot)

        @Pyro5.api.oneway
        def cast(self, ballot: dict[str, Any]) -> None:
            ballots.cast(ballot)

        def stats(self) -> dict[str, Any]:
            return ballots.stats()

        def reset(self) -> bool:
            return ballots.reset()

    if config.get("unix"):
        daemon = Pyro5.api.Daemon(unixsocket=config["unix"])
    else:
        daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Election(), objectId="election")
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    announce({"unix" if config.get("unix") else "tcp": str(uri)})
    wait_for_stdin_eof()
    daemon.shutdown()


# -- the floor: a bare socket echo of the same byte counts -----------------------------------------


def _reply_frame(config: dict[str, Any]) -> bytes:
    size: int = config["reply_size"]
    return size.to_bytes(4, "big") + os.urandom(size)


def _listeners(config: dict[str, Any], name: str) -> tuple[socket.socket, socket.socket]:
    tcp = socket.create_server(("127.0.0.1", 0))
    path = os.path.join(config["tmpdir"], f"{name}.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(path)
    unix.listen()
    return tcp, unix


def _urls(tcp: socket.socket, unix: socket.socket) -> dict[str, str]:
    host, port = tcp.getsockname()[:2]
    return {"tcp": f"tcp://{host}:{port}", "unix": f"unix://{unix.getsockname()}"}


def serve_echo_blocking(config: dict[str, Any]) -> None:
    """A thread per connection, blocking sockets: read length-prefixed frames, answer each
    with a reply-sized frame."""
    reply = _reply_frame(config)

    def connection(conn: socket.socket) -> None:
        with conn:
            if conn.family != socket.AF_UNIX:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffer = bytearray()
            while True:
                try:
                    data = conn.recv(262144)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while len(buffer) >= 4:
                    end = 4 + int.from_bytes(buffer[:4], "big")
                    if len(buffer) < end:
                        break
                    del buffer[:end]
                    conn.sendall(reply)

    def accept(listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=connection, args=(conn,), daemon=True).start()

    tcp, unix = _listeners(config, "echo-blocking")
    for listener in (tcp, unix):
        threading.Thread(target=accept, args=(listener,), daemon=True).start()
    announce(_urls(tcp, unix))
    wait_for_stdin_eof()


def serve_echo_asyncio(config: dict[str, Any]) -> None:
    """An asyncio Protocol server (the same event loop as clusterrpc's Node): read
    length-prefixed frames, answer each with a reply-sized frame."""
    reply = _reply_frame(config)

    class Echo(asyncio.Protocol):
        def __init__(self) -> None:
            self.buffer = bytearray()
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            buffer = self.buffer
            buffer += data
            while len(buffer) >= 4:
                end = 4 + int.from_bytes(buffer[:4], "big")
                if len(buffer) < end:
                    break
                del buffer[:end]
                assert self.transport is not None
                self.transport.write(reply)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        tcp, unix = _listeners(config, "echo-asyncio")
        servers = [await loop.create_server(Echo, sock=tcp),
                   await loop.create_unix_server(Echo, sock=unix)]
        stopped = asyncio.Event()
        threading.Thread(
            target=lambda: (wait_for_stdin_eof(), loop.call_soon_threadsafe(stopped.set)),
            daemon=True,
        ).start()
        announce(_urls(tcp, unix))
        await stopped.wait()
        for server in servers:
            server.close()

    asyncio.run(main())


SERVERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "clusterrpc": serve_clusterrpc,
    "stdlib": serve_stdlib,
    "pyro5": serve_pyro5,
    "echo-blocking": serve_echo_blocking,
    "echo-asyncio": serve_echo_asyncio,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in SERVERS:
        print(f"usage: _servers.py {{{','.join(KINDS)}}} CONFIG_JSON", file=sys.stderr)
        return 2
    SERVERS[argv[0]](json.loads(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
