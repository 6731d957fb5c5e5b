"""Membership on the simulated network: real ``Node``s and ``Membership`` drivers, signed UDP
packets on ``clusterrpc.testing.MemoryNetwork`` (seeded loss, duplication, reordering,
partitions), and a virtual clock — 10,000 simulated seconds cost about a minute, no sleep.

Every address is made up (10.0.0.x on the in-memory network); nothing touches a socket.
The long runs are marked ``slow``.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from clusterrpc import Group, Node
from clusterrpc.components import Membership
from clusterrpc.components.membership import Alive, Failed, Joined, MembershipEvent, Suspected
from clusterrpc.testing import MemoryNetwork
from tests.conftest import run_on_virtual_clock
from tests.rpc_helpers import CLUSTER, Election, make_keyring

KEYRING = make_keyring()
PORT = 7946
GROUP = "udp://239.1.1.1:7947"


def url(index: int, generation: int = 0) -> str:
    return f"udp://10.0.{generation}.{index + 1}:{PORT}"


def detection_bound(members: int, *, probe_interval: float = 1.0, suspicion_mult: int = 4,
                    suspicion_max_timeout_mult: int = 6) -> float:
    """The documented bound (spec/membership.md, "Detection time"): one full probe round of
    some member, the longest suspicion timeout (no confirmation at all), and 3 s for the
    death to spread."""
    suspicion_max = (suspicion_max_timeout_mult * suspicion_mult
                     * max(1.0, math.log10(members)) * probe_interval)
    return (members - 1) * probe_interval + suspicion_max + 3.0


class Cluster:
    """``count`` nodes n0 … on 10.0.0.1 … joined through n0, each with a ``Membership``."""

    def __init__(self, net: MemoryNetwork, count: int, *, seed: int,
                 group: bool = False) -> None:
        self.net = net
        self.count = count
        self.seed = seed
        self.group = group
        self.nodes: dict[str, Node] = {}
        self.memberships: dict[str, Membership] = {}
        self.events: dict[str, list[MembershipEvent]] = {}
        self._readers: list[asyncio.Task[None]] = []

    async def add(self, index: int, generation: int = 0) -> Membership:
        name = f"n{index}"
        iface = f"10.0.{generation}.{index + 1}"
        groups = {"all": Group(f"{GROUP}?iface={iface}")} if self.group else {}
        node = Node(name, cluster=CLUSTER, keyring=KEYRING, listen=[url(index, generation)],
                    network=self.net, groups=groups, timeout=1.0)
        node.serve(Election(), name="election")
        await node.start()
        seeds = [url(0)] if index else []
        if generation:
            seeds = [url(other) for other in range(3) if other != index]
        membership = Membership(node, seeds=seeds, group="all" if self.group else None,
                                rng=random.Random(self.seed * 1000 + index + 100 * generation))
        await membership.start()
        self.nodes[name] = node
        self.memberships[name] = membership
        log = self.events.setdefault(name, [])
        self._readers.append(asyncio.ensure_future(self._read(membership, log)))
        return membership

    @staticmethod
    async def _read(membership: Membership, log: list[MembershipEvent]) -> None:
        async for event in membership.events():
            log.append(event)

    async def start(self) -> None:
        for index in range(self.count):
            await self.add(index)

    async def crash(self, name: str) -> None:
        """Stop a node without a word: its membership neither leaves nor answers."""
        await self.memberships[name].stop(leave=False)
        await self.nodes[name].stop()
        del self.memberships[name]

    async def close(self) -> None:
        for membership in self.memberships.values():
            await membership.stop(leave=False)
        for node in self.nodes.values():
            await node.stop()
        for reader in self._readers:
            reader.cancel()

    def seen_as(self, name: str) -> dict[str, str]:
        """How every running member sees ``name`` (``"?"``: unknown)."""
        return {other: (m.view[name].state if name in m.view else "?")
                for other, m in self.memberships.items() if other != name}

    def converged(self) -> bool:
        alive = set(self.memberships)
        return all({n for n, member in m.view.items() if member.state == "alive"} >= alive
                   for m in self.memberships.values())


async def wait_for(condition: Callable[[], bool], limit: float, step: float = 0.05) -> float:
    """Virtual seconds until ``condition()`` holds; ``AssertionError`` after ``limit``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > limit:
            raise AssertionError(f"not within {limit:g} s")
        await asyncio.sleep(step)
    return loop.time() - started


