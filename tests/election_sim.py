"""A discrete-event simulation of :class:`ElectionProtocol` voters, without the driver, any
socket or any event loop: for the sans-I/O tests (``tests/test_election_sim.py``).

Time is a number. Every voter reads its own clock, ``global time + offset``; a clock jump
changes the offset (forward or backward). Each voter has a simulated disk: the state of
:meth:`~ElectionProtocol.take_output` is written to it *before* that output's messages go on
the network; a crash loses the protocol object and keeps the disk; a restart builds a new
protocol from the disk. Messages are delivered after a random delay, may be lost, duplicated
or reordered, and a directed link can be cut (a partition, symmetric or not). A paused voter
(SIGSTOP) runs nothing: its messages wait as in a socket buffer and its timers run late, and
all of it runs at once when it resumes.

The checks run on every step: two leaders in one term, a term written to disk below the one
it holds, or a second vote in one term, raise :class:`SimulationFailure` at once.

:func:`run_seed` is the nemesis: fault phases (crashes, restarts, symmetric, asymmetric and
bridge partitions, pauses, clock jumps, leadership transfers, message loss) alternate with
stable windows of 10 election timeouts, in which a majority is alive and fully connected
and every other voter is crashed or cut off; at the end of each window exactly one member of
the majority must lead it. Everything follows from one integer seed; replay one with a full
trace::

    python -m tests.election_sim --seed 1234 --voters 5 --trace
"""

from __future__ import annotations

import argparse
import functools
import heapq
import random
import sys
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterrpc.components.election.protocol import (
    LEADER,
    ElectionConfig,
    ElectionProtocol,
    PersistentState,
)
from clusterrpc.errors import ConfigurationError, NotLeaderError

INF = float("inf")
STABLE_WINDOW_TIMEOUTS = 10
"""A stable window lasts this many election timeouts; a leader must exist at its end."""
FAULTS = ("crash", "restart", "partition", "asymmetric", "bridge", "pause", "clock_jump",
          "transfer", "heal", "loss", "duplicate", "long_delay")
"""What the nemesis injects (``RunResult.faults`` counts each: messages for the last three)."""
TRACE_TAIL = 40

_DELIVER, _WAKE, _ACTION = 0, 1, 2
_EPSILON = 1e-9
"""Added to a wake-up's global time, so that ``global + offset`` never rounds below the
deadline (the tick would then do nothing and the wake-up repeat forever)."""

Event = tuple[float, int, int, int, Any]


class SimulationFailure(AssertionError):
    """A safety or liveness property did not hold."""


def replay_command(seed: int, voters: int) -> str:
    return f"python -m tests.election_sim --seed {seed} --voters {voters} --trace"


def _format(when: float, parts: tuple[object, ...]) -> str:
    return f"{when:10.4f} " + " ".join(str(part) for part in parts)


@dataclass(eq=False)
class SimNode:
    index: int
    name: str
    protocol: ElectionProtocol | None = None
    """``None`` while crashed."""
    disk: PersistentState | None = None
    paused_until: float = 0.0
    offset: float = 0.0
    wake_at: float = INF
    restarts: int = 0


