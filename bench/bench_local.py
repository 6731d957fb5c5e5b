"""Local API benchmark: sequential calls/s of a cluster handle over a ``USER`` socket, beside a
bare Python Unix-socket echo of the same bytes and D-Bus; then the rate and latency of events
from a local service to one client. Each server runs in its own process, side by side in one
run.

Run from the repository root after ``pip install '.[bench]'`` (``jeepney``) with the Debian
package ``dbus-daemon`` installed (``apt-get install dbus-daemon``; without either the D-Bus row
is skipped and the output says why)::

    python bench/bench_local.py                 # about a minute
    python bench/bench_local.py --quick         # a smoke run
    python bench/bench_local.py --json out.json # the table, and every figure as JSON

Every call is ``election.vote(SAMPLE_VOTE)`` — the 9-field election-vote struct of
``clusterrpc roundtrip`` — answered with a 3-field struct. Every socket is in a private
temporary directory that the run removes. The contenders:

* **clusterrpc**: a ``Node`` serving the service with ``serve_local(..., name="election")``
  on its ``USER`` socket; the client is a blocking ``clusterrpc.local.get_cluster_handle``
  (``none`` scheme: the kernel's ``SO_PEERCRED`` vouches for the peer), calling
  ``handle.election.vote(SAMPLE_VOTE)``; a second row uses the ``json`` codec (the headline
  ratios use the default ``xmlrpc`` codec);
* **echo** (the floor): a blocking Unix-socket client sends a frame exactly as large as the
  handle's call frame and reads one as large as the server's reply; the server is a
  thread-per-connection blocking echo that reads a whole frame before it answers;
* **D-Bus**: a private ``dbus-daemon --session`` started by the benchmark on a socket of its
  own, a ``jeepney`` blocking service that owns a bus name and answers method ``Vote`` with
  signature ``a{sv}`` (D-Bus has no nil and no datetime: the datetime travels as its ISO 8601
  string, the nil field is left out), and a ``jeepney`` blocking client's
  ``send_and_get_reply`` — the message goes through the bus daemon, as D-Bus calls do.

Events: the client registers a cookie and asks the service for a burst of N events (the
service writes them as fast as the connection takes them, pausing while the connection's
bounded event queue is half full, so the client is never evicted); events/s is N over the time
from the request to the last callback. Latency: the service sends events paced apart (one per
millisecond), each carrying its send time from ``CLOCK_MONOTONIC`` (one clock for every
process on Linux); the callback subtracts it from its own reading: p50 and p99 of send →
callback.

Method: as ``bench_rpc.py`` — warm-up, a calibration picking a call count lasting about
``--target`` seconds, then ``--repeats`` interleaved repeats, best rate kept. Every loop is
bounded by its count; every wait by a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _echo import EchoClient  # noqa: E402
from _servers import announce, wait_for_stdin_eof  # noqa: E402
from _timing import measure  # noqa: E402

import clusterrpc  # noqa: E402
from clusterrpc import local  # noqa: E402
from clusterrpc.cli.main import SAMPLE_VOTE  # noqa: E402
from clusterrpc.codecs import CallMessage  # noqa: E402
from clusterrpc.rpc import current_call, remote  # noqa: E402
from clusterrpc.transports.engine import Messenger  # noqa: E402

CLUSTER = "BENCH"
SERVER_NODE = "bench-server"
EXPECTED = {"term": 42, "granted": True, "voter": SERVER_NODE}
BUS_NAME = "org.clusterrpc.Bench"
OBJECT_PATH = "/org/clusterrpc/Bench"
INTERFACE = "org.clusterrpc.Bench"
START_LIMIT = 20.0
"""Seconds a server process may take to announce itself."""
WAIT_LIMIT = 60.0
"""Seconds any one event burst or paced run may take."""


def monotonic() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# -- servers (each in its own process: ``bench_local.py --serve KIND CONFIG``) -----------------


class BenchService:
    """``election``: the vote of every benchmark, and event bursts for the caller."""

    @remote
    def vote(self, ballot: dict[str, Any]) -> dict[str, Any]:
        return {"term": ballot["term"], "granted": True, "voter": SERVER_NODE}

    @remote
    async def burst(self, cookie: int, count: int) -> int:
        """Send ``count`` events for ``cookie`` as fast as the connection takes them."""
        client = current_call().client
        if client is None:
            raise clusterrpc.Fault(1, "events are for local clients")
        for number in range(count):
            if client.notify(cookie, number) is None:
                return number
            # Stay under the eviction bound (1,024 queued events): let the socket drain.
            # (polled: LocalClient offers no "queue drained" event to wait on)
            while client.events_queued >= 512 and not client.is_closed:  # noqa: ASYNC110
                await asyncio.sleep(0.0005)
        return count

    @remote
    async def paced(self, cookie: int, count: int, interval: float) -> int:
        """Send ``count`` events ``interval`` seconds apart, each carrying its send time."""
        client = current_call().client
        if client is None:
            raise clusterrpc.Fault(1, "events are for local clients")
        for _ in range(count):
            if client.notify(cookie, monotonic()) is None:
                break
            await asyncio.sleep(interval)
        return count


def serve_clusterrpc(config: dict[str, Any]) -> None:
    async def main() -> None:
        node = clusterrpc.Node(SERVER_NODE, cluster=CLUSTER, keyring=None, insecure=True,
                               local_dir=config["local_dir"])
        node.serve_local(BenchService(), name="election", domains=[local.USER])
        async with node:
            announce({"local_dir": config["local_dir"]})
            await asyncio.to_thread(wait_for_stdin_eof)

    asyncio.run(main())


def _read_exactly(conn: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        data = conn.recv(size - len(chunks))
        if not data:
            return None
        chunks += data
    return bytes(chunks)


def serve_echo(config: dict[str, Any]) -> None:
    reply = config["reply_size"].to_bytes(4, "big") + os.urandom(config["reply_size"])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(config["path"])
    listener.listen(64)

    def connection(conn: socket.socket) -> None:
        with conn:
            while True:
                header = _read_exactly(conn, 4)
                if header is None or _read_exactly(conn, int.from_bytes(header, "big")) is None:
                    return
                conn.sendall(reply)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=connection, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    announce({"path": config["path"]})
    wait_for_stdin_eof()
    listener.close()


def dbus_body(ballot: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """``ballot`` as a D-Bus ``a{sv}`` (no nil: left out; datetime: its ISO 8601 string)."""
    body: dict[str, tuple[str, Any]] = {}
    for name, value in ballot.items():
        if value is None:
            continue
        if isinstance(value, bool):
            body[name] = ("b", value)
        elif isinstance(value, int):
            body[name] = ("x", value)
        elif isinstance(value, float):
            body[name] = ("d", value)
        elif isinstance(value, bytes):
            body[name] = ("ay", value)
        elif isinstance(value, dt.datetime):
            body[name] = ("s", value.isoformat())
        else:
            body[name] = ("s", str(value))
    return body


def serve_dbus(config: dict[str, Any]) -> None:
    from jeepney import MessageType, new_error, new_method_return  # noqa: PLC0415
    from jeepney.bus_messages import message_bus  # noqa: PLC0415
    from jeepney.io.blocking import open_dbus_connection  # noqa: PLC0415

    conn = open_dbus_connection(bus=config["address"])
    reply = conn.send_and_get_reply(message_bus.RequestName(BUS_NAME))
    if reply.body[0] != 1:  # DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER
        raise RuntimeError(f"could not own {BUS_NAME}: {reply.body}")
    stop = threading.Event()
    threading.Thread(target=lambda: (wait_for_stdin_eof(), stop.set()), daemon=True).start()
    announce({"address": config["address"]})
    while not stop.is_set():
        try:
            message = conn.receive(timeout=0.5)
        except TimeoutError:
            continue
        except (OSError, EOFError):
            return
        if message.header.message_type != MessageType.method_call:
            continue
        if message.header.fields.get(3) == "Vote":  # HeaderFields.member
            (ballot,) = message.body
            answer = {"term": ("x", ballot["term"][1]), "granted": ("b", True),
                      "voter": ("s", SERVER_NODE)}
            conn.send(new_method_return(message, "a{sv}", (answer,)))
        else:
            conn.send(new_error(message, "org.freedesktop.DBus.Error.UnknownMethod"))
    conn.close()


SERVERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "clusterrpc": serve_clusterrpc, "echo": serve_echo, "dbus": serve_dbus,
}


# -- the benchmark's side -----------------------------------------------------------------------


class Processes:
    """Server processes of this run: started with a JSON line of their own, told to stop by
    closing their standard input, killed if they do not."""

    def __init__(self) -> None:
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, kind: str, config: dict[str, Any]) -> dict[str, Any]:
        process = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        self.running[name] = process
        return json.loads(read_line(process, f"the {name} server"))

    def pid(self, name: str) -> int:
        return self.running[name].pid

    def close(self) -> None:
        for process in self.running.values():
            with contextlib.suppress(OSError):
                if process.stdin is not None:
                    process.stdin.close()
        for process in self.running.values():
            try:
                process.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        self.running.clear()


def read_line(process: subprocess.Popen[bytes], what: str) -> str:
    """The first line ``process`` prints, within :data:`START_LIMIT` seconds."""
    assert process.stdout is not None
    found: list[bytes] = []
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline()),  # type: ignore[union-attr]
                              daemon=True)
    reader.start()
    reader.join(START_LIMIT)
    if not found or not found[0]:
        process.kill()
        raise RuntimeError(f"{what} did not start (exit status {process.wait()})")
    return found[0].decode()


def frame_sizes() -> tuple[int, int]:
    """The handle's call frame and the server's reply frame for this payload (4-byte length
    prefix + packet), with sender names as long as the real ones."""
    client = Messenger(node=f"local:{os.getpid()}:1", cluster=CLUSTER, keyring=None,
                       insecure=True)
    server = Messenger(node=SERVER_NODE, cluster=CLUSTER, keyring=None, insecure=True)
    call = client.seal_call(2, CallMessage("election.vote", (SAMPLE_VOTE,)), timeout=30.0)
    reply = server.seal_answer(2, client.codec.codec_id, EXPECTED)
    return 4 + len(call), 4 + len(reply)


@contextlib.contextmanager
def dbus_daemon(tmpdir: str) -> Iterator[str]:
    """A private session bus on a socket in ``tmpdir``; yields its address."""
    binary = shutil.which("dbus-daemon")
    if binary is None:
        raise RuntimeError("dbus-daemon is not installed (Debian: apt-get install dbus-daemon)")
    process = subprocess.Popen(
        [binary, "--session", "--nofork", "--nopidfile", "--print-address=1",
         f"--address=unix:path={tmpdir}/bus"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        address = read_line(process, "dbus-daemon").strip()
        yield address
    finally:
        process.terminate()
        try:
            process.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


class DBusClient:
    def __init__(self, address: str) -> None:
        from jeepney import DBusAddress  # noqa: PLC0415
        from jeepney.io.blocking import open_dbus_connection  # noqa: PLC0415

        self.conn = open_dbus_connection(bus=address)
        self.target = DBusAddress(OBJECT_PATH, bus_name=BUS_NAME, interface=INTERFACE)

    def call(self) -> dict[str, Any]:
        from jeepney import new_method_call  # noqa: PLC0415

        message = new_method_call(self.target, "Vote", "a{sv}", (dbus_body(SAMPLE_VOTE),))
        reply = self.conn.send_and_get_reply(message, timeout=10.0)
        return {name: value for name, (_, value) in reply.body[0].items()}

    def close(self) -> None:
        self.conn.close()


def checked(call: Callable[[], Any], what: str) -> Callable[[], Any]:
    answer = call()
    if answer != EXPECTED and what != "echo":
        raise RuntimeError(f"{what} answered {answer!r}, expected {EXPECTED!r}")
    return call


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class EventSink:
    """A cookie's callback that counts events, or records send → callback latencies."""

    def __init__(self) -> None:
        self.count = 0
        self.expected = 0
        self.last = 0.0
        self.latencies: list[float] = []
        self.done = threading.Event()

    def expect(self, count: int) -> None:
        self.count = 0
        self.expected = count
        self.latencies = []
        self.done.clear()

    def counted(self, event: local.LocalEvent) -> None:
        self.count += 1
        if self.count == self.expected:
            self.last = time.perf_counter()
            self.done.set()

    def stamped(self, event: local.LocalEvent) -> None:
        self.latencies.append(monotonic() - float(event.payload))
        if len(self.latencies) == self.expected:
            self.done.set()


