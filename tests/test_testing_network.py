"""``clusterrpc.testing.MemoryNetwork``: nodes on an in-memory datagram network, with faults.

Every address here is made up (10.0.0.x, 239.1.1.1): nothing touches a real socket. Each test
runs its own event loop on a virtual clock that jumps to the next timer whenever the loop is idle
(``run_virtual``, ``tests/conftest.py``), so delays and deadlines are exact and cost no real time,
and stops every node it starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from clusterrpc import CallTimeoutError, ConfigurationError, Fault, Group, Node, TransportError
from clusterrpc.errors import EncodeError
from clusterrpc.testing import Datagram, MemoryNetwork
from clusterrpc.transports.addresses import parse_address
from clusterrpc.transports.datagrams import DatagramEndpoint
from clusterrpc.transports.engine import Messenger
from tests.conftest import RunVirtual, run_on_virtual_clock
from tests.rpc_helpers import CLUSTER, Election, make_keyring

KEYRING = make_keyring()
GROUP = "udp://239.1.1.1:7401"


def host(index: int) -> str:
    return f"10.0.0.{index + 1}"


def url(index: int) -> str:
    return f"udp://{host(index)}:7400"


def make_nodes(net: MemoryNetwork, count: int, *, members: list[str] | None = None,
               fan_out: bool = False) -> tuple[list[Node], list[Election]]:
    """``count`` nodes n0, n1 … listening on 10.0.0.1:7400, 10.0.0.2:7400 …, all members of the
    group "all" (multicast on 239.1.1.1:7401, or fan-out to their listen addresses)."""
    nodes, services = [], []
    for index in range(count):
        address: str | list[str] = (
            [url(other) for other in range(count)] if fan_out
            else f"{GROUP}?iface={host(index)}"
        )
        node = Node(f"n{index}", cluster=CLUSTER, keyring=KEYRING, listen=[url(index)],
                    groups={"all": Group(address, members=members)}, network=net, timeout=1.0)
        election = Election()
        node.serve(election, name="election")
        nodes.append(node)
        services.append(election)
    return nodes, services


@asynccontextmanager
async def running(nodes: list[Node]) -> AsyncIterator[list[Node]]:
    try:
        for node in nodes:
            await node.start()
        yield nodes
    finally:
        for node in nodes:
            await node.stop()


def refused(node: Node) -> int:
    return sum(value for name, value in node.counters.items() if name.startswith("refused_"))


STATUS = {"term": 3, "leader": "n1", "votes": 0}


def test_unicast_and_oneway_calls(run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        net = MemoryNetwork()
        nodes, services = make_nodes(net, 2)
        async with running(nodes):
            assert nodes[1].addresses == ["udp://10.0.0.2:7400"]
            peer = nodes[0].peer(url(1))
            assert await peer.election.status() == STATUS
            assert await peer.election.echo({"b": b"\x00", "l": [1, 2.5]}) == {
                "b": b"\x00", "l": [1, 2.5]}
            who = await peer.election.who()
            assert who["node"] == "n0"
            assert who["transport"] == "udp"
            assert who["peer"] == "10.0.0.1:7400"  # calls leave from the listen socket
            with pytest.raises(Fault) as fault:
                await peer.election.refuse()
            assert fault.value.code == 4711

            await peer.oneway.election.vote(4, "n0")
            assert services[1].votes == []  # never delivered inside sendto
            await net.settle()
            assert services[1].votes == [(4, "n0")]

            # A node without a udp:// listen address calls from a client socket bound to
            # 0.0.0.0 and a free port; the answer finds its way back.
            client = Node("c", cluster=CLUSTER, keyring=KEYRING, network=net)
            async with client:
                who = await client.peer(url(0), timeout=1).election.who()
                assert who["node"] == "c"
                assert who["peer"].startswith("0.0.0.0:")
                assert int(who["peer"].split(":")[1]) >= 49152

            # Nobody at 10.0.0.9: the datagram is counted and dropped, the call times out.
            with pytest.raises(CallTimeoutError):
                await nodes[0].peer("udp://10.0.0.9:7400").election.status(timeout=0.1)
            assert net.undeliverable == 1
        counters = net.counters
        assert counters["sent"] == counters["delivered"] + counters["undeliverable"]
        assert counters["dropped"] == counters["duplicated"] == counters["corrupted"] == 0

    run_virtual(scenario())


def test_group_calls_gather_every_member(run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        net = MemoryNetwork()
        names = ["n0", "n1", "n2", "n3"]
        nodes, services = make_nodes(net, 4, members=names)
        async with running(nodes):
            loop = asyncio.get_running_loop()
            began = loop.time()
            replies = await nodes[0].group("all").election.status(timeout=5)
            assert dict(replies) == dict.fromkeys(names, STATUS)
            assert not replies.missing
            assert not replies.timed_out
            assert loop.time() - began < 1.0  # complete: it did not wait for the deadline

            who = await nodes[0].group("all").election.who(timeout=5, include_self=False)
            assert sorted(who) == names[1:]
            # Members answer from their interface address; the call came from n0's sender,
            # bound on its group's interface like the real socket.
            assert all(answer["peer"].startswith("10.0.0.1:") for answer in who.values())

            await nodes[2].group("all").oneway.election.vote(5, "n2")
            await net.settle()
            assert [service.votes for service in services] == [[(5, "n2")]] * 4

    run_virtual(scenario())


def test_fan_out_groups(run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        net = MemoryNetwork()
        names = ["n0", "n1", "n2"]
        nodes, _ = make_nodes(net, 3, members=names, fan_out=True)
        async with running(nodes):
            replies = await nodes[1].group("all").election.who(timeout=5)
            assert sorted(replies) == names
            # The fan-out sender is bound to 0.0.0.0; its datagrams come from the node's host.
            assert all(answer["peer"].startswith("10.0.0.2:") for answer in replies.values())

    run_virtual(scenario())


def test_duplicated_and_reordered_packets_never_produce_a_duplicate_result(
        run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        net = MemoryNetwork(seed=3)
        net.duplicate(1.0, copies=2)
        net.reorder(0.5)
        names = ["n0", "n1", "n2", "n3"]
        nodes, services = make_nodes(net, 4, members=names)
        async with running(nodes):
            peer = nodes[0].peer(url(1))
            for value in range(10):
                assert await peer.election.echo(value) == value
                assert await peer.election.double(value) == 2 * value
            for _ in range(5):
                replies = await nodes[0].group("all").election.status(timeout=5)
                assert sorted(replies) == names
                assert all(reply == STATUS for reply in replies.values())
                assert not replies.missing
            for term in range(5):
                await peer.oneway.election.vote(term, "n0")
            await net.settle()
            # Each one-way call ran once although it arrived three times.
            assert services[1].votes == [(term, "n0") for term in range(5)]
            assert nodes[1].counters["calls"] == 20 + 5
            assert nodes[1].counters["oneway_calls"] == 5
            # The copies were refused by the replay window, at servers and callers alike.
            assert nodes[1].counters["refused_replay"] >= 2 * (20 + 5 + 5)
            assert nodes[0].counters["refused_replay"] >= 2 * (20 + 5 * 4)
            assert all(node.counters["refused_replay"] >= 10 for node in nodes)
        # 20 calls and their answers, 5 one-way calls; 5 group calls to 4 members, 4 answers.
        assert net.sent == 20 * 2 + 5 + 5 * (1 + 4)
        assert net.duplicated == 2 * (20 * 2 + 5 + 5 * (4 + 4))
        assert net.delivered == 3 * (20 * 2 + 5 + 5 * (4 + 4))
        assert net.reordered > 0

    run_virtual(scenario())


def test_a_dropped_members_link_is_reported_missing_by_the_deadline(
        run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        net = MemoryNetwork()
        names = ["n0", "n1", "n2", "n3"]
        nodes, _ = make_nodes(net, 4, members=names)
        rule = net.drop(1.0, dst="n2")  # n2 hears nothing; the others are untouched
        async with running(nodes):
            loop = asyncio.get_running_loop()
            began = loop.time()
            replies = await nodes[0].group("all").election.status(timeout=0.3)
            elapsed = loop.time() - began
            assert sorted(replies) == ["n0", "n1", "n3"]
            assert replies.missing == ("n2",)
            assert replies.timed_out
            assert elapsed == pytest.approx(0.3)  # at the deadline, not before or long after
            assert rule.hits == 1

            rule.remove()
            net.drop(1.0, src="10.0.0.4")  # now n3's answers are lost (by its host address)
            replies = await nodes[0].group("all").election.status(timeout=0.3)
            assert replies.missing == ("n3",)

            net.clear()
            replies = await nodes[0].group("all").election.status(timeout=5)
            assert not replies.missing

    run_virtual(scenario())


def test_corrupted_packets_are_refused_never_a_wrong_value(run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        net = MemoryNetwork(seed=11)
        net.corrupt(1.0)
        names = ["n0", "n1", "n2"]
        nodes, services = make_nodes(net, 3, members=names)
        async with running(nodes):
            peer = nodes[0].peer(url(1))
            for value in range(5):
                with pytest.raises(CallTimeoutError):
                    await peer.election.echo(value, timeout=0.05)
            await peer.oneway.election.vote(1, "n0")
            replies = await nodes[0].group("all").election.status(timeout=0.2)
            assert len(replies) == 0
            assert replies.missing == tuple(names)
            await net.settle()
            assert services[1].votes == []
            assert nodes[1].counters["calls"] == 0
            assert refused(nodes[1]) == 5 + 1 + 1  # five calls, the vote, the group call
            assert refused(nodes[0]) == 1  # its own group call
            assert net.corrupted == net.delivered

            # Only the answers corrupted: calls run, the caller refuses every answer.
            net.clear()
            net.corrupt(1.0, bits=3, src="n1")
            with pytest.raises(CallTimeoutError):
                await peer.election.echo("x", timeout=0.1)
            assert nodes[1].counters["calls"] == 1
            assert nodes[0].counters["refused_malformed"] \
                + nodes[0].counters["refused_bad_authenticator"] >= 1

    run_virtual(scenario())


def test_delays_are_respected(run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        net = MemoryNetwork()
        nodes, _ = make_nodes(net, 2)
        async with running(nodes):
            loop = asyncio.get_running_loop()
            peer = nodes[0].peer(url(1))
            net.delay(0.15, dst="n1")
            with pytest.raises(CallTimeoutError):
                await peer.election.status(timeout=0.1)
            began = loop.time()
            assert await peer.election.status(timeout=1) == STATUS
            assert loop.time() - began == pytest.approx(0.15)  # the call's way; answers undelayed

            net.clear()
            net.delay((0.05, 0.1))  # each way
            began = loop.time()
            assert await peer.election.status(timeout=1) == STATUS
            assert 0.1 <= loop.time() - began <= 0.2  # 0.05 to 0.1 s each way
            assert net.delayed >= 4

    run_virtual(scenario())


def test_reordering_swaps_datagrams_deterministically() -> None:
    async def scenario() -> list[tuple[int, str]]:
        net = MemoryNetwork()
        net.reorder(1.0, hold=0.05)
        nodes, services = make_nodes(net, 2)
        async with running(nodes):
            peer = nodes[0].peer(url(1))
            for term in range(6):
                await peer.oneway.election.vote(term, "n0")
            await net.settle()
            assert net.reordered == 3  # every other datagram is held, then overtaken
            return services[1].votes

    # Pairs swap places; the replay window accepts packets out of order.
    expected = [(1, "n0"), (0, "n0"), (3, "n0"), (2, "n0"), (5, "n0"), (4, "n0")]
    assert run_on_virtual_clock(scenario()) == expected
    assert run_on_virtual_clock(scenario()) == expected


def test_the_same_seed_gives_the_same_outcome() -> None:
    async def scenario(seed: int) -> tuple[list[str], dict[str, int], list[Any], list[Any]]:
        net = MemoryNetwork(seed=seed, trace=True)
        net.drop(0.2)
        net.duplicate(0.3)
        net.reorder(0.3, hold=0.005)
        net.corrupt(0.1)
        names = ["n0", "n1", "n2"]
        nodes, _ = make_nodes(net, 3, members=names)
        outcomes = []
        async with running(nodes):
            peer = nodes[0].peer(url(1))
            for value in range(10):
                try:
                    outcomes.append(repr(await peer.election.echo(value, timeout=0.1)))
                except CallTimeoutError:
                    outcomes.append("timeout")
            for _ in range(2):
                replies = await nodes[2].group("all").election.status(timeout=0.1)
                outcomes.append(f"replies from {sorted(replies)}")
            counters = [{name: value for name, value in node.counters.items() if value}
                        for node in nodes]
        return outcomes, net.counters, counters, net.events

    first = run_on_virtual_clock(scenario(5))
    assert "timeout" in first[0]
    assert first[1]["dropped"]
    assert first[1]["duplicated"]
    assert first[1]["corrupted"]
    assert run_on_virtual_clock(scenario(5)) == first
    assert run_on_virtual_clock(scenario(6))[3] != first[3]


def test_partition_and_heal(run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        net = MemoryNetwork()
        names = ["n0", "n1", "n2", "n3"]
        nodes, _ = make_nodes(net, 4, members=names)
        async with running(nodes):
            net.partition(["n0", "n1"], ["n2", "n3"])
            replies = await nodes[0].group("all").election.status(timeout=0.2)
            assert sorted(replies) == ["n0", "n1"]
            assert replies.missing == ("n2", "n3")
            with pytest.raises(CallTimeoutError):
                await nodes[3].peer(url(1)).election.status(timeout=0.1)
            assert await nodes[3].peer(url(2)).election.status(timeout=1) == STATUS

            net.heal()
            replies = await nodes[0].group("all").election.status(timeout=5)
            assert sorted(replies) == names
            assert await nodes[3].peer(url(1)).election.status(timeout=1) == STATUS

            cut = net.partition("10.0.0.1", "n1")  # by host address and by node name
            with pytest.raises(CallTimeoutError):
                await nodes[0].peer(url(1)).election.status(timeout=0.1)
            cut.remove()
            assert await nodes[0].peer(url(1)).election.status(timeout=1) == STATUS

    run_virtual(scenario())


def test_custom_rules(run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        net = MemoryNetwork()
        seen: list[Datagram] = []

        def no_multicast(datagram: Datagram) -> list[Datagram] | None:
            seen.append(datagram)
            return [] if datagram.multicast else None

        rule = net.rule(no_multicast)
        names = ["n0", "n1", "n2"]
        nodes, _ = make_nodes(net, 3, members=names)
        async with running(nodes):
            assert await nodes[0].peer(url(1)).election.status() == STATUS
            replies = await nodes[0].group("all").election.status(timeout=0.1)
            assert replies.missing == tuple(names)
            assert rule.hits == 3  # one per member
            group_datagrams = [datagram for datagram in seen if datagram.multicast]
            assert {datagram.receiver for datagram in group_datagrams} == set(names)
            assert {datagram.destination for datagram in group_datagrams} == {
                ("239.1.1.1", 7401)}
            assert {datagram.receiver_address for datagram in group_datagrams} == {
                ("10.0.0.1", 7401), ("10.0.0.2", 7401), ("10.0.0.3", 7401)}
            first = seen[0]
            assert (first.sender, first.receiver) == ("n0", "n1")
            assert first.source == ("10.0.0.1", 7400)
            rule.remove()

            # A rule that rewrites: a delay for the calls of one sender only, with `when`.
            net.rule(lambda datagram: [dataclasses.replace(datagram, delay=0.2)],
                     when=lambda datagram: datagram.sender == "n2")
            with pytest.raises(CallTimeoutError):
                await nodes[2].peer(url(0)).election.status(timeout=0.1)
            assert await nodes[1].peer(url(0)).election.status(timeout=0.1) == STATUS

    run_virtual(scenario())


class _Probe(DatagramEndpoint):
    """A bare endpoint that records what the transport does."""

    def __init__(self, address: str) -> None:
        messenger = Messenger(node="probe", cluster=CLUSTER, keyring=KEYRING)
        super().__init__(parse_address(address), messenger, serving=None)
        self.received: list[tuple[bytes, tuple[Any, ...]]] = []
        self.errors: list[Exception] = []
        self.lost = 0

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.received.append((data, addr))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost += 1
        super().connection_lost(exc)


def test_the_transport_model(run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        net = MemoryNetwork()
        a, b = _Probe("udp://10.0.0.1:5000"), _Probe("udp://0.0.0.0:0")
        for probe in (a, b):
            probe.network = net
            await probe.start()
        assert b.url == "udp://0.0.0.0:49152"
        assert a.transport is not None
        assert b.transport is not None
        assert a.transport.get_extra_info("sockname") == ("10.0.0.1", 5000)
        assert a.transport.get_extra_info("peername") is None
        assert a.transport.get_extra_info("socket") is None

        clash = _Probe("udp://10.0.0.1:5000")
        clash.network = net
        with pytest.raises(TransportError, match="already bound"):
            await clash.start()

        b.transport.sendto(b"hello", ("10.0.0.1", 5000))
        assert a.received == []  # never inside sendto
        await net.settle()
        assert a.received == [(b"hello", ("0.0.0.0", 49152))]
        a.transport.sendto(b"back", a.received[0][1])  # answer the source address
        b.transport.sendto(b"to any host", ("10.9.9.9", 49152))  # 0.0.0.0: any address
        await net.settle()
        assert [data for data, _ in b.received] == [b"back", b"to any host"]

        # Group members all receive what is sent to the group.
        members = [_Probe(f"udp://239.2.2.2:6000?iface=10.0.1.{index}") for index in (1, 2)]
        for member in members:
            member.network = net
            await member.start()
        assert members[0].url == "udp://239.2.2.2:6000?iface=10.0.1.1&ttl=1"
        a.transport.sendto(b"all", ("239.2.2.2", 6000))
        await net.settle()
        assert [member.received for member in members] == [[(b"all", ("10.0.0.1", 5000))]] * 2
        assert net.sent == 4
        assert net.delivered == 5

        b.transport.sendto(b"x" * 70000, ("10.0.0.1", 5000))
        await net.settle()
        assert len(b.errors) == 1

        b.transport.close()
        assert b.transport.is_closing()
        await asyncio.sleep(0)
        assert b.lost == 1
        a.transport.sendto(b"gone", ("0.0.0.0", 49152))
        await net.settle()
        assert net.undeliverable == 1
        assert len(b.received) == 2

        with pytest.raises(ConfigurationError):
            net.drop(1.5)
        with pytest.raises(ConfigurationError):
            net.delay((0.2, 0.1))
        with pytest.raises(ConfigurationError):
            net.duplicate(copies=0)

    run_virtual(scenario())


def test_node_checks_on_a_memory_network(run_virtual: RunVirtual) -> None:
    net = MemoryNetwork()
    with pytest.raises(ConfigurationError, match="udp:// only"):
        Node("n0", cluster=CLUSTER, keyring=KEYRING, listen=["tcp://10.0.0.1:7400"],
             network=net)

    async def scenario() -> None:
        nodes, _ = make_nodes(net, 1)
        twin = Node("twin", cluster=CLUSTER, keyring=KEYRING, listen=[url(0)], network=net)
        async with running(nodes):
            with pytest.raises(TransportError):
                await twin.start()
            with pytest.raises(EncodeError):
                await nodes[0].peer(url(0)).election.echo("x" * 70000)

    run_virtual(scenario())


def test_minutes_of_a_slow_lossy_network_take_no_real_time_and_replay_exactly() -> None:
    """Datagrams 5 to 40 s on their way, a quarter lost, a tenth duplicated: minutes of
    simulated time, in far less than a second of real time, the same in every run."""

    async def scenario(seed: int) -> tuple[list[Any], list[Any], list[Any], float]:
        loop = asyncio.get_running_loop()
        net = MemoryNetwork(seed=seed, trace=True)
        net.delay((5.0, 40.0))
        net.drop(0.25)
        net.duplicate(0.1)
        names = [f"n{index}" for index in range(5)]
        nodes, services = make_nodes(net, 5, members=names)
        outcomes: list[Any] = []
        began = loop.time()
        async with running(nodes):
            for turn in range(6):
                peer = nodes[turn % 5].peer(url((turn + 1) % 5))
                try:
                    answer = await peer.election.echo(turn, timeout=60)
                except CallTimeoutError:
                    answer = "timeout"
                outcomes.append((loop.time() - began, "echo", answer))
                replies = await nodes[0].group("all").election.status(timeout=90)
                outcomes.append((loop.time() - began, "group", sorted(replies), replies.missing))
                await nodes[1].peer(url(2)).oneway.election.vote(turn, "n1")
            await net.settle(timeout=600)
            elapsed = loop.time() - began
        return outcomes, net.events, services[2].votes, elapsed

    started = time.perf_counter()
    first = run_on_virtual_clock(scenario(7))
    real = time.perf_counter() - started
    outcomes, events, votes, elapsed = first
    print(f"simulated {elapsed:.1f} s in {real * 1000:.1f} ms of real time")
    assert elapsed > 300  # more than five minutes of simulated time …
    assert real < 1.0     # … in well under a second of real time
    answers = [outcome[2] for outcome in outcomes if outcome[1] == "echo"]
    assert "timeout" in answers
    assert any(answer != "timeout" for answer in answers)
    assert any(outcome[3] for outcome in outcomes if outcome[1] == "group")  # someone missing
    assert all(outcome[0] >= 5.0 for outcome in outcomes)  # nothing arrives in under 5 s
    assert votes
    assert len(set(votes)) == len(votes)  # lost ones are lost, duplicated ones run once
    # The same seed: the same fates, the same answers at the same (virtual) instants.
    assert run_on_virtual_clock(scenario(7)) == first
    assert run_on_virtual_clock(scenario(8))[1] != events


class _TimedProbe(_Probe):
    """A probe that also notes the loop time of each arrival."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.arrivals: list[tuple[float, bytes]] = []

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.arrivals.append((asyncio.get_running_loop().time(), data))
        super().datagram_received(data, addr)


