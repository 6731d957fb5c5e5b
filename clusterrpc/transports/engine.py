"""The asyncio side of the connection protocol, shared by every packet transport.

The protocol itself — opening packets, serving calls, matching answers, deadlines — is
:class:`clusterrpc.rpc.protocol.Connection`, which does no I/O. This module drives it on an event
loop: :class:`AsyncDriver` turns its events into settled futures and tasks (one per served call
of an ``async`` method; plain methods are answered inline, no task), keeps one timer at its
earliest deadline, and calls the transport's ``flush`` to write what it queued. The stream,
datagram and multicast transports differ only in how they read and write bytes.

:class:`Serving` is what a node's listeners share: the messenger, the dispatcher (serving rules
and counters) and the set of running invocations that ``Node.stop`` drains.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from clusterrpc.errors import ClusterRPCError
from clusterrpc.keyring import Keyring
from clusterrpc.rpc.calls import CallFailed, CallSucceeded
from clusterrpc.rpc.gather import GroupReplies
from clusterrpc.rpc.protocol import (
    Connection,
    ConnectionBroken,
    Dispatcher,
    GatherEnded,
    Invocation,
)
from clusterrpc.rpc.protocol import Messenger as _Messenger
from clusterrpc.rpc.service import ServiceRegistry
from clusterrpc.values import Value

__all__ = ["AsyncDriver", "DeadlineTimer", "Messenger", "Serving", "new_epoch"]


def new_epoch() -> int:
    """An epoch for a sender starting now: the wall clock in microseconds, so that it grows
    across restarts (``spec/packet.md``)."""
    return time.time_ns() // 1000


class Messenger(_Messenger):
    """:class:`clusterrpc.rpc.protocol.Messenger` with the real clocks filled in: the epoch is
    :func:`new_epoch` unless given, and ``clock`` is :func:`time.time` unless given. Every other
    keyword as there."""

    def __init__(self, *, node: str, cluster: str, keyring: Keyring | None,
                 epoch: int | None = None, clock: Callable[[], float] = time.time,
                 **options: Any) -> None:
        super().__init__(node=node, cluster=cluster, keyring=keyring,
                         epoch=new_epoch() if epoch is None else epoch, clock=clock,
                         **options)


class Serving:
    """What the serving transports of one node share: ``messenger``, a
    :class:`~clusterrpc.rpc.protocol.Dispatcher` over ``registry``, and ``tasks``, the calls of
    ``async`` methods still running (``Node.stop`` waits for them)."""

    __slots__ = ("dispatcher", "messenger", "tasks")

    def __init__(self, messenger: _Messenger, registry: ServiceRegistry) -> None:
        self.messenger = messenger
        self.dispatcher = Dispatcher(registry)
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def counters(self) -> dict[str, int]:
        """The serving counters (``spec/rpc.md``, "Counters")."""
        return self.dispatcher.counters


class DeadlineTimer:
    """One event-loop timer at the earliest deadline of a connection: when it fires,
    ``expire(now)`` ends what is due, and the timer moves to the next deadline.

    The timer is never moved *later* when calls finish early: it fires, expires nothing and
    re-arms, which is cheaper than rescheduling a timer for every call. Call :meth:`arm` after
    anything that may have added an earlier deadline. One event loop.
    """

    __slots__ = ("_expire", "_handle", "_next_deadline", "_when")

    def __init__(self, next_deadline: Callable[[], float | None],
                 expire: Callable[[float], None]) -> None:
        self._next_deadline = next_deadline
        self._expire = expire
        self._handle: asyncio.TimerHandle | None = None
        self._when = float("inf")

    def arm(self) -> None:
        """Make sure the timer fires by the earliest deadline."""
        deadline = self._next_deadline()
        if deadline is None or deadline >= self._when:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._when = deadline
        self._handle = asyncio.get_running_loop().call_at(deadline, self._fire)

    def cancel(self) -> None:
        """Stop the timer (the connection is being closed)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = float("inf")

    def _fire(self) -> None:
        self._handle = None
        self._when = float("inf")
        self._expire(asyncio.get_running_loop().time())
        self.arm()


