"""The election state machine without I/O (``clusterrpc.components.election.protocol``):
messages and time in, state to persist, messages and leader changes out. Times are exact
binary fractions (T = 1 s, heartbeats every 0.25 s) so that the timer rules can be checked
to the tick; a small in-memory network at the end drives five of them."""

from __future__ import annotations

import heapq
import random
from typing import Any

import pytest

from clusterrpc.components.election.protocol import (
    CANDIDATE,
    FOLLOWER,
    LEADER,
    MAX_TERM,
    PRE_CANDIDATE,
    ElectionConfig,
    ElectionOutput,
    ElectionProtocol,
    LeaderChange,
    Outgoing,
    PersistentState,
)
from clusterrpc.errors import ConfigurationError, NotLeaderError

T = 1.0
H = 0.25
ABC = ("a", "b", "c")
FIVE = ("a", "b", "c", "d", "e")
INF = float("inf")


def config(**options: Any) -> ElectionConfig:
    return ElectionConfig(**{"election_timeout": T, "heartbeat_interval": H, **options})


def node(name: str = "c", voters: tuple[str, ...] = ABC, *, seed: int = 1, at: float = 0.0,
         persisted: PersistentState | None = None, **options: Any) -> ElectionProtocol:
    """A started voter whose start-up output has been taken."""
    protocol = ElectionProtocol(name=name, voters=voters, config=config(**options),
                                rng=random.Random(seed), persisted=persisted)
    protocol.start(at)
    protocol.take_output()
    return protocol


def leader(name: str = "a", voters: tuple[str, ...] = ABC, *, at: float = 5.0,
           **options: Any) -> ElectionProtocol:
    """``name`` as the leader of term 1, elected at exactly ``at`` (its first heartbeat, seq 1,
    is sent at ``at``); its output is taken."""
    protocol = node(name, voters, **options)
    protocol.tick(protocol.next_wakeup())
    assert protocol.role == PRE_CANDIDATE
    others = [voter for voter in protocol.voters if voter != name][:protocol.majority - 1]
    for voter in others:
        protocol.receive("vote", {"term": 1, "granted": True, "prevote": True}, sender=voter,
                         now=at)
    assert protocol.role == CANDIDATE
    for voter in others:
        protocol.receive("vote", {"term": 1, "granted": True, "prevote": False}, sender=voter,
                         now=at)
    assert protocol.is_leader
    assert protocol.term == 1
    protocol.take_output()
    return protocol


def follow(protocol: ElectionProtocol, of: str, term: int, now: float, seq: int = 1) -> None:
    protocol.receive("heartbeat", {"term": term, "seq": seq}, sender=of, now=now)


def request(protocol: ElectionProtocol, sender: str, term: int, now: float, *,
            prevote: bool = False, transfer: bool = False) -> ElectionOutput:
    protocol.receive("request_vote", {"term": term, "prevote": prevote, "transfer": transfer},
                     sender=sender, now=now)
    return protocol.take_output()


def tick_until(protocol: ElectionProtocol, role: str) -> tuple[float, ElectionOutput]:
    """Tick at each wake-up (retransmissions included) until ``protocol`` is in ``role``;
    returns the time and the output of that last tick."""
    for _ in range(100):
        now = protocol.next_wakeup()
        protocol.tick(now)
        output = protocol.take_output()
        if protocol.role == role:
            return now, output
    raise AssertionError(f"never became {role}")


def sent(output: ElectionOutput) -> list[tuple[str, str, dict[str, Any]]]:
    return [(message.to, message.kind, message.body) for message in output.messages]


def vote(term: int, granted: bool, prevote: bool = False) -> dict[str, Any]:
    return {"term": term, "granted": granted, "prevote": prevote}


# -- configuration -------------------------------------------------------------------------------


def test_defaults_are_etcds() -> None:
    default = ElectionConfig()
    assert (default.election_timeout, default.heartbeat_interval) == (1.0, 0.1)
    assert default.transfer_deadline == 1.0
    assert ElectionConfig(transfer_timeout=3).transfer_deadline == 3
    assert (default.prevote, default.check_quorum, default.leader_stickiness) == (True,) * 3
    assert config(heartbeat_interval=T / 2).heartbeat_interval == 0.5  # exactly half is fine


