"""``clusterrpc demo [--json] [--keep DIR] [--timeout SECONDS]``: the whole system on one
machine, in one command.

The demo plays a tiny service manager for three real node daemons on loopback and prints what
happens, one line per step:

1. It makes a private directory (mode 0700, under ``/tmp`` so that Unix socket paths stay
   short), a shared keyring for cluster ``DEMO`` (``hmac-sha256``) and three node
   configurations ``n1``-``n3``: each listens on ``udp://127.0.0.1:PORT`` (a free port) and
   ``tcp://127.0.0.1:0``, joins the other two through ``[membership]`` seeds, votes in an
   ``[election]`` of the three, and serves ``clusterrpc.local.examples:Locks`` to local
   programs under a ``local_dir`` of its own. Each daemon (``python -m clusterrpc daemon
   --config nN.toml``) gets a ``$NOTIFY_SOCKET`` datagram socket of its own, which the demo
   binds; the step ends when all three sent ``READY=1`` (``spec/systemd.md``).
2. It polls ``membership.members()`` on every node, signed with the keyring, until each sees
   all three ``alive``, and prints the views.
3. It polls ``election.status()`` until the three agree on one leader and term.
4. A local program (this process) opens two cluster handles in the ``USER`` domain on the
   leader's node: the first takes ``locks.acquire("demo-lock")``, the second sees it held
   (``locks.holder``), the first releases it.
5. It kills the leader with SIGKILL and times how long the two survivors take to agree on a
   new leader in a higher term.
6. It stops the survivors with SIGTERM, checks that both exit 0, and removes the directory
   (unless ``--keep DIR``: then the configurations, keyring, daemon logs and election state
   stay in DIR, which must be empty or not exist).

Every wait is bounded (``--timeout``, default 20 s a step): a step that does not happen in time
ends the demo with a message naming the step, what was last seen, and the last lines of the
daemons' logs (exit status 4; 1 for a daemon that exits or answers wrongly). The daemons are
killed whatever ends the demo (Ctrl-C and SIGTERM included). All traffic stays on 127.0.0.1;
nothing uses multicast. ``--json`` prints one JSON object per step instead of the lines.

:func:`run_demo` is the same as a function, and :func:`main` runs ``demo`` on its own
(``python -m clusterrpc.cli.demo``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import select
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, TypeVar

import clusterrpc
from clusterrpc.cli.exits import EXIT_FAULT, EXIT_OK, EXIT_TIMEOUT, UsageError, status_of
from clusterrpc.cli.rpc import _timeout  # the same rule as every --timeout
from clusterrpc.client import Client, connect
from clusterrpc.errors import ClusterRPCError
from clusterrpc.keyring import Keyring
from clusterrpc.local.paths import SYSTEM, USER, socket_path

__all__ = ["CLUSTER", "LOCK", "NAMES", "STEPS", "DemoError", "main", "register", "run_demo"]

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)

CLUSTER = "DEMO"
"""The demo cluster's name (also the keyring's ``cluster``)."""
NAMES = ("n1", "n2", "n3")
"""The three nodes."""
STEPS = 6
"""How many steps the demo reports."""
LOCK = "demo-lock"
"""The lock the local client takes in step 4."""
STEP_TIMEOUT = 20.0
"""Default bound, in seconds, on each step."""
DAEMON_COMMAND = "daemon"
"""The subcommand that runs a node (``serve`` is its older name)."""

# Fast timers, so that the demo takes seconds (the defaults suit real networks).
_MEMBERSHIP_TIMERS = {"probe_interval": 0.2, "probe_timeout": 0.1, "gossip_interval": 0.05,
                      "reconnect_interval": 1.0}
_ELECTION_TIMERS = {"election_timeout": 0.5, "heartbeat_interval": 0.05}
# (transfer_timeout defaults to election_timeout: the last node to stop has nobody to hand
# its leadership to, and waits that long for a taker.)
_CALL_TIMEOUT = 1.0  # one poll of one node; a dead node costs this much per round
_POLL_INTERVAL = 0.05
_STOP_GRACE = 5.0  # after a SIGKILL, how long to wait for the process to be reaped
_TAIL_LINES = 15
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes, with the terminating NUL
_INHERITED_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID",
                        "LISTEN_FDS", "LISTEN_FDNAMES")
_STEP_NAMES = {1: "start", 2: "membership", 3: "election", 4: "local_lock", 5: "failover",
               6: "stop"}


class DemoError(Exception):
    """A step did not happen (in time): ``step`` (1-6), the message, the daemons whose logs
    explain it, and the exit status to end with."""

    def __init__(self, step: int, message: str, daemons: Sequence[_Daemon] = (), *,
                 status: int = EXIT_TIMEOUT) -> None:
        super().__init__(message)
        self.step = step
        self.daemons = list(daemons)
        self.status = status


@dataclasses.dataclass(eq=False)
class _Daemon:
    """One node: its files, its notify socket, its process and a client of it."""

    name: str
    port: int
    directory: Path

    process: subprocess.Popen[bytes] | None = None
    notify: socket.socket | None = None
    client: Client | None = None
    notices: list[str] = dataclasses.field(default_factory=list)
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The node's UDP address (membership, election and the demo's calls use it)."""
        return f"udp://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / f"{self.name}.toml"

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    @property
    def notify_path(self) -> Path:
        return self.directory / f"{self.name}.notify"

    @property
    def local_dir(self) -> Path:
        return self.directory / "local" / self.name

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, env: dict[str, str]) -> None:
        """Bind the notify socket, then start the daemon with ``$NOTIFY_SOCKET`` naming it."""
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.setblocking(False)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - this interpreter, our own arguments
            [sys.executable, "-m", "clusterrpc", DAEMON_COMMAND, "--config",
             str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            cwd=self.directory, env={**env, "NOTIFY_SOCKET": str(self.notify_path)},
        )  # fmt: skip

    def receive(self) -> list[str]:
        """The notification assignments (``READY=1``, ``STATUS=…``) that arrived since the
        last call; they are also kept in :attr:`notices`."""
        arrived: list[str] = []
        while self.notify is not None:
            try:
                data = self.notify.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            arrived.extend(line for line in data.decode("utf-8", "replace").split("\n")
                           if line)
        self.notices.extend(arrived)
        return arrived

    def addresses(self) -> list[str]:
        """The URLs the daemon said it listens on (its ``listening on`` lines)."""
        marker = "clusterrpc: listening on "
        return [line.split(marker, 1)[1].strip() for line in self._log_lines()
                if marker in line]

    def _log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text("utf-8", "replace").splitlines()
        except OSError:
            return []

    def describe(self) -> str:
        """The daemon's state and the tail of its standard error, for an error message."""
        if self.process is None:
            state = "not started"
        elif self.process.poll() is None:
            state = f"pid {self.process.pid}, running"
        else:
            state = f"pid {self.process.pid}, exit status {self.process.returncode}"
        lines = self._log_lines()[-_TAIL_LINES:]
        body = "\n".join(f"    {line}" for line in lines) or "    (nothing)"
        return f"--- {self.name} ({state}): last lines of {self.log_path} ---\n{body}"

    def kill(self) -> None:
        """SIGKILL the process if it still runs, reap it; close everything this holds."""
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(_STOP_GRACE)
        if self.notify is not None:
            self.notify.close()
            self.notify = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _free_udp_ports(count: int) -> list[int]:
    """``count`` distinct UDP ports of 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _node_config(daemon: _Daemon, others: Sequence[_Daemon]) -> str:
    """The TOML configuration of ``daemon`` (paths relative to the demo directory)."""
    def table(values: dict[str, object]) -> str:
        return "".join(f"{key} = {_toml_value(value)}\n" for key, value in values.items())

    return (
        f"# clusterrpc demo: node {daemon.name} of cluster {CLUSTER}\n"
        + table({"name": daemon.name, "keyring": "cluster.keys",
                 "listen": [daemon.url, "tcp://127.0.0.1:0"],
                 "local_dir": f"local/{daemon.name}"})
        + "\n[local_services]\n"
        + table({"locks": "clusterrpc.local.examples:Locks"})
        + "\n[membership]\n"
        + table({"seeds": [other.url for other in others], **_MEMBERSHIP_TIMERS})
        + "\n[election]\n"
        + table({"voters": list(NAMES), "state_dir": f"state/{daemon.name}",
                 **_ELECTION_TIMERS})
    )


def _check_path_lengths(daemons: Sequence[_Daemon]) -> None:
    for daemon in daemons:
        paths = [str(daemon.notify_path)] + [
            socket_path(str(daemon.local_dir), CLUSTER, service, domain)
            for service in ("locks", "system") for domain in (USER, SYSTEM)]
        for path in paths:
            if len(os.fsencode(path)) > _MAX_UNIX_PATH:
                raise UsageError(f"{path} is longer than a Unix socket path may be "
                                 f"({_MAX_UNIX_PATH} bytes): give --keep a shorter directory")


def _child_environment() -> dict[str, str]:
    """This process's environment for the daemons: without a service manager's variables, and
    with this clusterrpc importable (a source checkout that is not installed works too)."""
    env = {key: value for key, value in os.environ.items() if key not in _INHERITED_VARIABLES}
    root = str(Path(clusterrpc.__file__).resolve().parent.parent)
    installed = {str(Path(path).resolve()) for path in
                 [*site.getsitepackages(), site.getusersitepackages()]}
    if root not in installed:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def _make_directory(keep: str | None) -> Path:
    if keep is None:
        # mkdtemp: mode 0700, owned by this user; under /tmp so that socket paths stay short.
        return Path(tempfile.mkdtemp(prefix="crpc-demo-", dir="/tmp"))
    directory = Path(keep).resolve()
    if directory.exists():
        if not directory.is_dir():
            raise UsageError(f"--keep {keep}: not a directory")
        if any(directory.iterdir()):
            raise UsageError(f"--keep {keep}: the directory is not empty")
    else:
        directory.mkdir(mode=0o700, parents=True)
    directory.chmod(0o700)
    return directory


class _Report:
    """Writes the steps: a human line each (``N/6 …``, details indented), or JSON objects."""

    def __init__(self, out: IO[str], json_output: bool) -> None:
        self.out = out
        self.json = json_output
        self._open = False

    def info(self, text: str) -> None:
        if not self.json:
            print(text, file=self.out, flush=True)

    def begin(self, step: int, text: str) -> None:
        """Start the line of ``step`` (human output), finished by :meth:`done`."""
        if not self.json:
            print(f"{step}/{STEPS} {text} ...", end=" ", file=self.out, flush=True)
            self._open = True

    def done(self, step: int, text: str, details: Sequence[str] = (), **fields: Any) -> None:
        if self.json:
            record = {"step": step, "of": STEPS, "name": _STEP_NAMES[step], **fields}
            print(json.dumps(record, ensure_ascii=False), file=self.out, flush=True)
            return
        prefix = "" if self._open else f"{step}/{STEPS} "
        self._open = False
        print(prefix + text, file=self.out)
        for line in details:
            print(f"      {line}", file=self.out)
        self.out.flush()

    def failed(self) -> None:
        if self._open:
            print("FAILED", file=self.out, flush=True)
            self._open = False


def _ms(since: float) -> int:
    return round((time.monotonic() - since) * 1000)


def _ask(daemon: _Daemon, method: str) -> tuple[Any, str | None]:
    """``method``'s answer from ``daemon`` (and ``None``), or ``None`` and what went wrong."""
    if daemon.client is None:
        return None, "no client"
    try:
        return daemon.client.call(method, timeout=_CALL_TIMEOUT), None
    except ClusterRPCError as error:
        return None, f"{type(error).__name__}: {error}"