class Simulation:
    """``voters`` voters ``n0`` … on a simulated network (see the module docstring)."""

    def __init__(self, voters: int, *, seed: int, config: ElectionConfig | None = None,
                 trace: Callable[[str], None] | None = None, ring: int = 400,
                 max_events: int = 2_000_000) -> None:
        self.seed = seed
        seeder = random.Random(seed)
        self.rng = random.Random(seeder.getrandbits(64))
        """Network randomness: loss, duplication, delays."""
        self.protocol_rng = random.Random(seeder.getrandbits(64))
        """Seeds each protocol's own ``random.Random`` (one per start)."""
        self.nemesis_rng = random.Random(seeder.getrandbits(64))
        self.config = config or ElectionConfig()
        self.names = tuple(f"n{index}" for index in range(voters))
        self.by_name = {name: index for index, name in enumerate(self.names)}
        self.nodes = [SimNode(index, name) for index, name in enumerate(self.names)]
        self.majority = voters // 2 + 1
        self.now = 0.0
        self._queue: list[Event] = []
        self._order = 0
        self.blocked = [[False] * voters for _ in range(voters)]
        """``blocked[a][b]``: messages from a to b are dropped."""
        self.loss = 0.0
        self.duplicate = 0.0
        self.delay = (0.0005, 0.02)
        self.long_delay = 0.0
        """The probability of a delay of up to ``long_delay_max`` instead."""
        self.long_delay_max = 0.3
        self.leaders: dict[int, str] = {}
        """term -> the one voter that led it."""
        self.trace = trace
        self.ring: deque[tuple[float, tuple[object, ...]]] = deque(maxlen=ring)
        self.key_ring: deque[tuple[float, tuple[object, ...]]] = deque(maxlen=TRACE_TAIL)
        """Nemesis actions and state changes only: what the tail of ``ring`` may have lost."""
        self.events = 0
        self.max_events = max_events
        self.faults: Counter[str] = Counter()

    # -- tracing -------------------------------------------------------------------------------

    def log(self, *parts: object) -> None:
        self.ring.append((self.now, parts))
        if self.trace is not None:
            self.trace(_format(self.now, parts))

    def note(self, *parts: object) -> None:
        """A nemesis action or a state change: also kept in the short ring of key events."""
        self.key_ring.append((self.now, parts))
        self.log(*parts)

    def tail(self, lines: int = TRACE_TAIL) -> list[str]:
        return [_format(when, parts) for when, parts in list(self.ring)[-lines:]]

    def key_tail(self) -> list[str]:
        return [_format(when, parts) for when, parts in self.key_ring]

    def fail(self, message: str) -> None:
        self.note("FAILURE", message)
        raise SimulationFailure(message)

    # -- the voters ----------------------------------------------------------------------------

    def clock(self, node: SimNode) -> float:
        return self.now + node.offset

    def start(self, node: SimNode) -> ElectionProtocol:
        """Start (or restart) ``node`` from its disk, with a fresh seeded rng."""
        protocol = ElectionProtocol(
            name=node.name, voters=self.names, config=self.config,
            rng=random.Random(self.protocol_rng.getrandbits(64)), persisted=node.disk)
        node.protocol = protocol
        node.wake_at = INF
        node.paused_until = 0.0
        before = (protocol.role, protocol.term, protocol.leader)
        self.note("start", node.name, f"disk={node.disk}")
        protocol.start(self.clock(node))
        self._after(node, protocol, before)
        return protocol

    def start_all(self) -> None:
        for node in self.nodes:
            self.start(node)

    def crash(self, node: SimNode) -> None:
        node.protocol = None
        node.wake_at = INF
        self.note("crash", node.name)

    def pause(self, node: SimNode, seconds: float) -> None:
        node.paused_until = max(node.paused_until, self.now + seconds)
        self.note("pause", node.name, f"until={node.paused_until:.4f}")

    def jump(self, node: SimNode, delta: float) -> None:
        node.offset += delta
        self.note("clock_jump", node.name, f"{delta:+.3f}", f"offset={node.offset:+.3f}")
        if node.protocol is not None:
            node.wake_at = INF
            self._schedule(node, node.protocol)

    def transfer(self, node: SimNode, to: str | None = None) -> str | None:
        protocol = node.protocol
        if protocol is None:
            return None
        before = (protocol.role, protocol.term, protocol.leader)
        try:
            target = protocol.transfer(self.clock(node), to=to)
        except (NotLeaderError, ConfigurationError) as error:
            self.note("transfer", node.name, "refused:", error)
            return None
        self.note("transfer", node.name, "->", target)
        self._after(node, protocol, before)
        return target

    # -- the network ---------------------------------------------------------------------------

    def cut(self, sources: Sequence[int], targets: Sequence[int]) -> None:
        """Drop every message from ``sources`` to ``targets`` (one way)."""
        for source in sources:
            row = self.blocked[source]
            for target in targets:
                if source != target:
                    row[target] = True

    def isolate(self, index: int) -> None:
        others = [other for other in range(len(self.nodes)) if other != index]
        self.cut([index], others)
        self.cut(others, [index])

    def heal(self) -> None:
        for row in self.blocked:
            row[:] = [False] * len(row)

    # -- the loop ------------------------------------------------------------------------------

    def _push(self, when: float, code: int, index: int, argument: Any) -> None:
        self._order += 1
        heapq.heappush(self._queue, (when, self._order, code, index, argument))

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._push(when, _ACTION, -1, action)

    def _after(self, node: SimNode, protocol: ElectionProtocol,
               before: tuple[str, int, str | None]) -> None:
        """Persist, then send, what ``protocol`` produced; check; schedule its next tick."""
        output = protocol.take_output()
        if output.persist is not None:
            self._write_disk(node, output.persist)
        for message in output.messages:
            self._send(node.index, self.by_name[message.to], message.kind, message.body)
        role = protocol.role
        if (role, protocol.term, protocol.leader) != before:
            self.note("state", node.name, role, f"term={protocol.term}",
                      f"leader={protocol.leader}")
        if role == LEADER:
            holder = self.leaders.setdefault(protocol.term, node.name)
            if holder != node.name:
                self.fail(f"two leaders in term {protocol.term}: {holder} and {node.name}")
        self._schedule(node, protocol)

    def _schedule(self, node: SimNode, protocol: ElectionProtocol) -> None:
        wake = protocol.next_wakeup()
        if wake == INF:
            return
        when = max(wake - node.offset + _EPSILON, self.now)
        if when < node.wake_at:
            node.wake_at = when
            self._push(when, _WAKE, node.index, when)

    def _write_disk(self, node: SimNode, state: PersistentState) -> None:
        old = node.disk
        if old is not None:
            if state.term < old.term:
                self.fail(f"{node.name} wrote term {state.term} to disk over term {old.term}")
            if (state.term == old.term and old.voted_for is not None
                    and state.voted_for != old.voted_for):
                self.fail(f"{node.name} changed its vote in term {state.term}: "
                          f"{old.voted_for} then {state.voted_for}")
        node.disk = state
        self.log("persist", node.name, f"term={state.term}", f"voted_for={state.voted_for}")

    def _send(self, source: int, target: int, kind: str, body: dict[str, Any]) -> None:
        if self.blocked[source][target]:
            self.log("drop(cut)", self.names[source], "->", self.names[target], kind, body)
            return
        rng = self.rng
        copies = 2 if self.duplicate and rng.random() < self.duplicate else 1
        if copies == 2:
            self.faults["duplicate"] += 1
        for _ in range(copies):
            if self.loss and rng.random() < self.loss:
                self.faults["loss"] += 1
                self.log("drop(loss)", self.names[source], "->", self.names[target], kind, body)
                continue
            if self.long_delay and rng.random() < self.long_delay:
                self.faults["long_delay"] += 1
                delay = rng.uniform(self.delay[1], self.long_delay_max)
            else:
                delay = rng.uniform(*self.delay)
            self._push(self.now + delay, _DELIVER, target, (source, kind, body))

    def _deliver(self, target: int, message: tuple[int, str, dict[str, Any]]) -> None:
        node = self.nodes[target]
        source, kind, body = message
        protocol = node.protocol
        if protocol is None:
            self.log("drop(down)", self.names[source], "->", node.name, kind, body)
            return
        if self.blocked[source][target]:  # the partition began while it was in flight
            self.log("drop(cut)", self.names[source], "->", node.name, kind, body)
            return
        if self.now < node.paused_until:  # waits in the socket buffer
            self._push(node.paused_until, _DELIVER, target, message)
            return
        self.log("recv", self.names[source], "->", node.name, kind, body)
        before = (protocol.role, protocol.term, protocol.leader)
        protocol.receive(kind, body, sender=self.names[source], now=self.now + node.offset)
        self._after(node, protocol, before)

    def _wake(self, index: int, scheduled: float) -> None:
        node = self.nodes[index]
        protocol = node.protocol
        if protocol is None or node.wake_at != scheduled:
            return
        if self.now < node.paused_until:  # the timer runs late
            self._push(node.paused_until, _WAKE, index, scheduled)
            return
        node.wake_at = INF
        before = (protocol.role, protocol.term, protocol.leader)
        protocol.tick(self.now + node.offset)
        self._after(node, protocol, before)

    def run_until(self, end: float) -> None:
        queue = self._queue
        pop = heapq.heappop
        while queue and queue[0][0] <= end:
            when, _, code, index, argument = pop(queue)
            if when > self.now:
                self.now = when
            self.events += 1
            if self.events > self.max_events:
                self.fail(f"more than {self.max_events} events: a livelock?")
            if code == _DELIVER:
                self._deliver(index, argument)
            elif code == _WAKE:
                self._wake(index, argument)
            else:
                argument()
        self.now = max(self.now, end)

    # -- what the voters see -------------------------------------------------------------------

    def running(self) -> list[SimNode]:
        return [node for node in self.nodes if node.protocol is not None]

    def leader_of(self, members: Sequence[int]) -> str | None:
        """The one leader of ``members`` that all of them follow in its term, else ``None``."""
        protocols = [self.nodes[index].protocol for index in members]
        leaders = [p for p in protocols if p is not None and p.role == LEADER]
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        if all(p is not None and p.leader == leader.name and p.term == leader.term
               for p in protocols):
            return leader.name
        return None

    def describe(self, members: Sequence[int] | None = None) -> str:
        indexes = range(len(self.nodes)) if members is None else members
        parts = []
        for index in indexes:
            node = self.nodes[index]
            p = node.protocol
            parts.append(f"{node.name}=down" if p is None else
                         f"{node.name}={p.role}/t{p.term}/l={p.leader}/v={p.voted_for}"
                         f"/off={node.offset:+.2f}")
        return " ".join(parts)


