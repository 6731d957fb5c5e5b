"""The packet wire format and stream framing (no keys involved)."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterrpc.errors import EncodeError, PacketError
from clusterrpc.packet import (
    FIXED_HEADER,
    Flags,
    FrameDecoder,
    Header,
    decode_timeout,
    encode_timeout,
    frame,
    pack_header,
    parse_header,
)

HEADER = Header(
    flags=Flags.CALL | Flags.ONEWAY,
    codec_id=1,
    scheme_id=1,
    key_id="k1",
    cluster="ORG/UK/EDIN",
    sender="n1",
    epoch=1_732_300_000_000_000,
    timestamp=1_732_300_000_123,
    sequence=42,
    call_id=7,
    body_length=3,
)


def test_fixed_header_is_46_bytes() -> None:
    assert FIXED_HEADER.size == 46


def test_header_bytes_follow_the_spec_table() -> None:
    data = pack_header(HEADER)
    assert data[:2] == b"CR"
    assert data[2] == 1  # version
    assert data[3] == 0x09  # CALL | ONEWAY
    assert (data[4], data[5], data[6], data[7], data[8], data[9]) == (1, 1, 2, 11, 2, 0)
    assert struct.unpack(">QQQQI", data[10:46]) == (
        HEADER.epoch, HEADER.timestamp, 42, 7, 3,
    )
    assert data[46:] == b"k1ORG/UK/EDINn1"


names = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S"]), min_size=1, max_size=40
)


@settings(max_examples=200, deadline=None)
@given(
    flags=st.sampled_from(
        [Flags.CALL, Flags.CALL | Flags.ONEWAY, Flags.CALL | Flags.MULTICAST, Flags.REPLY,
         Flags.FAULT, Flags.REPLY | Flags.ENCRYPTED, Flags.CALL | Flags.ONEWAY | Flags.MULTICAST]
    ),
    numbers=st.tuples(*[st.integers(0, 2**64 - 1)] * 4),
    key_id=st.text(alphabet="abc-._0123", max_size=64),
    cluster=names,
    sender=names,
    body=st.binary(max_size=50),
)
def test_header_round_trip(
    flags: Flags, numbers: tuple[int, int, int, int], key_id: str, cluster: str, sender: str,
    body: bytes,
) -> None:
    header = Header(flags, 3, 200, key_id, cluster, sender, *numbers, len(body))
    data = pack_header(header) + body
    parsed, end = parse_header(data)
    assert parsed == header
    assert data[end:] == body


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"flags": 0}, "exactly one of CALL, REPLY, FAULT"),
        ({"flags": Flags.CALL | Flags.REPLY}, "exactly one"),
        ({"flags": Flags.REPLY | Flags.ONEWAY}, "calls only"),
        ({"flags": 0x41}, "reserved flag bits"),
        ({"cluster": ""}, "cluster name must be 1-255 bytes"),
        ({"sender": "x" * 256}, "node name must be 1-255 bytes"),
        ({"key_id": "k" * 65}, "key id must be"),
        ({"sender": "bad\nname"}, "non-printable"),
        ({"sequence": 2**64}, "out of range"),
        ({"codec_id": 256}, "out of range"),
    ],
)
def test_pack_refuses_bad_fields(change: dict[str, object], message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        pack_header(HEADER._replace(**change))  # type: ignore[arg-type]


GOOD = pack_header(HEADER) + b"abc"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated packet"),
        (GOOD[:45], "truncated packet"),
        (GOOD[:-1], "truncated packet"),
        (b"XX" + GOOD[2:], "bad magic"),
        (GOOD[:2] + b"\x02" + GOOD[3:], "unsupported packet version 2"),
        (GOOD[:3] + b"\x03" + GOOD[4:], "invalid flags"),
        (GOOD[:3] + b"\x02" + GOOD[4:9] + b"\x01" + GOOD[10:], "only a call carries a timeout"),
        (GOOD[:6] + b"\x41" + GOOD[7:], "invalid key id"),
        (GOOD[:7] + b"\x00" + GOOD[8:], "invalid key id, cluster or sender length"),
        (GOOD[:46] + b"\xff\xfe" + GOOD[48:], "not UTF-8"),
        (GOOD[:46] + b"k\x07" + GOOD[48:], "non-printable"),
    ],
)
def test_parse_refuses_malformed_headers(data: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        parse_header(data)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=120))
def test_parse_raises_only_packet_errors(data: bytes) -> None:
    with contextlib.suppress(PacketError):
        parse_header(data)


# -- framing -----------------------------------------------------------------------------------


def test_frames_split_at_every_byte_boundary() -> None:
    packets = [b"a", b"bc" * 100, b"\x00" * 7]
    stream = b"".join(frame(p) for p in packets)
    decoder = FrameDecoder(max_frame=1000)
    received = []
    for index in range(len(stream)):  # one byte at a time, as h11's tests do
        received += decoder.feed(stream[index : index + 1])
    assert received == packets
    assert decoder.buffered == 0


def test_frames_in_one_chunk() -> None:
    decoder = FrameDecoder(max_frame=10)
    assert decoder.feed(frame(b"x") + frame(b"yz") + frame(b"w")[:3]) == [b"x", b"yz"]
    assert decoder.buffered == 3  # a partial frame is kept for the next feed


@pytest.mark.parametrize("length", [0, 11, 2**32 - 1])
def test_bad_frame_length_breaks_the_stream(length: int) -> None:
    decoder = FrameDecoder(max_frame=10)
    with pytest.raises(PacketError, match=r"outside 1\.\.max_frame=10"):
        decoder.feed(struct.pack(">I", length))
    with pytest.raises(PacketError, match="close the connection"):
        decoder.feed(frame(b"ok"))


def test_oversized_frame_is_refused_before_buffering() -> None:
    decoder = FrameDecoder(max_frame=1024)
    with pytest.raises(PacketError):
        decoder.feed(struct.pack(">I", 100 * 1024 * 1024) + b"x" * 10)
    assert decoder.buffered <= 14


def test_timeout_codes_round_down_on_a_log_scale() -> None:
    assert encode_timeout(None) == 0
    assert decode_timeout(0) is None
    assert encode_timeout(0.0001) == 1
    assert encode_timeout(10**9) == 255
    for seconds in (0.002, 0.1, 0.5, 1.0, 5.0, 30.0, 3600.0, 86400.0):
        code = encode_timeout(seconds)
        decoded = decode_timeout(code)
        assert decoded is not None
        assert decoded <= seconds < decoded * 2 ** (1 / 8) * 1.000001
    assert [encode_timeout(s) for s in (1.0, 30.0)] == [79, 118]


def test_a_call_carries_its_timeout_code() -> None:
    header = HEADER._replace(timeout_code=encode_timeout(2.5))
    parsed, _ = parse_header(pack_header(header) + b"abc")
    assert parsed == header
    assert decode_timeout(parsed.timeout_code) == pytest.approx(2.5, rel=0.1)