def event_figures(local_dir: str, *, burst: int, paced: int, repeats: int) -> dict[str, Any]:
    with local.get_cluster_handle(CLUSTER, local.USER, local_dir=local_dir,
                                  timeout=WAIT_LIMIT) as handle:
        sink = EventSink()
        counting = handle.events.register(sink.counted)
        best = 0.0
        for _ in range(repeats + 1):  # the first run warms up
            sink.expect(burst)
            started = time.perf_counter()
            handle.election.burst(counting, burst)
            if not sink.done.wait(WAIT_LIMIT):
                raise RuntimeError(f"only {sink.count} of {burst} events arrived")
            best = max(best, burst / (sink.last - started))
        handle.events.cancel(counting)
        stamping = handle.events.register(sink.stamped)
        sink.expect(paced)
        handle.election.paced(stamping, paced, 0.001)
        if not sink.done.wait(WAIT_LIMIT):
            raise RuntimeError(f"only {len(sink.latencies)} of {paced} paced events arrived")
        latencies = sink.latencies
    return {"events_per_s": best, "burst": burst, "paced": paced,
            "latency_p50_us": percentile(latencies, 0.50) * 1e6,
            "latency_p99_us": percentile(latencies, 0.99) * 1e6,
            "latency_max_us": max(latencies) * 1e6}


