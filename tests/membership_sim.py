"""A discrete-event simulation of :class:`MembershipProtocol` objects, without the driver or any
packet: for the sans-I/O tests. Messages are delivered after a random delay, may be lost or
duplicated, and a member can be crashed, stalled (its messages and timers wait, then run late,
as after SIGSTOP/SIGCONT), restarted with a new epoch and address, or partitioned. Everything is
seeded; time is a number."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterrpc.components.membership.protocol import (
    MembershipConfig,
    MembershipEvent,
    MembershipProtocol,
)


@dataclass
class SimMember:
    protocol: MembershipProtocol
    alive: bool = True
    stalled_until: float = 0.0
    events: list[MembershipEvent] = field(default_factory=list)
    wake_at: float = float("inf")


class Simulation:
    def __init__(self, count: int, *, seed: int, loss: float = 0.0, duplicate: float = 0.0,
                 delay: tuple[float, float] = (0.0005, 0.002), reorder: float = 0.0,
                 config: MembershipConfig | None = None) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.delay = delay
        self.reorder = reorder
        self.config = config or MembershipConfig()
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self.members: dict[str, SimMember] = {}
        self.by_address: dict[str, str] = {}
        self.blocked: set[frozenset[str]] = set()
        self._epochs = itertools.count(1_000)
        self.sent = 0
        for index in range(count):
            self.add(f"m{index}", seeds=[self.address_of(0)] if index else [])

    @staticmethod
    def address_of(index: int, generation: int = 0) -> str:
        return f"udp://10.0.{generation}.{index + 1}:7946"

    def add(self, name: str, *, seeds: list[str], address: str | None = None,
            meta: dict[str, str] | None = None) -> SimMember:
        index = int(name[1:])
        address = address or self.address_of(index)
        protocol = MembershipProtocol(
            name=name, epoch=next(self._epochs), address=address, config=self.config,
            rng=random.Random(self.rng.random()), seeds=seeds, meta=meta)
        member = SimMember(protocol)
        self.members[name] = member
        self.by_address[address] = name
        protocol.start(self.now)
        self._after(member)
        return member

    # -- faults --------------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        self.members[name].alive = False

    def stall(self, name: str, seconds: float) -> None:
        self.members[name].stalled_until = self.now + seconds

    def restart(self, name: str, generation: int) -> SimMember:
        old = self.members[name]
        old.alive = False
        del self.by_address[old.protocol.address]
        address = self.address_of(int(name[1:]), generation)
        seeds = [m.protocol.address for n, m in self.members.items() if n != name and m.alive]
        return self.add(name, seeds=seeds[:3], address=address)

    def partition(self, side: set[str]) -> None:
        for a in side:
            for b in self.members:
                if b not in side:
                    self.blocked.add(frozenset((a, b)))

    def heal(self) -> None:
        self.blocked.clear()

    # -- the loop ------------------------------------------------------------------------------

    def _at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._order), action))

    def _after(self, member: SimMember) -> None:
        """Send what ``member`` has to send, collect its events, schedule its next tick."""
        protocol = member.protocol
        for message in protocol.messages_to_send():
            self._transmit(protocol, message.address, message.kind, message.body)
        member.events.extend(protocol.events_happened())
        wake = protocol.next_wakeup()
        if wake < member.wake_at:
            member.wake_at = wake
            self._at(wake, lambda: self._wake(member, wake))

    def _wake(self, member: SimMember, scheduled: float) -> None:
        if not member.alive or member.wake_at != scheduled:
            return
        if self.now < member.stalled_until:
            self._at(member.stalled_until, lambda: self._wake(member, scheduled))
            return
        member.wake_at = float("inf")
        member.protocol.observe_lag(self.now - scheduled, self.now)
        member.protocol.tick(self.now)
        self._after(member)

    def _transmit(self, sender: MembershipProtocol, address: str, kind: str,
                  body: dict[str, Any]) -> None:
        self.sent += 1
        target = self.by_address.get(address)
        if target is None or frozenset((sender.name, target)) in self.blocked:
            return
        copies = 1 + (self.rng.random() < self.duplicate)
        for _ in range(copies):
            if self.rng.random() < self.loss:
                continue
            delay = self.rng.uniform(*self.delay)
            if self.rng.random() < self.reorder:
                delay += self.rng.uniform(0.0, 0.05)
            receiver = self.members[target]
            epoch = sender.epoch
            name = sender.name

            def deliver(receiver: SimMember = receiver, name: str = name,
                        epoch: int = epoch) -> None:
                self._deliver(receiver, kind, body, name, epoch)

            self._at(self.now + delay, deliver)

    def _deliver(self, receiver: SimMember, kind: str, body: dict[str, Any], sender: str,
                 epoch: int) -> None:
        if not receiver.alive:
            return
        if self.now < receiver.stalled_until:  # waits in the socket buffer
            self._at(receiver.stalled_until,
                     lambda: self._deliver(receiver, kind, body, sender, epoch))
            return
        receiver.protocol.receive(kind, body, sender=sender, sender_epoch=epoch, now=self.now)
        self._after(receiver)

    def run_until(self, end: float) -> None:
        while self._queue and self._queue[0][0] <= end:
            when, _, action = heapq.heappop(self._queue)
            self.now = max(self.now, when)
            action()
        self.now = end

    # -- what the members see ------------------------------------------------------------------

    def states(self, name: str) -> dict[str, str]:
        """How every running member sees ``name``."""
        return {other: m.protocol.view()[name].state if name in m.protocol.view() else "?"
                for other, m in self.members.items() if m.alive and other != name}

    def running(self) -> list[SimMember]:
        return [m for m in self.members.values() if m.alive]
