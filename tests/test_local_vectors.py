"""The golden frames of spec/vectors/local/: rebuilt byte for byte from their inputs, and
opened and decoded as the other side of a local connection would."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from clusterrpc.cli.notation import from_notation
from clusterrpc.codecs import CallMessage, ReplyMessage
from clusterrpc.codecs.xmlrpc import XmlRpcCodec
from clusterrpc.envelope import PacketOpener
from clusterrpc.local import protocol as wire
from clusterrpc.packet import Flags
from clusterrpc.rpc.protocol import Messenger
from tests.vectors import SPEC

FOLDER = SPEC / "vectors" / "local"
MANIFEST = json.loads((FOLDER / "cases.json").read_text())
CASES: list[dict[str, Any]] = MANIFEST["cases"]


def _frame(case: dict[str, Any]) -> bytes:
    messenger = Messenger(node=case["sender"], cluster=MANIFEST["cluster"], keyring=None,
                          insecure=True, epoch=case["epoch"], clock=lambda: MANIFEST["now"])
    if case["kind"] == "reply":
        packet = messenger.seal_answer(case["call_id"], messenger.codec.codec_id,
                                       from_notation(case["value"]))
    else:
        packet = messenger.seal_call(
            case["call_id"], CallMessage(case["method"], from_notation(case["params"])),
            oneway=case["kind"] == "oneway", timeout=case["timeout"])
    return struct.pack(">I", len(packet)) + packet


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_each_frame_is_rebuilt_byte_for_byte(case: dict[str, Any]) -> None:
    assert _frame(case) == (FOLDER / case["file"]).read_bytes()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["name"])
def test_each_frame_opens_unsigned_and_means_what_the_manifest_says(case: dict[str, Any]
                                                                     ) -> None:
    data = (FOLDER / case["file"]).read_bytes()
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    opener = PacketOpener(cluster=MANIFEST["cluster"], keyring=None, allow_insecure=True,
                          codecs=[XmlRpcCodec()])
    received = opener.open(data[4:], now=MANIFEST["now"])
    header = received.header
    assert (header.sender, header.epoch, header.call_id) == (
        case["sender"], case["epoch"], case["call_id"])
    message = opener.decode(received)
    if case["kind"] == "reply":
        assert header.flags & Flags.REPLY
        assert isinstance(message, ReplyMessage)
        assert message.value == from_notation(case["value"])
    else:
        assert header.flags & Flags.CALL
        assert bool(header.flags & Flags.ONEWAY) == (case["kind"] == "oneway")
        assert isinstance(message, CallMessage)
        assert (message.method, list(message.params)) == (case["method"],
                                                          from_notation(case["params"]))


def test_the_vectors_use_the_names_the_library_sends() -> None:
    methods = {case["method"] for case in CASES if "method" in case}
    assert {wire.HELLO, wire.EVENT} <= methods
    acquire = next(case for case in CASES if case["name"] == "acquire-with-keywords")
    assert wire.KEYWORDS in acquire["params"][-1]
