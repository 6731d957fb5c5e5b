"""The multi-host lab itself (``lab.py``), with what the package has today: five hosts in network
namespaces, a real ``clusterrpc serve`` in each, calls over TCP and UDP between every pair, and
each fault (partition three ways, random and total loss, pause, crash) seen from the callers;
multicast datagrams between the namespaces with TTL 1; and a teardown that leaves nothing.

Needs root, ``ip`` and ``nft`` (and the right to create namespaces); otherwise every test here
skips and says what is missing. ``pytest -m netns`` runs only these."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import conftest as netns_conftest
from tests.netns import lab as lab_module
from tests.netns.conftest import require_lab
from tests.netns.lab import (
    HOST_IFACE,
    MULTICAST_ROUTE,
    NFT_TABLE,
    Lab,
    LabError,
    NodeProcess,
    NodeStartError,
    find_tool,
    lab_namespaces,
    sweep_stale,
)

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

CALL_TIMEOUT = 1.5
"""Seconds a call waits in these tests: short, as every unreachable call waits it out."""
UNREACHABLE = {3, 4}
"""``clusterrpc call`` exit statuses of a host that cannot be reached: 3 when the transport
says so (a TCP connect that timed out, "network is unreachable"), 4 when no answer comes."""

GROUP = "239.203.0.1"
GROUP_PORT = 7601


# -- a five-host lab with a node on every host, shared by the module ------------------------------


@pytest.fixture(scope="module")
def lab5() -> Iterator[Lab]:
    require_lab()
    with Lab(5) as lab:
        lab.start_nodes()
        yield lab


@pytest.fixture
def five(lab5: Lab) -> Iterator[Lab]:
    """The five-host lab, back to health after the test: no faults, every node running."""
    yield lab5
    lab5.clear_faults()
    for node in lab5.nodes:
        if not node.alive:
            node.restart()
        elif node.paused:
            node.resume()


def node_on(lab: Lab, host: str) -> NodeProcess:
    return next(node for node in lab.nodes if node.host.name == host)


def statuses(lab: Lab, source: str, target: str) -> dict[str, dict[str, Any]]:
    """``lab.status`` on ``target``'s node from ``source``, over TCP and over UDP."""
    node = node_on(lab, target)
    answers = lab.calls(source, [(node.url(scheme), "lab.status", []) for scheme in ("tcp", "udp")],
                        timeout=CALL_TIMEOUT)
    return dict(zip(("tcp", "udp"), answers, strict=True))


def assert_reachable(lab: Lab, source: str, target: str) -> None:
    for scheme, answer in statuses(lab, source, target).items():
        assert answer["status"] == 0, f"{source} -> {target} over {scheme}: {answer}"
        assert answer["value"]["node"] == target


def assert_unreachable(lab: Lab, source: str, target: str) -> dict[str, dict[str, Any]]:
    answers = statuses(lab, source, target)
    for scheme, answer in answers.items():
        assert answer["status"] in UNREACHABLE, f"{source} -> {target} over {scheme}: {answer}"
    return answers


def host_json(lab: Lab, host: str, *argv: str) -> Any:
    result = lab.run(host, [lab.ip, "-j", *argv], check=True)
    return json.loads(result.stdout)


# -- what the lab builds -------------------------------------------------------------------------


def test_layout(five: Lab) -> None:
    assert len(five.namespaces) == 6
    assert five.namespaces[0] == five.hub
    assert all(name.startswith(f"crlab-{os.getpid()}-{five.token}-") for name in five.namespaces)
    assert set(five.namespaces) <= set(lab_namespaces())
    for index, host in enumerate(five.hosts, start=1):
        assert (host.name, host.address) == (f"h{index}", f"10.203.0.{index}")
        links = {link["ifname"]: link for link in host_json(five, host.name, "link", "show")}
        assert set(links) == {"lo", HOST_IFACE}
        assert "UP" in links["lo"]["flags"]
        assert links[HOST_IFACE]["operstate"] == "UP"
        addresses = host_json(five, host.name, "-4", "addr", "show", "dev", HOST_IFACE)[0]
        assert [(a["local"], a["prefixlen"]) for a in addresses["addr_info"]] == [
            (host.address, 24)]
        routes = {route["dst"]: route for route in host_json(five, host.name, "route", "show")}
        assert set(routes) == {"10.203.0.0/24", MULTICAST_ROUTE}  # no default route
        assert routes[MULTICAST_ROUTE]["dev"] == HOST_IFACE
    ports = json.loads(subprocess.run(
        [five.ip, "-n", five.hub, "-j", "link", "show", "master", "br0"],
        capture_output=True, text=True, check=True, timeout=30).stdout)
    assert sorted(port["ifname"] for port in ports) == [f"vh{i}" for i in range(1, 6)]
    assert [node.addresses for node in five.nodes] == [
        [f"tcp://10.203.0.{i}:7400", f"udp://10.203.0.{i}:7400"] for i in range(1, 6)]