class AsyncDriver:
    """Drives one :class:`~clusterrpc.rpc.protocol.Connection` on an event loop.

    ``flush()`` writes what the connection queued (the transport knows how); ``serving``, when
    the connection serves, holds the node's running invocations; ``broken(error)`` is told when
    the stream broke framing (the transport closes it). After feeding the connection, the
    transport calls :meth:`process`. One event loop.
    """

    __slots__ = ("_broken", "_flush", "_gathers", "_idle", "_slot_freed", "_tasks", "_timer",
                 "_waiters", "connection")

    def __init__(self, connection: Connection, *, flush: Callable[[], None],
                 serving: Serving | None = None,
                 broken: Callable[[ClusterRPCError], None] | None = None) -> None:
        self.connection = connection
        self._flush = flush
        self._tasks = serving.tasks if serving is not None else set()
        self._broken = broken
        self._waiters: dict[int, asyncio.Future[Value]] = {}
        self._gathers: dict[int, asyncio.Future[GroupReplies]] = {}
        self._slot_freed: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        # A stream carries no multicast calls: its timer needs only the calls' deadlines.
        self._timer = DeadlineTimer(
            connection.calls.next_deadline if connection.stream else connection.next_deadline,
            self._expire,
        )

    # -- events --------------------------------------------------------------------------------

    def process(self) -> None:
        """Handle the connection's events, then flush its output."""
        events = self.connection.events_received()
        if events:
            self._handle(events)
        self._flush()

    def _handle(self, events: list[Any]) -> None:
        settled = False
        for event in events:
            kind = type(event)
            if kind is CallSucceeded:
                settled = True
                waiter = self._waiters.pop(event.call_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(event.value)
            elif kind is CallFailed:
                settled = True
                waiter = self._waiters.pop(event.call_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(event.error)
            elif kind is Invocation:
                task = asyncio.get_running_loop().create_task(self._invoke(event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif kind is GatherEnded:
                settled = True
                gathered = self._gathers.pop(event.call_id, None)
                if gathered is not None and not gathered.done():
                    gathered.set_result(event.replies)
            elif kind is ConnectionBroken and self._broken is not None:
                self._broken(event.error)
        if settled:
            if self._slot_freed is not None:
                self._slot_freed.set()
            if self._idle is not None and not self.connection.in_flight:
                self._idle.set()

    async def _invoke(self, invocation: Invocation) -> None:
        await invocation.run()
        self.process()

    def _expire(self, now: float) -> None:
        self.connection.expire(now)
        self.process()

    # -- calls ---------------------------------------------------------------------------------

    async def wait_for_slot(self) -> None:
        """Return once a normal call may start (``max_in_flight`` not reached). The caller
        bounds the wait with its timeout."""
        while not self.connection.has_capacity:
            if self._slot_freed is None:
                self._slot_freed = asyncio.Event()
            self._slot_freed.clear()
            await self._slot_freed.wait()

    def start_call(self, method: str, params: Sequence[Value], *, timeout: float | None,
                   oneway: bool, destinations: Sequence[Any] = (None,)
                   ) -> tuple[int, asyncio.Future[Value] | None]:
        """Queue a call and flush it; return its id and the future of its answer (``None`` for
        one-way). Raises as :meth:`Connection.send_call` (nothing sent then)."""
        loop = asyncio.get_running_loop()
        connection = self.connection
        call_id = connection.send_call(method, params, now=loop.time(), timeout=timeout,
                                       oneway=oneway, destinations=destinations)
        waiter: asyncio.Future[Value] | None = None
        if not oneway:
            waiter = loop.create_future()
            self._waiters[call_id] = waiter
            self._timer.arm()
        self._flush()
        return call_id, waiter

    async def wait(self, call_id: int, waiter: asyncio.Future[Value]) -> Value:
        """The answer of a started call; cancelling the awaiting task cancels the call (a late
        answer is then dropped)."""
        try:
            return await waiter
        except asyncio.CancelledError:
            self._waiters.pop(call_id, None)
            self.connection.cancel(call_id)
            raise

    async def call(self, method: str, params: Sequence[Value], *, timeout: float | None,
                   oneway: bool = False, destinations: Sequence[Any] = (None,)) -> Value:
        """Send a call and return its answer's value (``None`` once sent, for one-way). Raises
        the call's error (fault, timeout, lost connection) or as :meth:`start_call`."""
        call_id, waiter = self.start_call(method, params, timeout=timeout, oneway=oneway,
                                          destinations=destinations)
        if waiter is None:
            return None
        return await self.wait(call_id, waiter)

    async def call_group(self, method: str, params: Sequence[Value], *, timeout: float,
                         destinations: Sequence[Any], expected: Collection[str] | None,
                         quorum: int | None, before_send: Callable[[int], None] | None
                         ) -> GroupReplies:
        """Send a multicast call to ``destinations`` and gather its answers (see
        :meth:`Connection.send_group_call`)."""
        loop = asyncio.get_running_loop()
        connection = self.connection
        call_id = connection.send_group_call(
            method, params, now=loop.time(), timeout=timeout, destinations=destinations,
            expected=expected, quorum=quorum, before_send=before_send,
        )  # fmt: skip
        gathered: asyncio.Future[GroupReplies] = loop.create_future()
        self._gathers[call_id] = gathered
        self._timer.arm()
        self._flush()
        try:
            return await gathered
        except asyncio.CancelledError:
            self._gathers.pop(call_id, None)
            connection.cancel(call_id)
            raise

    def send_group_oneway(self, method: str, params: Sequence[Value], *,
                          destinations: Sequence[Any],
                          before_send: Callable[[int], None] | None) -> None:
        """Send a one-way multicast call: nothing comes back."""
        self.connection.send_group_oneway(method, params, destinations=destinations,
                                          before_send=before_send)
        self._flush()

    async def wait_idle(self) -> None:
        """Return once no call waits for an answer (the caller bounds the wait)."""
        while self.connection.in_flight:
            if self._idle is None:
                self._idle = asyncio.Event()
            self._idle.clear()
            await self._idle.wait()

    def fail_all(self, error: ClusterRPCError) -> None:
        """Fail every waiting call with ``error`` (connection lost or closed)."""
        self.connection.fail_all(error)
        events = self.connection.events_received()
        if events:
            self._handle(events)

    def close(self, error: ClusterRPCError) -> None:
        """:meth:`fail_all` and stop the timer; multicast calls still gathering fail with
        ``error`` too."""
        self._timer.cancel()
        self.fail_all(error)
        for gathered in self._gathers.values():
            if not gathered.done():
                gathered.set_exception(error)
        self._gathers.clear()
