"""The systemd units in ``contrib/``: ``systemd-analyze verify`` accepts them, their
``ExecStart`` is a command line ``clusterrpc`` parses, every ``FileDescriptorName=`` is a name a
``listen`` URL can take, and the daemon runs the way they run it — socket-activated with the
``.socket`` units' names (TCP and UDP ``cluster``, TCP ``http``), ``Type=notify`` — answers
on every socket, reloads on the unit's ``ExecReload`` signal and stops with exit 0."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import clusterrpc
from clusterrpc.cli.main import build_parser
from clusterrpc.keyring import Keyring
from clusterrpc.transports.addresses import fd_name_kind
from clusterrpc.transports.http import http_credentials
from tests.conftest import scaled
from tests.test_systemd import (  # noqa: F401 - short_dir is a fixture
    CLUSTER,
    child_env,
    launch,
    notify_socket,
    received,
    short_dir,
)

pytestmark = pytest.mark.timeout(scaled(60.0))

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
UNITS = ("clusterrpc.service", "clusterrpc.socket", "clusterrpc-http.socket")


def unit(name: str) -> configparser.ConfigParser:
    # systemd units repeat keys (ListenStream=, ListenDatagram=): keep the last, enough here.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(CONTRIB / name)
    return parser


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    # verify checks that ExecStart's program exists: point it at this interpreter's command.
    script = Path(sys.executable).with_name("clusterrpc")
    if not script.exists():
        script = tmp_path / "clusterrpc"
        script.write_text(f"#!{sys.executable}\nfrom clusterrpc.cli.main import main\n"
                          "raise SystemExit(main())\n")
        script.chmod(0o755)
    for name in UNITS:
        text = (CONTRIB / name).read_text().replace("/usr/bin/clusterrpc", str(script))
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / name) for name in UNITS)],
        capture_output=True, text=True, timeout=scaled(30), check=False, cwd=tmp_path,
    )  # fmt: skip
    if "Failed to connect to bus" in result.stderr or "System has not been booted" in (
            result.stderr):
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_the_service_runs_the_daemon_with_a_command_line_clusterrpc_parses() -> None:
    service = unit("clusterrpc.service")["Service"]
    assert service["Type"] == "notify"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["RestartPreventExitStatus"] == "2"  # a configuration error: don't loop
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "/usr/bin/clusterrpc"
    args = build_parser().parse_args(argv[1:])
    assert args.config == "/etc/clusterrpc/node.toml"
    assert args.handler.__name__ == "_cmd_serve"


def test_every_socket_name_is_one_a_listen_url_takes() -> None:
    names = {unit(name)["Socket"]["FileDescriptorName"] for name in UNITS[1:]}
    assert names == {"cluster", "http"}
    for name in names:
        fd_name_kind(name)  # raises for a name no listen URL can take
    readme = (CONTRIB / "README.md").read_text()
    assert 'listen = ["fd://cluster", "fd://http"]' in readme


def test_the_daemon_runs_as_the_units_run_it(short_dir: Path) -> None:  # noqa: F811
    keys = short_dir / "cluster.keys"
    keyring = Keyring(cluster=CLUSTER, keys=[Keyring.generate("hmac-sha256", key_id="k1")],
                      signing_key_id="k1")
    keyring.save(keys)
    config = short_dir / "node.toml"
    config.write_text('name = "n1"\nkeyring = "cluster.keys"\n'
                      'listen = ["fd://cluster", "fd://http"]\ntimeout = 5\ndrain_timeout = 1\n'
                      '\n[services]\nsvc = "cli_service:Election"\n')
    notify_path = str(short_dir / "notify")
    with notify_socket(notify_path) as receiver, \
            socket.create_server(("127.0.0.1", 0)) as tcp, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.create_server(("127.0.0.1", 0)) as http, \
            (short_dir / "stderr").open("w") as stderr:
        udp.bind(("127.0.0.1", tcp.getsockname()[1]))  # one port, as the .socket unit has it
        fds = [tcp.fileno(), udp.fileno(), http.fileno()]
        command = [sys.executable, "-m", "clusterrpc", "daemon", "--config", str(config)]
        process = subprocess.Popen(
            launch(fds, command), pass_fds=fds, stdout=subprocess.DEVNULL, stderr=stderr,
            cwd=short_dir,
            env=child_env(LISTEN_FDS="3", LISTEN_FDNAMES="cluster:cluster:http",
                          NOTIFY_SOCKET=notify_path),
        )  # fmt: skip
        try:
            try:
                assert received(receiver)[0] == "READY=1"
            except TimeoutError:
                raise AssertionError((short_dir / "stderr").read_text()) from None
            port = tcp.getsockname()[1]
            for url in (f"tcp://127.0.0.1:{port}", f"udp://127.0.0.1:{port}"):
                with clusterrpc.connect(url, keyring=keyring, timeout=scaled(5)) as n1:
                    assert n1.svc.greet("unit") == "hello, unit"
            web = f"http://127.0.0.1:{http.getsockname()[1]}/RPC2"
            with clusterrpc.connect(web, credentials=http_credentials(keyring),
                                    timeout=scaled(5)) as n1:
                assert n1.svc.greet("web") == "hello, web"
            os.kill(process.pid, signal.SIGHUP)  # ExecReload=
            assert received(receiver)[0] == "RELOADING=1"
            assert received(receiver)[0] == "READY=1"
            process.send_signal(signal.SIGTERM)  # KillSignal=
            assert process.wait(timeout=scaled(15)) == 0, (short_dir / "stderr").read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=15)