# -- unicast between the hosts -------------------------------------------------------------------


def test_every_host_calls_every_other_host_over_tcp_and_udp(five: Lab) -> None:
    for source in five.hosts:
        others = [node for node in five.nodes if node.host != source]
        calls: list[tuple[str, str, list[Any]]] = [
            (node.url(scheme), "lab.status", []) for node in others
            for scheme in ("tcp", "udp")
        ]
        answers = five.calls(source, calls, timeout=5.0)
        got = [(answer["status"], (answer["value"] or {}).get("node")) for answer in answers]
        assert got == [(0, node.name) for node in others for _ in ("tcp", "udp")], answers


def test_calls_travel_over_the_lab_network(five: Lab) -> None:
    """The callee sees the caller's lab address: the call crossed the veths and the bridge."""
    h2 = node_on(five, "h2")
    answers = five.calls("h1", [(h2.url(scheme), "lab.caller", []) for scheme in ("tcp", "udp")],
                         timeout=5.0)
    for answer, transport in zip(answers, ("tcp", "udp"), strict=True):
        assert answer["status"] == 0, answer
        assert answer["value"]["transport"] == transport
        assert answer["value"]["peer"].startswith("10.203.0.1:"), answer


def test_real_clusterrpc_call_command_inside_a_host(five: Lab) -> None:
    h4 = node_on(five, "h4")
    for scheme in ("tcp", "udp"):
        result = five.call("h3", h4.url(scheme), "lab.echo", '"from h3"', timeout=5.0)
        assert (result.returncode, result.stdout, result.stderr) == (0, "from h3\n", "")


# -- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["hub", "host", "nft"])
def test_partition_and_heal(five: Lab, how: str) -> None:
    if how == "nft":
        five.drop_all("h3")
        assert five.faults("h3")["drop_all"] == ["input", "output"]
    else:
        five.partition("h3", side=how)
        assert five.faults("h3")["partition"] == how
    assert_unreachable(five, "h1", "h3")
    assert_unreachable(five, "h3", "h1")  # and the other way round
    assert_reachable(five, "h1", "h2")  # the rest of the lab is not affected
    result = five.call("h2", node_on(five, "h3").url("udp"), "lab.status",
                       timeout=CALL_TIMEOUT)
    assert result.returncode == 4, result.stderr  # the real command: "no reply within"
    if how == "nft":
        assert sum(five.dropped("h3").values()) > 0
    five.heal("h3")
    assert five.faults("h3") == {"loss": {}, "drop_all": [], "partition": None}
    assert_reachable(five, "h1", "h3")
    assert_reachable(five, "h3", "h1")
    routes = {route["dst"] for route in host_json(five, "h3", "route", "show")}
    assert MULTICAST_ROUTE in routes  # heal restores the route a downed eth0 lost


def test_total_loss_times_out_and_no_loss_works(five: Lab) -> None:
    five.loss("h2", 100)
    assert five.faults("h2")["loss"] == {"input": 100, "output": 100}
    answers = assert_unreachable(five, "h1", "h2")
    assert answers["udp"]["status"] == 4  # no reply within the timeout
    assert "timed out" in answers["tcp"]["error"]  # the SYN never gets an answer
    assert five.dropped("h2")["input"] > 0
    five.loss("h2", 0)
    assert five.faults("h2")["loss"] == {}
    assert_reachable(five, "h1", "h2")
    ruleset = five.run("h2", [five.nft, "list", "ruleset"], check=True).stdout
    assert NFT_TABLE not in ruleset  # no fault left: no table


