"""A multi-host test lab: Linux network namespaces joined by veth pairs to a bridge.

::

    with Lab(3) as lab:                         # hosts h1, h2, h3 (needs root, ip, nft)
        n1, n2, n3 = lab.start_nodes()          # `clusterrpc serve` in each host namespace
        lab.call("h1", n2.url("tcp"), "lab.status")     # the real `clusterrpc call`, in h1
        lab.loss("h2", 30)                      # h2 drops 30 % of its IP packets on eth0
        lab.partition("h3")                     # h3's cable is pulled (at the hub)
        n3.pause(); n3.resume(); n3.kill()      # SIGSTOP, SIGCONT, SIGKILL

What it builds (every name carries the lab's ``crlab-PID-TOKEN-`` prefix, so that parallel and
leftover labs never collide):

- a hub namespace ``crlab-PID-TOKEN-hub`` holding the bridge ``br0`` (IGMP snooping off, so
  multicast is flooded to every port; no STP, so ports forward as soon as their link is up);
- ``n`` host namespaces ``crlab-PID-TOKEN-h1`` … ``-hN``, each with ``lo`` up and ``eth0``, the
  host end of a veth pair whose other end ``vhI`` is a port of the bridge in the hub. The veth
  pair is created inside the hub namespace and its host end moved straight into the host
  namespace: nothing is ever created in the root namespace;
- on each host: the address ``10.203.0.I/24`` on ``eth0`` and the route ``224.0.0.0/4 dev
  eth0`` (multicast goes out of the lab's veth). There is no default route: a host reaches the
  other lab hosts and nothing else.

Network safety: every command runs in a namespace that this lab created (``ip -n NS`` and
``ip netns exec NS``); the root namespace's interfaces, routes and firewall are never touched.
``nft`` is only ever run inside a host namespace.

Faults (see :meth:`Lab.loss`, :meth:`Lab.drop_all`, :meth:`Lab.partition`): nftables rules
live in the table ``inet clusterrpc_lab`` of the host's own namespace, with a chain ``input``
(hook input: IP packets arriving for the host on ``eth0``) and a chain ``output`` (hook output:
IP packets the host sends on ``eth0``); ``lo`` is never filtered. ARP is not IP and is never
dropped by these rules. A partition takes the veth link down. Crashes and pauses are signals to
the node process (:class:`NodeProcess`).

Teardown (:meth:`Lab.close`, idempotent; also registered with :mod:`atexit`): SIGCONT then
SIGTERM to every process the lab started, SIGKILL to those still running after a grace period,
SIGKILL to anything else still inside the lab's namespaces, then every namespace is deleted
(which deletes the veths, the bridge and the nftables tables) and the lab's temporary directory
is removed. :func:`sweep_stale` deletes the namespaces and temporary directories of labs whose
owning process (the PID in the name) is dead, e.g. after a test run was killed; the first
:class:`Lab` of a process runs it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLUSTER",
    "DEFAULT_PORT",
    "NFT_TABLE",
    "PREFIX",
    "Host",
    "Lab",
    "LabError",
    "LabUnavailable",
    "NodeProcess",
    "NodeStartError",
    "find_tool",
    "lab_namespaces",
    "sweep_stale",
    "unavailable_reason",
]

PREFIX = "crlab"
"""Every namespace of a lab is named ``PREFIX-PID-TOKEN-ROLE`` (ROLE: ``hub``, ``hI``)."""

SUBNET = "10.203.0"
"""Host ``hI`` gets ``SUBNET.I/24`` (a private range used by nothing else)."""

DEFAULT_PORT = 7400
"""The port of the default ``tcp://`` and ``udp://`` listen addresses of a node."""

NFT_TABLE = "clusterrpc_lab"
"""The nftables table (family ``inet``) that holds a host's faults, in the host's namespace."""

CLUSTER = "TEST/NETNS"
"""The cluster name of the lab's keyring."""

HOST_IFACE = "eth0"
BRIDGE = "br0"
MULTICAST_ROUTE = "224.0.0.0/4"
MAX_HOSTS = 250

HERE = Path(__file__).resolve().parent
CLIENT_SCRIPT = HERE / "lab_client.py"
DEFAULT_SERVICES = {"lab": "lab_service:LabService"}

