"""The long-running ``clusterrpc serve`` process as an operator runs it: SIGHUP rotates the
keyring with calls in flight and none lost (TCP and HTTP), a bad keyring file on SIGHUP keeps
the current one, ``READY=1`` comes only once membership and election run, and
``--log-format json`` writes one JSON object a line with node, cluster, term and view, with
the keyring's secrets masked. All on 127.0.0.1, real processes."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import clusterrpc
from clusterrpc.errors import CallTimeoutError, HTTPError
from clusterrpc.keyring import Key, Keyring
from clusterrpc.transports.http import http_credentials
from tests.conftest import scaled
from tests.test_cli_rpc import CLUSTER, Server, child_env
from tests.test_systemd import notify_socket, received, short_dir  # noqa: F401 - a fixture

pytestmark = pytest.mark.timeout(scaled(120.0))

K1 = Keyring.generate("hmac-sha256", key_id="k1")
K2 = Keyring.generate("hmac-sha256", key_id="k2")


def keyring(*keys: Key, signing: str) -> Keyring:
    return Keyring(cluster=CLUSTER, keys=list(keys), signing_key_id=signing)


def start(config: Path, count: int, *args: str, **env: str) -> Server:
    """``clusterrpc serve --config CONFIG --print-addresses ARGS``, once ``count`` addresses
    are printed. The caller kills it (``Server.kill``)."""
    stderr_path = config.with_suffix(".stderr")
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "clusterrpc", "serve", "--config", str(config),
             "--print-addresses", *args],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=config.parent,
            env=child_env(**env),
        )  # fmt: skip
    server = Server(process, stderr_path)
    try:
        server.wait_for_addresses(count)
    except BaseException:
        server.kill()
        raise
    return server


@pytest.fixture
def rotating(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    keys = tmp_path / "node.keys"
    keyring(K1, signing="k1").save(keys)
    config = tmp_path / "node.toml"
    config.write_text('name = "n1"\nkeyring = "node.keys"\n'
                      'listen = ["tcp://127.0.0.1:0", "http://127.0.0.1:0"]\n'
                      'timeout = 10\ndrain_timeout = 2\n\n'
                      '[services]\nsvc = "cli_service:Election"\n')
    server = start(config, 2)
    try:
        yield server, keys
    finally:
        server.kill()


def wait_for_log(server: Server, text: str, *, count: int = 1, limit: float = 15.0) -> str:
    deadline = time.monotonic() + scaled(limit)
    while True:
        log = server.stderr_path.read_text()
        if log.count(text) >= count:
            return log
        assert time.monotonic() < deadline, f"no {text!r} in: {log}"
        time.sleep(0.05)


def sighup(server: Server, keys: Path, new: Keyring, *, count: int) -> None:
    new.save(keys)
    server.process.send_signal(signal.SIGHUP)
    wait_for_log(server, "SIGHUP: reloaded", count=count)


def test_sighup_rotates_the_keyring_with_calls_in_flight_and_none_lost(
        rotating: tuple[Server, Path]) -> None:
    server, keys = rotating
    tcp, http = server.urls["tcp"], server.urls["http"]
    both_k1 = keyring(K1, K2, signing="k1")  # the client already accepts the coming key

    def slow_call(_: int) -> bool:
        with clusterrpc.connect(tcp, keyring=both_k1, timeout=scaled(15)) as n1:
            result: bool = n1.svc.sleep(1.5)
            return result

    def echo_calls(stop_after: float) -> int:
        done = 0
        deadline = time.monotonic() + stop_after
        with clusterrpc.connect(tcp, keyring=both_k1, timeout=scaled(10)) as n1:
            while time.monotonic() < deadline and done < 2000:  # bounded in time and count
                assert n1.svc.echo(done) == done
                done += 1
        return done

    with concurrent.futures.ThreadPoolExecutor(max_workers=9) as pool:
        slow = [pool.submit(slow_call, index) for index in range(8)]
        steady = pool.submit(echo_calls, 3.0)
        time.sleep(0.5)  # the slow calls are in flight on their connections
        # Step 2 of a rotation: the node accepts both and signs with the new key.
        sighup(server, keys, keyring(K1, K2, signing="k2"), count=1)
        assert all(future.result(timeout=scaled(20)) is True for future in slow)
        assert steady.result(timeout=scaled(20)) > 0  # every echo came back, and equal
    # Step 3: the old key is gone; a caller still signing with it is not answered.
    sighup(server, keys, keyring(K2, signing="k2"), count=2)
    with clusterrpc.connect(tcp, keyring=keyring(K2, signing="k2"), timeout=scaled(5)) as n1:
        assert n1.svc.greet("k2") == "hello, k2"
    with clusterrpc.connect(tcp, keyring=both_k1, timeout=1.0) as n1, \
            pytest.raises(CallTimeoutError):
        n1.svc.greet("k1")
    # The HTTP endpoint's credentials rotated with it, on the same listening socket.
    with clusterrpc.connect(http, credentials=http_credentials(keyring(K2, signing="k2")),
                            timeout=scaled(5)) as web:
        assert web.svc.greet("web") == "hello, web"
    with clusterrpc.connect(http, credentials=http_credentials(both_k1), timeout=scaled(5)
                            ) as web, pytest.raises(HTTPError) as refused:
        web.svc.greet("web")
    assert refused.value.status == 401
    assert server.process.poll() is None


def test_a_bad_keyring_on_sighup_keeps_the_current_one(rotating: tuple[Server, Path]) -> None:
    server, keys = rotating
    keys.write_text("format = 1\n[[key]]\nid = 'broken'\n")  # no scheme, no secret
    keys.chmod(0o600)
    server.process.send_signal(signal.SIGHUP)
    log = wait_for_log(server, "SIGHUP: keeping the current keyring")
    assert "broken" in log
    keyring(K2, signing="k2").save(keys.with_name("other.keys"))
    with clusterrpc.connect(server.urls["tcp"], keyring=keyring(K1, signing="k1"),
                            timeout=scaled(5)) as n1:
        assert n1.svc.greet("still") == "hello, still"
    # A keyring for another cluster is refused the same way.
    Keyring(cluster="OTHER", keys=[K2], signing_key_id="k2").save(keys)
    server.process.send_signal(signal.SIGHUP)
    wait_for_log(server, "is for cluster 'OTHER'")
    with clusterrpc.connect(server.urls["tcp"], keyring=keyring(K1, signing="k1"),
                            timeout=scaled(5)) as n1:
        assert n1.svc.greet("again") == "hello, again"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_ready_comes_once_membership_and_election_run_and_json_logs_carry_them(
        short_dir: Path) -> None:  # noqa: F811 - the fixture
    keys = short_dir / "cluster.keys"
    keyring(K1, signing="k1").save(keys)
    port = free_udp_port()
    config = short_dir / "node.toml"
    config.write_text(
        f'name = "n1"\nkeyring = "cluster.keys"\nlisten = ["udp://127.0.0.1:{port}"]\n'
        "timeout = 5\ndrain_timeout = 1\n\n"
        "[membership]\nseeds = []\nprobe_interval = 0.2\nprobe_timeout = 0.1\n\n"
        f'[election]\nvoters = {{ n1 = "udp://127.0.0.1:{port}" }}\nstate_dir = "state"\n'
        "election_timeout = 0.3\nheartbeat_interval = 0.05\n")
    notify_path = str(short_dir / "notify")
    with notify_socket(notify_path) as receiver:
        server = start(config, 1, "--log-format", "json", "--log-level", "debug",
                       NOTIFY_SOCKET=notify_path)
        try:
            ready = received(receiver)
            assert ready[0] == "READY=1"
            # The status names the components: they ran before READY was sent.
            assert ready[1].startswith(f"STATUS=serving on udp://127.0.0.1:{port}; "
                                       "membership view "), ready
            assert "1 alive; election term " in ready[1]
            with clusterrpc.connect(f"udp://127.0.0.1:{port}", keyring=keyring(K1, signing="k1"),
                                    timeout=scaled(5)) as n1:
                deadline = time.monotonic() + scaled(10)
                while n1.election.status()["leader"] != "n1":
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=scaled(15)) == 0
        finally:
            server.kill()
    lines = server.stderr_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    others = [line for line in lines if not line.startswith("{")]
    # The only lines that are not JSON are the documented "clusterrpc: listening on" ones.
    assert others
    assert all(line.startswith("clusterrpc: listening on ") for line in others)
    assert records, lines
    for record in records:
        assert set(record) >= {"time", "level", "logger", "message", "node", "cluster",
                               "term", "view"}
        assert record["node"] == "n1"
        assert record["cluster"] == CLUSTER
    stopping = [record for record in records if record["message"] == "SIGTERM: stopping"]
    assert len(stopping) == 1
    assert stopping[0]["term"] >= 1  # the election ran and won a term by then
    assert isinstance(stopping[0]["view"], int)
    text = server.stderr_path.read_text()
    assert base64.b64encode(K1.secret).decode() not in text
    assert K1.secret.hex() not in text