def run(args: argparse.Namespace) -> dict[str, Any]:
    repeats = args.repeats or (2 if args.quick else 7)
    target = args.target or (0.05 if args.quick else 0.5)
    call_size, reply_size = frame_sizes()
    report: dict[str, Any] = {
        "meta": {"python": platform.python_version(), "machine": platform.machine(),
                 "cpus": os.cpu_count(), "clusterrpc": clusterrpc.__version__,
                 "call_frame_bytes": call_size, "reply_frame_bytes": reply_size,
                 "repeats": repeats, "target_s": target},
        "notes": [],
    }
    processes = Processes()
    cleanups: list[Callable[[], object]] = []
    tmpdir = tempfile.mkdtemp(prefix="clusterrpc-bench-local-")
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(processes.close)  # before the bus daemon they talk to stops
            local_dir = os.path.join(tmpdir, "run")
            processes.start("clusterrpc", "clusterrpc", {"local_dir": local_dir})
            processes.start("echo", "echo", {"path": os.path.join(tmpdir, "echo.sock"),
                                             "reply_size": reply_size - 4})
            handle = stack.enter_context(local.get_cluster_handle(
                CLUSTER, local.USER, local_dir=local_dir, timeout=10.0))
            json_handle = stack.enter_context(local.get_cluster_handle(
                CLUSTER, local.USER, local_dir=local_dir, timeout=10.0, codec="json"))
            contenders: dict[str, Callable[[], Any]] = {
                "clusterrpc": checked(lambda: handle.election.vote(SAMPLE_VOTE), "clusterrpc"),
                "clusterrpc, json codec": checked(
                    lambda: json_handle.election.vote(SAMPLE_VOTE), "clusterrpc"),
            }
            echo = EchoClient(f"unix://{tmpdir}/echo.sock", call_size - 4)
            cleanups.append(echo.close)
            contenders["echo (blocking Unix socket)"] = checked(echo.call, "echo")
            try:
                import jeepney  # noqa: F401, PLC0415

                address = stack.enter_context(dbus_daemon(tmpdir))
                processes.start("dbus", "dbus", {"address": address})
                dbus = DBusClient(address)
                cleanups.append(dbus.close)
                contenders["D-Bus (jeepney, via dbus-daemon)"] = checked(dbus.call, "D-Bus")
            except ImportError:
                report["notes"].append("D-Bus skipped: jeepney is not installed "
                                       "(pip install '.[bench]')")
            except (RuntimeError, OSError) as error:  # no bus daemon, or it refused us
                report["notes"].append(f"D-Bus skipped: {error}")
            best = measure(contenders, repeats, target)
            report["sequential"] = {name: {"calls_per_s": 1.0 / seconds,
                                           "us_per_call": seconds * 1e6}
                                    for name, seconds in best.items()}
            ours = report["sequential"]["clusterrpc"]["calls_per_s"]
            ratios = {"vs echo": ours / report["sequential"]["echo (blocking Unix socket)"][
                "calls_per_s"]}
            dbus_row = report["sequential"].get("D-Bus (jeepney, via dbus-daemon)")
            if dbus_row is not None:
                ratios["vs D-Bus"] = ours / dbus_row["calls_per_s"]
            report["ratios"] = ratios
            report["goals"] = [
                {"goal": "clusterrpc >= 0.6 x bare Unix echo", "ratio": ratios["vs echo"],
                 "met": ratios["vs echo"] >= 0.6},
            ]
            if "vs D-Bus" in ratios:
                report["goals"].append({"goal": "clusterrpc >= 2 x D-Bus",
                                        "ratio": ratios["vs D-Bus"],
                                        "met": ratios["vs D-Bus"] >= 2.0})
            report["events"] = event_figures(
                local_dir, burst=2_000 if args.quick else 50_000,
                paced=200 if args.quick else 2_000, repeats=repeats)
            for cleanup in cleanups:
                cleanup()
    finally:
        processes.close()  # idempotent: what the stack did not reach
        shutil.rmtree(tmpdir, ignore_errors=True)
    return report