COMMAND_TIMEOUT = 30.0
"""Seconds any one ``ip``/``nft`` command (or a :meth:`Lab.run` without ``timeout``) may take."""
TERM_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL at teardown."""

_NAME = re.compile(
    rf"^{PREFIX}-(?P<pid>[0-9]+)-(?P<token>[0-9a-f]{{6}})-(?P<role>hub|h[0-9]+|probe)$")
_TMPDIR = re.compile(rf"^{PREFIX}-(?P<pid>[0-9]+)-[0-9a-f]{{6}}-[A-Za-z0-9_]+$")
_TOOL_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


class LabError(Exception):
    """A lab command failed."""


class LabUnavailable(LabError):
    """The lab cannot run here (not root, ``ip``/``nft`` missing, namespaces refused); the
    message says what is missing."""


class NodeStartError(LabError):
    """A node process did not print its addresses; the message includes its log."""


# -- tools and availability ----------------------------------------------------------------------


def find_tool(name: str) -> str | None:
    """The absolute path of the program ``name``: on ``PATH`` or in the sbin directories (which
    a non-login ``PATH`` may lack)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_TOOL_DIRS])
    return shutil.which(name, path=search)


def _run(argv: Sequence[str], *, input: str | None = None,
         timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), input=input, capture_output=True, text=True,
                          timeout=timeout, check=False,
                          stdin=None if input is not None else subprocess.DEVNULL)


def _check(argv: Sequence[str], *, input: str | None = None) -> str:
    result = _run(argv, input=input)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {result.returncode}: "
                       f"{(result.stderr or result.stdout).strip()}")
    return result.stdout


def _new_name(role: str, token: str) -> str:
    return f"{PREFIX}-{os.getpid()}-{token}-{role}"


def _probe() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"the netns lab needs Linux network namespaces (this is {sys.platform})"
    if os.geteuid() != 0:
        return (f"the netns lab needs root to create network namespaces "
                f"(running as uid {os.geteuid()})")
    ip, nft = find_tool("ip"), find_tool("nft")
    if ip is None:
        return "the netns lab needs `ip` (iproute2), which is not installed"
    if nft is None:
        return "the netns lab needs `nft` (nftables), which is not installed"
    name = _new_name("probe", secrets.token_hex(3))
    added = _run([ip, "netns", "add", name])
    if added.returncode != 0:
        return (f"`ip netns add` failed (network namespaces are not allowed here, e.g. an "
                f"unprivileged container): {added.stderr.strip()}")
    try:
        steps: list[tuple[str, list[str], str | None]] = [
            ("a bridge", [ip, "-n", name, "link", "add", BRIDGE, "type", "bridge"], None),
            ("a veth pair", [ip, "-n", name, "link", "add", "v0", "type", "veth", "peer",
                             "name", "v1"], None),
            ("an nftables table with a numgen rule", [ip, "netns", "exec", name, nft, "-f", "-"],
             _nft_script({"input": [f'iifname "{HOST_IFACE}" numgen random mod 100 < 50 '
                                    "counter drop"], "output": []})),
        ]
        for what, argv, stdin in steps:
            result = _run(argv, input=stdin)
            if result.returncode != 0:
                return f"cannot create {what} in a namespace: {result.stderr.strip()}"
    finally:
        _run([ip, "netns", "delete", name])
    return None


_REASON: list[str | None] = []


def unavailable_reason() -> str | None:
    """Why the lab cannot run here (one sentence), or ``None`` when it can. Probed once per
    process: root, ``ip`` and ``nft``, then a throw-away namespace with a bridge, a veth pair and
    an nftables rule."""
    if not _REASON:
        _REASON.append(_probe())
    return _REASON[0]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lab_namespaces() -> list[str]:
    """The names of every lab namespace present (of any lab, live or stale)."""
    ip = find_tool("ip")
    if ip is None:
        return []
    result = _run([ip, "netns", "list"])
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    return [name for name in names if _NAME.match(name)]


def _kill_inside(ip: str, namespace: str) -> None:
    """SIGKILL every process still inside ``namespace`` (one of the lab's)."""
    result = _run([ip, "netns", "pids", namespace])
    for word in result.stdout.split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            pid = int(word)
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)