def run(scenario: Callable[[], Awaitable[Any]], timeout: float = 30_000.0) -> Any:
    async def main() -> Any:
        return await scenario()
    return run_on_virtual_clock(main(), timeout=timeout)


def faulty_network(seed: int, loss: float) -> MemoryNetwork:
    net = MemoryNetwork(seed=seed)
    net.drop(loss)
    net.duplicate(0.02)
    net.reorder(0.05, hold=0.05)
    net.delay((0.0002, 0.002))
    return net


def false_deaths(cluster: Cluster, crashed: frozenset[str] = frozenset()
                 ) -> list[tuple[str, str]]:
    """``(observer, member)`` for every Failed event about a member still running in the
    same life."""
    return [(observer, event.member.name) for observer, log in cluster.events.items()
            for event in log
            if isinstance(event, Failed) and event.member.name not in crashed
            and event.member.name in cluster.memberships
            and event.member.epoch == cluster.memberships[event.member.name].protocol.epoch]  # type: ignore[union-attr]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("loss", [0.01, 0.05, 0.20])
def test_no_alive_member_is_declared_dead_in_10000_seconds_then_a_crash_is(loss: float
                                                                          ) -> None:
    async def scenario() -> None:
        cluster = Cluster(faulty_network(seed=int(loss * 100), loss=loss), 16,
                          seed=int(loss * 100))
        await cluster.start()
        try:
            await wait_for(cluster.converged, 30.0)
            await asyncio.sleep(10_000.0)
            assert false_deaths(cluster) == []
            counters = [m.counters for m in cluster.memberships.values()]
            assert sum(c["probes_sent"] for c in counters) > 16 * 5_000  # it kept probing
            if loss >= 0.05:
                assert sum(c["suspicions"] for c in counters) > 0  # the loss was felt
            await cluster.crash("n7")
            detected = await wait_for(
                lambda: all(state == "dead" for state in cluster.seen_as("n7").values()),
                detection_bound(16))
            assert detected <= detection_bound(16)
        finally:
            await cluster.close()

    run(scenario)


def test_a_crashed_member_is_dead_everywhere_within_the_bound() -> None:
    async def scenario() -> list[float]:
        times = []
        for seed in range(3):
            cluster = Cluster(faulty_network(seed=seed, loss=0.0), 16, seed=seed)
            await cluster.start()
            try:
                await wait_for(cluster.converged, 30.0)
                await asyncio.sleep(20.0)
                victim = f"n{seed + 3}"
                await cluster.crash(victim)

                def everywhere_dead(victim: str = victim, cluster: Cluster = cluster) -> bool:
                    return all(s == "dead" for s in cluster.seen_as(victim).values())

                times.append(await wait_for(everywhere_dead, detection_bound(16)))
                assert false_deaths(cluster, frozenset({victim})) == []
                for name, log in cluster.events.items():
                    if name != victim:  # suspected first, then failed
                        kinds = [type(e) for e in log if e.member.name == victim]
                        assert Failed in kinds, name
                        assert kinds[-1] is Failed
            finally:
                await cluster.close()
        return times

    times = run(scenario)
    assert max(times) <= detection_bound(16)


def test_a_member_stalled_for_2_seconds_is_not_declared_dead() -> None:
    async def scenario() -> None:
        cluster = Cluster(faulty_network(seed=11, loss=0.01), 16, seed=11)
        await cluster.start()
        try:
            await wait_for(cluster.converged, 30.0)
            stalled = cluster.memberships["n4"]
            for _ in range(10):  # ten stalls of 2 s, 20 s apart
                stalled.freeze(2.0)
                await asyncio.sleep(20.0)
            await asyncio.sleep(60.0)
            assert false_deaths(cluster) == []
            assert all(state == "alive" for state in cluster.seen_as("n4").values())
            # The stalled member knew its own health was in doubt, and held its tongue.
            assert stalled.counters["lag_events"] >= 10
            own = [e for e in cluster.events["n4"] if isinstance(e, Suspected)]
            assert own == [], own
        finally:
            await cluster.close()

    run(scenario)


