"""The packet wire format: header, body, trailer, and length-prefixed framing for streams.

This module only packs and parses bytes (``spec/packet.md`` gives every byte). Authentication,
encryption and replay protection are applied by :mod:`clusterrpc.envelope`; nothing here trusts
a parsed header before the envelope has verified the trailer.

A packet is::

    fixed header (46 bytes) | key id | cluster | sender | body | trailer

and the trailer (the authenticator of the packet's scheme) covers everything before it.
"""

from __future__ import annotations

import enum
import math
import struct
from typing import NamedTuple, NoReturn

from clusterrpc.errors import EncodeError, PacketError

__all__ = [
    "FIXED_HEADER",
    "MAGIC",
    "MAX_KEY_ID",
    "MAX_NAME",
    "VERSION",
    "Flags",
    "FrameDecoder",
    "Header",
    "HeaderTemplate",
    "decode_timeout",
    "encode_timeout",
    "frame",
    "pack_header",
    "parse_header",
]

MAGIC = b"CR"
VERSION = 1
MAX_KEY_ID = 64
MAX_NAME = 255

# spec/packet.md, "Header": magic, version, flags, codec id, scheme id, key id length, cluster
# length, sender length, timeout code, epoch, timestamp, sequence, call id, body length.
FIXED_HEADER = struct.Struct(">2sBBBBBBBBQQQQI")
_MAGIC_VERSION = MAGIC + bytes([VERSION])
_unpack_fixed_header = FIXED_HEADER.unpack_from
_FRAME_LENGTH = struct.Struct(">I")


class Flags(enum.IntFlag):
    """Header flags (spec/packet.md, "Flags"). Exactly one of CALL, REPLY, FAULT is set."""

    CALL = 0x01
    REPLY = 0x02
    FAULT = 0x04
    ONEWAY = 0x08
    MULTICAST = 0x10
    ENCRYPTED = 0x20


# Plain ints for the hot paths: IntFlag arithmetic costs microseconds per operation.
CALL, REPLY, FAULT, ONEWAY, MULTICAST, ENCRYPTED = (int(flag) for flag in Flags)
_KINDS = CALL | REPLY | FAULT
_CALL_ONLY = ONEWAY | MULTICAST
_KNOWN = _KINDS | _CALL_ONLY | ENCRYPTED


def check_flags(flags: int) -> str | None:
    """Return why ``flags`` is not a valid combination, or ``None`` if it is."""
    flags = int(flags)
    if flags & ~_KNOWN:
        return f"reserved flag bits set: {flags:#04x}"
    kind = flags & _KINDS
    if kind not in (CALL, REPLY, FAULT):
        return f"exactly one of CALL, REPLY, FAULT must be set, not {flags:#04x}"
    if flags & _CALL_ONLY and kind != CALL:
        return "ONEWAY and MULTICAST apply to calls only"
    return None


_VALID_FLAGS = frozenset(value for value in range(256) if check_flags(value) is None)


class Header(NamedTuple):
    """The fields of a packet header (spec/packet.md, "Header").

    ``flags`` is an int of :class:`Flags` bits (test with ``header.flags & Flags.CALL``). Times
    are integers: ``epoch`` identifies one run of the sender (by convention its start time in
    microseconds since the Unix epoch; it must grow across restarts), ``timestamp`` is the
    sender's clock when it sealed the packet, in milliseconds since the Unix epoch. A named
    tuple, not a dataclass: one is built per received packet.
    """

    flags: int
    codec_id: int
    scheme_id: int
    key_id: str
    cluster: str
    sender: str
    epoch: int
    timestamp: int
    sequence: int
    call_id: int
    body_length: int
    timeout_code: int = 0
    """The caller's timeout, coded (:func:`decode_timeout`); 0: none, or not a call."""

    @property
    def is_call(self) -> bool:
        return bool(self.flags & CALL)

    @property
    def is_oneway(self) -> bool:
        return bool(self.flags & ONEWAY)

    @property
    def is_multicast(self) -> bool:
        return bool(self.flags & MULTICAST)


_TIMEOUT_STEPS_PER_DOUBLING = 8


def encode_timeout(seconds: float | None) -> int:
    """The header's timeout code for a call's ``seconds`` (``spec/packet.md``, "Timeout").

    0 means no timeout; code ``c`` in 1..255 means 2**(c/8) milliseconds, about 1.09 ms to
    45 days in steps of 9 %. Rounded *down*, so the callee never believes it has more time than
    the caller gives it (timeouts under 1.09 ms become code 1).
    """
    if seconds is None:
        return 0
    milliseconds = seconds * 1000.0
    if milliseconds <= 1.0:
        return 1
    code = math.floor(_TIMEOUT_STEPS_PER_DOUBLING * math.log2(milliseconds))
    return max(1, min(255, code))