def print_report(report: dict[str, Any], out: Any) -> None:
    meta = report["meta"]
    out.write(f"clusterrpc {meta['clusterrpc']} local API benchmark - Python {meta['python']}, "
              f"{meta['cpus']} CPUs; call frame {meta['call_frame_bytes']} B, reply frame "
              f"{meta['reply_frame_bytes']} B\n\n")
    out.write(f"{'SEQUENTIAL CALLS':<36} {'CALLS/S':>10} {'US/CALL':>9}\n")
    for name, row in report["sequential"].items():
        out.write(f"{name:<36} {row['calls_per_s']:>10,.0f} {row['us_per_call']:>9.1f}\n")
    out.write("\n")
    for goal in report["goals"]:
        out.write(f"{goal['goal']:<36} {goal['ratio']:>6.2f}  "
                  f"{'met' if goal['met'] else 'MISSED'}\n")
    events = report["events"]
    out.write(f"\nevents to one client: {events['events_per_s']:,.0f}/s "
              f"(bursts of {events['burst']:,}); delivery latency p50 "
              f"{events['latency_p50_us']:.0f} us, p99 {events['latency_p99_us']:.0f} us, "
              f"max {events['latency_max_us']:.0f} us ({events['paced']:,} paced events)\n")
    for note in report["notes"]:
        out.write(f"note: {note}\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few calls each")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="write every figure as JSON to PATH (or standard output: '-')")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 7; quick 2)")
    parser.add_argument("--target", type=float,
                        help="seconds per timed loop (default 0.5; quick 0.05)")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, config = args.serve
        SERVERS[kind](json.loads(config))
        sys.stdout.flush()
        os._exit(0)  # not sys.exit: a daemon thread may still be reading standard input
    report = run(args)
    if args.json == "-":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(report, sys.stdout)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
