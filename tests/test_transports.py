"""Nodes and peers through real loopback sockets: TCP, Unix stream and UDP.

Every test runs its own event loop, bounded in time, binds port 0 on 127.0.0.1 (or a Unix
socket under ``tmp_path``) and stops every node it starts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import struct
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest

from clusterrpc import (
    CallTimeoutError,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    EncodeError,
    Fault,
    HTTPError,
    Node,
    connect,
    current_call,
    remote,
)
from clusterrpc.codecs import CallMessage
from clusterrpc.packet import frame
from clusterrpc.transports.engine import Messenger
from clusterrpc.transports.http import http_credentials
from tests.conftest import scaled
from tests.rpc_helpers import CLUSTER, Election, make_keyring, node_process, run

KEYRING = make_keyring()


def server_node(tmp_path: Path | None = None, **options: Any) -> tuple[Node, Election]:
    listen = ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]
    if tmp_path is not None:
        listen.append(f"unix://{tmp_path}/n1.sock")
    node = Node("n1", cluster=CLUSTER, keyring=options.pop("keyring", KEYRING),
                listen=options.pop("listen", listen), **options)
    election = Election()
    node.serve(election, name="election")
    return node, election


def client_node(**options: Any) -> Node:
    return Node("n2", cluster=CLUSTER, keyring=options.pop("keyring", KEYRING), **options)


def by_scheme(node: Node, scheme: str) -> str:
    return next(url for url in node.addresses if url.startswith(scheme + "://"))


SCHEMES = ["tcp", "unix", "udp"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_calls_values_faults_and_introspection(tmp_path: Path, scheme: str) -> None:
    async def scenario() -> None:
        server, _ = server_node(tmp_path)
        async with server, client_node() as client:
            peer = client.peer(by_scheme(server, scheme), timeout=5)
            assert await peer.election.status() == {"term": 3, "leader": "n1", "votes": 0}
            value = {"i": 7, "big": 2**40, "f": 0.5, "s": "ünïcode", "b": b"\x00\xff",
                     "t": dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC), "n": None,
                     "l": [1, [2, {"x": True}]]}
            assert await peer.election.echo(value) == value
            assert await peer.election.double(21) == 42
            with pytest.raises(Fault) as unknown:
                await peer.election.nope()
            assert unknown.value.code == -32601
            with pytest.raises(Fault) as arity:
                await peer.election.double(1, 2)
            assert arity.value.code == -32602
            with pytest.raises(Fault) as types:
                await peer.election.double("one")
            assert types.value.code == -32602
            with pytest.raises(Fault) as app:
                await peer.election.fail("boom")
            assert (app.value.code, app.value.message) == (-32500, "RuntimeError: boom")
            assert "Traceback" not in app.value.message
            with pytest.raises(Fault) as own:
                await peer.election.refuse()
            assert (own.value.code, own.value.message) == (4711, "refused on purpose")
            methods = await peer.system.listMethods()
            assert "election.vote" in methods
            assert "system.multicall" in methods
            assert not any(name.split(".")[-1].startswith("_") for name in methods)
            assert await peer.system.methodHelp("election.double") == \
                "Return 2x after yielding to the loop."
            assert await peer.system.methodSignature("election.double") == [["int", "int"]]
            capabilities = await peer.system.getCapabilities()
            assert "clusterrpc.oneway" in capabilities
            results = await peer.system.multicall([
                {"methodName": "election.double", "params": [2]},
                {"methodName": "election.nope", "params": []},
            ])
            assert results[0] == [4]
            assert results[1]["faultCode"] == -32601
            assert await peer.call("election.double", 5) == 10

    run(scenario())


def test_debug_option_adds_tracebacks() -> None:
    async def scenario() -> None:
        server, _ = server_node(debug=True)
        async with server, client_node() as client:
            peer = client.peer(by_scheme(server, "tcp"), timeout=5)
            with pytest.raises(Fault) as app:
                await peer.election.fail("boom")
            assert "Traceback" in app.value.message

    run(scenario())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_call_context_names_the_authenticated_caller(tmp_path: Path, scheme: str) -> None:
    async def scenario() -> None:
        server, _ = server_node(tmp_path)
        async with server, client_node() as client:
            who = await client.peer(by_scheme(server, scheme), timeout=5).election.who()
            assert who["node"] == "n2"
            assert who["key_id"] == "k1"
            assert who["transport"] == scheme
            assert who["oneway"] is False
            assert who["method"] == "election.who"
            if scheme != "unix":
                assert who["peer"].startswith("127.0.0.1:")

    run(scenario())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_call_context_carries_the_callers_deadline(tmp_path: Path, scheme: str) -> None:
    seen: list[tuple[float | None, float]] = []

    class Clock:
        @remote
        def deadline(self) -> None:
            """Record the deadline this call was given."""
            seen.append((current_call().deadline, time.time()))

    async def scenario() -> None:
        server, _ = server_node(tmp_path)
        server.serve(Clock(), name="clock")
        async with server, client_node() as client:
            peer = client.peer(by_scheme(server, scheme), timeout=5)
            await peer.clock.deadline(timeout=2.0)
            await peer.clock.deadline()
            await peer.oneway.clock.deadline()
            await peer.election.status()
        (first, at_first), (second, at_second), (third, _) = seen
        assert first is not None
        assert 2.0 / 1.1 < first - at_first <= 2.0
        assert second is not None
        assert 5.0 / 1.1 < second - at_second <= 5.0
        assert third is None  # a one-way call has no deadline

    run(scenario())


@pytest.mark.parametrize("scheme", SCHEMES)
def test_oneway_calls_run_in_order_and_errors_are_counted(tmp_path: Path,
                                                          scheme: str) -> None:
    async def scenario() -> None:
        server, election = server_node(tmp_path)
        async with server, client_node() as client:
            peer = client.peer(by_scheme(server, scheme), timeout=5)
            for term in range(50):
                assert await peer.oneway.election.vote(term, "n2") is None
            await peer.oneway.election.crash()
            await peer.oneway.election.nope()
            await peer.oneway.election.vote("not an int", "n2")
            # A normal call after them: on a stream it is answered after they ran.
            await peer.election.status()
            for _ in range(100):
                if server.counters["oneway_errors"] == 3 and len(election.votes) == 50:
                    break
                await asyncio.sleep(0.01)
            if scheme != "udp":  # UDP keeps no order; loopback loses nothing here though
                assert election.votes == [(term, "n2") for term in range(50)]
            assert sorted(election.votes) == [(term, "n2") for term in range(50)]
            assert server.counters["oneway_errors"] == 3
            assert server.counters["oneway_calls"] == 53

    run(scenario())


def _raw_call_packet(method: str, params: tuple[Any, ...], *, oneway: bool,
                     call_id: int = 99, keyring: Any = KEYRING) -> bytes:
    messenger = Messenger(node="raw", cluster=CLUSTER, keyring=keyring)
    return messenger.seal_call(call_id, CallMessage(method, params), oneway=oneway)


def test_oneway_call_gets_no_packet_back_over_tcp() -> None:
    """Counted at the socket: whatever the one-way call does, not one byte comes back, while
    a normal call on the same connection is answered."""

    async def scenario() -> None:
        server, election = server_node()
        async with server:
            host, port = by_scheme(server, "tcp")[len("tcp://"):].rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(port))
            messenger = Messenger(node="raw", cluster=CLUSTER, keyring=KEYRING)
            for call_id, (method, params) in enumerate([
                ("election.vote", (1, "raw")), ("election.crash", ()),
                ("election.nope", ()), ("election.vote", ("bad",)),
            ], 1):
                writer.write(frame(messenger.seal_call(call_id, CallMessage(method, params),
                                                       oneway=True)))
            await writer.drain()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.5)
            assert election.votes == [(1, "raw")]
            # The same connection answers a normal call: exactly one frame.
            writer.write(frame(messenger.seal_call(
                9, CallMessage("election.status", ()), oneway=False)))
            length = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))[0]
            await reader.readexactly(length)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.3)
            writer.close()
            await writer.wait_closed()

    run(scenario())


def test_oneway_call_gets_no_datagram_back_over_udp() -> None:
    async def scenario() -> None:
        server, election = server_node()
        async with server:
            host, port = by_scheme(server, "udp")[len("udp://"):].rsplit(":", 1)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.settimeout(0.5)
                sock.connect((host, int(port)))
                for method, params in [("election.vote", (1, "raw")), ("election.crash", ()),
                                       ("election.nope", ())]:
                    sock.send(_raw_call_packet(method, params, oneway=True))
                received = 0
                try:
                    await asyncio.to_thread(sock.recv, 65536)
                    received += 1
                except TimeoutError:
                    pass
                assert received == 0
                assert election.votes == [(1, "raw")]
                sock.send(_raw_call_packet("election.status", (), oneway=False, call_id=5))
                assert await asyncio.to_thread(sock.recv, 65536)
            finally:
                sock.close()

    run(scenario())


def test_udp_endpoint_reads_every_queued_datagram_per_wake_up() -> None:
    """asyncio reads one datagram per event-loop turn; the endpoint reads the ones queued
    behind it too (the answers to a multicast call arrive together), in order."""

    async def scenario() -> None:
        server, election = server_node()
        async with server:
            host, port = by_scheme(server, "udp")[len("udp://"):].rsplit(":", 1)
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.connect((host, int(port)))
                for term in range(20):
                    sock.send(_raw_call_packet("election.vote", (term, "raw"), oneway=True,
                                               call_id=term + 1))
                time.sleep(0.2)  # noqa: ASYNC251 - blocks the loop on purpose: all 20 queue up
                for _ in range(3):  # a few loop turns: one datagram each, without draining
                    await asyncio.sleep(0)
                assert election.votes == [(term, "raw") for term in range(20)]
            finally:
                sock.close()

    run(scenario())


def test_thousand_concurrent_calls_complete() -> None:
    async def scenario() -> None:
        server, _ = server_node(max_in_flight=64)
        async with server, client_node(max_in_flight=32) as client:
            peer = client.peer(by_scheme(server, "tcp"), timeout=20)
            results = await asyncio.gather(*(peer.election.double(i) for i in range(1000)))
            assert results == [2 * i for i in range(1000)]
            results = await asyncio.gather(*(peer.election.status() for _ in range(1000)))
            assert len(results) == 1000

    run(scenario(), timeout=40)


def test_replies_are_matched_out_of_order() -> None:
    async def scenario() -> None:
        server, _ = server_node()
        async with server, client_node() as client:
            peer = client.peer(by_scheme(server, "tcp"), timeout=5)
            slow = asyncio.ensure_future(peer.election.sleep(0.3))
            await asyncio.sleep(0.05)
            assert await peer.election.double(4) == 8  # answered while the slow one runs
            assert not slow.done()
            assert await slow == "slept"

    run(scenario())


@pytest.mark.parametrize("scheme", ["tcp", "udp"])
def test_timeout_then_the_connection_keeps_working(scheme: str) -> None:
    async def scenario() -> None:
        server, _ = server_node()
        async with server, client_node() as client:
            peer = client.peer(by_scheme(server, scheme), timeout=5)
            with pytest.raises(CallTimeoutError):
                await peer.election.sleep(0.5, timeout=0.1)
            assert await peer.election.double(3) == 6
            await asyncio.sleep(0.5)  # the late answer arrives and is dropped
            assert await peer.election.double(4) == 8

    run(scenario())


def test_cancelled_call_frees_its_slot() -> None:
    async def scenario() -> None:
        server, _ = server_node()
        async with server, client_node(max_in_flight=1) as client:
            peer = client.peer(by_scheme(server, "tcp"), timeout=5)
            task = asyncio.ensure_future(peer.election.sleep(0.5))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await peer.election.double(2) == 4  # the only slot is free again

    run(scenario())


def test_client_back_pressure_queues_calls_beyond_max_in_flight() -> None:
    async def scenario() -> None:
        server, _ = server_node()
        async with server, client_node(max_in_flight=2) as client:
            peer = client.peer(by_scheme(server, "tcp"), timeout=5)
            results = await asyncio.gather(*(peer.election.sleep(0.02) for _ in range(10)))
            assert results == ["slept"] * 10
            with pytest.raises(CallTimeoutError):  # waiting for a slot counts too
                await asyncio.gather(*(peer.election.sleep(0.3, timeout=0.2)
                                       for _ in range(4)))

    run(scenario())


def test_server_back_pressure_bounds_running_calls_per_connection() -> None:
    running = 0
    peak = 0

    class Counter:
        @remote
        async def hold(self) -> int:
            """Hold a slot briefly."""
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1
            return peak

    async def scenario() -> None:
        server = Node("n1", cluster=CLUSTER, keyring=KEYRING, listen=["tcp://127.0.0.1:0"],
                      max_in_flight=4)
        server.serve(Counter(), name="counter")
        async with server, client_node(max_in_flight=100) as client:
            peer = client.peer(server.addresses[0], timeout=10)
            await asyncio.gather(*(peer.counter.hold() for _ in range(60)))
        assert peak <= 4

    run(scenario())


def test_async_with_drains_calls_in_flight() -> None:
    async def scenario() -> None:
        server, _ = server_node()
        client = client_node()
        await client.start()
        try:
            await server.start()
            peer = client.peer(by_scheme(server, "tcp"), timeout=5)
            call = asyncio.ensure_future(peer.election.sleep(0.3))
            await asyncio.sleep(0.1)
            await server.stop()  # waits for the call being served, which is answered
            assert await call == "slept"
            # The server closed the connection as it stopped. A call made before the client
            # saw that close may fail as lost (it was written to a closing connection); once
            # it was seen, connecting again is refused.
            with pytest.raises((ConnectError, ConnectionLostError)):
                await peer.election.status()
            with pytest.raises(ConnectError):
                await peer.election.status()
        finally:
            await client.stop()
            await server.stop()

    run(scenario())


def test_reconnects_after_the_server_restarts() -> None:
    async def scenario() -> None:
        server, _ = server_node(listen=["tcp://127.0.0.1:0"])
        async with client_node() as client:
            await server.start()
            url = server.addresses[0]
            peer = client.peer(url, timeout=5)
            assert await peer.election.double(1) == 2
            await server.stop()
            restarted, _ = server_node(listen=[url])
            async with restarted:
                assert await peer.election.double(2) == 4

    run(scenario())


def test_server_killed_mid_call_gives_a_clear_error(tmp_path: Path) -> None:
    async def scenario(url: str, process: Any) -> None:
        async with client_node() as client:
            peer = client.peer(url, timeout=30)
            assert await peer.election.double(2) == 4
            call = asyncio.ensure_future(peer.election.sleep(20))
            await asyncio.sleep(0.2)
            process.kill()
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ConnectionLostError, match=r"closed the connection|lost"):
                await call
            assert loop.time() - started < scaled(5)  # real time: another process dies
            await asyncio.to_thread(process.wait, 10)  # its listening socket closes on exit
            with pytest.raises(ConnectError, match="refused"):
                await peer.election.double(3)

    with node_process(tmp_path, KEYRING, ["tcp://127.0.0.1:0"]) as (process, addresses):
        run(scenario(addresses[0], process))


def test_calls_to_nowhere_and_after_stop_fail_clearly(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = client_node()
        peer = node.peer("tcp://127.0.0.1:9", timeout=2)
        with pytest.raises(ConnectionClosedError, match="not started"):
            await peer.election.status()
        async with node:
            with pytest.raises(ConnectError, match=r"tcp://127\.0\.0\.1:9"):
                await peer.election.status()
            with pytest.raises(ConnectError):
                await node.peer(f"unix://{tmp_path}/none.sock").election.status()
            with pytest.raises(CallTimeoutError):  # nobody answers a UDP call there
                await node.peer("udp://127.0.0.1:9", timeout=0.2).election.status()
        with pytest.raises(ConnectionClosedError):
            await peer.election.status()

    run(scenario())


def test_unauthenticated_and_malformed_input_is_refused_while_serving_others() -> None:
    async def scenario() -> None:
        server, election = server_node()
        async with server, client_node() as client:
            url = by_scheme(server, "tcp")
            host, port = url[len("tcp://"):].rsplit(":", 1)
            good = client.peer(url, timeout=5)
            # A packet signed with a key the server does not have: dropped, connection kept.
            reader, writer = await asyncio.open_connection(host, int(port))
            stranger = make_keyring("other")
            writer.write(frame(_raw_call_packet("election.vote", (1, "forged"), oneway=True,
                                                keyring=stranger)))
            # Garbage inside a well-sized frame: dropped too.
            writer.write(frame(b"\x00" * 100))
            writer.write(frame(_raw_call_packet("election.vote", (2, "real"), oneway=True)))
            await writer.drain()
            await asyncio.sleep(0.2)
            assert election.votes == [(2, "real")]
            assert server.counters["refused_unknown_key"] == 1
            assert server.counters["refused_malformed"] == 1
            # An oversized frame breaks framing: that connection is closed …
            writer.write(struct.pack(">I", 2**31))
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            # … and the server goes on serving everybody else.
            assert await good.election.double(5) == 10
            assert server.counters["refused_malformed"] == 2

    run(scenario())


def test_packets_over_max_packet_are_refused_both_ways() -> None:
    async def scenario() -> None:
        server, _ = server_node(max_packet=4096)
        async with server, client_node(max_packet=4096) as client:
            peer = client.peer(by_scheme(server, "tcp"), timeout=5)
            with pytest.raises(EncodeError, match="max_packet"):  # ours: refused before sending
                await peer.election.echo("x" * 5000)
            big_sender = client_node(max_packet=1 << 20)
            async with big_sender:
                with pytest.raises(ConnectionLostError):
                    await big_sender.peer(by_scheme(server, "tcp"), timeout=5
                                          ).election.echo("x" * 100_000)
            # The server's reply would exceed its max_packet: a fault says so.
            with pytest.raises(Fault, match="cannot be sent") as fault:
                await peer.election.big(10_000)
            assert fault.value.code == -32603
            assert await peer.election.double(1) == 2

    run(scenario())


def test_udp_limits() -> None:
    async def scenario() -> None:
        server, _ = server_node()
        async with server, client_node() as client:
            peer = client.peer(by_scheme(server, "udp"), timeout=5)
            with pytest.raises(EncodeError, match="UDP datagram"):
                await peer.election.echo(b"x" * 70_000)
            with pytest.raises(Fault, match="tcp://") as fault:
                await peer.election.big(60_000 + 10_000)
            assert fault.value.code == -32300
            with pytest.raises(ConfigurationError, match="timeout"):
                await client.peer(by_scheme(server, "udp"), timeout=None).election.status()

    run(scenario())


def test_wrong_cluster_and_wrong_key_never_answered() -> None:
    async def scenario() -> None:
        server, _ = server_node()
        async with server:
            other_cluster = Node("n3", cluster="OTHER", keyring=KEYRING)
            other_key = Node("n4", cluster=CLUSTER, keyring=make_keyring("k2"))
            async with other_cluster, other_key:
                for node in (other_cluster, other_key):
                    with pytest.raises(CallTimeoutError):
                        await node.peer(by_scheme(server, "tcp"), timeout=0.3
                                        ).election.status()
            assert server.counters["refused_wrong_cluster"] == 1
            assert server.counters["refused_unknown_key"] == 1

    run(scenario())


def test_insecure_nodes_need_to_say_so() -> None:
    with pytest.raises(ConfigurationError, match="insecure"):
        Node("n1", cluster=CLUSTER, keyring=None)

    async def scenario() -> None:
        server = Node("n1", cluster=CLUSTER, keyring=None, insecure=True,
                      listen=["tcp://127.0.0.1:0"])
        server.serve(Election(), name="election")
        async with server:
            async with Node("n2", cluster=CLUSTER, keyring=None, insecure=True) as client:
                assert await client.peer(server.addresses[0]).election.double(2) == 4
            async with client_node() as signed:  # a secure node refuses insecure answers
                with pytest.raises(CallTimeoutError):
                    await signed.peer(server.addresses[0], timeout=0.3).election.double(2)

    run(scenario())


def test_stale_unix_socket_is_replaced_and_removed_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "n1.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a killed process leaves it

    async def scenario() -> None:
        server, _ = server_node(listen=[f"unix://{path}"])
        async with server, client_node() as client:
            assert await client.peer(f"unix://{path}", timeout=5).election.double(1) == 2
            other, _ = server_node(listen=[f"unix://{path}"])
            with pytest.raises(Exception, match="another process listens"):
                await other.start()
        assert not path.exists()

    run(scenario())


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="list"):
        Node("n1", cluster=CLUSTER, keyring=KEYRING, listen="tcp://127.0.0.1:0")
    with pytest.raises(ConfigurationError, match="iface"):
        Node("n1", cluster=CLUSTER, keyring=KEYRING, listen=["udp://239.1.1.1:7400"])
    with pytest.raises(ConfigurationError, match="timeout"):
        Node("n1", cluster=CLUSTER, keyring=KEYRING, timeout=-1)
    node = client_node()
    with pytest.raises(ConfigurationError):
        node.peer("ftp://127.0.0.1:1")
    with pytest.raises(ConfigurationError, match="timeout"):
        node.peer("tcp://127.0.0.1:1").election.status(timeout=0)


def test_node_http_endpoint_serves_standard_clients_with_credentials() -> None:
    async def scenario() -> None:
        server, election = server_node(listen=["http://127.0.0.1:0/RPC2"])
        async with server, client_node() as client:
            url = server.addresses[0]
            assert url.startswith("http://127.0.0.1:")
            assert url.endswith("/RPC2")
            user, token = http_credentials(KEYRING)
            authorised = url.replace("http://", f"http://{user}:{token}@")

            def standard_client() -> tuple[Any, int]:
                with xmlrpc.client.ServerProxy(authorised, allow_none=True) as proxy:
                    status = proxy.election.status()
                with xmlrpc.client.ServerProxy(url) as anonymous:
                    try:
                        anonymous.election.status()
                    except xmlrpc.client.ProtocolError as error:
                        return status, error.errcode
                return status, 200

            status, refused = await asyncio.to_thread(standard_client)
            assert status["term"] == 3
            assert refused == 401
            peer = client.peer(url, credentials=(user, token), timeout=5)
            assert await peer.election.double(4) == 8
            await peer.oneway.election.vote(5, "http")
            assert election.votes == [(5, "http")]
            with pytest.raises(HTTPError) as error:  # no credentials are sent unless given
                await client.peer(url, timeout=5).election.status()
            assert error.value.status == 401

            def blocking() -> Any:
                with connect(authorised, timeout=5) as by_url, \
                        connect(url, keyring=KEYRING, timeout=5) as by_keyring:
                    return by_url.election.double(1), by_keyring.election.double(2)

            assert await asyncio.to_thread(blocking) == (2, 4)

    run(scenario())
