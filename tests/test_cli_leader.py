"""``clusterrpc serve`` with an ``[election]`` table, and ``clusterrpc leader``: three real node
processes on 127.0.0.1 elect a leader; the command shows it (JSON and text); ``leader
transfer`` moves it (asked of a follower); SIGTERM on the leader hands it over before the
process exits 0; bad tables stop ``serve`` before it listens (exit 2)."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterrpc.cli.exits import EXIT_FAULT, EXIT_OK, EXIT_USAGE
from tests.conftest import scaled
from tests.test_cli_members import free_udp_port
from tests.test_cli_rpc import Server, run_cli, serving, write_keyring

pytestmark = pytest.mark.timeout(scaled(120.0))

NAMES = ("n1", "n2", "n3")
TIMERS = "election_timeout = 0.5\nheartbeat_interval = 0.05\n"


def write_configs(directory: Path, ports: dict[str, int]) -> dict[str, Path]:
    voters = ", ".join(f'{name} = "udp://127.0.0.1:{port}"' for name, port in ports.items())
    paths = {}
    for name, port in ports.items():
        path = directory / f"{name}.toml"
        path.write_text(f'name = "{name}"\nkeyring = "cluster.keys"\n'
                        f'listen = ["udp://127.0.0.1:{port}"]\n\n'
                        f'[election]\nvoters = {{ {voters} }}\nstate_dir = "state-{name}"\n'
                        f"{TIMERS}")
        paths[name] = path
    return paths


def leader_status(port: int, keyring: Path) -> Any:
    result = run_cli("leader", f"udp://127.0.0.1:{port}", "-k", keyring, "--timeout", "5",
                     "--json")
    assert result.returncode == EXIT_OK, result.stderr
    return json.loads(result.stdout)


def wait_for_leader(ports: dict[str, int], keyring: Path, limit: float,
                    not_: str | None = None) -> tuple[str, int]:
    """The leader every running node names (and its term), within ``limit`` seconds."""
    deadline = time.monotonic() + scaled(limit)
    while True:
        seen = {name: leader_status(port, keyring) for name, port in ports.items()}
        named = {(status["leader"], status["term"]) for status in seen.values()}
        if len(named) == 1:
            leader, term = named.pop()
            if leader is not None and leader != not_ and seen[leader]["role"] == "leader":
                return leader, term
        assert time.monotonic() < deadline, seen
        time.sleep(0.1)


@contextlib.contextmanager
def three_nodes(tmp_path: Path) -> Iterator[tuple[dict[str, Server], dict[str, int], Path]]:
    keyring = write_keyring(tmp_path / "cluster.keys")
    ports = {name: free_udp_port() for name in NAMES}
    configs = write_configs(tmp_path, ports)
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(serving(configs[name], 1)) for name in NAMES}
        yield servers, ports, keyring


def test_leader_shows_the_elected_leader_and_transfer_moves_it(tmp_path: Path) -> None:
    with three_nodes(tmp_path) as (_servers, ports, keyring):
        leader, term = wait_for_leader(ports, keyring, 20.0)
        follower = next(name for name in NAMES if name != leader)
        status = leader_status(ports[follower], keyring)
        assert status["role"] == "follower"
        assert [row["name"] for row in status["voters"]] == list(NAMES)
        assert status["voters"][0]["address"] == f"udp://127.0.0.1:{ports['n1']}"
        assert 0 <= status["last_heartbeat"] < 0.5
        text = run_cli("leader", f"udp://127.0.0.1:{ports[leader]}", "-k", keyring)
        assert text.returncode == EXIT_OK, text.stderr
        assert f"leader:  {leader}" in text.stdout
        assert f"term:    {term}" in text.stdout
        assert "(leader, this node)" in text.stdout
        assert "answered" in text.stdout
        # Asked of a follower, to the third node.
        target = next(name for name in NAMES if name not in (leader, follower))
        moved = run_cli("leader", "transfer", f"udp://127.0.0.1:{ports[follower]}", "-k",
                        keyring, "--to", target, "--timeout", "10")
        assert moved.returncode == EXIT_OK, moved.stderr
        assert f"from {leader} to {target}" in moved.stdout
        new, new_term = wait_for_leader(ports, keyring, 10.0)
        assert new == target
        assert new_term > term
        bad = run_cli("leader", "transfer", f"udp://127.0.0.1:{ports[target]}", "-k", keyring,
                      "--to", "nobody", "--timeout", "10")
        assert bad.returncode == EXIT_FAULT
        assert "cannot transfer leadership to 'nobody'" in bad.stderr


def test_sigterm_on_the_leader_hands_the_leadership_over_before_exit(tmp_path: Path) -> None:
    with three_nodes(tmp_path) as (servers, ports, keyring):
        leader, term = wait_for_leader(ports, keyring, 20.0)
        assert servers[leader].stop(signal.SIGTERM) == 0
        assert "hands the leadership" in servers[leader].stderr
        rest = {name: port for name, port in ports.items() if name != leader}
        # A transfer, not an election after a timeout: the new leader is there at once.
        _new, new_term = wait_for_leader(rest, keyring, 2.0, not_=leader)
        assert new_term == term + 1
        # The stopped node's state survived: its term file holds at least the old term.
        saved = json.loads((tmp_path / f"state-{leader}" / "election.json").read_text())
        assert saved["term"] >= term


def test_leader_against_a_node_without_election_says_so(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "cluster.keys")
    port = free_udp_port()
    config = tmp_path / "plain.toml"
    config.write_text(f'name = "n1"\nkeyring = "cluster.keys"\n'
                      f'listen = ["udp://127.0.0.1:{port}"]\n')
    with serving(config, 1):
        result = run_cli("leader", f"udp://127.0.0.1:{port}", "-k", keyring, "--timeout", "5")
    assert result.returncode == EXIT_FAULT
    assert "runs no election" in result.stderr


def test_leader_usage_errors(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "cluster.keys")
    result = run_cli("leader", "transfer", "-k", keyring)
    assert result.returncode == EXIT_USAGE
    assert "leader transfer URL" in result.stderr
    result = run_cli("leader", "udp://127.0.0.1:1", "--to", "n2", "-k", keyring)
    assert result.returncode == EXIT_USAGE
    assert "--to goes with" in result.stderr


@pytest.mark.parametrize(("table", "says"), [
    ('state_dir = "s"', "election `voters` is required"),
    ('voters = { n2 = "udp://127.0.0.1:1" }\nstate_dir = "s"', "must include this node"),
    ('voters = ["n1", "n2"]\nstate_dir = "s"', "need a [membership] table"),
    ('voters = { n1 = "udp://127.0.0.1:1" }', "`state_dir`"),
    ('voters = { n1 = "udp://127.0.0.1:1" }\nstate_dir = "s"\nelection_timout = 1',
     "unknown election key `election_timout`"),
    ('voters = { n1 = "udp://127.0.0.1:1" }\nstate_dir = "s"\nheartbeat_interval = 0.9',
     "at most half"),
])
def test_bad_election_tables_stop_serve_before_it_listens(tmp_path: Path, table: str,
                                                          says: str) -> None:
    write_keyring(tmp_path / "cluster.keys")
    config = tmp_path / "bad.toml"
    config.write_text('name = "n1"\nkeyring = "cluster.keys"\nlisten = ["udp://127.0.0.1:0"]\n'
                      f"\n[election]\n{table}\n")
    result = run_cli("serve", "--config", config, "--check")
    assert result.returncode == EXIT_USAGE, result.stderr
    assert says in result.stderr
