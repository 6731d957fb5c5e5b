"""``Membership``: the membership protocol on a :class:`~clusterrpc.Node` (``spec/membership.md``).

::

    node = Node("n1", cluster="ORG", keyring=keyring, listen=["udp://10.0.0.1:7946"])
    membership = Membership(node, seeds=["udp://10.0.0.2:7946"])
    async with node, membership:
        async for event in membership.events():      # Joined, Suspected, Alive, Failed, …
            print(event.view, type(event).__name__, event.member.name)

A thin driver: it serves the protocol's messages as one-way methods of the service
``membership`` (so each is a signed, replay-checked packet of its own), feeds them and the time
to :class:`~clusterrpc.components.membership.protocol.MembershipProtocol`, sends what the
protocol says, and wakes it when it asks. It measures its own event-loop lag at each wake-up
and reports it (local health). It also serves ``membership.members()`` and
``membership.stats()`` (normal calls) for admins, names the alive members to the node's
``group=`` gathers, and holds a :meth:`~clusterrpc.Node.transition` open while a view change
is handed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from clusterrpc.components.membership.protocol import (
    KINDS,
    Member,
    MembershipConfig,
    MembershipEvent,
    MembershipProtocol,
    Outgoing,
)
from clusterrpc.errors import ClusterRPCError, ConfigurationError, ConnectionClosedError
from clusterrpc.rpc import current_call, oneway, remote

__all__ = ["Membership"]

log = logging.getLogger("clusterrpc.membership")

_GROUP = "group:"
"""The protocol's address for "the multicast group" (never a real URL)."""

_EVENT_QUEUE = 4096
"""View changes kept for one slow ``events()`` reader before it loses the oldest."""


class _Endpoint:
    """The protocol's messages as one-way methods, and the admin methods."""

    def __init__(self, membership: Membership) -> None:
        self._membership = membership

    def _received(self, kind: str, body: Any) -> None:
        call = current_call()
        if call.node is None:  # unauthenticated (an insecure HTTP endpoint): never acted on
            return
        self._membership.received(kind, body, sender=call.node, sender_epoch=call.epoch)

    @oneway
    def ping(self, body: dict[str, Any]) -> None:
        self._received("ping", body)

    @oneway
    def ping_req(self, body: dict[str, Any]) -> None:
        self._received("ping_req", body)

    @oneway
    def ack(self, body: dict[str, Any]) -> None:
        self._received("ack", body)

    @oneway
    def nack(self, body: dict[str, Any]) -> None:
        self._received("nack", body)

    @oneway
    def gossip(self, body: dict[str, Any]) -> None:
        self._received("gossip", body)

    @oneway
    def sync(self, body: dict[str, Any]) -> None:
        self._received("sync", body)

    @remote
    def members(self) -> list[dict[str, Any]]:
        """Every member this node knows: name, state, incarnation, epoch, addresses, meta and
        ``last_heard`` (seconds ago, or nil)."""
        return self._membership.describe()

    @remote
    def stats(self) -> dict[str, Any]:
        """The protocol's counters, the view number, and this node's health."""
        return self._membership.stats()