def _owner_dead(pid: int) -> bool:
    return pid != os.getpid() and not _pid_alive(pid)


def sweep_stale() -> list[str]:
    """Delete what labs whose owning process is dead left behind (a run killed before its
    teardown): their namespaces, after killing whatever still runs inside them, and their
    temporary directories (in the default temporary directory). Only names of the form
    ``crlab-PID-TOKEN-…`` are considered, and only when PID is not a live process. Returns the
    names deleted."""
    deleted = []
    for entry in Path(tempfile.gettempdir()).glob(f"{PREFIX}-*"):
        match = _TMPDIR.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and _owner_dead(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            deleted.append(str(entry))
    ip = find_tool("ip")
    if ip is None or os.geteuid() != 0:
        return deleted
    for name in lab_namespaces():
        match = _NAME.match(name)
        assert match is not None
        if not _owner_dead(int(match["pid"])):
            continue
        _kill_inside(ip, name)
        if _run([ip, "netns", "delete", name]).returncode == 0:
            deleted.append(name)
    return deleted


_SWEPT: list[bool] = []


# -- nftables ------------------------------------------------------------------------------------


def _nft_script(rules: Mapping[str, list[str]]) -> str:
    """An atomic ``nft -f`` script that replaces the lab table with ``rules`` (chain name ->
    rules), or just deletes it when there are no rules."""
    lines = [f"table inet {NFT_TABLE} {{}}", f"delete table inet {NFT_TABLE}"]
    if any(rules.values()):
        lines.append(f"table inet {NFT_TABLE} {{")
        for chain in ("input", "output"):
            lines += [f"  chain {chain} {{",
                      f"    type filter hook {chain} priority 0; policy accept;"]
            lines += [f"    {rule}" for rule in rules.get(chain, [])]
            lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"


_DIRECTIONS = {"in": ("input",), "out": ("output",), "both": ("input", "output")}


def _chains(direction: str) -> tuple[str, ...]:
    try:
        return _DIRECTIONS[direction]
    except KeyError:
        raise ValueError(f"direction must be 'in', 'out' or 'both', not {direction!r}") from None


def _match(chain: str) -> str:
    return f'{"iifname" if chain == "input" else "oifname"} "{HOST_IFACE}"'


# -- hosts and nodes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """One host of a lab: ``name`` (``h1`` …), its namespace, its address on ``eth0``."""

    name: str
    index: int
    netns: str
    address: str
    prefixlen: int = 24
    iface: str = HOST_IFACE
    hub_iface: str = ""
    """The bridge port (in the hub namespace) that the host's ``eth0`` is cabled to."""

    def url(self, scheme: str = "tcp", port: int = DEFAULT_PORT) -> str:
        """``scheme://ADDRESS:PORT`` on this host."""
        return f"{scheme}://{self.address}:{port}"


@dataclass
class _Faults:
    loss: dict[str, int] = field(default_factory=dict)  # chain -> percent
    drop_all: set[str] = field(default_factory=set)  # chains
    partition: str | None = None  # "hub" or "host"

    def rules(self) -> dict[str, list[str]]:
        rules: dict[str, list[str]] = {"input": [], "output": []}
        for chain in ("input", "output"):
            if chain in self.drop_all:
                rules[chain].append(f"{_match(chain)} counter drop")
            percent = self.loss.get(chain, 0)
            if percent >= 100:
                # numgen random mod 100 gives 0..99: "< 100" is refused by nft, and always true
                rules[chain].append(f"{_match(chain)} counter drop")
            elif percent > 0:
                rules[chain].append(
                    f"{_match(chain)} numgen random mod 100 < {percent} counter drop")
        return rules


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, Mapping):  # an inline table, e.g. groups = {all = {address = …}}
        return "{" + ", ".join(f"{json.dumps(str(key))} = {_toml(item)}"
                               for key, item in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to the node's TOML")


class NodeProcess:
    """A ``clusterrpc serve`` process in a host namespace (from :meth:`Lab.start_node`).

    ``addresses`` are the URLs it printed (in listen order), ``host`` its :class:`Host`,
    ``name`` the node's name. ``kill()`` is a crash (SIGKILL), ``pause()``/``resume()`` SIGSTOP
    and SIGCONT, ``stop()`` a clean SIGTERM, ``restart()`` starts it again from the same
    configuration (the default addresses have fixed ports, so they stay the same).
    """

    def __init__(self, lab: Lab, host: Host, name: str, config: Path, listen: list[str],
                 env: dict[str, str], expect: int) -> None:
        self.lab = lab
        self.host = host
        self.name = name
        self.config = config
        self.listen = listen
        self.log_path = config.with_suffix(".log")
        self.out_path = config.with_suffix(".out")
        self._env = env
        self._expect = expect
        self.addresses: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    def __repr__(self) -> str:
        state = ("paused" if self.paused else "running") if self.alive else "dead"
        return f"<NodeProcess {self.name} on {self.host.name} {state} {self.addresses}>"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def url(self, scheme: str = "tcp") -> str:
        """The first address with this scheme."""
        for url in self.addresses:
            if url.startswith(scheme + "://"):
                return url
        raise LookupError(f"node {self.name} has no {scheme}:// address: {self.addresses}")

    def log(self) -> str:
        """What the node wrote to standard error so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def spawn(self) -> None:
        """Start the process (without waiting for its addresses: see :meth:`wait_ready`)."""
        if self.alive:
            raise LabError(f"node {self.name} is already running")
        self.addresses = []
        self.paused = False
        self.out_path.write_bytes(b"")
        with self.log_path.open("ab") as log, self.out_path.open("wb") as out:
            self.process = self.lab.popen(
                self.host,
                [sys.executable, "-m", "clusterrpc", "serve", "--config", str(self.config),
                 "--print-addresses"],
                stdout=out, stderr=log, env=self._env,
            )  # fmt: skip

    def wait_ready(self, timeout: float = 30.0) -> list[str]:
        """Wait (at most ``timeout`` seconds) until the node printed its addresses; raises
        :class:`NodeStartError` with the node's log if it exits or stays silent."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            lines = self.out_path.read_text(errors="replace").splitlines()
            if len(lines) >= self._expect and self.out_path.read_bytes().endswith(b"\n"):
                self.addresses = lines
                return lines
            if self.process.poll() is not None:
                raise NodeStartError(f"node {self.name} on {self.host.name} exited with "
                                     f"{self.process.returncode} before listening:\n{self.log()}")
            if time.monotonic() > deadline:
                raise NodeStartError(f"node {self.name} on {self.host.name} printed no "
                                     f"addresses within {timeout} s:\n{self.log()}")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signum)

    def kill(self) -> None:
        """A crash: SIGKILL, and wait for the process to be gone."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=COMMAND_TIMEOUT)
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the process stops running; the kernel still holds its sockets, so TCP
        connections are accepted into the backlog and datagrams queue, but nothing answers."""
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self.signal(signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 15.0) -> int:
        """A clean stop: SIGTERM (SIGCONT first if paused); returns the exit status. SIGKILL if
        it does not exit within ``timeout``."""
        assert self.process is not None
        if self.alive:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=COMMAND_TIMEOUT)
            raise
        finally:
            self.paused = False

    def restart(self, timeout: float = 30.0) -> NodeProcess:
        """Kill the process if it runs, start it again from the same configuration and wait for
        its addresses. Returns ``self``."""
        self.kill()
        self.spawn()
        self.wait_ready(timeout)
        return self


