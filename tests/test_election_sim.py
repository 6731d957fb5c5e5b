"""The election state machine under a seeded nemesis (``tests/election_sim.py``): thousands of
seeded runs of 5 and 7 voters through crashes and restarts, symmetric, asymmetric and bridge
partitions, pauses, clock jumps, leadership transfers, loss, duplication and reordering.

Every run checks, at every step, that no term has two leaders, that no voter writes a lower
term to its disk (nor votes twice in a term), and at the end of each stable window of 10 T
(a majority alive, connected and undisturbed) that exactly one leader leads all of it. A
failing seed names the command that replays it with a full trace.

``pytest --slow`` runs ten times as many seeds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from clusterrpc.components.election.protocol import (
    FOLLOWER,
    LEADER,
    PRE_CANDIDATE,
    ElectionConfig,
    ElectionProtocol,
    PersistentState,
)
from tests.election_sim import (
    FAULTS,
    STABLE_WINDOW_TIMEOUTS,
    RunResult,
    Simulation,
    SimulationFailure,
    main,
    replay_command,
    run_seed,
)

SEEDS_PER_BLOCK = 100
BLOCKS = 20
"""2,000 seeded runs by default (about 25 ms each) ..."""
SLOW_BLOCKS = 200
"""... and 20,000 with ``--slow``."""
CYCLES = 4
"""Fault phases (3 to 6 s) and stable windows (10 T) per run: about 55 simulated seconds."""

PLAIN_RAFT = ElectionConfig(prevote=False, check_quorum=False, leader_stickiness=False)

_results: dict[int, RunResult] = {}
"""Every seeded run of this session, for the statistics."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "block" in metafunc.fixturenames:
        blocks = SLOW_BLOCKS if metafunc.config.getoption("--slow") else BLOCKS
        metafunc.parametrize("block", range(blocks))


def run_checked(seed: int) -> RunResult:
    try:
        result = run_seed(seed, cycles=CYCLES)
    except SimulationFailure as error:
        pytest.fail(str(error), pytrace=False)
    _results[seed] = result
    return result


@pytest.mark.timeout(60)
def test_seeded_nemesis(block: int) -> None:
    """Safety at every step and a leader at the end of every stable window, for 100 seeds."""
    for seed in range(block * SEEDS_PER_BLOCK, (block + 1) * SEEDS_PER_BLOCK):
        result = run_checked(seed)
        assert result.windows == result.windows_led == CYCLES


def test_nemesis_statistics() -> None:
    """The nemesis is no no-op: every fault type was injected in some runs, every stable
    window ended with a leader, and elections happened. Uses the runs of the seeded blocks,
    or 200 runs of its own when run alone."""
    if len(_results) < 200:
        for seed in range(200):
            run_checked(seed)
    results = list(_results.values())
    runs_with: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for result in results:
        totals.update(result.faults)
        runs_with.update(kind for kind, count in result.faults.items() if count)
    windows = sum(r.windows for r in results)
    led = sum(r.windows_led for r in results)
    print(f"\n{len(results)} runs ({sum(r.voters == 5 for r in results)} of 5 voters, "
          f"{sum(r.voters == 7 for r in results)} of 7), {windows} stable windows, {led} led; "
          f"{sum(r.terms_led for r in results)} terms with a leader, max term "
          f"{max(r.max_term for r in results)}, {sum(r.events for r in results)} events, "
          f"{sum(r.simulated for r in results):.0f} simulated s")
    print("runs with each fault:", {kind: runs_with[kind] for kind in FAULTS})
    print("faults injected:", {kind: totals[kind] for kind in FAULTS})
    assert led == windows == CYCLES * len(results)
    for kind in FAULTS:
        assert runs_with[kind] >= len(results) // 20, f"{kind} in only {runs_with[kind]} runs"
    assert {r.voters for r in results} == {5, 7}
    # A crash or a partition costs the leader in most runs: elections are really exercised.
    assert sum(r.terms_led > CYCLES for r in results) > len(results) // 2


def test_runs_replay_exactly() -> None:
    """One seed is one run: the same seed gives the same trace, another seed another."""
    traces: list[list[str]] = [[], [], []]
    for trace, seed in zip(traces, (11, 11, 13), strict=True):
        run_seed(seed, cycles=2, trace=trace.append)
    assert traces[0] == traces[1]
    assert traces[0] != traces[2]
    assert any(" recv " in line for line in traces[0])


