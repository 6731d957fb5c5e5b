"""Client-side call tracking for one endpoint: call ids, deadlines, replies, faults.

Theory of operation
-------------------
A :class:`CallTracker` belongs to one endpoint (one stream connection, or one UDP peer) and
remembers the calls sent there that still wait for an answer. It does no I/O and reads no clock;
the asyncio I/O layer drives it and owns everything else (futures, timers, sockets)::

    if not tracker.has_capacity:          # back-pressure: wait until an outcome frees a slot
        ...wait...
    out = tracker.start(method, params, now=loop.time(), timeout=5.0)
    send(out.call_id, out.message, oneway=out.oneway)       # seal and write the packet
                                          # (if that fails: tracker.cancel(out.call_id))

    # a reply or fault packet arrived (already authenticated and decoded)
    outcome = tracker.receive(header.call_id, message)      # None: late or unknown, drop it

    # the timer the I/O layer keeps at tracker.next_deadline() fired
    for outcome in tracker.expire(loop.time()): ...

    # the connection broke, or was closed
    for outcome in tracker.fail_all(error): ...      # the transport's error, for every call

Each :data:`CallOutcome` (:class:`CallSucceeded` or :class:`CallFailed`) settles exactly one
call, exactly once: after its outcome is returned, the call id is forgotten, and any later
answer for it is *late* (counted in :attr:`CallTracker.late_replies` and otherwise ignored).
A timed-out call may still have run on the server; that is why its reply is dropped rather than
delivered. After any method that returns outcomes, :meth:`CallTracker.next_deadline` may have
changed, and the I/O layer re-arms its timer.

Call ids are 64-bit (``spec/packet.md``: the header's call id is "chosen by the caller; a reply
or fault carries the id of the call it answers"). They count up from ``first_call_id``, wrap from
``2**64 - 1`` to ``1`` (``0`` is never used, so it can mean "no call"), and skip any id still
outstanding, so an answer always names at most one waiting call. One-way calls take an id too (a
packet needs one) but are not tracked: no answer will ever come.

Cost: outstanding calls are a dict keyed by call id; deadlines are a binary heap of
``(deadline, serial, call)`` entries. A call that ends before its deadline leaves its entry in
the heap (lazy deletion); entries are recognised as dead when they reach the top, and the heap
is rebuilt when dead entries outnumber live ones, so its size stays within a constant factor of
the number of outstanding calls. Every operation is O(log n) amortised, except
:meth:`CallTracker.fail_all` (O(n), once per connection).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Sequence

from clusterrpc.codecs.base import CallMessage, FaultMessage, ReplyMessage
from clusterrpc.errors import (
    CallCancelledError,
    CallTimeoutError,
    ClusterRPCError,
    ConfigurationError,
    Fault,
    TooManyCallsError,
)
from clusterrpc.values import Value

__all__ = [
    "CallFailed",
    "CallOutcome",
    "CallSucceeded",
    "CallTracker",
    "OutgoingCall",
    "TooManyCallsError",
]

MAX_CALL_ID = 2**64 - 1
"""The largest call id; the next one after it is ``1``."""



@dataclasses.dataclass(frozen=True, slots=True)
class OutgoingCall:
    """A call the I/O layer must now send: a packet with ``call_id`` carrying ``message``.

    ``oneway``: send it with ``Flags.ONEWAY``; no reply will come and the tracker does not keep
    it. ``deadline``: ``now + timeout`` in the caller's clock, or ``None`` for no deadline; for a
    one-way call it can only bound the sending, which is the I/O layer's business.
    """

    call_id: int
    message: CallMessage
    oneway: bool
    deadline: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class CallSucceeded:
    """The call ``call_id`` returned ``value``."""

    call_id: int
    value: Value


@dataclasses.dataclass(frozen=True, slots=True)
class CallFailed:
    """The call ``call_id`` failed with ``error``: a :class:`~clusterrpc.errors.Fault` from the
    remote method, :class:`~clusterrpc.errors.CallTimeoutError`,
    :class:`~clusterrpc.errors.CallCancelledError`, or the error given to
    :meth:`CallTracker.fail_all`."""

    call_id: int
    error: ClusterRPCError


CallOutcome = CallSucceeded | CallFailed
"""What settles one call; each outstanding call gets exactly one."""


def value_of(outcome: CallOutcome) -> Value:
    """The value of a call that succeeded; raises the error of one that failed."""
    if isinstance(outcome, CallSucceeded):
        return outcome.value
    raise outcome.error


class _Call:
    """An outstanding call. Heap entries point at this object, so an entry is live only while
    the dict maps the id to this very object (an id reused after a wrap-around is another)."""

    __slots__ = ("call_id", "deadline", "method", "timeout")

    def __init__(self, call_id: int, method: str, timeout: float | None,
                 deadline: float | None) -> None:
        self.call_id = call_id
        self.method = method
        self.timeout = timeout
        self.deadline = deadline


class CallTracker:
    """The outstanding calls of one endpoint (sans-I/O; see the module docstring).

    ``max_in_flight``: how many normal calls may wait for an answer at once (1 to
    :attr:`MAX_IN_FLIGHT`); one-way calls do not count. ``first_call_id``: the first id handed
    out (1 to ``2**64 - 1``); a fresh connection may start anywhere, and tests start near the
    wrap-around. Raises :class:`~clusterrpc.errors.ConfigurationError` for other values.
    Not thread-safe: one event loop drives it.
    """

    __slots__ = ("_calls", "_deadlines", "_late_replies", "_next_id", "_serial", "max_in_flight")

    MAX_IN_FLIGHT = 1 << 32
    """The largest ``max_in_flight``; far below the id space, so a free id always exists."""

    _COMPACT_SLACK = 64
    """Dead heap entries tolerated beyond the number of outstanding calls before a rebuild;
    keeps small trackers from rebuilding after every reply."""

    def __init__(self, *, max_in_flight: int = 256, first_call_id: int = 1) -> None:
        if (not isinstance(max_in_flight, int) or isinstance(max_in_flight, bool)
                or not 1 <= max_in_flight <= self.MAX_IN_FLIGHT):
            raise ConfigurationError(
                f"max_in_flight must be an int in 1..{self.MAX_IN_FLIGHT}, not {max_in_flight!r}"
            )
        if (not isinstance(first_call_id, int) or isinstance(first_call_id, bool)
                or not 1 <= first_call_id <= MAX_CALL_ID):
            raise ConfigurationError(
                f"first_call_id must be an int in 1..2**64-1, not {first_call_id!r}"
            )
        self.max_in_flight = max_in_flight
        self._next_id = first_call_id
        # Insertion order is start order, which fail_all() keeps.
        self._calls: dict[int, _Call] = {}
        self._deadlines: list[tuple[float, int, _Call]] = []
        # The serial breaks deadline ties in start order and keeps heapq from comparing _Calls.
        self._serial = 0
        self._late_replies = 0

    def __repr__(self) -> str:
        return (f"<CallTracker in_flight={len(self._calls)}/{self.max_in_flight} "
                f"late_replies={self._late_replies}>")

    @property
    def has_capacity(self) -> bool:
        """Whether :meth:`start` may be called now for a normal (not one-way) call."""
        return len(self._calls) < self.max_in_flight

    @property
    def in_flight(self) -> int:
        """How many calls wait for an answer."""
        return len(self._calls)

    @property
    def late_replies(self) -> int:
        """How many answers :meth:`receive` ignored: unknown ids, and calls already settled
        (answered, timed out, cancelled or failed) — late or duplicate replies."""
        return self._late_replies

    def __contains__(self, call_id: object) -> bool:
        """Whether ``call_id`` names a call that still waits for an answer."""
        return call_id in self._calls

    def start(self, method: str, params: Sequence[Value], *, now: float,
              timeout: float | None, oneway: bool = False) -> OutgoingCall:
        """Allocate a call id for a call of ``method`` with ``params`` and return what to send.

        ``now`` is the I/O layer's clock; ``timeout`` is in the same unit (seconds), positive and
        finite, or ``None`` for no deadline. A normal call is outstanding from now on, until
        :meth:`receive`, :meth:`expire`, :meth:`cancel` or :meth:`fail_all` settles it. A
        one-way call (``oneway=True``) is not tracked and takes no in-flight slot.

        The method name and values are not checked here; the codec does that when the I/O layer
        encodes the message. If encoding or sending fails, the I/O layer must :meth:`cancel` the
        call (and report its own error to the caller), or the call would hold its slot until
        its deadline.

        Raises :class:`~clusterrpc.errors.ConfigurationError` for a bad ``timeout`` or ``now``,
        and :class:`TooManyCallsError` for a normal call when :attr:`has_capacity` is false. On
        either error nothing changes.
        """
        deadline: float | None = None
        if timeout is not None:
            if not (timeout > 0 and math.isfinite(timeout)):
                raise ConfigurationError(
                    f"timeout must be a positive, finite number of seconds or None, "
                    f"not {timeout!r}"
                )
            deadline = now + timeout
            # A NaN or infinite deadline would never expire and breaks the heap's order.
            if not math.isfinite(deadline):
                raise ConfigurationError(f"now must be a finite clock reading, not {now!r}")
        if not oneway and len(self._calls) >= self.max_in_flight:
            raise TooManyCallsError(
                f"{len(self._calls)} calls already in flight (max_in_flight="
                f"{self.max_in_flight}); wait for has_capacity before starting {method!r}"
            )

        # Skip ids still outstanding: at most max_in_flight of them, far fewer than 2**64 - 1,
        # so this ends, and in practice never loops (ids come back only after a wrap).
        calls = self._calls
        call_id = self._next_id
        while call_id in calls:
            call_id = call_id + 1 if call_id < MAX_CALL_ID else 1
        self._next_id = call_id + 1 if call_id < MAX_CALL_ID else 1

        message = CallMessage(method, tuple(params))
        if not oneway:
            call = _Call(call_id, method, timeout, deadline)
            calls[call_id] = call
            if deadline is not None:
                self._serial += 1
                heapq.heappush(self._deadlines, (deadline, self._serial, call))
        return OutgoingCall(call_id, message, oneway, deadline)

    def receive(self, call_id: int, message: ReplyMessage | FaultMessage) -> CallOutcome | None:
        """Settle the call ``call_id`` with an answer that arrived (in any order).

        Returns :class:`CallSucceeded` for a :class:`~clusterrpc.codecs.base.ReplyMessage`,
        :class:`CallFailed` with a :class:`~clusterrpc.errors.Fault` for a
        :class:`~clusterrpc.codecs.base.FaultMessage`, or ``None`` when no call with that id is
        outstanding (a late or duplicate answer, or one for a call never made): the answer is
        counted in :attr:`late_replies` and must be dropped.
        """
        call = self._calls.pop(call_id, None)
        if call is None:
            self._late_replies += 1
            return None
        self._dropped(call)
        if isinstance(message, FaultMessage):
            return CallFailed(call_id, Fault(message.code, message.message))
        return CallSucceeded(call_id, message.value)

    def next_deadline(self) -> float | None:
        """The earliest deadline of an outstanding call, or ``None`` if no call has one.

        The I/O layer keeps one timer at this time and calls :meth:`expire` when it fires.
        """
        heap = self._deadlines
        calls = self._calls
        # Lazy deletion: discard dead entries that reached the top.
        while heap and calls.get(heap[0][2].call_id) is not heap[0][2]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list[CallOutcome]:
        """Fail every outstanding call whose deadline is ``<= now`` with a
        :class:`~clusterrpc.errors.CallTimeoutError` naming the method and the timeout.

        Returns their outcomes in deadline order (ties in start order); an empty list if none
        is due. A reply that arrives for them later is a late reply.
        """
        heap = self._deadlines
        calls = self._calls
        outcomes: list[CallOutcome] = []
        while heap and heap[0][0] <= now:
            _, _, call = heapq.heappop(heap)
            if calls.get(call.call_id) is not call:
                continue  # settled earlier: a dead entry
            del calls[call.call_id]
            error = CallTimeoutError(
                f"call {call.call_id} to {call.method!r} got no reply within {call.timeout:g} s"
            )
            outcomes.append(CallFailed(call.call_id, error))
        return outcomes

    def cancel(self, call_id: int) -> CallOutcome | None:
        """Give up on the call ``call_id``: return :class:`CallFailed` with a
        :class:`~clusterrpc.errors.CallCancelledError` if it was outstanding, else ``None``
        (it was already settled, or never tracked: unknown ids and one-way calls). A reply that
        arrives for it later is a late reply.
        """
        call = self._calls.pop(call_id, None)
        if call is None:
            return None
        self._dropped(call)
        return CallFailed(call_id, CallCancelledError(
            f"call {call_id} to {call.method!r} was cancelled before its reply"
        ))

    def fail_all(self, error: ClusterRPCError) -> list[CallOutcome]:
        """Fail every outstanding call with ``error`` (the connection is lost or closed).

        Returns their outcomes in start order; the same ``error`` object is in each. The tracker
        is empty afterwards and stays usable (a reconnect may reuse it; call ids keep counting,
        so a reply from the old connection cannot match a new call).
        """
        outcomes: list[CallOutcome] = [CallFailed(call_id, error) for call_id in self._calls]
        self._calls.clear()
        self._deadlines.clear()
        return outcomes

    def _dropped(self, call: _Call) -> None:
        """Account for ``call`` leaving the dict before its deadline: its heap entry is now
        dead. Rebuild the heap once dead entries outnumber the outstanding calls (by more than
        a little slack), so memory stays O(outstanding) even when every call is answered long
        before its deadline; the O(n) rebuild then happens at most every ~n removals."""
        heap = self._deadlines
        if call.deadline is None or len(heap) <= 2 * len(self._calls) + self._COMPACT_SLACK:
            return
        calls = self._calls
        heap[:] = [entry for entry in heap if calls.get(entry[2].call_id) is entry[2]]
        heapq.heapify(heap)
