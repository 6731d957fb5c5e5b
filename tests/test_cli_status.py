"""``clusterrpc status URL`` and the ``node`` service behind it (:mod:`clusterrpc.admin`): real
``clusterrpc serve`` processes on 127.0.0.1 answer ``node.status``; the text summary and
``--json``; with ``[membership]`` and ``[election]`` the members and the leader appear; a server
without the service is a fault (exit 1), a closed port a transport error (exit 3); and
:class:`~clusterrpc.admin.NodeAdmin` itself, in process, with its clock injected."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import time
import xmlrpc.server
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from clusterrpc import Node
from clusterrpc.admin import SERVICE, NodeAdmin
from clusterrpc.cli.exits import EXIT_FAULT, EXIT_OK, EXIT_TRANSPORT
from clusterrpc.cli.status import format_status
from clusterrpc.keyring import Keyring
from tests.conftest import scaled
from tests.test_cli_members import free_udp_port
from tests.test_cli_rpc import (
    CLUSTER,
    free_port,
    http_server,
    run,
    run_cli,
    serving,
    write_keyring,
)

pytestmark = pytest.mark.timeout(scaled(90.0))

FAST_MEMBERSHIP = ("probe_interval = 0.2\nprobe_timeout = 0.1\ngossip_interval = 0.05\n"
                   "reconnect_interval = 1.0\n")
FAST_ELECTION = "election_timeout = 0.5\nheartbeat_interval = 0.05\n"


def status_json(url: str, keyring: Path) -> Any:
    result = run_cli("status", url, "-k", keyring, "--timeout", "5", "--json")
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


def test_status_of_a_plain_node(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "cluster.keys")
    config = tmp_path / "n1.toml"
    config.write_text('name = "n1"\nkeyring = "cluster.keys"\n'
                      'listen = ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]\n')
    with serving(config, 2) as server:
        tcp, udp = server.urls["tcp"], server.urls["udp"]
        document = status_json(tcp, keyring)
        assert document["name"] == "n1"
        assert document["cluster"] == CLUSTER
        assert document["pid"] == server.process.pid
        assert document["version"]
        assert document["addresses"] == [tcp, udp]
        assert 0 <= document["uptime"] < scaled(60)
        started = dt.datetime.fromisoformat(document["started"].replace("Z", "+00:00"))
        assert abs((dt.datetime.now(dt.UTC) - started).total_seconds()) < scaled(60)
        assert document["members"] is None
        assert document["election"] is None
        assert document["local"] is None
        assert document["counters"]["calls"] >= 1  # this very call
        time.sleep(0.2)
        later = status_json(udp, keyring)
        assert later["uptime"] > document["uptime"]
        assert later["counters"]["calls"] > document["counters"]["calls"]

        text = run_cli("status", tcp, "-k", keyring, "--timeout", "5")
        assert text.returncode == EXIT_OK, text.stderr
        lines = text.stdout.splitlines()
        assert [line.split(":", 1)[0] for line in lines] == [
            "node", "uptime", "addresses", "members", "leader", "local", "counters"]
        assert lines[0].startswith(f"node:      n1 (cluster {CLUSTER}, clusterrpc ")
        assert f"pid {server.process.pid})" in lines[0]
        assert lines[2] == f"addresses: {tcp} {udp}"
        assert lines[3] == "members:   (no membership)"
        assert lines[4] == "leader:    (no election)"
        assert lines[5] == "local:     (no local API)"
        assert "calls " in lines[6]


def test_status_shows_members_and_leader(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "cluster.keys")
    ports = {"n1": free_udp_port(), "n2": free_udp_port()}
    voters = ", ".join(f'{name} = "udp://127.0.0.1:{port}"' for name, port in ports.items())
    configs = {}
    for name, port in ports.items():
        others = ", ".join(f'"udp://127.0.0.1:{other}"' for other in ports.values()
                           if other != port)
        configs[name] = tmp_path / f"{name}.toml"
        configs[name].write_text(
            f'name = "{name}"\nkeyring = "cluster.keys"\nlisten = ["udp://127.0.0.1:{port}"]\n'
            f"\n[membership]\nseeds = [{others}]\n{FAST_MEMBERSHIP}"
            f'\n[election]\nvoters = {{ {voters} }}\nstate_dir = "state-{name}"\n'
            f"{FAST_ELECTION}")
    with serving(configs["n1"], 1), serving(configs["n2"], 1):
        deadline = time.monotonic() + scaled(20.0)
        while True:
            seen = {name: status_json(f"udp://127.0.0.1:{port}", keyring)
                    for name, port in ports.items()}
            leaders = {(doc["election"]["leader"], doc["election"]["term"])
                       for doc in seen.values()}
            if (all(doc["members"]["states"] == {"alive": 2} for doc in seen.values())
                    and len(leaders) == 1 and None not in next(iter(leaders))):
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.1)
        ((leader, term),) = leaders
        assert leader in ports
        assert term >= 1
        document = seen["n1"]
        assert document["members"]["count"] == 2
        assert document["members"]["service"] == "membership"
        assert document["members"]["view"] >= 1
        assert document["election"]["service"] == "election"
        assert document["election"]["role"] == ("leader" if leader == "n1" else "follower")

        text = run_cli("status", f"udp://127.0.0.1:{ports['n1']}", "-k", keyring,
                       "--timeout", "5")
        assert text.returncode == EXIT_OK, text.stderr
        assert "members:   2 (alive 2; view " in text.stdout
        assert f"leader:    {leader} (term " in text.stdout
        assert f"this node: {document['election']['role']})" in text.stdout


def test_status_with_local_services(tmp_path: Path) -> None:
    config = tmp_path / "lab.toml"
    config.write_text(f'cluster = "LAB"\nname = "lab1"\ninsecure = true\n'
                      f'listen = ["unix://{tmp_path}/lab.sock"]\nlocal_dir = "run"\n'
                      '[local_services]\nlocks = "clusterrpc.local.examples:Locks"\n')
    with serving(config, 1) as server:
        result = run_cli("status", server.urls["unix"], "--insecure", "--cluster", "LAB",
                         "--json")
        assert result.returncode == EXIT_OK, result.stderr
        local = json.loads(result.stdout)["local"]
        assert local == {"local_dir": str(tmp_path / "run"), "clients": 0,
                         "services": ["locks", "system"]}


class _Foreign:
    def ping(self) -> str:
        return "pong"


@contextmanager
def foreign_xmlrpc_server() -> Iterator[str]:
    server = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False,
                                              allow_none=True)
    server.register_instance(_Foreign())
    with http_server(server) as url:
        yield url


def test_status_of_a_server_without_the_service_is_a_fault(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with foreign_xmlrpc_server() as url:
        status, out, err = run(capsys, "status", url, "--user", "u:p", "--timeout", "5")
    assert (status, out) == (EXIT_FAULT, "")
    assert err.startswith("clusterrpc: fault "), err
    assert "node.status" in err
    assert err.count("\n") == 1


def test_status_of_a_closed_port_is_a_transport_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    keyring = write_keyring(tmp_path / "cluster.keys")
    status, out, err = run(capsys, "status", f"tcp://127.0.0.1:{free_port()}", "-k", keyring,
                           "--timeout", "5")
    assert (status, out) == (EXIT_TRANSPORT, "")
    assert err.startswith("clusterrpc: error: ")


# -- NodeAdmin in process --------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _node(tmp_path: Path) -> Node:
    key = Keyring.generate("hmac-sha256", key_id="k1")
    return Node("n1", cluster=CLUSTER, keyring=Keyring(keys=[key], signing_key_id="k1"),
                listen=[f"unix://{tmp_path}/n1.sock"])


def test_node_admin_uptime_runs_on_the_monotonic_clock(tmp_path: Path) -> None:
    node = _node(tmp_path)
    clock = _Clock()
    epoch = node.messenger.epoch / 1_000_000
    admin = NodeAdmin(node, clock=clock, wall_clock=lambda: epoch + 5.0)
    assert admin.uptime == 5.0
    clock.now += 2.5
    assert admin.uptime == 7.5
    clock.now -= 100.0
    assert admin.uptime == 0.0  # never negative


def test_node_admin_status_without_components(tmp_path: Path) -> None:
    node = _node(tmp_path)
    if node.services.find(f"{SERVICE}.status") is None:  # until every Node publishes it
        NodeAdmin.publish(node)
    method = node.services.find(f"{SERVICE}.status")
    assert method is not None

    async def scenario() -> dict[str, Any]:
        async with node:
            answer: dict[str, Any] = await method.function()
            return answer

    status = asyncio.run(scenario())
    assert status["name"] == "n1"
    assert status["pid"] == os.getpid()
    assert status["addresses"] == [f"unix://{tmp_path}/n1.sock"]
    assert isinstance(status["started"], dt.datetime)
    assert status["started"].tzinfo is not None
    assert (status["members"], status["election"], status["local"]) == (None, None, None)
    assert set(status["counters"]) >= {"calls", "accepted"}


def test_format_status_tolerates_odd_answers() -> None:
    lines = format_status({"uptime": 3725, "counters": {"calls": 2, "faults": 0},
                           "members": {"count": 1, "states": {"alive": 1}},
                           "election": {"leader": None, "term": 0, "role": "candidate"}})
    assert lines[0] == "node:      ? (cluster ?, clusterrpc ?, pid ?)"
    assert lines[1] == "uptime:    1h 02m 05s"
    assert lines[3] == "members:   1 (alive 1)"
    assert lines[4] == "leader:    (none known) (term 0; this node: candidate)"
    assert lines[6] == "counters:  calls 2; 1 more at 0"
    assert format_status({})[6] == "counters:  (none)"


def test_status_help_names_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "status", "--help")
    assert status == 0
    assert "exit status: 0 ok" in " ".join(out.split())