def _check_running(step: int, daemons: Sequence[_Daemon]) -> None:
    for daemon in daemons:
        if not daemon.running():
            code = daemon.process.returncode if daemon.process is not None else None
            raise DemoError(step, f"daemon {daemon.name} exited (status {code})", [daemon],
                            status=EXIT_FAULT)


def _start(daemons: Sequence[_Daemon], report: _Report, timeout: float) -> float:
    """Start the daemons and wait for each one's ``READY=1``; return when the last came."""
    report.begin(1, f"starting {len(daemons)} daemons on 127.0.0.1")
    started = time.monotonic()
    env = _child_environment()
    for daemon in daemons:
        daemon.start(env)
    deadline = started + timeout
    waiting = {daemon.notify.fileno(): daemon for daemon in daemons
               if daemon.notify is not None}
    while waiting:
        _check_running(1, list(waiting.values()))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            names = ", ".join(daemon.name for daemon in waiting.values())
            raise DemoError(1, f"no READY=1 from {names} within {timeout:g} s",
                            list(waiting.values()))
        readable, _, _ = select.select(list(waiting), [], [], min(remaining, 0.1))
        for fd in readable:
            if "READY=1" in waiting[fd].receive():
                del waiting[fd]
    ready_at = time.monotonic()
    elapsed = round((ready_at - started) * 1000)
    nodes: list[dict[str, Any]] = [
        {"name": daemon.name, "pid": daemon.pid, "addresses": daemon.addresses(),
         "config": str(daemon.config_path), "log": str(daemon.log_path)}
        for daemon in daemons]
    report.done(1, f"ready in {elapsed} ms",
                [f"{node['name']}  pid {node['pid']}  {' '.join(node['addresses'])}"
                 for node in nodes],
                ms=elapsed, nodes=nodes, cluster=CLUSTER, directory=str(daemons[0].directory))
    return ready_at


