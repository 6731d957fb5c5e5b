"""The client-side call tracker, sans-I/O: every clock reading is an argument."""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from clusterrpc.codecs.base import CallMessage, FaultMessage, ReplyMessage
from clusterrpc.errors import (
    CallCancelledError,
    CallTimeoutError,
    ClusterRPCError,
    ConfigurationError,
    Fault,
    FaultCode,
)
from clusterrpc.rpc import calls
from clusterrpc.rpc.calls import (
    MAX_CALL_ID,
    CallFailed,
    CallOutcome,
    CallSucceeded,
    CallTracker,
    OutgoingCall,
    TooManyCallsError,
)

NOW = 1_000.0  # an arbitrary monotonic clock reading, in seconds


class LostError(ClusterRPCError):
    """Stands in for the transport's "connection lost" error."""


def succeeded(outcome: CallOutcome | None) -> CallSucceeded:
    assert isinstance(outcome, CallSucceeded), outcome
    return outcome


def failed(outcome: CallOutcome | None) -> CallFailed:
    assert isinstance(outcome, CallFailed), outcome
    return outcome


# -- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "8", CallTracker.MAX_IN_FLIGHT + 1])
def test_max_in_flight_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_in_flight"):
        CallTracker(max_in_flight=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, 2**64, True, 1.0, None])
def test_first_call_id_must_be_a_nonzero_64_bit_int(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="first_call_id"):
        CallTracker(first_call_id=bad)  # type: ignore[arg-type]


def test_configuration_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        CallTracker(8)  # type: ignore[call-arg]


def test_public_names() -> None:
    assert set(calls.__all__) == {
        "CallFailed", "CallOutcome", "CallSucceeded", "CallTracker", "OutgoingCall",
        "TooManyCallsError",
    }
    assert issubclass(TooManyCallsError, ClusterRPCError)


