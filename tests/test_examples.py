"""The examples run as written (with a free port), and the README shows them verbatim."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from clusterrpc import Keyring

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "election.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_election_example_runs(tmp_path: Path) -> None:
    keyring = Keyring(cluster="DEMO", keys=[Keyring.generate("hmac-sha256", key_id="k1")],
                      signing_key_id="k1")
    keyring.save(tmp_path / "cluster.keys")
    script = tmp_path / "election.py"
    script.write_text(EXAMPLE.read_text().replace("7400", str(free_port())))
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
        timeout=30, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "{'term': 3, 'leader': 'n1'}"
    assert "vote for n1 in term 4" in lines
    assert "'election.status'" in lines[-1]


def test_readme_shows_the_example() -> None:
    code = EXAMPLE.read_text().split('"""', 2)[2].strip()
    assert code in (ROOT / "README.md").read_text()


LOCAL_EXAMPLE = ROOT / "examples" / "local_locks.py"


def test_local_locks_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(LOCAL_EXAMPLE)], capture_output=True, text=True, timeout=30,
        check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "first: {'granted': True, 'sequence': 0}"
    assert lines[1].startswith("event: {'lock': 'disk1', 'waiter': ")
    pid = lines[1].rsplit(" ", 1)[1].rstrip("}")
    assert lines[2] == f"holder: {pid} - releasing"
    assert lines[3] == "second: {'granted': True, 'sequence': 1}"


def test_readme_shows_the_local_example() -> None:
    code = LOCAL_EXAMPLE.read_text().split('"""', 2)[2].strip()
    assert code in (ROOT / "README.md").read_text()