def test_a_restarted_member_is_alive_with_its_new_address_within_one_probe_round() -> None:
    async def scenario() -> None:
        cluster = Cluster(faulty_network(seed=5, loss=0.0), 16, seed=5)
        await cluster.start()
        try:
            await wait_for(cluster.converged, 30.0)
            old_epoch = cluster.memberships["n9"].protocol.epoch  # type: ignore[union-attr]
            await cluster.crash("n9")
            await asyncio.sleep(0.2)  # before anyone noticed: a fast restart
            restarted = await cluster.add(9, generation=1)
            new_epoch = restarted.protocol.epoch  # type: ignore[union-attr]
            assert new_epoch != old_epoch

            def everyone_sees_the_new_life() -> bool:
                return all(m.view.get("n9") is not None and m.view["n9"].epoch == new_epoch
                           and m.view["n9"].state == "alive"
                           and m.view["n9"].address == url(9, 1)
                           for name, m in cluster.memberships.items() if name != "n9")

            assert await wait_for(everyone_sees_the_new_life, 1.0, step=0.01) <= 1.0
            # The old life ended (Failed) before the new one began (Joined), for each observer.
            for name, log in cluster.events.items():
                if name == "n9":
                    continue
                lives = [(type(e), e.member.epoch) for e in log if e.member.name == "n9"]
                assert lives[-2:] == [(Failed, old_epoch), (Joined, new_epoch)], (name, lives)
        finally:
            await cluster.close()

    run(scenario)


def test_a_partition_heals_back_to_one_view() -> None:
    async def scenario() -> float:
        net = faulty_network(seed=3, loss=0.01)
        cluster = Cluster(net, 16, seed=3)
        await cluster.start()
        try:
            await wait_for(cluster.converged, 30.0)
            left = [f"10.0.0.{index + 1}" for index in range(8)]
            right = [f"10.0.0.{index + 1}" for index in range(8, 16)]
            net.partition(left, right)
            await asyncio.sleep(120.0)
            # Each side gave the other up …
            assert cluster.seen_as("n12")["n1"] == "dead"
            assert cluster.seen_as("n1")["n12"] == "dead"
            net.heal()
            healed = await wait_for(cluster.converged, 120.0)
            # … and, healed, refuted: alive again, same lives.
            assert all(isinstance(e, Alive) for e in cluster.events["n1"][-1:])
            return healed
        finally:
            await cluster.close()

    assert run(scenario) <= 120.0


def test_a_group_call_waits_exactly_for_the_alive_members() -> None:
    async def scenario() -> None:
        cluster = Cluster(faulty_network(seed=8, loss=0.0), 6, seed=8, group=True)
        await cluster.start()
        try:
            await wait_for(cluster.converged, 30.0)
            loop = asyncio.get_running_loop()
            caller = cluster.nodes["n0"]
            started = loop.time()
            replies = await caller.group("all").election.status(timeout=5.0)
            assert loop.time() - started < 0.5  # not the 5 s timeout
            assert set(replies) == {f"n{i}" for i in range(6)}
            assert not replies.missing
            await cluster.crash("n5")
            await wait_for(lambda: cluster.seen_as("n5")["n0"] == "dead",
                           detection_bound(6))
            started = loop.time()
            replies = await caller.group("all").election.status(timeout=5.0)
            assert loop.time() - started < 0.5
            assert set(replies) == {f"n{i}" for i in range(5)}
        finally:
            await cluster.close()

    run(scenario)


def test_view_changes_open_a_transition_and_leaving_is_seen() -> None:
    async def scenario() -> None:
        cluster = Cluster(faulty_network(seed=9, loss=0.0), 4, seed=9)
        await cluster.start()
        try:
            await wait_for(cluster.converged, 30.0)
            watcher = cluster.memberships["n0"]
            node = cluster.nodes["n0"]
            seen: list[tuple[str, bool]] = []

            async def read() -> None:
                async for event in watcher.events():
                    seen.append((type(event).__name__, node.gate.is_open))

            reader = asyncio.ensure_future(read())
            await asyncio.sleep(0)
            cluster.memberships["n3"].set_meta({"role": "db"})
            await wait_for(lambda: watcher.view["n3"].meta == {"role": "db"}, 5.0)
            await cluster.memberships["n2"].stop()  # graceful
            await wait_for(lambda: watcher.view["n2"].state == "left", 5.0, step=0.01)
            await asyncio.sleep(0.1)
            reader.cancel()
            assert seen == [("Updated", True), ("Left", True)]
            assert not node.gate.is_open
            numbers = [e.view for e in cluster.events["n0"]]
            assert numbers == sorted(numbers)
            assert len(set(numbers)) == len(numbers)
        finally:
            await cluster.close()

    run(scenario)