class Membership:
    """Membership of ``node`` in its cluster (module docstring).

    ``seeds``: ``udp://`` addresses to join through (and to keep trying while absent).
    ``group``: the name of one of the node's groups that this membership manages: gathers on
    it wait for exactly the alive members, and gossip goes to it by multicast when the group
    is a multicast one. ``meta``: this member's metadata (at most 16 strings, 512 bytes).
    ``advertise``: the address others reach this node at (default: its first ``udp://``
    listen address). ``service``: the service name of the protocol's methods. ``rng``: the
    source of random choices (seed it for a replayable simulation). Every other keyword is a
    timer of :class:`~clusterrpc.components.membership.protocol.MembershipConfig`, which
    documents each beside memberlist's default.

    ``async with membership:`` (the node started first) starts it; on exit it leaves
    gracefully. Raises :class:`~clusterrpc.errors.ConfigurationError` for a bad setting, a
    node without a ``udp://`` listener (and no ``advertise``), or an unknown group.
    """

    def __init__(self, node: Any, *, seeds: Iterable[str] = (), group: str | None = None,
                 meta: Mapping[str, str] | None = None, advertise: str | None = None,
                 service: str = "membership", rng: random.Random | None = None,
                 **timers: Any) -> None:
        try:
            self.config = MembershipConfig(**timers)
        except TypeError as error:
            raise ConfigurationError(f"Membership: {error}") from None
        self.node = node
        self.seeds = tuple(seeds)
        for seed in self.seeds:
            if not isinstance(seed, str) or not seed.startswith("udp://"):
                raise ConfigurationError(f"a membership seed is a udp:// address, not {seed!r}")
        self.group = group
        self.service = service
        self._meta = dict(meta or {})
        self._advertise = advertise
        self._rng = rng or random.Random()  # noqa: S311 - probe order and jitter, not secrets
        self.protocol: MembershipProtocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = float("inf")
        self._sending: asyncio.Task[None] | None = None
        self._outbox: list[Outgoing] = []
        self._subscribers: set[asyncio.Queue[MembershipEvent]] = set()
        self._transitions: set[asyncio.Task[None]] = set()
        self._frozen_until = float("-inf")
        self._backlog: list[tuple[str, Any, str, int | None]] = []
        self._served = False
        self._closed = False
        self.send_errors = 0
        """Messages the node could not send (counted, logged at debug level)."""

    # -- life ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start probing and gossiping (the node must be started). Idempotent."""
        if self.protocol is not None:
            return
        node = self.node
        if not node.started:
            raise ConnectionClosedError("start the node before its membership "
                                        "(`async with node, membership:`)")
        address = self._advertise or next(
            (url for url in node.addresses if url.startswith("udp://")), None)
        if address is None:
            raise ConfigurationError(f"node {node.name!r} listens on no udp:// address; "
                                     "membership needs one (or advertise=)")
        if not self._served:
            node.serve(_Endpoint(self), name=self.service)
            self._served = True
        multicast = False
        if self.group is not None:
            group = node.config.groups.get(self.group)
            if group is None:
                raise ConfigurationError(f"no group {self.group!r} on node {node.name!r}")
            multicast = group.multicast is not None
        self.protocol = MembershipProtocol(
            name=node.name, epoch=node.messenger.epoch, address=address, config=self.config,
            rng=self._rng, seeds=self.seeds, meta=self._meta,
            group_address=_GROUP if multicast else None)
        if self.group is not None:
            protocol = self.protocol
            node.manage_group(self.group, protocol.alive_members)
        self._closed = False
        self.protocol.start(self._now())
        self._after_step()

    async def stop(self, *, leave: bool = True) -> None:
        """Leave (unless ``leave=False``: then the others detect the silence, as for a crash),
        send what is queued, and stop. Idempotent."""
        protocol = self.protocol
        if protocol is None or self._closed:
            return
        if leave:
            protocol.leave(self._now())
            self._after_step()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                if leave:
                    await asyncio.wait_for(asyncio.shield(self._sending), 2.0)
                self._sending.cancel()
        if self.group is not None:
            self.node.manage_group(self.group, None)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # the end matters more than the oldest event
            queue.put_nowait(None)  # type: ignore[arg-type]  # the end of events()

    async def __aenter__(self) -> Membership:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- what users read -----------------------------------------------------------------------

    @property
    def view(self) -> dict[str, Member]:
        """Every member known, this node included, by name (empty before :meth:`start`)."""
        return {} if self.protocol is None else self.protocol.view()

    @property
    def view_number(self) -> int:
        return 0 if self.protocol is None else self.protocol.view_number

    def alive(self) -> set[str]:
        """Names of the members up (``alive`` or ``suspect``), this node included."""
        return set() if self.protocol is None else self.protocol.alive_members()

    @property
    def counters(self) -> dict[str, int]:
        """The protocol's counters (``spec/membership.md``, "Counters")."""
        counts = {} if self.protocol is None else dict(self.protocol.counters)
        counts["send_errors"] = self.send_errors
        return counts

    async def events(self) -> AsyncIterator[MembershipEvent]:
        """View changes from now on, in order, until :meth:`stop`. A reader that falls more
        than 4,096 events behind loses the oldest (logged); read :attr:`view` to resync."""
        queue: asyncio.Queue[MembershipEvent] = asyncio.Queue(_EVENT_QUEUE)
        self._subscribers.add(queue)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._subscribers.discard(queue)

    def set_meta(self, meta: Mapping[str, str]) -> None:
        """Change this member's metadata (gossiped as a new incarnation). Raises
        :class:`~clusterrpc.errors.ConfigurationError` for bad metadata."""
        self._meta = dict(meta)
        if self.protocol is not None:
            self.protocol.set_meta(meta, self._now())
            self._after_step()

    def describe(self) -> list[dict[str, Any]]:
        """The view as ``membership.members()`` returns it (sorted by name)."""
        now = self._now()
        rows = []
        for name, member in sorted(self.view.items()):
            rows.append({
                "name": name, "state": member.state, "incarnation": member.incarnation,
                "epoch": member.epoch, "addresses": list(member.addresses),
                "meta": dict(member.meta), "self": name == self.node.name,
                "last_heard": None if member.last_heard is None
                else round(max(now - member.last_heard, 0.0), 3),
            })  # fmt: skip
        return rows

    def stats(self) -> dict[str, Any]:
        protocol = self.protocol
        return {
            "counters": self.counters, "view": self.view_number,
            "awareness": 0 if protocol is None else protocol.awareness,
            "in_doubt": False if protocol is None else protocol.in_doubt(self._now()),
            "incarnation": 0 if protocol is None else protocol.incarnation,
        }  # fmt: skip

    # -- driving the protocol ------------------------------------------------------------------

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def received(self, kind: str, body: Any, *, sender: str, sender_epoch: int | None) -> None:
        """A message from the authenticated node ``sender`` (the endpoint calls this)."""
        protocol = self.protocol
        if protocol is None or self._closed or kind not in KINDS:
            return
        now = self._now()
        if now < self._frozen_until:
            self._backlog.append((kind, body, sender, sender_epoch))
            return
        protocol.receive(kind, body, sender=sender, sender_epoch=sender_epoch, now=now)
        self._after_step()

    def _wake(self, scheduled: float) -> None:
        self._timer = None
        self._timer_when = float("inf")
        protocol = self.protocol
        if protocol is None or self._closed:
            return
        now = self._now()
        if now < self._frozen_until:  # a simulated stall: wake when it ends, late
            self._timer_when = self._frozen_until
            self._timer = asyncio.get_running_loop().call_at(self._frozen_until, self._wake,
                                                             scheduled)
            return
        protocol.observe_lag(now - scheduled, now)
        protocol.tick(now)
        self._after_step()

    def _after_step(self) -> None:
        protocol = self.protocol
        assert protocol is not None
        messages = protocol.messages_to_send()
        if messages:
            self._outbox.extend(messages)
            if self._sending is None or self._sending.done():
                self._sending = asyncio.get_running_loop().create_task(self._send_all())
        events = protocol.events_happened()
        if events:
            self._publish(events)
        if self._closed:
            return
        wake = protocol.next_wakeup()
        if wake < self._timer_when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_when = wake
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(max(wake, loop.time()), self._wake, wake)

    async def _send_all(self) -> None:
        node = self.node
        while self._outbox:
            batch, self._outbox = self._outbox, []
            for message in batch:
                method = f"{self.service}.{message.kind}"
                try:
                    if message.address == _GROUP and self.group is not None:
                        await node.call_group(self.group, method, (message.body,), oneway=True)
                    else:
                        await node.peer(message.address).call(method, message.body,
                                                              oneway=True)
                except (ClusterRPCError, OSError) as error:
                    self.send_errors += 1
                    log.debug("membership: cannot send %s to %s: %s", message.kind,
                              message.address, error)

    def _publish(self, events: list[MembershipEvent]) -> None:
        # The seed's rule: local callers stall while the cluster changes. Open before the
        # events are handed out, closed after one loop turn, in which the readers run.
        self.node.begin_transition()
        task = asyncio.get_running_loop().create_task(self._end_transition())
        self._transitions.add(task)
        task.add_done_callback(self._transitions.discard)
        for event in events:
            log.info("membership view %d: %s %s (%s, incarnation %d)", event.view,
                     type(event).__name__, event.member.name, event.member.state,
                     event.member.incarnation)
            for queue in self._subscribers:
                if queue.full():
                    queue.get_nowait()
                    log.warning("membership: an events() reader fell behind; oldest dropped")
                queue.put_nowait(event)

    async def _end_transition(self) -> None:
        try:
            await asyncio.sleep(0)
        finally:
            self.node.end_transition()

    # -- testing -------------------------------------------------------------------------------

    def freeze(self, seconds: float) -> None:
        """Simulate a stalled process for ``seconds`` of the loop's clock: messages wait (as in
        a socket buffer) and timers run late, then everything runs at once, as after
        SIGSTOP/SIGCONT. For simulations where several nodes share one event loop
        (``clusterrpc.testing``); a real stall needs no help."""
        until = self._now() + seconds
        if until > self._frozen_until:
            self._frozen_until = until
            asyncio.get_running_loop().call_at(until, self._thaw)

    def _thaw(self) -> None:
        protocol = self.protocol
        if protocol is None or self._closed or self._now() < self._frozen_until:
            return
        backlog, self._backlog = self._backlog, []
        now = self._now()
        for kind, body, sender, epoch in backlog:  # what waited in the socket buffer
            protocol.receive(kind, body, sender=sender, sender_epoch=epoch, now=now)
        self._after_step()
