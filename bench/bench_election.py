"""Election benchmark: failover time after SIGKILL of the leader, clusterrpc's election beside
etcd's Raft, five real processes each on 127.0.0.1; and the election's messages per second
per node at steady state.

Run from the repository root after ``pip install .``::

    python bench/bench_election.py                    # 10 kills each, about two minutes
    python bench/bench_election.py --kills 20
    python bench/bench_election.py --quick            # a smoke run (fast timers, 3 kills)
    python bench/bench_election.py --json out.json    # every figure as JSON

* **clusterrpc**: five ``clusterrpc serve`` processes with an ``[election]`` table (UDP on
  127.0.0.1, etcd's default timers: election timeout T = 1 s, heartbeat 100 ms; ``--quick``:
  T = 0.3 s, heartbeat 30 ms). Each round waits for one leader that all five name, SIGKILLs
  it, and polls ``election.status`` on the four survivors every 10 ms until three of them (a
  majority of the five) name the same new leader, which itself says it leads: that is the
  failover time. The killed node is restarted (same state directory) and must come back as a
  follower of the new leader before the next round.
* **etcd** (when the ``etcd`` binary is installed, e.g. Debian's ``etcd-server``): five
  ``etcd`` processes on 127.0.0.1 with ``--heartbeat-interval 100 --election-timeout 1000
  --pre-vote``; the leader is read from the JSON gateway (``POST /v3/maintenance/status``:
  ``leader`` and ``header.member_id``), killed with SIGKILL, and the same rule applies (three
  survivors report the same new leader). Restarted with its data directory. Without etcd, the
  reference line gives etcd's documented defaults: a follower campaigns after a random
  1000-2000 ms without a heartbeat, so failover is 1-2 s plus a pre-vote round.
* **messages/s per node**: over ``--steady`` seconds with a stable leader, from the election's
  own counters (``election.status()['counters']``): ``heartbeats_sent`` counts heartbeat
  rounds of the leader; each round is one one-way packet to each of the other N-1 voters, and
  each follower answers each with one ``heartbeat_ack``. So the messages sent per second are
  (N-1) x rounds/s on the leader and rounds/s on each follower; the per-node figure is the mean
  over the N nodes (2 (N-1) rounds/s / N). Vote traffic is zero at steady state
  (``prevotes_started`` and ``elections_started`` do not move, which the bench checks).

Only 127.0.0.1 is used; every process is killed at the end (``try``/``finally``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clusterrpc import connect  # noqa: E402
from clusterrpc.keyring import Keyring  # noqa: E402

N = 5
MAJORITY = N // 2 + 1
POLL = 0.01
ROUND_LIMIT = 30.0
"""Seconds one wait (a leader, a failover, a rejoin) may take before the bench gives up."""


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, Any]:
    return {"kills": len(values), "p50_s": statistics.median(values),
            "p99_s": percentile(values, 0.99), "max_s": max(values), "min_s": min(values),
            "samples_s": [round(value, 4) for value in values]}


def until(what: str, check: Callable[[], Any], limit: float = ROUND_LIMIT) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {limit} s")
        time.sleep(POLL)


# -- clusterrpc --------------------------------------------------------------------------------


class ClusterRPC:
    """Five ``clusterrpc serve`` processes with ``[election]`` on 127.0.0.1."""

    def __init__(self, directory: Path, timeout: float, heartbeat: float) -> None:
        self.directory = directory
        self.names = [f"n{i}" for i in range(1, N + 1)]
        self.ports = {name: free_port() for name in self.names}
        self.urls = {name: f"udp://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.keyring_path = directory / "cluster.keys"
        key = Keyring.generate("hmac-sha256", key_id="k1")
        self.keyring = Keyring(cluster="BENCH/ELECTION", keys=[key], signing_key_id="k1")
        self.keyring.save(self.keyring_path)
        voters = ", ".join(f'{name} = "{url}"' for name, url in self.urls.items())
        self.configs = {}
        for name in self.names:
            path = directory / f"{name}.toml"
            path.write_text(f'name = "{name}"\nkeyring = "cluster.keys"\n'
                            f'listen = ["{self.urls[name]}"]\n\n[election]\n'
                            f'voters = {{ {voters} }}\nstate_dir = "state-{name}"\n'
                            f"election_timeout = {timeout}\nheartbeat_interval = {heartbeat}\n")
            self.configs[name] = path
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.clients = {name: connect(url, keyring=self.keyring, timeout=0.2)
                        for name, url in self.urls.items()}
        self.pool = ThreadPoolExecutor(max_workers=N)

    def start(self, name: str) -> None:
        log = (self.directory / f"{name}.log").open("ab")
        out = self.directory / f"{name}.out"
        with out.open("wb") as stdout:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "clusterrpc", "serve", "--config",
                 str(self.configs[name]), "--print-addresses"],
                stdin=subprocess.DEVNULL, stdout=stdout, stderr=log, cwd=self.directory)
        log.close()
        until(f"{name} listening", lambda: out.read_text().strip() or None
              if self.processes[name].poll() is None else _exited(name, self.directory))

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        for client in self.clients.values():
            client.close()
        self.pool.shutdown()

    def status(self, name: str) -> dict[str, Any] | None:
        try:
            value: dict[str, Any] = self.clients[name].call("election.status")
        except Exception:  # a dead or slow node: no answer this round
            return None
        return value

    def statuses(self, names: list[str]) -> dict[str, dict[str, Any]]:
        answers = self.pool.map(self.status, names)
        return {name: answer for name, answer in zip(names, answers, strict=True)
                if answer is not None}

    def agreed(self, names: list[str], need: int, not_: str | None = None) -> str | None:
        """The leader that ``need`` of ``names`` name, which itself says it leads."""
        seen = self.statuses(names)
        votes: dict[str, int] = {}
        for status in seen.values():
            if status["leader"] is not None and status["leader"] != not_:
                votes[status["leader"]] = votes.get(status["leader"], 0) + 1
        for leader, count in votes.items():
            if count >= need and seen.get(leader, {}).get("role") == "leader":
                return str(leader)
        return None


def _exited(name: str, directory: Path) -> None:
    raise RuntimeError(f"{name} exited:\n{(directory / f'{name}.log').read_text()[-2000:]}")


def bench_clusterrpc(directory: Path, kills: int, timeout: float, heartbeat: float,
                     steady: float) -> dict[str, Any]:
    cluster = ClusterRPC(directory, timeout, heartbeat)
    try:
        for name in cluster.names:
            cluster.start(name)
        names = cluster.names
        leader = until("first leader", lambda: cluster.agreed(names, N))
        # Steady state: counters over `steady` seconds with the same leader.
        before = cluster.statuses(names)
        started = time.monotonic()
        time.sleep(steady)
        after = cluster.statuses(names)
        elapsed = time.monotonic() - started
        if after[leader]["role"] != "leader" or len(after) != N or len(before) != N:
            raise RuntimeError("the leader changed during the steady-state window")
        rounds = (after[leader]["counters"]["heartbeats_sent"]
                  - before[leader]["counters"]["heartbeats_sent"]) / elapsed
        votes = sum(after[name]["counters"][key] - before[name]["counters"][key]
                    for name in names for key in ("prevotes_started", "elections_started"))
        steady_state = {"seconds": round(elapsed, 2), "heartbeat_rounds_per_s": rounds,
                        "leader_msgs_per_s": rounds * (N - 1), "follower_msgs_per_s": rounds,
                        "msgs_per_s_per_node": 2 * (N - 1) * rounds / N,
                        "campaigns_during_window": votes}
        failovers = []
        for _ in range(kills):
            leader = until("stable leader", lambda: cluster.agreed(names, N))
            survivors = [name for name in names if name != leader]
            killed = time.monotonic()
            cluster.kill(leader)
            new = until("new leader",
                        lambda: cluster.agreed(survivors, MAJORITY, not_=leader))  # noqa: B023
            failovers.append(time.monotonic() - killed)
            cluster.start(leader)
            until("rejoin", lambda: cluster.agreed(names, N))
        return {"failover": summary(failovers), "steady": steady_state,
                "timers": {"election_timeout_s": timeout, "heartbeat_s": heartbeat},
                "last_leader": new}
    finally:
        cluster.close()


# -- etcd --------------------------------------------------------------------------------------


class Etcd:
    """Five ``etcd`` members on 127.0.0.1 (distinct ports, data directories under ``directory``)."""

    def __init__(self, binary: str, directory: Path, timeout_ms: int, heartbeat_ms: int) -> None:
        self.binary = binary
        self.directory = directory
        self.names = [f"e{i}" for i in range(1, N + 1)]
        self.peer = {name: free_port(socket.SOCK_STREAM) for name in self.names}
        self.client = {name: free_port(socket.SOCK_STREAM) for name in self.names}
        self.timeout_ms, self.heartbeat_ms = timeout_ms, heartbeat_ms
        self.initial = ",".join(f"{name}=http://127.0.0.1:{self.peer[name]}"
                                for name in self.names)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ids: dict[str, str] = {}
        self.pool = ThreadPoolExecutor(max_workers=N)

    def start(self, name: str, state: str = "new") -> None:
        peer, client = f"http://127.0.0.1:{self.peer[name]}", f"http://127.0.0.1:{self.client[name]}"
        log = (self.directory / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [self.binary, "--name", name, "--data-dir", str(self.directory / f"{name}.etcd"),
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--initial-cluster", self.initial, "--initial-cluster-state", state,
             "--initial-cluster-token", "bench-election",
             "--heartbeat-interval", str(self.heartbeat_ms),
             "--election-timeout", str(self.timeout_ms), "--pre-vote",
             "--listen-metrics-urls", ""],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.directory)
        log.close()

    def status(self, name: str) -> dict[str, Any] | None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.client[name]}/v3/maintenance/status", data=b"{}",
            headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=0.2) as answer:
                value: dict[str, Any] = json.load(answer)
        except (OSError, ValueError):
            return None
        self.ids[name] = str(value["header"]["member_id"])
        return value

    def agreed(self, names: list[str], need: int, not_: str | None = None) -> str | None:
        answers = dict(zip(names, self.pool.map(self.status, names), strict=True))
        votes: dict[str, int] = {}
        for status in answers.values():
            leader = str(status.get("leader", "0")) if status else "0"
            if leader not in ("0", not_):
                votes[leader] = votes.get(leader, 0) + 1
        for leader, count in votes.items():
            if count >= need:
                return next((name for name, member in self.ids.items() if member == leader),
                            leader)
        return None

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait(timeout=10)

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
        self.pool.shutdown()


def bench_etcd(binary: str, directory: Path, kills: int, timeout_ms: int,
               heartbeat_ms: int) -> dict[str, Any]:
    cluster = Etcd(binary, directory, timeout_ms, heartbeat_ms)
    try:
        for name in cluster.names:
            cluster.start(name)
        names = cluster.names
        failovers = []
        for _ in range(kills):
            leader = until("etcd leader", lambda: cluster.agreed(names, N), 60.0)
            if leader not in cluster.names:
                raise RuntimeError(f"etcd leader {leader} is not a known member")
            survivors = [name for name in names if name != leader]
            leader_id = cluster.ids[leader]
            killed = time.monotonic()
            cluster.kill(leader)
            until("etcd new leader",
                  lambda: cluster.agreed(survivors, MAJORITY, not_=leader_id))  # noqa: B023
            failovers.append(time.monotonic() - killed)
            cluster.start(leader, state="existing")
        until("etcd rejoin", lambda: cluster.agreed(names, N), 60.0)
        return {"failover": summary(failovers),
                "timers": {"election_timeout_s": timeout_ms / 1000,
                           "heartbeat_s": heartbeat_ms / 1000}}
    finally:
        cluster.close()


ETCD_REFERENCE = {"failover": {"p50_s": None, "p99_s": None,
                               "documented": "1-2 s plus a pre-vote round"},
                  "timers": {"election_timeout_s": 1.0, "heartbeat_s": 0.1}}


# -- report ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (fast timers)")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="write every figure as JSON (to PATH, or - for stdout)")
    parser.add_argument("--kills", type=int, help="leader kills per contender (default 10)")
    parser.add_argument("--steady", type=float,
                        help="seconds of the steady-state message count (default 10)")
    parser.add_argument("--no-etcd", action="store_true", help="skip etcd even if installed")
    args = parser.parse_args()
    kills = args.kills or (3 if args.quick else 10)
    steady = args.steady or (2.0 if args.quick else 10.0)
    timeout, heartbeat = (0.3, 0.03) if args.quick else (1.0, 0.1)
    to_stdout = args.json == "-"
    say = (lambda *a: print(*a, file=sys.stderr)) if to_stdout else print
    binary = None if args.no_etcd else shutil.which("etcd")
    with tempfile.TemporaryDirectory(prefix="bench-election-") as work:
        directory = Path(work)
        (directory / "clusterrpc").mkdir()
        say(f"clusterrpc: 5 nodes, T={timeout} s, heartbeat {heartbeat} s, {kills} kills")
        ours = bench_clusterrpc(directory / "clusterrpc", kills, timeout, heartbeat, steady)
        if binary is not None:
            (directory / "etcd").mkdir()
            say(f"etcd ({binary}): 5 members, election timeout {int(timeout * 1000)} ms, "
                f"heartbeat {int(heartbeat * 1000)} ms, --pre-vote, {kills} kills")
            theirs = bench_etcd(binary, directory / "etcd", kills, int(timeout * 1000),
                                int(heartbeat * 1000))
        else:
            theirs = ETCD_REFERENCE
    report = {"clusterrpc": ours, "etcd": theirs, "etcd_measured": binary is not None,
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "system": platform.platform()}}
    o, e = ours["failover"], theirs["failover"]
    say(f"\n{'':<12} {'FAILOVER p50':>13} {'p99':>8} {'max':>8}   {'T':>6} {'heartbeat':>9}   "
        f"{'msgs/s/node':>11}")
    say(f"{'clusterrpc':<12} {o['p50_s'] * 1000:>10.0f} ms {o['p99_s'] * 1000:>5.0f} ms "
        f"{o['max_s'] * 1000:>5.0f} ms   {timeout:>5}s {heartbeat:>8}s   "
        f"{ours['steady']['msgs_per_s_per_node']:>11.1f}")
    if binary is not None:
        say(f"{'etcd':<12} {e['p50_s'] * 1000:>10.0f} ms {e['p99_s'] * 1000:>5.0f} ms "
            f"{e['max_s'] * 1000:>5.0f} ms   {timeout:>5}s {heartbeat:>8}s   {'-':>11}")
        ratios = {"p50": o["p50_s"] / e["p50_s"], "p99": o["p99_s"] / e["p99_s"]}
        report["ratios"] = ratios
        say(f"{'ratio':<12} {ratios['p50']:>12.2f}x {ratios['p99']:>7.2f}x")
    else:
        say(f"{'etcd (doc)':<12} {'1000-2000 ms + pre-vote round':>30}   1.0s      0.1s   "
            "(etcd not installed: documented defaults)")
    s = ours["steady"]
    say(f"\nsteady state ({s['seconds']} s): {s['heartbeat_rounds_per_s']:.1f} heartbeat "
        f"rounds/s; leader sends {s['leader_msgs_per_s']:.0f} msgs/s, each follower "
        f"{s['follower_msgs_per_s']:.0f} acks/s; campaigns in the window: "
        f"{s['campaigns_during_window']}")
    if args.json:
        text = json.dumps(report, indent=2)
        if to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