def decode_timeout(code: int) -> float | None:
    """Seconds for a header's timeout code (see :func:`encode_timeout`); ``None`` for 0."""
    if not code:
        return None
    return float(2.0 ** (code / _TIMEOUT_STEPS_PER_DOUBLING) / 1000.0)


def _encode_name(value: str, what: str, limit: int, *, allow_empty: bool = False) -> bytes:
    if not isinstance(value, str):
        raise EncodeError(f"{what} must be a str, not {type(value).__name__}")
    encoded = value.encode("utf-8", "strict")
    if not (allow_empty or encoded) or len(encoded) > limit:
        raise EncodeError(f"{what} must be 1-{limit} bytes of UTF-8, not {len(encoded)}")
    if not value.isprintable():
        raise EncodeError(f"{what} {value!r} contains control or non-printable characters")
    return encoded


class HeaderTemplate:
    """The parts of a header that stay the same for every packet of one sender, key and epoch.

    Validates and encodes them once — magic and version; scheme id and name lengths; the epoch;
    the names — into a struct of their own, so that sealing a packet costs exactly one
    ``struct.pack`` call. Raises :class:`EncodeError` for fields that cannot go in a header.
    """

    __slots__ = ("_epoch", "_middle", "_names", "_struct", "size")

    def __init__(
        self, *, key_id: str, cluster: str, sender: str, scheme_id: int, epoch: int
    ) -> None:
        key = _encode_name(key_id, "key id", MAX_KEY_ID, allow_empty=True)
        cluster_name = _encode_name(cluster, "cluster name", MAX_NAME)
        sender_name = _encode_name(sender, "node name", MAX_NAME)
        try:
            # Bytes 5-8 of the header: scheme id, three lengths; bytes 10-17: the epoch.
            self._middle = struct.pack(
                ">BBBB", scheme_id, len(key), len(cluster_name), len(sender_name)
            )
            self._epoch = struct.pack(">Q", epoch)
        except struct.error as error:
            raise EncodeError(f"header field out of range: {error}") from None
        self._names = key + cluster_name + sender_name
        # The whole header, spec/packet.md's table with the constant runs as byte strings.
        self._struct = struct.Struct(f">3sBB4sB8sQQQI{len(self._names)}s")
        self.size = self._struct.size
        """Length of every header this template packs."""

    def pack(  # noqa: PLR0917 - positional on purpose, see the docstring
        self, flags: int, codec_id: int, timestamp: int, sequence: int, call_id: int,
        body_length: int, timeout_code: int = 0,
    ) -> bytes:  # fmt: skip
        """The header bytes; raises :class:`EncodeError` for flags or numbers out of range.

        Positional on purpose: it runs once per packet sent, and keyword calls cost more.
        """
        if flags not in _VALID_FLAGS:
            raise EncodeError(f"invalid flags: {check_flags(flags)}")
        try:
            return self._struct.pack(
                _MAGIC_VERSION, flags, codec_id, self._middle, timeout_code, self._epoch,
                timestamp, sequence, call_id, body_length, self._names,
            )  # fmt: skip
        except struct.error as error:
            raise EncodeError(f"header field out of range: {error}") from None


def pack_header(header: Header) -> bytes:
    """The bytes of ``header``; raises :class:`EncodeError` for fields out of range."""
    template = HeaderTemplate(
        key_id=header.key_id,
        cluster=header.cluster,
        sender=header.sender,
        scheme_id=header.scheme_id,
        epoch=header.epoch,
    )
    return template.pack(
        header.flags,
        header.codec_id,
        header.timestamp,
        header.sequence,
        header.call_id,
        header.body_length,
        header.timeout_code,
    )


_new_tuple = tuple.__new__


