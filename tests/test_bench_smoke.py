"""The RPC benchmark keeps working: ``bench/bench_rpc.py --quick`` runs end to end.

A smoke test only: it checks that every contender made its calls and that nothing was lost
over loopback TCP, never how fast anything was (timings on shared machines are noise).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "bench_rpc.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_rpc_quick_runs_every_contender() -> None:
    if not BENCH.exists():
        pytest.skip("bench/ is not part of this checkout")
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", "-"],
        capture_output=True, text=True, timeout=280, cwd=ROOT, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout)

    has_pyro5 = importlib.util.find_spec("Pyro5") is not None
    assert report["meta"]["pyro5"] is not None if has_pyro5 else report["meta"]["pyro5"] is None
    if not has_pyro5:
        assert any("Pyro5 is not installed" in note for note in report["notes"])

    expected = {
        "sequential_tcp": {"clusterrpc", "clusterrpc, json codec", "stdlib xmlrpc",
                           "echo (blocking server)", "echo (asyncio server)"}
                          | ({"Pyro5"} if has_pyro5 else set()),
        "sequential_unix": {"clusterrpc", "clusterrpc, json codec", "echo (blocking server)",
                            "echo (asyncio server)"} | ({"Pyro5"} if has_pyro5 else set()),
    }
    for section, names in expected.items():
        assert set(report[section]) == names, section
    for section in ("sequential_tcp", "sequential_unix", "concurrent_tcp"):
        for name, row in report[section].items():
            assert "error" not in row, (section, name, row)
            assert row["calls_per_s"] > 0, (section, name)
    assert any(name.startswith("Pyro5") for name in report["concurrent_tcp"]) == has_pyro5

    oneway = report["oneway"]
    for name, row in oneway.items():
        assert "error" not in row, (name, row)
        assert row["sent"] > 0, name
        if "TCP" in name:  # loopback TCP loses nothing; UDP may drop under overload
            assert row["lost"] == 0, (name, row)
    assert {"target", "ratio", "wanted", "met"} <= set(report["targets"][0])


MULTICAST_BENCH = ROOT / "bench" / "bench_multicast.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_multicast_quick_gathers_every_member() -> None:
    """``bench/bench_multicast.py --quick`` runs end to end, with the members in the caller's
    process and in worker processes: every way of asking N members (one multicast call, N
    unicast calls in a loop or at once) got all N answers before timing, and the one-way
    bursts were sent and received. No timing is checked."""
    if not MULTICAST_BENCH.exists():
        pytest.skip("bench/ is not part of this checkout")
    completed = subprocess.run(
        [sys.executable, str(MULTICAST_BENCH), "--quick", "--json", "-"],
        capture_output=True, text=True, timeout=280, cwd=ROOT, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout)

    sizes = report["meta"]["sizes"]
    assert sizes == [1, 4, 16, 64]
    contenders = {"multicast", "UDP loop", "TCP loop", "UDP gather", "TCP gather"}
    # Both placements of the members: in the caller's process, and in worker processes.
    for setup in ("calls", "calls_in_workers"):
        for method in ("status", "vote"):
            for size in sizes:
                entry = report[setup][method][str(size)]
                assert contenders <= set(entry), (setup, method, size)
                for name in contenders:
                    row = entry[name]
                    assert "error" not in row, (setup, method, size, name, row)
                    assert row["gathered"] == size, (setup, method, size, name, row)
                    assert row["us_per_op"] > 0, (setup, method, size, name)
    for kind in ("burst", "paced"):
        for size in sizes:
            row = report["oneway"][kind][str(size)]
            assert "error" not in row, (kind, size, row)
            assert row["sent"] > 0, (kind, size)
            assert row["deliveries"] > 0, (kind, size)  # UDP may drop some, never all
    assert [target["setup"] for target in report["targets"]] == [
        "in-process", "in-process", "workers", "workers"]
    assert {"target", "ratio", "wanted_at_most", "met"} <= set(report["targets"][0])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_multicast_profile_accounts_for_every_datagram(tmp_path: Path) -> None:
    """``--profile`` times every member's handling of every call and the caller's of every
    answer (it checks the counts itself and fails otherwise), then writes the profiles."""
    if not MULTICAST_BENCH.exists():
        pytest.skip("bench/ is not part of this checkout")
    completed = subprocess.run(
        [sys.executable, str(MULTICAST_BENCH), "--quick", "--sizes", "4", "--profile",
         str(tmp_path)],
        capture_output=True, text=True, timeout=280, cwd=ROOT, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.count("timed at the sockets") == 2  # multicast, UDP loop
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "multicast-4-status.prof", "tcp-loop-4-status.prof", "udp-loop-4-status.prof"]


LOCAL_BENCH = ROOT / "bench" / "bench_local.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_local_quick_runs_every_contender() -> None:
    """``bench/bench_local.py --quick``: every sequential contender answered (D-Bus where
    jeepney and dbus-daemon are there, else a note says why), events arrived, and the
    figures are the ones the README quotes."""
    if not LOCAL_BENCH.exists():
        pytest.skip("bench/ is not part of this checkout")
    completed = subprocess.run(
        [sys.executable, str(LOCAL_BENCH), "--quick", "--json", "-"],
        capture_output=True, text=True, timeout=280, cwd=ROOT, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout)
    has_dbus = (importlib.util.find_spec("jeepney") is not None
                and shutil.which("dbus-daemon") is not None)
    dbus = "D-Bus (jeepney, via dbus-daemon)"
    names = {"clusterrpc", "clusterrpc, json codec", "echo (blocking Unix socket)"}
    assert set(report["sequential"]) == names | ({dbus} if has_dbus else set())
    if not has_dbus:
        assert any(note.startswith("D-Bus skipped") for note in report["notes"])
    for row in report["sequential"].values():
        assert row["calls_per_s"] > 0
    assert set(report["ratios"]) == {"vs echo"} | ({"vs D-Bus"} if has_dbus else set())
    events = report["events"]
    assert events["events_per_s"] > 0
    assert 0 < events["latency_p50_us"] <= events["latency_p99_us"] <= events["latency_max_us"]


MEMBERSHIP_BENCH = ROOT / "bench" / "bench_membership.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_membership_quick_runs_both_contenders() -> None:
    """``bench/bench_membership.py --quick``: both contenders detected the crash, the
    false-positive run ran its stalls, and the loopback cluster was measured."""
    if not MEMBERSHIP_BENCH.exists():
        pytest.skip("bench/ is not part of this checkout")
    completed = subprocess.run(
        [sys.executable, str(MEMBERSHIP_BENCH), "--quick", "--json", "-"],
        capture_output=True, text=True, timeout=280, cwd=ROOT, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout)
    for name in ("clusterrpc", "memberlist"):
        assert 0 < report["detection"][name]["median_s"] < 60
        assert report["false_positives"][name]["stalls"] > 0
        assert report["cpu"][name]["cpu_us_per_member_per_s"] > 0
    assert {goal["goal"] for goal in report["goals"]} == {
        "median detection no worse than memberlist's", "false positives at least 10x fewer"}


ELECTION_BENCH = ROOT / "bench" / "bench_election.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_election_quick_measures_failover() -> None:
    """``bench/bench_election.py --quick --no-etcd``: every kill found a new leader, the
    steady state sent heartbeats and no campaign (etcd is not needed)."""
    if not ELECTION_BENCH.exists():
        pytest.skip("bench/ is not part of this checkout")
    completed = subprocess.run(
        [sys.executable, str(ELECTION_BENCH), "--quick", "--no-etcd", "--json", "-"],
        capture_output=True, text=True, timeout=280, cwd=ROOT, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout)
    failover = report["clusterrpc"]["failover"]
    assert failover["kills"] == 3
    assert 0 < failover["p50_s"] <= failover["p99_s"] < 30
    assert report["clusterrpc"]["steady"]["msgs_per_s_per_node"] > 0
    assert report["clusterrpc"]["steady"]["campaigns_during_window"] == 0
    assert report["etcd_measured"] is False
