"""The membership state machine without I/O (``spec/membership.md``): messages and time in,
messages, events and wake-ups out. A discrete-event simulation (``tests/membership_sim.py``)
drives many of them for the timing rules."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from clusterrpc.components.membership.protocol import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    Alive,
    Failed,
    Joined,
    Left,
    MembershipConfig,
    MembershipProtocol,
    Suspected,
    Updated,
    check_meta,
)
from clusterrpc.errors import ConfigurationError
from tests.membership_sim import Simulation

EPOCH = 1_000


def member(name: str = "a", *, seeds: tuple[str, ...] = (), **config: Any) -> MembershipProtocol:
    protocol = MembershipProtocol(name=name, epoch=EPOCH, address=f"udp://{name}:1",
                                  config=MembershipConfig(**config), rng=random.Random(1),
                                  seeds=seeds)
    protocol.start(0.0)
    protocol.events_happened()
    protocol.messages_to_send()
    return protocol


def alive(name: str, incarnation: int = 0, epoch: int = EPOCH, **extra: Any) -> dict[str, Any]:
    return {"name": name, "state": ALIVE, "incarnation": incarnation, "epoch": epoch,
            "addresses": [f"udp://{name}:1"], "meta": {}, **extra}


def claim(name: str, state: str, incarnation: int = 0, epoch: int = EPOCH,
          by: str = "z") -> dict[str, Any]:
    return {"name": name, "state": state, "incarnation": incarnation, "epoch": epoch, "by": by}


def gossip(protocol: MembershipProtocol, *updates: dict[str, Any], sender: str = "z",
           now: float = 1.0) -> list[type]:
    protocol.receive("gossip", {"updates": list(updates)}, sender=sender, sender_epoch=None,
                     now=now)
    return [type(event) for event in protocol.events_happened()]


# -- configuration -------------------------------------------------------------------------------


def test_defaults_are_memberlists_lan_defaults() -> None:
    config = MembershipConfig()
    assert (config.probe_interval, config.probe_timeout, config.indirect_checks) == (1.0, 0.5, 3)
    assert (config.suspicion_mult, config.suspicion_max_timeout_mult) == (4, 6)
    assert (config.gossip_interval, config.gossip_nodes, config.retransmit_mult) == (0.2, 3, 4)
    assert config.push_pull_interval == 30.0


@pytest.mark.parametrize(("field", "value", "says"), [
    ("probe_interval", 0, "positive"),
    ("probe_timeout", 2.0, "shorter than probe_interval"),
    ("indirect_checks", -1, "int >= 0"),
    ("suspicion_mult", 0, "int >= 1"),
    ("lag_threshold", float("inf"), "positive"),
])
def test_bad_configuration_says_what_is_wrong(field: str, value: object, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        MembershipConfig(**{field: value})  # type: ignore[arg-type]


def test_metadata_is_small_and_strings_only() -> None:
    assert check_meta({"role": "db"}) == {"role": "db"}
    with pytest.raises(ConfigurationError, match="strings"):
        check_meta({"port": 5432})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="512 bytes"):
        check_meta({"blob": "x" * 600})
    with pytest.raises(ConfigurationError, match="16 items"):
        check_meta({str(i): "" for i in range(17)})


# -- the update rules ----------------------------------------------------------------------------


def test_a_member_joins_is_suspected_refutes_and_dies() -> None:
    protocol = member()
    assert gossip(protocol, alive("b")) == [Joined]
    assert gossip(protocol, claim("b", SUSPECT)) == [Suspected]
    assert gossip(protocol, alive("b", 0)) == []           # not newer than the suspicion
    assert gossip(protocol, alive("b", 1)) == [Alive]      # the refutation
    assert protocol.counters["false_suspicions_refuted"] == 1
    assert gossip(protocol, claim("b", SUSPECT, 0)) == []  # about an older incarnation
    assert gossip(protocol, claim("b", DEAD, 1)) == [Failed]
    assert gossip(protocol, alive("b", 1)) == []           # death is final for incarnation 1
    assert gossip(protocol, alive("b", 2)) == [Alive]      # a partition healed: refuted
    assert gossip(protocol, claim("b", LEFT, 3)) == [Left]
    assert gossip(protocol, alive("b", 9)) == []           # a leave is final for its life
    assert protocol.view()["b"].state == LEFT


def test_a_newer_epoch_replaces_the_old_life_at_once_from_a_new_address() -> None:
    protocol = member()
    gossip(protocol, alive("b", 5))
    moved = alive("b", 0, epoch=EPOCH + 1)
    moved["addresses"] = ["udp://b-new:1"]
    assert gossip(protocol, moved) == [Failed, Joined]
    view = protocol.view()["b"]
    assert (view.epoch, view.incarnation, view.address) == (EPOCH + 1, 0, "udp://b-new:1")
    assert gossip(protocol, alive("b", 99, epoch=EPOCH)) == []  # the old life is over
    assert protocol.counters["restarts"] == 1


def test_a_packet_from_a_new_epoch_is_a_new_life_even_without_updates() -> None:
    protocol = member()
    gossip(protocol, alive("b"))
    protocol.receive("ping", {"seq": 1, "target": "a", "reply_to": "udp://b2:1"}, sender="b",
                     sender_epoch=EPOCH + 7, now=2.0)
    assert [type(e) for e in protocol.events_happened()] == [Failed, Joined]
    assert protocol.view()["b"].address == "udp://b2:1"
    out = protocol.messages_to_send()
    assert [(m.address, m.kind, m.body["seq"]) for m in out] == [("udp://b2:1", "ack", 1)]


def test_doubt_about_oneself_is_refuted_with_a_higher_incarnation() -> None:
    protocol = member()
    gossip(protocol, alive("b"), alive("c"))
    protocol.messages_to_send()
    gossip(protocol, claim("a", SUSPECT, 0, by="b"))
    assert protocol.incarnation == 1
    assert protocol.counters["refutations"] == 1
    sent = protocol.messages_to_send()
    refuted = {m.address for m in sent
               if any(u["name"] == "a" and u["incarnation"] == 1 for u in m.body["updates"])}
    assert refuted == {"udp://b:1", "udp://c:1"}  # the accuser and the others, at once
    gossip(protocol, claim("a", DEAD, 0))            # an older doubt: nothing to do
    assert protocol.incarnation == 1
    gossip(protocol, claim("a", SUSPECT, 0, epoch=EPOCH - 1))  # a past life of this name
    assert protocol.incarnation == 1


def test_suspicion_timeout_shrinks_with_independent_confirmations() -> None:
    protocol = member()
    for name in "bcdefgh":
        gossip(protocol, alive(name))
    members = 8
    minimum = 4 * max(1.0, math.log10(members))  # memberlist's nodeScale, at least 1
    maximum = 6 * minimum
    gossip(protocol, claim("b", SUSPECT, by="c"), now=10.0)
    assert protocol.next_wakeup() <= 10.0 + maximum
    assert protocol.suspicion_deadline("b") == pytest.approx(10.0 + maximum)
    gossip(protocol, claim("b", SUSPECT, by="d"), now=11.0)  # one confirmation of k = 2
    expected = maximum - (maximum - minimum) * math.log(2) / math.log(3)
    assert protocol.suspicion_deadline("b") == pytest.approx(10.0 + expected)
    gossip(protocol, claim("b", SUSPECT, by="d"), now=11.5)  # the same confirmer: no change
    assert protocol.suspicion_deadline("b") == pytest.approx(10.0 + expected)
    gossip(protocol, claim("b", SUSPECT, by="e"), now=12.0)
    assert protocol.suspicion_deadline("b") == pytest.approx(10.0 + minimum)
    protocol.tick(10.0 + minimum)
    assert protocol.view()["b"].state == DEAD


def test_malformed_updates_and_messages_are_counted_and_ignored() -> None:
    protocol = member()
    protocol.receive("gossip", {"updates": [
        {"name": "b"}, {"name": "c", "state": "zombie", "incarnation": 0, "epoch": 1}, "text",
        alive("d", -1)]}, sender="z", sender_epoch=None, now=1.0)
    assert protocol.counters["updates_malformed"] == 4
    protocol.receive("unknown", {}, sender="z", sender_epoch=None, now=1.0)
    protocol.receive("ping", "not a struct", sender="z", sender_epoch=None, now=1.0)
    assert protocol.counters["messages_ignored"] == 2
    assert set(protocol.view()) == {"a"}


# -- probing and local health --------------------------------------------------------------------


def run_timers(protocol: MembershipProtocol, start: float, seconds: float = 1.5) -> list[Any]:
    """Run the protocol's timers from ``start`` for ``seconds``, nobody answering; return what
    it sent."""
    sent = []
    now = start
    for _ in range(1000):
        now = max(now, protocol.next_wakeup())
        if now > start + seconds:
            break
        protocol.tick(now)
        sent += protocol.messages_to_send()
    return sent


def test_a_silent_target_is_probed_indirectly_then_suspected() -> None:
    protocol = member()
    for name in "bcde":
        gossip(protocol, alive(name))
    sent = run_timers(protocol, 1.0)
    kinds = [m.kind for m in sent if m.kind != "gossip"]
    # A ping; at the probe timeout a second one with three indirect probes.
    assert kinds[:5] == ["ping", "ping", "ping_req", "ping_req", "ping_req"]
    assert protocol.counters["suspicions"] >= 1
    assert any(state == SUSPECT for state in (m.state for m in protocol.view().values()))


def test_while_its_loop_lags_a_member_suspects_nobody() -> None:
    protocol = member()
    for name in "bcde":
        gossip(protocol, alive(name))
    protocol.observe_lag(2.0, 1.0)  # woke 2 s late: a stall
    assert protocol.in_doubt(1.0)
    run_timers(protocol, 1.0, seconds=4.0)  # the doubt lasts max(2 probe intervals, 2 lags)
    assert protocol.counters["suspicions"] == 0
    assert protocol.counters["suspicions_withheld"] >= 1


def test_without_local_health_the_same_member_suspects() -> None:
    protocol = member(local_health=False, refute_directly=False, direct_retry=False)
    for name in "bcde":
        gossip(protocol, alive(name))
    protocol.observe_lag(2.0, 1.0)
    run_timers(protocol, 1.0, seconds=4.0)
    assert protocol.counters["suspicions"] >= 1


def test_lag_moves_suspicion_deadlines_by_the_time_it_could_not_listen() -> None:
    protocol = member()
    gossip(protocol, alive("b"), alive("c"))
    gossip(protocol, claim("b", SUSPECT), now=5.0)
    before = protocol.suspicion_deadline("b")
    assert before is not None
    protocol.observe_lag(1.5, 6.0)
    assert protocol.suspicion_deadline("b") == pytest.approx(before + 1.5)


def test_helpers_ping_for_the_requester_and_nack_when_they_cannot() -> None:
    helper = member("h")
    helper.receive("ping_req", {"seq": 41, "target": "t", "address": "udp://t:1"}, sender="r",
                   sender_epoch=EPOCH, now=1.0)
    # r is unknown to h but spoke with a reply-less message: h learns its address elsewhere.
    pings = helper.messages_to_send()
    assert [(m.address, m.kind) for m in pings] == [("udp://t:1", "ping")]
    gossip(helper, alive("r"), now=1.1)
    nacks = [m for m in run_timers(helper, 1.1, seconds=0.5) if m.kind == "nack"]
    assert [(m.address, m.body["seq"]) for m in nacks] == [("udp://r:1", 41)]


def test_metadata_changes_are_a_new_incarnation_and_an_update_event() -> None:
    a, b = member("a"), member("b")
    gossip(b, alive("a"))
    gossip(a, alive("b"))
    a.events_happened()
    a.set_meta({"role": "db"}, 2.0)
    assert [type(e) for e in a.events_happened()] == [Updated]
    out = run_timers(a, 2.0)  # the update rides on the next messages
    carried = [u for m in out for u in m.body.get("updates", []) if u["name"] == "a"]
    assert carried
    assert carried[0]["meta"] == {"role": "db"}
    assert carried[0]["incarnation"] == 1
    assert gossip(b, carried[0]) == [Updated]
    assert b.view()["a"].meta == {"role": "db"}


# -- the simulation: many members, seeded --------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_simulated_crash_is_detected_and_nobody_else_dies(seed: int) -> None:
    simulation = Simulation(16, seed=seed, loss=0.05, duplicate=0.05, reorder=0.1)
    simulation.run_until(300.0)
    simulation.crash("m3")
    start = simulation.now
    while not all(state == DEAD for state in simulation.states("m3").values()):
        assert simulation.now - start < 40.0
        simulation.run_until(simulation.now + 0.1)
    for running in simulation.running():
        dead = {name for name, m in running.protocol.view().items() if m.state == DEAD}
        assert dead == {"m3"}
