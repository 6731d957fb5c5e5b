"""systemd integration (``spec/systemd.md``): notifications to a fake ``$NOTIFY_SOCKET`` (a
file and an abstract one), the watchdog's rules, ``inherited_sockets`` parsing, ``fd://``
listen URLs and inherited local-API sockets in-process, and a real socket-activated
``clusterrpc serve`` process that receives a TCP and a UDP socket as descriptors 3 and 4."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import clusterrpc
from clusterrpc import remote
from clusterrpc.errors import ConfigurationError, LocalAccessError, TransportError
from clusterrpc.keyring import Keyring
from clusterrpc.local import get_cluster_handle
from clusterrpc.local.paths import socket_path
from clusterrpc.testing import VirtualClock
from clusterrpc.transports.addresses import fd_name_kind, parse_address, parse_listen_address
from clusterrpc.transports.systemd import InheritedSocket, Notifier, inherited_sockets
from tests.conftest import run_on_virtual_clock, scaled

TESTS_DIR = Path(__file__).resolve().parent
CLUSTER = "ORG/UK/EDIN"
PROCESS_TIMEOUT = 30.0

# What systemd does between fork and exec, as a tiny program (no preexec_fn: unsafe with
# threads): move the descriptors named by argv to 3, 4, … (through high numbers, so a source
# that already is 3 or 4 is not overwritten), set LISTEN_PID to its own pid, exec the command.
LAUNCHER = """
import fcntl, os, sys
split = sys.argv.index("--")
sources, command = [int(fd) for fd in sys.argv[1:split]], sys.argv[split + 1:]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in sources]
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index)
for fd in {*sources, *high} - set(range(3, 3 + len(high))):
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(command[0], command)
"""


class Greeter:
    """What the inherited sockets serve."""

    @remote
    def greet(self, name: str) -> str:
        return f"hello, {name}"


def run(coroutine: Any, seconds: float = 20.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(scaled(seconds)):
            return await coroutine

    return asyncio.run(bounded())


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (a Unix socket path has at most 107 bytes), 0755 under
    sticky /tmp as the local API's checks want it, removed after."""
    path = Path(tempfile.mkdtemp(prefix="crpc-sd-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def notify_socket(address: str) -> Iterator[socket.socket]:
    """A fake service manager's notification socket bound at ``address``."""
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        receiver.bind(address)
        receiver.settimeout(scaled(10.0))
        yield receiver
    finally:
        receiver.close()


def received(receiver: socket.socket) -> list[str]:
    """The next notification's assignments."""
    data = receiver.recv(4096)
    assert data.endswith(b"\n"), data
    return data.decode().splitlines()


def pending(receiver: socket.socket) -> int:
    """How many notifications wait unread."""
    count = 0
    receiver.setblocking(False)
    try:
        while True:
            receiver.recv(4096)
            count += 1
    except BlockingIOError:
        return count
    finally:
        receiver.settimeout(scaled(10.0))


# -- notification ------------------------------------------------------------------------------


def test_notifications_reach_a_socket_file(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    with notify_socket(path) as receiver:
        notifier = Notifier(environ={"NOTIFY_SOCKET": path})
        assert notifier.enabled
        assert notifier.ready(status="serving") is True
        assert received(receiver) == ["READY=1", "STATUS=serving"]
        assert notifier.watchdog() is True
        assert received(receiver) == ["WATCHDOG=1"]
        assert notifier.status("two\nlines\x00READY=1") is True
        assert received(receiver) == ["STATUS=two lines READY=1"]  # no injected assignment
        assert notifier.stopping() is True
        assert received(receiver) == ["STOPPING=1"]
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert notifier.reloading() is True
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        reloading, monotonic = received(receiver)
        assert reloading == "RELOADING=1"
        key, _, usec = monotonic.partition("=")
        assert key == "MONOTONIC_USEC"
        assert before <= int(usec) <= after


def test_notifications_reach_an_abstract_socket() -> None:
    name = f"clusterrpc-test-{secrets.token_hex(8)}"
    with notify_socket("\0" + name) as receiver:
        notifier = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert received(receiver) == ["READY=1"]
        assert notifier.stopping(status="bye")
        assert received(receiver) == ["STOPPING=1", "STATUS=bye"]


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    for sent in (notifier.ready(), notifier.stopping(), notifier.reloading(),
                 notifier.status("x"), notifier.watchdog()):
        assert sent is False
    run_on_virtual_clock(notifier.keep_alive())  # returns at once


def test_a_send_failure_is_logged_or_raised(short_dir: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    gone = str(short_dir / "nobody")
    assert Notifier(environ={"NOTIFY_SOCKET": gone}).ready() is False
    assert f"cannot notify the service manager at {gone}" in caplog.text
    with pytest.raises(TransportError, match="cannot notify the service manager") as caught:
        Notifier(environ={"NOTIFY_SOCKET": gone}, strict=True).ready()
    assert isinstance(caught.value.__cause__, FileNotFoundError)


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234", "@", "/" + "x" * 200])
def test_a_malformed_notify_socket_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigurationError, match="NOTIFY_SOCKET"):
        Notifier(environ={"NOTIFY_SOCKET": value})


def test_an_assignment_must_be_one_line() -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": "/nonexistent"})
    for bad in ("READY", "STATUS=a\nREADY=1"):
        with pytest.raises(ValueError, match="KEY=value"):
            notifier.notify(bad)


# -- watchdog ----------------------------------------------------------------------------------


def test_watchdog_interval_rules() -> None:
    pid = str(os.getpid())
    assert Notifier(environ={"WATCHDOG_USEC": "30000000"}).watchdog_interval == 30.0
    assert Notifier(environ={"WATCHDOG_USEC": "500000", "WATCHDOG_PID": pid}
                    ).watchdog_interval == 0.5
    other = str(os.getpid() + 1)
    assert Notifier(environ={"WATCHDOG_USEC": "500000", "WATCHDOG_PID": other}
                    ).watchdog_interval is None
    assert Notifier(environ={"WATCHDOG_PID": pid}).watchdog_interval is None
    for bad in ({"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "-5"}, {"WATCHDOG_USEC": "1.5"},
                {"WATCHDOG_USEC": "10", "WATCHDOG_PID": "me"}):
        with pytest.raises(ConfigurationError, match="WATCHDOG_"):
            Notifier(environ=bad)


def test_keep_alive_pings_at_half_the_interval(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    clock = VirtualClock(autojump_threshold=0.0)
    with notify_socket(path) as receiver:
        notifier = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})

        async def scenario() -> None:
            task = asyncio.ensure_future(notifier.keep_alive())
            await asyncio.sleep(4.5)  # virtual: pings at 0, 1, 2, 3 and 4 s
            task.cancel()

        run_on_virtual_clock(scenario(), clock=clock, timeout=60.0)
        assert received(receiver) == ["WATCHDOG=1"]
        assert pending(receiver) == 4


# -- inherited_sockets: parsing ----------------------------------------------------------------


def test_nothing_is_inherited_for_another_process() -> None:
    for environ in ({}, {"LISTEN_FDS": "2"},
                    {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2",
                     "LISTEN_FDNAMES": "cluster:http"},
                    {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0"}):
        given = dict(environ)
        assert inherited_sockets(environ=given) == []
        assert not set(given) & {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}  # unset
    kept = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert inherited_sockets(environ=kept, unset=False) == []
    assert kept == {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}


@pytest.mark.parametrize(("environ", "message"), [
    ({"LISTEN_PID": "abc", "LISTEN_FDS": "1"}, "LISTEN_PID must be a decimal"),
    ({"LISTEN_PID": "PID", "LISTEN_FDS": "-1"}, "LISTEN_FDS must be a decimal"),
    ({"LISTEN_PID": "PID", "LISTEN_FDS": " 1"}, "LISTEN_FDS must be a decimal"),
    ({"LISTEN_PID": "PID", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "cluster"},
     "names 1 descriptor"),
    ({"LISTEN_PID": "PID", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "a:b"}, "names 2 descriptor"),
    ({"LISTEN_PID": "PID", "LISTEN_FDS": "99999"}, "more descriptors"),
])  # fmt: skip
def test_malformed_listen_variables(environ: dict[str, str], message: str) -> None:
    environ = {key: value.replace("PID", str(os.getpid())) for key, value in environ.items()}
    with pytest.raises(ConfigurationError, match=message):
        inherited_sockets(environ=environ)
    assert not environ  # unset even so: a child must not see them


def launch(fds: list[int], command: list[str]) -> list[str]:
    """The argv that runs ``command`` as systemd would with ``fds`` as 3, 4, …"""
    return [sys.executable, "-c", LAUNCHER, *map(str, fds), "--", *command]


def child_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_", "CLUSTERRPC_KEY"))}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR),
                                         *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(extra)
    return env


INSPECT = """
import fcntl, json, os
from clusterrpc.errors import ConfigurationError
try:
    taken = [(each.name, each.fd, each.scheme, each.socket.getsockname()[1],
              bool(fcntl.fcntl(each.fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC))
             for each in __import__("clusterrpc.transports.systemd",
                                    fromlist=["x"]).inherited_sockets()]
except ConfigurationError as error:
    taken = str(error)
print(json.dumps({"taken": taken,
                  "left": sorted(key for key in os.environ if key.startswith("LISTEN_"))}))
"""


def inspect_child(fds: list[int], **env: str) -> dict[str, Any]:
    result = subprocess.run(
        launch(fds, [sys.executable, "-c", INSPECT]), pass_fds=fds, capture_output=True,
        text=True, timeout=PROCESS_TIMEOUT, env=child_env(**env), check=True,
    )  # fmt: skip
    decoded: dict[str, Any] = json.loads(result.stdout)
    return decoded


def test_inherited_sockets_in_a_launched_process() -> None:
    with socket.create_server(("127.0.0.1", 0)) as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        fds = [tcp.fileno(), udp.fileno()]
        named = inspect_child(fds, LISTEN_FDS="2", LISTEN_FDNAMES="cluster:cluster.udp")
        assert named == {"taken": [
            ["cluster", 3, "tcp", tcp.getsockname()[1], True],
            ["cluster.udp", 4, "udp", udp.getsockname()[1], True],
        ], "left": []}
        unnamed = inspect_child(fds, LISTEN_FDS="2")
        assert [entry[0] for entry in unnamed["taken"]] == ["unknown", "unknown"]
        too_many = inspect_child(fds, LISTEN_FDS="3")
        assert "inherited descriptor 5" in too_many["taken"]
        assert "is not open" in too_many["taken"]
        assert too_many["left"] == []


def test_a_descriptor_that_is_not_a_socket_is_refused(short_dir: Path) -> None:
    with (short_dir / "file").open("w") as handle:
        refused = inspect_child([handle.fileno()], LISTEN_FDS="1")
    assert refused["taken"] == "inherited descriptor 3 ('unknown') is not a socket"


# -- fd names and URLs -------------------------------------------------------------------------


def test_fd_names_and_urls() -> None:
    assert fd_name_kind("cluster") == "cluster"
    assert fd_name_kind("cluster.public") == "cluster"
    assert fd_name_kind("http") == "http"
    assert fd_name_kind("local.locks.USER") == "local"
    assert fd_name_kind("local.my.locks.SYSTEM") == "local"
    for bad in ("", "x" * 256, "cluster:tcp", "unknown", "clusters", "local.locks",
                "local.locks.user", "http/x", "naïve"):
        with pytest.raises(ConfigurationError):
            fd_name_kind(bad)
    assert str(parse_listen_address("fd://cluster")) == "fd://cluster"
    http = parse_listen_address("fd://http.public/RPC3")
    assert (http.name, http.path, str(http)) == ("http.public", "/RPC3", "fd://http.public/RPC3")
    assert parse_listen_address("fd://Cluster.A".replace("C", "c")).name == "cluster.A"
    for bad in ("fd://local.locks.USER", "fd://cluster/path", "fd://cluster:80",
                "fd://cluster?x=1", "fd://nothing", "fd://"):
        with pytest.raises(ConfigurationError, match="invalid address"):
            parse_listen_address(bad)
    with pytest.raises(ConfigurationError, match="scheme must be one of"):
        parse_address("fd://cluster")  # nobody calls an fd: only listen URLs take it


# -- Node on inherited sockets (in-process) ----------------------------------------------------


@contextlib.contextmanager
def bound_sockets(directory: Path) -> Iterator[dict[str, socket.socket]]:
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    http = socket.create_server(("127.0.0.1", 0))
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(directory / "n1.sock"))
    unix.listen()
    sockets = {"tcp": tcp, "udp": udp, "http": http, "unix": unix}
    try:
        yield sockets
    finally:
        for sock in sockets.values():
            sock.close()


def inherited(name: str, sock: socket.socket) -> InheritedSocket:
    return InheritedSocket(name=name, fd=sock.fileno(), socket=sock)


def test_a_node_serves_on_inherited_sockets(short_dir: Path) -> None:
    keyring = Keyring(cluster=CLUSTER, keys=[Keyring.generate("hmac-sha256", key_id="k1")],
                      signing_key_id="k1")

    async def scenario(sockets: dict[str, socket.socket]) -> None:
        node = clusterrpc.Node(
            "n1", cluster=CLUSTER, keyring=keyring, listen=["fd://cluster", "fd://http"],
            inherited=[inherited("cluster", sockets["tcp"]), inherited("cluster", sockets["udp"]),
                       inherited("cluster", sockets["unix"]), inherited("http", sockets["http"])],
        )  # fmt: skip
        node.serve(Greeter(), name="greeter")
        assert node.addresses == ["fd://cluster", "fd://http"]
        tcp, udp, http = (sockets[kind].getsockname()[1] for kind in ("tcp", "udp", "http"))
        expected = [f"tcp://127.0.0.1:{tcp}", f"udp://127.0.0.1:{udp}",
                    f"unix://{short_dir}/n1.sock", f"http://127.0.0.1:{http}/RPC2"]
        caller = clusterrpc.Node("c", cluster=CLUSTER, keyring=keyring)
        for _ in range(2):  # the originals stay open: the node starts again on them
            async with node, caller:
                assert node.addresses == expected
                for url in expected[:3]:
                    assert await caller.peer(url, timeout=scaled(5)).greeter.greet(url) == (
                        f"hello, {url}")
            assert os.path.exists(short_dir / "n1.sock")  # noqa: ASYNC240 - not ours to remove
        for sock in sockets.values():
            assert sock.fileno() >= 0

    with bound_sockets(short_dir) as sockets:
        run(scenario(sockets))
        # The standard XML-RPC endpoint, from a blocking client, after the node stopped: the
        # kernel still holds the listening socket, so start one more time and call it.

        async def http_call() -> str:
            node = clusterrpc.Node("n1", cluster=CLUSTER, keyring=None, insecure=True,
                                   http_insecure=True, listen=["fd://http"],
                                   inherited=[inherited("http", sockets["http"])])
            node.serve(Greeter(), name="greeter")
            async with node:
                def call() -> str:
                    with clusterrpc.connect(node.addresses[0], timeout=scaled(5)) as proxy:
                        return str(proxy.greeter.greet("web"))

                return await asyncio.to_thread(call)

        assert run(http_call()) == "hello, web"


def test_inherited_socket_errors(short_dir: Path) -> None:
    async def start(listen: list[str], sockets: list[InheritedSocket]) -> None:
        node = clusterrpc.Node("n1", cluster=CLUSTER, keyring=None, insecure=True,
                               http_insecure=True, listen=listen, inherited=sockets)
        async with node:
            raise AssertionError("started")

    with bound_sockets(short_dir) as sockets, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as idle:
        idle.bind(("127.0.0.1", 0))  # bound, not listening: what Accept=yes would look like
        cases = [
            (["fd://cluster"], [inherited("http", sockets["http"])],
             "no inherited socket is named 'cluster' \\(inherited: http\\)"),
            (["fd://http"], [inherited("http", sockets["udp"])], "is not a TCP socket"),
            (["fd://http"], [inherited("http", sockets["unix"])], "is not a TCP socket"),
            (["fd://cluster"], [inherited("cluster", idle)], "does not listen"),
            (["tcp://127.0.0.1:0", "fd://cluster"], [], "no inherited socket"),
        ]
        for listen, given, message in cases:
            with pytest.raises(ConfigurationError, match=message):
                run(start(listen, given))
    with pytest.raises(ConfigurationError, match="needs a keyring"):
        clusterrpc.Node("n1", cluster=CLUSTER, keyring=None, insecure=True, listen=["fd://http"])


def test_a_node_without_inherited_takes_nothing_from_a_foreign_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")

    async def scenario() -> None:
        node = clusterrpc.Node("n1", cluster=CLUSTER, keyring=None, insecure=True,
                               listen=["fd://cluster"])
        with pytest.raises(ConfigurationError, match="inherited: none"):
            await node.start()

    run(scenario())
    assert "LISTEN_FDS" not in os.environ  # taken away from children, as systemd asks


# -- local-API sockets -------------------------------------------------------------------------


def local_socket(path: str, mode: int) -> socket.socket:
    """A listening Unix socket at ``path`` made the way systemd makes one (mode set before
    listen), with its directories 0755."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, mode)
    sock.listen()
    return sock


def test_an_inherited_local_socket_serves_a_domain(short_dir: Path) -> None:
    local_dir = str(short_dir)
    path = socket_path(local_dir, CLUSTER, "greeter", "USER")

    async def scenario(sock: socket.socket) -> None:
        node = clusterrpc.Node("n1", cluster=CLUSTER, keyring=None, insecure=True,
                               local_dir=local_dir,
                               inherited=[inherited("local.greeter.USER", sock)])
        node.serve_local(Greeter(), name="greeter", domains=["USER"])
        async with node:
            assert node.local is not None
            assert node.local.inherited_names == ["local.greeter.USER"]

            def call() -> tuple[str, str]:
                with get_cluster_handle(CLUSTER, "USER", local_dir=local_dir,
                                        timeout=scaled(5)) as handle:
                    return str(handle.greeter.greet("local")), str(handle.domain)

            assert await asyncio.to_thread(call) == ("hello, local", "USER")
        # The manager's file stays; the one the node bound itself (system) is gone.
        assert os.path.exists(path)  # noqa: ASYNC240
        assert not os.path.exists(socket_path(local_dir, CLUSTER, "system", "USER"))  # noqa: ASYNC240

    sock = local_socket(path, 0o666)
    try:
        run(scenario(sock))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    finally:
        sock.close()


def test_an_inherited_local_socket_must_keep_the_domain_permissions(short_dir: Path) -> None:
    local_dir = str(short_dir)

    async def start(sock: socket.socket) -> None:
        node = clusterrpc.Node("n1", cluster=CLUSTER, keyring=None, insecure=True,
                               local_dir=local_dir,
                               inherited=[inherited("local.greeter.SYSTEM", sock)])
        node.serve_local(Greeter(), name="greeter", domains=["SYSTEM"])
        async with node:
            raise AssertionError("started")

    right = socket_path(local_dir, CLUSTER, "greeter", "SYSTEM")
    loose = local_socket(right, 0o666)  # SYSTEM is 0660: everyone could connect
    try:
        with pytest.raises(LocalAccessError, match="its domain needs mode 0660"):
            run(start(loose))
    finally:
        loose.close()
        os.unlink(right)
    elsewhere = local_socket(str(short_dir / "elsewhere"), 0o660)
    try:
        with pytest.raises(ConfigurationError, match="local clients look for it at"):
            run(start(elsewhere))
    finally:
        elsewhere.close()


# -- a real socket-activated `clusterrpc serve` ------------------------------------------------


def test_serve_is_socket_activated_and_notifies_readiness(short_dir: Path) -> None:
    keys = short_dir / "cluster.keys"
    Keyring(cluster=CLUSTER, keys=[Keyring.generate("hmac-sha256", key_id="k1")],
            signing_key_id="k1").save(keys)
    config = short_dir / "node.toml"
    config.write_text('name = "n1"\nkeyring = "cluster.keys"\nlisten = ["fd://cluster"]\n'
                      'timeout = 5\ndrain_timeout = 1\n\n[services]\n'
                      'greeter = "cli_service:Election"\n')
    notify_path = str(short_dir / "notify")
    with notify_socket(notify_path) as receiver, \
            socket.create_server(("127.0.0.1", 0)) as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            (short_dir / "stderr").open("w") as stderr:
        udp.bind(("127.0.0.1", 0))
        expected = [f"tcp://127.0.0.1:{tcp.getsockname()[1]}",
                    f"udp://127.0.0.1:{udp.getsockname()[1]}"]
        command = [sys.executable, "-m", "clusterrpc", "serve", "--config", str(config),
                   "--print-addresses"]
        process = subprocess.Popen(
            launch([tcp.fileno(), udp.fileno()], command), pass_fds=(tcp.fileno(), udp.fileno()),
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=short_dir,
            env=child_env(LISTEN_FDS="2", LISTEN_FDNAMES="cluster:cluster",
                          NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="600000000"),
        )  # fmt: skip
        try:
            try:
                ready = received(receiver)
            except TimeoutError:
                raise AssertionError(f"no READY=1: {(short_dir / 'stderr').read_text()}") from None
            # READY=1 comes once the listeners serve on the inherited sockets, saying where.
            assert ready == ["READY=1", f"STATUS=serving on {', '.join(expected)}"]
            assert process.stdout is not None
            assert [process.stdout.readline().strip() for _ in expected] == expected
            for url in expected:
                with clusterrpc.connect(url, keyring=Keyring.load(keys),
                                        timeout=scaled(5)) as n1:
                    assert n1.greeter.greet(url) == f"hello, {url}"
            assert received(receiver) == ["WATCHDOG=1"]  # pinged at once, then every 300 s
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=scaled(15)) == 0, (short_dir / "stderr").read_text()
            assert received(receiver) == ["STOPPING=1"]
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=15)
            if process.stdout is not None:
                process.stdout.close()
        # The parent's copies (systemd's, in real life) still listen after the node stopped.
        assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
