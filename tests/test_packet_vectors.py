"""The golden packets of spec/vectors/packets/: opened in order, resealed byte for byte."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from clusterrpc.envelope import PacketOpener, PacketSealer
from clusterrpc.errors import AuthenticationError
from clusterrpc.keyring import Keyring
from tests.vectors import SPEC

FOLDER = SPEC / "vectors" / "packets"
MANIFEST = json.loads((FOLDER / "cases.json").read_text())
CASES: list[dict[str, Any]] = MANIFEST["cases"]


def _keyring(name: str) -> Keyring:
    # Keyring.load would refuse these files: git checks them out readable by all. They hold
    # published test keys, so reading the text directly is right here and nowhere else.
    return Keyring.from_toml((FOLDER / name).read_text(), source=name)


def test_cases_open_in_order_with_the_expected_outcome() -> None:
    opener = PacketOpener(cluster=MANIFEST["cluster"], keyring=_keyring(MANIFEST["keyring"]))
    for case in CASES:
        packet = (FOLDER / case["file"]).read_bytes()
        if case["expected"] == "accepted":
            received = opener.open(packet, now=MANIFEST["now"])
            header = received.header
            assert received.body == base64.b64decode(case["body"]), case["name"]
            assert (header.flags, header.sender, header.epoch, header.sequence,
                    header.timestamp, header.call_id) == (
                case["flags"], case["sender"], case["epoch"], case["sequence"],
                case["timestamp"], case["call_id"],
            ), case["name"]
        else:
            with pytest.raises(AuthenticationError) as caught:
                opener.open(packet, now=MANIFEST["now"])
            assert caught.value.counter == case["expected"], case["name"]
    expected_counts: dict[str, int] = {}
    for case in CASES:
        expected_counts[case["expected"]] = expected_counts.get(case["expected"], 0) + 1
    assert {k: v for k, v in opener.counters.items() if v} == expected_counts


@pytest.mark.parametrize("case", [c for c in CASES if "reseal" in c], ids=lambda c: c["name"])
def test_deterministic_schemes_reseal_byte_for_byte(case: dict[str, Any]) -> None:
    sender_ring = _keyring(MANIFEST["sender_keyring"]).with_signing_key(case["reseal"]["key_id"])
    sealer = PacketSealer(cluster=MANIFEST["cluster"], node=case["sender"], epoch=case["epoch"],
                          keyring=sender_ring)
    sealer._sequence = case["sequence"] - 1  # vectors pin their sequence numbers
    packet = sealer.seal(flags=case["flags"], codec_id=1, call_id=case["call_id"],
                         body=base64.b64decode(case["body"]), now=case["timestamp"] / 1000)
    assert packet == (FOLDER / case["file"]).read_bytes()
