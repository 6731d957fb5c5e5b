"""Sealing and opening packets: authentication, replay, rotation, counters (sans-I/O)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterrpc.codecs import CallMessage, FaultMessage, ReplyMessage
from clusterrpc.codecs.xmlrpc import XmlRpcCodec
from clusterrpc.envelope import COUNTER_NAMES, PacketOpener, PacketSealer
from clusterrpc.errors import (
    AuthenticationError,
    BadAuthenticatorError,
    ConfigurationError,
    DecodeError,
    EncodeError,
    InsecurePacketError,
    PacketError,
    ReplayError,
    StaleEpochError,
    TooOldError,
    UnknownKeyError,
    UnknownSenderError,
    WrongClusterError,
)
from clusterrpc.keyring import Keyring, TrustedKey
from clusterrpc.packet import Flags, parse_header

CLUSTER = "ORG/UK/EDIN"
NOW = 1_800_000_000.0
EPOCH = 1_799_999_000_000_000
SCHEMES = ["hmac-sha256", "blake2b", "ed25519", "secretbox"]
BODY = XmlRpcCodec().encode_call("election.vote", [{"term": 3, "candidate": "n1"}])


class CountingCodec(XmlRpcCodec):
    """The xmlrpc codec, counting every decode: proves no codec sees unauthenticated bytes."""

    decodes = 0

    def decode_call(self, data: bytes) -> CallMessage:
        CountingCodec.decodes += 1
        return super().decode_call(data)

    def decode_response(self, data: bytes) -> ReplyMessage | FaultMessage:
        CountingCodec.decodes += 1
        return super().decode_response(data)


@dataclass
class Cluster:
    """Keyrings for nodes n1 and n2 that trust each other, for one scheme."""

    scheme: str
    rings: dict[str, Keyring] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scheme == "ed25519":
            keys = {node: Keyring.generate("ed25519", key_id=f"{node}-ed") for node in ("n1", "n2")}
            for node in ("n1", "n2"):
                other = "n2" if node == "n1" else "n1"
                ring = Keyring(node=node, keys=[keys[node]], signing_key_id=keys[node].key_id)
                peer = keys[other]
                assert peer.public is not None
                self.rings[node] = ring.with_trusted(
                    TrustedKey(node=other, key_id=peer.key_id, scheme="ed25519", public=peer.public)
                )
        else:
            shared = Keyring.generate(self.scheme, key_id="k1")
            for node in ("n1", "n2"):
                self.rings[node] = Keyring(node=node, keys=[shared], signing_key_id="k1")

    def sealer(self, node: str = "n1", *, epoch: int = EPOCH, **kwargs: object) -> PacketSealer:
        return PacketSealer(
            cluster=CLUSTER, node=node, epoch=epoch, keyring=self.rings[node], **kwargs  # type: ignore[arg-type]
        )

    def opener(self, node: str = "n2", **kwargs: object) -> PacketOpener:
        return PacketOpener(cluster=CLUSTER, keyring=self.rings[node], **kwargs)  # type: ignore[arg-type]


def seal(sealer: PacketSealer, body: bytes = BODY, *, now: float = NOW) -> bytes:
    return sealer.seal(flags=Flags.CALL, codec_id=1, call_id=1, body=body, now=now)


@pytest.fixture(params=SCHEMES)
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return Cluster(request.param)


def test_round_trip_of_every_message_kind(cluster: Cluster) -> None:
    sealer, opener, codec = cluster.sealer(), cluster.opener(), XmlRpcCodec()
    messages: Sequence[tuple[CallMessage | ReplyMessage | FaultMessage, dict[str, bool]]] = [
        (CallMessage("election.vote", (3, "n1")), {}),
        (CallMessage("election.vote", (3, "n1")), {"oneway": True}),
        (CallMessage("election.status", ()), {"multicast": True}),
        (ReplyMessage({"leader": "n1"}), {}),
        (FaultMessage(-32601, "nope"), {}),
    ]
    for call_id, (message, options) in enumerate(messages, start=1):
        packet = sealer.seal_message(message, codec=codec, call_id=call_id, now=NOW, **options)
        header, received = opener.receive(packet, now=NOW)
        assert received == message
        assert (header.sender, header.call_id, header.sequence) == ("n1", call_id, call_id)
        assert header.is_oneway == options.get("oneway", False)
        assert header.is_multicast == options.get("multicast", False)
    assert opener.counters["accepted"] == len(messages)


def test_secretbox_encrypts_the_body() -> None:
    cluster = Cluster("secretbox")
    packet = seal(cluster.sealer())
    assert b"election.vote" not in packet
    header, end = parse_header(packet)
    assert header.flags & Flags.ENCRYPTED
    assert b"ORG/UK/EDIN" in packet[:end]  # the header stays readable
    assert cluster.opener().open(packet, now=NOW).body == BODY


def test_flipping_any_bit_is_refused(cluster: Cluster) -> None:
    packet = seal(cluster.sealer())
    opener = cluster.opener()
    for position in range(len(packet) * 8):
        damaged = bytearray(packet)
        damaged[position // 8] ^= 1 << (position % 8)
        with pytest.raises(AuthenticationError):
            opener.open(bytes(damaged), now=NOW)
    assert opener.counters["accepted"] == 0
    # None of the refusals moved the replay window: the genuine packet still gets in.
    opener.open(packet, now=NOW)


def test_byte_identical_replay_is_refused(cluster: Cluster) -> None:
    packet = seal(cluster.sealer())
    opener = cluster.opener()
    opener.open(packet, now=NOW)
    with pytest.raises(ReplayError):
        opener.open(packet, now=NOW + 1)
    assert opener.counters["refused_replay"] == 1


def test_reordering_within_the_window_is_accepted(cluster: Cluster) -> None:
    sealer, opener = cluster.sealer(), cluster.opener(replay_window=64)
    packets = [seal(sealer) for _ in range(64)]
    for packet in reversed(packets):
        opener.open(packet, now=NOW)
    assert opener.counters["accepted"] == 64


def test_packet_older_than_the_window_is_refused(cluster: Cluster) -> None:
    sealer, opener = cluster.sealer(), cluster.opener(replay_window=32)
    late = seal(sealer)
    for _ in range(32):
        opener.open(seal(sealer), now=NOW)
    with pytest.raises(TooOldError):
        opener.open(late, now=NOW)
    assert opener.counters["refused_too_old"] == 1


def test_forged_far_future_sequence_does_not_shift_the_window() -> None:
    cluster = Cluster("hmac-sha256")
    sealer, opener = cluster.sealer(), cluster.opener(replay_window=16)
    early = [seal(sealer) for _ in range(3)]
    # An attacker without the key: a packet with sequence 2**63 whose MAC is made with another key.
    forger_ring = Keyring(node="n1", keys=[Keyring.generate("hmac-sha256", key_id="k1")],
                          signing_key_id="k1")
    forger = PacketSealer(cluster=CLUSTER, node="n1", epoch=EPOCH, keyring=forger_ring)
    forger._sequence = 2**63  # what a forger would pick
    with pytest.raises(BadAuthenticatorError):
        opener.open(seal(forger), now=NOW)
    for packet in early:  # legitimate packets after it are still accepted
        opener.open(packet, now=NOW)
    assert opener.counters["accepted"] == 3


def test_removed_key_is_refused() -> None:
    cluster = Cluster("hmac-sha256")
    packet = seal(cluster.sealer())
    new_key = Keyring.generate("hmac-sha256", key_id="k2")
    receiver = cluster.rings["n2"].with_key(new_key, sign=True).without_key("k1")
    opener = PacketOpener(cluster=CLUSTER, keyring=receiver)
    with pytest.raises(UnknownKeyError):
        opener.open(packet, now=NOW)
    assert opener.counters["refused_unknown_key"] == 1


@pytest.mark.parametrize("scheme", ["hmac-sha256", "blake2b", "secretbox"])
def test_rotation_under_a_steady_stream_loses_nothing(scheme: str) -> None:
    """Install the new key everywhere, switch the signers one by one, remove the old key,
    while both nodes keep sending; packets sealed before a step are opened after it."""
    cluster = Cluster(scheme)
    sealers = {node: cluster.sealer(node) for node in ("n1", "n2")}
    openers = {node: cluster.opener(node) for node in ("n1", "n2")}
    rings = dict(cluster.rings)
    in_flight: list[tuple[str, bytes]] = []
    sent = 0

    def traffic(rounds: int = 20) -> None:
        nonlocal sent
        for _ in range(rounds):
            for node, sealer in sealers.items():
                receiver = "n2" if node == "n1" else "n1"
                in_flight.append((receiver, seal(sealer)))
                sent += 1
            # Deliver all but the newest few: packets cross the steps below.
            while len(in_flight) > 6:
                receiver, packet = in_flight.pop(0)
                openers[receiver].open(packet, now=NOW)

    new_key = Keyring.generate(scheme, key_id="k2")
    steps: list[Callable[[str], Keyring]] = [
        lambda node: rings[node].with_key(new_key),  # 1. install everywhere
        lambda node: rings[node].with_signing_key("k2"),  # 2. switch the signing key
        lambda node: rings[node].without_key("k1"),  # 3. remove the old key
    ]
    traffic()
    for step in steps:
        for node in ("n1", "n2"):
            rings[node] = step(node)
            if step is steps[2]:
                # Removal comes only once nothing signed with k1 can still be in flight.
                while in_flight:
                    receiver, packet = in_flight.pop(0)
                    openers[receiver].open(packet, now=NOW)
            sealers[node].use_keyring(rings[node])
            openers[node].use_keyring(rings[node])
            traffic(5)
    traffic()
    while in_flight:
        receiver, packet = in_flight.pop(0)
        openers[receiver].open(packet, now=NOW)
    accepted = sum(opener.counters["accepted"] for opener in openers.values())
    assert accepted == sent
    assert all(sum(o.counters.values()) == o.counters["accepted"] for o in openers.values())


def test_other_cluster_is_refused(cluster: Cluster) -> None:
    sealer = PacketSealer(cluster="ORG/FR/PARIS", node="n1", epoch=EPOCH,
                          keyring=cluster.rings["n1"])
    opener = cluster.opener()
    with pytest.raises(WrongClusterError):
        opener.open(seal(sealer), now=NOW)
    assert opener.counters["refused_wrong_cluster"] == 1


def test_ed25519_node_cannot_speak_as_another() -> None:
    cluster = Cluster("ed25519")
    # n2 signs with its own key but claims to be n1; the receiver (n2's peer n1 trusts n2 only
    # for n2's name, and a third receiver trusts both).
    both = cluster.rings["n1"].with_trusted(
        TrustedKey(node="n1", key_id="n1-ed", scheme="ed25519",
                   public=cluster.rings["n1"].keys["n1-ed"].public or b"")
    )
    receiver = PacketOpener(cluster=CLUSTER, keyring=Keyring(
        node="observer", trusted=list(both.trusted.values())
    ))
    with pytest.raises(ConfigurationError, match="belongs to node 'n2'"):
        PacketSealer(cluster=CLUSTER, node="n1", epoch=EPOCH, keyring=cluster.rings["n2"])
    # A node that bypasses that check (a hostile node's own code) is still refused by receivers.
    n2_key = cluster.rings["n2"].keys["n2-ed"]
    hostile = Keyring(node="n1", keys=[n2_key], signing_key_id="n2-ed")
    impostor = PacketSealer(cluster=CLUSTER, node="n1", epoch=EPOCH, keyring=hostile)
    with pytest.raises((UnknownKeyError, BadAuthenticatorError)):
        receiver.open(seal(impostor), now=NOW)
    honest = PacketSealer(cluster=CLUSTER, node="n2", epoch=EPOCH, keyring=cluster.rings["n2"])
    receiver.open(seal(honest), now=NOW)
    stranger = PacketSealer(cluster=CLUSTER, node="n3", epoch=EPOCH,
                            keyring=Keyring(node="n3", keys=[n2_key], signing_key_id="n2-ed"))
    with pytest.raises(UnknownSenderError):
        receiver.open(seal(stranger), now=NOW)


def test_restarted_sender_is_accepted_and_its_old_epoch_refused(cluster: Cluster) -> None:
    opener = cluster.opener()
    old_run = cluster.sealer(epoch=EPOCH)
    stale = seal(old_run)
    opener.open(seal(old_run), now=NOW)
    new_run = cluster.sealer(epoch=EPOCH + 10_000_000)
    opener.open(seal(new_run), now=NOW)
    with pytest.raises(StaleEpochError):
        opener.open(stale, now=NOW)


def test_captured_packets_cannot_be_replayed_to_a_restarted_receiver(cluster: Cluster) -> None:
    captured = seal(cluster.sealer(), now=NOW)
    cluster.opener().open(captured, now=NOW)
    restarted = cluster.opener()  # forgot everything
    with pytest.raises(StaleEpochError):
        restarted.open(captured, now=NOW + 60)


def test_insecure_packets_need_explicit_permission() -> None:
    with pytest.raises(ConfigurationError, match="insecure=True"):
        PacketSealer(cluster=CLUSTER, node="n1", epoch=EPOCH, keyring=None)
    sealer = PacketSealer(cluster=CLUSTER, node="n1", epoch=EPOCH, keyring=None, insecure=True)
    packet = seal(sealer)
    strict = Cluster("hmac-sha256").opener()
    with pytest.raises(InsecurePacketError):
        strict.open(packet, now=NOW)
    assert strict.counters["refused_insecure"] == 1
    lax = PacketOpener(cluster=CLUSTER, keyring=None, allow_insecure=True)
    assert lax.open(packet, now=NOW).body == BODY


def test_oversized_packets_are_refused_both_ways(cluster: Cluster) -> None:
    sealer = cluster.sealer(max_packet=1000)
    with pytest.raises(EncodeError, match="max_packet"):
        seal(sealer, b"x" * 1000)
    big = seal(cluster.sealer(), b"x" * 1000)
    opener = cluster.opener(max_packet=1000)
    with pytest.raises(PacketError, match="max_packet"):
        opener.open(big, now=NOW)
    assert opener.counters["refused_malformed"] == 1


def test_unknown_codec_id_is_refused_before_verification() -> None:
    cluster = Cluster("hmac-sha256")
    packet = cluster.sealer().seal(flags=Flags.CALL, codec_id=99, call_id=1, body=BODY, now=NOW)
    with pytest.raises(PacketError, match="unknown codec id 99"):
        cluster.opener().open(packet, now=NOW)


def test_body_of_the_wrong_kind_is_a_decode_error() -> None:
    cluster = Cluster("hmac-sha256")
    fault_body = XmlRpcCodec().encode_fault(1, "x")
    packet = cluster.sealer().seal(flags=Flags.REPLY, codec_id=1, call_id=1, body=fault_body,
                                   now=NOW)
    with pytest.raises(DecodeError, match="differs from the header"):
        cluster.opener().receive(packet, now=NOW)


def test_counters_start_at_zero_and_name_every_refusal() -> None:
    counters = Cluster("blake2b").opener().counters
    assert dict(counters) == dict.fromkeys(COUNTER_NAMES, 0)
    for error in (PacketError, WrongClusterError, UnknownKeyError, UnknownSenderError,
                  InsecurePacketError, BadAuthenticatorError, ReplayError, TooOldError,
                  StaleEpochError):
        assert error.counter in COUNTER_NAMES


# -- no codec before authentication ------------------------------------------------------------


def _counting_opener(cluster: Cluster) -> PacketOpener:
    return cluster.opener(codecs=[CountingCodec()])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_failed_authenticator_never_reaches_a_codec(scheme: str) -> None:
    cluster = Cluster(scheme)
    packet = seal(cluster.sealer())
    opener = _counting_opener(cluster)
    CountingCodec.decodes = 0
    damaged = bytearray(packet)
    damaged[len(damaged) // 2] ^= 0x40  # inside the body
    with pytest.raises(BadAuthenticatorError):
        opener.receive(bytes(damaged), now=NOW)
    assert CountingCodec.decodes == 0
    opener.receive(packet, now=NOW)
    assert CountingCodec.decodes == 1


FUZZ_CLUSTER = Cluster("hmac-sha256")
FUZZ_PACKETS = [seal(FUZZ_CLUSTER.sealer()) for _ in range(3)]


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=400))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    opener = _counting_opener(FUZZ_CLUSTER)
    CountingCodec.decodes = 0
    with pytest.raises(AuthenticationError):
        opener.receive(data, now=NOW)
    assert CountingCodec.decodes == 0


@settings(max_examples=400, deadline=None)
@given(
    packet=st.sampled_from(FUZZ_PACKETS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=4)),
                   min_size=1, max_size=4),
    truncate=st.integers(0, 500),
)
def test_fuzz_mutated_packets(packet: bytes, edits: list[tuple[int, bytes]], truncate: int) -> None:
    mutated = bytearray(packet)
    for offset, replacement in edits:
        position = offset % len(mutated)
        mutated[position : position + len(replacement)] = replacement
    if truncate % 5 == 0:
        del mutated[truncate % len(mutated):]
    opener = _counting_opener(FUZZ_CLUSTER)
    CountingCodec.decodes = 0
    try:
        opener.receive(bytes(mutated), now=NOW)
    except AuthenticationError:
        assert CountingCodec.decodes == 0
    else:  # only possible if the edits left the packet as it was
        assert bytes(mutated) == packet

