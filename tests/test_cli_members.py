"""``clusterrpc serve`` with a ``[membership]`` table, and ``clusterrpc members URL``: two real
node processes on 127.0.0.1 join each other, the command shows both alive (JSON and the human
table); after one is killed with SIGKILL the other reports it dead; configuration errors stop
``serve`` before it listens (exit 2)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from clusterrpc.cli.exits import EXIT_FAULT, EXIT_OK, EXIT_USAGE
from tests.conftest import scaled
from tests.test_cli_rpc import run_cli, serving, write_keyring

pytestmark = pytest.mark.timeout(scaled(90.0))

FAST = """
probe_interval = 0.2
probe_timeout = 0.1
gossip_interval = 0.05
reconnect_interval = 1.0
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def node_config(directory: Path, name: str, port: int, seeds: list[int], extra: str = ""
                ) -> Path:
    path = directory / f"{name}.toml"
    seed_urls = ", ".join(f'"udp://127.0.0.1:{seed}"' for seed in seeds)
    path.write_text(f'name = "{name}"\nkeyring = "cluster.keys"\n'
                    f'listen = ["udp://127.0.0.1:{port}"]\n\n'
                    f"[membership]\nseeds = [{seed_urls}]\n{FAST}{extra}")
    return path


def members(port: int, keyring: Path, *extra: str) -> Any:
    result = run_cli("members", f"udp://127.0.0.1:{port}", "-k", keyring, "--timeout", "5",
                     *extra)
    assert result.returncode == EXIT_OK, result.stderr
    return json.loads(result.stdout) if "--json" in extra else result.stdout


def wait_for_states(port: int, keyring: Path, wanted: dict[str, str], limit: float) -> Any:
    deadline = time.monotonic() + scaled(limit)
    while True:
        rows = members(port, keyring, "--json")
        states = {row["name"]: row["state"] for row in rows}
        if all(states.get(name) == state for name, state in wanted.items()):
            return rows
        assert time.monotonic() < deadline, states
        time.sleep(0.2)


def test_two_serve_processes_join_and_a_killed_one_is_reported_dead(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "cluster.keys")
    first, second = free_udp_port(), free_udp_port()
    with serving(node_config(tmp_path, "n1", first, [second], 'meta = { role = "db" }\n'), 1), \
            serving(node_config(tmp_path, "n2", second, [first]), 1) as victim:
        rows = wait_for_states(first, keyring, {"n1": "alive", "n2": "alive"}, 20.0)
        by_name = {row["name"]: row for row in rows}
        assert by_name["n1"]["self"] is True
        assert by_name["n1"]["meta"] == {"role": "db"}
        assert by_name["n2"]["addresses"] == [f"udp://127.0.0.1:{second}"]
        assert by_name["n2"]["last_heard"] < 5.0
        table = members(first, keyring)
        assert table.splitlines()[0].split() == ["NAME", "STATE", "INC", "LAST", "HEARD",
                                                 "ADDRESSES", "META"]
        assert "n1 (this node)" in table
        assert "role=db" in table
        victim.kill()
        # n2's silence: suspected, then dead (2 members: the minimum suspicion timeout).
        wait_for_states(first, keyring, {"n2": "dead"}, 30.0)


def test_a_node_without_membership_says_so(tmp_path: Path) -> None:
    keyring = write_keyring(tmp_path / "cluster.keys")
    port = free_udp_port()
    config = tmp_path / "plain.toml"
    config.write_text(f'name = "n1"\nkeyring = "cluster.keys"\n'
                      f'listen = ["udp://127.0.0.1:{port}"]\n')
    with serving(config, 1):
        result = run_cli("members", f"udp://127.0.0.1:{port}", "-k", keyring,
                         "--timeout", "5")
    assert result.returncode == EXIT_FAULT
    assert "runs no membership" in result.stderr


@pytest.mark.parametrize(("table", "says"), [
    ('seeds = ["tcp://127.0.0.1:1"]', "list of udp:// URLs"),
    ("probe_intervall = 1.0", "unknown membership key `probe_intervall`"),
    ("probe_timeout = 5.0", "shorter than probe_interval"),
    ('group = "nope"', "membership group `nope` is not in [groups]"),
    ('meta = { port = 1 }', "membership meta"),
])
def test_bad_membership_tables_stop_serve_before_it_listens(tmp_path: Path, table: str,
                                                            says: str) -> None:
    write_keyring(tmp_path / "cluster.keys")
    config = tmp_path / "bad.toml"
    config.write_text('name = "n1"\nkeyring = "cluster.keys"\nlisten = ["udp://127.0.0.1:0"]\n'
                      f"\n[membership]\n{table}\n")
    result = run_cli("serve", "--config", config, "--check")
    assert result.returncode == EXIT_USAGE, result.stderr
    assert says in result.stderr