RECEIVE_COUNT = r"""
import pathlib, socket, sys, time
address, port, ready, total = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
sock.bind((address, port))
sock.settimeout(1.0)
pathlib.Path(ready).touch()
count, deadline = 0, time.monotonic() + 10
while count < total and time.monotonic() < deadline:
    try:
        sock.recv(2048)
    except TimeoutError:
        if count:
            break  # a second of silence after the burst: the rest was dropped
        continue
    count += 1
print(count)
"""

SEND_BURST = r"""
import socket, sys, time
address, port, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(total):
    sock.sendto(b"datagram %d" % i, (address, port))
    time.sleep(0.001)
"""


def wait_for_files(paths: list[Path], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        assert time.monotonic() < deadline, f"not ready within {timeout} s: {paths}"
        time.sleep(0.02)


def test_random_loss_drops_about_that_share(five: Lab) -> None:
    """50 % loss on h2's input: of 400 datagrams from h1 about half arrive (the bounds are
    more than 7 standard deviations wide), and the rule's counter saw the others."""
    total = 400
    five.loss("h2", 50, direction="in")
    assert five.faults("h2")["loss"] == {"input": 50}
    ready = five.tmpdir / "ready-count"
    receiver = five.popen("h2", [sys.executable, "-c", RECEIVE_COUNT, "10.203.0.2", "7600",
                                 str(ready), str(total)], stdout=subprocess.PIPE, text=True)
    wait_for_files([ready])
    sent = five.python("h1", SEND_BURST, "10.203.0.2", "7600", str(total))
    assert sent.returncode == 0, sent.stderr
    out, _ = receiver.communicate(timeout=30)
    received = int(out)
    assert 130 <= received <= 270, received
    dropped = five.dropped("h2")
    # IPv6 neighbour discovery and the like may be dropped too, but not much of it
    assert total - received <= dropped["input"] <= total - received + 20, dropped
    assert dropped["output"] == 0


def test_pause_times_out_and_resume_answers(five: Lab) -> None:
    h4 = node_on(five, "h4")
    h4.pause()
    answers = statuses(five, "h1", "h4")
    assert [answer["status"] for answer in answers.values()] == [4, 4], answers
    h4.resume()
    assert_reachable(five, "h1", "h4")


def test_crash_gives_connect_errors_and_restart_recovers(five: Lab) -> None:
    h5 = node_on(five, "h5")
    old_pid = h5.pid
    h5.kill()
    assert not h5.alive
    answers = statuses(five, "h1", "h5")
    assert answers["tcp"]["status"] == 3, answers  # connection refused
    assert "refused" in answers["tcp"]["error"]
    assert answers["udp"]["status"] in UNREACHABLE, answers  # ICMP port unreachable, mostly
    h5.restart()
    assert h5.pid != old_pid
    assert_reachable(five, "h1", "h5")


# -- multicast between the namespaces --------------------------------------------------------------


MULTICAST_RECEIVE = r"""
import json, pathlib, socket, sys
group, port, iface, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind((group, port))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                socket.inet_aton(group) + socket.inet_aton(iface))
sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
sock.settimeout(3.0)
pathlib.Path(ready).touch()
try:
    data, ancillary, _, sender = sock.recvmsg(2048, socket.CMSG_SPACE(4))
except TimeoutError:
    print(json.dumps(None))
else:
    ttl = [int.from_bytes(d[:4], sys.byteorder) for level, kind, d in ancillary
           if level == socket.IPPROTO_IP and kind == socket.IP_TTL]
    print(json.dumps({"data": data.decode(), "sender": sender[0], "ttl": ttl}))
"""

MULTICAST_SEND = r"""
import socket, sys, time
group, port, iface = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
sock.bind((iface, 0))
for _ in range(3):  # three copies, in case the first races an interface
    sock.sendto(b"hello group", (group, port))
    time.sleep(0.05)
"""


def test_multicast_datagram_between_namespaces_with_ttl_1(five: Lab) -> None:
    """h1 sends to a group on its veth with TTL 1; h2 and h3, members on theirs, receive it
    with TTL 1 from h1's lab address; h4 (partitioned) and h5 (100 % input loss) do not."""
    five.partition("h4")
    five.loss("h5", 100, direction="in")
    receivers = {}
    ready = []
    for host in five.hosts[1:]:
        marker = five.tmpdir / f"ready-{host.name}"
        ready.append(marker)
        receivers[host.name] = five.popen(
            host, [sys.executable, "-c", MULTICAST_RECEIVE, GROUP, str(GROUP_PORT),
                   host.address, str(marker)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_files(ready)
    sent = five.python("h1", MULTICAST_SEND, GROUP, str(GROUP_PORT), five.hosts[0].address)
    assert sent.returncode == 0, sent.stderr
    got = {}
    for name, process in receivers.items():
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        got[name] = json.loads(out)
    expected = {"data": "hello group", "sender": "10.203.0.1", "ttl": [1]}
    assert got == {"h2": expected, "h3": expected, "h4": None, "h5": None}
    assert five.dropped("h5")["input"] > 0


# -- teardown, stale labs, errors ----------------------------------------------------------------


def root_namespace_state() -> dict[str, str]:
    """What the lab must never touch: the root namespace's links, routes and firewall."""
    ip, nft = find_tool("ip"), find_tool("nft")
    assert ip is not None
    assert nft is not None
    commands = {"links": [ip, "-o", "link", "show"], "routes": [ip, "route", "show"],
                "rules": [ip, "rule", "show"], "nft": [nft, "list", "ruleset"]}
    state = {}
    for key, argv in commands.items():
        output = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
        if key == "links":  # counters and states of the machine's own links change by themselves
            output = "\n".join(line.split(":")[1] for line in output.splitlines())
        state[key] = output
    return state


def test_teardown_leaves_nothing(make_lab: Callable[..., Lab]) -> None:
    require_lab()
    before = root_namespace_state()
    lab = make_lab(2)
    n1, n2 = lab.start_nodes()
    n2.pause()
    sleeper = lab.popen("h1", ["sleep", "60"])
    lab.loss("h1", 20)
    lab.partition("h2")
    namespaces, tmpdir = lab.namespaces, lab.tmpdir
    pids = [n1.pid, n2.pid, sleeper.pid]
    assert set(namespaces) <= set(lab_namespaces())
    assert root_namespace_state() == before  # building the lab touched nothing outside it

    started = time.monotonic()
    lab.close()
    elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed  # the paused node got SIGCONT + SIGTERM and stopped
    assert not set(namespaces) & set(lab_namespaces())
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not tmpdir.exists()
    assert root_namespace_state() == before
    lab.close()  # idempotent
    with pytest.raises(LabError, match="closed"):
        lab.run("h1", ["true"])


def test_a_node_that_cannot_start_says_why(lab: Lab) -> None:
    with pytest.raises(NodeStartError, match=r"cannot import no_such_module"):
        lab.start_node("h1", services={"x": "no_such_module:Thing"})
    node = lab.start_node(2, listen=["tcp://{address}:7411"])  # the lab still works
    assert node.addresses == ["tcp://10.203.0.2:7411"]
    result = lab.call("h1", node.url("tcp"), "lab.status", options=["--json"], timeout=5.0)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["node"] == "h2"


def test_sweep_deletes_only_the_namespaces_of_dead_labs() -> None:
    require_lab()
    ip = find_tool("ip")
    assert ip is not None
    probe = subprocess.Popen(["true"])  # its pid no longer runs once reaped
    probe.wait(timeout=30)
    stale = f"{lab_module.PREFIX}-{probe.pid}-abcdef-h1"
    live = f"{lab_module.PREFIX}-{os.getpid()}-fedcba-h1"
    inside: subprocess.Popen[bytes] | None = None
    try:
        for name in (stale, live):
            subprocess.run([ip, "netns", "add", name], check=True, timeout=30)
        inside = subprocess.Popen([ip, "netns", "exec", stale, "sleep", "60"],
                                  stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while str(inside.pid) not in subprocess.run(
                [ip, "netns", "pids", stale], capture_output=True, text=True, timeout=30,
                check=False).stdout.split():
            assert time.monotonic() < deadline, "sleep did not start in the namespace"
            time.sleep(0.02)
        deleted = sweep_stale()
        # (a test run in parallel may sweep the stale namespace first: check what is left)
        assert stale not in lab_namespaces()
        assert inside.wait(timeout=10) == -9  # what ran in the stale lab was killed
        assert live not in deleted
        assert live in lab_namespaces()
    finally:
        if inside is not None and inside.poll() is None:
            inside.kill()
            inside.wait(timeout=10)
        for name in (stale, live):
            subprocess.run([ip, "netns", "delete", name], capture_output=True, timeout=30,
                           check=False)


def gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie that nobody reaped yet counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


LAB_OWNER = r"""
import json, os, signal, sys, time
from tests.netns.lab import Lab
lab = Lab(2)
nodes = lab.start_nodes()
print(json.dumps({"namespaces": lab.namespaces, "pids": [node.pid for node in nodes],
                  "tmpdir": str(lab.tmpdir)}), flush=True)
if sys.argv[1] == "sigkill":
    time.sleep(60)  # killed by the test before its teardown can run
# "atexit": the interpreter exits without closing the lab
"""


@pytest.mark.parametrize("end", ["atexit", "sigkill"])
def test_a_lab_whose_owner_ends_without_closing_it(end: str) -> None:
    """A process that exits without closing its lab: ``atexit`` tears the lab down. One that is
    killed: its namespaces stay, and the next sweep deletes them (and its temporary directory) and
    kills their nodes."""
    require_lab()
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    owner = subprocess.Popen([sys.executable, "-c", LAB_OWNER, end], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, text=True, env=env, cwd=root)
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, "the lab owner printed nothing"
        built = json.loads(line)
        if end == "sigkill":
            assert owner.poll() is None
            owner.kill()
        owner.wait(timeout=30)
        if end == "sigkill":
            assert set(built["namespaces"]) <= set(lab_namespaces())  # left behind
            sweep_stale()
        assert not set(built["namespaces"]) & set(lab_namespaces())
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in built["pids"]):
            assert time.monotonic() < deadline, "the lab's nodes still run"
            time.sleep(0.02)
        assert not Path(built["tmpdir"]).exists()
    finally:
        if owner.poll() is None:
            owner.kill()
        owner.wait(timeout=30)
        if owner.stdout is not None:
            owner.stdout.close()


def test_unavailable_reasons_say_what_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """These run anywhere: the probe's messages, without touching the network."""
    monkeypatch.setattr(lab_module.sys, "platform", "linux")  # type: ignore[attr-defined]
    monkeypatch.setattr(lab_module.os, "geteuid", lambda: 1000)  # type: ignore[attr-defined]
    assert "needs root" in (lab_module._probe() or "")
    monkeypatch.setattr(lab_module.os, "geteuid", lambda: 0)  # type: ignore[attr-defined]
    monkeypatch.setattr(lab_module, "find_tool", lambda name: None)
    assert "`ip` (iproute2)" in (lab_module._probe() or "")
    monkeypatch.setattr(lab_module, "find_tool",
                        lambda name: None if name == "nft" else "/usr/sbin/ip")
    assert "`nft` (nftables)" in (lab_module._probe() or "")
    # an unprivileged container: `ip` is there, but cannot make a namespace
    fake_ip = tmp_path / "ip"
    fake_ip.write_text("#!/bin/sh\necho 'mount --make-shared /run/netns failed: Operation not "
                       "permitted' >&2\nexit 1\n")
    fake_ip.chmod(0o755)
    monkeypatch.setattr(lab_module, "find_tool", lambda name: str(fake_ip))
    reason = lab_module._probe() or ""
    assert "`ip netns add` failed" in reason
    assert "Operation not permitted" in reason
    # and the fixtures turn the reason into a skip that says it
    monkeypatch.setattr(netns_conftest, "unavailable_reason", lambda: reason)
    with pytest.raises(pytest.skip.Exception, match="netns lab unavailable: `ip netns add`"):
        require_lab()
