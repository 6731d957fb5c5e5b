"""Multicast benchmark: gathering replies from N nodes with one multicast call, against a loop
of N unicast calls doing the same work, side by side in one run; one-way multicast packets/s.

Run from the repository root after ``pip install .``::

    python bench/bench_multicast.py                 # about five minutes
    python bench/bench_multicast.py --quick         # a smoke run: a few calls each
    python bench/bench_multicast.py --json out.json # the tables, and every figure as JSON
    python bench/bench_multicast.py --profile DIR   # where the time of the N=64 calls goes

The members are 64 nodes (``m0`` … ``m63``), each a ``Node`` listening on
``tcp://127.0.0.1:0`` and ``udp://127.0.0.1:0`` and a member of the multicast groups of the
sizes it belongs to; the caller is one node that is a member of none (``Group(…,
join=False)``). The whole benchmark runs twice, side by side in one run (``--members`` picks
one), with the members placed two ways:

* **in-process** (the issue's setup): the members in the caller's process and event loop.
  Every member's serving work then runs on the caller's thread, one member after another;
* **workers**: the members spread over ``--workers`` processes (default 8; member ``i`` in
  worker ``i % 8``, one event loop each), as nodes are separate processes in a cluster. They
  serve a multicast call in parallel as far as this machine's CPUs allow, and every unicast
  call crosses processes, as it crosses machines in a cluster.

Groups are random addresses in 239.192.0.0/16 on random ports, pinned to the loopback interface
with TTL 1 (``udp://239.192.X.Y:PORT?iface=127.0.0.1``): nothing leaves the machine. Packets
are signed with ``hmac-sha256``; bodies use the default ``xmlrpc`` codec (``--codec json``: the
caller's calls in JSON, answered in JSON). Every member serves the same small election
service:

* ``election.status()``: no arguments, answers a 3-field struct;
* ``election.vote(ballot)``: the 9-field election vote of ``clusterrpc roundtrip``
  (``SAMPLE_VOTE``) as its argument, answers a 3-field struct;
* ``election.cast(ballot)``: one-way, counts what arrives (``@oneway``).

For each N (1, 4, 16, 64) and each of the first two methods, one *operation* asks all N
members and waits for all N answers, five ways:

* **multicast**: ``await caller.group("gN").call("election.status", timeout=…)``: one datagram,
  returns as soon as every expected member answered (checked: all N, nothing missing);
* **UDP loop** / **TCP loop**: ``for peer in peers: await peer.call("election.status")``,
  N sequential unicast calls over UDP or over TCP (connections kept);
* **UDP gather** / **TCP gather**: the same N unicast calls made concurrently with
  ``asyncio.gather`` (all N in flight at once).

The headline ratio is multicast time / the *faster* of the two sequential loops (the stricter
comparison; the UDP loop is the same transport as multicast and usually the faster one here).

Method (``bench/_timing.py``'s): each contender is warmed up, then calibrated (a power-of-two
count of operations lasting about ``--target`` seconds, at most ``max_count``); then the
contenders of one (N, method) run that count in turn, interleaved, ``--repeats`` times, and the
best time per operation is kept. Cyclic GC stays on, as in applications. Every loop is bounded
by its count and by a time limit. CPU per operation (this process) is reported next to the wall
time: in one process the two are nearly equal, because every member's serving work runs on the
same thread as the caller — which is what limits the in-process ratio (see README, "Multicast
calls"). With worker processes, the CPU figure adds up the caller's and the workers' CPU
(Linux schedstat), so it shows the work done, while the wall time shows how much of it ran in
parallel.

One-way (in-process members only: each member's service counts what it receives): the
caller sends ``await group.oneway.election.cast(SAMPLE_VOTE)`` in a loop of a
bounded count (fewer packets for larger groups: at most ``oneway_deliveries`` packet-member
deliveries per burst), in two ways: *burst* (the loop never yields to the event loop: the
sender's own rate; the members read only afterwards, so their socket buffers may overflow) and
*paced* (``await asyncio.sleep(0)`` after each packet: the members read as the sender sends, so
the rate is what the process sustains). Each member counts what it receives; reported: sent/s,
delivered/s per member (packets a member received / time from the burst's start to its last
arrival), and the deliveries lost (sent x N - received).

Next to every figure: how long this process waited for a CPU (Linux schedstat); a large wait
means other programs competed for the machine and that run's figures are pessimistic.
``--profile DIR`` instead times, at the largest N, where an operation's wall time goes without
the profiler (the members' handling of the calls, the caller's handling of the answers, the
rest), then runs the multicast call and the UDP and TCP loops under cProfile, writes the
``.prof`` files to DIR and prints the stages of a call and the hot spots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import gc
import json
import os
import platform
import pstats
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _timing import schedstat_ns

import clusterrpc
from clusterrpc import CallTimeoutError, Group, Keyring, Node, oneway, remote
from clusterrpc.cli.main import SAMPLE_VOTE

CLUSTER = "BENCH/MULTICAST"
SIZES = (1, 4, 16, 64)
METHODS = {
    "status": ("election.status", ()),
    "vote": ("election.vote", (SAMPLE_VOTE,)),
}
CONTENDERS = ("multicast", "UDP loop", "TCP loop", "UDP gather", "TCP gather")
CALL_TIMEOUT = 2.0  # seconds; a multicast call needs one, and so does a UDP call
TARGET_RATIO = 0.25  # issue 5 item 8: gathering from 64 takes at most 1/4 of the 64-call loop
WORKER_START_LIMIT = 60.0  # seconds for a member worker process to start its members
WORKERS = 8  # default member worker processes (--workers)
SCRIPT = str(Path(__file__).resolve())  # what a member worker process runs


@dataclass(frozen=True)
class Mode:
    repeats: int
    target: float            # seconds per timed repeat, roughly
    warmup: int              # operations before calibrating
    max_count: int           # operations per repeat at most
    oneway_count: int        # one-way packets per burst at most ...
    oneway_deliveries: int   # ... and at most this many packet-member deliveries per burst
    oneway_repeats: int

    @property
    def limit(self) -> float:
        """Hard time limit of one timed loop."""
        return 20 * self.target + 5.0


FULL = Mode(repeats=7, target=0.2, warmup=5, max_count=4096, oneway_count=10_000,
            oneway_deliveries=32_000, oneway_repeats=3)
QUICK = Mode(repeats=1, target=0.005, warmup=1, max_count=16, oneway_count=100,
             oneway_deliveries=1_000, oneway_repeats=1)


# -- the members' service --------------------------------------------------------------------------


class Election:
    """A member's election service; ``cast`` counts the one-way votes that arrive."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received = 0
        self.first = 0.0
        self.last = 0.0

    @remote
    def status(self) -> dict:
        """This member's view of the election."""
        return {"term": 42, "leader": "m0", "voter": self.name}

    @remote
    def vote(self, ballot: dict) -> dict:
        """Answer a vote request."""
        return {"term": ballot["term"], "granted": True, "voter": self.name}

    @oneway
    def cast(self, ballot: dict) -> None:
        """A one-way vote: counted."""
        now = time.perf_counter()
        if not self.received:
            self.first = now
        self.received += 1
        self.last = now

    def reset(self) -> None:
        self.received = 0
        self.first = self.last = 0.0


