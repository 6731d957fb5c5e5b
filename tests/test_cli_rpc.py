"""``clusterrpc call``, ``methods`` and ``serve``: a real ``clusterrpc serve --config`` process
on loopback ports chosen by the system (and a Unix socket under the test's directory), called
in-process through ``main(argv)`` and as real processes; every exit status, JSON output,
one-way calls, argument errors, keyrings with a cluster, services by import path, and the
configuration errors of ``serve``."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
import xmlrpc.server
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from clusterrpc.cli.defaults import ENV_CONFIG
from clusterrpc.cli.keys import ENV_KEYRING
from clusterrpc.cli.main import main
from clusterrpc.cli.notation import from_notation
from clusterrpc.cli.rpc import ENV_PASSWORD
from clusterrpc.keyring import Keyring
from clusterrpc.local import get_cluster_handle
from clusterrpc.values import same_value

TESTS_DIR = Path(__file__).resolve().parent
CLUSTER = "ORG/UK/EDIN"
PROCESS_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KEYRING, raising=False)
    monkeypatch.delenv(ENV_PASSWORD, raising=False)
    monkeypatch.setenv(ENV_CONFIG, "")  # no client configuration file: not the user's own


def write_keyring(path: Path, *, cluster: str | None = CLUSTER) -> Path:
    key = Keyring.generate("hmac-sha256", key_id="k1")
    Keyring(cluster=cluster, keys=[key], signing_key_id="k1").save(path)
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this one's, with ``tests/`` on ``PYTHONPATH`` (for
    ``cli_service``) and no keyring or client configuration file unless given."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_KEYRING, ENV_PASSWORD)}
    env[ENV_CONFIG] = ""
    paths = [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra)
    return env


def run_cli(*argv: str | Path, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run the real command ``clusterrpc ARGV`` as a process."""
    return subprocess.run(
        [sys.executable, "-m", "clusterrpc", *map(str, argv)],
        capture_output=True, text=True, timeout=PROCESS_TIMEOUT, env=env or child_env(),
        check=False,
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run ``clusterrpc ARGV`` in-process; return (exit status, stdout, stderr)."""
    try:
        status = main([str(arg) for arg in argv])
    except SystemExit as exit_:  # argparse exits on usage errors
        status = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(err: str) -> str:
    assert err.startswith("clusterrpc: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


class Server:
    """A ``clusterrpc serve`` process and the addresses it printed."""

    def __init__(self, process: subprocess.Popen[str], stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.urls: dict[str, str] = {}
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for_addresses(self, count: int, timeout: float = PROCESS_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while len(self.urls) < count:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no addresses within {timeout} s: {self.stderr}") from None
            if line is None:
                raise AssertionError(f"serve exited early: {self.stderr}")
            self.urls[line.split(":", 1)[0]] = line

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and return the exit status (killing the process if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
            raise

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=15)
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextlib.contextmanager
def serving(config: Path, count: int, **env: str) -> Iterator[Server]:
    """Run ``clusterrpc serve --config CONFIG --print-addresses``; wait for ``count`` addresses;
    kill the process at the end whatever happened."""
    stderr_path = config.with_suffix(".stderr")
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "clusterrpc", "serve", "--config", str(config),
             "--print-addresses"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=config.parent,
            env=child_env(CLI_SERVICE_DIR=str(config.parent), **env),
        )  # fmt: skip
    server = Server(process, stderr_path)
    try:
        server.wait_for_addresses(count)
        yield server
    finally:
        server.kill()


def write_config(directory: Path, text: str) -> Path:
    path = directory / "node.toml"
    path.write_text(text)
    return path


# -- the node all call/methods tests talk to ------------------------------------------------------


class Node:
    def __init__(self, server: Server, directory: Path, keyring: Path) -> None:
        self.server = server
        self.directory = directory
        self.keyring = keyring
        self.tcp = server.urls["tcp"]
        self.udp = server.urls["udp"]
        self.unix = server.urls["unix"]
        self.http = server.urls["http"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    directory = tmp_path_factory.mktemp("node")
    keyring = write_keyring(directory / "cluster.keys")
    config = write_config(directory, f"""
        name = "n1"
        keyring = "cluster.keys"          # relative to this file; its cluster is {CLUSTER}
        listen = ["tcp://127.0.0.1:0", "udp://127.0.0.1:0", "unix://{directory}/n1.sock",
                  "http://127.0.0.1:0/RPC2"]
        timeout = 5
        drain_timeout = 2

        [services]
        election = "cli_service:Election"
        counter = "cli_service:make_counter"
        fixed = "cli_service:COUNTER"
    """.replace("\n        ", "\n"))
    with serving(config, 4) as server:
        yield Node(server, directory, keyring)
        assert server.stop(signal.SIGTERM) == 0, server.stderr
        assert not (directory / "n1.sock").exists()


def call(capsys: pytest.CaptureFixture[str], node: Node, *argv: str,
         url: str | None = None) -> tuple[int, str, str]:
    return run(capsys, "call", "-k", node.keyring, url or node.tcp, *argv)


# -- serve: what it prints ---------------------------------------------------------------------


def test_serve_prints_bound_addresses(node: Node) -> None:
    urls = node.server.urls
    assert set(urls) == {"tcp", "udp", "unix", "http"}
    for scheme in ("tcp", "udp", "http"):
        assert urls[scheme].startswith(f"{scheme}://127.0.0.1:")
        assert not urls[scheme].startswith(f"{scheme}://127.0.0.1:0")  # the port was chosen
    assert urls["unix"] == f"unix://{node.directory}/n1.sock"
    stderr = node.server.stderr
    for url in urls.values():
        assert f"clusterrpc: listening on {url}\n" in stderr
    assert "serving election: election.blob, election.echo" in stderr
    assert "Traceback" not in stderr


# -- call ---------------------------------------------------------------------------------------


def test_call_real_command_with_keyring_from_environment(node: Node) -> None:
    env = child_env(**{ENV_KEYRING: str(node.keyring)})
    result = run_cli("call", node.tcp, "election.greet", '"n1"', env=env)
    assert (result.returncode, result.stdout, result.stderr) == (0, "hello, n1\n", "")


@pytest.mark.parametrize("scheme", ["tcp", "udp", "unix", "http"])
def test_call_every_transport(capsys: pytest.CaptureFixture[str], node: Node,
                              scheme: str) -> None:
    url = node.server.urls[scheme]
    assert call(capsys, node, "election.greet", '"ü"', url=url) == (0, "hello, ü\n", "")


def test_call_cluster_comes_from_the_keyring_or_the_option(
    capsys: pytest.CaptureFixture[str], node: Node, tmp_path: Path
) -> None:
    bare = tmp_path / "bare.keys"  # the node's key, without the cluster name
    Keyring(keys=Keyring.load(node.keyring).keys.values(), signing_key_id="k1").save(bare)
    status, _, err = run(capsys, "call", "-k", bare, node.tcp, "election.greet", '"x"')
    assert status == 2
    assert "no cluster name: pass --cluster NAME or set `cluster` in the keyring" in (
        one_line_error(err))
    status, out, _ = run(capsys, "call", "-k", bare, "--cluster", CLUSTER, node.tcp,
                         "election.greet", '"x"')
    assert (status, out) == (0, "hello, x\n")


def test_call_readable_output(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    assert call(capsys, node, "election.echo", '"two\\nlines"') == (0, "two\nlines\n", "")
    assert call(capsys, node, "election.echo", "null") == (0, "", "")
    assert call(capsys, node, "election.echo", "42") == (0, "42\n", "")
    assert call(capsys, node, "election.echo", "true") == (0, "true\n", "")
    assert call(capsys, node, "election.when") == (0, "2026-11-22T18:51:39+00:00\n", "")
    status, out, _ = call(capsys, node, "election.echo", '{"b": [1, 2.5], "a": "x"}')
    assert status == 0
    assert out == '{\n  "b": [\n    1,\n    2.5\n  ],\n  "a": "x"\n}\n'
    status, out, _ = call(capsys, node, "election.blob")
    assert json.loads(out) == {"$bytes": "AAH+/w=="}


def test_call_json_output(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    value: list[Any] = [1, -2.5, None, "s", True, {"$bytes": "AAE="},
             {"$datetime": "2026-11-22T18:51:39.250000+00:00"},
             {"$struct": {"$weird": 1}}, {"nested": {"list": []}}]
    status, out, err = call(capsys, node, "--json", "election.echo", json.dumps(value))
    assert (status, err) == (0, "")
    assert json.loads(out) != value  # the datetime comes back in the canonical notation
    assert same_value(from_notation(json.loads(out)), from_notation(value))
    assert json.loads(out)[6] == {"$datetime": "20261122T18:51:39.250000Z"}
    assert call(capsys, node, "--json", "election.echo", '"s"') == (0, '"s"\n', "")
    assert call(capsys, node, "--json", "election.echo", "null") == (0, "null\n", "")


def test_call_options_after_arguments(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    status, out, _ = call(capsys, node, "election.echo", "-3", "--json")
    assert (status, out) == (0, "-3\n")


def test_call_service_factory_and_object(capsys: pytest.CaptureFixture[str], node: Node
                                         ) -> None:
    status, out, _ = call(capsys, node, "counter.next")
    assert status == 0
    assert int(out) > 10  # make_counter() started it at 10
    status, out, _ = call(capsys, node, "fixed.next")
    assert status == 0
    assert int(out) > 100  # the module's COUNTER object, served as it is


def test_call_oneway(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    marker = node.directory / "touched-by-oneway"
    assert call(capsys, node, "--oneway", "election.touch", json.dumps(marker.name)) == (
        0, "", "")
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the one-way call never arrived"
        time.sleep(0.02)
    marker.unlink()
    # Over UDP too; and the vote's effect shows in the next normal call.
    assert call(capsys, node, "--oneway", "election.vote", "7", '"n9"', url=node.udp) == (
        0, "", "")
    deadline = time.monotonic() + 10
    while True:
        status, out, _ = call(capsys, node, "--json", "election.status")
        assert status == 0
        if json.loads(out) == {"term": 7, "leader": "n9"}:
            break
        assert time.monotonic() < deadline, out
        time.sleep(0.02)


def test_call_oneway_failure_is_not_reported(capsys: pytest.CaptureFixture[str], node: Node
                                             ) -> None:
    # No answer exists for a one-way call: a fault at the node never reaches the caller.
    assert call(capsys, node, "--oneway", "election.fail", "1", '"x"') == (0, "", "")


# -- exit status 1: faults ---------------------------------------------------------------------


def test_fault_exits_1(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    status, out, err = call(capsys, node, "election.fail", "-32000", '"boom"')
    assert (status, out, err) == (1, "", "clusterrpc: fault -32000: boom\n")
    status, out, err = call(capsys, node, "--json", "election.fail", "42", '"no quorum"')
    assert status == 1
    assert json.loads(out) == {"fault": {"code": 42, "message": "no quorum"}}
    assert err == "clusterrpc: fault 42: no quorum\n"


def test_unknown_method_and_bad_arguments_are_faults(capsys: pytest.CaptureFixture[str],
                                                     node: Node) -> None:
    status, _, err = call(capsys, node, "election.nope")
    assert status == 1
    assert one_line_error(err).startswith("clusterrpc: fault -32601: ")
    status, _, err = call(capsys, node, "election.greet", "1")
    assert status == 1
    assert one_line_error(err).startswith("clusterrpc: fault -32602: ")


def test_fault_real_command(node: Node) -> None:
    result = run_cli("call", "-k", node.keyring, node.unix, "election.fail", "3", '"x"')
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "clusterrpc: fault 3: x\n")


# -- exit status 2: usage and configuration ---------------------------------------------------


def test_argument_that_is_not_json(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    status, out, err = call(capsys, node, "election.greet", "n1")
    assert (status, out) == (2, "")
    one_line_error(err)
    assert err.startswith("clusterrpc: error: argument 1 ('n1') is not JSON")
    assert "quote it for JSON: '\"n1\"'" in err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["{bad"], "argument 1 ('{bad') is not JSON"),
        (["1", '{"$nope": 1}'], "argument 2 ('{\"$nope\": 1}'): unknown or malformed tag"),
        (['{"$bytes": "!!"}'], "argument 1"),
        (["18446744073709551616"], "does not fit in 64 bits"),
    ],
)
def test_argument_errors(capsys: pytest.CaptureFixture[str], node: Node,
                         arguments: list[str], message: str) -> None:
    status, out, err = call(capsys, node, "election.echo", *arguments)
    assert (status, out) == (2, "")
    assert message in one_line_error(err)
    assert "quote it" not in err


def test_usage_errors_from_argparse(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    status, _, err = run(capsys, "call", "-k", node.keyring, node.tcp)
    assert status == 2
    assert "clusterrpc: error: the following arguments are required: METHOD" in err
    for bad in ("0", "-1", "soon", "inf"):
        status, _, err = run(capsys, "call", "--timeout", bad, node.tcp, "election.status")
        assert status == 2
        assert "--timeout" in err
    status, _, err = run(capsys, "methods")
    assert status == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "takes signed packets: pass --keyring FILE or set CLUSTERRPC_KEYRING"),
        (["-k", "KEYRING", "--insecure"], "--insecure sends unauthenticated packets"),
        (["-k", "MISSING"], "does not exist"),
        (["-k", "KEYRING", "--user", "u:p"], "--user is for http(s):// endpoints"),
        (["-k", "KEYRING", "--codec", "nosuch"], "nosuch"),
    ],
)
def test_configuration_errors(capsys: pytest.CaptureFixture[str], node: Node, tmp_path: Path,
                              extra: list[str], message: str) -> None:
    replace = {"KEYRING": str(node.keyring), "MISSING": str(tmp_path / "missing.keys")}
    argv = [replace.get(arg, arg) for arg in extra]
    status, out, err = run(capsys, "call", *argv, node.tcp, "election.status")
    assert (status, out) == (2, "")
    assert message in one_line_error(err)


def test_bad_urls(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    for url in ("ftp://127.0.0.1:1", "tcp://127.0.0.1", "udp://239.1.1.1:7400?iface=127.0.0.1",
                "unix://relative"):
        status, _, err = run(capsys, "call", "-k", node.keyring, url, "election.status")
        assert status == 2, url
        assert one_line_error(err).startswith("clusterrpc: error: ")


def test_keyring_too_open(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_keyring(tmp_path / "open.keys")
    path.chmod(0o644)
    status, _, err = run(capsys, "call", "-k", path, "tcp://127.0.0.1:1", "x.y")
    assert status == 2
    assert "chmod 600" in one_line_error(err)


def test_password_for_user_from_environment(capsys: pytest.CaptureFixture[str], node: Node,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    status, _, err = run(capsys, "call", "--user", "k1", node.http, "election.status")
    assert status == 2
    assert f"USER:PASSWORD or in ${ENV_PASSWORD}" in one_line_error(err)
    from clusterrpc.transports.http import http_credentials  # noqa: PLC0415

    user, token = http_credentials(Keyring.load(node.keyring))
    monkeypatch.setenv(ENV_PASSWORD, token)
    status, out, _ = run(capsys, "call", "--user", user, node.http, "election.greet", '"pw"')
    assert (status, out) == (0, "hello, pw\n")
    # In the URL, as xmlrpc.client.ServerProxy takes them; never repeated in messages.
    in_url = node.http.replace("http://", f"http://{user}:{token}@")
    status, out, _ = run(capsys, "call", in_url, "election.greet", '"url"')
    assert (status, out) == (0, "hello, url\n")
    status, _, err = run(capsys, "call", "--user", f"{user}:x", in_url, "election.greet", '"u"')
    assert status == 2
    assert "both in the URL and with --user" in one_line_error(err)
    wrong = node.http.replace("http://", f"http://{user}:not-the-token@")
    status, _, err = run(capsys, "call", wrong, "election.greet", '"u"')
    assert status == 5
    refused = f"http://{user}:not-the-token@127.0.0.1:{free_port()}/RPC2"
    status, _, err = run(capsys, "call", refused, "election.greet", '"u"')
    assert status == 3
    assert one_line_error(err).startswith("clusterrpc: error: cannot connect to http://127.0.0.1:")
    assert "not-the-token" not in err


# -- exit status 3: transport errors -----------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port that nobody listens on (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_connection_refused_exits_3(capsys: pytest.CaptureFixture[str], node: Node,
                                    tmp_path: Path) -> None:
    for url in (f"tcp://127.0.0.1:{free_port()}", f"unix://{tmp_path}/nobody.sock",
                f"http://127.0.0.1:{free_port()}/RPC2"):
        status, out, err = run(capsys, "call", "-k", node.keyring, url, "election.status")
        assert (status, out) == (3, ""), err
        assert one_line_error(err).startswith("clusterrpc: error: cannot connect to ")


def test_connection_refused_real_command(node: Node) -> None:
    result = run_cli("methods", "-k", node.keyring, f"tcp://127.0.0.1:{free_port()}")
    assert result.returncode == 3
    assert one_line_error(result.stderr).startswith("clusterrpc: error: cannot connect to ")


@contextlib.contextmanager
def tcp_listener(handle: Any) -> Iterator[int]:
    """A loopback TCP server that runs ``handle(connection)`` for each connection in a thread;
    yields its port, and stops at the end."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.1)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                with contextlib.suppress(OSError):
                    handle(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=10)
        server.close()


def test_connection_lost_exits_3(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    with tcp_listener(lambda conn: conn.recv(65536)) as port:  # reads the call, then closes
        status, _, err = run(capsys, "call", "-k", node.keyring, f"tcp://127.0.0.1:{port}",
                             "election.status")
    assert status == 3
    assert "clusterrpc: error: connection to " in one_line_error(err)


def test_http_error_status_exits_3(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    url = node.http.replace("/RPC2", "/wrong")
    status, _, err = run(capsys, "call", "-k", node.keyring, url, "election.status")
    assert status == 3
    assert "HTTP 404" in one_line_error(err)


class _GarbageHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b"this is not XML-RPC"
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def http_server(server: socketserver.TCPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/RPC2"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_answer_that_does_not_decode_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    with http_server(HTTPServer(("127.0.0.1", 0), _GarbageHandler)) as url:
        status, _, err = run(capsys, "call", url, "x.y")
    assert status == 3
    assert "cannot be decoded" in one_line_error(err)


# -- exit status 4: timeouts -------------------------------------------------------------------


def test_slow_method_times_out_exits_4(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    status, out, err = call(capsys, node, "--timeout", "0.3", "election.sleep", "3")
    assert (status, out) == (4, "")
    assert "got no reply within 0.3 s" in one_line_error(err)


def test_silent_peer_times_out_exits_4(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    # Reads the call, then waits for the caller to give up and close.
    with tcp_listener(lambda conn: conn.recv(65536) and conn.recv(65536)) as port:
        status, _, err = run(capsys, "call", "-k", node.keyring, "--timeout", "0.3",
                             f"tcp://127.0.0.1:{port}", "election.status")
    assert status == 4
    assert "within 0.3 s" in one_line_error(err)


def test_wrong_cluster_times_out_with_a_hint(capsys: pytest.CaptureFixture[str], node: Node
                                             ) -> None:
    # A node drops calls that do not authenticate, without an answer.
    status, _, err = call(capsys, node, "--cluster", "ORG/OTHER", "--timeout", "0.3",
                          "election.status", url=node.udp)
    assert status == 4
    assert "check the keyring and the cluster name" in one_line_error(err)


def test_wrong_key_times_out(capsys: pytest.CaptureFixture[str], node: Node, tmp_path: Path
                             ) -> None:
    other = write_keyring(tmp_path / "other.keys")
    status, _, err = run(capsys, "call", "-k", other, "--timeout", "0.3", node.tcp,
                         "election.status")
    assert status == 4
    one_line_error(err)


# -- exit status 5: authentication ---------------------------------------------------------------


def test_http_without_credentials_exits_5(capsys: pytest.CaptureFixture[str], node: Node
                                          ) -> None:
    status, out, err = run(capsys, "call", node.http, "election.status")
    assert (status, out) == (5, "")
    assert one_line_error(err).startswith("clusterrpc: error: authentication refused: HTTP 401")
    status, _, err = run(capsys, "call", "--user", "k1:wrong-token", node.http,
                         "election.status")
    assert status == 5
    other = write_keyring(node.directory / "other-http.keys")
    try:
        status, _, err = run(capsys, "methods", "-k", other, node.http)
    finally:
        other.unlink()
    assert status == 5


def test_http_with_keyring_derives_credentials(capsys: pytest.CaptureFixture[str],
                                               node: Node) -> None:
    status, out, _ = call(capsys, node, "election.greet", '"web"', url=node.http)
    assert (status, out) == (0, "hello, web\n")


# -- exit status 130 -----------------------------------------------------------------------------


def test_interrupt_exits_130(capsys: pytest.CaptureFixture[str], node: Node,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    from clusterrpc.client import Client  # noqa: PLC0415

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "call", interrupted)
    status, _, err = call(capsys, node, "election.status")
    assert (status, err) == (130, "clusterrpc: interrupted\n")


# -- methods -------------------------------------------------------------------------------------


def test_methods_text(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    status, out, err = run(capsys, "methods", "-k", node.keyring, node.tcp)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    index = lines.index("election.vote(int, string) -> nil")
    assert lines[index + 1] == "    Vote for candidate in term (one-way: no answer)."
    assert "election.echo(undef)" in lines
    assert "election.status() -> struct" in lines
    assert "    Return the current term and leader." in lines
    assert "    The leader is the empty string while none is known." not in lines
    assert "counter.next() -> int" in lines
    assert "system.listMethods() -> array" in lines
    # A wrapped docstring's first paragraph is one line.
    assert any(line.startswith("    Return the signatures of ``method_name`` as lists of XML-RPC "
                               "type names (return type first)") for line in lines)


def test_methods_verbose(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    status, out, _ = run(capsys, "methods", "-v", "-k", node.keyring, node.unix)
    assert status == 0
    assert ("election.status() -> struct\n    Return the current term and leader.\n\n"
            "    The leader is the empty string while none is known.\n") in out


def test_methods_json(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    status, out, _ = run(capsys, "methods", "--json", "-k", node.keyring, node.udp)
    assert status == 0
    entries = {entry["name"]: entry for entry in json.loads(out)}
    assert entries["election.vote"] == {
        "name": "election.vote", "signatures": [["nil", "int", "string"]],
        "help": "Vote for candidate in term (one-way: no answer).",
    }
    assert entries["election.echo"]["signatures"] is None
    assert entries["election.status"]["help"].endswith("while none is known.")
    assert entries["fixed.next"]["help"] == ""
    assert "system.multicall" in entries


def test_methods_over_http(capsys: pytest.CaptureFixture[str], node: Node) -> None:
    status, out, _ = run(capsys, "methods", "-k", node.keyring, node.http)
    assert status == 0
    assert "election.greet(string) -> string\n    Return a greeting for name.\n" in out


@pytest.mark.parametrize("multicall", [True, False])
def test_methods_of_a_foreign_xmlrpc_server(capsys: pytest.CaptureFixture[str],
                                            multicall: bool) -> None:
    server = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False,
                                              allow_none=True)

    def add(a: int, b: int) -> int:
        """Add two numbers.

        Second paragraph."""
        return a + b

    # typeshed wants functions of any marshallable value, not of ints
    server.register_function(add)  # type: ignore[arg-type]
    server.register_introspection_functions()
    if multicall:
        server.register_multicall_functions()
    with http_server(server) as url:
        status, out, err = run(capsys, "methods", url)
        assert (status, err) == (0, "")
        assert "add(undef)\n    Add two numbers.\n" in out
        status, out, _ = run(capsys, "call", url, "add", "2", "3")
        assert (status, out) == (0, "5\n")


def test_methods_without_introspection_is_a_fault(capsys: pytest.CaptureFixture[str]) -> None:
    server = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False)
    server.register_function(pow)  # type: ignore[arg-type]
    with http_server(server) as url:
        status, _, err = run(capsys, "methods", url)
    assert status == 1
    assert "system.listMethods" in one_line_error(err)


def test_methods_closed_pipe(node: Node) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "clusterrpc", "methods", "-v", "-k", str(node.keyring), node.tcp],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
    )
    try:
        assert process.stdout is not None
        process.stdout.close()  # the reader is gone before anything is written
        _, err = process.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=15)
    assert process.returncode in (0, 141)
    assert b"Traceback" not in err
    assert b"BrokenPipe" not in err


# -- serve: lifecycle ----------------------------------------------------------------------------


def test_serve_insecure_node_until_sigint(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"""
cluster = "LAB"
name = "lab1"
insecure = true
listen = ["unix://{tmp_path}/lab.sock"]
[services]
election = "cli_service:Election"
""")
    with serving(config, 1) as server:
        url = server.urls["unix"]
        result = run_cli("call", "--insecure", "--cluster", "LAB", url, "election.greet", '"i"')
        assert (result.returncode, result.stdout) == (0, "hello, i\n"), result.stderr
        assert server.stop(signal.SIGINT) == 0
    assert "SIGINT: stopping" in server.stderr
    assert "Traceback" not in server.stderr
    assert not (tmp_path / "lab.sock").exists()


def test_serve_local_services_to_local_programs(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"""
cluster = "LAB"
name = "lab1"
insecure = true
listen = ["unix://{tmp_path}/lab.sock"]
local_dir = "run"
[local_services]
locks = "clusterrpc.local.examples:Locks"
""")
    with serving(config, 1) as server:
        with get_cluster_handle("LAB", local_dir=str(tmp_path / "run"), timeout=10) as handle:
            assert handle.locks.acquire("disk1") == {"granted": True, "sequence": 0}
            assert handle.locks.holder("disk1") == os.getpid()
        listed = run_cli("local", "ls", "--cluster", "LAB", "--local-dir", str(tmp_path / "run"),
                         "--json")
        assert listed.returncode == 0, listed.stderr
        (cluster,) = json.loads(listed.stdout)["clusters"]
        assert "locks" in {service["name"] for service in cluster["services"]}
        assert server.stop(signal.SIGTERM) == 0
    assert (f"serving locks to local programs in USER at {tmp_path}/run/LAB/sockets/locks/USER"
            in server.stderr)
    assert not (tmp_path / "run" / "LAB" / "sockets" / "locks" / "USER").exists()


def test_serve_address_in_use_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write_keyring(tmp_path / "k.keys")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = write_config(tmp_path, f"""
name = "n1"
keyring = "k.keys"
listen = ["tcp://127.0.0.1:{port}"]
""")
        status, _, err = run(capsys, "serve", "--config", config)
    assert status == 3
    assert one_line_error(err).startswith("clusterrpc: error: ")
    assert str(port) in err


def test_serve_check(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    write_keyring(tmp_path / "k.keys")
    config = write_config(tmp_path, """
name = "n1"
keyring = "k.keys"
listen = ["tcp://127.0.0.1:0"]
[services]
election = "cli_service:Election"
""")
    status, out, err = run(capsys, "serve", "--check", "--config", config)
    assert (status, err) == (0, "")
    assert out == f"{config}: ok (node n1, cluster {CLUSTER}, 1 service(s))\n"


# -- serve: configuration errors ----------------------------------------------------------------

GOOD = """name = "n1"
keyring = "k.keys"
listen = ["tcp://127.0.0.1:0"]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "colour = 'blue'\n", "unknown key `colour`"),
        ('keyring = "k.keys"\nlisten = ["tcp://127.0.0.1:0"]\n', "`name` is required"),
        ('name = "n1"\nkeyring = "k.keys"\n', "`listen` is required"),
        (GOOD.replace('["tcp://127.0.0.1:0"]', '"tcp://127.0.0.1:0"'),
         "`listen` must be a non-empty list of URLs"),
        (GOOD + "timeout = 'soon'\n", "`timeout` must be a positive number of seconds"),
        (GOOD + "timeout = -1\n", "`timeout` must be a positive number of seconds"),
        (GOOD + "debug = 1\n", "`debug` must be true or false"),
        (GOOD + "max_in_flight = 0\n", "`max_in_flight` must be a positive integer"),
        (GOOD + "codec = 'nosuch'\n", "nosuch"),
        (GOOD.replace("k.keys", "missing.keys"), "does not exist"),
        ('name = "n1"\nlisten = ["tcp://127.0.0.1:0"]\n', "no keyring: set keyring"),
        ('name = "n1"\ninsecure = true\nlisten = ["tcp://127.0.0.1:0"]\n', "no cluster name"),
        (GOOD.replace("tcp://127.0.0.1:0", "tcp://127.0.0.1"), "a port is required"),
        (GOOD + "tls_certfile = 'cert.pem'\n", "tls_certfile and tls_keyfile go together"),
        (GOOD + "[services]\nelection = 'cli_service'\n", 'must be "module:attribute"'),
        (GOOD + "[services]\nelection = 'no_such_module_xyz:Election'\n",
         "cannot import no_such_module_xyz: ModuleNotFoundError"),
        (GOOD + "[services]\nelection = 'cli_service:Nope'\n", "cli_service has no attribute"),
        (GOOD + "[services]\nbroken = 'cli_service:Broken'\n",
         "service `broken` (cli_service:Broken): Broken() failed: RuntimeError: no database"),
        (GOOD + "[services]\nplain = 'os:sep'\n", "has no @remote or @oneway method"),
        (GOOD + "[services]\nsystem = 'cli_service:Election'\n", "not 'system'"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_serve_configuration_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch, text: str,
                                    message: str) -> None:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    write_keyring(tmp_path / "k.keys")
    config = write_config(tmp_path, text)
    status, out, err = run(capsys, "serve", "--config", config)
    assert (status, out) == (2, "")
    assert message in one_line_error(err)
    assert err.startswith("clusterrpc: error: ")


def test_serve_missing_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, _, err = run(capsys, "serve", "--config", tmp_path / "none.toml")
    assert status == 2
    assert "cannot read" in one_line_error(err)


def test_serve_configuration_error_real_command(tmp_path: Path) -> None:
    write_keyring(tmp_path / "k.keys")
    config = write_config(tmp_path, GOOD + "[services]\nelection = 'nope_nope:Election'\n")
    result = run_cli("serve", "--config", config)
    assert result.returncode == 2
    assert "cannot import nope_nope" in one_line_error(result.stderr)
