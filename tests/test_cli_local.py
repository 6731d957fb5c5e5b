"""``clusterrpc local ls``: a real node serving ``Locks`` locally on an event loop of its own
thread, a cluster handle of this process registered as ``watcher``, and the command run as a
real process — its JSON and human output, the domain it picks (``SYSTEM`` when it may, else
``USER``: the uid test runs the command as ``nobody`` and skips without root), the clusters it
finds under the local directory, and its exit statuses and messages when there is nothing to
list or a socket cannot be reached."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import clusterrpc
from clusterrpc import local
from clusterrpc.cli.exits import EXIT_AUTH, EXIT_OK, EXIT_TRANSPORT, EXIT_USAGE
from clusterrpc.cli.local import find_clusters
from clusterrpc.errors import ConnectError
from clusterrpc.local.examples import Locks
from tests.conftest import scaled
from tests.rpc_helpers import LoopThread

CLUSTER = "ORG/UK"
WAIT = scaled(20.0)
"""Seconds any one wait (a loop run, a handle's call, a command) may take."""
NOBODY = 65534

pytestmark = pytest.mark.timeout(scaled(60.0))


def run_cli(*argv: str | Path, user: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``clusterrpc local ls ARGV`` as a process (as uid ``user`` if given: the
    process imports everything as root, then drops to it, since the interpreter's own files
    may be unreadable to that user)."""
    args = ["local", "ls", *map(str, argv)]
    if user is None:
        command = [sys.executable, "-m", "clusterrpc", *args]
    else:
        script = (
            "import os, sys, importlib.metadata\n"
            "import clusterrpc.local.handle\n"
            "import clusterrpc.auth.builtin\n"
            "from clusterrpc.cli.main import main\n"
            "from clusterrpc.codecs import default_registry\n"
            "default_registry().create('xmlrpc')\n"
            f"os.setgroups([]); os.setgid({user}); os.setuid({user})\n"
            "sys.exit(main(sys.argv[1:]))\n"
        )
        command = [sys.executable, "-c", script, *args]
    env = {name: value for name, value in os.environ.items() if name != "XDG_RUNTIME_DIR"}
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT, env=env,
                          check=False)


@contextlib.contextmanager
def serving(local_dir: str, cluster: str = CLUSTER) -> Iterator[local.ClusterHandle]:
    """A node of ``cluster`` serving ``Locks`` as ``locks`` under ``local_dir``, and a USER
    handle of this process registered as ``watcher``; both closed on exit."""
    node = clusterrpc.Node("n1", cluster=cluster, keyring=None, insecure=True,
                           local_dir=local_dir)
    node.serve_local(Locks(), name="locks")
    loop = LoopThread(name="test-cli-local-loop", wait=WAIT)
    try:
        loop.run(node.start())
        try:
            with local.get_cluster_handle(cluster, local.USER, local_dir=local_dir,
                                          timeout=WAIT) as handle:
                handle.register_client("watcher")
                yield handle
        finally:
            loop.run(node.stop())
    finally:
        loop.stop()


@pytest.fixture
def run_dir(tmp_path: Path) -> Iterator[str]:
    """The local directory of a running node (:func:`serving`)."""
    path = str(tmp_path / "run")
    with serving(path):
        yield path


def listing(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stderr == ""
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def watchers(clusters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [client for cluster in clusters for client in cluster["clients"]
            if client["name"] == "watcher"]


def make_socket_file(path: Path) -> None:
    """A socket file nobody listens on (what a node killed with SIGKILL leaves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFSOCK | 0o600)


# -- the listing --------------------------------------------------------------------------------


def test_json_lists_the_services_and_the_connected_clients(run_dir: str) -> None:
    document = listing(run_cli("--local-dir", run_dir, "--json"))
    assert document["local_dir"] == run_dir
    (cluster,) = document["clusters"]
    assert cluster["cluster"] == CLUSTER
    assert cluster["domain"] == local.SYSTEM  # the node runs as this user: SYSTEM admits it
    services = {service["name"]: service for service in cluster["services"]}
    assert set(services) == {"locks", "system"}
    assert sorted(services["locks"]["domains"]) == [local.SYSTEM, local.USER]
    assert set(services["locks"]["methods"]) == {
        "locks.acquire", "locks.release", "locks.holder", "locks.waiting"}
    assert watchers(document["clusters"]) == [{
        "uid": os.geteuid(), "gid": os.getegid(), "pid": os.getpid(), "domain": local.USER,
        "service": "system", "name": "watcher", "recovery": False, "events_queued": 0,
    }]  # fmt: skip
    # The command's own connection is left out: every client listed is this process's.
    assert {client["pid"] for client in cluster["clients"]} == {os.getpid()}


def test_human_output_has_a_header_and_both_tables(run_dir: str) -> None:
    result = run_cli("--local-dir", run_dir, "--cluster", CLUSTER)
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"cluster {CLUSTER}: domain SYSTEM; every domain's clients")
    assert lines[0].endswith(os.path.join(run_dir, "ORG", "UK", "sockets"))
    assert "services (2):" in lines
    (locks,) = [line.split() for line in lines if line.split()[:1] == ["locks"]]
    assert locks[:3] == ["locks", "USER,SYSTEM", "4:"]
    assert "acquire," in locks
    (watcher,) = [line.split() for line in lines if "watcher" in line]
    assert watcher == [str(os.getpid()), str(os.geteuid()), "USER", "system", "watcher", "0"]
    assert any(line.split()[:2] == ["PID", "UID"] for line in lines)


def test_a_locks_client_shows_under_its_service(run_dir: str) -> None:
    with local.get_cluster_handle(CLUSTER, local.USER, local_dir=run_dir,
                                  timeout=WAIT) as handle:
        assert handle.locks.acquire("disk1")["granted"] is True
        clients = listing(run_cli("--local-dir", run_dir, "--json"))["clusters"][0]["clients"]
    assert {(client["service"], client["name"]) for client in clients} == {
        ("system", "watcher"), ("locks", "")}


def test_the_user_domain_sees_only_its_own_clients(run_dir: str) -> None:
    with local.get_cluster_handle(CLUSTER, local.SYSTEM, local_dir=run_dir,
                                  timeout=WAIT) as admin:
        admin.register_client("admin")
        everyone = listing(run_cli("--local-dir", run_dir, "--json"))["clusters"]
        users = listing(run_cli("--local-dir", run_dir, "--json", "--domain", "USER",
                                "--cluster", CLUSTER))["clusters"]
    assert {client["name"] for client in everyone[0]["clients"]} == {"watcher", "admin"}
    assert users[0]["domain"] == local.USER
    assert [client["name"] for client in users[0]["clients"]] == ["watcher"]


def test_every_cluster_under_the_local_dir_is_listed(tmp_path: Path) -> None:
    path = str(tmp_path / "run")
    with serving(path), serving(path, cluster="ORG"):
        clusters = listing(run_cli("--local-dir", path, "--json"))["clusters"]
        human = run_cli("--local-dir", path)
    assert [cluster["cluster"] for cluster in clusters] == ["ORG", CLUSTER]
    assert len(watchers(clusters)) == 2
    assert human.returncode == EXIT_OK, human.stderr
    headers = [line for line in human.stdout.splitlines() if line.startswith("cluster ")]
    assert [line.split(":")[0] for line in headers] == ["cluster ORG", f"cluster {CLUSTER}"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it runs the command as uid 65534")
def test_without_system_access_the_user_domain_is_used_and_said() -> None:
    top = tempfile.mkdtemp(prefix="clusterrpc-cli-local-")
    os.chmod(top, 0o755)  # nobody must reach the sockets (a pytest tmp_path is 0700)
    try:
        path = os.path.join(top, "run")
        with serving(path), local.get_cluster_handle(CLUSTER, local.SYSTEM, local_dir=path,
                                                     timeout=WAIT) as admin:
            admin.register_client("admin")
            document = listing(run_cli("--local-dir", path, "--json", user=NOBODY))
            human = run_cli("--local-dir", path, user=NOBODY)
            refused = run_cli("--local-dir", path, "--domain", "SYSTEM", user=NOBODY)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    (cluster,) = document["clusters"]
    assert cluster["domain"] == local.USER
    assert [client["name"] for client in cluster["clients"]] == ["watcher"]
    assert human.returncode == EXIT_OK, human.stderr
    assert human.stdout.startswith(
        f"cluster {CLUSTER}: domain USER; only USER's clients (SYSTEM refused this process)")
    assert refused.returncode == EXIT_AUTH
    assert refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    socket = os.path.join(path, "ORG", "UK", "sockets", "system", "SYSTEM")
    assert line == (f"clusterrpc: error: {CLUSTER}: access refused: cannot connect to local "
                    f"socket {socket}: permission denied (the socket's permissions do not admit "
                    "this user; another --domain may)")


# -- finding clusters ---------------------------------------------------------------------------


def test_clusters_are_the_directories_with_system_sockets(tmp_path: Path) -> None:
    top = tmp_path / "run"
    make_socket_file(top / "ORG" / "sockets" / "system" / "USER")
    make_socket_file(top / "ORG" / "UK" / "EDIN" / "sockets" / "system" / "SYSTEM")
    make_socket_file(top / "LONE" / "sockets" / "locks" / "USER")  # no system socket
    (top / "PLAIN" / "sockets" / "system").mkdir(parents=True)
    (top / "PLAIN" / "sockets" / "system" / "USER").write_text("not a socket")
    make_socket_file(top / "ORG" / "UK" / "ORG" / "sockets" / "system" / "USER")  # ORG twice
    make_socket_file(top / "BAD" / "sockets" / "system" / "lower")  # not a domain name
    (top / "LINK").symlink_to(top / "ORG")  # not followed
    (top / "ALIAS").mkdir()
    (top / "ALIAS" / "sockets").symlink_to(top / "ORG" / "sockets")  # nor is this
    assert find_clusters(str(top)) == ["ORG", "ORG/UK/EDIN"]
    with pytest.raises(ConnectError, match="no cluster has local sockets under"):
        find_clusters(str(top / "LONE"))


# -- failures -----------------------------------------------------------------------------------


def test_a_missing_local_dir_exits_3_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    result = run_cli("--local-dir", missing)
    assert result.returncode == EXIT_TRANSPORT
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"clusterrpc: error: no local socket directory {missing} (no node serves a local API "
        "there; --local-dir DIR names another)"]


def test_a_local_dir_without_clusters_exits_3(tmp_path: Path) -> None:
    (tmp_path / "run" / "ORG").mkdir(parents=True)
    result = run_cli("--local-dir", tmp_path / "run", "--json")
    assert result.returncode == EXIT_TRANSPORT
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"clusterrpc: error: no cluster has local sockets under {tmp_path / 'run'}"]