def _poll(step: int, what: str, daemons: Sequence[_Daemon], timeout: float,
          check: Callable[[], tuple[Any, dict[str, str], list[_Daemon]]]) -> tuple[Any, int]:
    """Call ``check`` until it returns a result that is not ``None`` (and the milliseconds
    that took); ``check`` also returns what each node said and which nodes are behind, for
    the error when ``timeout`` seconds pass first."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        _check_running(step, daemons)
        result, seen, behind = check()
        if result is not None:
            return result, _ms(started)
        if time.monotonic() >= deadline:
            state = "; ".join(f"{name}: {text}" for name, text in seen.items())
            raise DemoError(step, f"{what} within {timeout:g} s (last seen: {state})",
                            behind or daemons)
        time.sleep(_POLL_INTERVAL)


def _membership(daemons: Sequence[_Daemon], report: _Report, timeout: float,
                ready_at: float) -> None:
    report.begin(2, "waiting for membership to converge")
    views: dict[str, dict[str, str]] = {}

    def check() -> tuple[Any, dict[str, str], list[_Daemon]]:
        seen: dict[str, str] = {}
        behind: list[_Daemon] = []
        for daemon in daemons:
            rows, error = _ask(daemon, "membership.members")
            if not isinstance(rows, list):
                seen[daemon.name] = error or f"not a list: {rows!r}"
                behind.append(daemon)
                continue
            view = {str(row.get("name")): str(row.get("state")) for row in rows
                    if isinstance(row, dict)}
            views[daemon.name] = view
            seen[daemon.name] = ", ".join(f"{name} {state}" for name, state in sorted(
                view.items()))
            if any(view.get(name) != "alive" for name in NAMES):
                behind.append(daemon)
        return (True if not behind else None), seen, behind

    _poll(2, "the nodes did not all see each other alive", daemons, timeout, check)
    elapsed = _ms(ready_at)
    report.done(2, f"every node sees {', '.join(NAMES)} alive, {elapsed} ms after READY",
                [f"{name} sees: " + ", ".join(f"{member} {state}" for member, state
                                             in sorted(view.items()))
                 for name, view in views.items()],
                ms=elapsed, views=views)


def _agreed_leader(daemons: Sequence[_Daemon], *, not_: str | None = None,
                   above: int = -1) -> Callable[[], tuple[Any, dict[str, str], list[_Daemon]]]:
    """A ``_poll`` check: ``(leader, term)`` once every daemon names the same leader in the
    same term (above ``above``, not ``not_``), and that leader says it leads."""

    def check() -> tuple[Any, dict[str, str], list[_Daemon]]:
        seen: dict[str, str] = {}
        answers: dict[str, dict[str, Any]] = {}
        for daemon in daemons:
            status, error = _ask(daemon, "election.status")
            if isinstance(status, dict):
                answers[daemon.name] = status
                seen[daemon.name] = (f"leader {status.get('leader')}, term "
                                     f"{status.get('term')}, {status.get('role')}")
            else:
                seen[daemon.name] = error or f"not a struct: {status!r}"
        named = {(status.get("leader"), status.get("term")) for status in answers.values()}
        behind = [daemon for daemon in daemons if daemon.name not in answers]
        if len(answers) == len(daemons) and len(named) == 1:
            leader, term = named.pop()
            if (isinstance(leader, str) and leader in answers and isinstance(term, int)
                    and leader != not_ and term > above
                    and answers[leader].get("role") == "leader"):
                return (leader, term), seen, []
        return None, seen, behind

    return check


def _election(daemons: Sequence[_Daemon], report: _Report, timeout: float,
              ready_at: float) -> tuple[str, int]:
    report.begin(3, "waiting for a leader")
    (leader, term), _ = _poll(3, "the nodes did not agree on a leader", daemons, timeout,
                              _agreed_leader(daemons))
    elapsed = _ms(ready_at)
    report.done(3, f"{leader} leads in term {term}, {elapsed} ms after READY (all three "
                   "agree)",
                leader=leader, term=term, ms=elapsed)
    return str(leader), int(term)


def _local_lock(daemon: _Daemon, report: _Report, timeout: float) -> None:
    from clusterrpc.local import get_cluster_handle  # noqa: PLC0415 - only this step

    report.begin(4, f"a local program on {daemon.name} takes {json.dumps(LOCK)} through the "
                    "USER domain")
    where = socket_path(str(daemon.local_dir), CLUSTER, "locks", USER)
    try:
        with get_cluster_handle(CLUSTER, domain=USER, local_dir=str(daemon.local_dir),
                                timeout=timeout) as first, \
                get_cluster_handle(CLUSTER, domain=USER, local_dir=str(daemon.local_dir),
                                   timeout=timeout) as second:
            granted = first.call("locks.acquire", LOCK)
            seen_by_second = second.call("locks.holder", LOCK)
            released = first.call("locks.release", LOCK)
            after = second.call("locks.holder", LOCK)
    except (ClusterRPCError, OSError) as error:
        raise DemoError(4, f"the local lock service at {where} failed: "
                           f"{type(error).__name__}: {error}", [daemon],
                        status=EXIT_FAULT) from error
    pid = os.getpid()
    if (not isinstance(granted, dict) or granted.get("granted") is not True
            or seen_by_second != pid or released is not True or after != 0):
        raise DemoError(4, f"the lock service answered unexpectedly: acquire {granted!r}, "
                           f"holder {seen_by_second!r} (this process is {pid}), release "
                           f"{released!r}, holder after {after!r}", [daemon],
                        status=EXIT_FAULT)
    report.done(4, "ok", [
        f"socket: {where}",
        f"first handle:  locks.acquire({json.dumps(LOCK)}) -> granted",
        f"second handle: locks.holder({json.dumps(LOCK)}) -> {seen_by_second} (this process)",
        f"first handle:  locks.release({json.dumps(LOCK)}) -> True; holder now {after}",
    ], node=daemon.name, socket=where, lock=LOCK, granted=True, holder=seen_by_second,
        released=True, holder_after=after)


def _failover(daemons: Sequence[_Daemon], leader: str, term: int, report: _Report,
              timeout: float) -> tuple[list[_Daemon], str]:
    victim = next(daemon for daemon in daemons if daemon.name == leader)
    survivors = [daemon for daemon in daemons if daemon is not victim]
    pid = victim.pid
    report.begin(5, f"killing the leader {leader} (SIGKILL, pid {pid})")
    assert victim.process is not None
    victim.process.kill()
    victim.process.wait(_STOP_GRACE)
    killed_at = time.monotonic()
    victim.kill()  # closes its client and files
    (new, new_term), _ = _poll(5, "the survivors did not agree on a new leader", survivors,
                               timeout, _agreed_leader(survivors, not_=leader, above=term))
    elapsed = _ms(killed_at)
    report.done(5, f"{new} leads in term {new_term}, {elapsed} ms after the kill",
                killed=leader, killed_pid=pid, old_term=term, leader=new, term=new_term,
                ms=elapsed)
    return survivors, str(new)


def _stop(survivors: Sequence[_Daemon], timeout: float) -> tuple[dict[str, int], int]:
    """SIGTERM the survivors one after the other, in the order given; their exit statuses
    (all 0, else :class:`DemoError`) and the milliseconds it took. One at a time: a leader
    that stops hands its leadership to a voter that is not stopping too."""
    started = time.monotonic()
    statuses: dict[str, int] = {}
    for daemon in survivors:
        if daemon.client is not None:
            daemon.client.close()
            daemon.client = None
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGTERM)
        try:
            statuses[daemon.name] = daemon.process.wait(
                max(started + timeout - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            raise DemoError(6, f"{daemon.name} did not exit within {timeout:g} s of SIGTERM",
                            [daemon]) from None
        daemon.receive()
    failed = [daemon for daemon in survivors if statuses[daemon.name] != 0]
    if failed:
        raise DemoError(6, "after SIGTERM: " + ", ".join(
            f"{daemon.name} exited with status {statuses[daemon.name]}" for daemon in failed),
            failed, status=EXIT_FAULT)
    return statuses, _ms(started)


@contextlib.contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """While the demo runs, SIGTERM (and SIGHUP, unless ignored) end it through its
    ``finally`` blocks, as Ctrl-C does, so no daemon is left behind (exit 128 + the signal's
    number)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, handler)
                for signum in (signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(signum) is not signal.SIG_IGN}  # nohup stays nohup
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def run_demo(*, json_output: bool = False, keep: str | None = None,
             timeout: float = STEP_TIMEOUT, out: IO[str] | None = None,
             err: IO[str] | None = None) -> int:
    """Run the demo (module docstring); return the exit status. ``json_output``: one JSON
    object per step on ``out`` (default standard output) instead of the human lines; ``keep``:
    work in this directory and leave it; ``timeout``: the bound on each step, in seconds.
    A failing step is reported on ``err`` (default standard error). Raises
    :class:`~clusterrpc.cli.exits.UsageError` for a ``keep`` directory that cannot be used."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    if not 0 < timeout < float("inf"):
        raise UsageError(f"the step timeout must be a positive number of seconds, not {timeout}")
    report = _Report(out, json_output)
    directory = _make_directory(keep)
    daemons: list[_Daemon] = []
    try:
        with _terminate_cleanly():
            ports = _free_udp_ports(len(NAMES))
            daemons = [_Daemon(name, port, directory) for name, port in zip(NAMES, ports,
                                                                            strict=True)]
            _check_path_lengths(daemons)
            key = Keyring.generate("hmac-sha256")
            keyring = Keyring(cluster=CLUSTER, keys=[key], signing_key_id=key.key_id)
            keyring.save(directory / "cluster.keys")
            for daemon in daemons:
                daemon.config_path.write_text(
                    _node_config(daemon, [other for other in daemons if other is not daemon]))
            report.info(f"clusterrpc demo: three nodes of cluster {CLUSTER} on 127.0.0.1, "
                        f"files in {directory}")
            try:
                ready_at = _start(daemons, report, timeout)
                for daemon in daemons:
                    daemon.client = connect(daemon.url, keyring=keyring,
                                            timeout=_CALL_TIMEOUT)
                _membership(daemons, report, timeout, ready_at)
                leader, term = _election(daemons, report, timeout, ready_at)
                _local_lock(next(daemon for daemon in daemons if daemon.name == leader),
                            report, timeout)
                survivors, new = _failover(daemons, leader, term, report, timeout)
                # The leader first: it hands over to the other survivor, which stops last.
                survivors.sort(key=lambda daemon: daemon.name != new)
                statuses, elapsed = _stop(survivors, timeout)
            except DemoError as error:
                report.failed()
                print(f"clusterrpc: demo step {error.step}/{STEPS} ({_STEP_NAMES[error.step]})"
                      f" failed: {error}", file=err)
                for daemon in error.daemons:
                    print(daemon.describe(), file=err)
                err.flush()
                return error.status
            except BaseException:
                report.failed()
                raise
            for daemon in daemons:
                daemon.kill()  # nothing runs any more: this closes the sockets and logs
            if keep is None:
                shutil.rmtree(directory)
                files = f"removed {directory}"
            else:
                files = f"kept {directory} (configurations, keyring, logs, election state)"
            names = " and ".join(statuses)
            report.done(6, f"done: {names} exited 0 after SIGTERM in {elapsed} ms; {files}",
                        stopped=statuses, ms=elapsed, directory=str(directory),
                        kept=keep is not None)
            return EXIT_OK
    finally:
        for daemon in daemons:
            daemon.kill()
        if keep is None:
            shutil.rmtree(directory, ignore_errors=True)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per step instead of the human lines")
    parser.add_argument("--keep", metavar="DIR",
                        help="work in DIR (empty or new) and keep it afterwards: the "
                             "configurations, keyring, daemon logs and election state")
    parser.add_argument("--timeout", type=_timeout, default=STEP_TIMEOUT,
                        metavar="SECONDS",
                        help=f"the bound on each step (default: {STEP_TIMEOUT:g})")
    parser.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(json_output=args.json, keep=args.keep, timeout=args.timeout)


_DESCRIPTION = (
    "Start three node daemons on 127.0.0.1 with a shared keyring (cluster DEMO), show "
    "membership converging, a leader elected, a local program taking a lock through the USER "
    "domain, the leader killed and a new one elected, then stop the rest. Everything happens "
    "in a private directory under /tmp, removed at the end (unless --keep)."
)
_EPILOG = ("Exit status: 0 every step happened; 4 a step did not happen within --timeout; "
           "1 a daemon exited or answered wrongly; 2 bad arguments or --keep directory; "
           "130 interrupted. A failing step is named on standard error with the last lines of "
           "the daemons' logs.")


def register(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add ``demo`` to ``commands`` (the subparsers of ``clusterrpc``)."""
    demo = commands.add_parser("demo", help="run three daemons on loopback and show the "
                                            "cluster at work",
                               description=_DESCRIPTION, epilog=_EPILOG)
    _add_arguments(demo)


def main(argv: Sequence[str] | None = None) -> int:
    """``clusterrpc demo ARGV`` on its own (``python -m clusterrpc.cli.demo``); returns the exit
    status."""
    parser = argparse.ArgumentParser(prog="clusterrpc demo", description=_DESCRIPTION,
                                     epilog=_EPILOG)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except (UsageError, ClusterRPCError, KeyboardInterrupt) as error:
        status, message = status_of(error)
        print(f"clusterrpc: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