# -- the lab -------------------------------------------------------------------------------------


HostRef = str | int | Host


class Lab:
    """``n`` hosts ``h1`` … ``hN`` in network namespaces, cabled to a bridge in a hub namespace
    (see the module docstring). Raises :class:`LabUnavailable` when the machine cannot host it.
    Use it as a context manager, or call :meth:`close` (also run at exit)."""

    def __init__(self, n: int = 3, *, workdir: str | Path | None = None) -> None:
        if not 1 <= n <= MAX_HOSTS:
            raise ValueError(f"a lab has 1 to {MAX_HOSTS} hosts, not {n}")
        reason = unavailable_reason()
        if reason is not None:
            raise LabUnavailable(reason)
        ip, nft = find_tool("ip"), find_tool("nft")
        assert ip is not None
        assert nft is not None
        self.ip, self.nft = ip, nft
        if not _SWEPT:
            _SWEPT.append(True)
            sweep_stale()
        self.token = secrets.token_hex(3)
        self.hub = _new_name("hub", self.token)
        self.hosts = [
            Host(name=f"h{i}", index=i, netns=_new_name(f"h{i}", self.token),
                 address=f"{SUBNET}.{i}", hub_iface=f"vh{i}")
            for i in range(1, n + 1)
        ]
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{os.getpid()}-{self.token}-",
                                            dir=workdir))
        self.cluster = CLUSTER
        self.keyring_path = self.tmpdir / "lab.keys"
        self.nodes: list[NodeProcess] = []
        self.processes: list[subprocess.Popen[Any]] = []
        self._namespaces: list[str] = []
        self._faults = {host.name: _Faults() for host in self.hosts}
        self._closed = False
        atexit.register(self.close)
        try:
            self._write_keyring()
            self._build()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<Lab {self.token}: {', '.join(h.name for h in self.hosts)}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- building ---------------------------------------------------------------------------

    def _write_keyring(self) -> None:
        from clusterrpc.keyring import Keyring  # noqa: PLC0415 - only when a lab is built

        key = Keyring.generate("hmac-sha256", key_id="lab1")
        Keyring(cluster=self.cluster, keys=[key], signing_key_id="lab1").save(self.keyring_path)

    def _add_namespace(self, name: str) -> None:
        result = _run([self.ip, "netns", "add", name])
        if result.returncode != 0:
            raise LabUnavailable(f"`ip netns add {name}` failed: {result.stderr.strip()}")
        self._namespaces.append(name)

    def _ipn(self, namespace: str, *argv: str) -> str:
        return _check([self.ip, "-n", namespace, *argv])

    def _build(self) -> None:
        self._add_namespace(self.hub)
        self._ipn(self.hub, "link", "set", "lo", "up")
        self._ipn(self.hub, "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0",
                  "stp_state", "0")
        self._ipn(self.hub, "link", "set", BRIDGE, "up")
        for host in self.hosts:
            self._add_namespace(host.netns)
            # created in the hub, the host end moved straight into the host's namespace
            self._ipn(self.hub, "link", "add", host.hub_iface, "type", "veth", "peer", "name",
                      host.iface, "netns", host.netns)
            self._ipn(self.hub, "link", "set", host.hub_iface, "master", BRIDGE)
            self._ipn(self.hub, "link", "set", host.hub_iface, "up")
            self._ipn(host.netns, "link", "set", "lo", "up")
            self._ipn(host.netns, "addr", "add", f"{host.address}/{host.prefixlen}", "dev",
                      host.iface)
            self._ipn(host.netns, "link", "set", host.iface, "up")
            self._ipn(host.netns, "route", "replace", MULTICAST_ROUTE, "dev", host.iface)
        for host in self.hosts:
            self._wait_link(host)

    def _link_ready(self, host: Host) -> bool:
        inside = json.loads(self._ipn(host.netns, "-j", "link", "show", host.iface))[0]
        port = json.loads(self._ipn(self.hub, "-j", "-d", "link", "show", host.hub_iface))[0]
        state = port.get("linkinfo", {}).get("info_slave_data", {}).get("state")
        return ("LOWER_UP" in inside.get("flags", []) and inside.get("operstate") == "UP"
                and "LOWER_UP" in port.get("flags", []) and state == "forwarding")

    def _wait_link(self, host: Host, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._link_ready(host):
            if time.monotonic() > deadline:
                raise LabError(f"{host.name}: {host.iface} not up and forwarding within "
                               f"{timeout} s")
            time.sleep(0.02)

    # -- hosts and commands -----------------------------------------------------------------

    @property
    def namespaces(self) -> list[str]:
        """The names of the namespaces this lab created (hub first)."""
        return list(self._namespaces)

    def host(self, ref: HostRef) -> Host:
        """The host ``ref``: a :class:`Host`, its name (``"h2"``) or its number (``2``)."""
        if isinstance(ref, Host):
            return ref
        for host in self.hosts:
            if ref in (host.name, host.index):
                return host
        raise KeyError(f"no host {ref!r} in this lab ({', '.join(h.name for h in self.hosts)})")

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of the lab's processes: this one's, with ``tests/netns`` first on
        ``PYTHONPATH`` (the service modules) and ``CLUSTERRPC_KEYRING`` set to the lab's."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["CLUSTERRPC_KEYRING"] = str(self.keyring_path)
        env["CLUSTERRPC_LAB_DIR"] = str(self.tmpdir)
        env.pop("CLUSTERRPC_PASSWORD", None)
        env.update(extra or {})
        return env

    def _argv(self, host: HostRef, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        self._check_open()
        return [self.ip, "netns", "exec", self.host(host).netns, *map(str, argv)]

    def run(self, host: HostRef, argv: Sequence[str | os.PathLike[str]], *,
            timeout: float = COMMAND_TIMEOUT, input: str | None = None,
            env: Mapping[str, str] | None = None, check: bool = False,
            ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the host's namespace (``ip netns exec``) and wait for it, at most
        ``timeout`` seconds; output is captured as text. ``env``: extra variables."""
        return subprocess.run(
            self._argv(host, argv), input=input, capture_output=True, text=True,
            timeout=timeout, check=check, env=self.env(env), cwd=self.tmpdir,
            stdin=None if input is not None else subprocess.DEVNULL,
        )  # fmt: skip

    def popen(self, host: HostRef, argv: Sequence[str | os.PathLike[str]], *,
              env: Mapping[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the host's namespace; the lab kills it at teardown.
        ``ip netns exec`` execs the command, so the process's PID is the command's: signals
        reach it directly. ``kwargs`` go to :class:`subprocess.Popen` (stdin defaults to
        ``/dev/null``, the working directory to the lab's directory)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("cwd", self.tmpdir)
        process = subprocess.Popen(self._argv(host, argv), env=self.env(env), **kwargs)
        self.processes.append(process)
        return process

    def python(self, host: HostRef, code: str, *args: str, timeout: float = COMMAND_TIMEOUT,
               ) -> subprocess.CompletedProcess[str]:
        """Run Python ``code`` (this interpreter, ``-c``) inside the host's namespace."""
        return self.run(host, [sys.executable, "-c", code, *args], timeout=timeout)

    # -- nodes ------------------------------------------------------------------------------

    def node_config(self, host: HostRef, *, name: str | None = None,
                    services: Mapping[str, str] | None = None,
                    listen: Iterable[str] | None = None,
                    options: Mapping[str, Any] | None = None,
                    keyring: Path | None = None) -> tuple[Path, list[str]]:
        """Write the ``node.toml`` of a node on ``host``; returns its path and listen list.
        ``keyring``: another keyring file than the lab's (a node that must not be heard)."""
        host = self.host(host)
        name = name or host.name
        if listen is None:
            listen = [host.url("tcp"), host.url("udp")]
        listen = [url.format(address=host.address, host=host.name, iface=host.iface)
                  for url in listen]
        settings: dict[str, Any] = {"drain_timeout": 1.0}
        settings.update(options or {})
        lines = [f"name = {_toml(name)}",
                 f"keyring = {_toml(str(keyring or self.keyring_path))}",
                 f"listen = {_toml(listen)}"]
        lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
        lines.append("\n[services]")
        for service, target in (DEFAULT_SERVICES if services is None else services).items():
            lines.append(f"{service} = {_toml(target)}")
        directory = self.tmpdir / host.name
        directory.mkdir(exist_ok=True)
        config = directory / f"{name}.toml"
        config.write_text("\n".join(lines) + "\n")
        return config, listen

    def start_node(self, host: HostRef, *, name: str | None = None,
                   services: Mapping[str, str] | None = None,
                   listen: Iterable[str] | None = None,
                   options: Mapping[str, Any] | None = None,
                   env: Mapping[str, str] | None = None, expect: int | None = None,
                   wait: bool = True, timeout: float = 30.0,
                   keyring: Path | None = None) -> NodeProcess:
        """Start ``clusterrpc serve --print-addresses`` (this interpreter) inside ``host``.

        ``name``: the node's name (default: the host's, ``h1``); ``services``: ``{"svc":
        "module:attr"}`` (default ``{"lab": "lab_service:LabService"}``; ``tests/netns`` is on
        ``PYTHONPATH``); ``listen``: URLs, where ``{address}``, ``{host}`` and ``{iface}`` are
        replaced (default ``tcp://ADDRESS:7400`` and ``udp://ADDRESS:7400``); ``options``: more
        keys of the TOML file (``timeout``, ``codec`` …; ``drain_timeout`` defaults to 1);
        ``env``: extra variables. The service sees ``CLUSTERRPC_LAB_NODE``/``_HOST``/
        ``_ADDRESS`` and ``CLUSTERRPC_LAB_DIR``. Waits until the node printed ``expect``
        addresses (default: one per listen URL) unless ``wait`` is false."""
        host = self.host(host)
        config, urls = self.node_config(host, name=name, services=services, listen=listen,
                                        options=options, keyring=keyring)
        name = name or host.name
        node_env = {"CLUSTERRPC_LAB_NODE": name, "CLUSTERRPC_LAB_HOST": host.name,
                    "CLUSTERRPC_LAB_ADDRESS": host.address, **(env or {})}
        node = NodeProcess(self, host, name, config, urls, node_env,
                           len(urls) if expect is None else expect)
        self.nodes.append(node)
        node.spawn()
        if wait:
            node.wait_ready(timeout)
        return node

    def start_nodes(self, hosts: Iterable[HostRef] | None = None, *, timeout: float = 30.0,
                    **kwargs: Any) -> list[NodeProcess]:
        """:meth:`start_node` on each of ``hosts`` (default: every host), started together."""
        chosen = [self.host(ref) for ref in (self.hosts if hosts is None else hosts)]
        nodes = [self.start_node(host, wait=False, **kwargs) for host in chosen]
        for node in nodes:
            node.wait_ready(timeout)
        return nodes

    # -- calls ------------------------------------------------------------------------------

    def call(self, host: HostRef, url: str, method: str, *args: str, timeout: float = 2.0,
             options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """Run the real ``clusterrpc call --timeout TIMEOUT [OPTIONS] URL METHOD ARGS`` (args in
        JSON notation) inside ``host``, signed with the lab's keyring. Its ``returncode`` is the
        command's exit status (0 ok, 1 fault, 3 transport error, 4 timeout)."""
        return self.run(host, [sys.executable, "-m", "clusterrpc", "call", "--timeout",
                               str(timeout), *options, url, method, *args],
                        timeout=timeout + COMMAND_TIMEOUT)

    def calls(self, host: HostRef, calls: Iterable[tuple[str, str, Sequence[Any]]], *,
              timeout: float = 2.0) -> list[dict[str, Any]]:
        """Make many calls from ``host`` in one process (``lab_client.py``, all at once, one
        client each): ``calls`` are ``(url, method, params)`` with JSON-able params. Returns one
        ``{"status", "value", "error"}`` per call, where ``status`` is the exit status
        ``clusterrpc call`` would have given."""
        rows = [[url, method, list(params)] for url, method, params in calls]
        request = json.dumps({"keyring": str(self.keyring_path), "timeout": timeout,
                              "calls": rows})
        result = self.run(host, [sys.executable, str(CLIENT_SCRIPT)], input=request,
                          timeout=timeout + COMMAND_TIMEOUT)
        if result.returncode != 0:
            raise LabError(f"lab_client on {self.host(host).name} failed "
                           f"({result.returncode}):\n{result.stderr}")
        answers: list[dict[str, Any]] = json.loads(result.stdout)
        return answers

    # -- faults -----------------------------------------------------------------------------

    def _apply_nft(self, host: Host) -> None:
        script = _nft_script(self._faults[host.name].rules())
        result = self.run(host, [self.nft, "-f", "-"], input=script)
        if result.returncode != 0:
            raise LabError(f"nft on {host.name} failed: {result.stderr.strip()}\n{script}")

    def loss(self, host: HostRef, percent: int, *, direction: str = "both") -> None:
        """Drop ``percent`` % of the host's IP packets on ``eth0``, each independently at random
        (``numgen random mod 100 < P drop``, with a counter): ``direction`` ``"in"`` filters in
        the chain ``input`` (packets arriving for the host, multicast included), ``"out"`` in
        the chain ``output`` (packets it sends), ``"both"`` (default) in both, so a
        request-answer exchange with the host crosses two lossy hops. 0 removes the rule; 100
        is an unconditional drop. Replaces the loss set earlier in those directions."""
        host = self.host(host)
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError(f"percent must be an integer from 0 to 100, not {percent!r}")
        for chain in _chains(direction):
            self._faults[host.name].loss[chain] = percent
        self._apply_nft(host)

    def drop_all(self, host: HostRef, *, direction: str = "both") -> None:
        """A firewall partition: drop every IP packet of the host on ``eth0`` (``direction`` as
        for :meth:`loss`) while the link stays up. :meth:`heal` removes it."""
        host = self.host(host)
        self._faults[host.name].drop_all.update(_chains(direction))
        self._apply_nft(host)

    def dropped(self, host: HostRef) -> dict[str, int]:
        """Packets the lab's rules dropped on ``host`` so far, per chain."""
        host = self.host(host)
        result = self.run(host, [self.nft, "-j", "list", "table", "inet", NFT_TABLE])
        counts = {"input": 0, "output": 0}
        if result.returncode != 0:
            return counts  # no table: no faults
        for item in json.loads(result.stdout).get("nftables", []):
            rule = item.get("rule")
            if rule is None:
                continue
            for expression in rule.get("expr", []):
                if "counter" in expression:
                    counts[rule["chain"]] += expression["counter"]["packets"]
        return counts

    def partition(self, host: HostRef, *, side: str = "hub") -> None:
        """Cut the host off the lab by taking its veth link down: ``side="hub"`` (default) takes
        the bridge port ``vhI`` down in the hub (the cable pulled at the switch: the host keeps
        its routes, its packets and those sent to it vanish); ``side="host"`` takes ``eth0``
        down inside the host (the kernel then also drops its routes: sends fail at once with
        "network unreachable"). :meth:`heal` undoes it."""
        host = self.host(host)
        if side == "hub":
            self._ipn(self.hub, "link", "set", host.hub_iface, "down")
        elif side == "host":
            self._ipn(host.netns, "link", "set", host.iface, "down")
        else:
            raise ValueError(f"side must be 'hub' or 'host', not {side!r}")
        self._faults[host.name].partition = side

    def heal(self, host: HostRef) -> None:
        """End a partition of the host (:meth:`partition` and :meth:`drop_all`); the random
        loss of :meth:`loss` stays. Waits until the link is up and the bridge port forwards."""
        host = self.host(host)
        faults = self._faults[host.name]
        self._ipn(self.hub, "link", "set", host.hub_iface, "up")
        self._ipn(host.netns, "link", "set", host.iface, "up")
        # taking eth0 down deleted the routes through it; the kernel restores the subnet's
        self._ipn(host.netns, "route", "replace", MULTICAST_ROUTE, "dev", host.iface)
        faults.partition = None
        if faults.drop_all:
            faults.drop_all.clear()
            self._apply_nft(host)
        self._wait_link(host)

    def clear_faults(self, host: HostRef | None = None) -> None:
        """Remove every fault of ``host`` (default: of every host): heal the link and delete
        the nftables table."""
        for chosen in self.hosts if host is None else [self.host(host)]:
            faults = self._faults[chosen.name]
            if faults.partition is not None:
                self.heal(chosen)
            faults.loss.clear()
            faults.drop_all.clear()
            self._apply_nft(chosen)

    def faults(self, host: HostRef) -> dict[str, Any]:
        """The faults in force on ``host``: ``{"loss": {chain: percent}, "drop_all": [chains],
        "partition": side or None}``."""
        faults = self._faults[self.host(host).name]
        return {"loss": {k: v for k, v in faults.loss.items() if v},
                "drop_all": sorted(faults.drop_all), "partition": faults.partition}

    # -- teardown ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise LabError("this lab is closed")

    def close(self) -> None:
        """Tear everything down (idempotent, never raises for what is already gone): stop every
        process the lab started (SIGCONT, SIGTERM, SIGKILL after ``TERM_GRACE`` seconds), kill
        anything left in its namespaces, delete the namespaces and the temporary directory."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        running = [p for p in self.processes if p.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                process.kill()
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=COMMAND_TIMEOUT)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        for namespace in reversed(self._namespaces):
            _kill_inside(self.ip, namespace)
        for namespace in reversed(self._namespaces):  # hosts, then the hub
            _run([self.ip, "netns", "delete", namespace])
        shutil.rmtree(self.tmpdir, ignore_errors=True)