def test_an_unknown_cluster_exits_3_naming_its_socket(run_dir: str) -> None:
    result = run_cli("--local-dir", run_dir, "--cluster", "ORG/FR")
    assert result.returncode == EXIT_TRANSPORT
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    socket = os.path.join(run_dir, "ORG", "FR", "sockets", "system", "SYSTEM")
    assert line == (f"clusterrpc: error: ORG/FR: cannot connect to local socket {socket}: no "
                    "such file or directory")


def test_a_dead_cluster_beside_a_live_one_exits_3_after_listing_the_live_one(
        run_dir: str) -> None:
    stale = Path(run_dir) / "DEAD" / "sockets" / "system" / "SYSTEM"
    make_socket_file(stale)
    result = run_cli("--local-dir", run_dir, "--json")
    assert result.returncode == EXIT_TRANSPORT
    assert [cluster["cluster"] for cluster in json.loads(result.stdout)["clusters"]] == [CLUSTER]
    (line,) = result.stderr.splitlines()
    assert line == (f"clusterrpc: error: DEAD: cannot connect to local socket {stale}: "
                    "connection refused")


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--domain", "user", "security domain 'user' must be"),
    ("--cluster", "ORG//UK", "has an empty component"),
])  # fmt: skip
def test_invalid_names_are_usage_errors(tmp_path: Path, option: str, value: str,
                                        message: str) -> None:
    result = run_cli("--local-dir", tmp_path, option, value)
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("clusterrpc: error: ")
    assert message in line
