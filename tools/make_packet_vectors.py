"""Regenerate ``spec/vectors/packets/`` (run from the repository root; test keys only).

    python tools/make_packet_vectors.py

The keyring is fixed (checked in), so the packets of the deterministic schemes come out
byte-identical on every run; ``secretbox`` packets differ (random nonces) and are only ever
checked by opening. Review the diff before committing new vectors.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from clusterrpc.auth import get_scheme
from clusterrpc.codecs.xmlrpc import XmlRpcCodec
from clusterrpc.envelope import PacketSealer
from clusterrpc.keyring import Key, Keyring, TrustedKey
from clusterrpc.packet import Flags

OUT = Path("spec/vectors/packets")
CLUSTER = "ORG/UK/EDIN"
NOW = 1_800_000_000.0  # the receiver's and senders' clock for every case
EPOCH = 1_799_999_000_000_000


def _key(key_id: str, scheme: str, fill: int) -> Key:
    """A test key whose secret is a fixed byte pattern: never use such keys for real."""
    secret = bytes([fill]) * 32
    return Key(key_id=key_id, scheme=scheme, secret=secret,
               public=get_scheme(scheme).public_from_secret(secret))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    shared = [_key("hmac-1", "hmac-sha256", 1), _key("blake-1", "blake2b", 2),
              _key("box-1", "secretbox", 3)]
    n1_ed, n2_ed = _key("n1-ed", "ed25519", 4), _key("n2-ed", "ed25519", 5)
    assert n2_ed.public is not None
    receiver = Keyring(
        node="n1",
        keys=[*shared, n1_ed],
        trusted=[TrustedKey(node="n2", key_id="n2-ed", scheme="ed25519", public=n2_ed.public)],
        signing_key_id="hmac-1",
    )
    (OUT / "keyring.toml").write_text(
        "# TEST KEYS ONLY: fixed byte patterns, published in the specification.\n"
        + receiver.to_toml()
    )
    sender = Keyring(node="n2", keys=[*shared, n2_ed], signing_key_id="hmac-1")
    (OUT / "sender-keyring.toml").write_text(
        "# TEST KEYS ONLY: the sending node n2's keyring, to reseal the vectors byte for byte.\n"
        + sender.to_toml()
    )
    codec = XmlRpcCodec()
    call = codec.encode_call("election.vote", [{"term": 3, "candidate": "n2"}])
    reply = codec.encode_reply({"granted": True})

    def sealer(key: Key, node: str = "n2", cluster: str = CLUSTER, epoch: int = EPOCH,
               sequence: int = 1) -> PacketSealer:
        ring = Keyring(node=node, keys=[key], signing_key_id=key.key_id)
        sealed = PacketSealer(cluster=cluster, node=node, epoch=epoch, keyring=ring)
        sealed._sequence = sequence - 1  # vectors pin their sequence numbers
        return sealed

    cases: list[dict[str, object]] = []

    def add(name: str, packet: bytes, expected: str, *, flags: int, body: bytes, sender: str,
            epoch: int = EPOCH, sequence: int = 1, timestamp: float = NOW, call_id: int = 1,
            reseal: dict[str, object] | None = None) -> None:
        (OUT / f"{name}.bin").write_bytes(packet)
        case: dict[str, object] = {
            "name": name, "file": f"{name}.bin", "expected": expected,
            "body": base64.b64encode(body).decode(), "flags": flags, "sender": sender,
            "epoch": epoch, "sequence": sequence, "timestamp": int(timestamp * 1000),
            "call_id": call_id,
        }
        if reseal:
            case["reseal"] = reseal
        cases.append(case)

    def packet_of(key: Key, body: bytes, *, flags: int = Flags.CALL, call_id: int = 1,
                  sequence: int = 1, node: str = "n2", cluster: str = CLUSTER,
                  epoch: int = EPOCH, now: float = NOW) -> bytes:
        return sealer(key, node, cluster, epoch, sequence).seal(
            flags=flags, codec_id=1, call_id=call_id, body=body, now=now
        )

    hmac_call = packet_of(shared[0], call, call_id=7)
    add("hmac-call", hmac_call, "accepted", flags=Flags.CALL, body=call, sender="n2", call_id=7,
        reseal={"key_id": "hmac-1"})
    add("hmac-call-replayed", hmac_call, "refused_replay", flags=Flags.CALL, body=call,
        sender="n2", call_id=7)
    add("blake2b-reply", packet_of(shared[1], reply, flags=Flags.REPLY, sequence=2), "accepted",
        flags=Flags.REPLY, body=reply, sender="n2", sequence=2, reseal={"key_id": "blake-1"})
    add("ed25519-oneway-call",
        packet_of(n2_ed, call, flags=Flags.CALL | Flags.ONEWAY, sequence=3), "accepted",
        flags=Flags.CALL | Flags.ONEWAY, body=call, sender="n2", sequence=3,
        reseal={"key_id": "n2-ed"})
    add("secretbox-call", packet_of(shared[2], call, sequence=4), "accepted",
        flags=Flags.CALL | Flags.ENCRYPTED, body=call, sender="n2", sequence=4)
    add("hmac-wrong-cluster", packet_of(shared[0], call, sequence=5, cluster="ORG/FR/PARIS"),
        "refused_wrong_cluster", flags=Flags.CALL, body=call, sender="n2", sequence=5)
    flipped = bytearray(packet_of(shared[0], call, sequence=6))
    flipped[100] ^= 0x01  # inside the body: only the MAC can tell
    add("hmac-bit-flipped", bytes(flipped), "refused_bad_authenticator", flags=Flags.CALL,
        body=call, sender="n2", sequence=6)
    stranger = _key("hmac-9", "hmac-sha256", 9)
    add("hmac-unknown-key", packet_of(stranger, call, sequence=7), "refused_unknown_key",
        flags=Flags.CALL, body=call, sender="n2", sequence=7)
    add("ed25519-impostor", packet_of(n2_ed, call, node="n3", sequence=1),
        "refused_unknown_sender", flags=Flags.CALL, body=call, sender="n3")
    add("truncated", hmac_call[:-1], "refused_malformed", flags=Flags.CALL, body=call,
        sender="n2", call_id=7)
    add("stale-new-epoch", packet_of(shared[0], call, node="n4", now=NOW - 3600),
        "refused_stale_epoch", flags=Flags.CALL, body=call, sender="n4", timestamp=NOW - 3600)
    unsigned = PacketSealer(cluster=CLUSTER, node="n2", epoch=EPOCH, keyring=None, insecure=True)
    add("none-refused", unsigned.seal(flags=Flags.CALL, codec_id=1, call_id=1, body=call, now=NOW),
        "refused_insecure", flags=Flags.CALL, body=call, sender="n2")
    (OUT / "cases.json").write_text(json.dumps({
        "cluster": CLUSTER, "now": NOW, "keyring": "keyring.toml",
        "sender_keyring": "sender-keyring.toml",
        "note": "Open the cases in order with one receiver (replay state carries over).",
        "cases": cases,
    }, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