def expected_answer(method: str, member: str) -> dict[str, Any]:
    if method == "status":
        return {"term": 42, "leader": "m0", "voter": member}
    return {"term": SAMPLE_VOTE["term"], "granted": True, "voter": member}


def random_groups(sizes: tuple[int, ...]) -> dict[int, str]:
    """A distinct random group address and port per size, in 239.192.0.0/16, pinned to the
    loopback interface with TTL 1."""
    rng = random.SystemRandom()
    urls: dict[int, str] = {}
    hosts: set[str] = set()
    ports: set[int] = set()
    for size in sizes:
        host = f"239.192.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
        port = rng.randint(20000, 60000)
        while host in hosts or port in ports:
            host = f"239.192.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
            port = rng.randint(20000, 60000)
        hosts.add(host)
        ports.add(port)
        urls[size] = f"udp://{host}:{port}?iface=127.0.0.1&ttl=1"
    return urls


@dataclass
class Cluster:
    """The caller with one group per size, and the members: their addresses, and — when they
    run in this process — their nodes and services, or else the worker processes serving
    them."""

    caller: Node
    groups: dict[int, str]
    urls: list[list[str]]  # each member's listening addresses, by member index
    members: list[Node] = field(default_factory=list)  # in this process only
    services: list[Election] = field(default_factory=list)  # in this process only
    workers: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def where(self) -> str:
        if not self.workers:
            return "in-process"
        return f"{len(self.workers)} worker processes"

    def names(self, size: int) -> list[str]:
        return [f"m{index}" for index in range(size)]

    def address(self, index: int, scheme: str) -> str:
        return next(url for url in self.urls[index] if url.startswith(scheme))

    def worker_pids(self) -> list[int]:
        return [worker.pid for worker in self.workers]


def member_node(index: int, keyring: Keyring, groups: dict[int, str], sizes: tuple[int, ...]
                ) -> tuple[Node, Election]:
    """Member ``m{index}``: TCP and UDP listeners, in every group of a size above its index."""
    names = [f"m{i}" for i in range(max(sizes))]
    name = names[index]
    node = Node(name, cluster=CLUSTER, keyring=keyring, timeout=10.0,
                listen=["tcp://127.0.0.1:0", "udp://127.0.0.1:0"],
                groups={f"g{size}": Group(groups[size], members=names[:size])
                        for size in sizes if index < size})
    service = Election(name)
    node.serve(service, name="election")
    return node, service


def caller_node(keyring: Keyring, groups: dict[int, str], sizes: tuple[int, ...], codec: str
                ) -> Node:
    """The caller: a member of no group (``join=False``); it only sends and gathers."""
    names = [f"m{index}" for index in range(max(sizes))]
    return Node("caller", cluster=CLUSTER, keyring=keyring, listen=["udp://127.0.0.1:0"],
                timeout=10.0, codec=codec,
                groups={f"g{size}": Group(groups[size], members=names[:size], join=False)
                        for size in sizes})


