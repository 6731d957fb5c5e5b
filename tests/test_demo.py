"""``clusterrpc demo``: three real daemons on loopback, run by the demo as a tiny service
manager. Each run checks the six steps in order, a new leader in a higher term after the
leader's SIGKILL, that every daemon it started is gone afterwards, and that its directory is
removed (or kept with ``--keep``); a step that cannot happen in time ends with exit 4, the
step's name and the daemons' logs, and leaves nothing behind either.

The demo runs through its module (``run_demo`` and ``main``, in a ``python -c`` process) and
as the real command ``python -m clusterrpc demo`` (which needs ``demo`` registered in
``clusterrpc/cli/main.py``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from clusterrpc.cli.exits import EXIT_OK, EXIT_TIMEOUT
from tests.conftest import scaled
from tests.test_cli_rpc import child_env

pytestmark = [pytest.mark.timeout(scaled(150.0)), pytest.mark.slow]

STEP_TIMEOUT = scaled(20.0)
RUN_TIMEOUT = scaled(120.0)
NAMES = ["n1", "n2", "n3"]
STEP_LINE = re.compile(r"^([1-6])/6 ")


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -c CODE`` (the demo's module, without the ``clusterrpc`` command)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, env=child_env(), cwd=cwd, check=False)


def assert_gone(pids: list[int]) -> None:
    """No process with these pids is left (killed and reaped by the demo), within a moment."""
    deadline = time.monotonic() + scaled(5.0)
    for pid in pids:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, f"daemon pid {pid} is still there"
            time.sleep(0.05)


def check_json_steps(stdout: str) -> dict[int, dict[str, Any]]:
    """The six JSON objects, checked: in order, every node alive everywhere, one leader, a
    different one in a higher term after the kill, the lock taken and released, exit 0s."""
    records = [json.loads(line) for line in stdout.splitlines()]
    assert [record["step"] for record in records] == [1, 2, 3, 4, 5, 6], stdout
    assert [record["name"] for record in records] == [
        "start", "membership", "election", "local_lock", "failover", "stop"]
    steps = {record["step"]: record for record in records}
    assert all(record["of"] == 6 for record in records)
    nodes = steps[1]["nodes"]
    assert [node["name"] for node in nodes] == NAMES
    for node in nodes:
        assert node["addresses"][0].startswith("udp://127.0.0.1:")
        assert node["addresses"][1].startswith("tcp://127.0.0.1:")
        assert not node["addresses"][1].endswith(":0")
    assert steps[2]["views"] == {name: dict.fromkeys(NAMES, "alive") for name in NAMES}
    leader, term = steps[3]["leader"], steps[3]["term"]
    assert leader in NAMES
    assert steps[4]["node"] == leader
    assert steps[4]["socket"].endswith(f"/local/{leader}/DEMO/sockets/locks/USER")
    assert steps[4]["granted"] is True
    assert steps[4]["holder"] > 0
    assert steps[4]["released"] is True
    assert steps[4]["holder_after"] == 0
    assert steps[5]["killed"] == leader
    assert steps[5]["killed_pid"] == next(n["pid"] for n in nodes if n["name"] == leader)
    assert steps[5]["old_term"] == term
    assert steps[5]["leader"] in NAMES
    assert steps[5]["leader"] != leader
    assert steps[5]["term"] > term
    assert sorted(steps[6]["stopped"]) == sorted(set(NAMES) - {leader})
    assert set(steps[6]["stopped"].values()) == {0}
    assert steps[6]["directory"] == steps[1]["directory"]
    assert_gone([node["pid"] for node in nodes])
    return steps


def test_run_demo_prints_the_six_steps_and_leaves_nothing_behind(tmp_path: Path) -> None:
    result = run_python("import sys\nfrom clusterrpc.cli.demo import run_demo\n"
                        f"sys.exit(run_demo(timeout={STEP_TIMEOUT!r}))\n", tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    lines = result.stdout.splitlines()
    steps = [line for line in lines if STEP_LINE.match(line)]
    assert [line[0] for line in steps] == ["1", "2", "3", "4", "5", "6"], result.stdout
    assert re.fullmatch(r"1/6 starting 3 daemons on 127\.0\.0\.1 \.\.\. ready in \d+ ms",
                        steps[0]), steps[0]
    assert re.fullmatch(r"2/6 .* every node sees n1, n2, n3 alive, \d+ ms after READY", steps[1])
    first = re.fullmatch(r"3/6 .* (n[123]) leads in term (\d+), \d+ ms after READY "
                         r"\(all three agree\)",
                         steps[2])
    assert first, steps[2]
    assert re.fullmatch(rf'4/6 a local program on {first[1]} takes "demo-lock" through the '
                        r"USER domain \.\.\. ok", steps[3]), steps[3]
    second = re.fullmatch(rf"5/6 killing the leader {first[1]} \(SIGKILL, pid \d+\) \.\.\. "
                          r"(n[123]) leads in term (\d+), \d+ ms after the kill", steps[4])
    assert second, steps[4]
    assert second[1] != first[1]
    assert int(second[2]) > int(first[2])
    assert steps[5].startswith("6/6 done: ")
    pids = [int(match[1]) for match in re.finditer(r"^ +n[123] +pid (\d+) ", result.stdout,
                                                   re.MULTILINE)]
    assert len(pids) == 3, result.stdout
    assert_gone(pids)
    directory = re.search(r"files in (\S+)$", lines[0])
    assert directory, lines[0]
    assert directory[1].startswith("/tmp/crpc-demo-")
    assert f"removed {directory[1]}" in steps[5]
    assert not Path(directory[1]).exists()


def test_demo_main_json_with_keep(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    result = run_python("import sys\nfrom clusterrpc.cli.demo import main\n"
                        f"sys.exit(main(['--json', '--keep', {str(kept)!r}, '--timeout', "
                        f"'{STEP_TIMEOUT}']))\n", tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    steps = check_json_steps(result.stdout)
    assert steps[1]["directory"] == str(kept)
    assert steps[6]["kept"] is True
    assert (kept.stat().st_mode & 0o777) == 0o700
    assert {path.name for path in kept.glob("n?.toml")} == {"n1.toml", "n2.toml", "n3.toml"}
    assert (kept / "cluster.keys").stat().st_mode & 0o077 == 0
    assert "hands the leadership" in "".join(
        (kept / f"{name}.log").read_text() for name in NAMES)
    # A directory that is not empty is refused before anything starts.
    again = run_python("import sys\nfrom clusterrpc.cli.demo import main\n"
                       f"sys.exit(main(['--keep', {str(kept)!r}]))\n", tmp_path)
    assert again.returncode == 2
    assert "is not empty" in again.stderr


def test_a_step_that_does_not_happen_in_time_names_it_and_cleans_up(tmp_path: Path) -> None:
    result = run_python("import sys\nfrom clusterrpc.cli.demo import main\n"
                        "sys.exit(main(['--timeout', '0.001']))\n", tmp_path)
    assert result.returncode == EXIT_TIMEOUT, result.stderr
    assert result.stderr.startswith(
        "clusterrpc: demo step 1/6 (start) failed: no READY=1 from "), result.stderr
    assert "last lines of /tmp/crpc-demo-" in result.stderr
    assert result.stdout.splitlines()[-1].endswith("... FAILED")
    pids = [int(pid) for pid in re.findall(r"^--- n[123] \(pid (\d+)", result.stderr,
                                           re.MULTILINE)]
    assert pids, result.stderr
    assert_gone(pids)
    directory = re.search(r"files in (\S+)$", result.stdout.splitlines()[0])
    assert directory, result.stdout
    assert not Path(directory[1]).exists()


def test_clusterrpc_demo_command(tmp_path: Path) -> None:
    """The real command (fails with "invalid choice: 'demo'" until ``demo.register`` is
    called from ``clusterrpc/cli/main.py``)."""
    result = subprocess.run(
        [sys.executable, "-m", "clusterrpc", "demo", "--json", "--timeout", str(STEP_TIMEOUT)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=child_env(), cwd=tmp_path,
        check=False)
    assert result.returncode == EXIT_OK, result.stderr
    steps = check_json_steps(result.stdout)
    assert steps[6]["kept"] is False
    assert not Path(steps[1]["directory"]).exists()
