"""Membership benchmark: detection time and false positives of clusterrpc's membership beside
memberlist's default algorithm, on the same simulated network with the same parameters; then
the CPU cost per member on loopback.

Run from the repository root after ``pip install .``::

    python bench/bench_membership.py                 # about five minutes
    python bench/bench_membership.py --quick         # a smoke run
    python bench/bench_membership.py --json out.json # every figure as JSON

The contenders run the same code with different settings of
:class:`~clusterrpc.components.membership.MembershipConfig`:

* **clusterrpc**: the defaults — SWIM with Lifeguard's dynamic suspicion and buddy system, plus
  local health (awareness, and the driver's event-loop lag: a lagging member stretches its
  timeouts, originates no suspicion, and does not count the time it could not listen) and
  refutations sent directly to the accuser and up to 32 members;
* **memberlist**: ``local_health=False, refute_directly=False`` — memberlist's default
  algorithm without Lifeguard's local health, as the issue defines the anchor: probes with
  indirect probes and nacks, suspicion whose timeout shrinks with confirmations, the buddy
  system, piggybacked gossip with memberlist's retransmit limit, push-pull every 30 s. Both use
  memberlist's LAN timers (probe 1 s, probe timeout 0.5 s, 3 indirect checks, suspicion
  multiplier 4, maximum multiplier 6, gossip 200 ms to 3 members).

The simulated network is ``clusterrpc.testing.MemoryNetwork`` on a virtual clock: real
``Node``s send signed packets to each other (made-up 10.0.0.x addresses, nothing touches a
socket), with 0.2-2 ms delays. Scenarios:

* **detection**: 16 members, no loss; after 30 s one crashes (stops without a word); time until
  every other member reports it ``dead``. ``--trials`` runs (seeded), median and p99 (the
  worst run when there are fewer than 100);
* **false positives**: 16 members, 5 % loss on every link, 2 % duplication, 5 % reordering,
  and one member whose event loop stalls for 1 s every 5-15 s (random); over ``--duration``
  simulated seconds, every ``Failed`` event any member reports about a member that is in fact
  running, and every ``Suspected`` event about a member other than the stalling one (which
  really did not answer), per member-hour; their sum is the false-positive count;
* **CPU**: 64 members in one process on 127.0.0.1 (real UDP sockets), after they converged:
  process CPU time per member per second of membership, with each contender's settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clusterrpc import Node  # noqa: E402
from clusterrpc.components import Membership  # noqa: E402
from clusterrpc.components.membership import Failed, MembershipEvent, Suspected  # noqa: E402
from clusterrpc.keyring import Keyring  # noqa: E402
from clusterrpc.testing import MemoryNetwork, VirtualClock, run  # noqa: E402

CLUSTER = "BENCH"
CONTENDERS: dict[str, dict[str, Any]] = {
    "clusterrpc": {},
    "memberlist": {"local_health": False, "refute_directly": False, "direct_retry": False},
}


def make_keyring() -> Keyring:
    key = Keyring.generate("hmac-sha256", key_id="k1")
    return Keyring(cluster=CLUSTER, keys=[key], signing_key_id="k1")


class SimCluster:
    """``count`` members n0 … on the in-memory network, joined through n0."""

    def __init__(self, net: MemoryNetwork, count: int, settings: dict[str, Any], seed: int,
                 keyring: Keyring) -> None:
        self.net = net
        self.count = count
        self.settings = settings
        self.seed = seed
        self.keyring = keyring
        self.nodes: dict[str, Node] = {}
        self.memberships: dict[str, Membership] = {}
        self.events: list[tuple[str, MembershipEvent]] = []
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for index in range(self.count):
            name = f"n{index}"
            node = Node(name, cluster=CLUSTER, keyring=self.keyring,
                        listen=[f"udp://10.0.0.{index + 1}:7946"], network=self.net)
            await node.start()
            membership = Membership(node, seeds=["udp://10.0.0.1:7946"] if index else [],
                                    rng=random.Random(self.seed * 1000 + index),
                                    **self.settings)
            await membership.start()
            self.nodes[name] = node
            self.memberships[name] = membership
            self._readers.append(asyncio.ensure_future(self._read(name, membership)))

    async def _read(self, name: str, membership: Membership) -> None:
        async for event in membership.events():
            self.events.append((name, event))

    async def converge(self, limit: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        everyone = set(self.memberships)
        while not all({n for n, m in ms.view.items() if m.state == "alive"} >= everyone
                      for ms in self.memberships.values()):
            if loop.time() - started > limit:
                raise RuntimeError("the cluster did not converge")
            await asyncio.sleep(0.1)

    async def crash(self, name: str) -> None:
        await self.memberships.pop(name).stop(leave=False)
        await self.nodes[name].stop()

    async def close(self) -> None:
        for membership in self.memberships.values():
            await membership.stop(leave=False)
        for node in self.nodes.values():
            await node.stop()
        for reader in self._readers:
            reader.cancel()


def detection_trial(settings: dict[str, Any], seed: int, keyring: Keyring) -> float:
    async def scenario() -> float:
        net = MemoryNetwork(seed=seed)
        net.delay((0.0002, 0.002))
        cluster = SimCluster(net, 16, settings, seed, keyring)
        await cluster.start()
        try:
            await cluster.converge()
            await asyncio.sleep(30.0)
            victim = f"n{1 + seed % 15}"
            await cluster.crash(victim)
            loop = asyncio.get_running_loop()
            crashed = loop.time()
            while not all(m.view[victim].state == "dead" for m in cluster.memberships.values()):
                if loop.time() - crashed > 300:
                    raise RuntimeError("a crash was not detected within 300 s")
                await asyncio.sleep(0.01)
            return loop.time() - crashed
        finally:
            await cluster.close()

    return run(scenario(), clock=VirtualClock(autojump_threshold=0))


def false_positive_run(settings: dict[str, Any], seed: int, duration: float,
                       keyring: Keyring) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        net = MemoryNetwork(seed=seed)
        net.drop(0.05)
        net.duplicate(0.02)
        net.reorder(0.05, hold=0.05)
        net.delay((0.0002, 0.002))
        cluster = SimCluster(net, 16, settings, seed, keyring)
        await cluster.start()
        stalls = 0
        try:
            await cluster.converge()
            cluster.events.clear()
            stalling = cluster.memberships["n4"]
            rng = random.Random(seed)
            loop = asyncio.get_running_loop()
            end = loop.time() + duration
            while loop.time() < end:
                await asyncio.sleep(rng.uniform(5.0, 15.0))
                stalling.freeze(1.0)
                stalls += 1
            await asyncio.sleep(60.0)  # let the last doubts resolve
            epochs = {name: m.protocol.epoch for name, m in cluster.memberships.items()
                      if m.protocol is not None}
            deaths = [(o, e.member.name) for o, e in cluster.events if isinstance(e, Failed)
                      and epochs.get(e.member.name) == e.member.epoch]
            suspicions = [(o, e.member.name) for o, e in cluster.events
                          if isinstance(e, Suspected)]
            # Suspecting the member whose loop stalled is right (it did not answer); suspecting
            # one that always answered is the false positive a stalled prober causes.
            of_healthy = [pair for pair in suspicions if pair[1] != "n4"]
            member_hours = 16 * (duration + 60.0) / 3600.0
            counters: dict[str, int] = {}
            for membership in cluster.memberships.values():
                for key, value in membership.counters.items():
                    counters[key] = counters.get(key, 0) + value
            return {
                "false_deaths": len(deaths),
                "false_deaths_per_member_hour": len(deaths) / member_hours,
                "false_deaths_of_the_stalling_member": sum(1 for _, n in deaths if n == "n4"),
                "suspicions_of_the_stalling_member": len(suspicions) - len(of_healthy),
                "false_suspicions": len(of_healthy),
                "false_suspicions_per_member_hour": len(of_healthy) / member_hours,
                "false_positives": len(deaths) + len(of_healthy),
                "stalls": stalls, "simulated_s": duration,
                "probes_sent": counters.get("probes_sent", 0),
                "suspicions_withheld": counters.get("suspicions_withheld", 0),
            }
        finally:
            await cluster.close()

    return run(scenario(), clock=VirtualClock(autojump_threshold=0))


def cpu_per_member(settings: dict[str, Any], members: int, seconds: float,
                   keyring: Keyring) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        nodes: list[Node] = []
        memberships: list[Membership] = []
        try:
            seed_url = None
            for index in range(members):
                node = Node(f"n{index}", cluster=CLUSTER, keyring=keyring,
                            listen=["udp://127.0.0.1:0"])
                await node.start()
                nodes.append(node)
                url = node.addresses[0]
                membership = Membership(node, seeds=[seed_url] if seed_url else [],
                                        rng=random.Random(index), **settings)
                await membership.start()
                memberships.append(membership)
                seed_url = seed_url or url
            deadline = time.monotonic() + 60.0
            while not all(len(m.alive()) == members for m in memberships):
                if time.monotonic() > deadline:
                    raise RuntimeError("the loopback cluster did not converge in 60 s")
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.0)
            cpu, wall = time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            cpu, wall = time.process_time() - cpu, time.monotonic() - wall
            sent = sum(m.counters["probes_sent"] for m in memberships)
            return {"members": members, "seconds": wall,
                    "cpu_us_per_member_per_s": cpu / wall / members * 1e6,
                    "cpu_share_of_one_core": cpu / wall, "probes_sent": sent}
        finally:
            for membership in memberships:
                await membership.stop(leave=False)
            for node in nodes:
                await node.stop()

    return asyncio.run(scenario())


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="write every figure as JSON to PATH (or standard output: '-')")
    parser.add_argument("--trials", type=int, help="crash trials per contender (default 20)")
    parser.add_argument("--duration", type=float,
                        help="simulated seconds of the false-positive run (default 3600)")
    parser.add_argument("--cpu-seconds", type=float, help="loopback CPU window (default 20)")
    args = parser.parse_args()
    trials = args.trials or (2 if args.quick else 20)
    duration = args.duration or (120.0 if args.quick else 3600.0)
    cpu_seconds = args.cpu_seconds or (2.0 if args.quick else 20.0)
    cpu_members = 16 if args.quick else 64
    keyring = make_keyring()
    report: dict[str, Any] = {"meta": {
        "python": platform.python_version(), "cpus": os.cpu_count(), "trials": trials,
        "duration_s": duration, "cpu_members": cpu_members}}
    started = time.monotonic()
    for name, settings in CONTENDERS.items():
        times = [detection_trial(settings, seed, keyring) for seed in range(trials)]
        report.setdefault("detection", {})[name] = {
            "median_s": statistics.median(times), "p99_s": percentile(times, 0.99),
            "max_s": max(times), "times_s": times}
        report.setdefault("false_positives", {})[name] = false_positive_run(
            settings, 7, duration, keyring)
        report.setdefault("cpu", {})[name] = cpu_per_member(settings, cpu_members,
                                                           cpu_seconds, keyring)
    ours, theirs = report["detection"]["clusterrpc"], report["detection"]["memberlist"]
    fp_ours = report["false_positives"]["clusterrpc"]
    fp_theirs = report["false_positives"]["memberlist"]
    report["goals"] = [
        {"goal": "median detection no worse than memberlist's",
         "ours": ours["median_s"], "theirs": theirs["median_s"],
         "met": ours["median_s"] <= theirs["median_s"] * 1.05},
        {"goal": "false positives at least 10x fewer",
         "ours": fp_ours["false_positives"], "theirs": fp_theirs["false_positives"],
         "met": fp_ours["false_positives"] * 10 <= fp_theirs["false_positives"]
         and fp_theirs["false_positives"] > 0},
    ]
    report["meta"]["wall_s"] = time.monotonic() - started
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"membership benchmark - Python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{report['meta']['wall_s']:.0f} s\n")
    print(f"{'':<12} {'DETECTION median':>17} {'p99':>7}   {'FALSE DEATHS':>12} "
          f"{'/member-h':>9}   {'FALSE SUSPICIONS':>16} {'/member-h':>9}   CPU/member/s")
    for name in CONTENDERS:
        d, f, c = (report["detection"][name], report["false_positives"][name],
                   report["cpu"][name])
        print(f"{name:<12} {d['median_s']:>16.2f}s {d['p99_s']:>6.2f}s   "
              f"{f['false_deaths']:>12} {f['false_deaths_per_member_hour']:>9.3f}   "
              f"{f['false_suspicions']:>16} {f['false_suspicions_per_member_hour']:>9.2f}   "
              f"{c['cpu_us_per_member_per_s']:>7.0f} µs ({cpu_members} members)")
    print()
    for goal in report["goals"]:
        print(f"{goal['goal']:<45} ours {goal['ours']:.6g}, memberlist {goal['theirs']:.6g}: "
              f"{'met' if goal['met'] else 'NOT MET'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
