"""RPC benchmark: calls per second of clusterrpc against the standard library's XML-RPC, Pyro5
and a bare socket echo, each server in its own process, side by side in one run.

Run from the repository root after ``pip install '.[bench]'`` (Pyro5; without it the Pyro5
rows are skipped and the output says so)::

    python bench/bench_rpc.py                 # about two minutes
    python bench/bench_rpc.py --quick         # a smoke run: a few hundred calls each
    python bench/bench_rpc.py --json out.json # the table, and every figure as JSON
    python bench/bench_rpc.py --profile DIR   # cProfile clusterrpc's server and client instead

Every call is ``election.vote(SAMPLE_VOTE)`` — the small election-vote struct of
``clusterrpc roundtrip`` (9 fields: ints, strings, a bool, a datetime, bytes, a float, nil) —
answered with a 3-field struct; one-way calls send the same struct to ``election.cast``.
Servers (``bench/_servers.py``) listen on 127.0.0.1 and on Unix sockets in a private temporary
directory, nowhere else. The contenders:

* **clusterrpc**: a ``Node`` serving over ``tcp://``, ``unix://`` and ``udp://``, packets signed
  with ``hmac-sha256`` and the default ``xmlrpc`` codec; clients are the blocking
  ``clusterrpc.connect()`` and, for calls in flight and one-way calls, a ``Node``'s peer;
* **stdlib**: ``SimpleXMLRPCServer`` (thread per connection, HTTP/1.1 keep-alive) and
  ``xmlrpc.client.ServerProxy``, which keeps its connection; no authentication, TCP only;
* **Pyro5**: a ``Daemon`` with its default thread-pool server and serpent serializer,
  ``@expose``/``@oneway``, ``Proxy`` clients; Nagle off (``SOCK_NODELAY``) like the others; no
  authentication (Pyro5 has none);
* **echo** (the floor): a blocking-socket client sends as many bytes as clusterrpc's call frame
  (4-byte length prefix + packet) and reads a frame as large as clusterrpc's reply; served by
  a thread-per-connection blocking server and by an ``asyncio.Protocol`` server. The headline
  ratio uses whichever echo is faster in that run (the stricter floor).

Method: each contender first runs a warm-up (connections made), then a calibration that picks a
call count lasting about ``--target`` seconds; then the contenders run that count in turn,
interleaved, ``--repeats`` times, and the best rate is kept (the least disturbed by other work
on a shared machine). Every loop is bounded by its count and by a time limit. Next to each
rate: the CPU time per call of the client process and of the server process (Linux schedstat),
and how long both waited for a CPU — a large wait means other programs competed for the
machine and the figures of that run are pessimistic.

One-way calls: the server counts what it receives; after each burst the sender asks for the
count with a normal call (over the same connection or socket, so it arrives after the burst)
and reports sent/s (the sender's loop), processed/s (the receiver, first to last arrival),
delivered/s (calls received / time from the burst's start to the last arrival: what the pair
sustains) and the calls lost (none may be over TCP; UDP drops what overflows the receiver's
socket buffer while the receiver is slower than the sender).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import json
import math
import os
import platform
import pstats
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _breakdown import breakdown, warm_sides
from _echo import EchoClient
from _timing import schedstat_ns

import clusterrpc
from clusterrpc import Keyring
from clusterrpc.cli.main import SAMPLE_VOTE
from clusterrpc.codecs import CallMessage
from clusterrpc.transports.engine import Messenger

try:
    import Pyro5.api
    import Pyro5.client
except ImportError:  # the bench extra is not installed: skip the Pyro5 rows
    Pyro5 = None  # type: ignore[assignment]

HERE = Path(__file__).resolve().parent
SERVERS_SCRIPT = HERE / "_servers.py"
CLUSTER = "BENCH/LOOPBACK"
SERVER_NODE = "bench-server"
EXPECTED = {"term": 42, "granted": True, "voter": SERVER_NODE}
IN_FLIGHT = 32
PYRO5_MISSING = "Pyro5 is not installed (pip install '.[bench]'): its rows are skipped"


@dataclass(frozen=True)
class Mode:
    repeats: int
    target: float       # seconds per timed repeat, roughly
    warmup: int         # calls before calibrating
    min_count: int
    max_count: int
    oneway_count: int   # one-way calls per burst

    @property
    def limit(self) -> float:
        """Hard time limit of one timed loop."""
        return 20 * self.target + 5.0


FULL = Mode(repeats=7, target=0.3, warmup=200, min_count=200, max_count=200_000,
            oneway_count=10_000)
QUICK = Mode(repeats=2, target=0.03, warmup=20, min_count=50, max_count=300, oneway_count=300)


# -- server processes ------------------------------------------------------------------------------


class Servers:
    """The server processes of one run. Each serves until its standard input closes; leaving
    the ``with`` block closes them all, and kills any that does not exit in time."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, dict[str, str]] = {}

    def start(self, name: str, kind: str, **extra: Any) -> None:
        config = {**self.config, **extra}
        self.processes[name] = subprocess.Popen(
            [sys.executable, str(SERVERS_SCRIPT), kind, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name, process in self.processes.items():
            if name in self.urls:
                continue
            assert process.stdout is not None
            left = deadline - time.monotonic()
            ready, _, _ = select.select([process.stdout], [], [], max(left, 0))
            line = process.stdout.readline() if ready else b""
            if not line:
                raise RuntimeError(f"server {name!r} did not start (exit status "
                                   f"{process.poll()}); see its messages above")
            self.urls[name] = json.loads(line)

    def stop(self, name: str, timeout: float = 10.0) -> None:
        process = self.processes.pop(name)
        self.urls.pop(name, None)
        try:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(2.0)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5.0)
        finally:
            if process.poll() is None:
                process.kill()
            if process.stdout is not None:
                process.stdout.close()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name in list(self.processes):
            self.stop(name, timeout=5.0)


# -- timing ----------------------------------------------------------------------------------------

Run = Callable[[int, float], tuple[int, float]]
"""``run(count, limit)``: make up to ``count`` calls within ``limit`` seconds; return how many
were made and the seconds they took."""


def call_loop(call: Callable[[], object]) -> Run:
    def run(count: int, limit: float) -> tuple[int, float]:
        clock = time.perf_counter
        started = clock()
        deadline = started + limit
        done = 0
        for done in range(1, count + 1):
            call()
            if not done & 31 and clock() > deadline:
                break
        return done, clock() - started

    return run


def calibrate(run: Run, mode: Mode) -> int:
    probe = mode.min_count
    done, seconds = run(probe, mode.limit)
    per_call = seconds / max(done, 1)
    return max(mode.min_count, min(mode.max_count, int(mode.target / max(per_call, 1e-9))))


@dataclass
class Result:
    rates: list[float] = field(default_factory=list)
    count: int = 0
    error: str | None = None
    # CPU per call in the fastest repeat: the client process's and the server's (microseconds
    # run, and waited for a CPU: the second shows other load on the machine).
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> float:
        return max(self.rates) if self.rates else 0.0

    def as_json(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        return {"calls_per_s": round(self.best, 1), "us_per_call": round(1e6 / self.best, 2),
                "median_calls_per_s": round(statistics.median(self.rates), 1),
                "calls_per_repeat": self.count, "repeats": len(self.rates),
                "cpu_us_per_call": {k: round(v, 2) for k, v in self.cpu.items()}}


def measure(contenders: dict[str, Run], mode: Mode, servers: dict[str, int] | None = None
            ) -> dict[str, Result]:
    """Warm up, calibrate, then run the contenders interleaved ``mode.repeats`` times.
    ``servers``: the server process id of each contender, for its CPU time per call."""
    servers = servers or {}
    me = os.getpid()
    results = {name: Result() for name in contenders}
    live: dict[str, Run] = {}
    for name, run in contenders.items():
        try:
            run(mode.warmup, mode.limit)
            results[name].count = calibrate(run, mode)
            live[name] = run
        except Exception as error:  # report it as the contender's result, run the others
            results[name].error = f"{type(error).__name__}: {error}"
    for _ in range(mode.repeats):
        for name, run in live.items():
            result = results[name]
            if result.error:
                continue
            server = servers.get(name)
            try:
                client_before = schedstat_ns(me)
                server_before = schedstat_ns(server) if server else (0, 0)
                done, seconds = run(result.count, mode.limit)
                client_after = schedstat_ns(me)
                server_after = schedstat_ns(server) if server else (0, 0)
            except Exception as error:
                result.error = f"{type(error).__name__}: {error}"
                continue
            rate = done / seconds
            if rate > result.best:
                result.cpu = {
                    "client": (client_after[0] - client_before[0]) / done / 1e3,
                    "client_waiting": (client_after[1] - client_before[1]) / done / 1e3,
                }
                if server:
                    result.cpu["server"] = (server_after[0] - server_before[0]) / done / 1e3
                    result.cpu["server_waiting"] = (server_after[1] - server_before[1]) / done / 1e3
            result.rates.append(rate)
    return results


# -- clients ---------------------------------------------------------------------------------------


class AsyncRunner:
    """One event loop kept for the whole run (so a Node client keeps its connections across
    repeats), driven from the main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.close()


class ThreadedLoad:
    """``threads`` threads, each with its own client made in that thread (Pyro5 proxies belong
    to one thread), making calls together when :meth:`run` says so."""

    def __init__(self, threads: int, make_client: Callable[[], tuple[Callable[[], object],
                                                                      Callable[[], object]]],
                 timeout: float) -> None:
        self.threads = threads
        self.timeout = timeout
        self.start_line = threading.Barrier(threads + 1, timeout=timeout)
        self.finish_line = threading.Barrier(threads + 1, timeout=timeout)
        self.per_thread = 0
        self.deadline = 0.0
        self.done = [0] * threads
        self.errors: list[str] = []
        self.stopping = False
        self.workers = [threading.Thread(target=self._work, args=(index, make_client),
                                         daemon=True) for index in range(threads)]
        for worker in self.workers:
            worker.start()

    def _work(self, index: int, make_client: Callable[[], tuple[Callable[[], object],
                                                                Callable[[], object]]]) -> None:
        call: Callable[[], object] | None = None
        close: Callable[[], object] | None = None
        try:
            call, close = make_client()
        except Exception as error:
            self.errors.append(f"{type(error).__name__}: {error}")
        try:
            while True:
                self.start_line.wait()
                if self.stopping:
                    return
                made = 0
                if call is not None:
                    clock, deadline = time.perf_counter, self.deadline
                    try:
                        for made in range(1, self.per_thread + 1):
                            call()
                            if not made & 15 and clock() > deadline:
                                break
                    except Exception as error:
                        self.errors.append(f"{type(error).__name__}: {error}")
                self.done[index] = made
                self.finish_line.wait()
        except threading.BrokenBarrierError:
            return
        finally:
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def run(self, count: int, limit: float) -> tuple[int, float]:
        self.per_thread = math.ceil(count / self.threads)
        started = time.perf_counter()
        self.deadline = started + limit
        self.start_line.wait()
        self.finish_line.wait()
        seconds = time.perf_counter() - started
        if self.errors:
            raise RuntimeError(self.errors[0])
        return sum(self.done), seconds

    def close(self) -> None:
        self.stopping = True
        with contextlib.suppress(threading.BrokenBarrierError):
            self.start_line.wait(timeout=5.0)
        for worker in self.workers:
            worker.join(timeout=5.0)


def check(value: object, what: str) -> None:
    if value != EXPECTED:
        raise RuntimeError(f"{what} answered {value!r}, expected {EXPECTED!r}")


def clusterrpc_client(url: str, keyring: Keyring) -> clusterrpc.Client:
    return clusterrpc.connect(url, keyring=keyring, cluster=CLUSTER, timeout=10.0)


def pyro5_proxy(uri: str) -> Any:
    proxy = Pyro5.api.Proxy(uri)
    proxy._pyroBind()  # connect now, like every other contender's warm-up does
    return proxy


# -- sections --------------------------------------------------------------------------------------


@dataclass
class Context:
    mode: Mode
    servers: Servers
    keyring: Keyring
    call_size: int
    reply_size: int
    runner: AsyncRunner
    cleanups: list[Callable[[], object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def url(self, server: str, scheme: str) -> str:
        return self.servers.urls[server][scheme]

    def pid(self, server: str) -> int:
        return self.servers.processes[server].pid


def sequential(ctx: Context, scheme: str) -> dict[str, Result]:
    """One blocking client, one call after another, over ``tcp`` or ``unix``."""
    contenders: dict[str, Run] = {}
    pids = {"clusterrpc": ctx.pid("clusterrpc")}

    client = clusterrpc_client(ctx.url("clusterrpc", scheme), ctx.keyring)
    ctx.cleanups.append(client.close)
    check(client.election.vote(SAMPLE_VOTE), "clusterrpc")
    contenders["clusterrpc"] = call_loop(lambda: client.election.vote(SAMPLE_VOTE))

    # The same server, called with the json codec: how much of the time is XML.
    json_client = clusterrpc.connect(ctx.url("clusterrpc", scheme), keyring=ctx.keyring,
                                     cluster=CLUSTER, timeout=10.0, codec="json")
    ctx.cleanups.append(json_client.close)
    check(json_client.election.vote(SAMPLE_VOTE), "clusterrpc (json)")
    contenders["clusterrpc, json codec"] = call_loop(
        lambda: json_client.election.vote(SAMPLE_VOTE))
    pids["clusterrpc, json codec"] = ctx.pid("clusterrpc")

    if scheme == "tcp":
        proxy = xmlrpc.client.ServerProxy(ctx.url("stdlib", "tcp"), allow_none=True,
                                          use_builtin_types=True)
        ctx.cleanups.append(proxy("close"))
        check(proxy.election.vote(SAMPLE_VOTE), "stdlib")
        contenders["stdlib xmlrpc"] = call_loop(lambda: proxy.election.vote(SAMPLE_VOTE))
        pids["stdlib xmlrpc"] = ctx.pid("stdlib")

    if Pyro5 is not None:
        pyro = pyro5_proxy(ctx.url(f"pyro5-{scheme}", scheme))
        ctx.cleanups.append(pyro._pyroRelease)
        check(pyro.vote(SAMPLE_VOTE), "Pyro5")
        contenders["Pyro5"] = call_loop(lambda: pyro.vote(SAMPLE_VOTE))
        pids["Pyro5"] = ctx.pid(f"pyro5-{scheme}")

    for kind in ("echo-blocking", "echo-asyncio"):
        echo = EchoClient(ctx.url(kind, scheme), ctx.call_size)
        ctx.cleanups.append(echo.close)
        name = f"echo ({kind.split('-')[1]} server)"
        contenders[name] = call_loop(echo.call)
        pids[name] = ctx.pid(kind)
    return measure(contenders, ctx.mode, pids)


def concurrent(ctx: Context) -> dict[str, Result]:
    """``IN_FLIGHT`` calls in flight at once over TCP."""
    contenders: dict[str, Run] = {}
    pids: dict[str, int] = {}
    timeout = ctx.mode.limit + 30.0

    node = clusterrpc.Node(f"bench-client-{os.getpid()}", cluster=CLUSTER, keyring=ctx.keyring,
                           timeout=30.0)
    ctx.runner.run(node.start())
    ctx.cleanups.append(lambda: ctx.runner.run(node.stop()))
    peer = node.peer(ctx.url("clusterrpc", "tcp"))
    check(ctx.runner.run(peer.election.vote(SAMPLE_VOTE)), "clusterrpc (Node)")

    def gather_run(count: int, limit: float) -> tuple[int, float]:
        per_caller = math.ceil(count / IN_FLIGHT)

        async def caller() -> int:
            deadline = time.perf_counter() + limit
            made = 0
            for made in range(1, per_caller + 1):
                await peer.election.vote(SAMPLE_VOTE)
                if not made & 15 and time.perf_counter() > deadline:
                    break
            return made

        async def burst() -> int:
            return sum(await asyncio.gather(*(caller() for _ in range(IN_FLIGHT))))

        started = time.perf_counter()
        done = ctx.runner.run(burst())
        return done, time.perf_counter() - started

    contenders[f"clusterrpc Node, gather of {IN_FLIGHT} on one peer"] = gather_run
    pids[f"clusterrpc Node, gather of {IN_FLIGHT} on one peer"] = ctx.pid("clusterrpc")

    def threaded(name: str, server: str,
                 make_client: Callable[[], tuple[Callable[[], object], Callable[[], object]]]
                 ) -> None:
        load = ThreadedLoad(IN_FLIGHT, make_client, timeout)
        ctx.cleanups.append(load.close)
        contenders[name] = load.run
        pids[name] = ctx.pid(server)

    def crpc_client() -> tuple[Callable[[], object], Callable[[], object]]:
        client = clusterrpc_client(ctx.url("clusterrpc", "tcp"), ctx.keyring)
        check(client.election.vote(SAMPLE_VOTE), "clusterrpc")
        return (lambda: client.election.vote(SAMPLE_VOTE)), client.close

    threaded(f"clusterrpc connect(), {IN_FLIGHT} threads", "clusterrpc", crpc_client)

    def stdlib_client() -> tuple[Callable[[], object], Callable[[], object]]:
        proxy = xmlrpc.client.ServerProxy(ctx.url("stdlib", "tcp"), allow_none=True,
                                          use_builtin_types=True)
        check(proxy.election.vote(SAMPLE_VOTE), "stdlib")
        return (lambda: proxy.election.vote(SAMPLE_VOTE)), proxy("close")

    threaded(f"stdlib xmlrpc, {IN_FLIGHT} threads", "stdlib", stdlib_client)

    if Pyro5 is not None:
        def pyro_client() -> tuple[Callable[[], object], Callable[[], object]]:
            proxy = pyro5_proxy(ctx.url("pyro5-tcp", "tcp"))
            check(proxy.vote(SAMPLE_VOTE), "Pyro5")
            return (lambda: proxy.vote(SAMPLE_VOTE)), proxy._pyroRelease

        threaded(f"Pyro5, {IN_FLIGHT} threads", "pyro5-tcp", pyro_client)
    return measure(contenders, ctx.mode, pids)


@dataclass
class OnewayResult:
    sent_rates: list[float] = field(default_factory=list)
    processed_rates: list[float] = field(default_factory=list)
    delivered_rates: list[float] = field(default_factory=list)
    sent: int = 0
    received: int = 0
    error: str | None = None
    client_cpu_s: float = 0.0  # the sender's process, while sending
    server_cpu_s: float = 0.0  # the receiver's process, from the burst's start to its count

    def as_json(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error}
        return {"sent_per_s": round(max(self.sent_rates, default=0.0), 1),
                "processed_per_s": round(max(self.processed_rates, default=0.0), 1),
                "delivered_per_s": round(max(self.delivered_rates, default=0.0), 1),
                "sent": self.sent, "received": self.received, "lost": self.sent - self.received,
                "repeats": len(self.sent_rates),
                "cpu_us_per_call": {"client": round(self.client_cpu_s / self.sent * 1e6, 2),
                                    "server": round(self.server_cpu_s / self.received * 1e6, 2)}
                if self.sent and self.received else {}}


@dataclass
class OnewaySender:
    send: Run
    stats: Callable[[], dict[str, Any]]
    reset: Callable[[], object]
    server: str


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a whole process, ended threads included (``/proc/PID/stat``, in clock
    ticks: fine for bursts of a second or so). Pyro5 runs each one-way call in a thread of
    its own, which :func:`cpu_ns` would miss once it ended."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(sender: OnewaySender, sent: int, limit: float = 10.0) -> dict[str, Any]:
    """The receiver's count once it stops growing (all sent calls arrived, or the rest are
    lost), asked with normal calls."""
    deadline = time.monotonic() + limit
    previous = -1
    while True:
        stats = sender.stats()
        if stats["received"] >= sent or stats["received"] == previous:
            return stats
        if time.monotonic() > deadline:
            return stats
        previous = stats["received"]
        time.sleep(0.1)


def retrying(call: Callable[[], Any], attempts: int = 5) -> Callable[[], Any]:
    """``call`` retried after a timeout (over UDP the query itself may be lost)."""
    def run() -> Any:
        for attempt in range(attempts):
            try:
                return call()
            except clusterrpc.CallTimeoutError:
                if attempt == attempts - 1:
                    raise
        return None

    return run


def oneway(ctx: Context) -> dict[str, OnewayResult]:
    senders: dict[str, OnewaySender] = {}
    for scheme in ("tcp", "udp"):
        client = clusterrpc.connect(ctx.url("clusterrpc", scheme), keyring=ctx.keyring,
                                    cluster=CLUSTER, timeout=2.0)
        ctx.cleanups.append(client.close)
        senders[f"clusterrpc connect() {scheme.upper()}"] = OnewaySender(
            send=call_loop(lambda client=client: client.oneway.election.cast(SAMPLE_VOTE)),
            stats=retrying(client.election.stats), reset=retrying(client.election.reset),
            server="clusterrpc",
        )  # fmt: skip

    node = clusterrpc.Node(f"bench-sender-{os.getpid()}", cluster=CLUSTER, keyring=ctx.keyring,
                           timeout=2.0)
    ctx.runner.run(node.start())
    ctx.cleanups.append(lambda: ctx.runner.run(node.stop()))
    for scheme in ("tcp", "udp"):
        peer = node.peer(ctx.url("clusterrpc", scheme))

        def node_send(count: int, limit: float, peer: clusterrpc.Peer = peer
                      ) -> tuple[int, float]:
            async def burst() -> int:
                clock = time.perf_counter
                deadline = clock() + limit
                made = 0
                for made in range(1, count + 1):
                    await peer.oneway.election.cast(SAMPLE_VOTE)
                    if not made & 31 and clock() > deadline:
                        break
                return made

            started = time.perf_counter()
            done = ctx.runner.run(burst())
            return done, time.perf_counter() - started

        senders[f"clusterrpc Node peer {scheme.upper()}"] = OnewaySender(
            send=node_send,
            stats=retrying(lambda peer=peer: ctx.runner.run(peer.election.stats())),
            reset=retrying(lambda peer=peer: ctx.runner.run(peer.election.reset())),
            server="clusterrpc",
        )  # fmt: skip

    if Pyro5 is not None:
        pyro = pyro5_proxy(ctx.url("pyro5-tcp", "tcp"))
        ctx.cleanups.append(pyro._pyroRelease)
        senders["Pyro5 @oneway TCP"] = OnewaySender(
            send=call_loop(lambda: pyro.cast(SAMPLE_VOTE)), stats=pyro.stats, reset=pyro.reset,
            server="pyro5-tcp",
        )  # fmt: skip

    mode = ctx.mode
    results = {name: OnewayResult() for name in senders}
    for name, sender in senders.items():  # warm-up
        try:
            sender.reset()
            sender.send(mode.warmup, mode.limit)
            settle(sender, mode.warmup)
        except Exception as error:
            results[name].error = f"{type(error).__name__}: {error}"
    for _ in range(mode.repeats):
        for name, sender in senders.items():
            result = results[name]
            if result.error:
                continue
            server = ctx.pid(sender.server)
            try:
                sender.reset()
                server_before = process_cpu_s(server)
                client_before = process_cpu_s(os.getpid())
                started = time.perf_counter()  # CLOCK_MONOTONIC: the server's clock too
                done, seconds = sender.send(mode.oneway_count, mode.limit)
                result.client_cpu_s += process_cpu_s(os.getpid()) - client_before
                stats = settle(sender, done)
                result.server_cpu_s += process_cpu_s(server) - server_before
            except Exception as error:
                result.error = f"{type(error).__name__}: {error}"
                continue
            result.sent += done
            result.received += stats["received"]
            result.sent_rates.append(done / seconds)
            span = stats["last"] - stats["first"]
            if stats["received"] > 1 and span > 0:
                result.processed_rates.append((stats["received"] - 1) / span)
            if stats["received"] and stats["last"] > started:
                result.delivered_rates.append(stats["received"] / (stats["last"] - started))
    return results


# -- reporting -------------------------------------------------------------------------------------


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def print_rates(title: str, results: dict[str, Result], reference: str, out: Any) -> None:
    print(f"\n{title}", file=out)
    print(f"  {'contender':<44} {'calls/s':>9} {'us/call':>8} {'ours/it':>8}"
          f" {'CPU us/call: client':>20} {'server':>7} {'(waited)':>9}", file=out)
    mine = results[reference].best
    for name, result in results.items():
        if result.error:
            print(f"  {name:<44} failed: {result.error}", file=out)
            continue
        ratio = "" if name == reference else f"{mine / result.best:.2f}x"
        cpu = result.cpu
        waited = cpu.get("client_waiting", 0.0) + cpu.get("server_waiting", 0.0)
        print(f"  {name:<44} {_rate(result.best):>9} {1e6 / result.best:>8.1f} {ratio:>8}"
              f" {cpu.get('client', 0.0):>20.1f} {cpu.get('server', 0.0):>7.1f}"
              f" {waited:>9.1f}", file=out)


def print_oneway(results: dict[str, OnewayResult], out: Any) -> None:
    print("\n4. One-way calls (bursts from one sender; the receiver counts what arrives)",
          file=out)
    print(f"  {'sender':<28} {'sent/s':>8} {'processed/s':>11} {'delivered/s':>11}"
          f" {'lost':>17} {'CPU us/call: client':>20} {'server':>7}", file=out)
    for name, result in results.items():
        if result.error:
            print(f"  {name:<28} failed: {result.error}", file=out)
            continue
        row = result.as_json()
        cpu = row.get("cpu_us_per_call", {})
        lost = f"{row['lost']:,} of {row['sent']:,}"
        print(f"  {name:<28} {_rate(row['sent_per_s']):>8} {_rate(row['processed_per_s']):>11}"
              f" {_rate(row['delivered_per_s']):>11} {lost:>17} {cpu.get('client', 0.0):>20.1f}"
              f" {cpu.get('server', 0.0):>7.1f}", file=out)


def stages(report: dict[str, Any], warm: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Where the CPU time of one sequential TCP call goes, per side: the bare echo's (system
    calls, loopback TCP, wake-ups, and on the server asyncio's loop: the asyncio echo); our
    Python measured warm in one process and split by a profile (``_breakdown.warm_sides``);
    and what remains of the processes' measured CPU — the same Python run cold, after each
    wake-up."""
    seq = report.get("sequential_tcp", {})
    ours = seq.get("clusterrpc", {}).get("cpu_us_per_call", {})
    echo = seq.get("echo (asyncio server)", {}).get("cpu_us_per_call", {})
    if not ours.get("server") or not echo.get("server"):
        return {}
    table: dict[str, Any] = {}
    for side in ("client", "server"):
        row = {key: round(value, 1) for key, value in warm[side].items()}
        row["echo"] = round(echo[side], 1)
        row["cold"] = round(ours[side] - echo[side] - warm[side]["warm"], 1)
        row["measured"] = round(ours[side], 1)
        table[side] = row
    table["wall_us"] = seq["clusterrpc"]["us_per_call"]
    return table


STAGE_ROWS = (
    ("echo", "the bare echo: system calls, loopback TCP, wake-ups, loop"),
    ("codec", "  codec: encode and decode (xmlrpc)"),
    ("envelope", "  envelope: header, HMAC-SHA256, replay window"),
    ("protocol", "  client API, call tracking, framing, dispatch, driver"),
    ("warm", "clusterrpc's Python, warm (one process, no sockets)"),
    ("cold", "the rest: the same Python run cold, after each wake-up"),
    ("measured", "measured (schedstat)"),
)


def print_stages(table: dict[str, Any], out: Any) -> None:
    client, server = table["client"], table["server"]
    print("\nWhere a sequential TCP call's CPU goes (us per call)          client  server",
          file=out)
    for key, what in STAGE_ROWS:
        print(f"  {what:<58} {client[key]:>7.1f} {server[key]:>7.1f}", file=out)
    idle = table["wall_us"] - client["measured"] - server["measured"]
    print(f"  wall time {table['wall_us']:.1f} us = client + server CPU + {idle:.1f} us "
          "(wake-up latency, both waiting)", file=out)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, measured."""
    found: list[dict[str, Any]] = []

    def rate(section: str, name: str, key: str = "calls_per_s") -> float | None:
        value = report.get(section, {}).get(name, {})
        return value.get(key) if isinstance(value, dict) else None

    ours = rate("sequential_tcp", "clusterrpc")
    stdlib = rate("sequential_tcp", "stdlib xmlrpc")
    pyro = rate("sequential_tcp", "Pyro5")
    echoes = {name: rate("sequential_tcp", name) for name in
              ("echo (blocking server)", "echo (asyncio server)")}
    floor_name, floor = max(((n, r) for n, r in echoes.items() if r),
                            key=lambda item: item[1], default=(None, None))

    def add(what: str, measured: float | None, wanted: float, against: str) -> None:
        found.append({"target": what, "against": against,
                      "ratio": None if measured is None else round(measured, 3),
                      "wanted": wanted, "met": None if measured is None else measured >= wanted})

    if ours:
        add("sequential TCP calls/s vs stdlib", ours / stdlib if stdlib else None, 4.0,
            "stdlib xmlrpc")
        add("sequential TCP calls/s vs Pyro5", ours / pyro if pyro else None, 3.0, "Pyro5")
        add("sequential TCP calls/s vs bare socket echo", ours / floor if floor else None, 0.5,
            floor_name or "echo")
    oneway = report.get("oneway", {})
    pyro_ow = oneway.get("Pyro5 @oneway TCP", {})
    for name in ("clusterrpc connect() TCP", "clusterrpc connect() UDP"):
        mine = oneway.get(name, {})
        for key in ("sent_per_s", "processed_per_s", "delivered_per_s"):
            if mine.get(key) and pyro_ow.get(key):
                add(f"one-way {key.replace('_per_s', '')}/s, {name} vs Pyro5",
                    mine[key] / pyro_ow[key], 1.0, "Pyro5 @oneway TCP")
    return found


# -- profiling -------------------------------------------------------------------------------------


def print_profile(path: Path, calls: int, title: str, out: Any, top: int = 30) -> None:
    stats = pstats.Stats(str(path))
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    total = sum(row[1][2] for row in rows)
    print(f"\n{title}: {path}: {total / calls * 1e6:.1f} us per call under the profiler, wall "
          f"clock (the profiler inflates small functions, and socket calls include waiting for "
          f"the peer: compare shares, not absolutes)", file=out)
    print(f"  {'self us/call':>12} {'cum us/call':>12} {'n/call':>7}  function", file=out)
    for (filename, line, function), (_cc, ncalls, tottime, cumtime, _callers) in rows[:top]:
        where = filename
        for marker in ("site-packages/", "clusterrpc/", "lib/python3"):
            if marker in filename:
                where = filename[filename.index(marker):]
                break
        print(f"  {tottime / calls * 1e6:>12.2f} {cumtime / calls * 1e6:>12.2f} "
              f"{ncalls / calls:>7.2f}  {where}:{line}({function})", file=out)


def profile(args: argparse.Namespace, base_config: dict[str, Any], keyring: Keyring) -> int:
    out_dir = Path(args.profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    calls = 300 if args.quick else 20_000
    server_seq = out_dir / "server-sequential-tcp.prof"
    server_ow = out_dir / "server-oneway-tcp.prof"
    client_seq = out_dir / "client-sequential-tcp.prof"
    client_ow = out_dir / "client-oneway-tcp.prof"
    with Servers(base_config) as servers:
        servers.start("seq", "clusterrpc", profile=str(server_seq))
        servers.wait_ready()
        with clusterrpc_client(servers.urls["seq"]["tcp"], keyring) as client:
            for _ in range(200):
                client.election.vote(SAMPLE_VOTE)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(calls):
                client.election.vote(SAMPLE_VOTE)
            profiler.disable()
            profiler.dump_stats(str(client_seq))
        servers.stop("seq")  # the server writes its profile as it stops
        servers.start("oneway", "clusterrpc", profile=str(server_ow))
        servers.wait_ready()
        with clusterrpc_client(servers.urls["oneway"]["tcp"], keyring) as client:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(calls):
                client.oneway.election.cast(SAMPLE_VOTE)
            profiler.disable()
            profiler.dump_stats(str(client_ow))
            stats = client.election.stats()
        servers.stop("oneway")
    out = sys.stdout
    print("Stage by stage, in one process (best of 5 rounds of 2,000):", file=out)
    reply = {"term": SAMPLE_VOTE["term"], "granted": True, "voter": SERVER_NODE}
    for stage, micros in breakdown(keyring, CLUSTER, SAMPLE_VOTE, reply):
        print(f"  {micros:8.2f} us  {stage}", file=out)
    print(f"\n{calls} calls each; one-way calls received: {stats['received']}", file=out)
    print_profile(client_seq, calls, "Client, sequential calls over TCP", out)
    print_profile(server_seq, calls, "Server, sequential calls over TCP", out)
    print_profile(client_ow, calls, "Client, one-way calls over TCP", out)
    print_profile(server_ow, calls, "Server, one-way calls over TCP", out)
    return 0


# -- main ------------------------------------------------------------------------------------------


def packet_sizes(keyring: Keyring) -> tuple[int, int]:
    """The sizes of clusterrpc's call and reply packets for this payload (as framed on a
    stream: + 4 bytes), with names as long as the real client's and server's."""
    host = socket.gethostname().split(".")[0][:64] or "host"
    client = Messenger(node=f"client.{host}.{os.getpid()}.000000", cluster=CLUSTER,
                       keyring=keyring)
    server = Messenger(node=SERVER_NODE, cluster=CLUSTER, keyring=keyring)
    call = client.seal_call(1, CallMessage("election.vote", (SAMPLE_VOTE,)))
    reply = server.seal_answer(1, client.codec.codec_id, EXPECTED)
    return len(call), len(reply)


@contextlib.contextmanager
def private_tmpdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="clusterrpc-bench-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_benchmark(args: argparse.Namespace, base_config: dict[str, Any], keyring: Keyring,
                  out: Any) -> dict[str, Any]:
    mode = QUICK if args.quick else FULL
    if args.repeats:
        mode = Mode(**{**mode.__dict__, "repeats": args.repeats})
    call_size, reply_size = packet_sizes(keyring)
    notes: list[str] = []
    if Pyro5 is None:
        notes.append(PYRO5_MISSING)
    else:
        Pyro5.config.SOCK_NODELAY = True  # the same on the client side as on the server's
    notes.append("stdlib xmlrpc has no Unix-socket transport (ServerProxy speaks HTTP over "
                 "TCP only): no stdlib row over Unix sockets")
    notes.append("only clusterrpc authenticates its packets (hmac-sha256); stdlib xmlrpc and "
                 "Pyro5 send them unauthenticated, the echo sends opaque bytes")
    report: dict[str, Any] = {
        "meta": {
            "date": dt.date.today().isoformat(),
            "command": "python bench/bench_rpc.py" + (" --quick" if args.quick else ""),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "pyro5": getattr(Pyro5, "__version__", None),
            "clusterrpc": os.path.dirname(clusterrpc.__file__),
            "mode": mode.__dict__,
            "call_frame_bytes": call_size + 4,
            "reply_frame_bytes": reply_size + 4,
            "in_flight": IN_FLIGHT,
        },
        "notes": notes,
    }
    print(f"Python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs), "
          f"{mode.repeats} interleaved repeats of ~{mode.target:g} s each, best kept; "
          f"clusterrpc frames: call {call_size + 4} B, reply {reply_size + 4} B", file=out)
    for note in notes:
        print(f"note: {note}", file=out)

    config = {**base_config, "call_size": call_size, "reply_size": reply_size}
    sections = set(args.only or ("tcp", "unix", "concurrent", "oneway"))
    runner = AsyncRunner()
    with Servers(config) as servers:
        ctx = Context(mode=mode, servers=servers, keyring=keyring, call_size=call_size,
                      reply_size=reply_size, runner=runner, notes=notes)
        try:
            servers.start("clusterrpc", "clusterrpc")
            servers.start("stdlib", "stdlib")
            if Pyro5 is not None:
                servers.start("pyro5-tcp", "pyro5")
                servers.start("pyro5-unix", "pyro5",
                              unix=os.path.join(base_config["tmpdir"], "pyro5.sock"))
            servers.start("echo-blocking", "echo-blocking")
            servers.start("echo-asyncio", "echo-asyncio")
            servers.wait_ready()
            if "tcp" in sections:
                results = sequential(ctx, "tcp")
                report["sequential_tcp"] = {n: r.as_json() for n, r in results.items()}
                print_rates("1. Sequential calls over TCP, one blocking client", results,
                            "clusterrpc", out)
                reply = {"term": SAMPLE_VOTE["term"], "granted": True, "voter": SERVER_NODE}
                table = stages(report, warm_sides(keyring, CLUSTER, SAMPLE_VOTE, reply))
                if table:
                    report["stages_tcp"] = table
                    print_stages(table, out)
            if "unix" in sections:
                results = sequential(ctx, "unix")
                report["sequential_unix"] = {n: r.as_json() for n, r in results.items()}
                print_rates("2. Sequential calls over a Unix socket, one blocking client "
                            "(stdlib: no Unix transport)", results, "clusterrpc", out)
            if "concurrent" in sections:
                results = concurrent(ctx)
                report["concurrent_tcp"] = {n: r.as_json() for n, r in results.items()}
                print_rates(f"3. Throughput with {IN_FLIGHT} calls in flight over TCP",
                            results, next(iter(results)), out)
            if "oneway" in sections:
                ow = oneway(ctx)
                report["oneway"] = {n: r.as_json() for n, r in ow.items()}
                print_oneway(ow, out)
        finally:
            for cleanup in reversed(ctx.cleanups):
                with contextlib.suppress(Exception):
                    cleanup()
            runner.close()
    report["targets"] = targets(report)
    if report["targets"]:
        print("\nTargets", file=out)
        for target in report["targets"]:
            ratio = "n/a" if target["ratio"] is None else f"{target['ratio']:.2f}x"
            met = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
            print(f"  {target['target']:<58} {ratio:>7} (want >= {target['wanted']:g}x): "
                  f"{met}", file=out)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: a few hundred calls per contender, rough figures")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="also write every figure as JSON to PATH ('-' or no PATH: to "
                             "standard output, and the table to standard error)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 7; quick 2)")
    parser.add_argument("--only", action="append",
                        choices=("tcp", "unix", "concurrent", "oneway"),
                        help="run only these sections (repeatable)")
    parser.add_argument("--profile", metavar="DIR",
                        help="instead of the benchmark: cProfile clusterrpc's server and client "
                             "(sequential and one-way calls over TCP), write .prof files to DIR "
                             "and print the hot spots")
    args = parser.parse_args()
    out = sys.stderr if args.json == "-" else sys.stdout
    with private_tmpdir() as tmpdir:
        key = Keyring.generate("hmac-sha256", key_id="bench")
        keyring = Keyring(cluster=CLUSTER, keys=[key], signing_key_id="bench")
        keyring_path = os.path.join(tmpdir, "bench.keys")
        keyring.save(keyring_path)
        base_config = {"tmpdir": tmpdir, "keyring": keyring_path, "cluster": CLUSTER}
        if args.profile:
            return profile(args, base_config, keyring)
        report = run_benchmark(args, base_config, keyring, out)
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
