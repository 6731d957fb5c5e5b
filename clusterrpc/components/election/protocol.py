"""Leader election without I/O: Raft's election half with pre-vote, check-quorum and leader
stickiness (``spec/election.md``).

:class:`ElectionProtocol` is the whole state machine of one voter. It reads no clock, touches
no socket and no disk: the driver (:mod:`clusterrpc.components.election.driver`) passes every
received message and the time in, and takes out, with :meth:`~ElectionProtocol.take_output`,
the state to persist, the messages to send and the leadership changes — and must write the
state durably **before** it sends any of those messages (a vote must never be sent for a term
and candidate that a restart could forget). :meth:`~ElectionProtocol.next_wakeup` says when
to call :meth:`~ElectionProtocol.tick` again. Randomness (the election timeouts) comes from
the ``random.Random`` passed in, so a seeded simulation replays.

The rules, in short (the spec has them as one table):

* a follower that hears no leader for a random timeout in ``[T, 2T)`` first asks every voter
  whether it *could* win at the next term (**pre-vote**: no term changes); with a majority of
  yes it raises its term, votes for itself (persisted) and asks for real votes;
* a voter grants one real vote per term (persisted before the vote is sent) and none while it
  heard from a live leader within ``T`` (**leader stickiness**, etcd's "lease" check) — unless
  the request is a leadership transfer that the leader itself started;
* a candidate with a majority of votes is the leader of its term: it sends ``heartbeat`` every
  ``heartbeat_interval``; followers answer ``heartbeat_ack``; a leader that has not heard from
  a majority (itself included) within ``T`` steps down (**check-quorum**);
* any message with a higher term makes the receiver adopt that term as a follower, except a
  vote request refused by stickiness and a pre-vote request (neither may raise terms); a
  refusal carries the refuser's term, so a lagging node catches up; a heartbeat with a lower
  term is answered with the higher term, so a deposed leader learns it;
* messages from outside the voter set, from this node's own name, or malformed, are ignored
  (counted). Every message is idempotent and the timers retransmit, so none needs a reply
  packet: all of them travel as one-way calls.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from typing import Any, Final

from clusterrpc.errors import ConfigurationError, NotLeaderError

__all__ = [
    "CANDIDATE",
    "FOLLOWER",
    "KINDS",
    "LEADER",
    "PRE_CANDIDATE",
    "ElectionConfig",
    "ElectionOutput",
    "ElectionProtocol",
    "LeaderChange",
    "Outgoing",
    "PersistentState",
]

FOLLOWER: Final = "follower"
PRE_CANDIDATE: Final = "pre-candidate"
CANDIDATE: Final = "candidate"
LEADER: Final = "leader"

# Message kinds: each is a one-way method ``<service>.<kind>(body)`` (spec/election.md).
REQUEST_VOTE: Final = "request_vote"
VOTE: Final = "vote"
HEARTBEAT: Final = "heartbeat"
HEARTBEAT_ACK: Final = "heartbeat_ack"
TIMEOUT_NOW: Final = "timeout_now"
KINDS: Final = (REQUEST_VOTE, VOTE, HEARTBEAT, HEARTBEAT_ACK, TIMEOUT_NOW)

MAX_TERM: Final = 2**62
"""Terms above this are refused as malformed (a hostile or corrupt term would otherwise pin
every voter at a term nobody can exceed)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ElectionConfig:
    """Timers and the liveness fixes of the election.

    ``election_timeout`` (T, 1 s; etcd's ``--election-timeout`` default): a follower waits a
    random time in ``[T, 2T)`` without a leader before it campaigns; a leader steps down when
    a majority has been silent for T; a voter that heard a leader within T refuses votes.
    ``heartbeat_interval`` (100 ms; etcd's ``--heartbeat-interval`` default): how often the
    leader sends heartbeats, and how often a candidate repeats its vote requests to voters
    that have not answered. Must be at most T/2, so that one lost heartbeat never costs the
    leadership. ``transfer_timeout`` (default T): how long :meth:`ElectionProtocol.transfer`
    keeps asking its target to campaign.

    ``prevote``, ``check_quorum`` and ``leader_stickiness`` (all on): the liveness fixes; turn
    them off only to compare with plain Raft (the benchmark does). With them off a node
    isolated by a partition raises its term over and over and deposes the leader when it
    comes back, and a partial partition can leave the cluster without a stable leader.
    """

    election_timeout: float = 1.0
    heartbeat_interval: float = 0.1
    transfer_timeout: float | None = None
    prevote: bool = True
    check_quorum: bool = True
    leader_stickiness: bool = True

    def __post_init__(self) -> None:
        for name in ("election_timeout", "heartbeat_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    0 < value < 86400):
                raise ConfigurationError(f"{name} must be a number of seconds > 0, "
                                         f"not {value!r}")
        if self.heartbeat_interval * 2 > self.election_timeout:
            raise ConfigurationError(
                f"heartbeat_interval ({self.heartbeat_interval} s) must be at most half the "
                f"election_timeout ({self.election_timeout} s): a leader must be able to lose "
                "a heartbeat without losing its followers")
        transfer = self.transfer_timeout
        if transfer is not None and (isinstance(transfer, bool) or not isinstance(
                transfer, (int, float)) or not 0 < transfer < 86400):
            raise ConfigurationError(f"transfer_timeout must be a number of seconds > 0, "
                                     f"not {transfer!r}")
        for name in ("prevote", "check_quorum", "leader_stickiness"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be true or false")

    @property
    def transfer_deadline(self) -> float:
        return self.election_timeout if self.transfer_timeout is None else self.transfer_timeout


@dataclasses.dataclass(frozen=True)
class PersistentState:
    """What a voter must never forget across a restart: its ``term`` and whom it voted for in
    that term (``voted_for``, or ``None``)."""

    term: int = 0
    voted_for: str | None = None


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """One message to send: the one-way call ``<service>.<kind>(body)`` to the voter ``to``."""

    to: str
    kind: str
    body: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class LeaderChange:
    """The leader this node knows of changed: ``leader`` (a voter name, or ``None`` when none
    is known) in ``term``; ``role`` is this node's role afterwards (``follower``,
    ``pre-candidate``, ``candidate`` or ``leader``)."""

    term: int
    leader: str | None
    role: str

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER


@dataclasses.dataclass(frozen=True)
class ElectionOutput:
    """What one or more steps of the protocol produced. The driver must make ``persist``
    durable (when not ``None``) before it sends any of ``messages``."""

    persist: PersistentState | None
    messages: list[Outgoing]
    changes: list[LeaderChange]


def _term_of(body: Any) -> int | None:
    if not isinstance(body, dict):
        return None
    term = body.get("term")
    if isinstance(term, bool) or not isinstance(term, int) or not 0 <= term <= MAX_TERM:
        return None
    return term


def _seq_of(seq: object) -> int:
    """A heartbeat's round number; anything but a non-negative integer counts as round 0 (it
    only orders the leader's lease and transfer choice, never safety)."""
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_TERM:
        return 0
    return seq


def _flag(body: dict[str, Any], key: str) -> bool:
    return body.get(key) is True


class ElectionProtocol:
    """The election state machine of the voter ``name`` among ``voters`` (module docstring).

    ``voters`` is the fixed voter set, ``name`` included (the election needs a majority of it;
    changing it safely needs joint consensus, which this protocol does not do — restart the
    voters with the new set, one at a time, each change adding or removing one voter).
    ``persisted``: the state read back from disk after a restart (``None`` for a first start).
    ``rng``: the source of the random election timeouts.

    Call :meth:`start` once, then :meth:`receive` for every authenticated message and
    :meth:`tick` at :meth:`next_wakeup`; after each, :meth:`take_output`. Raises
    :class:`~clusterrpc.errors.ConfigurationError` for a voter set without ``name``.
    """

    def __init__(self, *, name: str, voters: Iterable[str], config: ElectionConfig | None = None,
                 rng: random.Random | None = None,
                 persisted: PersistentState | None = None) -> None:
        self.name = name
        self.voters: tuple[str, ...] = tuple(sorted(set(voters)))
        if name not in self.voters:
            raise ConfigurationError(f"node {name!r} is not one of the voters "
                                     f"{list(self.voters)}")
        for voter in self.voters:
            if not isinstance(voter, str) or not voter:
                raise ConfigurationError(f"a voter is a node name, not {voter!r}")
        self.config = config or ElectionConfig()
        self._rng = rng or random.Random()  # noqa: S311 - timeouts, not secrets
        state = persisted or PersistentState()
        if state.term < 0 or state.term > MAX_TERM:
            raise ConfigurationError(f"persisted term {state.term} is out of range")
        self.term = state.term
        self.voted_for = state.voted_for
        self.role: str = FOLLOWER
        self.leader: str | None = None
        self.majority = len(self.voters) // 2 + 1
        self.counters: dict[str, int] = dict.fromkeys((
            "prevotes_started", "elections_started", "became_leader", "stepped_down_quorum",
            "stepped_down_term", "votes_granted", "votes_refused", "refused_by_stickiness",
            "prevotes_granted", "heartbeats_sent", "outsiders_ignored", "malformed",
            "transfers_started", "transfers_abandoned", "stale_messages"), 0)
        self._started = False
        self._now = 0.0
        self._election_deadline = float("inf")
        self._heartbeat_due = float("inf")
        self._retransmit_due = float("inf")
        self._leader_contact = float("-inf")
        """When this node last heard its leader (a follower), for stickiness."""
        self._no_votes_before = float("-inf")
        self._became_leader = 0.0
        self._granted: set[str] = set()
        self._answered: set[str] = set()
        self._acked: dict[str, float] = {}
        self._acked_seq: dict[str, int] = {}
        self._seq = 0
        self._seq_sent_at: dict[int, float] = {}
        self._transfer_to: str | None = None
        self._transfer_until = float("-inf")
        self._campaign_transfer = False
        self._persist: PersistentState | None = None
        self._outbox: list[Outgoing] = []
        self._changes: list[LeaderChange] = []
        self._last_reported: tuple[str | None, int | None, bool] = (None, None, False)

    # -- outputs -------------------------------------------------------------------------------

    def take_output(self) -> ElectionOutput:
        """Everything produced since the last call: persist first, then send, then report."""
        output = ElectionOutput(self._persist, self._outbox, self._changes)
        self._persist, self._outbox, self._changes = None, [], []
        return output

    def next_wakeup(self) -> float:
        """When :meth:`tick` must run next (``inf``: only a message can change anything)."""
        return min(self._election_deadline, self._heartbeat_due, self._retransmit_due)

    @property
    def persistent_state(self) -> PersistentState:
        return PersistentState(self.term, self.voted_for)

    @property
    def is_leader(self) -> bool:
        return self.role == LEADER

    @property
    def last_leader_contact(self) -> float | None:
        """When this follower last heard from its leader (``None``: never, or it is the
        leader)."""
        return None if self._leader_contact == float("-inf") else self._leader_contact

    def acks(self) -> dict[str, float]:
        """The leader's view: when each voter last answered a heartbeat (empty unless this node
        is the leader; the leader itself is not listed)."""
        return dict(self._acked) if self.role == LEADER else {}

    # -- life ----------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Start as a follower. A (re)started voter grants no vote for a later term than its
        persisted one for one election timeout:
        it may have been a follower of a live leader before the restart, and stickiness must
        survive the restart, or a restarted voter could help depose a healthy leader (and
        void the leader's lease)."""
        if self._started:
            return
        self._started = True
        self._now = now
        self._no_votes_before = now + self.config.election_timeout
        if len(self.voters) == 1:
            self._campaign(now, transfer=False)
        else:
            self._reset_election_timer(now)
        self._report()

    def _set_clock(self, now: float) -> None:
        """Read the clock. If it stepped back (a wall clock set back, not a monotonic one),
        move every deadline and timestamp back with it: else each timer would wait out the
        lost time too — a leader would send no heartbeat for that long while still refusing
        votes as the leader, and a follower would stay "in lease" as long — and a majority
        could be left without a leader for longer than the step."""
        back = now - self._now
        if back < 0:
            self._election_deadline += back
            self._heartbeat_due += back
            self._retransmit_due += back
            self._leader_contact += back
            self._no_votes_before += back
            self._became_leader += back
            if self._transfer_until > float("-inf"):
                self._transfer_until += back
            self._acked = {voter: when + back for voter, when in self._acked.items()}
            self._seq_sent_at = {seq: when + back for seq, when in self._seq_sent_at.items()}
        self._now = now

    def tick(self, now: float) -> None:
        """Run what is due at ``now``: heartbeats, check-quorum, retransmissions, elections."""
        if not self._started:
            return
        self._set_clock(now)
        config = self.config
        if self.role == LEADER:
            if now >= self._heartbeat_due:
                if config.check_quorum and not self._has_quorum(now):
                    self.counters["stepped_down_quorum"] += 1
                    self._become_follower(now, self.term, None)
                    self._report()
                    return
                self._send_heartbeats(now)
                self._retransmit_transfer(now)
        elif now >= self._election_deadline:
            if config.prevote:
                self._pre_campaign(now)
            else:
                self._campaign(now, transfer=False)
        elif now >= self._retransmit_due and self.role in (PRE_CANDIDATE, CANDIDATE):
            self._request_votes(now, retransmit=True)
        self._report()

    def transfer(self, now: float, *, to: str | None = None) -> str:
        """Ask a voter (``to``, or the one that answered the newest heartbeat) to campaign at
        once, ignoring its peers' stickiness; returns its name. This node stays leader until
        the target wins (then it steps down on the higher term); it keeps asking for
        ``transfer_timeout`` (see :meth:`transfer_pending`). Raises
        :class:`~clusterrpc.errors.NotLeaderError` unless this node is the leader, and
        :class:`~clusterrpc.errors.ConfigurationError` for a ``to`` that is not another voter
        or when no other voter has answered within the election timeout."""
        self._set_clock(now)
        if self.role != LEADER:
            raise NotLeaderError(f"{self.name} is not the leader", leader=self.leader)
        if to is not None:
            if to not in self.voters or to == self.name:
                raise ConfigurationError(f"cannot transfer leadership to {to!r}: not another "
                                         f"voter of {list(self.voters)}")
            target = to
        else:
            fresh = [(self._acked_seq.get(voter, -1), self._acked[voter], voter)
                     for voter in self._acked if voter in self._acked_seq
                     and now - self._acked[voter] < self.config.election_timeout]
            if not fresh:
                raise ConfigurationError("no other voter answered within the election "
                                         "timeout: nobody to transfer leadership to")
            target = max(fresh)[2]
        self.counters["transfers_started"] += 1
        self._transfer_to = target
        self._transfer_until = now + self.config.transfer_deadline
        self._send(target, TIMEOUT_NOW, {"term": self.term})
        self._heartbeat_due = min(self._heartbeat_due, now + self.config.heartbeat_interval)
        return target

    def transfer_pending(self, now: float) -> bool:
        """Whether a transfer started by :meth:`transfer` is still being asked for."""
        return self.role == LEADER and self._transfer_to is not None and (
            now < self._transfer_until)

    def lease_expiry(self) -> float:
        """Until when (on this node's clock) no other leader can have been elected, if clocks
        run at the same rate (``-inf`` unless this node is the leader with stickiness on).

        An optimisation only, unsafe for correctness: it assumes that no clock jumps or runs
        fast and that no process pauses between reading the lease and acting. Use fencing
        tokens (the term) for anything that must be correct. The bound: a heartbeat sent at
        ``s`` and acknowledged by a majority means each of those voters refuses votes until
        ``T`` after it received it, so no election can succeed before ``s + T``; 10 % of T is
        kept back for clock-rate drift. A leader that started a :meth:`transfer` in this term
        has no lease: the target's campaign overrides the voters' stickiness (at any time a
        delayed ``timeout_now`` arrives), so another leader may win before this one hears."""
        if (self.role != LEADER or not self.config.leader_stickiness
                or self._transfer_until > float("-inf")):
            return float("-inf")
        seqs = sorted((self._acked_seq.get(voter, -1) for voter in self.voters
                       if voter != self.name), reverse=True)
        needed = self.majority - 1  # the leader counts itself
        if needed == 0:
            return float("inf")
        seq = seqs[needed - 1] if len(seqs) >= needed else -1
        sent = self._seq_sent_at.get(seq)
        if sent is None:
            return float("-inf")
        return sent + self.config.election_timeout * 0.9

    # -- messages ------------------------------------------------------------------------------

    def receive(self, kind: str, body: Any, *, sender: str, now: float) -> None:
        """A message from the authenticated voter ``sender`` (the driver passes the node name
        the packet layer authenticated, never a name read from the body)."""
        if not self._started:
            return
        self._set_clock(now)
        if sender == self.name or sender not in self.voters:
            self.counters["outsiders_ignored"] += 1
            return
        term = _term_of(body)
        if term is None or kind not in KINDS:
            self.counters["malformed"] += 1
            return
        if kind == REQUEST_VOTE:
            self._on_request_vote(sender, term, _flag(body, "prevote"),
                                  _flag(body, "transfer"), now)
        elif kind == VOTE:
            self._on_vote(sender, term, _flag(body, "granted"), _flag(body, "prevote"), now)
        elif kind == HEARTBEAT:
            seq = body.get("seq")
            self._on_heartbeat(sender, term, _seq_of(seq), now)
        elif kind == HEARTBEAT_ACK:
            seq = body.get("seq")
            self._on_heartbeat_ack(sender, term, _seq_of(seq), now)
        else:
            self._on_timeout_now(sender, term, now)
        self._report()

    def _in_lease(self, now: float) -> bool:
        """Stickiness: this node heard from a live leader within T (or is the leader, or has
        just restarted), so it must not help anyone else win."""
        if not self.config.leader_stickiness:
            return False
        if now < self._no_votes_before:
            return True
        if self.role == LEADER:
            return True
        return self.leader is not None and (
            now - self._leader_contact < self.config.election_timeout)

    def _on_request_vote(self, sender: str, term: int, prevote: bool, transfer: bool,
                         now: float) -> None:
        if term < self.term:
            # A lagging candidate: the refusal carries our term, so it catches up.
            self.counters["stale_messages"] += 1
            self._send(sender, VOTE, {"term": self.term, "granted": False, "prevote": prevote})
            return
        if term > self.term and not transfer and self._in_lease(now):
            # Stickiness: neither vote nor adopt the term (etcd's in-lease rule); the
            # candidate's timers retry and the leader's heartbeats reach it meanwhile.
            self.counters["refused_by_stickiness"] += 1
            return
        if prevote:
            # A pre-vote never changes our term or vote. Yes if it could win a real vote:
            # a later term than ours, or our term with no vote given and no leader known.
            could_vote = term > self.term or self.voted_for == sender or (
                self.voted_for is None and self.leader is None)
            if could_vote:
                self.counters["prevotes_granted"] += 1
                self._send(sender, VOTE, {"term": term, "granted": True, "prevote": True})
            else:
                self.counters["votes_refused"] += 1
                self._send(sender, VOTE, {"term": self.term, "granted": False,
                                          "prevote": True})
            return
        if term > self.term:
            self.counters["stepped_down_term"] += self.role == LEADER
            self._become_follower(now, term, None)
        if self.voted_for == sender or (self.voted_for is None and self.leader is None):
            if self.voted_for is None:
                self.voted_for = sender
                self._persist = self.persistent_state
            self.counters["votes_granted"] += 1
            # A vote granted restarts the election timer (Raft §5.2): the candidate gets its
            # chance before this voter campaigns itself.
            self._reset_election_timer(now)
            self._send(sender, VOTE, {"term": self.term, "granted": True, "prevote": False})
        else:
            self.counters["votes_refused"] += 1
            self._send(sender, VOTE, {"term": self.term, "granted": False, "prevote": False})

    def _on_vote(self, sender: str, term: int, granted: bool, prevote: bool,
                 now: float) -> None:
        if prevote and granted:
            # A pre-vote "yes" names the term we would campaign at: ours + 1.
            if self.role == PRE_CANDIDATE and term == self.term + 1:
                self._granted.add(sender)
                self._answered.add(sender)
                if len(self._granted) >= self.majority:
                    self._campaign(now, transfer=False)
            return
        if term > self.term:
            # A refusal from a voter ahead of us (or a vote in a later term): catch up.
            self.counters["stepped_down_term"] += self.role == LEADER
            self._become_follower(now, term, None)
            return
        if term < self.term:
            self.counters["stale_messages"] += 1
            return
        if prevote:
            if self.role == PRE_CANDIDATE:
                self._answered.add(sender)
            return
        if self.role != CANDIDATE:
            return
        self._answered.add(sender)
        if granted:
            self._granted.add(sender)
            if len(self._granted) >= self.majority:
                self._become_leader(now)

    def _on_heartbeat(self, sender: str, term: int, seq: int, now: float) -> None:
        if term < self.term:
            # A deposed leader: tell it the newer term (it steps down on the ack).
            self.counters["stale_messages"] += 1
            self._send(sender, HEARTBEAT_ACK, {"term": self.term, "seq": seq})
            return
        if term == self.term and self.role == LEADER:
            # Two leaders in one term cannot happen (one vote per term, majorities intersect);
            # never act on such a message.
            self.counters["malformed"] += 1
            return
        if term > self.term or self.role != FOLLOWER or self.leader != sender:
            self.counters["stepped_down_term"] += self.role == LEADER
            self._become_follower(now, term, sender)
        self._leader_contact = now
        self._reset_election_timer(now)
        self._send(sender, HEARTBEAT_ACK, {"term": self.term, "seq": seq})

    def _on_heartbeat_ack(self, sender: str, term: int, seq: int, now: float) -> None:
        if term > self.term:
            self.counters["stepped_down_term"] += self.role == LEADER
            self._become_follower(now, term, None)
            return
        if term < self.term or self.role != LEADER:
            return
        self._acked[sender] = max(self._acked.get(sender, now), now)
        if seq <= self._seq:
            self._acked_seq[sender] = max(self._acked_seq.get(sender, -1), seq)

    def _on_timeout_now(self, sender: str, term: int, now: float) -> None:
        if term > self.term:
            self._become_follower(now, term, sender)
            self._leader_contact = now
        if term != self.term or self.leader != sender or self.role == LEADER:
            self.counters["stale_messages"] += 1
            return
        # Our leader hands over: campaign now, skipping the pre-vote, and tell the voters
        # to ignore their stickiness (the leader they stick to asked for this).
        self._campaign(now, transfer=True)

    # -- transitions ---------------------------------------------------------------------------

    def _reset_election_timer(self, now: float) -> None:
        timeout = self.config.election_timeout
        self._election_deadline = now + timeout + self._rng.random() * timeout

    def _become_follower(self, now: float, term: int, leader: str | None) -> None:
        if term > self.term:
            self.term = term
            self.voted_for = None
            self._persist = self.persistent_state
        was_leader = self.role == LEADER
        self.role = FOLLOWER
        self.leader = leader
        self._granted.clear()
        self._answered.clear()
        self._heartbeat_due = float("inf")
        self._retransmit_due = float("inf")
        self._transfer_to = None
        self._campaign_transfer = False
        if was_leader or leader is None:
            self._leader_contact = float("-inf")
        self._reset_election_timer(now)

    def _pre_campaign(self, now: float) -> None:
        self.counters["prevotes_started"] += 1
        self.role = PRE_CANDIDATE
        self.leader = None
        self._leader_contact = float("-inf")
        self._granted = {self.name}
        self._answered = {self.name}
        self._campaign_transfer = False  # a failed transfer campaign retries as a plain one
        self._reset_election_timer(now)
        if len(self._granted) >= self.majority:
            self._campaign(now, transfer=False)
            return
        self._request_votes(now, retransmit=False)

    def _campaign(self, now: float, *, transfer: bool) -> None:
        self.counters["elections_started"] += 1
        self.term += 1
        self.voted_for = self.name
        self._persist = self.persistent_state
        self.role = CANDIDATE
        self.leader = None
        self._leader_contact = float("-inf")
        self._campaign_transfer = transfer
        self._granted = {self.name}
        self._answered = {self.name}
        self._reset_election_timer(now)
        if len(self._granted) >= self.majority:
            self._become_leader(now)
            return
        self._request_votes(now, retransmit=False)

    def _request_votes(self, now: float, *, retransmit: bool) -> None:
        prevote = self.role == PRE_CANDIDATE
        body = {"term": self.term + 1 if prevote else self.term, "prevote": prevote,
                "transfer": self._campaign_transfer}
        for voter in self.voters:
            if voter not in self._answered:
                self._send(voter, REQUEST_VOTE, dict(body))
        self._retransmit_due = now + self.config.heartbeat_interval

    def _become_leader(self, now: float) -> None:
        self.counters["became_leader"] += 1
        self.role = LEADER
        self.leader = self.name
        self._became_leader = now
        self._election_deadline = float("inf")
        self._retransmit_due = float("inf")
        self._campaign_transfer = False
        self._transfer_until = float("-inf")  # no transfer yet in this term (lease_expiry)
        # Every voter starts with a full election timeout to answer before check-quorum.
        self._acked = {voter: now for voter in self.voters if voter != self.name}
        self._acked_seq = {}
        self._seq_sent_at = {}
        self._send_heartbeats(now)

    def _send_heartbeats(self, now: float) -> None:
        self._seq += 1
        self._seq_sent_at[self._seq] = now
        for seq in [seq for seq in self._seq_sent_at if seq < self._seq - 64]:
            del self._seq_sent_at[seq]  # lease_expiry needs only the recent ones
        for voter in self.voters:
            if voter != self.name:
                self._send(voter, HEARTBEAT, {"term": self.term, "seq": self._seq})
        self.counters["heartbeats_sent"] += 1
        self._heartbeat_due = now + self.config.heartbeat_interval

    def _has_quorum(self, now: float) -> bool:
        timeout = self.config.election_timeout
        recent = 1 + sum(1 for when in self._acked.values() if now - when < timeout)
        return recent >= self.majority

    def _retransmit_transfer(self, now: float) -> None:
        target = self._transfer_to
        if target is None:
            return
        if now >= self._transfer_until:
            self.counters["transfers_abandoned"] += 1
            self._transfer_to = None
            return
        self._send(target, TIMEOUT_NOW, {"term": self.term})

    def _send(self, to: str, kind: str, body: dict[str, Any]) -> None:
        self._outbox.append(Outgoing(to, kind, body))

    def _report(self) -> None:
        # A change is a new leader (or none), a new term of a known leader, or this node
        # winning or losing the leadership; a candidate's rising terms are not changes.
        current = (self.leader, self.term if self.leader is not None else None,
                   self.role == LEADER)
        if current != self._last_reported:
            self._changes.append(LeaderChange(self.term, self.leader, self.role))
        self._last_reported = current

    def describe(self, now: float) -> dict[str, Any]:
        """The state as ``election.status()`` returns it: role, term, leader, voters, and how
        long ago this node heard its leader (a follower) or each voter (the leader)."""
        contact = self.last_leader_contact
        return {
            "name": self.name, "role": self.role, "term": self.term, "leader": self.leader,
            "voted_for": self.voted_for, "voters": list(self.voters),
            "last_heartbeat": None if contact is None or self.role == LEADER
            else round(max(now - contact, 0.0), 3),
            "acks": {voter: round(max(now - when, 0.0), 3)
                     for voter, when in sorted(self.acks().items())},
            "counters": dict(self.counters),
        }  # fmt: skip