async def start_cluster(sizes: tuple[int, ...], keyring: Keyring, codec: str = "xmlrpc"
                        ) -> Cluster:
    """Every member node in this process and this event loop, with the caller."""
    groups = random_groups(sizes)
    cluster = Cluster(caller_node(keyring, groups, sizes, codec), groups, urls=[])
    for index in range(max(sizes)):
        node, service = member_node(index, keyring, groups, sizes)
        cluster.members.append(node)
        cluster.services.append(service)
    try:
        for node in cluster.members:
            await node.start()
        await cluster.caller.start()
    except BaseException:
        await stop_cluster(cluster)
        raise
    cluster.urls = [node.addresses for node in cluster.members]
    return cluster


async def start_worker_cluster(sizes: tuple[int, ...], keyring: Keyring, workers: int,
                               codec: str = "xmlrpc") -> Cluster:
    """The members spread over ``workers`` processes (1 to ``max(sizes)``; member ``i`` in
    worker ``i % workers``, so that every group spans as many processes as it can), each
    running its members in one event loop (``--serve-members``); the caller in this process.
    Each worker reads the keyring from a private temporary file, prints its members' addresses
    and serves until its standard input closes."""
    groups = random_groups(sizes)
    largest = max(sizes)
    cluster = Cluster(caller_node(keyring, groups, sizes, codec), groups,
                      urls=[[] for _ in range(largest)])
    try:
        with tempfile.TemporaryDirectory(prefix="bench-multicast-") as directory:
            keyring_path = Path(directory) / "cluster.keys"
            keyring.save(keyring_path)
            for worker in range(workers):
                config = {"keyring": str(keyring_path), "sizes": list(sizes),
                          "groups": {str(size): url for size, url in groups.items()},
                          "members": list(range(worker, largest, workers))}
                cluster.workers.append(await asyncio.create_subprocess_exec(
                    sys.executable, SCRIPT, "--serve-members",
                    json.dumps(config), stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE))
            for process in cluster.workers:  # each prints its members' addresses when ready
                assert process.stdout is not None
                line = await asyncio.wait_for(process.stdout.readline(), WORKER_START_LIMIT)
                if not line:
                    raise RuntimeError(f"member worker {process.pid} exited before serving")
                for index, urls in json.loads(line).items():
                    cluster.urls[int(index)] = urls
        await cluster.caller.start()
    except BaseException:
        await stop_cluster(cluster)
        raise
    return cluster


async def serve_members(config: dict[str, Any]) -> None:
    """A member worker (``--serve-members CONFIG``): start the members, print their addresses
    as one JSON line, serve until standard input closes (the benchmark ended or died)."""
    keyring = Keyring.load(config["keyring"])
    sizes = tuple(config["sizes"])
    groups = {int(size): url for size, url in config["groups"].items()}
    nodes = [member_node(index, keyring, groups, sizes)[0] for index in config["members"]]
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    try:
        for node in nodes:
            await node.start()
        ready = {str(index): node.addresses
                 for index, node in zip(config["members"], nodes, strict=True)}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        while await stdin.read(4096):
            pass
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                await node.stop()


async def stop_cluster(cluster: Cluster) -> None:
    for node in [cluster.caller, *cluster.members]:
        with contextlib.suppress(Exception):
            await node.stop()
    for process in cluster.workers:
        if process.stdin is not None:
            process.stdin.close()  # the worker's signal to stop its members and exit
    for process in cluster.workers:
        try:
            await asyncio.wait_for(process.wait(), 10.0)
        except TimeoutError:
            process.kill()
            await process.wait()


# -- timing ----------------------------------------------------------------------------------------

Op = Callable[[], Awaitable[None]]


