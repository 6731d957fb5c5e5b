"""Multicast calls through real sockets on loopback: every multicast socket is pinned to the
127.0.0.1 interface with TTL 1, and each test uses a random group, so nothing leaves the machine
and concurrent test runs do not hear each other."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clusterrpc import (
    ConfigurationError,
    ConnectionClosedError,
    EncodeError,
    Fault,
    Group,
    GroupReplies,
    Node,
    connect_group,
    remote,
)
from clusterrpc.cli.main import main
from clusterrpc.testing import VirtualClock
from tests.conftest import RunVirtual, scaled
from tests.rpc_helpers import CLUSTER, Election, make_keyring, run

KEYRING = make_keyring()


def random_group(ttl: int | None = None) -> str:
    group = f"239.192.{random.randint(1, 254)}.{random.randint(1, 254)}"
    url = f"udp://{group}:{random.randint(20000, 60000)}?iface=127.0.0.1"
    return url if ttl is None else f"{url}&ttl={ttl}"


def members(count: int, group: str | Group, **options: Any) -> list[Node]:
    nodes = []
    for index in range(count):
        node = Node(f"n{index}", cluster=CLUSTER, keyring=options.get("keyring", KEYRING),
                    groups={"all": group})
        node.serve(Election(), name="election")
        nodes.append(node)
    return nodes


async def started(nodes: list[Node]) -> None:
    for node in nodes:
        await node.start()


async def stopped(nodes: list[Node]) -> None:
    for node in nodes:
        await node.stop()


def test_gathers_every_member_and_reports_the_missing_one(virtual_clock: VirtualClock,
                                                          run_virtual: RunVirtual) -> None:
    # Virtual time, real sockets: the clock jumps to the deadline once no datagram has arrived
    # for a moment of real time.
    virtual_clock.autojump_threshold = scaled(0.05)

    async def scenario() -> None:
        url = random_group()
        expected = [f"n{index}" for index in range(6)]  # n5 never starts
        nodes = members(5, Group(url, members=expected))
        await started(nodes)
        try:
            group = nodes[0].group("all")
            loop = asyncio.get_running_loop()
            began = loop.time()
            replies = await group.election.status(timeout=0.5)
            assert isinstance(replies, GroupReplies)
            assert sorted(replies) == expected[:5]
            assert all(value == {"term": 3, "leader": "n1", "votes": 0}
                       for value in replies.values())
            assert replies.missing == ("n5",)
            assert replies.timed_out
            assert loop.time() - began == pytest.approx(0.5)  # returned at the deadline

            quick = await group.election.status(timeout=5, quorum=3)
            assert len(quick) >= 3
            assert not quick.timed_out

            without_me = await group.election.status(timeout=0.5, include_self=False)
            assert "n0" not in without_me
            assert sorted(without_me) == expected[1:5]
            assert nodes[0].counters["calls"] == 2  # it did not serve its own third call
        finally:
            await stopped(nodes)

    run_virtual(scenario())


def test_returns_as_soon_as_all_expected_members_answered(virtual_clock: VirtualClock,
                                                          run_virtual: RunVirtual) -> None:
    virtual_clock.autojump_threshold = scaled(0.05)  # as above: virtual time, real sockets

    async def scenario() -> None:
        nodes = members(4, Group(random_group(), members=["n0", "n1", "n2", "n3"]))
        await started(nodes)
        try:
            loop = asyncio.get_running_loop()
            began = loop.time()
            replies = await nodes[1].group("all").election.double(21, timeout=10)
            assert loop.time() - began < 2
            assert dict(replies) == {f"n{index}": 42 for index in range(4)}
            assert not replies.timed_out
            assert replies.missing == ()
        finally:
            await stopped(nodes)

    run_virtual(scenario())


def test_faults_per_member_and_members_without_the_method_stay_silent() -> None:
    class Other:
        @remote
        def ping(self) -> str:
            """Answer."""
            return "pong"

    async def scenario() -> None:
        url = random_group()
        nodes = members(3, url)
        bystander = Node("b", cluster=CLUSTER, keyring=KEYRING, groups={"all": url})
        bystander.serve(Other(), name="other")
        await started([*nodes, bystander])
        try:
            group = nodes[0].group("all")
            failed = await group.election.fail("boom", timeout=0.4)
            assert sorted(failed) == ["n0", "n1", "n2"]
            assert all(answer == Fault(-32500, "RuntimeError: boom")
                       for answer in failed.values())
            assert failed.faults.keys() == {"n0", "n1", "n2"}
            assert bystander.counters["multicast_ignored"] == 1
            pinged = await group.other.ping(timeout=0.4)
            assert dict(pinged) == {"b": "pong"}
        finally:
            await stopped([*nodes, bystander])

    run(scenario())


def test_oneway_multicast_reaches_everyone_and_nothing_comes_back() -> None:
    async def scenario() -> None:
        nodes = members(4, random_group())
        await started(nodes)
        try:
            assert await nodes[0].group("all").oneway.election.vote(7, "n0") is None
            await nodes[0].group("all").oneway.election.crash()
            for _ in range(100):
                if all(node.counters["oneway_calls"] == 2 for node in nodes):
                    break
                await asyncio.sleep(0.01)
            assert [node.counters["oneway_calls"] for node in nodes] == [2] * 4
            assert [node.counters["oneway_errors"] for node in nodes] == [1] * 4
            sender = nodes[0]._group_senders["all"]
            assert sender.connection.late_replies == 0  # no answer packet at all
        finally:
            await stopped(nodes)

    run(scenario())


def test_a_node_with_another_key_is_never_counted() -> None:
    async def scenario() -> None:
        url = random_group()
        nodes = members(3, Group(url, members=["n0", "n1", "n2", "intruder"]))
        intruder = Node("intruder", cluster=CLUSTER, keyring=make_keyring("k1"),
                        groups={"all": url})
        intruder.serve(Election(), name="election")
        await started([*nodes, intruder])
        try:
            replies = await nodes[0].group("all").election.status(timeout=0.4)
            assert sorted(replies) == ["n0", "n1", "n2"]
            assert replies.missing == ("intruder",)
            assert intruder.counters["refused_bad_authenticator"] >= 1
            # And the intruder's own calls are refused by every member.
            theirs = await intruder.group("all").election.status(timeout=0.3)
            assert dict(theirs) == {"intruder": {"term": 3, "leader": "n1", "votes": 0}}
            assert all(node.counters["refused_bad_authenticator"] >= 1 for node in nodes)
        finally:
            await stopped([*nodes, intruder])

    run(scenario())


def test_fan_out_group_of_unicast_addresses() -> None:
    async def scenario() -> None:
        servers = []
        for index in range(3):
            node = Node(f"u{index}", cluster=CLUSTER, keyring=KEYRING,
                        listen=["udp://127.0.0.1:0"])
            node.serve(Election(), name="election")
            servers.append(node)
        await started(servers)
        caller = Node("caller", cluster=CLUSTER, keyring=KEYRING, groups={
            "all": Group([node.addresses[0] for node in servers],
                         members=["u0", "u1", "u2"]),
        })
        await caller.start()
        try:
            replies = await caller.group("all").election.double(2, timeout=2)
            assert dict(replies) == {"u0": 4, "u1": 4, "u2": 4}
            await servers[2].stop()
            partial = await caller.group("all").election.double(3, timeout=0.3)
            assert dict(partial) == {"u0": 6, "u1": 6}
            assert partial.missing == ("u2",)
            await caller.group("all").oneway.election.vote(1, "caller")
        finally:
            await caller.stop()
            await stopped(servers)

    run(scenario())


def test_oversized_payload_is_refused_before_sending() -> None:
    async def scenario() -> None:
        nodes = members(2, random_group())
        await started(nodes)
        try:
            with pytest.raises(EncodeError, match="datagram"):
                await nodes[0].group("all").election.echo(b"x" * 70_000, timeout=0.5)
            with pytest.raises(EncodeError, match="datagram"):
                await nodes[0].group("all").oneway.election.echo(b"x" * 70_000)
            assert nodes[1].counters["accepted"] == 0
        finally:
            await stopped(nodes)

    run(scenario())


def test_multicast_sockets_are_pinned_to_the_interface_with_ttl_1() -> None:
    async def scenario() -> None:
        nodes = members(1, random_group())
        ttl3 = Node("t", cluster=CLUSTER, keyring=KEYRING, groups={"g": random_group(ttl=3)})
        await started([*nodes, ttl3])
        try:
            for node, ttl in ((nodes[0], 1), (ttl3, 3)):
                sender = next(iter(node._group_senders.values()))
                assert sender.transport is not None
                sock = sender.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == ttl
                interface = sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, 4)
                assert socket.inet_ntoa(interface) == "127.0.0.1"
                assert sock.getsockname()[0] == "127.0.0.1"
            member = nodes[0]._group_members[0]
            assert member.transport is not None
            sock = member.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 1
        finally:
            await stopped([*nodes, ttl3])

    run(scenario())


def test_group_configuration_and_state_errors() -> None:
    with pytest.raises(ConfigurationError, match="iface"):
        Node("n", cluster=CLUSTER, keyring=KEYRING, groups={"g": "udp://239.1.1.1:7000"})
    with pytest.raises(ConfigurationError, match="unicast udp"):
        Node("n", cluster=CLUSTER, keyring=KEYRING, groups={"g": ["tcp://127.0.0.1:1"]})
    with pytest.raises(ConfigurationError, match="IPv4"):
        Node("n", cluster=CLUSTER, keyring=KEYRING,
             groups={"g": "udp://[ff02::1]:7000?iface=::1"})
    node = Node("n", cluster=CLUSTER, keyring=KEYRING, groups={"g": random_group()})
    with pytest.raises(ConfigurationError, match="no group"):
        node.group("nope")

    async def scenario() -> None:
        with pytest.raises(ConnectionClosedError, match="not started"):
            await node.group("g").election.status()
        async with node:
            with pytest.raises(ConfigurationError, match="timeout"):
                await node.group("g").election.status(timeout=None)
            with pytest.raises(TypeError):
                await node.group("g").election.status(bogus=1)

    run(scenario())


def test_blocking_group_client() -> None:
    async def scenario() -> None:
        url = random_group()
        nodes = members(3, url)
        await started(nodes)
        try:
            def admin() -> tuple[Any, Any, Any]:
                with connect_group(url, keyring=KEYRING, members=["n0", "n1", "n2", "n9"],
                                   timeout=0.5) as group:
                    everyone = group.election.status()
                    quorum = group.call("election.double", 4, timeout=5, quorum=2)
                    assert quorum is not None
                    assert group.oneway.election.vote(2, "admin") is None
                    with pytest.raises(EncodeError):
                        group.election.echo(b"x" * 70_000)
                    return everyone, quorum, group
            everyone, quorum, group = await asyncio.to_thread(admin)
            assert sorted(everyone) == ["n0", "n1", "n2"]
            assert everyone.missing == ("n9",)
            assert everyone.timed_out
            assert len(quorum) >= 2
            assert set(quorum.values()) == {8}
            with pytest.raises(ConnectionClosedError):
                group.election.status()
            fan_out = Node("f", cluster=CLUSTER, keyring=KEYRING, listen=["udp://127.0.0.1:0"])
            fan_out.serve(Election(), name="election")
            async with fan_out:
                def by_fan_out() -> Any:
                    with connect_group(fan_out.addresses, keyring=KEYRING, members=["f"]) as g:
                        return g.election.double(5)
                assert dict(await asyncio.to_thread(by_fan_out)) == {"f": 10}
        finally:
            await stopped(nodes)

    run(scenario())
    with pytest.raises(ConfigurationError):
        connect_group("tcp://127.0.0.1:1", keyring=KEYRING)
    with pytest.raises(ConfigurationError, match="cluster"):
        connect_group(random_group(), keyring=None, insecure=True)


def test_cli_call_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keyring_file = tmp_path / "cluster.keys"
    KEYRING.save(keyring_file)

    def cli(*argv: str) -> tuple[int, str]:
        try:
            status = main(list(argv))
        except SystemExit as exit_:
            status = int(exit_.code or 0)
        return status, capsys.readouterr().out

    async def scenario() -> None:
        url = random_group()
        nodes = members(3, url)
        await started(nodes)
        try:
            common = ("-k", str(keyring_file), "--timeout", "0.5")
            status, out = await asyncio.to_thread(
                cli, "call", "--group", url, "election.double", "4", *common,
                "--members", "n0,n1,n2,n7")
            assert status == 4  # n7 is missing
            assert out.splitlines() == ["n0  8", "n1  8", "n2  8",
                                        "n7  (no answer within 0.5 s)"]
            status, out = await asyncio.to_thread(
                cli, "call", "--group", url, "election.fail", '"x"', *common, "--json")
            assert status == 1
            document = json.loads(out)
            assert document["replies"]["n1"] == {
                "fault": {"code": -32500, "message": "RuntimeError: x"}}
            assert document["missing"] == []
            status, out = await asyncio.to_thread(
                cli, "call", "--group", url, "election.status", *common, "--quorum", "1")
            assert status == 0
            assert len(out.splitlines()) >= 1
            status, out = await asyncio.to_thread(
                cli, "call", "--group", url, "election.vote", "1", '"cli"', *common,
                "--oneway")
            assert (status, out) == (0, "")
            status, _ = await asyncio.to_thread(
                cli, "call", "--group", nodes[0].addresses[0] if nodes[0].addresses else url,
                "election.status", *common, "--user", "x:y")
            assert status == 2
            status, _ = await asyncio.to_thread(
                cli, "call", "tcp://127.0.0.1:1", "election.status", *common, "--quorum", "2")
            assert status == 2
        finally:
            await stopped(nodes)

    run(scenario())


def test_serve_config_joins_groups(tmp_path: Path) -> None:
    keyring_file = tmp_path / "cluster.keys"
    KEYRING.save(keyring_file)
    url = random_group()
    (tmp_path / "node.toml").write_text(
        'name = "served"\nkeyring = "cluster.keys"\nlisten = ["udp://127.0.0.1:0"]\n'
        '[services]\nelection = "cli_service:Election"\n'
        f'[groups.all]\naddress = "{url}"\nmembers = ["served"]\n'
    )
    (tmp_path / "bad.toml").write_text(
        'name = "x"\nkeyring = "cluster.keys"\nlisten = []\n[groups.all]\nmembers = ["x"]\n'
    )
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    command = [sys.executable, "-m", "clusterrpc", "serve", "--print-addresses", "--config"]
    bad = subprocess.run([*command, str(tmp_path / "bad.toml")], capture_output=True,
                         text=True, timeout=30, env=environment, check=False)
    assert bad.returncode == 2
    assert "group `all`" in bad.stderr
    process = subprocess.Popen([*command, str(tmp_path / "node.toml")],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=environment)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("udp://127.0.0.1:")
        with connect_group(url, keyring=KEYRING, members=["served"], timeout=5) as group:
            replies = group.election.status()
        assert list(replies) == ["served"]
        assert not replies.timed_out
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