def _decode_name(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PacketError(f"{what} is not UTF-8") from None
    if not text.isprintable():
        raise PacketError(f"{what} contains non-printable characters")
    return text


# A receiver sees the same few (key id, cluster, sender) byte strings over and over; decoding
# and checking them once saves a third of the header parse. The key is the names exactly as on
# the wire; the lengths, stored with them, must match too. Bounded: cleared when full.
_NAMES_CACHE: dict[bytes, tuple[int, int, tuple[str, str, str]]] = {}
_NAMES_CACHE_SIZE = 1024


def _decode_names(raw: bytes, key_length: int, cluster_length: int) -> tuple[str, str, str]:
    split = key_length + cluster_length
    names = (
        _decode_name(raw[:key_length], "key id"),
        _decode_name(raw[key_length:split], "cluster name"),
        _decode_name(raw[split:], "sender name"),
    )
    if len(_NAMES_CACHE) >= _NAMES_CACHE_SIZE:
        _NAMES_CACHE.clear()
    return names


def _refuse_header(fields: tuple[object, ...], size: int, end: int) -> NoReturn:
    """Raise the :class:`PacketError` that says what is wrong with a header's fixed fields."""
    (magic, version, flags, _, _, key_length, cluster_length, sender_length, timeout_code,
     _, _, _, _, body_length) = fields  # fmt: skip
    if magic != MAGIC:
        raise PacketError("not a clusterrpc packet (bad magic)")
    if version != VERSION:
        raise PacketError(f"unsupported packet version {version}")
    if flags not in _VALID_FLAGS:
        raise PacketError(f"invalid flags: {check_flags(flags)}")  # type: ignore[arg-type]
    if timeout_code and not flags & CALL:
        raise PacketError("only a call carries a timeout")
    if key_length > MAX_KEY_ID or not cluster_length or not sender_length:  # type: ignore[operator]
        raise PacketError("invalid key id, cluster or sender length")
    raise PacketError(
        f"truncated packet: {size} bytes, header and body need {end + body_length}"  # type: ignore[operator]
    )


def parse_header(data: bytes) -> tuple[Header, int]:
    """Parse the header at the start of ``data``: ``(header, length_of_header)``.

    Only the header's own consistency is checked (magic, version, flags, lengths against
    ``data``); the caller checks the trailer length for the scheme, then authenticates. Raises
    :class:`PacketError` and nothing else.
    """
    try:
        fields = _unpack_fixed_header(data)
    except struct.error:
        raise PacketError(
            f"truncated packet: {len(data)} bytes, a header needs at least 46"
        ) from None
    (magic, version, flags, codec_id, scheme_id, key_length, cluster_length, sender_length,
     timeout_code, epoch, timestamp, sequence, call_id, body_length) = fields  # fmt: skip
    end = 46 + key_length + cluster_length + sender_length
    # One test for the common case; _refuse_header says precisely what is wrong.
    if (magic != MAGIC or version != VERSION or flags not in _VALID_FLAGS
            or (timeout_code and not flags & CALL)
            or key_length > MAX_KEY_ID or not cluster_length or not sender_length
            or len(data) < end + body_length):  # fmt: skip
        _refuse_header(fields, len(data), end)
    raw_names = data[46:end]
    cached = _NAMES_CACHE.get(raw_names)
    if cached is None or cached[0] != key_length or cached[1] != cluster_length:
        cached = (key_length, cluster_length, _decode_names(raw_names, key_length, cluster_length))
        _NAMES_CACHE[raw_names] = cached
    key_id, cluster, sender = cached[2]
    # tuple.__new__ directly: a NamedTuple's own __new__ is a Python function, one more frame.
    header: Header = _new_tuple(Header, (
        flags, codec_id, scheme_id, key_id, cluster, sender, epoch, timestamp, sequence,
        call_id, body_length, timeout_code,
    ))  # fmt: skip
    return header, end


def frame(packet: bytes) -> bytes:
    """``packet`` with its 4-byte big-endian length prefix, for stream transports."""
    return _FRAME_LENGTH.pack(len(packet)) + packet


class FrameDecoder:
    """Splits a byte stream into length-prefixed packets (spec/packet.md, "Framing").

    Feed it whatever the stream delivered; it returns every complete packet. A frame longer
    than ``max_frame`` raises :class:`PacketError` as soon as its length prefix is read (before
    its bytes are buffered); the decoder is then broken for good and the connection must be
    closed, since the stream cannot be resynchronised.
    """

    __slots__ = ("_broken", "_buffer", "max_frame")

    def __init__(self, *, max_frame: int) -> None:
        if max_frame <= 0:
            raise ValueError("max_frame must be positive")
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._broken = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data`` from the stream; return the packets it completed, in order."""
        if self._broken:
            raise PacketError("stream already refused; close the connection")
        self._buffer += data
        packets = []
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= 4:
            (length,) = _FRAME_LENGTH.unpack_from(buffer, offset)
            if length > self.max_frame or length == 0:
                self._broken = True
                raise PacketError(
                    f"frame of {length} bytes is outside 1..max_frame={self.max_frame}"
                )
            if len(buffer) - offset - 4 < length:
                break
            packets.append(bytes(buffer[offset + 4 : offset + 4 + length]))
            offset += 4 + length
        del buffer[:offset]
        return packets

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a whole frame (non-zero at EOF: truncated)."""
        return len(self._buffer)