@dataclass
class Tally:
    """Answers an operation did not get (a lost UDP datagram, a member missing)."""

    missing: int = 0


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)  # per operation, one per repeat
    cpu: float = 0.0  # CPU seconds per operation in the best repeat (with member workers')
    waited: float = 0.0  # ... and seconds this process waited for a CPU
    count: int = 0
    tally: Tally = field(default_factory=Tally)
    gathered: int = 0  # members whose answer the check before timing saw (all must answer)
    error: str | None = None

    @property
    def best(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")

    def as_json(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        return {"us_per_op": round(self.best * 1e6, 1),
                "median_us_per_op": round(sorted(self.seconds)[len(self.seconds) // 2] * 1e6, 1),
                "cpu_us_per_op": round(self.cpu * 1e6, 1),
                "cpu_wait_us_per_op": round(self.waited * 1e6, 1), "ops_per_repeat": self.count,
                "repeats": len(self.seconds), "answers_missing": self.tally.missing,
                "gathered": self.gathered}


async def run_ops(op: Op, count: int, limit: float, pids: Sequence[int] = ()
                  ) -> tuple[int, float, float, float]:
    """Up to ``count`` operations within ``limit`` seconds: (done, wall s, CPU s of this
    process and of the processes ``pids``, s this process waited for a CPU)."""
    clock = time.perf_counter
    cpu_before = time.process_time()
    others_before = sum(schedstat_ns(pid)[0] for pid in pids)
    _, wait_before = schedstat_ns()
    started = clock()
    deadline = started + limit
    done = 0
    for done in range(1, count + 1):  # noqa: B007 - done: the count made
        await op()
        if clock() > deadline:
            break
    seconds = clock() - started
    _, wait_after = schedstat_ns()
    others = (sum(schedstat_ns(pid)[0] for pid in pids) - others_before) / 1e9
    return (done, seconds, time.process_time() - cpu_before + others,
            (wait_after - wait_before) / 1e9)


async def calibrate(op: Op, mode: Mode) -> int:
    """Operation count (a power of two, at most ``mode.max_count``) lasting ``mode.target``."""
    count = 1
    while count < mode.max_count:
        _, seconds, _, _ = await run_ops(op, count, mode.limit)
        if seconds >= mode.target:
            break
        count *= 2
    return min(count, mode.max_count)


async def measure(contenders: dict[str, Op], timings: dict[str, Timing], mode: Mode,
                  pids: Sequence[int] = ()) -> None:
    """Warm up, calibrate, then run the contenders interleaved ``mode.repeats`` times
    (``pids``: the member worker processes, whose CPU time is counted too)."""
    live: dict[str, Op] = {}
    for name, op in contenders.items():
        try:
            await run_ops(op, mode.warmup, mode.limit)
            timings[name].count = await calibrate(op, mode)
            live[name] = op
        except Exception as error:  # report it as this contender's result, run the others
            timings[name].error = f"{type(error).__name__}: {error}"
    gc.collect()
    for _ in range(mode.repeats):
        for name, op in live.items():
            timing = timings[name]
            if timing.error:
                continue
            try:
                done, seconds, cpu, waited = await run_ops(op, timing.count, mode.limit, pids)
            except Exception as error:
                timing.error = f"{type(error).__name__}: {error}"
                continue
            if not timing.seconds or seconds / done < timing.best:
                timing.cpu = cpu / done
                timing.waited = waited / done
            timing.seconds.append(seconds / done)


# -- the contenders --------------------------------------------------------------------------------


def contenders_for(cluster: Cluster, size: int, method: str, tallies: dict[str, Tally]
                   ) -> dict[str, Op]:
    full_name, params = METHODS[method]
    group = cluster.caller.group(f"g{size}")
    udp = [cluster.caller.peer(cluster.address(i, "udp://"), timeout=CALL_TIMEOUT)
           for i in range(size)]
    tcp = [cluster.caller.peer(cluster.address(i, "tcp://"), timeout=CALL_TIMEOUT)
           for i in range(size)]

    async def multicast() -> None:
        replies = await group.call(full_name, *params, timeout=CALL_TIMEOUT)
        if len(replies) != size:
            tallies["multicast"].missing += size - len(replies)

    def loop(peers: list[clusterrpc.Peer], tally: Tally) -> Op:
        async def op() -> None:
            for peer in peers:
                try:
                    await peer.call(full_name, *params)
                except CallTimeoutError:  # a lost UDP datagram
                    tally.missing += 1
        return op

    def gather(peers: list[clusterrpc.Peer], tally: Tally) -> Op:
        async def op() -> None:
            answers = await asyncio.gather(*(peer.call(full_name, *params) for peer in peers),
                                           return_exceptions=True)
            for answer in answers:
                if isinstance(answer, CallTimeoutError):
                    tally.missing += 1
                elif isinstance(answer, BaseException):
                    raise answer
        return op

    return {
        "multicast": multicast,
        "UDP loop": loop(udp, tallies["UDP loop"]),
        "TCP loop": loop(tcp, tallies["TCP loop"]),
        "UDP gather": gather(udp, tallies["UDP gather"]),
        "TCP gather": gather(tcp, tallies["TCP gather"]),
    }


async def check_answers(cluster: Cluster, size: int, method: str) -> dict[str, int]:
    """One call each way, checked member by member before timing: every member answers, with
    its own answer. Returns the members each contender gathered."""
    full_name, params = METHODS[method]
    names = cluster.names(size)
    wanted = {name: expected_answer(method, name) for name in names}
    gathered: dict[str, int] = {}
    replies = await cluster.caller.group(f"g{size}").call(full_name, *params, timeout=5.0)
    if dict(replies) != wanted or replies.missing or replies.timed_out:
        raise RuntimeError(f"multicast to {size}: got {replies!r}, wanted {wanted!r}")
    gathered["multicast"] = len(replies)
    for scheme in ("udp://", "tcp://"):
        got = {}
        for index, name in enumerate(names):
            peer = cluster.caller.peer(cluster.address(index, scheme), timeout=5.0)
            got[name] = await peer.call(full_name, *params)
        if got != wanted:
            raise RuntimeError(f"unicast {scheme} to {size}: got {got!r}, wanted {wanted!r}")
        kind = scheme[:3].upper()
        gathered[f"{kind} loop"] = gathered[f"{kind} gather"] = len(got)
    return gathered


async def gather_section(cluster: Cluster, sizes: tuple[int, ...], mode: Mode, out: Any
                         ) -> dict[str, dict[str, dict[str, Any]]]:
    report: dict[str, dict[str, dict[str, Any]]] = {}
    for method in METHODS:
        report[method] = {}
        rows: dict[int, dict[str, Timing]] = {}
        for size in sizes:
            tallies = {name: Tally() for name in CONTENDERS}
            timings = {name: Timing(tally=tallies[name]) for name in CONTENDERS}
            gathered = await check_answers(cluster, size, method)
            for name, count in gathered.items():
                timings[name].gathered = count
            await measure(contenders_for(cluster, size, method, tallies), timings, mode,
                          cluster.worker_pids())
            rows[size] = timings
            entry: dict[str, Any] = {name: t.as_json() for name, t in timings.items()}
            entry["ratios"] = ratios(timings)
            report[method][str(size)] = entry
            print(f"  ... {cluster.where}, {method}, N={size}: done", file=sys.stderr,
                  flush=True)
        print_gather_table(method, rows, cluster, out)
    return report


def ratios(timings: dict[str, Timing]) -> dict[str, float | None]:
    """Multicast time / each unicast way's time (lower is better for multicast)."""
    mc = timings["multicast"]
    found: dict[str, float | None] = {}
    for name in CONTENDERS[1:]:
        other = timings[name]
        ok = not mc.error and not other.error and mc.seconds and other.seconds
        found[f"multicast / {name}"] = round(mc.best / other.best, 3) if ok else None
    loops = [timings[name] for name in ("UDP loop", "TCP loop")
             if not timings[name].error and timings[name].seconds]
    if mc.seconds and not mc.error and loops:
        found["multicast / faster loop"] = round(mc.best / min(t.best for t in loops), 3)
    else:
        found["multicast / faster loop"] = None
    return found


def _time(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "n/a"
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} us"


def print_gather_table(method: str, rows: dict[int, dict[str, Timing]], cluster: Cluster,
                       out: Any) -> None:
    full_name, params = METHODS[method]
    what = "no arguments" if not params else "SAMPLE_VOTE as argument"
    if cluster.workers:
        where = (f"members in {len(cluster.workers)} worker processes, the caller in this one; "
                 f"CPU of all of them")
    else:
        where = "members and caller in this process and event loop; its CPU"
    print(f"\nGathering N answers to {full_name}() ({what}; a 3-field struct back), {where}: "
          f"best time per operation (CPU per operation)", file=out)
    header = "".join(f" {name:>20}" for name in CONTENDERS)
    print(f"  {'N':>3}{header} {'mc/UDP loop':>12} {'mc/TCP loop':>12}", file=out)
    for size, timings in rows.items():
        cells = []
        for name in CONTENDERS:
            t = timings[name]
            cells.append(f" {'failed':>20}" if t.error
                         else f" {_time(t.best) + ' (' + _time(t.cpu) + ')':>20}")
        found = ratios(timings)
        udp = found["multicast / UDP loop"]
        tcp = found["multicast / TCP loop"]
        print(f"  {size:>3}{''.join(cells)} {'' if udp is None else f'{udp:.2f}x':>12}"
              f" {'' if tcp is None else f'{tcp:.2f}x':>12}", file=out)
        waits = [t.waited / t.best for t in timings.values() if t.seconds and not t.error]
        # With member workers, this process also waits for its own workers: not a sign of load.
        if waits and max(waits) > 0.05 and not cluster.workers:
            print(f"      (this process waited for a CPU up to {max(waits):.0%} of a best "
                  f"repeat: other programs' load; those figures are pessimistic)", file=out)
        for name in CONTENDERS:
            t = timings[name]
            if t.error:
                print(f"      {name} failed: {t.error}", file=out)
            elif t.tally.missing:
                print(f"      {name}: {t.tally.missing} answers missing (lost datagrams)",
                      file=out)


# -- one-way ---------------------------------------------------------------------------------------


@dataclass
class OnewayResult:
    sent_rates: list[float] = field(default_factory=list)
    delivered_rates: list[float] = field(default_factory=list)  # per member, mean of members
    slowest_member_rates: list[float] = field(default_factory=list)
    count: int = 0  # packets per burst
    sent: int = 0
    received: int = 0  # deliveries, over every member
    members: int = 0
    waited: float = 0.0  # share of the bursts' time this process waited for a CPU, at most
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        return {"packets_per_burst": self.count,
                "sent_per_s": round(max(self.sent_rates, default=0.0), 1),
                "delivered_per_member_per_s": round(max(self.delivered_rates, default=0.0), 1),
                "slowest_member_per_s": round(max(self.slowest_member_rates, default=0.0), 1),
                "sent": self.sent, "deliveries_expected": self.sent * self.members,
                "deliveries": self.received, "lost": self.sent * self.members - self.received,
                "repeats": len(self.sent_rates), "cpu_wait_share": round(self.waited, 3)}


async def settle(services: list[Election], wanted: int, limit: float) -> None:
    """Wait until every delivery arrived, or the count stopped growing for 0.3 s."""
    deadline = time.monotonic() + limit
    previous, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        total = sum(service.received for service in services)
        if total >= wanted:
            return
        if total != previous:
            previous, still_since = total, time.monotonic()
        elif time.monotonic() - still_since > 0.3:
            return
        await asyncio.sleep(0.01)


async def oneway_burst(cluster: Cluster, size: int, count: int, *, paced: bool, limit: float
                       ) -> tuple[int, float, list[Election], float]:
    services = cluster.services[:size]
    for service in services:
        service.reset()
    cast = cluster.caller.group(f"g{size}").oneway.election.cast
    clock = time.perf_counter
    started = clock()
    deadline = started + limit
    sent = 0
    for sent in range(1, count + 1):
        await cast(SAMPLE_VOTE)
        if paced:
            await asyncio.sleep(0)
        if not sent & 31 and clock() > deadline:
            break
    seconds = clock() - started
    await settle(services, sent * size, limit)
    return sent, seconds, services, started


async def oneway_section(cluster: Cluster, sizes: tuple[int, ...], mode: Mode, out: Any
                         ) -> dict[str, dict[str, Any]]:
    results: dict[tuple[str, int], OnewayResult] = {}
    for size in sizes:
        for kind in ("burst", "paced"):
            count = max(10, min(mode.oneway_count, mode.oneway_deliveries // size))
            results[kind, size] = OnewayResult(count=count, members=size)
    for _ in range(mode.oneway_repeats):
        for (kind, size), result in results.items():
            if result.error:
                continue
            try:
                _, wait_before = schedstat_ns()
                began = time.perf_counter()
                sent, seconds, services, started = await oneway_burst(
                    cluster, size, result.count, paced=kind == "paced", limit=mode.limit)
                _, wait_after = schedstat_ns()
                span = time.perf_counter() - began
            except Exception as error:
                result.error = f"{type(error).__name__}: {error}"
                continue
            result.waited = max(result.waited, (wait_after - wait_before) / 1e9 / span)
            result.sent += sent
            result.received += sum(service.received for service in services)
            result.sent_rates.append(sent / seconds)
            rates = [service.received / (service.last - started) for service in services
                     if service.received and service.last > started]
            rates += [0.0] * (len(services) - len(rates))
            result.delivered_rates.append(sum(rates) / len(rates))
            result.slowest_member_rates.append(min(rates))
            gc.collect()
    print("\nOne-way multicast: election.cast(SAMPLE_VOTE) to N members (burst: the sender never"
          " yields; paced: it yields to the event loop after each packet)", file=out)
    print(f"  {'N':>3} {'sender':>6} {'packets':>8} {'sent/s':>9} {'delivered/s':>12}"
          f" {'slowest':>9} {'lost deliveries':>24}", file=out)
    report: dict[str, dict[str, Any]] = {"burst": {}, "paced": {}}
    for (kind, size), result in results.items():
        row = result.as_json()
        report[kind][str(size)] = row
        if result.error:
            print(f"  {size:>3} {kind:>6} failed: {result.error}", file=out)
            continue
        lost = f"{row['lost']:,} of {row['deliveries_expected']:,}"
        print(f"  {size:>3} {kind:>6} {result.count:>8,} {row['sent_per_s']:>9,.0f}"
              f" {row['delivered_per_member_per_s']:>12,.0f}"
              f" {row['slowest_member_per_s']:>9,.0f} {lost:>24}", file=out)
    print("  (delivered/s: packets a member received / time from the burst's start to its "
          "last arrival, mean of the members; slowest: the slowest member's)", file=out)
    waits = [result.waited for result in results.values() if not result.error]
    if waits and max(waits) > 0.05:
        print(f"  (this process waited for a CPU up to {max(waits):.0%} of a burst: other "
              f"programs' load; those figures are pessimistic)", file=out)
    return report


# -- profiling -------------------------------------------------------------------------------------

STAGES = [  # (file suffix, function): the stages of a call, for the profile summary
    ("multicast.py", "call_group"), ("engine.py", "call_group"), ("engine.py", "call"),
    ("engine.py", "process"), ("engine.py", "_handle"),
    ("protocol.py", "send_group_call"), ("protocol.py", "send_call"),
    ("protocol.py", "receive_datagram"), ("protocol.py", "_receive"), ("protocol.py", "_serve"),
    ("protocol.py", "_answer_received"), ("protocol.py", "_send_answer"),
    ("protocol.py", "open"), ("protocol.py", "seal_call"), ("protocol.py", "seal_answer"),
    ("protocol.py", "decode_answer"), ("protocol.py", "start"),
    ("gather.py", "receive"), ("gather.py", "start"),
    ("datagrams.py", "datagram_received"), ("datagrams.py", "_flush"), ("datagrams.py", "call"),
    ("streams.py", "buffer_updated"), ("streams.py", "call"),
    ("envelope.py", "open"), ("envelope.py", "seal"), ("envelope.py", "decode"),
    ("selectors.py", "select"), ("base_events.py", "_run_once"),
    ("selector_events.py", "_read_ready"), ("selector_events.py", "sendto"),
    ("selector_events.py", "write"),
]


def _where(filename: str) -> str:
    for marker in ("clusterrpc/", "lib/python3"):
        if marker in filename:
            return filename[filename.index(marker):]
    return filename


def print_profile(path: Path, ops: int, title: str, out: Any, top: int = 25) -> None:
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    rows = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)
    total = sum(row[1][2] for row in rows)
    print(f"\n{title}: {path}: {total / ops * 1e3:.2f} ms per operation under the profiler "
          f"(the profiler inflates small functions: compare shares, not absolutes)", file=out)
    print("  Stages (cumulative, per operation):", file=out)
    print(f"  {'calls/op':>9} {'cum us/op':>10} {'self us/op':>11}  function", file=out)
    for suffix, function in STAGES:
        for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in entries.items():
            if name == function and filename.endswith(suffix):
                print(f"  {ncalls / ops:>9.1f} {cumtime / ops * 1e6:>10.1f} "
                      f"{tottime / ops * 1e6:>11.1f}  {_where(filename)}:{line}({name})",
                      file=out)
    print(f"  Top {top} by own time:", file=out)
    print(f"  {'calls/op':>9} {'cum us/op':>10} {'self us/op':>11}  function", file=out)
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in rows[:top]:
        print(f"  {ncalls / ops:>9.1f} {cumtime / ops * 1e6:>10.1f} {tottime / ops * 1e6:>11.1f}"
              f"  {_where(filename)}:{line}({name})", file=out)


class Stopwatch:
    """Wall time spent handling each datagram an endpoint receives (its connection's
    ``receive_datagram``: everything a datagram's arrival causes there, synchronously: open,
    decode, serve, seal the answer, gather; not the reading itself, nor the ``sendto`` of the
    answers, which the endpoint writes once per batch)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, endpoint: Any) -> Callable[[], None]:
        connection = endpoint.connection
        received = connection.receive_datagram
        clock = time.perf_counter

        def timed(data: bytes, addr: Any, **options: Any) -> None:
            started = clock()
            try:
                received(data, addr, **options)
            finally:
                self.seconds += clock() - started
                self.calls += 1

        connection.receive_datagram = timed  # looked up on the instance, for every datagram
        return lambda: connection.__dict__.pop("receive_datagram", None)


async def split_times(cluster: Cluster, size: int, op: Op, name: str, ops: int, out: Any,
                      repeats: int = 5) -> None:
    """Where the wall time of one operation goes, without the profiler: the members' handling
    of the calls, the caller's handling of the answers, and the rest (the caller's sending and
    waiting machinery, reading the datagrams, the event loop); the best of ``repeats`` runs of
    ``ops`` operations. Reads the nodes' private socket lists: a diagnostic for this benchmark
    only."""
    group_host = urlsplit(cluster.groups[size]).hostname
    best: tuple[float, float, float, float] | None = None
    for _ in range(repeats):
        caller, members = Stopwatch(), Stopwatch()
        undo: list[Callable[[], None]] = []
        try:
            if name == "multicast":
                undo.append(caller.wrap(cluster.caller._group_senders[f"g{size}"]))
                for node in cluster.members[:size]:
                    undo += [members.wrap(member) for member in node._group_members
                             if member.address.host == group_host]
            else:
                undo.append(caller.wrap(cluster.caller._udp_endpoints[0]))
                undo += [members.wrap(node._udp_endpoints[0]) for node in cluster.members[:size]]
            done, seconds, _, waited = await run_ops(op, ops, 120.0)
        finally:
            for restore in undo:
                restore()
        if members.calls != size * done or caller.calls != size * done:
            raise RuntimeError(f"{name}: {members.calls} calls and {caller.calls} answers "
                               f"handled for {done} operations of {size}")
        found = (seconds / done, caller.seconds / done, members.seconds / done, waited / done)
        if best is None or found[0] < best[0]:
            best = found
    assert best is not None
    per_op, mine, theirs, waited = best
    rest = per_op - mine - theirs
    print(f"  without the profiler, timed at the sockets (best of {repeats} x {ops}): "
          f"{per_op * 1e3:.2f} ms per operation = members handling the {size} calls "
          f"{theirs * 1e3:.2f} ms ({theirs / size * 1e6:.1f} us each) + the caller handling the "
          f"{size} answers {mine * 1e3:.2f} ms ({mine / size * 1e6:.1f} us each) + the rest "
          f"(sending, reading datagrams, waiting, the event loop) {rest * 1e3:.2f} ms "
          f"({rest / size * 1e6:.1f} us per member); waited for a CPU {waited * 1e3:.2f} ms",
          file=out)


async def profile(cluster: Cluster, size: int, method: str, ops: int, out_dir: Path,
                  out: Any) -> None:
    tallies = {name: Tally() for name in CONTENDERS}
    contenders = contenders_for(cluster, size, method, tallies)
    await check_answers(cluster, size, method)
    for name in ("multicast", "UDP loop", "TCP loop"):
        op = contenders[name]
        await run_ops(op, 5, 60.0)  # warm-up
        if name != "TCP loop":
            gc.collect()
            await split_times(cluster, size, op, name, max(ops // 4, 5), out)
        gc.collect()
        done, seconds, cpu, waited = await run_ops(op, ops, 120.0)
        print(f"\n{name}, N={size}, {method}: without the profiler {seconds / done * 1e3:.2f} ms"
              f" per operation ({cpu / done * 1e3:.2f} ms CPU, waited for a CPU "
              f"{waited / done * 1e3:.2f} ms)", file=out)
        profiler = cProfile.Profile()
        profiler.enable()
        done, _, _, _ = await run_ops(op, ops, 120.0)
        profiler.disable()
        path = out_dir / f"{name.replace(' ', '-').lower()}-{size}-{method}.prof"
        profiler.dump_stats(str(path))
        print_profile(path, done, f"{name}, N={size}, {method}", out)


# -- main ------------------------------------------------------------------------------------------


def git_commit() -> str | None:
    try:
        completed = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                   text=True, timeout=10, cwd=Path(__file__).resolve().parent,
                                   check=False)
    except OSError:
        return None
    return completed.stdout.strip() or None


SETUPS = {"in-process": "calls", "workers": "calls_in_workers"}  # --members: report key


def targets(report: dict[str, Any], sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    largest = max(sizes)
    found = []
    for setup, key in SETUPS.items():
        if key not in report:
            continue
        where = report["meta"]["setups"][setup]
        for method in METHODS:
            entry = report[key].get(method, {}).get(str(largest), {})
            ratio = entry.get("ratios", {}).get("multicast / faster loop")
            found.append({
                "target": f"multicast gather from {largest} vs the faster {largest}-call "
                          f"unicast loop, {METHODS[method][0]}, members {where}",
                "setup": setup, "ratio": ratio, "wanted_at_most": TARGET_RATIO,
                "met": None if ratio is None else ratio <= TARGET_RATIO,
            })
    return found


async def run(args: argparse.Namespace, out: Any) -> dict[str, Any]:
    mode = QUICK if args.quick else FULL
    if args.repeats:
        mode = Mode(**{**mode.__dict__, "repeats": args.repeats})
    if args.target:
        mode = Mode(**{**mode.__dict__, "target": args.target})
    sizes = tuple(args.sizes)
    setups = ["in-process", "workers"] if args.members == "both" else [args.members]
    if args.profile:
        setups = ["in-process"]
    workers = max(1, min(args.workers, max(sizes)))
    key = Keyring.generate("hmac-sha256", key_id="bench")
    keyring = Keyring(cluster=CLUSTER, keys=[key], signing_key_id="bench")
    report: dict[str, Any] = {
        "meta": {
            "date": dt.date.today().isoformat(),
            "command": " ".join(["python bench/bench_multicast.py", *sys.argv[1:]]),
            "commit": git_commit(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "clusterrpc": os.path.dirname(clusterrpc.__file__),
            "mode": mode.__dict__,
            "sizes": list(sizes),
            "setups": {"in-process": "in the caller's process and event loop",
                       "workers": f"in {workers} worker processes"},
            "groups": {},
            "call_timeout_s": CALL_TIMEOUT,
            "scheme": "hmac-sha256",
            "codec": args.codec,
        },
        "notes": [
            "in-process: one process, one event loop: the members' serving work and the "
            "caller's share one thread, so a multicast call's members are served one after "
            "another",
            f"workers: member i runs in worker process i % {workers}, each worker one event "
            f"loop; members serve in parallel as far as this machine's {os.cpu_count()} CPUs "
            f"allow, and every unicast call crosses processes",
        ],
    }
    print(f"Python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs);"
          f" {max(sizes)} member nodes; {mode.repeats} interleaved repeats of ~{mode.target:g} s,"
          f" best kept", file=out)
    for setup in setups:
        if setup == "in-process":
            cluster = await start_cluster(sizes, keyring, args.codec)
        else:
            cluster = await start_worker_cluster(sizes, keyring, workers, args.codec)
        report["meta"]["groups"][setup] = {str(size): url for size, url in cluster.groups.items()}
        try:
            print(f"\n== Members {report['meta']['setups'][setup]}; groups "
                  f"{', '.join(cluster.groups.values())}", file=out)
            if args.profile:
                await profile(cluster, max(sizes), args.profile_method,
                              20 if args.quick else 200, Path(args.profile), out)
                return report
            report[SETUPS[setup]] = await gather_section(cluster, sizes, mode, out)
            if setup == "in-process":  # the one-way counts are read from the services
                report["oneway"] = await oneway_section(cluster, sizes, mode, out)
        finally:
            await stop_cluster(cluster)
    report["targets"] = targets(report, sizes)
    print("\nTarget", file=out)
    for target in report["targets"]:
        ratio = "n/a" if target["ratio"] is None else f"{target['ratio']:.2f}x"
        met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        print(f"  {target['target']:<100} {ratio:>6} (want <= {TARGET_RATIO:g}x): {met}",
              file=out)
    return report


def sizes_argument(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or any(size < 1 or size > 256 for size in sizes):
        raise argparse.ArgumentTypeError("sizes are 1 to 256 members, e.g. 1,4,16,64")
    return sorted(set(sizes))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: a few operations per contender, rough figures")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="also write every figure as JSON to PATH ('-' or no PATH: to "
                             "standard output, and the tables to standard error)")
    parser.add_argument("--sizes", type=sizes_argument, default=list(SIZES),
                        help="group sizes N, comma-separated (default 1,4,16,64)")
    parser.add_argument("--codec", default="xmlrpc",
                        help="the codec of the caller's calls (and so of the answers); default "
                             "xmlrpc")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 7; quick 1)")
    parser.add_argument("--target", type=float, help="seconds per timed repeat (default 0.2)")
    parser.add_argument("--profile", metavar="DIR",
                        help="instead of the benchmark: cProfile the multicast call and the UDP "
                             "and TCP loops at the largest N, write .prof files to DIR and print "
                             "the hot spots")
    parser.add_argument("--profile-method", choices=tuple(METHODS), default="status",
                        help="the method --profile calls (default status)")
    parser.add_argument("--members", choices=("both", *SETUPS), default="both",
                        help="where the members run: in this process and event loop, in "
                             "worker processes, or both in turn (default both)")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help=f"member worker processes for --members workers (default "
                             f"{WORKERS})")
    parser.add_argument("--serve-members", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_members:  # a member worker process (start_worker_cluster)
        asyncio.run(serve_members(json.loads(args.serve_members)))
        return 0
    out = sys.stderr if args.json == "-" else sys.stdout
    # Each member holds a few sockets, and each TCP peer two ends of a connection.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16 * max(args.sizes) + 256
    if soft < wanted <= hard or (hard == resource.RLIM_INFINITY and soft < wanted):
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run(args, out))
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
