"""``Election`` on real ``Node``s: signed one-way calls on ``clusterrpc.testing.MemoryNetwork``
with a virtual clock (no sleep), and on real UDP sockets on loopback; the persisted state
file; ``@fenced`` services; the admin methods."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from clusterrpc import Node
from clusterrpc.components.election import (
    Election,
    LeaderChange,
    PersistentState,
    StateFile,
    fence_of,
    fenced,
)
from clusterrpc.errors import (
    ConfigurationError,
    Fault,
    FaultCode,
    NoLeaderError,
    NotLeaderError,
    StaleTermError,
)
from clusterrpc.rpc import remote
from clusterrpc.testing import MemoryNetwork
from tests.conftest import run_on_virtual_clock, scaled
from tests.rpc_helpers import CLUSTER, make_keyring

KEYRING = make_keyring()
PORT = 7950
T = 1.0


def url(index: int) -> str:
    return f"udp://10.0.0.{index + 1}:{PORT}"


class Cluster:
    """``count`` voters n0 … on the in-memory network, each with state in ``state_root``."""

    def __init__(self, net: MemoryNetwork, count: int, state_root: Path, *,
                 seed: int = 1) -> None:
        self.net = net
        self.count = count
        self.state_root = state_root
        self.seed = seed
        self.voters = {f"n{index}": url(index) for index in range(count)}
        self.nodes: dict[str, Node] = {}
        self.elections: dict[str, Election] = {}
        self.generation = 0

    async def add(self, index: int) -> Election:
        import random  # noqa: PLC0415

        name = f"n{index}"
        node = Node(name, cluster=CLUSTER, keyring=KEYRING, listen=[url(index)],
                    network=self.net, timeout=1.0)
        await node.start()
        self.generation += 1
        election = Election(node, voters=self.voters, state_dir=self.state_root / name,
                            rng=random.Random(self.seed * 100 + index + 1000 * self.generation))
        await election.start()
        self.nodes[name] = node
        self.elections[name] = election
        return election

    async def start(self) -> None:
        for index in range(self.count):
            await self.add(index)

    async def crash(self, name: str) -> None:
        """Stop without a word (no transfer): as SIGKILL, the state file survives."""
        await self.elections.pop(name).stop(transfer=False)
        await self.nodes.pop(name).stop()

    async def close(self) -> None:
        for name in list(self.elections):
            await self.crash(name)

    def leaders(self) -> dict[str, int]:
        return {name: e.term for name, e in self.elections.items() if e.is_leader}

    def agreed_leader(self) -> str | None:
        """The leader every running voter names, if they all name the same one and it leads."""
        named = {e.leader for e in self.elections.values()}
        if len(named) != 1:
            return None
        leader = named.pop()
        if leader is None or leader not in self.elections:
            return None
        return leader if self.elections[leader].is_leader else None


async def wait_for(condition: Callable[[], object], limit: float, step: float = 0.01) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started > limit:
            raise AssertionError(f"not within {limit:g} s")
        await asyncio.sleep(step)
    return loop.time() - started


def run(scenario: Callable[[], Awaitable[Any]], timeout: float = 3600.0) -> Any:
    async def main() -> Any:
        return await scenario()
    return run_on_virtual_clock(main(), timeout=timeout)


def test_five_voters_elect_one_leader_and_persist_its_term(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(MemoryNetwork(seed=1), 5, tmp_path)
        await cluster.start()
        try:
            first = cluster.elections["n0"]
            leader = await first.wait_for_leader(timeout=10 * T)
            await wait_for(cluster.agreed_leader, 2 * T)
            assert list(cluster.leaders()) == [leader]
            term = cluster.elections[leader].term
            assert term >= 1
            saved = json.loads((tmp_path / leader / "election.json").read_text())
            assert saved == {"term": term, "voted_for": leader, "format": 1}
            # Every voter persisted a term; no temporary file is left behind.
            for name in cluster.elections:
                files = os.listdir(tmp_path / name)
                assert files == ["election.json"], files
            # Stable: many heartbeats later nothing has changed.
            await asyncio.sleep(20 * T)
            assert cluster.agreed_leader() == leader
            assert cluster.elections[leader].term == term
        finally:
            await cluster.close()

    run(scenario)


def test_a_killed_leader_is_replaced_at_a_higher_term_within_two_maximum_timeouts(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(MemoryNetwork(seed=2), 5, tmp_path)
        await cluster.start()
        try:
            await wait_for(cluster.agreed_leader, 10 * T)
            old = cluster.agreed_leader()
            assert old is not None
            old_term = cluster.elections[old].term
            await cluster.crash(old)
            took = await wait_for(cluster.agreed_leader, 2 * (2 * T))
            new = cluster.agreed_leader()
            assert new is not None
            assert new != old
            assert cluster.elections[new].term > old_term
            assert took < 4 * T
            # The old leader restarts from its state file and follows: no disruption.
            restarted = await cluster.add(int(old[1:]))
            assert restarted.term >= old_term
            await wait_for(lambda: restarted.leader == new, 2 * T)
            assert cluster.agreed_leader() == new
        finally:
            await cluster.close()

    run(scenario)


def test_changes_report_the_leader_and_transfer_moves_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(MemoryNetwork(seed=3), 3, tmp_path)
        await cluster.start()
        seen: list[LeaderChange] = []

        async def read(election: Election) -> None:
            async for change in election.changes():
                seen.append(change)

        reader = asyncio.ensure_future(read(cluster.elections["n1"]))
        try:
            await wait_for(cluster.agreed_leader, 10 * T)
            old = cluster.agreed_leader()
            assert old is not None
            target = next(name for name in sorted(cluster.elections) if name != old)
            follower = cluster.elections[target]
            with pytest.raises(NotLeaderError):
                await follower.transfer()
            new = await cluster.elections[old].transfer(to=target)
            assert new == target
            await wait_for(cluster.agreed_leader, 2 * T)
            assert cluster.agreed_leader() == target
            assert not cluster.elections[old].is_leader
            assert [c.leader for c in seen if c.leader is not None][-1] == target
            assert seen[0].leader == old
            with pytest.raises(ConfigurationError):
                await cluster.elections[target].transfer(to="nobody")
        finally:
            await cluster.close()
            await asyncio.wait_for(reader, 1.0)  # changes() ends at stop()

    run(scenario)


def test_admin_methods_answer_over_the_network_and_transfer_is_forwarded_to_the_leader(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(MemoryNetwork(seed=4), 3, tmp_path)
        await cluster.start()
        admin = Node("admin", cluster=CLUSTER, keyring=KEYRING, listen=["udp://10.0.0.99:1"],
                     network=cluster.net, timeout=2.0)
        await admin.start()
        try:
            await wait_for(cluster.agreed_leader, 10 * T)
            leader = cluster.agreed_leader()
            follower = next(name for name in sorted(cluster.elections) if name != leader)
            status: Any = await admin.peer(cluster.voters[follower]).call("election.status")
            assert status["role"] == "follower"
            assert status["leader"] == leader
            assert status["term"] == cluster.elections[follower].term
            assert [row["name"] for row in status["voters"]] == ["n0", "n1", "n2"]
            assert 0 <= status["last_heartbeat"] < T
            lead_status: Any = await admin.peer(cluster.voters[str(leader)]).call("election.status")
            assert set(lead_status["acks"]) == set(cluster.voters) - {leader}
            # Asked of a follower, the transfer goes to the leader and names the new one.
            answer: Any = await admin.peer(cluster.voters[follower]).call("election.transfer", "")
            assert answer["from"] == leader
            assert answer["to"] != leader
            await wait_for(cluster.agreed_leader, 2 * T)
            assert cluster.agreed_leader() == answer["to"]
            # Votes from outside the voter set are ignored (admin is authenticated but not a
            # voter): an absurd heartbeat changes nothing.
            before = {name: e.term for name, e in cluster.elections.items()}
            await admin.peer(cluster.voters[follower]).call(
                "election.heartbeat", {"term": 10**6, "seq": 1}, oneway=True)
            await asyncio.sleep(0.1)
            assert {name: e.term for name, e in cluster.elections.items()} == before
            assert cluster.elections[follower].counters["outsiders_ignored"] >= 1
        finally:
            await admin.stop()
            await cluster.close()

    run(scenario)


def test_wait_for_leader_raises_no_leader_error_without_a_majority(tmp_path: Path) -> None:
    async def scenario() -> None:
        cluster = Cluster(MemoryNetwork(seed=5), 3, tmp_path)
        await cluster.add(0)  # one of three: never a majority
        try:
            with pytest.raises(NoLeaderError):
                await cluster.elections["n0"].wait_for_leader(timeout=5 * T)
            assert cluster.elections["n0"].term == 0  # pre-vote: the lone voter's term stays
        finally:
            await cluster.close()

    run(scenario)


def test_a_leader_cut_off_with_a_minority_steps_down_and_the_majority_elects(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        net = MemoryNetwork(seed=6)
        cluster = Cluster(net, 5, tmp_path)
        await cluster.start()
        try:
            await wait_for(cluster.agreed_leader, 10 * T)
            old = cluster.agreed_leader()
            assert old is not None
            minority = {old, next(n for n in sorted(cluster.voters) if n != old)}
            majority = set(cluster.voters) - minority
            net.partition([cluster.voters[n][6:] for n in minority],
                          [cluster.voters[n][6:] for n in majority])
            took = await wait_for(lambda: not cluster.elections[old].is_leader, 2 * T)
            assert took <= T + 0.1 + 0.02  # check-quorum: within T (at a heartbeat tick)
            await wait_for(lambda: any(cluster.elections[n].is_leader for n in majority),
                           4 * T)
            new = next(n for n in majority if cluster.elections[n].is_leader)
            net.heal()
            # The healed minority follows the new leader; its pre-votes raised no term.
            await wait_for(cluster.agreed_leader, 2 * T)
            assert cluster.agreed_leader() == new
        finally:
            await cluster.close()

    run(scenario)


# -- the state file --------------------------------------------------------------------------


def test_the_state_file_round_trips_and_refuses_corruption(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "state", "election")
    assert store.load() is None
    store.save(PersistentState(7, "n2"))
    assert store.load() == PersistentState(7, "n2")
    store.save(PersistentState(8, None))
    assert store.load() == PersistentState(8, None)
    assert os.listdir(tmp_path / "state") == ["election.json"]
    assert (tmp_path / "state" / "election.json").stat().st_mode & 0o777 == 0o600
    for corrupt in ["", "{", '{"term": -1, "voted_for": null}', '{"term": true, '
                    '"voted_for": null}', '{"voted_for": "x"}', '{"term": 1, "voted_for": 3}']:
        (tmp_path / "state" / "election.json").write_text(corrupt)
        with pytest.raises(ConfigurationError, match="corrupt"):
            store.load()
    with pytest.raises(ConfigurationError):
        StateFile(tmp_path, "../escape")


def test_a_failed_state_write_holds_back_every_message(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        cluster = Cluster(MemoryNetwork(seed=7), 3, tmp_path)
        await cluster.start()
        broken = cluster.elections["n0"]

        def refuse(state: PersistentState) -> None:
            raise OSError(28, "No space left on device")

        assert broken._store is not None
        monkeypatch.setattr(broken._store, "save", refuse)
        try:
            await wait_for(cluster.agreed_leader, 10 * T)
            leader = cluster.agreed_leader()
            # n0 can never persist a term or vote: it must never have voted or led, and the
            # others elected among themselves.
            assert leader in {"n1", "n2"}
            assert broken.counters["persist_errors"] >= 1
            saved = [StateFile(tmp_path / name, "election").load() for name in ("n1", "n2")]
            assert all(state is not None and state.voted_for != "n0" for state in saved)
        finally:
            await cluster.close()

    run(scenario)


def test_configuration_errors_are_clear(tmp_path: Path) -> None:
    node = Node("n9", cluster=CLUSTER, keyring=KEYRING, listen=["udp://10.0.0.9:1"],
                network=MemoryNetwork())
    with pytest.raises(ConfigurationError, match="not one of the voters"):
        Election(node, voters={"n1": url(1)}, state_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="membership"):
        Election(node, voters=["n9", "n1"], state_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="half"):
        Election(node, voters={"n9": url(9)}, state_dir=tmp_path, heartbeat_interval=0.6)
    with pytest.raises(ConfigurationError, match="unexpected keyword"):
        Election(node, voters={"n9": url(9)}, state_dir=tmp_path, election_timout=1.0)


# -- fencing ---------------------------------------------------------------------------------


class Storage:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    @remote
    @fenced
    def write(self, term: int, key: str, value: str) -> int:
        self.data[key] = value
        return term

    @remote
    @fenced
    async def write_later(self, term: int, key: str, value: str) -> int:
        await asyncio.sleep(0)
        fence_of(self).check(term)
        self.data[key] = value
        return term


def test_a_fenced_service_refuses_a_term_older_than_the_newest_it_has_seen() -> None:
    async def scenario() -> None:
        net = MemoryNetwork(seed=8)
        server = Node("storage", cluster=CLUSTER, keyring=KEYRING,
                      listen=["udp://10.0.1.1:7000"], network=net)
        client = Node("leader", cluster=CLUSTER, keyring=KEYRING,
                      listen=["udp://10.0.1.2:7000"], network=net, timeout=1.0)
        storage = Storage()
        server.serve(storage, name="storage")
        await server.start()
        await client.start()
        try:
            peer = client.peer("udp://10.0.1.1:7000")
            assert await peer.call("storage.write", 3, "k", "new leader") == 3
            # A paused old leader (term 2) wakes and writes: refused.
            with pytest.raises(Fault) as refused:
                await peer.call("storage.write", 2, "k", "old leader")
            assert refused.value.code == FaultCode.STALE_TERM
            assert "stale term 2" in refused.value.message
            assert storage.data == {"k": "new leader"}
            assert await peer.call("storage.write_later", 4, "k", "newer") == 4
            with pytest.raises(Fault) as refused:
                await peer.call("storage.write_later", 3, "k", "older")
            assert refused.value.code == FaultCode.STALE_TERM
            with pytest.raises(Fault) as invalid:
                await peer.call("storage.write", "x", "k", "v")
            assert invalid.value.code == FaultCode.INVALID_PARAMS
            assert storage.data == {"k": "newer"}
            assert fence_of(storage).newest == 4
        finally:
            await client.stop()
            await server.stop()

    run(scenario)


def test_fence_checks_locally_and_refuses_bad_methods() -> None:
    storage = Storage()
    assert storage.write(5, "a", "b") == 5
    with pytest.raises(StaleTermError) as stale:
        storage.write(4, "a", "c")
    assert (stale.value.term, stale.value.newest) == (4, 5)
    fence_of(storage).raise_to(3)
    assert fence_of(storage).newest == 5
    with pytest.raises(ConfigurationError):
        fenced(lambda: None)


# -- real sockets ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_three_voters_on_loopback_udp_elect_and_fail_over(tmp_path: Path) -> None:
    timeout = 0.3 * scaled(1.0)

    async def scenario() -> None:
        nodes: dict[str, Node] = {}
        for name in ("a", "b", "c"):
            nodes[name] = Node(name, cluster=CLUSTER, keyring=KEYRING,
                               listen=["udp://127.0.0.1:0"], timeout=1.0)
            await nodes[name].start()
        voters = {name: node.addresses[0] for name, node in nodes.items()}
        elections = {name: Election(node, voters=voters, state_dir=tmp_path / name,
                                    election_timeout=timeout, heartbeat_interval=timeout / 10)
                     for name, node in nodes.items()}
        try:
            for election in elections.values():
                await election.start()
            leader = await elections["a"].wait_for_leader(timeout=20 * timeout)
            await asyncio.sleep(5 * timeout)
            assert [n for n, e in elections.items() if e.is_leader] == [leader]
            term = elections[leader].term
            await elections.pop(leader).stop(transfer=False)
            await nodes.pop(leader).stop()
            survivor = next(iter(elections.values()))
            deadline = asyncio.get_running_loop().time() + 20 * timeout
            while survivor.leader in (None, leader):
                assert asyncio.get_running_loop().time() < deadline, "no new leader"
                await asyncio.sleep(timeout / 10)
            new = survivor.leader
            assert new is not None
            assert new != leader
            assert elections[new].term > term
        finally:
            for election in elections.values():
                await election.stop(transfer=False)
            for node in nodes.values():
                await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), 50))


def test_voters_named_only_find_their_addresses_in_the_membership_view(tmp_path: Path) -> None:
    from clusterrpc.components import Membership  # noqa: PLC0415

    async def scenario() -> None:
        net = MemoryNetwork(seed=9)
        nodes = [Node(f"m{index}", cluster=CLUSTER, keyring=KEYRING, listen=[url(index)],
                      network=net, timeout=1.0) for index in range(3)]
        memberships: list[Membership] = []
        elections: list[Election] = []
        try:
            for index, node in enumerate(nodes):
                await node.start()
                membership = Membership(node, seeds=[url(0)] if index else [])
                await membership.start()
                memberships.append(membership)
                election = Election(node, voters=["m0", "m1", "m2"], membership=membership,
                                    state_dir=tmp_path / node.name)
                await election.start()
                elections.append(election)
            await wait_for(lambda: len({e.leader for e in elections}) == 1
                           and elections[0].leader is not None, 30 * T)
            leader = elections[0].leader
            assert sum(e.is_leader for e in elections) == 1
            assert elections[1].address_of("m2") == url(2)
            assert leader is not None
        finally:
            for election in elections:
                await election.stop(transfer=False)
            for membership in memberships:
                await membership.stop()
            for node in nodes:
                await node.stop()

    run(scenario)