def test_the_network_reads_no_real_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every real clock of the time module made to fail, the network still delays, holds
    and delivers by the loop's (virtual) time alone, exactly when its rules say."""

    def forbidden(*args: object) -> None:
        raise AssertionError("a real clock was read")

    async def scenario() -> tuple[list[tuple[float, bytes]], list[Any], float]:
        loop = asyncio.get_running_loop()
        net = MemoryNetwork(seed=2, trace=True)
        sender, receiver = _TimedProbe("udp://10.0.0.1:5000"), _TimedProbe("udp://10.0.0.2:5000")
        for probe in (sender, receiver):
            probe.network = net
            await probe.start()
        assert sender.transport is not None
        net.delay(30.0, when=lambda datagram: datagram.data.startswith(b"slow"))
        net.delay((60.0, 120.0), when=lambda datagram: datagram.data.startswith(b"drawn"))
        net.reorder(1.0, hold=600.0, when=lambda datagram: datagram.data == b"held")
        net.drop(0.5, when=lambda datagram: datagram.data.startswith(b"lossy"))
        with monkeypatch.context() as patch:
            for name in ("monotonic", "monotonic_ns", "time", "time_ns", "perf_counter",
                         "perf_counter_ns", "process_time", "thread_time"):
                patch.setattr(time, name, forbidden)
            for data in (b"slow", b"drawn 1", b"drawn 2", b"held", b"now", *(
                    b"lossy %d" % index for index in range(10))):
                sender.transport.sendto(data, ("10.0.0.2", 5000))
            await net.settle(timeout=3600)
            end = loop.time()
        return receiver.arrivals, net.events, end

    arrivals, events, end = run_on_virtual_clock(scenario())
    times = {data: at for at, data in arrivals}
    assert times[b"now"] == 0.0
    assert times[b"held"] == 0.0  # overtaken by "now" at once: delivered right after it
    assert [data for _, data in arrivals][:2] == [b"now", b"held"]
    assert times[b"slow"] == 30.0
    assert 60.0 <= times[b"drawn 1"] <= 120.0
    assert 60.0 <= times[b"drawn 2"] <= 120.0
    assert 0 < sum(data.startswith(b"lossy") for data in times) < 10
    assert end == max(times.values())
    assert run_on_virtual_clock(scenario()) == (arrivals, events, end)  # and exactly again


def test_call_and_gather_deadlines_are_exact_on_virtual_time(run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        net = MemoryNetwork()
        names = ["n0", "n1", "n2"]
        nodes, _ = make_nodes(net, 3, members=names)
        net.drop(1.0, dst="n2")
        async with running(nodes):
            for timeout in (0.2, 120.0):  # a call to nobody ends at its deadline, to the tick
                began = loop.time()
                with pytest.raises(CallTimeoutError):
                    await nodes[0].peer("udp://10.0.0.9:7400").election.status(timeout=timeout)
                assert loop.time() - began == pytest.approx(timeout)
            began = loop.time()
            with pytest.raises(CallTimeoutError):
                await nodes[0].peer(url(2)).election.status()  # the node's default: 1 s
            assert loop.time() - began == pytest.approx(1.0)
            began = loop.time()
            replies = await nodes[0].group("all").election.status(timeout=600)
            assert loop.time() - began == pytest.approx(600.0)
            assert replies.missing == ("n2",)

    started = time.perf_counter()
    run_virtual(scenario())
    assert time.perf_counter() - started < 1.0
