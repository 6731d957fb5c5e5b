"""``clusterrpc.connect()``: the blocking client, through real loopback sockets, against a node
served from another thread (and, for the crash test, another process). Blocking calls wait in
real time: their bounds are ``scaled()`` (``CLUSTERRPC_TEST_TIME_SCALE``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import clusterrpc
from clusterrpc import (
    CallTimeoutError,
    ConfigurationError,
    ConnectError,
    ConnectionClosedError,
    ConnectionLostError,
    EncodeError,
    Fault,
    Keyring,
    connect,
)
from tests.conftest import scaled
from tests.rpc_helpers import CLUSTER, NodeThread, make_keyring, node_process

KEYRING = make_keyring()
SCHEMES = ["tcp", "unix", "udp"]


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    listen = ["tcp://127.0.0.1:0", "udp://127.0.0.1:0", f"unix://{tmp_path}/server.sock"]
    with NodeThread(KEYRING, listen) as thread:
        yield thread


@pytest.mark.parametrize("scheme", SCHEMES)
def test_calls_oneway_faults_and_introspection(server: NodeThread, scheme: str) -> None:
    with connect(server.url(scheme), keyring=KEYRING, timeout=5) as client:
        assert client.election.status()["term"] == 3
        assert client.election.double(21) == 42
        assert client.call("election.echo", [1, "two"]) == [1, "two"]
        assert client.oneway.election.vote(7, "admin") is None
        assert client.election.status()["votes"] >= 0
        with pytest.raises(Fault) as fault:
            client.election.nope()
        assert fault.value.code == -32601
        with pytest.raises(Fault) as fault:
            client.election.fail("boom")
        assert fault.value.code == -32500
        assert "election.status" in client.system.listMethods()
        who = client.election.who()
        assert who["node"].startswith("client.")
        assert who["transport"] == scheme
    deadline = time.monotonic() + scaled(5)
    while not server.election.votes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.election.votes == [(7, "admin")]
    with pytest.raises(ConnectionClosedError):
        client.election.status()


@pytest.mark.parametrize("scheme", ["tcp", "unix", "udp"])
def test_timeout_then_late_answer_is_dropped(server: NodeThread, scheme: str) -> None:
    with connect(server.url(scheme), keyring=KEYRING, timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(CallTimeoutError):
            client.election.sleep(0.4, timeout=0.1)
        assert time.monotonic() - started < scaled(1)
        assert client.election.double(2) == 4
        time.sleep(0.5)
        assert client.election.double(3) == 6  # the late answer was read and dropped first


def test_threads_share_one_client(server: NodeThread) -> None:
    results: list[int] = []
    errors: list[BaseException] = []
    with connect(server.url("tcp"), keyring=KEYRING, timeout=10) as client:
        def work(base: int) -> None:
            try:
                for i in range(50):
                    results.append(client.election.double(base + i))
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(1000 * n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert not errors
    assert sorted(results) == sorted(2 * (1000 * n + i) for n in range(8) for i in range(50))


def test_reconnects_after_the_server_closed_an_idle_connection(tmp_path: Path) -> None:
    with NodeThread(KEYRING, ["tcp://127.0.0.1:0"]) as first:
        url = first.url("tcp")
        client = connect(url, keyring=KEYRING, timeout=5)
        assert client.election.double(1) == 2
    with NodeThread(KEYRING, [url]):
        assert client.election.double(2) == 4  # a fresh connection, not a failed call
    client.close()


def test_server_killed_mid_call_raises_connection_lost(tmp_path: Path) -> None:
    with node_process(tmp_path, KEYRING, ["tcp://127.0.0.1:0"]) as (process, addresses), \
            connect(addresses[0], keyring=KEYRING, timeout=30) as client:
        assert client.election.double(2) == 4
        timer = threading.Timer(0.3, process.kill)
        timer.start()
        started = time.monotonic()
        try:
            with pytest.raises(ConnectionLostError):
                client.election.sleep(20)
        finally:
            timer.cancel()
        assert time.monotonic() - started < scaled(5)
        process.wait(10)  # its listening socket closes as it exits: then refused
        with pytest.raises(ConnectError):
            client.election.double(1)


def test_connect_errors(tmp_path: Path) -> None:
    with connect("tcp://127.0.0.1:9", keyring=KEYRING, timeout=2) as client, \
            pytest.raises(ConnectError, match="refused"):
        client.election.status()
    with connect(f"unix://{tmp_path}/none.sock", keyring=KEYRING) as client, \
            pytest.raises(ConnectError, match="no such file"):
        client.election.status()
    with connect("udp://127.0.0.1:9", keyring=KEYRING, timeout=1) as client:
        with pytest.raises((ConnectError, CallTimeoutError)):
            client.election.status()
        with pytest.raises(ConfigurationError, match="timeout"):
            client.election.status(timeout=None)
    with pytest.raises(ConfigurationError, match="cluster"):
        connect("tcp://127.0.0.1:9", keyring=Keyring(keys=KEYRING.keys.values(),
                                                     signing_key_id="k1"))
    with pytest.raises(ConfigurationError):
        connect("udp://239.1.2.3:7400?iface=127.0.0.1", keyring=KEYRING)
    with pytest.raises(ConfigurationError):
        connect("nope://x", keyring=KEYRING)


def test_values_that_cannot_travel_are_refused_before_sending(server: NodeThread) -> None:
    with connect(server.url("tcp"), keyring=KEYRING, timeout=5) as client:
        with pytest.raises(EncodeError, match="set"):
            client.election.echo({1, 2})
        with connect(server.url("udp"), keyring=KEYRING, timeout=5) as udp, \
                pytest.raises(EncodeError, match="UDP datagram"):
            udp.election.echo(b"x" * 70000)
        assert client.election.double(1) == 2


def test_wrong_key_is_never_answered(server: NodeThread) -> None:
    stranger = make_keyring("k9")
    with connect(server.url("tcp"), keyring=stranger, timeout=0.3) as client, \
            pytest.raises(CallTimeoutError):
        client.election.status()
    assert server.counters["refused_unknown_key"] >= 1


def test_public_names() -> None:
    assert clusterrpc.connect is connect
    for name in ("remote", "oneway", "Node", "Keyring", "Fault", "connect", "current_call"):
        assert name in clusterrpc.__all__ or name in ("Node", "connect")
        assert getattr(clusterrpc, name) is not None
    assert Keyring is clusterrpc.Keyring
    assert CLUSTER