def test_trace_entry_point(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "4", "--voters", "5", "--trace", "--cycles", "1"]) == 0
    out = capsys.readouterr().out
    for needle in (" recv n", " start n0", " nemesis stable window", " state n", " persist n",
                   "ok: seed 4, 5 voters"):
        assert needle in out


# -- the checks catch broken protocols ---------------------------------------------------------


def first_failure(seeds: range) -> str:
    for seed in seeds:
        try:
            run_seed(seed, cycles=2)
        except SimulationFailure as error:
            return str(error)
    pytest.fail(f"no seed of {seeds} failed")


def check_failure_report(message: str, expected: str) -> None:
    assert expected in message
    header = message.splitlines()[0]
    seed, voters = int(header.split()[1].rstrip(",")), int(header.split()[2])
    assert replay_command(seed, voters) in message
    assert "python -m tests.election_sim --seed" in message
    assert "last 40 trace lines:" in message  # the trace tail is inline


def test_double_votes_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A protocol that forgets its vote before each request: two leaders in one term."""
    original = ElectionProtocol._on_request_vote

    def forgetful(self: ElectionProtocol, *args: Any) -> None:
        self.voted_for = None
        original(self, *args)

    monkeypatch.setattr(ElectionProtocol, "_on_request_vote", forgetful)
    message = first_failure(range(200))
    assert "two leaders in term" in message or "changed its vote" in message
    check_failure_report(message, "in term")


def test_forgotten_terms_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart that ignores the disk writes a lower term over it."""
    original = ElectionProtocol.__init__

    def amnesiac(self: ElectionProtocol, **kwargs: Any) -> None:
        kwargs["persisted"] = None
        original(self, **kwargs)

    monkeypatch.setattr(ElectionProtocol, "__init__", amnesiac)
    message = first_failure(range(200))
    assert "to disk over term" in message or "changed its vote" in message
    check_failure_report(message, "in term")


def test_missing_leaders_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """A protocol that never campaigns leaves the first stable window without a leader."""
    monkeypatch.setattr(ElectionProtocol, "_pre_campaign", ElectionProtocol._reset_election_timer)
    check_failure_report(first_failure(range(1)),
                         f"no single leader followed by all of M after "
                         f"{STABLE_WINDOW_TIMEOUTS} T")


# -- the liveness fixes, one scenario each -----------------------------------------------------


def settled(config: ElectionConfig, seed: int = 1) -> tuple[Simulation, str, int]:
    """Five voters on a lossless network with a leader elected: (sim, leader, term)."""
    sim = Simulation(5, seed=seed, config=config)
    sim.start_all()
    sim.run_until(5.0)
    leader = sim.leader_of(range(5))
    assert leader is not None, sim.describe()
    protocol = sim.nodes[sim.by_name[leader]].protocol
    assert protocol is not None
    return sim, leader, protocol.term


def terms(sim: Simulation) -> list[int]:
    return [node.protocol.term for node in sim.nodes if node.protocol is not None]


def isolated_then_back(sim: Simulation, leader: str) -> int:
    """Cut a follower off for 10 s, then reconnect it for 5 s; return its index."""
    follower = next(i for i, name in enumerate(sim.names) if name != leader)
    sim.isolate(follower)
    sim.run_until(sim.now + 10.0)
    sim.heal()
    sim.run_until(sim.now + 5.0)
    return follower


def bridged(sim: Simulation, leader: str) -> int:
    """The Cloudflare 2020 case for 10 s, then healed for 3 s: the leader and one follower on
    one side, two followers on the other, and one voter (returned) that reaches both sides."""
    index = sim.by_name[leader]
    others = [i for i in range(5) if i != index]
    bridge, side_a, side_b = others[0], [index, others[1]], others[2:]
    sim.cut(side_a, side_b)
    sim.cut(side_b, side_a)
    sim.run_until(sim.now + 10.0)
    sim.heal()
    sim.run_until(sim.now + 3.0)
    return bridge


Scenario = Callable[[Simulation, str], int]


@pytest.mark.parametrize("scenario", [isolated_then_back, bridged])
def test_plain_raft_is_disrupted(scenario: Scenario) -> None:
    """Without pre-vote, check-quorum and stickiness, the scenario deposes a healthy leader."""
    sim, leader, term = settled(PLAIN_RAFT)
    scenario(sim, leader)
    assert max(terms(sim)) > term + 1
    assert max(sim.leaders) > term, "another term had a leader"
    assert sim.leaders.get(max(sim.leaders)) != leader or len(set(sim.leaders.values())) > 1