# -- the nemesis -------------------------------------------------------------------------------


@dataclass
class RunResult:
    seed: int
    voters: int
    windows: int = 0
    windows_led: int = 0
    terms_led: int = 0
    max_term: int = 0
    events: int = 0
    simulated: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)


def voters_for(seed: int) -> int:
    """The voter count of a seed in the seeded runs: 5 for even seeds, 7 for odd ones."""
    return 5 if seed % 2 == 0 else 7


class Nemesis:
    """Alternates ``cycles`` fault phases (3 to 6 s) with stable windows of 10 T."""

    def __init__(self, sim: Simulation, *, cycles: int = 2) -> None:
        self.sim = sim
        self.rng = sim.nemesis_rng
        self.cycles = cycles
        self.timeout = sim.config.election_timeout
        rng = self.rng
        self.fault_loss = rng.choice((0.0, rng.uniform(0.0, 0.3)))
        self.stable_loss = rng.uniform(0.0, 0.05)
        sim.duplicate = rng.uniform(0.0, 0.05)
        sim.long_delay = rng.uniform(0.0, 0.05)
        weights = {"crash": 3, "restart": 2, "partition": 2, "asymmetric": 2, "bridge": 2,
                   "pause": 2, "clock_jump": 3, "transfer": 1, "heal": 1}
        self.kinds = list(weights)
        self.weights = list(weights.values())
        self.result = RunResult(sim.seed, len(sim.nodes), faults=sim.faults)
        self.phase = 0
        """Counts the phases: an action scheduled in one phase does nothing in another."""

    def run(self) -> RunResult:
        sim = self.sim
        sim.loss = self.fault_loss
        sim.start_all()
        start = 0.0
        for _ in range(self.cycles):
            start = self._fault_phase(start)
            start = self._stable_window(start)
        result = self.result
        result.terms_led = len(sim.leaders)
        result.max_term = max((n.disk.term for n in sim.nodes if n.disk is not None), default=0)
        result.events = sim.events
        result.simulated = sim.now
        return result

    # -- phases --------------------------------------------------------------------------------

    def _fault_phase(self, start: float) -> float:
        sim, rng = self.sim, self.rng
        length = rng.uniform(3.0, 6.0)
        end = start + length
        sim.at(start, self._begin_faults)
        for _ in range(rng.randint(2, 8)):
            kind = rng.choices(self.kinds, self.weights)[0]
            latest = end - 2.0 if kind == "pause" else end  # pauses end before the window
            when = rng.uniform(start, latest)
            sim.at(when, functools.partial(self._fault, kind))
        sim.run_until(end)
        return end

    def _begin_faults(self) -> None:
        self.phase += 1
        self.sim.loss = self.fault_loss
        self.sim.note("nemesis", "fault phase", f"loss={self.fault_loss:.3f}")

    def _stable_window(self, start: float) -> float:
        sim, rng = self.sim, self.rng
        count = len(sim.nodes)
        size = rng.choice((sim.majority, sim.majority, count, rng.randint(sim.majority, count)))
        members = sorted(rng.sample(range(count), size))
        outside = [index for index in range(count) if index not in members]
        self.phase += 1  # cancels the restarts the fault phase scheduled
        sim.heal()
        sim.loss = self.stable_loss
        sim.note("nemesis", "stable window", "M=" + ",".join(sim.names[i] for i in members),
                 f"loss={self.stable_loss:.3f}")
        for index in members:
            node = sim.nodes[index]
            assert node.paused_until <= sim.now, "a pause outlived its fault phase"
            if node.protocol is None:
                self._count("restart")
                sim.start(node)
        for index in outside:
            node = sim.nodes[index]
            if node.protocol is not None and rng.random() < 0.5:
                self._count("crash")
                sim.crash(node)
            else:
                sim.note("nemesis", "cut off", node.name)
            sim.isolate(index)  # a crashed voter too, in case it restarts
        end = start + STABLE_WINDOW_TIMEOUTS * self.timeout
        sim.run_until(end)
        self.result.windows += 1
        leader = sim.leader_of(members)
        if leader is None:
            sim.fail(f"no single leader followed by all of M after {STABLE_WINDOW_TIMEOUTS} T "
                     f"of stability: {sim.describe(members)}")
        sim.note("nemesis", "window ok, leader", leader)
        self.result.windows_led += 1
        return end

    # -- faults --------------------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        self.sim.faults[kind] += 1

    def _target(self, candidates: list[SimNode]) -> SimNode:
        leaders = [n for n in candidates if n.protocol is not None and n.protocol.role == LEADER]
        if leaders and self.rng.random() < 0.5:
            return leaders[0]
        return self.rng.choice(candidates)

    def _split(self, items: list[int]) -> tuple[list[int], list[int]]:
        shuffled = items[:]
        self.rng.shuffle(shuffled)
        cut = self.rng.randint(1, len(shuffled) - 1)
        return sorted(shuffled[:cut]), sorted(shuffled[cut:])

    def _fault(self, kind: str) -> None:
        sim, rng = self.sim, self.rng
        running = sim.running()
        everyone = list(range(len(sim.nodes)))
        names = sim.names
        if kind == "crash" and running:
            node = self._target(running)
            sim.crash(node)
            if rng.random() < 0.5:
                phase = self.phase
                sim.at(sim.now + rng.uniform(0.1, 3.0),
                       lambda: self._restart(node) if self.phase == phase else None)
        elif kind == "restart":
            down = [n for n in sim.nodes if n.protocol is None]
            if down:
                self._restart(rng.choice(down))
                return
            if running:  # a clean restart: crash and start again at once
                node = self._target(running)
                sim.crash(node)
                self._restart(node)
            return
        elif kind == "partition":
            side_a, side_b = self._split(everyone)
            sim.heal()
            sim.cut(side_a, side_b)
            sim.cut(side_b, side_a)
            sim.note("nemesis", "partition", [names[i] for i in side_a], "|",
                     [names[i] for i in side_b])
        elif kind == "asymmetric":
            side_a, side_b = self._split(everyone)
            sim.heal()
            sim.cut(side_b, side_a)
            sim.note("nemesis", "asymmetric", [names[i] for i in side_a], "->",
                     [names[i] for i in side_b], "delivered, back dropped")
        elif kind == "bridge":
            bridge = self._target(running).index if running else rng.choice(everyone)
            side_a, side_b = self._split([i for i in everyone if i != bridge])
            sim.heal()
            sim.cut(side_a, side_b)
            sim.cut(side_b, side_a)
            sim.note("nemesis", "bridge", names[bridge], "between",
                     [names[i] for i in side_a], "and", [names[i] for i in side_b])
        elif kind == "pause" and running:
            sim.pause(self._target(running), 2.0)
        elif kind == "clock_jump":
            node = self._target(sim.nodes)
            sim.jump(node, rng.choice((-1.0, 1.0)) * rng.uniform(0.5, 5.0))
        elif kind == "transfer":
            leaders = [n for n in running if n.protocol is not None
                       and n.protocol.role == LEADER]
            if not leaders:
                return
            to = rng.choice((None, rng.choice(names)))
            sim.transfer(leaders[0], to)
        elif kind == "heal":
            sim.heal()
            sim.note("nemesis", "heal")
        else:
            return
        self._count(kind)

    def _restart(self, node: SimNode) -> None:
        if node.protocol is None:
            self._count("restart")
            self.sim.start(node)


