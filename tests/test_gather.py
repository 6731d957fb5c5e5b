"""GatherTracker: multicast answers gathered by member, without sockets or clocks."""

from __future__ import annotations

import pytest

from clusterrpc import ConfigurationError, Fault, TooManyCallsError
from clusterrpc.codecs import FaultMessage, ReplyMessage
from clusterrpc.rpc.gather import GatherTracker, GroupReplies


def reply(value: object) -> ReplyMessage:
    return ReplyMessage(value)  # type: ignore[arg-type]


def test_completes_when_every_expected_member_answered() -> None:
    tracker = GatherTracker()
    call = tracker.start("svc.status", now=0.0, timeout=1.0, expected=["a", "b", "c"])
    assert tracker.receive(call, "a", reply(1)) is None
    assert tracker.receive(call, "b", reply(2)) is None
    result = tracker.receive(call, "c", FaultMessage(-32500, "boom"))
    assert isinstance(result, GroupReplies)
    assert result.missing == ()
    assert not result.timed_out
    assert dict(result) == {"a": 1, "b": 2, "c": Fault(-32500, "boom")}
    assert result.succeeded == {"a": 1, "b": 2}
    assert result.faults == {"c": Fault(-32500, "boom")}
    assert call not in tracker
    assert tracker.next_deadline() is None


def test_deadline_reports_the_missing_members() -> None:
    tracker = GatherTracker()
    call = tracker.start("svc.status", now=10.0, timeout=0.5, expected=["a", "b", "c"])
    tracker.receive(call, "b", reply("ok"))
    assert tracker.next_deadline() == 10.5
    assert tracker.expire(10.4) == []
    ((ended, result),) = tracker.expire(10.5)
    assert ended == call
    assert result.timed_out
    assert result.missing == ("a", "c")
    assert dict(result) == {"b": "ok"}
    assert tracker.receive(call, "a", reply("late")) is None
    assert tracker.late_replies == 1


def test_quorum_and_unknown_membership() -> None:
    tracker = GatherTracker()
    call = tracker.start("svc.status", now=0.0, timeout=1.0, quorum=2)
    assert tracker.receive(call, "x", reply(1)) is None
    result = tracker.receive(call, "y", reply(2))
    assert result is not None
    assert result.missing == ()
    assert result.expected is None
    unknown = tracker.start("svc.status", now=0.0, timeout=1.0)
    for name in "pqrs":
        assert tracker.receive(unknown, name, reply(name)) is None  # waits for the deadline
    ((_, result),) = tracker.expire(1.0)
    assert sorted(result) == list("pqrs")
    assert result.missing == ()


def test_duplicates_are_collapsed_and_the_first_answer_counts() -> None:
    tracker = GatherTracker()
    call = tracker.start("svc.status", now=0.0, timeout=1.0, expected=["a", "b"])
    tracker.receive(call, "a", reply("first"))
    tracker.receive(call, "a", reply("second"))
    tracker.receive(call, "a", reply("third"))
    result = tracker.receive(call, "b", reply("b"))
    assert result is not None
    assert result["a"] == "first"
    assert tracker.duplicate_replies == 2


def test_members_outside_the_expected_set_are_kept_but_do_not_complete() -> None:
    tracker = GatherTracker()
    call = tracker.start("svc.status", now=0.0, timeout=1.0, expected=["a"])
    assert tracker.receive(call, "stranger", reply(0)) is None
    result = tracker.receive(call, "a", reply(1))
    assert result is not None
    assert set(result) == {"a", "stranger"}


def test_cancel_capacity_and_bad_arguments() -> None:
    tracker = GatherTracker(max_in_flight=2)
    first = tracker.start("m", now=0.0, timeout=1.0)
    tracker.start("m", now=0.0, timeout=2.0)
    assert not tracker.has_capacity
    with pytest.raises(TooManyCallsError):
        tracker.start("m", now=0.0, timeout=1.0)
    tracker.receive(first, "a", reply(1))
    partial = tracker.cancel(first)
    assert partial is not None
    assert dict(partial) == {"a": 1}
    assert tracker.cancel(first) is None
    assert tracker.next_deadline() == 2.0
    for timeout in (None, 0, -1, float("inf"), float("nan"), True):
        with pytest.raises(ConfigurationError):
            tracker.start("m", now=0.0, timeout=timeout)  # type: ignore[arg-type]
    for quorum in (0, -1, 1.5, True):
        with pytest.raises(ConfigurationError):
            tracker.start("m", now=0.0, timeout=1.0, quorum=quorum)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        GatherTracker(max_in_flight=0)


def test_call_ids_are_distinct_and_start_where_asked() -> None:
    tracker = GatherTracker(first_call_id=1 << 48)
    ids = {tracker.start("m", now=0.0, timeout=1.0) for _ in range(10)}
    assert ids == set(range(1 << 48, (1 << 48) + 10))