@pytest.mark.parametrize(("options", "says"), [
    ({"heartbeat_interval": 0.51}, "at most half"),
    ({"election_timeout": 0.4, "heartbeat_interval": 0.25}, "at most half"),
    ({"election_timeout": "1"}, "election_timeout must be a number"),
    ({"election_timeout": True}, "election_timeout must be a number"),
    ({"election_timeout": 0}, "election_timeout must be a number"),
    ({"election_timeout": -1.0}, "election_timeout must be a number"),
    ({"election_timeout": float("nan")}, "election_timeout must be a number"),
    ({"election_timeout": float("inf")}, "election_timeout must be a number"),
    ({"heartbeat_interval": None}, "heartbeat_interval must be a number"),
    ({"heartbeat_interval": False}, "heartbeat_interval must be a number"),
    ({"transfer_timeout": True}, "transfer_timeout must be a number"),
    ({"transfer_timeout": 0}, "transfer_timeout must be a number"),
    ({"transfer_timeout": "2"}, "transfer_timeout must be a number"),
    ({"prevote": 1}, "prevote must be true or false"),
    ({"check_quorum": "yes"}, "check_quorum must be true or false"),
    ({"leader_stickiness": None}, "leader_stickiness must be true or false"),
])
def test_bad_configuration_is_refused(options: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        ElectionConfig(**options)


def test_a_voter_set_must_contain_the_node_and_only_names() -> None:
    with pytest.raises(ConfigurationError, match="not one of the voters"):
        ElectionProtocol(name="z", voters=ABC)
    with pytest.raises(ConfigurationError, match="a voter is a node name"):
        ElectionProtocol(name="a", voters=("a", ""))
    with pytest.raises(ConfigurationError, match="out of range"):
        ElectionProtocol(name="a", voters=ABC, persisted=PersistentState(-1))
    with pytest.raises(ConfigurationError, match="out of range"):
        ElectionProtocol(name="a", voters=ABC, persisted=PersistentState(MAX_TERM + 1))
    protocol = ElectionProtocol(name="a", voters=["c", "a", "b", "a"])
    assert (protocol.voters, protocol.majority) == (ABC, 2)
    assert ElectionProtocol(name="a", voters=FIVE).majority == 3
    assert ElectionProtocol(name="a", voters=("a", "b")).majority == 2


# -- timers --------------------------------------------------------------------------------------


def test_a_followers_election_timeout_lies_in_t_to_2t() -> None:
    starts, resets = [], []
    for seed in range(500):
        protocol = node(seed=seed, at=10.0)
        assert protocol.role == FOLLOWER
        starts.append(protocol.next_wakeup() - 10.0)
        follow(protocol, "b", 1, 20.0)
        resets.append(protocol.next_wakeup() - 20.0)
    for timeouts in (starts, resets):
        assert all(T <= timeout < 2 * T for timeout in timeouts)
        assert min(timeouts) < T + 0.05
        assert max(timeouts) > 2 * T - 0.05  # spread over the whole range


def test_same_seed_same_timeouts() -> None:
    assert node(seed=7).next_wakeup() == node(seed=7).next_wakeup()
    assert node(seed=7).next_wakeup() != node(seed=8).next_wakeup()


def test_a_follower_does_nothing_before_its_timeout() -> None:
    protocol = node()
    deadline = protocol.next_wakeup()
    protocol.tick(deadline - 0.001)
    output = protocol.take_output()
    assert (protocol.role, output.messages, output.persist, output.changes) == (
        FOLLOWER, [], None, [])


def test_a_single_voter_is_leader_at_start() -> None:
    protocol = ElectionProtocol(name="a", voters=["a"], config=config())
    protocol.start(3.0)
    output = protocol.take_output()
    assert protocol.is_leader
    assert (protocol.term, protocol.voted_for) == (1, "a")
    assert output.persist == PersistentState(1, "a")
    assert output.messages == []
    assert output.changes == [LeaderChange(1, "a", LEADER)]
    assert output.changes[0].is_leader
    assert protocol.lease_expiry() == INF
    protocol.start(4.0)  # a second start changes nothing
    assert protocol.term == 1
    protocol.tick(100.0)  # no peer ever answers: a majority of one is still a majority
    assert protocol.is_leader


def test_nothing_happens_before_start() -> None:
    protocol = ElectionProtocol(name="c", voters=ABC, config=config())
    protocol.tick(100.0)
    protocol.receive("heartbeat", {"term": 1, "seq": 1}, sender="a", now=100.0)
    output = protocol.take_output()
    assert (output.messages, output.changes, protocol.term, protocol.leader) == ([], [], 0, None)


# -- pre-vote and votes --------------------------------------------------------------------------


def test_a_follower_times_out_into_a_prevote_that_changes_no_term() -> None:
    protocol = node("a", persisted=PersistentState(4, None))
    deadline = protocol.next_wakeup()
    protocol.tick(deadline)
    output = protocol.take_output()
    assert protocol.role == PRE_CANDIDATE
    assert (protocol.term, protocol.voted_for) == (4, None)
    assert output.persist is None
    assert output.changes == []
    assert sent(output) == [
        ("b", "request_vote", {"term": 5, "prevote": True, "transfer": False}),
        ("c", "request_vote", {"term": 5, "prevote": True, "transfer": False}),
    ]
    assert protocol.counters["prevotes_started"] == 1
    # Unanswered, the pre-vote is asked again every heartbeat interval, only of the silent.
    assert protocol.next_wakeup() == deadline + H
    protocol.receive("vote", vote(4, False, prevote=True), sender="b", now=deadline + 0.1)
    assert protocol.role == PRE_CANDIDATE
    protocol.tick(deadline + H)
    assert sent(protocol.take_output()) == [
        ("c", "request_vote", {"term": 5, "prevote": True, "transfer": False})]


def test_a_majority_of_prevotes_starts_the_real_election_with_the_vote_persisted() -> None:
    protocol = node("a", FIVE, persisted=PersistentState(4, None))
    protocol.tick(protocol.next_wakeup())
    protocol.take_output()
    protocol.receive("vote", vote(5, True, prevote=True), sender="b", now=3.0)
    assert protocol.role == PRE_CANDIDATE  # two of five, itself included
    protocol.receive("vote", vote(4, True, prevote=True), sender="c", now=3.0)  # wrong term
    assert protocol.role == PRE_CANDIDATE
    protocol.receive("vote", vote(5, True, prevote=True), sender="d", now=3.0)
    output = protocol.take_output()
    assert protocol.role == CANDIDATE
    assert (protocol.term, protocol.voted_for) == (5, "a")
    assert output.persist == PersistentState(5, "a")  # with the requests: persist, then send
    assert sent(output) == [
        (voter, "request_vote", {"term": 5, "prevote": False, "transfer": False})
        for voter in "bcde"]
    assert output.changes == []
    assert protocol.counters["elections_started"] == 1
    # Votes: a refusal and a pre-vote answer do not count; a majority of real ones wins.
    protocol.receive("vote", vote(5, False), sender="b", now=3.1)
    protocol.receive("vote", vote(5, True, prevote=True), sender="c", now=3.1)
    protocol.receive("vote", vote(5, True), sender="c", now=3.1)
    assert protocol.role == CANDIDATE
    protocol.tick(3.0 + H)  # the requests are repeated to those that have not answered
    assert {m.to for m in protocol.take_output().messages} == {"d", "e"}
    protocol.receive("vote", vote(5, True), sender="e", now=3.3)
    output = protocol.take_output()
    assert protocol.is_leader
    assert output.persist is None
    assert sent(output) == [(voter, "heartbeat", {"term": 5, "seq": 1}) for voter in "bcde"]
    assert output.changes == [LeaderChange(5, "a", LEADER)]
    assert protocol.next_wakeup() == 3.3 + H


def test_without_prevote_a_timeout_raises_the_term_at_once() -> None:
    protocol = node("a", prevote=False)
    protocol.tick(protocol.next_wakeup())
    output = protocol.take_output()
    assert (protocol.role, protocol.term) == (CANDIDATE, 1)
    assert output.persist == PersistentState(1, "a")
    assert {m.body["prevote"] for m in output.messages} == {False}


def test_one_vote_per_term_persisted_with_the_vote() -> None:
    protocol = node()
    output = request(protocol, "a", 1, 2.0)
    assert output.persist == PersistentState(1, "a")
    assert sent(output) == [("a", "vote", vote(1, True))]
    assert (protocol.term, protocol.voted_for, protocol.role) == (1, "a", FOLLOWER)
    output = request(protocol, "b", 1, 2.1)
    assert output.persist is None
    assert sent(output) == [("b", "vote", vote(1, False))]
    output = request(protocol, "a", 1, 2.2)  # a retransmission: the same vote again
    assert output.persist is None
    assert sent(output) == [("a", "vote", vote(1, True))]
    assert protocol.counters["votes_granted"] == 2
    assert protocol.counters["votes_refused"] == 1
    assert protocol.voted_for == "a"


def test_a_vote_restarts_the_election_timer() -> None:
    protocol = node()
    request(protocol, "a", 1, 1.5)
    assert 1.5 + T <= protocol.next_wakeup() < 1.5 + 2 * T


def test_a_voter_that_knows_a_leader_of_the_term_refuses_its_vote() -> None:
    protocol = node()
    follow(protocol, "a", 1, 2.0)
    protocol.take_output()
    assert sent(request(protocol, "b", 1, 4.0)) == [("b", "vote", vote(1, False))]
    assert sent(request(protocol, "b", 1, 4.0, prevote=True)) == [
        ("b", "vote", vote(1, False, prevote=True))]


def test_a_prevote_grant_changes_neither_term_nor_vote() -> None:
    protocol = node()
    output = request(protocol, "a", 1, 2.0, prevote=True)
    assert sent(output) == [("a", "vote", vote(1, True, prevote=True))]
    assert output.persist is None
    assert (protocol.term, protocol.voted_for) == (0, None)
    assert protocol.counters["prevotes_granted"] == 1
    assert sent(request(protocol, "b", 1, 2.0, prevote=True)) == [
        ("b", "vote", vote(1, True, prevote=True))]


def test_a_lagging_request_is_refused_with_the_voters_term() -> None:
    protocol = node(persisted=PersistentState(5, None))
    assert sent(request(protocol, "a", 3, 2.0)) == [("a", "vote", vote(5, False))]
    assert sent(request(protocol, "a", 4, 2.0, prevote=True)) == [
        ("a", "vote", vote(5, False, prevote=True))]
    assert protocol.counters["stale_messages"] == 2


def test_a_refusal_from_a_later_term_makes_a_candidate_a_follower_of_that_term() -> None:
    protocol = node("a")
    protocol.tick(protocol.next_wakeup())
    protocol.receive("vote", vote(1, True, prevote=True), sender="b", now=3.0)
    assert (protocol.role, protocol.term) == (CANDIDATE, 1)
    protocol.take_output()
    protocol.receive("vote", vote(7, False), sender="c", now=3.1)
    output = protocol.take_output()
    assert (protocol.role, protocol.term, protocol.voted_for) == (FOLLOWER, 7, None)
    assert output.persist == PersistentState(7, None)
    assert output.messages == []
    assert output.changes == []  # still no leader known
    assert 3.1 + T <= protocol.next_wakeup() < 3.1 + 2 * T


def test_a_refusal_from_a_later_term_makes_a_pre_candidate_catch_up() -> None:
    protocol = node("a", persisted=PersistentState(2, "a"))
    protocol.tick(protocol.next_wakeup())
    protocol.take_output()
    protocol.receive("vote", vote(6, False, prevote=True), sender="b", now=3.0)
    output = protocol.take_output()
    assert (protocol.role, protocol.term, protocol.voted_for) == (FOLLOWER, 6, None)
    assert output.persist == PersistentState(6, None)


def test_a_stale_vote_is_ignored() -> None:
    protocol = node("a", persisted=PersistentState(3, None))
    protocol.tick(protocol.next_wakeup())
    protocol.receive("vote", vote(4, True, prevote=True), sender="b", now=3.0)
    assert (protocol.role, protocol.term) == (CANDIDATE, 4)
    protocol.receive("vote", vote(3, True), sender="c", now=3.0)
    assert protocol.role == CANDIDATE
    assert protocol.counters["stale_messages"] == 1


# -- stickiness ----------------------------------------------------------------------------------


def test_a_follower_of_a_live_leader_ignores_higher_terms_until_t_has_passed() -> None:
    protocol = node()
    follow(protocol, "b", 1, 2.0)
    protocol.take_output()
    for now in (2.0, 2.5, 2.999):
        for prevote in (True, False):
            output = request(protocol, "a", 2, now, prevote=prevote)
            assert (output.messages, output.persist, output.changes) == ([], None, [])
    assert (protocol.term, protocol.leader, protocol.voted_for) == (1, "b", None)
    assert protocol.counters["refused_by_stickiness"] == 6
    # T after the last heartbeat the lease is over: first the pre-vote, then the vote.
    output = request(protocol, "a", 2, 3.0, prevote=True)
    assert sent(output) == [("a", "vote", vote(2, True, prevote=True))]
    assert (protocol.term, protocol.leader) == (1, "b")
    output = request(protocol, "a", 2, 3.0)
    assert sent(output) == [("a", "vote", vote(2, True))]
    assert output.persist == PersistentState(2, "a")
    assert (protocol.term, protocol.leader, protocol.voted_for) == (2, None, "a")
    assert output.changes == [LeaderChange(2, None, FOLLOWER)]


def test_a_heartbeat_renews_the_lease() -> None:
    protocol = node()
    follow(protocol, "b", 1, 2.0)
    follow(protocol, "b", 1, 2.75, seq=2)
    protocol.take_output()
    assert request(protocol, "a", 2, 3.5).messages == []
    assert protocol.last_leader_contact == 2.75


def test_a_transfer_request_is_granted_within_the_lease() -> None:
    protocol = node()
    follow(protocol, "b", 1, 2.0)
    protocol.take_output()
    output = request(protocol, "a", 2, 2.1, transfer=True)
    assert sent(output) == [("a", "vote", vote(2, True))]
    assert output.persist == PersistentState(2, "a")
    assert (protocol.term, protocol.voted_for, protocol.leader) == (2, "a", None)


def test_without_stickiness_a_live_leader_does_not_hold_votes() -> None:
    protocol = node(leader_stickiness=False)
    follow(protocol, "b", 1, 2.0)
    protocol.take_output()
    assert sent(request(protocol, "a", 2, 2.1)) == [("a", "vote", vote(2, True))]


def test_a_restarted_voter_grants_no_vote_for_t_and_keeps_its_vote() -> None:
    protocol = node(at=10.0, persisted=PersistentState(3, "b"))
    assert (protocol.term, protocol.voted_for, protocol.role) == (3, "b", FOLLOWER)
    for prevote in (True, False):
        output = request(protocol, "a", 4, 10.5, prevote=prevote)
        assert (output.messages, output.persist) == ([], None)
    assert protocol.term == 3
    # In the persisted term the persisted vote holds: refused to another, repeated to b.
    output = request(protocol, "a", 3, 10.5)
    assert sent(output) == [("a", "vote", vote(3, False))]
    assert output.persist is None
    assert sent(request(protocol, "b", 3, 10.6)) == [("b", "vote", vote(3, True))]
    assert request(protocol, "a", 4, 10.999).messages == []
    output = request(protocol, "a", 4, 11.0)
    assert sent(output) == [("a", "vote", vote(4, True))]
    assert output.persist == PersistentState(4, "a")


# -- heartbeats and terms ------------------------------------------------------------------------


def test_a_heartbeat_makes_the_sender_the_leader_and_is_acked() -> None:
    protocol = node(persisted=PersistentState(2, None))
    follow(protocol, "a", 3, 2.0, seq=9)
    output = protocol.take_output()
    assert sent(output) == [("a", "heartbeat_ack", {"term": 3, "seq": 9})]
    assert output.persist == PersistentState(3, None)
    assert output.changes == [LeaderChange(3, "a", FOLLOWER)]
    assert (protocol.term, protocol.leader, protocol.last_leader_contact) == (3, "a", 2.0)


def test_a_candidate_of_the_term_yields_to_its_leader() -> None:
    protocol = node("a")
    protocol.tick(protocol.next_wakeup())
    protocol.receive("vote", vote(1, True, prevote=True), sender="b", now=3.0)
    assert protocol.role == CANDIDATE
    protocol.take_output()
    follow(protocol, "c", 1, 3.1)
    output = protocol.take_output()
    assert (protocol.role, protocol.leader, protocol.term) == (FOLLOWER, "c", 1)
    assert output.persist is None
    assert sent(output) == [("c", "heartbeat_ack", {"term": 1, "seq": 1})]


def test_a_deposed_leader_learns_the_new_term_from_the_heartbeat_ack() -> None:
    voter = node(persisted=PersistentState(5, None))
    follow(voter, "a", 2, 2.0, seq=7)
    output = voter.take_output()
    assert sent(output) == [("a", "heartbeat_ack", {"term": 5, "seq": 7})]
    assert (voter.term, voter.leader) == (5, None)
    assert voter.counters["stale_messages"] == 1

    old = leader("a")
    old.receive("heartbeat_ack", {"term": 5, "seq": 1}, sender="c", now=5.1)
    output = old.take_output()
    assert (old.role, old.term, old.leader, old.voted_for) == (FOLLOWER, 5, None, None)
    assert output.persist == PersistentState(5, None)
    assert output.changes == [LeaderChange(5, None, FOLLOWER)]
    assert old.counters["stepped_down_term"] == 1
    assert old.acks() == {}
    assert 5.1 + T <= old.next_wakeup() < 5.1 + 2 * T


def test_a_leader_steps_down_for_a_heartbeat_of_a_later_term() -> None:
    protocol = leader("a")
    follow(protocol, "b", 2, 5.1)
    output = protocol.take_output()
    assert (protocol.role, protocol.term, protocol.leader) == (FOLLOWER, 2, "b")
    assert output.changes == [LeaderChange(2, "b", FOLLOWER)]
    assert protocol.counters["stepped_down_term"] == 1


def test_a_heartbeat_of_a_second_leader_in_the_same_term_is_not_acted_on() -> None:
    protocol = leader("a")
    follow(protocol, "b", 1, 5.1)
    output = protocol.take_output()
    assert protocol.is_leader
    assert output.messages == []
    assert protocol.counters["malformed"] == 1


def test_a_leader_ignores_higher_term_requests_but_refuses_its_own_term() -> None:
    protocol = leader("a")
    assert request(protocol, "b", 2, 9.0, prevote=True).messages == []
    assert request(protocol, "b", 2, 9.0).messages == []
    assert (protocol.role, protocol.term) == (LEADER, 1)
    assert sent(request(protocol, "b", 1, 5.1)) == [("b", "vote", vote(1, False))]
    assert protocol.is_leader


# -- check-quorum --------------------------------------------------------------------------------


def test_a_leader_without_acks_steps_down_at_the_first_heartbeat_at_or_after_t() -> None:
    protocol = leader("a", at=5.0)
    times = []
    while protocol.is_leader:
        now = protocol.next_wakeup()
        protocol.tick(now)
        times.append(now)
    assert times == [5.25, 5.5, 5.75, 6.0]
    output = protocol.take_output()
    assert [m.to for m in output.messages] == ["b", "c"] * 3  # no heartbeat at 6.0
    assert output.changes == [LeaderChange(1, None, FOLLOWER)]
    assert (protocol.role, protocol.term) == (FOLLOWER, 1)
    assert protocol.counters["stepped_down_quorum"] == 1
    assert protocol.counters["heartbeats_sent"] == 4  # seq 1 at 5.0, then three
    assert 6.0 + T <= protocol.next_wakeup() < 6.0 + 2 * T


def test_a_leader_acked_by_a_majority_stays_and_one_acked_by_a_minority_steps_down() -> None:
    protocol = leader("a", FIVE, at=5.0)
    for _ in range(40):  # ten election timeouts
        now = protocol.next_wakeup()
        protocol.tick(now)
        for message in protocol.take_output().messages:
            if message.to in ("b", "c"):
                protocol.receive("heartbeat_ack", {"term": 1, "seq": message.body["seq"]},
                                 sender=message.to, now=now + 0.01)
    assert protocol.is_leader
    assert now == 15.0
    assert protocol.counters["stepped_down_quorum"] == 0
    # Now only b answers: two of five. T after c's last ack (15.01) the leader gives up.
    while protocol.is_leader:
        now = protocol.next_wakeup()
        protocol.tick(now)
        for message in protocol.take_output().messages:
            if message.to == "b":
                protocol.receive("heartbeat_ack", {"term": 1, "seq": message.body["seq"]},
                                 sender="b", now=now + 0.01)
    assert now == 16.25
    assert protocol.counters["stepped_down_quorum"] == 1


def test_without_check_quorum_a_lone_leader_stays() -> None:
    protocol = leader("a", check_quorum=False)
    for _ in range(20):
        protocol.tick(protocol.next_wakeup())
    assert protocol.is_leader


# -- leadership transfer -------------------------------------------------------------------------


def test_transfer_needs_the_leadership_and_another_voter() -> None:
    follower = node()
    follow(follower, "b", 1, 2.0)
    with pytest.raises(NotLeaderError) as raised:
        follower.transfer(2.1)
    assert raised.value.leader == "b"
    protocol = leader("a")
    for target in ("z", "a"):
        with pytest.raises(ConfigurationError, match="not another voter"):
            protocol.transfer(5.1, to=target)
    with pytest.raises(ConfigurationError, match="nobody to transfer"):
        protocol.transfer(6.0)  # nobody answered within T
    assert protocol.counters["transfers_started"] == 0
    assert protocol.take_output().messages == []


def test_a_transfer_elects_the_target_at_once_over_the_others_lease() -> None:
    a, b, c = leader("a", at=5.0), node("b"), node("c")
    for voter in (b, c):
        follow(voter, "a", 1, 5.0)
        voter.take_output()
    assert a.transfer(5.1, to="b") == "b"
    assert a.transfer_pending(5.1)
    assert sent(a.take_output()) == [("b", "timeout_now", {"term": 1})]
    assert a.counters["transfers_started"] == 1

    b.receive("timeout_now", {"term": 1}, sender="a", now=5.11)
    output = b.take_output()
    assert (b.role, b.term, b.voted_for) == (CANDIDATE, 2, "b")
    assert output.persist == PersistentState(2, "b")
    assert sent(output) == [
        (voter, "request_vote", {"term": 2, "prevote": False, "transfer": True})
        for voter in "ac"]
    assert output.changes == [LeaderChange(2, None, CANDIDATE)]  # it lost its leader

    output = request(c, "b", 2, 5.12, transfer=True)  # within c's lease of a: granted
    assert sent(output) == [("b", "vote", vote(2, True))]
    assert output.persist == PersistentState(2, "b")

    output = request(a, "b", 2, 5.12, transfer=True)
    assert (a.role, a.term, a.voted_for) == (FOLLOWER, 2, "b")
    assert sent(output) == [("b", "vote", vote(2, True))]
    assert output.changes == [LeaderChange(2, None, FOLLOWER)]
    assert not a.transfer_pending(5.12)

    b.receive("vote", vote(2, True), sender="c", now=5.13)
    output = b.take_output()
    assert b.is_leader
    assert output.changes == [LeaderChange(2, "b", LEADER)]
    assert {m.to for m in output.messages if m.kind == "heartbeat"} == {"a", "c"}
    follow(a, "b", 2, 5.14)
    assert a.take_output().changes == [LeaderChange(2, "b", FOLLOWER)]


def test_a_lagging_target_catches_up_and_still_campaigns() -> None:
    protocol = node("b")
    protocol.receive("timeout_now", {"term": 3}, sender="a", now=2.0)
    assert (protocol.role, protocol.term) == (CANDIDATE, 4)


def test_timeout_now_from_a_non_leader_or_an_old_term_is_ignored() -> None:
    protocol = node("b")
    follow(protocol, "a", 2, 2.0)
    protocol.take_output()
    protocol.receive("timeout_now", {"term": 2}, sender="c", now=2.1)
    protocol.receive("timeout_now", {"term": 1}, sender="a", now=2.1)
    assert (protocol.role, protocol.term) == (FOLLOWER, 2)
    assert protocol.take_output().messages == []
    assert protocol.counters["stale_messages"] == 2


def test_a_transfer_to_nobody_picks_the_voter_with_the_freshest_ack() -> None:
    for first, second in (("c", "b"), ("b", "c")):
        protocol = leader("a", at=5.0)
        protocol.receive("heartbeat_ack", {"term": 1, "seq": 1}, sender=first, now=5.1)
        protocol.tick(5.25)
        protocol.receive("heartbeat_ack", {"term": 1, "seq": 2}, sender=second, now=5.3)
        protocol.take_output()
        assert protocol.transfer(5.4) == second
        assert sent(protocol.take_output()) == [(second, "timeout_now", {"term": 1})]


def test_an_abandoned_transfer_is_counted_after_the_transfer_timeout() -> None:
    protocol = leader("a", at=5.0, transfer_timeout=0.5)
    protocol.transfer(5.0, to="b")
    protocol.take_output()
    kinds = []
    for now in (5.25, 5.5, 5.75):
        protocol.tick(now)
        protocol.receive("heartbeat_ack", {"term": 1, "seq": 1}, sender="c", now=now)
        kinds.append(sorted((m.to, m.kind) for m in protocol.take_output().messages))
        if now == 5.25:
            assert protocol.transfer_pending(5.25)
            assert protocol.counters["transfers_abandoned"] == 0
    assert kinds[0] == [("b", "heartbeat"), ("b", "timeout_now"), ("c", "heartbeat")]
    assert kinds[1] == kinds[2] == [("b", "heartbeat"), ("c", "heartbeat")]
    assert not protocol.transfer_pending(5.5)
    assert protocol.counters["transfers_abandoned"] == 1
    assert protocol.is_leader


def test_a_failed_transfer_campaign_does_not_carry_the_transfer_into_its_prevote() -> None:
    protocol = node("b")
    follow(protocol, "a", 1, 2.0)
    protocol.receive("timeout_now", {"term": 1}, sender="a", now=2.1)
    output = protocol.take_output()
    assert {m.body["transfer"] for m in output.messages if m.kind == "request_vote"} == {True}
    # No votes came: the retransmissions still say transfer, the next try is a plain pre-vote.
    now, output = tick_until(protocol, PRE_CANDIDATE)
    assert 2.1 + T <= now < 2.1 + 2 * T
    assert protocol.term == 2
    assert sent(output) == [
        (voter, "request_vote", {"term": 3, "prevote": True, "transfer": False})
        for voter in "ac"]


def test_a_leader_that_started_a_transfer_claims_no_lease() -> None:
    protocol = leader("a", at=5.0)
    protocol.receive("heartbeat_ack", {"term": 1, "seq": 1}, sender="b", now=5.1)
    assert protocol.lease_expiry() == 5.0 + T * 0.9
    protocol.transfer(5.2, to="b")
    # The target's transfer campaign overrides the voters' stickiness: another leader may be
    # elected before this one hears of it.
    assert protocol.lease_expiry() == float("-inf")
    protocol.tick(5.25)
    protocol.receive("heartbeat_ack", {"term": 1, "seq": 2}, sender="c", now=5.3)
    assert protocol.lease_expiry() == float("-inf")
    # Deposed, then elected again: a new term without a transfer has a lease again.
    protocol.receive("heartbeat_ack", {"term": 2, "seq": 2}, sender="b", now=5.4)
    now, _ = tick_until(protocol, PRE_CANDIDATE)
    protocol.receive("vote", vote(3, True, prevote=True), sender="c", now=now)
    protocol.receive("vote", vote(3, True), sender="c", now=now)
    assert (protocol.role, protocol.term) == (LEADER, 3)
    seq = protocol.take_output().messages[-1].body["seq"]
    protocol.receive("heartbeat_ack", {"term": 3, "seq": seq}, sender="c", now=now)
    assert protocol.lease_expiry() == now + T * 0.9


# -- outsiders and malformed messages ------------------------------------------------------------


@pytest.mark.parametrize("sender", ["z", "c", ""])
def test_messages_from_outside_the_voters_or_from_oneself_are_ignored(sender: str) -> None:
    protocol = node()
    for kind in ("request_vote", "heartbeat", "timeout_now"):
        protocol.receive(kind, {"term": 9, "seq": 1}, sender=sender, now=5.0)
    output = protocol.take_output()
    assert (output.messages, output.persist, output.changes) == ([], None, [])
    assert (protocol.term, protocol.leader) == (0, None)
    assert protocol.counters["outsiders_ignored"] == 3


@pytest.mark.parametrize(("kind", "body"), [
    ("heartbeat", None),
    ("heartbeat", [1]),
    ("heartbeat", "term=1"),
    ("heartbeat", {}),
    ("heartbeat", {"term": -1}),
    ("heartbeat", {"term": True}),
    ("heartbeat", {"term": 1.0}),
    ("heartbeat", {"term": "1"}),
    ("heartbeat", {"term": MAX_TERM + 1}),
    ("request_vote", {"term": 2**100}),
    ("ping", {"term": 1}),
    ("append_entries", {"term": 1}),
])
def test_malformed_messages_are_ignored_and_counted(kind: str, body: Any) -> None:
    protocol = node()
    protocol.receive(kind, body, sender="a", now=5.0)
    output = protocol.take_output()
    assert (output.messages, output.persist, output.changes) == ([], None, [])
    assert (protocol.term, protocol.leader, protocol.voted_for) == (0, None, None)
    assert protocol.counters["malformed"] == 1


def test_the_largest_term_is_accepted() -> None:
    protocol = node()
    follow(protocol, "a", MAX_TERM, 5.0)
    assert (protocol.term, protocol.leader) == (MAX_TERM, "a")
    assert protocol.counters["malformed"] == 0


def test_flags_must_be_true_exactly() -> None:
    protocol = node()
    follow(protocol, "b", 1, 2.0)
    protocol.take_output()
    protocol.receive("request_vote", {"term": 2, "transfer": 1, "prevote": "yes"}, sender="a",
                     now=2.1)
    assert protocol.take_output().messages == []  # not a transfer: the lease holds
    assert protocol.counters["refused_by_stickiness"] == 1


# -- leader changes ------------------------------------------------------------------------------


def test_leader_changes_are_reported_once_each() -> None:
    protocol = node()
    follow(protocol, "b", 1, 2.0)
    assert protocol.take_output().changes == [LeaderChange(1, "b", FOLLOWER)]
    follow(protocol, "b", 1, 2.25, seq=2)
    assert protocol.take_output().changes == []
    follow(protocol, "a", 2, 2.5)
    assert protocol.take_output().changes == [LeaderChange(2, "a", FOLLOWER)]
    protocol.tick(protocol.next_wakeup())  # the leader went silent
    output = protocol.take_output()
    assert protocol.role == PRE_CANDIDATE
    assert output.changes == [LeaderChange(2, None, PRE_CANDIDATE)]
    assert not output.changes[0].is_leader
    protocol.tick(protocol.next_wakeup())  # still nobody: no new change
    assert protocol.take_output().changes == []


def test_a_candidates_rising_terms_are_not_changes_but_winning_and_losing_are() -> None:
    protocol = node("a")
    changes: list[LeaderChange] = []
    for term in (1, 2, 3):
        now, output = tick_until(protocol, PRE_CANDIDATE)  # after a silent election
        changes += output.changes
        protocol.receive("vote", vote(term, True, prevote=True), sender="b", now=now)
        assert (protocol.role, protocol.term) == (CANDIDATE, term)
        changes += protocol.take_output().changes
    assert changes == []
    protocol.receive("vote", vote(3, True), sender="c", now=now)
    assert protocol.take_output().changes == [LeaderChange(3, "a", LEADER)]
    protocol.receive("vote", vote(3, True), sender="b", now=now)  # one more: nothing
    assert protocol.take_output().changes == []
    protocol.receive("heartbeat_ack", {"term": 4, "seq": 1}, sender="b", now=now)
    assert protocol.take_output().changes == [LeaderChange(4, None, FOLLOWER)]


# -- the lease -----------------------------------------------------------------------------------


def test_a_followers_lease_is_minus_infinity() -> None:
    protocol = node()
    follow(protocol, "b", 1, 2.0)
    assert protocol.lease_expiry() == float("-inf")
    assert leader("a", leader_stickiness=False).lease_expiry() == float("-inf")


def test_the_lease_is_the_heartbeat_a_majority_acked_plus_nine_tenths_of_t() -> None:
    protocol = leader("a", FIVE, at=5.0)
    assert protocol.lease_expiry() == float("-inf")  # nobody acked yet
    protocol.receive("heartbeat_ack", {"term": 1, "seq": 1}, sender="b", now=5.01)
    assert protocol.lease_expiry() == float("-inf")  # two of five
    protocol.receive("heartbeat_ack", {"term": 1, "seq": 1}, sender="c", now=5.02)
    assert protocol.lease_expiry() == 5.0 + T * 0.9
    protocol.tick(5.25)  # seq 2
    protocol.receive("heartbeat_ack", {"term": 1, "seq": 2}, sender="b", now=5.26)
    assert protocol.lease_expiry() == 5.0 + T * 0.9  # seq 2: only two of five
    protocol.receive("heartbeat_ack", {"term": 1, "seq": 99}, sender="d", now=5.27)  # never sent
    assert protocol.lease_expiry() == 5.0 + T * 0.9
    protocol.receive("heartbeat_ack", {"term": 1, "seq": 2}, sender="e", now=5.28)
    assert protocol.lease_expiry() == 5.25 + T * 0.9
    protocol.receive("heartbeat_ack", {"term": 1, "seq": 1}, sender="e", now=5.29)  # late, old
    assert protocol.lease_expiry() == 5.25 + T * 0.9
    assert protocol.acks() == {"b": 5.26, "c": 5.02, "d": 5.27, "e": 5.29}


# -- describe ------------------------------------------------------------------------------------


def test_describe_a_follower_and_a_leader() -> None:
    protocol = node(persisted=PersistentState(1, "a"))
    follow(protocol, "b", 2, 2.0)
    status = protocol.describe(2.3456)
    assert status == {
        "name": "c", "role": FOLLOWER, "term": 2, "leader": "b", "voted_for": None,
        "voters": ["a", "b", "c"], "last_heartbeat": 0.346, "acks": {},
        "counters": protocol.counters,
    }
    status["counters"]["malformed"] = 99  # a copy
    assert protocol.counters["malformed"] == 0
    assert node().describe(1.0)["last_heartbeat"] is None

    boss = leader("a", at=5.0)
    boss.receive("heartbeat_ack", {"term": 1, "seq": 1}, sender="c", now=5.1)
    status = boss.describe(5.5)
    assert (status["role"], status["leader"], status["voted_for"]) == (LEADER, "a", "a")
    assert status["last_heartbeat"] is None
    assert status["acks"] == {"b": 0.5, "c": 0.4}
    assert status["counters"]["became_leader"] == 1


# -- five voters on an in-memory network ---------------------------------------------------------


class Network:
    """Five voters, every message delivered after ``delay``; a crashed voter neither ticks nor
    sends nor receives (messages in flight to or from it are dropped)."""

    def __init__(self, names: tuple[str, ...] = FIVE, *, seed: int = 0,
                 delay: float = 0.01) -> None:
        self.delay = delay
        self.now = 0.0
        self.crashed: set[str] = set()
        self.nodes = {name: ElectionProtocol(name=name, voters=names, config=config(),
                                             rng=random.Random(seed * 100 + index))
                      for index, name in enumerate(names)}
        self.in_flight: list[tuple[float, int, str, Outgoing]] = []
        self.order = 0
        self.leaders_of_term: dict[int, set[str]] = {}
        self.elected_at: dict[int, float] = {}
        for protocol in self.nodes.values():
            protocol.start(0.0)
            self.flush(protocol)

    def flush(self, protocol: ElectionProtocol) -> None:
        output = protocol.take_output()
        for change in output.changes:
            if change.is_leader:
                self.leaders_of_term.setdefault(change.term, set()).add(protocol.name)
                self.elected_at.setdefault(change.term, self.now)
        for message in output.messages:
            self.order += 1
            heapq.heappush(self.in_flight, (self.now + self.delay, self.order, protocol.name,
                                            message))

    def run_until(self, end: float) -> None:
        while True:
            alive = [p for name, p in self.nodes.items() if name not in self.crashed]
            due = min(alive, key=lambda p: p.next_wakeup())
            arrival = self.in_flight[0][0] if self.in_flight else INF
            when = min(arrival, due.next_wakeup())
            if when > end:
                self.now = end
                return
            self.now = when
            if arrival <= due.next_wakeup():
                _, _, sender, message = heapq.heappop(self.in_flight)
                if sender in self.crashed or message.to in self.crashed:
                    continue
                receiver = self.nodes[message.to]
                receiver.receive(message.kind, message.body, sender=sender, now=when)
                self.flush(receiver)
            else:
                due.tick(when)
                self.flush(due)

    def leaders(self) -> list[str]:
        return [name for name, p in self.nodes.items()
                if p.is_leader and name not in self.crashed]


@pytest.mark.parametrize("seed", range(5))
def test_five_voters_elect_one_leader_and_replace_it_when_it_crashes(seed: int) -> None:
    network = Network(seed=seed)
    network.run_until(10.0)
    [first] = network.leaders()
    term = network.nodes[first].term
    for protocol in network.nodes.values():
        assert (protocol.leader, protocol.term) == (first, term)
    assert network.elected_at[term] < 2 * T + 1.0  # a timeout, a pre-vote, a vote
    network.run_until(20.0)  # a steady leader: no more elections
    assert network.leaders() == [first]
    assert max(network.leaders_of_term) == term

    network.crashed.add(first)
    network.run_until(20.0 + 2 * 2 * T)
    [second] = network.leaders()
    assert second != first
    new_term = network.nodes[second].term
    assert new_term > term
    assert network.elected_at[new_term] <= 20.0 + 2 * 2 * T
    for name, protocol in network.nodes.items():
        if name != first:
            assert (protocol.leader, protocol.term) == (second, new_term)
    assert all(len(leaders) == 1 for leaders in network.leaders_of_term.values())