def run_seed(seed: int, voters: int | None = None, *, cycles: int = 2,
             trace: Callable[[str], None] | None = None,
             config: ElectionConfig | None = None) -> RunResult:
    """One seeded run of the nemesis; raises :class:`SimulationFailure` with the seed, the
    voter count, the replay command and the tail of the trace."""
    voters = voters_for(seed) if voters is None else voters
    sim = Simulation(voters, seed=seed, trace=trace, config=config)
    try:
        return Nemesis(sim, cycles=cycles).run()
    except SimulationFailure as error:
        lines = [f"seed {seed}, {voters} voters: {error}",
                 f"replay with a full trace: {replay_command(seed, voters)}",
                 "last nemesis actions and state changes:", *sim.key_tail(),
                 f"last {TRACE_TAIL} trace lines:", *sim.tail()]
        raise SimulationFailure("\n".join(lines)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.election_sim",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--voters", type=int, default=None,
                        help="5 or 7 (default: 5 for an even seed, 7 for an odd one)")
    parser.add_argument("--count", type=int, default=1, help="run this many seeds from --seed")
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--trace", action="store_true", help="print every event")
    args = parser.parse_args(argv)
    failures = 0
    for seed in range(args.seed, args.seed + args.count):
        try:
            result = run_seed(seed, args.voters, cycles=args.cycles,
                              trace=print if args.trace else None)
        except SimulationFailure as error:
            failures += 1
            print(f"FAILED {error}")
            continue
        if args.count == 1 or args.trace:
            print(f"ok: seed {seed}, {result.voters} voters, {result.windows_led}/"
                  f"{result.windows} windows led, {result.terms_led} terms led, max term "
                  f"{result.max_term}, {result.events} events, faults {dict(result.faults)}")
    if args.count > 1:
        print(f"{args.count - failures}/{args.count} seeds passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
