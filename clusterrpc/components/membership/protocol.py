"""Membership without I/O: SWIM failure detection with suspicion, gossip and local health
(``spec/membership.md``).

:class:`MembershipProtocol` is the whole state machine of one member. It reads no clock and
touches no socket: the driver (:mod:`clusterrpc.components.membership.driver`) passes every
received message and the time in, and takes out what to send (:meth:`~MembershipProtocol.
messages_to_send`), what changed (:meth:`~MembershipProtocol.events_happened`) and when to
call again (:meth:`~MembershipProtocol.next_wakeup`). Time is the driver's monotonic clock, in
seconds; randomness comes from the ``random.Random`` passed in, so a seeded simulation replays.

The rules, in short (the spec has them as a table):

* every ``probe_interval`` a member pings the next member of a shuffled round-robin list; no
  ``ack`` within ``probe_timeout`` → it asks ``indirect_checks`` others to ping it
  (``ping_req``; they ``nack`` if they cannot reach it either); no ack by the end of the round →
  the target becomes ``suspect`` — unless this member's own health is in doubt (below);
* a suspicion becomes ``dead`` after a timeout that starts at ``suspicion_max_timeout_mult``
  times the minimum and shrinks towards the minimum (``suspicion_mult * log10(n) *
  probe_interval``) as independent members confirm it (Lifeguard); the suspect refutes by
  raising its incarnation, which outranks the suspicion;
* a member's identity is ``(name, epoch)``: the epoch (the sender epoch of its packets, i.e.
  its start time) orders lives, the incarnation orders claims within a life. A newer epoch
  replaces the old life at once, whatever its state and from whatever address;
* updates travel piggybacked on every message and in ``gossip`` rounds, each sent a bounded
  number of times; a full-state ``sync`` runs with a random member every
  ``push_pull_interval``, and with a dead member or an unreachable seed every
  ``reconnect_interval`` — that is how partitions heal and how restarted seeds come back;
* local health: a member that observes its own event loop running late (the driver reports
  each wake-up's lag), or whose probes fail without the helpers' ``nack`` answers (Lifeguard's
  awareness), stretches its probe timeouts, does not originate suspicion while the doubt
  lasts, and does not count the time it could not listen against the members it suspects.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Mapping
from typing import Any, Final

from clusterrpc.errors import ConfigurationError

__all__ = [
    "ALIVE",
    "DEAD",
    "LEFT",
    "SUSPECT",
    "Alive",
    "Failed",
    "Joined",
    "Left",
    "Member",
    "MembershipConfig",
    "MembershipEvent",
    "MembershipProtocol",
    "Outgoing",
    "Suspected",
    "Updated",
    "check_meta",
]

ALIVE: Final = "alive"
SUSPECT: Final = "suspect"
DEAD: Final = "dead"
LEFT: Final = "left"
STATES: Final = (ALIVE, SUSPECT, DEAD, LEFT)

# Message kinds: each is a one-way method ``<service>.<kind>(body)`` (spec/membership.md).
PING: Final = "ping"
PING_REQ: Final = "ping_req"
ACK: Final = "ack"
NACK: Final = "nack"
GOSSIP: Final = "gossip"
SYNC: Final = "sync"
KINDS: Final = (PING, PING_REQ, ACK, NACK, GOSSIP, SYNC)

MAX_META_BYTES: Final = 512
"""Bound on a member's metadata: UTF-8 bytes of every key and value together."""
MAX_META_ITEMS: Final = 16

_RANK: Final = {ALIVE: 0, SUSPECT: 1, DEAD: 2, LEFT: 3}
"""At one (epoch, incarnation), a later state in this order wins: suspicion outranks the alive
claim it doubts, death outranks suspicion, a leave outranks all."""


