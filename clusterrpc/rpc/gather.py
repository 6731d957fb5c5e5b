"""Gathering the answers to a multicast call (sans-I/O).

A multicast call is one packet to a group; every member that publishes the method answers by
unicast, each with the same call id. A :class:`GatherTracker` collects those answers per call,
keyed by the *authenticated* sender name (the packet layer has already refused anything that
does not authenticate), and says when a call is complete:

* as soon as every expected member answered (when the membership is known);
* as soon as ``quorum`` answers arrived (when a quorum is asked for);
* else at its deadline, with whatever arrived.

A second answer from the same member is a duplicate (counted, dropped: the first one counts);
answers to calls already complete are late (counted, dropped). The result is a
:class:`GroupReplies`: member name → value or :class:`~clusterrpc.errors.Fault`, plus the expected
members that did not answer. A missing member is reported, never waited for beyond the deadline.

Like :class:`~clusterrpc.rpc.CallTracker`, it reads no clock (``now`` comes in) and does no I/O.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Collection, Iterator, Mapping

from clusterrpc.codecs.base import FaultMessage, ReplyMessage
from clusterrpc.errors import ConfigurationError, Fault, TooManyCallsError
from clusterrpc.rpc.calls import MAX_CALL_ID
from clusterrpc.values import Value

__all__ = ["GatherTracker", "GroupReplies"]


@dataclasses.dataclass(frozen=True, slots=True)
class GroupReplies(Mapping[str, "Value | Fault"]):
    """The answers to one multicast call: a read-only mapping of member name → value (or
    :class:`~clusterrpc.errors.Fault` when that member's method failed).

    ``missing``: the expected members that did not answer, sorted (empty when the membership
    was not given: then nobody is known to be missing). ``expected``: the membership the call
    was made with, or ``None``. ``timed_out``: the deadline ended the call (rather than every
    expected member, or the quorum, having answered).
    """

    replies: Mapping[str, Value | Fault]
    missing: tuple[str, ...] = ()
    expected: frozenset[str] | None = None
    timed_out: bool = False

    def __getitem__(self, member: str) -> Value | Fault:
        return self.replies[member]

    def __iter__(self) -> Iterator[str]:
        return iter(self.replies)

    def __len__(self) -> int:
        return len(self.replies)

    @property
    def faults(self) -> dict[str, Fault]:
        """The members whose method answered with a fault."""
        return {name: answer for name, answer in self.replies.items()
                if isinstance(answer, Fault)}

    @property
    def succeeded(self) -> dict[str, Value]:
        """The members whose method returned a value, with it (a plain dict)."""
        return {name: answer for name, answer in self.replies.items()
                if not isinstance(answer, Fault)}

    def __repr__(self) -> str:
        extra = f", missing={list(self.missing)!r}" if self.missing else ""
        return f"GroupReplies({dict(self.replies)!r}{extra})"


class _Gathering:
    __slots__ = ("call_id", "deadline", "expected", "method", "quorum", "replies", "waiting")

    def __init__(self, call_id: int, method: str, deadline: float,
                 expected: frozenset[str] | None, quorum: int | None) -> None:
        self.call_id = call_id
        self.method = method
        self.deadline = deadline
        self.expected = expected
        self.quorum = quorum
        self.replies: dict[str, Value | Fault] = {}
        # Expected members yet to answer: a count, so completion is O(1) per answer.
        self.waiting = -1 if expected is None else len(expected)

    def add(self, sender: str, answer: Value | Fault) -> bool:
        """Record a first answer from ``sender``; return whether the call is now complete."""
        self.replies[sender] = answer
        if self.waiting > 0 and self.expected is not None and sender in self.expected:
            self.waiting -= 1
        if self.quorum is not None and len(self.replies) >= self.quorum:
            return True
        return self.waiting == 0

    def result(self, *, timed_out: bool) -> GroupReplies:
        missing = () if self.expected is None else tuple(
            sorted(self.expected.difference(self.replies))
        )
        return GroupReplies(dict(self.replies), missing, self.expected, timed_out)


class GatherTracker:
    """The multicast calls one sending socket waits on (see the module docstring).

    ``max_in_flight``: multicast calls gathering at once; :meth:`start` raises
    :class:`~clusterrpc.errors.TooManyCallsError` beyond it. Not thread-safe.
    """

    __slots__ = ("_calls", "_deadlines", "_next_id", "duplicate_replies", "late_replies",
                 "max_in_flight")  # fmt: skip

    def __init__(self, *, max_in_flight: int = 64, first_call_id: int = 1) -> None:
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be a positive int, not {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        self._next_id = first_call_id
        self._calls: dict[int, _Gathering] = {}
        self._deadlines: list[tuple[float, int]] = []
        self.late_replies = 0
        """Answers to calls already complete (or never made): dropped."""
        self.duplicate_replies = 0
        """Second and later answers from the same member to one call: dropped."""

    @property
    def in_flight(self) -> int:
        """Multicast calls still gathering."""
        return len(self._calls)

    @property
    def has_capacity(self) -> bool:
        """Whether :meth:`start` may be called now."""
        return len(self._calls) < self.max_in_flight

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._calls

    def start(self, method: str, *, now: float, timeout: float,
              expected: Collection[str] | None = None, quorum: int | None = None) -> int:
        """Begin gathering answers for a call of ``method``; return its call id.

        ``timeout`` (seconds, positive and finite) is required: a multicast call cannot know who
        will answer, so only a deadline bounds it. ``expected``: the member names that should
        answer (the call completes when all did). ``quorum``: complete after this many answers.
        Raises :class:`~clusterrpc.errors.ConfigurationError` for bad values and
        :class:`~clusterrpc.errors.TooManyCallsError` without capacity.
        """
        if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                or not timeout > 0 or not math.isfinite(timeout)):
            raise ConfigurationError(
                f"a multicast call needs a positive, finite timeout, not {timeout!r}"
            )
        if quorum is not None and (isinstance(quorum, bool) or not isinstance(quorum, int)
                                   or quorum < 1):
            raise ConfigurationError(f"quorum must be a positive int or None, not {quorum!r}")
        if not self.has_capacity:
            raise TooManyCallsError(
                f"{len(self._calls)} multicast calls already gathering "
                f"(max_in_flight={self.max_in_flight})"
            )
        call_id = self._next_id
        while call_id in self._calls:
            call_id = call_id + 1 if call_id < MAX_CALL_ID else 1
        self._next_id = call_id + 1 if call_id < MAX_CALL_ID else 1
        deadline = now + timeout
        self._calls[call_id] = _Gathering(
            call_id, method, deadline, None if expected is None else frozenset(expected), quorum
        )
        heapq.heappush(self._deadlines, (deadline, call_id))
        return call_id

    def receive(self, call_id: int, sender: str, message: ReplyMessage | FaultMessage
                ) -> GroupReplies | None:
        """Record ``sender``'s answer to ``call_id``; return the result if the call is now
        complete (it is then forgotten), else ``None``."""
        gathering = self._calls.get(call_id)
        if gathering is None:
            self.late_replies += 1
            return None
        if sender in gathering.replies:
            self.duplicate_replies += 1
            return None
        answer = (Fault(message.code, message.message) if isinstance(message, FaultMessage)
                  else message.value)
        if not gathering.add(sender, answer):
            return None
        del self._calls[call_id]
        return gathering.result(timed_out=False)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a call still gathering, or ``None``."""
        heap = self._deadlines
        while heap and heap[0][1] not in self._calls:
            heapq.heappop(heap)
        while heap and self._calls[heap[0][1]].deadline != heap[0][0]:
            heapq.heappop(heap)  # an id reused after a wrap-around: a dead entry
        return heap[0][0] if heap else None

    def expire(self, now: float) -> list[tuple[int, GroupReplies]]:
        """End every call whose deadline is ``<= now``; return ``(call_id, result)`` for each,
        with ``timed_out`` set."""
        heap = self._deadlines
        ended: list[tuple[int, GroupReplies]] = []
        while heap and heap[0][0] <= now:
            deadline, call_id = heapq.heappop(heap)
            gathering = self._calls.get(call_id)
            if gathering is None or gathering.deadline != deadline:
                continue
            del self._calls[call_id]
            ended.append((call_id, gathering.result(timed_out=True)))
        return ended

    def cancel(self, call_id: int) -> GroupReplies | None:
        """Stop gathering for ``call_id``; return what arrived so far (``None`` if unknown)."""
        gathering = self._calls.pop(call_id, None)
        return None if gathering is None else gathering.result(timed_out=False)

    def cancel_all(self) -> list[tuple[int, GroupReplies]]:
        """Stop every gathering (the socket closed); ``(call_id, what arrived)`` for each."""
        ended = [(call_id, gathering.result(timed_out=False))
                 for call_id, gathering in self._calls.items()]
        self._calls.clear()
        self._deadlines.clear()
        return ended