def test_call_tracking_does_no_io() -> None:
    """Importing the tracker must not pull in sockets, threads or the event loop."""
    code = (
        "import sys, clusterrpc.rpc.calls\n"
        "bad = {'socket', 'asyncio', 'threading', 'selectors'} & set(sys.modules)\n"
        "print(sorted(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# -- start ----------------------------------------------------------------------------------


def test_start_returns_what_to_send() -> None:
    tracker = CallTracker()
    out = tracker.start("election.vote", [3, "n1"], now=NOW, timeout=2.5)
    assert out == OutgoingCall(1, CallMessage("election.vote", (3, "n1")), False, NOW + 2.5)
    assert isinstance(out.message.params, tuple)  # a list in, a tuple out: the event is frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.call_id = 2  # type: ignore[misc]
    assert tracker.in_flight == 1
    assert out.call_id in tracker
    assert "in_flight=1/256" in repr(tracker)


def test_ids_count_up_from_first_call_id() -> None:
    tracker = CallTracker(first_call_id=40)
    ids = [tracker.start("m", (), now=NOW, timeout=None).call_id for _ in range(5)]
    assert ids == [40, 41, 42, 43, 44]


def test_no_timeout_means_no_deadline() -> None:
    tracker = CallTracker()
    out = tracker.start("m", (), now=NOW, timeout=None)
    assert out.deadline is None
    assert tracker.next_deadline() is None
    assert tracker.expire(NOW + 1e9) == []
    assert tracker.in_flight == 1


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_bad_timeout_is_refused_and_changes_nothing(bad: float) -> None:
    tracker = CallTracker()
    with pytest.raises(ConfigurationError, match="timeout"):
        tracker.start("m", (), now=NOW, timeout=bad)
    assert tracker.in_flight == 0
    assert tracker.start("m", (), now=NOW, timeout=1).call_id == 1  # no id was used


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_bad_clock_reading_is_refused(bad: float) -> None:
    tracker = CallTracker()
    with pytest.raises(ConfigurationError, match="now"):
        tracker.start("m", (), now=bad, timeout=1.0)
    assert tracker.in_flight == 0


# -- capacity -------------------------------------------------------------------------------


def test_capacity_and_back_pressure() -> None:
    tracker = CallTracker(max_in_flight=2)
    first = tracker.start("m", (), now=NOW, timeout=5)
    assert tracker.has_capacity
    tracker.start("m", (), now=NOW, timeout=None)
    assert not tracker.has_capacity
    with pytest.raises(TooManyCallsError, match="max_in_flight=2"):
        tracker.start("m", (), now=NOW, timeout=5)
    assert tracker.in_flight == 2
    # An outcome of any kind frees the slot; the refused start used no id.
    tracker.receive(first.call_id, ReplyMessage(None))
    assert tracker.has_capacity
    assert tracker.start("m", (), now=NOW, timeout=5).call_id == 3


@pytest.mark.parametrize("settle", ["reply", "fault", "expire", "cancel", "fail_all"])
def test_every_outcome_frees_its_slot(settle: str) -> None:
    tracker = CallTracker(max_in_flight=1)
    out = tracker.start("m", (), now=NOW, timeout=1)
    assert not tracker.has_capacity
    if settle == "reply":
        tracker.receive(out.call_id, ReplyMessage(1))
    elif settle == "fault":
        tracker.receive(out.call_id, FaultMessage(1, "no"))
    elif settle == "expire":
        tracker.expire(NOW + 1)
    elif settle == "cancel":
        tracker.cancel(out.call_id)
    else:
        tracker.fail_all(LostError("gone"))
    assert tracker.has_capacity
    assert tracker.in_flight == 0


# -- replies and faults ---------------------------------------------------------------------


def test_thousand_concurrent_calls_answered_in_shuffled_order() -> None:
    tracker = CallTracker(max_in_flight=1000)
    expected: dict[int, str] = {}
    for number in range(1000):
        out = tracker.start("echo", [number], now=NOW, timeout=30)
        expected[out.call_id] = f"value {number}"
    assert tracker.in_flight == 1000
    assert not tracker.has_capacity
    assert len(expected) == 1000  # 1,000 distinct ids

    order = list(expected)
    random.Random(1234).shuffle(order)
    for call_id in order:
        outcome = succeeded(tracker.receive(call_id, ReplyMessage(expected[call_id])))
        assert outcome == CallSucceeded(call_id, expected[call_id])
    assert tracker.in_flight == 0
    assert tracker.late_replies == 0
    assert tracker.next_deadline() is None
    assert tracker.expire(NOW + 60) == []


def test_out_of_order_replies() -> None:
    tracker = CallTracker()
    a, b, c = (tracker.start("m", [n], now=NOW, timeout=10).call_id for n in range(3))
    assert tracker.receive(c, ReplyMessage("c")) == CallSucceeded(c, "c")
    assert tracker.receive(a, ReplyMessage("a")) == CallSucceeded(a, "a")
    assert tracker.in_flight == 1
    assert b in tracker
    assert a not in tracker
    assert tracker.receive(b, ReplyMessage({"b": [1]})) == CallSucceeded(b, {"b": [1]})


def test_fault_becomes_fault_error() -> None:
    tracker = CallTracker()
    call_id = tracker.start("m", (), now=NOW, timeout=1).call_id
    outcome = failed(tracker.receive(call_id, FaultMessage(FaultCode.METHOD_NOT_FOUND, "no m")))
    assert outcome.call_id == call_id
    assert isinstance(outcome.error, Fault)
    assert outcome.error == Fault(-32601, "no m")
    assert tracker.in_flight == 0
    assert tracker.receive(call_id, FaultMessage(1, "again")) is None
    assert tracker.late_replies == 1


def test_duplicate_late_and_unknown_replies_are_ignored_and_counted() -> None:
    tracker = CallTracker()
    answered = tracker.start("m", (), now=NOW, timeout=1).call_id
    timed_out = tracker.start("m", (), now=NOW, timeout=1).call_id
    cancelled = tracker.start("m", (), now=NOW, timeout=1).call_id
    oneway = tracker.start("m", (), now=NOW, timeout=None, oneway=True).call_id
    waiting = tracker.start("m", (), now=NOW, timeout=None).call_id

    assert tracker.receive(answered, ReplyMessage(1)) is not None
    assert len(tracker.expire(NOW + 1)) == 2
    assert tracker.cancel(cancelled) is None  # already timed out

    late = [answered, answered, timed_out, cancelled, oneway, 999, 0, MAX_CALL_ID]
    for call_id in late:
        assert tracker.receive(call_id, ReplyMessage("late")) is None
    assert tracker.late_replies == len(late)
    assert tracker.in_flight == 1  # the one call with no deadline still waits, untouched
    assert tracker.receive(waiting, ReplyMessage(2)) == CallSucceeded(waiting, 2)


# -- deadlines ------------------------------------------------------------------------------


def test_deadline_expires_exactly_at_now_equal_deadline() -> None:
    tracker = CallTracker()
    call_id = tracker.start("svc.slow", (), now=100.0, timeout=1.5).call_id
    assert tracker.next_deadline() == 101.5
    assert tracker.expire(101.49999) == []
    assert tracker.in_flight == 1
    (outcome,) = tracker.expire(101.5)
    error = failed(outcome).error
    assert outcome.call_id == call_id
    assert isinstance(error, CallTimeoutError)
    assert isinstance(error, TimeoutError)
    assert "svc.slow" in str(error)
    assert "1.5 s" in str(error)
    assert tracker.in_flight == 0
    assert tracker.next_deadline() is None
    assert tracker.expire(1e9) == []  # expired once only


def test_expire_returns_calls_in_deadline_order_then_start_order() -> None:
    tracker = CallTracker()
    timeouts = {"c": 3.0, "a": 1.0, "b2": 2.0, "b1": 2.0, "never": None, "d": 4.0}
    ids = {name: tracker.start(name, (), now=NOW, timeout=timeout).call_id
           for name, timeout in timeouts.items()}
    outcomes = tracker.expire(NOW + 3.0)
    assert [outcome.call_id for outcome in outcomes] == [ids["a"], ids["b2"], ids["b1"], ids["c"]]
    assert all(isinstance(failed(outcome).error, CallTimeoutError) for outcome in outcomes)
    assert tracker.next_deadline() == NOW + 4.0
    assert tracker.in_flight == 2


def test_next_deadline_skips_settled_calls() -> None:
    tracker = CallTracker()
    a = tracker.start("m", (), now=NOW, timeout=1).call_id
    b = tracker.start("m", (), now=NOW, timeout=2).call_id
    c = tracker.start("m", (), now=NOW, timeout=3).call_id
    tracker.start("m", (), now=NOW, timeout=None)
    assert tracker.next_deadline() == NOW + 1
    tracker.receive(a, ReplyMessage(None))
    assert tracker.next_deadline() == NOW + 2
    tracker.cancel(b)
    assert tracker.next_deadline() == NOW + 3
    tracker.receive(c, FaultMessage(1, "x"))
    assert tracker.next_deadline() is None
    # Settled calls' dead heap entries give no outcome when their time comes.
    assert tracker.expire(NOW + 10) == []
    assert tracker.in_flight == 1


def test_settled_middle_entry_is_skipped_by_expire() -> None:
    tracker = CallTracker()
    a = tracker.start("m", (), now=NOW, timeout=1).call_id
    b = tracker.start("m", (), now=NOW, timeout=2).call_id
    c = tracker.start("m", (), now=NOW, timeout=3).call_id
    tracker.receive(b, ReplyMessage(None))
    assert [outcome.call_id for outcome in tracker.expire(NOW + 3)] == [a, c]


def test_heap_stays_bounded_when_calls_end_before_their_deadline() -> None:
    # White-box: lazy deletion must not let dead entries pile up without bound, and the
    # rebuilt heap must still give deadlines in order.
    rng = random.Random(99)
    tracker = CallTracker(max_in_flight=40)
    waiting: dict[int, float] = {}
    for step in range(10_000):
        out = tracker.start("m", (), now=NOW, timeout=rng.randint(100, 10_000) + step / 7)
        assert out.deadline is not None
        if step % 500 == 0:
            waiting[out.call_id] = out.deadline  # a few calls stay; the rest are answered
        else:
            assert tracker.receive(out.call_id, ReplyMessage(step)) is not None
        assert len(tracker._deadlines) <= 2 * tracker.in_flight + CallTracker._COMPACT_SLACK + 1
    assert tracker.next_deadline() == min(waiting.values())
    outcomes = tracker.expire(NOW + 20_000)
    assert [outcome.call_id for outcome in outcomes] == sorted(waiting, key=waiting.__getitem__)


# -- cancel and fail_all --------------------------------------------------------------------


def test_cancel() -> None:
    tracker = CallTracker()
    call_id = tracker.start("svc.m", (), now=NOW, timeout=5).call_id
    other = tracker.start("m", (), now=NOW, timeout=9).call_id
    outcome = failed(tracker.cancel(call_id))
    assert outcome.call_id == call_id
    assert isinstance(outcome.error, CallCancelledError)
    assert "svc.m" in str(outcome.error)
    assert tracker.cancel(call_id) is None  # cancelled once only
    assert tracker.cancel(12345) is None  # unknown
    assert tracker.late_replies == 0  # cancelling counts nothing
    assert tracker.receive(call_id, ReplyMessage(1)) is None
    assert tracker.late_replies == 1
    assert tracker.next_deadline() == NOW + 9
    assert tracker.in_flight == 1
    assert other in tracker


def test_fail_all() -> None:
    tracker = CallTracker(max_in_flight=3)
    ids = [tracker.start("m", (), now=NOW, timeout=timeout).call_id for timeout in (5, None, 1)]
    error = LostError("connection lost")
    outcomes = tracker.fail_all(error)
    assert outcomes == [CallFailed(call_id, error) for call_id in ids]  # start order
    assert tracker._deadlines == []  # white-box: no dead heap entries are kept either
    assert tracker.in_flight == 0
    assert tracker.next_deadline() is None
    assert tracker.expire(NOW + 100) == []
    assert tracker.fail_all(error) == []

    # Still usable, and ids keep counting: an old connection's reply matches nothing new.
    fresh = tracker.start("m", (), now=NOW, timeout=1).call_id
    assert fresh not in ids
    assert tracker.receive(ids[0], ReplyMessage(1)) is None
    assert tracker.late_replies == 1
    assert tracker.receive(fresh, ReplyMessage(2)) == CallSucceeded(fresh, 2)


# -- one-way calls --------------------------------------------------------------------------


def test_oneway_calls_are_not_tracked() -> None:
    tracker = CallTracker(max_in_flight=1)
    tracker.start("m", (), now=NOW, timeout=None)
    assert not tracker.has_capacity
    # A full tracker still sends one-way calls: they take no slot.
    out = tracker.start("election.vote", (3,), now=NOW, timeout=2, oneway=True)
    assert out == OutgoingCall(2, CallMessage("election.vote", (3,)), True, NOW + 2)
    assert out.call_id not in tracker
    assert tracker.in_flight == 1
    assert tracker.next_deadline() is None  # its deadline only bounds the send
    assert tracker.expire(NOW + 10) == []
    assert tracker.cancel(out.call_id) is None
    assert tracker.receive(out.call_id, ReplyMessage(None)) is None
    assert tracker.late_replies == 1


def test_oneway_timeout_is_still_checked() -> None:
    tracker = CallTracker()
    with pytest.raises(ConfigurationError):
        tracker.start("m", (), now=NOW, timeout=-1, oneway=True)


# -- call ids -------------------------------------------------------------------------------


def test_ids_wrap_from_max_to_one_never_zero() -> None:
    tracker = CallTracker(first_call_id=MAX_CALL_ID - 1)
    ids = [tracker.start("m", (), now=NOW, timeout=None, oneway=n % 2 == 0).call_id
           for n in range(4)]
    assert ids == [MAX_CALL_ID - 1, MAX_CALL_ID, 1, 2]
    assert MAX_CALL_ID == 2**64 - 1


def test_ids_skip_outstanding_ids_after_a_wrap() -> None:
    tracker = CallTracker(first_call_id=MAX_CALL_ID - 2)
    old = [tracker.start("m", (), now=NOW, timeout=None).call_id for _ in range(6)]
    assert old == [MAX_CALL_ID - 2, MAX_CALL_ID - 1, MAX_CALL_ID, 1, 2, 3]
    for call_id in (MAX_CALL_ID - 2, 1, 3):  # leave MAX-1, MAX and 2 outstanding
        tracker.receive(call_id, ReplyMessage(None))
    # White-box stand-in for the 2**64 - 6 calls that would bring the counter round again.
    tracker._next_id = MAX_CALL_ID - 2
    new = [tracker.start("m", (), now=NOW, timeout=None, oneway=n == 1).call_id
           for n in range(4)]
    assert new == [MAX_CALL_ID - 2, 1, 3, 4]
    assert 0 not in new
    for call_id in (MAX_CALL_ID - 1, MAX_CALL_ID, 2):
        assert call_id in tracker


def test_reused_id_is_not_expired_by_its_old_calls_dead_deadline() -> None:
    tracker = CallTracker(first_call_id=5)
    tracker.start("old", (), now=NOW, timeout=1)
    assert tracker.receive(5, ReplyMessage(None)) is not None  # its heap entry is now dead
    tracker._next_id = 5  # white-box stand-in for 2**64 - 1 more calls: id 5 comes round
    assert tracker.start("new", (), now=NOW, timeout=10).call_id == 5
    assert tracker.expire(NOW + 1) == []  # the old call's deadline is not the new call's
    assert tracker.next_deadline() == NOW + 10
    (outcome,) = tracker.expire(NOW + 10)
    assert "'new'" in str(failed(outcome).error)


# -- a reference model ----------------------------------------------------------------------


class CallTrackerMachine(RuleBasedStateMachine):
    """Random sequences of operations against a plain model: a dict of outstanding calls."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = CallTracker()
        self.max_in_flight = 1
        self.next_id = 1
        self.now = 0.0
        self.serial = 0
        # call id -> (deadline or None, start serial, expected reply value)
        self.outstanding: dict[int, tuple[float | None, int, int]] = {}
        self.late = 0

    @initialize(
        max_in_flight=st.integers(1, 6),
        first_call_id=st.sampled_from([1, 7, MAX_CALL_ID - 3, MAX_CALL_ID]),
    )
    def configure(self, max_in_flight: int, first_call_id: int) -> None:
        self.tracker = CallTracker(max_in_flight=max_in_flight, first_call_id=first_call_id)
        self.max_in_flight = max_in_flight
        self.next_id = first_call_id

    def expected_id(self) -> int:
        call_id = self.next_id
        while call_id in self.outstanding:
            call_id = call_id % MAX_CALL_ID + 1
        self.next_id = call_id % MAX_CALL_ID + 1
        return call_id

    @rule(timeout=st.none() | st.integers(1, 5).map(float), oneway=st.booleans())
    def start(self, timeout: float | None, oneway: bool) -> None:
        if not oneway and len(self.outstanding) >= self.max_in_flight:
            with pytest.raises(TooManyCallsError):
                self.tracker.start("m", (), now=self.now, timeout=timeout)
            return
        self.serial += 1
        out = self.tracker.start("m", [self.serial], now=self.now, timeout=timeout,
                                 oneway=oneway)
        assert out.call_id == self.expected_id()
        assert out.call_id != 0
        assert out.message.params == (self.serial,)
        deadline = None if timeout is None else self.now + timeout
        assert out.deadline == deadline
        if not oneway:
            self.outstanding[out.call_id] = (deadline, self.serial, self.serial)

    @precondition(lambda self: bool(self.outstanding))
    @rule(data=st.data(), fault=st.booleans())
    def answer(self, data: st.DataObject, fault: bool) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.outstanding)))
        value = self.outstanding.pop(call_id)[2]
        if fault:
            outcome = failed(self.tracker.receive(call_id, FaultMessage(value, "f")))
            assert outcome.error == Fault(value, "f")
        else:
            assert self.tracker.receive(call_id, ReplyMessage(value)) == CallSucceeded(
                call_id, value
            )

    @rule(call_id=st.integers(0, 12) | st.integers(MAX_CALL_ID - 4, MAX_CALL_ID))
    def answer_any(self, call_id: int) -> None:
        """Any id at all: an outstanding call's answer, or a late or unknown one."""
        outcome = self.tracker.receive(call_id, ReplyMessage(-1))
        if call_id in self.outstanding:
            del self.outstanding[call_id]
            assert outcome == CallSucceeded(call_id, -1)
        else:
            assert outcome is None
            self.late += 1

    @rule(call_id=st.integers(0, 12) | st.integers(MAX_CALL_ID - 4, MAX_CALL_ID))
    def cancel(self, call_id: int) -> None:
        outcome = self.tracker.cancel(call_id)
        if self.outstanding.pop(call_id, None) is None:
            assert outcome is None
        else:
            assert isinstance(failed(outcome).error, CallCancelledError)
            assert failed(outcome).call_id == call_id

    @rule(step=st.sampled_from([0.0, 0.5, 1.0, 2.0, 7.0]))
    def expire(self, step: float) -> None:
        self.now += step
        due = sorted(
            (deadline, serial, call_id)
            for call_id, (deadline, serial, _) in self.outstanding.items()
            if deadline is not None and deadline <= self.now
        )
        outcomes = self.tracker.expire(self.now)
        assert [outcome.call_id for outcome in outcomes] == [call_id for *_, call_id in due]
        assert all(isinstance(failed(outcome).error, CallTimeoutError) for outcome in outcomes)
        for *_, call_id in due:
            del self.outstanding[call_id]

    @rule()
    def fail_all(self) -> None:
        error = LostError("lost")
        outcomes = self.tracker.fail_all(error)
        by_start = sorted(self.outstanding, key=lambda call_id: self.outstanding[call_id][1])
        assert outcomes == [CallFailed(call_id, error) for call_id in by_start]
        self.outstanding.clear()

    @invariant()
    def matches_the_model(self) -> None:
        tracker = self.tracker
        assert tracker.in_flight == len(self.outstanding)
        assert tracker.has_capacity == (len(self.outstanding) < self.max_in_flight)
        assert tracker.late_replies == self.late
        deadlines = [d for d, _, _ in self.outstanding.values() if d is not None]
        assert tracker.next_deadline() == (min(deadlines) if deadlines else None)
        for call_id in self.outstanding:
            assert call_id in tracker


CallTrackerMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestCallTracker = CallTrackerMachine.TestCase