def check_meta(meta: Mapping[str, str] | None) -> dict[str, str]:
    """``meta`` as a plain dict, checked: strings only, at most :data:`MAX_META_ITEMS` items
    and :data:`MAX_META_BYTES` bytes. Raises :class:`~clusterrpc.errors.ConfigurationError`."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ConfigurationError(f"member metadata must be a dict of strings, not {meta!r}")
    size = 0
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigurationError(f"member metadata must map strings to strings: "
                                     f"{key!r}: {value!r}")
        size += len(key.encode()) + len(value.encode())
    if len(meta) > MAX_META_ITEMS or size > MAX_META_BYTES:
        raise ConfigurationError(f"member metadata is limited to {MAX_META_ITEMS} items and "
                                 f"{MAX_META_BYTES} bytes (got {len(meta)} items, {size} bytes)")
    return dict(meta)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MembershipConfig:
    """Timers and fan-outs of the protocol; the defaults are memberlist's LAN defaults
    (``DefaultLANConfig``) where memberlist has the setting, so detection times compare.

    ``probe_interval`` (memberlist ``ProbeInterval`` 1 s): one probe per member per interval.
    ``probe_timeout`` (``ProbeTimeout`` 500 ms): wait for a direct ack before indirect probes.
    ``indirect_checks`` (``IndirectChecks`` 3): members asked to probe for us.
    ``suspicion_mult`` (``SuspicionMult`` 4) and ``suspicion_max_timeout_mult``
    (``SuspicionMaxTimeoutMult`` 6): the suspicion timeout (module docstring).
    ``gossip_interval`` (``GossipInterval`` 200 ms) and ``gossip_nodes`` (``GossipNodes`` 3):
    gossip rounds. ``retransmit_mult`` (``RetransmitMult`` 4): each update is sent
    ``retransmit_mult * ceil(log10(n + 1))`` times. ``push_pull_interval``
    (``PushPullInterval`` 30 s): full-state exchange with a random member.
    ``gossip_to_the_dead`` (``GossipToTheDeadTime`` 30 s): dead members still receive gossip
    this long. ``awareness_max_multiplier`` (``AwarenessMaxMultiplier`` 8): the most a
    member's own health stretches its probe timeouts.

    Ours: ``reconnect_interval`` (10 s; Serf's ``reconnect_interval`` is 30 s): a sync with one
    dead member or absent seed. ``dead_reap`` (24 h, Serf's ``reconnect_timeout``) and
    ``left_reap`` (1 h): how long dead and left members stay in the view. ``max_updates``
    (16): updates piggybacked per message. ``lag_threshold`` (100 ms): event-loop lag that
    puts the member's own health in doubt. ``local_health`` (on): awareness and lag handling.
    ``refute_directly`` (on): a refutation goes at once to the accuser and up to
    ``refute_fanout`` (32) members, besides the gossip; and a suspect that sent this member
    an authenticated packet since the suspicion began is not declared dead when the timer
    fires: its suspicion goes to it again and the timer restarts at the minimum.
    ``direct_retry`` (on): a second direct ping goes with the indirect probes (memberlist
    sends a TCP ping there; a UDP-only membership retries over UDP). With these three off
    the protocol is memberlist's default algorithm without Lifeguard's local health and
    without its TCP fallback (the benchmark's comparison).
    """

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    retransmit_mult: int = 4
    push_pull_interval: float = 30.0
    gossip_to_the_dead: float = 30.0
    reconnect_interval: float = 10.0
    dead_reap: float = 24 * 3600.0
    left_reap: float = 3600.0
    awareness_max_multiplier: int = 8
    max_updates: int = 16
    lag_threshold: float = 0.1
    local_health: bool = True
    refute_directly: bool = True
    direct_retry: bool = True
    refute_fanout: int = 32

    def __post_init__(self) -> None:
        for name in ("probe_interval", "probe_timeout", "gossip_interval", "push_pull_interval",
                     "gossip_to_the_dead", "reconnect_interval", "dead_reap", "left_reap",
                     "lag_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise ConfigurationError(f"membership {name} must be a positive number of "
                                         f"seconds, not {value!r}")
        if self.probe_timeout >= self.probe_interval:
            raise ConfigurationError(
                f"membership probe_timeout ({self.probe_timeout:g} s) must be shorter than "
                f"probe_interval ({self.probe_interval:g} s): indirect probes need the rest")
        for name in ("indirect_checks", "gossip_nodes", "refute_fanout"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"membership {name} must be an int >= 0, not {value!r}")
        for name in ("suspicion_mult", "suspicion_max_timeout_mult", "retransmit_mult",
                     "awareness_max_multiplier", "max_updates"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"membership {name} must be an int >= 1, not {value!r}")


@dataclasses.dataclass(frozen=True)
class Member:
    """One member as this node sees it (``membership.view[name]``).

    ``state``: ``"alive"``, ``"suspect"``, ``"dead"`` or ``"left"``. ``incarnation``: the
    member's own counter of claims within one life; ``epoch``: its restart identity (the sender
    epoch of its packets, microseconds since 1970 at its start). ``addresses``: where it
    receives membership messages (URLs). ``meta``: its small metadata. ``last_heard``: the
    driver's monotonic time of the last message it sent us directly (``None``: never).
    """

    name: str
    state: str
    incarnation: int
    epoch: int
    addresses: tuple[str, ...]
    meta: Mapping[str, str]
    last_heard: float | None = None

    @property
    def address(self) -> str | None:
        """The address probes go to (the first), or ``None`` if none is known."""
        return self.addresses[0] if self.addresses else None


@dataclasses.dataclass(frozen=True)
class MembershipEvent:
    """A change of the view. ``view``: the view number after it (it grows by one per event,
    from 1); ``member``: the member as it is now."""

    view: int
    member: Member


class Joined(MembershipEvent):
    """A member appeared, or came back in a new life (new epoch; the old life's
    :class:`Failed` comes first if it was still counted as up)."""


class Suspected(MembershipEvent):
    """A member failed a probe round somewhere; it is still counted as up."""


class Alive(MembershipEvent):
    """A suspected or dead member refuted (same life, higher incarnation)."""


class Failed(MembershipEvent):
    """A member is dead (its suspicion timed out, or a newer life replaced it)."""


class Left(MembershipEvent):
    """A member left gracefully."""


class Updated(MembershipEvent):
    """An up member's metadata or addresses changed."""


@dataclasses.dataclass(frozen=True)
class Outgoing:
    """A message to send: the one-way call ``<service>.<kind>(body)`` to ``address``."""

    address: str
    kind: str
    body: dict[str, Any]


class _Entry:
    """The protocol's record of one member (mutable; :class:`Member` is its snapshot)."""

    __slots__ = ("addresses", "by", "confirmations", "epoch", "incarnation", "last_heard",
                 "meta", "name", "since", "state", "suspect_deadline", "suspect_max",
                 "suspect_min", "suspect_start", "told_dead")

    def __init__(self, name: str, epoch: int, incarnation: int, state: str, *,
                 addresses: tuple[str, ...], meta: dict[str, str], now: float) -> None:
        self.name = name
        self.epoch = epoch
        self.incarnation = incarnation
        self.state = state
        self.addresses = addresses
        self.meta = meta
        self.since = now
        self.last_heard: float | None = None
        self.told_dead = -math.inf
        self.by = ""
        self.confirmations: set[str] = set()
        self.suspect_start = 0.0
        self.suspect_min = 0.0
        self.suspect_max = 0.0
        self.suspect_deadline = math.inf

    def snapshot(self) -> Member:
        return Member(self.name, self.state, self.incarnation, self.epoch, self.addresses,
                      dict(self.meta), self.last_heard)

    def update(self) -> dict[str, Any]:
        """This entry as a wire update (spec/membership.md, "Updates")."""
        body: dict[str, Any] = {"name": self.name, "state": self.state,
                                "incarnation": self.incarnation, "epoch": self.epoch}
        if self.state in (ALIVE, SUSPECT):
            body["addresses"] = list(self.addresses)
            body["meta"] = dict(self.meta)
        if self.by:
            body["by"] = self.by
        return body

    @property
    def up(self) -> bool:
        return self.state in (ALIVE, SUSPECT)


class _Probe:
    __slots__ = ("acked", "direct_deadline", "helpers", "indirect", "lagged", "nacks",
                 "round_end", "seq", "started", "target")

    def __init__(self, seq: int, target: str, started: float, direct_deadline: float,
                 round_end: float) -> None:
        self.seq = seq
        self.target = target
        self.started = started
        self.direct_deadline = direct_deadline
        self.round_end = round_end
        self.acked = False
        self.indirect = False
        self.helpers = 0
        self.nacks = 0
        self.lagged = False


class _Relay:
    """A ``ping_req`` this member serves: ping ``target`` for ``requester``."""

    __slots__ = ("nack_at", "requester", "requester_seq", "target")

    def __init__(self, requester: str, requester_seq: int, target: str, nack_at: float) -> None:
        self.requester = requester
        self.requester_seq = requester_seq
        self.target = target
        self.nack_at = nack_at


@dataclasses.dataclass
class _Queued:
    update: dict[str, Any]
    transmits: int = 0
    order: int = 0


def _parse_update(raw: object) -> dict[str, Any] | None:
    """A received update, checked (``None`` if malformed: ignored, counted)."""
    if not isinstance(raw, dict):
        return None
    name, state = raw.get("name"), raw.get("state")
    incarnation, epoch = raw.get("incarnation"), raw.get("epoch")
    if (not isinstance(name, str) or not name or state not in _RANK
            or not isinstance(incarnation, int) or isinstance(incarnation, bool)
            or incarnation < 0 or not isinstance(epoch, int) or isinstance(epoch, bool)):
        return None
    addresses = raw.get("addresses", [])
    if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
        return None
    meta = raw.get("meta", {})
    try:
        meta = check_meta(meta)
    except ConfigurationError:
        return None
    by = raw.get("by", "")
    if not isinstance(by, str):
        return None
    return {"name": name, "state": state, "incarnation": incarnation, "epoch": epoch,
            "addresses": tuple(addresses), "meta": meta, "by": by}


class MembershipProtocol:
    """One member's membership state machine (module docstring).

    ``name`` and ``epoch``: this member's identity (the node's name and its packets' sender
    epoch). ``address``: where others reach it (a URL the driver can send to). ``seeds``:
    addresses to join through and to keep trying while they are not members. ``meta``: its
    metadata (:func:`check_meta`). ``rng``: every random choice (seed it to replay).

    Drive it: :meth:`start` once, then :meth:`receive` each message and :meth:`tick` at
    :meth:`next_wakeup`; after each, send :meth:`messages_to_send` and hand out
    :meth:`events_happened`. Report each wake-up's lateness with :meth:`observe_lag`.
    """

    def __init__(self, *, name: str, epoch: int, address: str, config: MembershipConfig,
                 rng: random.Random, seeds: Iterable[str] = (),
                 meta: Mapping[str, str] | None = None,
                 group_address: str | None = None) -> None:
        self.name = name
        self.epoch = epoch
        self.address = address
        self.config = config
        self.rng = rng
        self.seeds = tuple(seed for seed in seeds if seed != address)
        self.group_address = group_address
        self._me = _Entry(name, epoch, 0, ALIVE, addresses=(address,), meta=check_meta(meta),
                          now=0.0)
        self._members: dict[str, _Entry] = {name: self._me}
        self._view = 0
        self._events: list[MembershipEvent] = []
        self._outbox: list[Outgoing] = []
        self._queue: dict[str, _Queued] = {}
        self._queue_order = 0
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._seq = 0
        self._awareness = 0
        self._doubt_until = -math.inf
        self._last_lag = 0.0
        self._next_probe = math.inf
        self._next_gossip = math.inf
        self._next_push_pull = math.inf
        self._next_reconnect = math.inf
        self._next_join = math.inf
        self._next_reap = math.inf
        self._joined = False
        self._started = False
        self._leaving = False
        self.counters: dict[str, int] = dict.fromkeys((
            "probes_sent", "probes_failed", "indirect_probes_sent", "acks_received",
            "nacks_received", "pings_received", "suspicions", "suspicions_withheld",
            "suspicions_confirmed", "refutations", "false_suspicions_refuted", "deaths",
            "joins", "leaves", "restarts", "gossip_sent", "syncs_sent", "syncs_received",
            "updates_received", "updates_malformed", "messages_ignored", "lag_events",
            "deaths_averted",
        ), 0)  # fmt: skip
        """What happened, by name (``spec/membership.md``, "Counters")."""

    # -- the view ------------------------------------------------------------------------------

    @property
    def view_number(self) -> int:
        """The number of the current view (events so far)."""
        return self._view

    def view(self) -> dict[str, Member]:
        """Every member known, this one included, by name."""
        return {name: entry.snapshot() for name, entry in self._members.items()}

    def member(self, name: str) -> Member | None:
        entry = self._members.get(name)
        return None if entry is None else entry.snapshot()

    def alive_members(self) -> set[str]:
        """Names of the members counted as up (``alive`` or ``suspect``), this one included
        unless it left."""
        return {name for name, entry in self._members.items() if entry.up}

    def suspicion_deadline(self, name: str) -> float | None:
        """When ``name``'s suspicion turns into death here, if it is suspect (else ``None``)."""
        entry = self._members.get(name)
        return entry.suspect_deadline if entry is not None and entry.state == SUSPECT else None

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def awareness(self) -> int:
        """Lifeguard's local-health score: 0 is healthy; timeouts stretch by it + 1."""
        return self._awareness

    def in_doubt(self, now: float) -> bool:
        """Whether this member's own health is in doubt (its loop lagged recently)."""
        return now < self._doubt_until

    # -- outputs -------------------------------------------------------------------------------

    def messages_to_send(self) -> list[Outgoing]:
        """What to send now (taken: a second call returns only what came since)."""
        out, self._outbox = self._outbox, []
        return out

    def events_happened(self) -> list[MembershipEvent]:
        """View changes since the last call, in order (taken)."""
        events, self._events = self._events, []
        return events

    def next_wakeup(self) -> float:
        """When :meth:`tick` must run next (``inf``: nothing scheduled)."""
        times = [self._next_probe, self._next_gossip, self._next_push_pull,
                 self._next_reconnect, self._next_join, self._next_reap]
        probe = self._probe
        if probe is not None and not probe.acked:
            times.append(probe.round_end if probe.indirect else probe.direct_deadline)
        times.extend(relay.nack_at for relay in self._relays.values())
        times.extend(entry.suspect_deadline for entry in self._members.values()
                     if entry.state == SUSPECT)
        return min(times)

    # -- inputs --------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: announce this member to the seeds and schedule the timers."""
        if self._started:
            return
        self._started = True
        config = self.config
        self._me.since = now
        self._emit(Joined, self._me)
        self._enqueue(self._me)
        # Spread the members' rounds: the first probe within one interval.
        self._next_probe = now + self.rng.uniform(0, config.probe_interval)
        self._next_gossip = now + self.rng.uniform(0, config.gossip_interval)
        self._next_push_pull = now + config.push_pull_interval
        self._next_reconnect = now + config.reconnect_interval
        self._next_reap = now + config.reconnect_interval
        if self.seeds:
            self._join(now)

    def leave(self, now: float) -> None:
        """Leave gracefully: a ``left`` update (a higher incarnation) to every member up."""
        if self._leaving:
            return
        self._leaving = True
        me = self._me
        me.incarnation += 1
        me.state = LEFT
        me.since = now
        self._emit(Left, me)
        update = me.update()
        for entry in self._members.values():
            if entry is not me and entry.up and entry.addresses:
                self._send(entry.addresses[0], GOSSIP, {"updates": [update]})
        self._next_probe = self._next_gossip = self._next_push_pull = math.inf
        self._next_reconnect = self._next_join = math.inf

    def set_meta(self, meta: Mapping[str, str] | None, now: float) -> None:
        """Change this member's metadata: a new incarnation, gossiped. Raises
        :class:`~clusterrpc.errors.ConfigurationError` for bad metadata."""
        self._me.meta = check_meta(meta)
        self._me.incarnation += 1
        self._emit(Updated, self._me)
        self._enqueue(self._me)

    def observe_lag(self, lag: float, now: float) -> None:
        """The driver woke ``lag`` seconds after it asked to (its event loop was busy or the
        process stalled). Over ``lag_threshold``, this member's health is in doubt for a
        while: it stretches its timeouts and does not originate suspicion, and suspicion
        deadlines move by ``lag`` (time it could not hear refutations does not count)."""
        config = self.config
        if not config.local_health or lag < config.lag_threshold:
            return
        self.counters["lag_events"] += 1
        self._last_lag = lag
        self._doubt_until = max(self._doubt_until, now + max(2 * config.probe_interval, 2 * lag))
        for entry in self._members.values():
            if entry.state == SUSPECT:
                entry.suspect_deadline += lag
        if self._probe is not None:
            self._probe.lagged = True

    def receive(self, kind: str, body: Any, *, sender: str, sender_epoch: int | None,
                now: float) -> None:
        """A message ``kind`` (one of :data:`KINDS`) with ``body`` from the authenticated
        member ``sender`` whose packets carry ``sender_epoch``. Malformed messages are
        ignored and counted (``messages_ignored``)."""
        if self._leaving or not isinstance(body, dict) or kind not in KINDS:
            self.counters["messages_ignored"] += 1
            return
        if sender == self.name:
            # Our own name: ourselves (multicast loop) or a stale life of ours; never a peer.
            self.counters["messages_ignored"] += 1
            return
        # Updates first: the sender's own alive claim (a new life, its metadata) comes
        # with its first messages and is worth more than what the bare packet tells.
        updates = body.get("updates")
        if isinstance(updates, list):
            self._merge(updates, now)
        if kind == SYNC and isinstance(body.get("members"), list):
            self._merge(body["members"], now)
        self._heard_from(sender, sender_epoch, body, now)
        handler = getattr(self, f"_on_{kind}")
        handler(body, sender, now)

    def tick(self, now: float) -> None:
        """Run every timer due at ``now``."""
        config = self.config
        probe = self._probe
        if probe is not None and not probe.acked:
            if not probe.indirect and now >= probe.direct_deadline:
                self._probe_indirectly(probe, now)
            if now >= probe.round_end:
                self._probe_failed(probe, now)
        for seq, relay in list(self._relays.items()):
            if now >= relay.nack_at:
                del self._relays[seq]
                address = self._address_of(relay.requester)
                if address is not None:
                    self._send(address, NACK, {"seq": relay.requester_seq})
        for entry in list(self._members.values()):
            if entry.state == SUSPECT and now >= entry.suspect_deadline:
                if (self.config.refute_directly and entry.last_heard is not None
                        and entry.last_heard > entry.suspect_start):
                    # It sent us an authenticated packet of this life after the suspicion
                    # began: it lives, and only its refutation was lost. Tell it again.
                    self.counters["deaths_averted"] += 1
                    entry.suspect_start = now
                    entry.suspect_deadline = now + entry.suspect_min
                    if entry.addresses:
                        self._outbox.append(Outgoing(entry.addresses[0], GOSSIP,
                                                     {"updates": [entry.update()]}))
                    continue
                self._declare_dead(entry, now)
        if now >= self._next_probe:
            self._probe_next(now)
        if now >= self._next_gossip:
            self._gossip_round(now)
            self._next_gossip = now + config.gossip_interval
        if now >= self._next_push_pull:
            self._push_pull(now)
            self._next_push_pull = now + self._push_pull_interval()
        if now >= self._next_reconnect:
            self._reconnect(now)
            self._next_reconnect = now + config.reconnect_interval
        if now >= self._next_join:
            self._join(now)
        if now >= self._next_reap:
            self._reap(now)
            self._next_reap = now + config.reconnect_interval

    # -- message handlers ----------------------------------------------------------------------

    def _on_ping(self, body: dict[str, Any], sender: str, now: float) -> None:
        self.counters["pings_received"] += 1
        seq, reply_to = body.get("seq"), body.get("reply_to")
        if body.get("target") != self.name or not isinstance(seq, int):
            self.counters["messages_ignored"] += 1  # meant for a member we are not (any more)
            return
        address = reply_to if isinstance(reply_to, str) else self._address_of(sender)
        if address is not None:
            self._send(address, ACK, {"seq": seq})

    def _on_ping_req(self, body: dict[str, Any], sender: str, now: float) -> None:
        seq, target, target_address = body.get("seq"), body.get("target"), body.get("address")
        if not isinstance(seq, int) or not isinstance(target, str):
            self.counters["messages_ignored"] += 1
            return
        if not isinstance(target_address, str):
            target_address = self._address_of(target)
            if target_address is None:
                return
        self._seq += 1
        self._relays[self._seq] = _Relay(sender, seq, target,
                                         now + 0.8 * self._scaled(self.config.probe_timeout, now))
        self._send(target_address, PING, {"seq": self._seq, "target": target,
                                          "reply_to": self.address})

    def _on_ack(self, body: dict[str, Any], sender: str, now: float) -> None:
        seq = body.get("seq")
        probe = self._probe
        if probe is not None and seq == probe.seq and not probe.acked:
            probe.acked = True
            self.counters["acks_received"] += 1
            if now <= probe.round_end and not probe.lagged:
                self._health(-1)
            return
        relay = self._relays.pop(seq, None) if isinstance(seq, int) else None
        if relay is not None and sender == relay.target:
            address = self._address_of(relay.requester)
            if address is not None:
                self._send(address, ACK, {"seq": relay.requester_seq})

    def _on_nack(self, body: dict[str, Any], sender: str, now: float) -> None:
        probe = self._probe
        if probe is not None and body.get("seq") == probe.seq:
            probe.nacks += 1
            self.counters["nacks_received"] += 1

    def _on_gossip(self, body: dict[str, Any], sender: str, now: float) -> None:
        """Only updates (merged already)."""

    def _on_sync(self, body: dict[str, Any], sender: str, now: float) -> None:
        self.counters["syncs_received"] += 1
        self._joined = True
        self._next_join = math.inf
        if body.get("reply") is True:
            address = body.get("reply_to")
            if not isinstance(address, str):
                address = self._address_of(sender)
            if address is not None:
                self._send_sync(address, reply=False)

    # -- probing -------------------------------------------------------------------------------

    def _scaled(self, seconds: float, now: float) -> float:
        """``seconds`` stretched by this member's health (awareness, and recent lag)."""
        config = self.config
        if not config.local_health:
            return seconds
        multiplier = self._awareness + 1
        if self.in_doubt(now):
            multiplier += math.ceil(self._last_lag / config.probe_interval)
        return seconds * min(multiplier, config.awareness_max_multiplier)

    def _health(self, delta: int) -> None:
        if self.config.local_health:
            self._awareness = max(0, min(self.config.awareness_max_multiplier - 1,
                                         self._awareness + delta))

    def _probe_next(self, now: float) -> None:
        config = self.config
        target = self._next_target()
        interval = self._scaled(config.probe_interval, now)
        self._next_probe = now + interval
        if target is None:
            self._probe = None
            return
        address = target.addresses[0]
        self._seq += 1
        self._probe = _Probe(self._seq, target.name, now,
                             now + self._scaled(config.probe_timeout, now), now + interval)
        self.counters["probes_sent"] += 1
        body: dict[str, Any] = {"seq": self._seq, "target": target.name,
                                "reply_to": self.address}
        self._send(address, PING, body)
        if target.state == SUSPECT:
            # Lifeguard's buddy system: a suspect hears of its suspicion from its prober.
            body.setdefault("updates", []).insert(0, target.update())

    def _next_target(self) -> _Entry | None:
        for _ in range(2):
            while self._probe_index < len(self._probe_order):
                name = self._probe_order[self._probe_index]
                self._probe_index += 1
                entry = self._members.get(name)
                if entry is not None and entry.up and entry is not self._me and entry.addresses:
                    return entry
            self._probe_order = [name for name, entry in self._members.items()
                                 if entry.up and entry is not self._me]
            self.rng.shuffle(self._probe_order)
            self._probe_index = 0
        return None

    def _probe_indirectly(self, probe: _Probe, now: float) -> None:
        target = self._members.get(probe.target)
        helpers = [entry for entry in self._members.values()
                   if entry.state == ALIVE and entry is not self._me
                   and entry.name != probe.target and entry.addresses]
        probe.indirect = True
        if target is None or not target.addresses:
            return
        chosen = self.rng.sample(helpers, min(self.config.indirect_checks, len(helpers)))
        probe.helpers = len(chosen)
        if self.config.direct_retry:
            # A second direct ping beside the indirect ones (memberlist sends a TCP ping
            # here; this is the UDP-only equivalent): one lost datagram is the commonest
            # reason for a missing ack, and costs the target a suspicion otherwise.
            self._send(target.addresses[0], PING, {"seq": probe.seq, "target": probe.target,
                                                   "reply_to": self.address})
        for helper in chosen:
            self.counters["indirect_probes_sent"] += 1
            self._send(helper.addresses[0], PING_REQ, {
                "seq": probe.seq, "target": probe.target, "address": target.addresses[0]})

    def _probe_failed(self, probe: _Probe, now: float) -> None:
        self._probe = None
        target = self._members.get(probe.target)
        self.counters["probes_failed"] += 1
        if target is None or not target.up:
            return
        config = self.config
        if config.local_health:
            late = now - probe.round_end > config.lag_threshold
            if probe.lagged or late or self.in_doubt(now):
                # We may be the one that could not listen: say nothing about the target.
                self.counters["suspicions_withheld"] += 1
                return
            # Lifeguard: helpers that did not even nack say the fault may be ours.
            self._health(probe.helpers - probe.nacks if probe.helpers else 1)
        if target.state == ALIVE:
            self.counters["suspicions"] += 1
            self._suspect(target, target.incarnation, self.name, now)
        else:
            self._confirm(target, self.name)

    # -- state changes -------------------------------------------------------------------------

    def _suspicion_bounds(self) -> tuple[float, float, int]:
        config = self.config
        members = sum(1 for entry in self._members.values() if entry.up)
        minimum = (config.suspicion_mult * max(1.0, math.log10(max(members, 1)))
                   * config.probe_interval)
        maximum = config.suspicion_max_timeout_mult * minimum
        expected = config.suspicion_mult - 2
        if members - 2 < expected:
            expected = 0
        return minimum, maximum, expected

    def _suspect(self, entry: _Entry, incarnation: int, by: str, now: float) -> None:
        minimum, maximum, expected = self._suspicion_bounds()
        entry.state = SUSPECT
        entry.incarnation = incarnation
        entry.by = by
        entry.since = now
        entry.confirmations = {by}
        entry.suspect_start = now
        entry.suspect_min = minimum
        entry.suspect_max = maximum if expected else minimum
        entry.suspect_deadline = now + entry.suspect_max
        self._emit(Suspected, entry)
        self._enqueue(entry)

    def _confirm(self, entry: _Entry, by: str) -> None:
        """An independent suspicion of ``entry`` by ``by``: shorten its timeout and pass the
        confirmation on (as memberlist does), so others count it too."""
        if by in entry.confirmations:
            return
        entry.confirmations.add(by)
        self.counters["suspicions_confirmed"] += 1
        self._enqueue(entry, by=by)
        _, _, expected = self._suspicion_bounds()
        if not expected:
            return
        # Lifeguard: max - (max - min) * log(c + 1) / log(k + 1), c independent confirmations.
        confirmed = min(len(entry.confirmations) - 1, expected)
        fraction = math.log(confirmed + 1) / math.log(expected + 1)
        timeout = max(entry.suspect_min,
                      entry.suspect_max - (entry.suspect_max - entry.suspect_min) * fraction)
        entry.suspect_deadline = min(entry.suspect_deadline, entry.suspect_start + timeout)

    def _declare_dead(self, entry: _Entry, now: float) -> None:
        entry.state = DEAD
        entry.by = self.name
        entry.since = now
        entry.suspect_deadline = math.inf
        self.counters["deaths"] += 1
        self._emit(Failed, entry)
        self._enqueue(entry)

    def _heard_from(self, sender: str, sender_epoch: int | None, body: dict[str, Any],
                    now: float) -> None:
        """A direct message from ``sender``: a newer epoch replaces its old life now."""
        entry = self._members.get(sender)
        if entry is not None and sender_epoch is not None and sender_epoch < entry.epoch:
            return  # an old life's late packet
        if entry is not None and (sender_epoch is None or sender_epoch == entry.epoch):
            entry.last_heard = now
            if (entry.state == DEAD and entry.addresses
                    and now - entry.told_dead >= self.config.probe_interval):
                # It talks, so it lives: tell it what we think, so it refutes now rather
                # than at the next sync.
                entry.told_dead = now
                self._outbox.append(Outgoing(entry.addresses[0], GOSSIP,
                                             {"updates": [entry.update()]}))
            return
        if sender_epoch is None:
            return
        reply_to = body.get("reply_to")
        addresses = (reply_to,) if isinstance(reply_to, str) else (
            entry.addresses if entry is not None else ())
        if not addresses:
            return  # learnt from its updates instead
        self._new_life(sender, sender_epoch, 0, addresses=addresses, meta={}, now=now)
        self._members[sender].last_heard = now

    def _new_life(self, name: str, epoch: int, incarnation: int, *, addresses: tuple[str, ...],
                  meta: dict[str, str], now: float, state: str = ALIVE) -> _Entry:
        old = self._members.get(name)
        if old is not None and old.up:
            self.counters["restarts"] += 1
            old.state = DEAD
            old.suspect_deadline = math.inf
            self._emit(Failed, old)
        entry = _Entry(name, epoch, incarnation, state, addresses=addresses, meta=meta, now=now)
        if old is not None:
            entry.last_heard = old.last_heard
        self._members[name] = entry
        if state == ALIVE:
            self.counters["joins"] += 1
            self._emit(Joined, entry)
            self._insert_probe_target(name)
            self._joined = True
            self._next_join = math.inf
        self._enqueue(entry)
        return entry

    def _insert_probe_target(self, name: str) -> None:
        # At a random place of the rest of this round (memberlist does the same).
        position = self.rng.randint(self._probe_index, len(self._probe_order))
        self._probe_order.insert(position, name)

    def _merge(self, raw_updates: list[Any], now: float) -> None:
        for raw in raw_updates:
            update = _parse_update(raw)
            if update is None:
                self.counters["updates_malformed"] += 1
                continue
            self.counters["updates_received"] += 1
            self._apply(update, now)

    def _apply(self, update: dict[str, Any], now: float) -> None:
        name, state = update["name"], update["state"]
        epoch, incarnation = update["epoch"], update["incarnation"]
        if name == self.name:
            self._about_me(update, now)
            return
        entry = self._members.get(name)
        if entry is None or epoch > entry.epoch:
            if state in (ALIVE, SUSPECT):
                new = self._new_life(name, epoch, incarnation, addresses=update["addresses"],
                                     meta=update["meta"], now=now)
                if state == SUSPECT:
                    self._suspect(new, incarnation, update["by"] or name, now)
            elif entry is not None and entry.up:
                # A newer life already dead or gone: the old one ends (Failed), the new one
                # is recorded without a Joined.
                self._new_life(name, epoch, incarnation, addresses=entry.addresses,
                               meta=entry.meta, now=now, state=state)
            else:
                # A death or leave of a life we never saw up: recorded, so that late alive
                # claims of that life are refused; nothing to tell the user.
                self._members[name] = _Entry(
                    name, epoch, incarnation, state, now=now, meta={},
                    addresses=entry.addresses if entry is not None else ())
            return
        if epoch < entry.epoch:
            return  # about an old life
        if incarnation < entry.incarnation:
            return
        newer = incarnation > entry.incarnation
        if state == ALIVE:
            if not newer:
                return
            was = entry.state
            changed = (update["addresses"] != entry.addresses or update["meta"] != entry.meta)
            entry.incarnation = incarnation
            entry.addresses = update["addresses"] or entry.addresses
            entry.meta = update["meta"]
            entry.by = ""
            if was == LEFT:
                return  # a leave is final for its life
            if was != ALIVE:
                entry.state = ALIVE
                entry.since = now
                entry.suspect_deadline = math.inf
                if was == SUSPECT:
                    self.counters["false_suspicions_refuted"] += 1
                self._emit(Alive, entry)
                self._insert_probe_target(name)
            elif changed:
                self._emit(Updated, entry)
            self._enqueue(entry)
        elif state == SUSPECT:
            if entry.state == SUSPECT and not newer:
                self._confirm(entry, update["by"] or "?")
            elif entry.state == ALIVE or (entry.state == SUSPECT and newer):
                self._suspect(entry, incarnation, update["by"] or "?", now)
        elif state == DEAD:
            if entry.up or (entry.state == DEAD and newer):
                entry.incarnation = incarnation
                entry.by = update["by"]
                if entry.up:
                    entry.state = DEAD
                    entry.since = now
                    entry.suspect_deadline = math.inf
                    self._emit(Failed, entry)
                self._enqueue(entry)
        elif state == LEFT and entry.state != LEFT:
            entry.state = LEFT
            entry.incarnation = incarnation
            entry.since = now
            entry.suspect_deadline = math.inf
            self.counters["leaves"] += 1
            self._emit(Left, entry)
            self._enqueue(entry)

    def _about_me(self, update: dict[str, Any], now: float) -> None:
        """An update about this member: refute any doubt of this life."""
        me = self._me
        if update["epoch"] != me.epoch or self._leaving:
            return  # a past life of this name (or ours is over anyway)
        if update["state"] == ALIVE or update["incarnation"] < me.incarnation:
            return
        # Suspect, dead or left at our incarnation or above: claim a higher one.
        me.incarnation = update["incarnation"] + 1
        self.counters["refutations"] += 1
        self._health(+1)
        self._enqueue(me)
        if self.config.refute_directly:
            # Gossip alone may arrive after some member's suspicion timer: tell the accuser
            # and a bounded number of others now.
            others = [entry for entry in self._members.values()
                      if entry.up and entry is not me and entry.addresses
                      and entry.name != update["by"]]
            chosen = self.rng.sample(others, min(self.config.refute_fanout, len(others)))
            accuser = self._members.get(update["by"])
            if accuser is not None and accuser is not me and accuser.addresses:
                chosen.append(accuser)
            refutation = me.update()
            for entry in chosen:
                self._outbox.append(Outgoing(entry.addresses[0], GOSSIP,
                                             {"updates": [refutation]}))

    # -- gossip --------------------------------------------------------------------------------

    def _retransmit_limit(self) -> int:
        members = sum(1 for entry in self._members.values() if entry.up)
        return self.config.retransmit_mult * max(1, math.ceil(math.log10(members + 1)))

    def _enqueue(self, entry: _Entry, *, by: str | None = None) -> None:
        self._queue_order += 1
        update = entry.update()
        if by is not None:
            update["by"] = by
        self._queue[entry.name] = _Queued(update, 0, self._queue_order)

    def _take_updates(self) -> list[dict[str, Any]]:
        if not self._queue:
            return []
        limit = self._retransmit_limit()
        # Least sent first, newest first among equals (memberlist's TransmitLimitedQueue).
        chosen = sorted(self._queue.values(), key=lambda q: (q.transmits, -q.order))
        chosen = chosen[:self.config.max_updates]
        for queued in chosen:
            queued.transmits += 1
            if queued.transmits >= limit:
                del self._queue[queued.update["name"]]
        return [queued.update for queued in chosen]

    def _send(self, address: str, kind: str, body: dict[str, Any]) -> None:
        if kind != SYNC:
            updates = self._take_updates()
            if updates:
                body["updates"] = [*body.get("updates", ()), *updates]
        self._outbox.append(Outgoing(address, kind, body))

    def _gossip_round(self, now: float) -> None:
        if not self._queue:
            return
        config = self.config
        if self.group_address is not None:
            # One multicast datagram reaches every member of the group.
            updates = self._take_updates()
            self.counters["gossip_sent"] += 1
            self._outbox.append(Outgoing(self.group_address, GOSSIP, {"updates": updates}))
            return
        candidates = [entry for entry in self._members.values()
                      if entry is not self._me and entry.addresses
                      and (entry.up or (entry.state == DEAD
                                        and now - entry.since < config.gossip_to_the_dead))]
        for entry in self.rng.sample(candidates, min(config.gossip_nodes, len(candidates))):
            updates = self._take_updates()
            if not updates:
                break
            self.counters["gossip_sent"] += 1
            self._outbox.append(Outgoing(entry.addresses[0], GOSSIP, {"updates": updates}))

    def _push_pull_interval(self) -> float:
        # memberlist's pushPullScale: slower beyond 32 members, so the total stays bounded.
        members = sum(1 for entry in self._members.values() if entry.up)
        interval = self.config.push_pull_interval
        if members <= 32:
            return interval
        return interval * (math.ceil(math.log2(members) - math.log2(32)) + 1)

    def _send_sync(self, address: str, *, reply: bool) -> None:
        self.counters["syncs_sent"] += 1
        members = [entry.update() for entry in self._members.values()]
        self._outbox.append(Outgoing(address, SYNC, {
            "members": members, "reply": reply, "reply_to": self.address}))

    def _push_pull(self, now: float) -> None:
        others = [entry for entry in self._members.values()
                  if entry.state == ALIVE and entry is not self._me and entry.addresses]
        if others:
            self._send_sync(self.rng.choice(others).addresses[0], reply=True)

    def _reconnect(self, now: float) -> None:
        """One sync with a dead member or a seed that is not a member up: a partition heals,
        a restarted seed comes back."""
        up_addresses = {entry.addresses[0] for entry in self._members.values()
                        if entry.up and entry.addresses}
        candidates = [entry.addresses[0] for entry in self._members.values()
                      if entry.state == DEAD and entry.addresses]
        candidates += [seed for seed in self.seeds if seed not in up_addresses]
        if candidates:
            self._send_sync(self.rng.choice(sorted(set(candidates))), reply=True)

    def _join(self, now: float) -> None:
        """Sync with every seed; again every ``probe_interval * 2`` until someone answers."""
        if self._joined:
            self._next_join = math.inf
            return
        for seed in self.seeds:
            self._send_sync(seed, reply=True)
        self._next_join = now + 2 * self.config.probe_interval

    def _reap(self, now: float) -> None:
        config = self.config
        for name, entry in list(self._members.items()):
            if entry is self._me:
                continue
            limit = (config.dead_reap if entry.state == DEAD
                     else config.left_reap if entry.state == LEFT else math.inf)
            if now - entry.since > limit:
                del self._members[name]

    def _address_of(self, name: str) -> str | None:
        entry = self._members.get(name)
        return entry.addresses[0] if entry is not None and entry.addresses else None

    def _emit(self, kind: type[MembershipEvent], entry: _Entry) -> None:
        self._view += 1
        self._events.append(kind(self._view, entry.snapshot()))