@pytest.mark.parametrize("scenario", [isolated_then_back, bridged])
def test_defaults_keep_the_leader(scenario: Scenario) -> None:
    """With the defaults the same scenario changes neither the leader nor the term."""
    sim, leader, term = settled(ElectionConfig())
    scenario(sim, leader)
    assert terms(sim) == [term] * 5
    assert max(sim.leaders) == term
    assert sim.leader_of(range(5)) == leader, sim.describe()
    assert [node.disk for node in sim.nodes if node.disk is not None
            and node.disk.term != term] == []


def test_isolated_follower_keeps_its_term() -> None:
    """Pre-vote: a follower cut off for 20 s campaigns (pre-votes) without raising its term,
    on disk or in memory."""
    sim, leader, term = settled(ElectionConfig())
    follower = next(i for i, name in enumerate(sim.names) if name != leader)
    sim.isolate(follower)
    sim.run_until(sim.now + 20.0)
    node = sim.nodes[follower]
    assert node.protocol is not None
    assert node.protocol.term == term
    assert node.protocol.role == PRE_CANDIDATE
    assert node.protocol.counters["prevotes_started"] >= 10
    assert node.protocol.counters["elections_started"] == 0
    assert node.disk is not None
    assert node.disk.term == term
    assert sim.leader_of([i for i in range(5) if i != follower]) == leader


def test_isolated_leader_steps_down_without_raising_its_term() -> None:
    """Check-quorum: a leader cut off steps down within about T; the others elect a new
    leader in the next term, and the old one follows it when it is back."""
    sim, leader, term = settled(ElectionConfig())
    index = sim.by_name[leader]
    started = sim.now
    sim.isolate(index)
    old = sim.nodes[index].protocol
    assert old is not None
    while old.role == LEADER:
        sim.run_until(sim.now + 0.05)
    assert sim.now - started <= 1.0 + 0.1 + 0.05
    sim.run_until(started + 10.0)
    assert old.role in (FOLLOWER, PRE_CANDIDATE)
    assert old.term == term
    rest = [i for i in range(5) if i != index]
    new = sim.leader_of(rest)
    assert new is not None
    assert new != leader
    sim.heal()
    sim.run_until(sim.now + 3.0)
    assert sim.leader_of(range(5)) == new
    assert terms(sim) == [term + 1] * 5


def test_restart_keeps_term_and_vote() -> None:
    """A crashed voter restarts from its disk: the same term and vote, and no lower term is
    ever written."""
    sim, leader, term = settled(ElectionConfig())
    node = sim.nodes[(sim.by_name[leader] + 1) % 5]
    disk = node.disk
    assert disk is not None
    assert disk.term == term
    sim.crash(node)
    sim.run_until(sim.now + 1.0)
    protocol = sim.start(node)
    assert (protocol.term, protocol.voted_for) == (disk.term, disk.voted_for)
    assert isinstance(node.disk, PersistentState)
    sim.run_until(sim.now + 3.0)
    assert sim.leader_of(range(5)) == leader


@pytest.mark.parametrize("steps", [[-5.0, -5.0], [-3.0, -3.0, -3.0], [-4.9]])
def test_leader_clock_stepped_back(steps: list[float]) -> None:
    """A leader whose clock steps back (twice by 5 s, say) must not go silent for the lost
    time while refusing votes as the leader: with a minimal majority that includes it, the
    majority has a leader again within 2 T (the protocol moves its timers back with the
    clock; before that fix the majority was leaderless for the whole 10 s)."""
    sim, leader, _ = settled(ElectionConfig(), seed=3)
    index = sim.by_name[leader]
    for step in steps:
        sim.jump(sim.nodes[index], step)
        sim.run_until(sim.now + 0.05)
    members = [index, *[i for i in range(5) if i != index][:2]]
    for other in range(5):
        if other not in members:
            sim.isolate(other)
    started, leaderless_until = sim.now, sim.now
    while sim.now < started + 12.0:
        sim.run_until(sim.now + 0.01)
        if sim.leader_of(members) is None:
            leaderless_until = sim.now
    assert leaderless_until - started < 2.0
    assert sim.leader_of(members) is not None
