"""Sealing and opening packets: header, authenticator, encryption, replay protection, counters.

:class:`PacketSealer` turns a codec body into a signed (or encrypted) packet for one sending
node; :class:`PacketOpener` checks an incoming packet and returns its body only once it is
authenticated. The order of the checks in :meth:`PacketOpener.open` is the contract
(``spec/packet.md``, "Receiving"):

1. size and header syntax — :class:`~clusterrpc.errors.PacketError`;
2. cluster name — :class:`~clusterrpc.errors.WrongClusterError`;
3. scheme, key and sender known — ``UnknownKeyError``, ``UnknownSenderError``,
   ``InsecurePacketError``;
4. the authenticator (and decryption) — ``BadAuthenticatorError``;
5. epoch and sequence, only now that the packet is authentic — ``ReplayError``, ``TooOldError``,
   ``StaleEpochError``.

Nothing but :class:`~clusterrpc.errors.AuthenticationError` subclasses comes out of ``open``, and
every refusal increments the counter its error class names. Codecs see a body only after all five
steps passed (:meth:`PacketOpener.decode`). Sans-I/O: the clock is the ``now`` argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

from clusterrpc.auth import AuthScheme, Opener, SchemeRegistry, default_schemes
from clusterrpc.codecs import CallMessage, Codec, FaultMessage, ReplyMessage, default_registry
from clusterrpc.errors import (
    AuthenticationError,
    BadAuthenticatorError,
    ConfigurationError,
    DecodeError,
    EncodeError,
    FaultCode,
    InsecurePacketError,
    PacketError,
    UnknownKeyError,
    UnknownSchemeError,
    WrongClusterError,
)
from clusterrpc.packet import CALL, ENCRYPTED, REPLY, Flags, Header, HeaderTemplate, parse_header
from clusterrpc.replay import ReplayGuard
from clusterrpc.values import DEFAULT_LIMITS

if TYPE_CHECKING:
    from clusterrpc.keyring import Keyring

__all__ = [
    "DEFAULT_MAX_PACKET",
    "Message",
    "PacketCounters",
    "PacketOpener",
    "PacketSealer",
    "ReceivedPacket",
]

DEFAULT_MAX_PACKET = DEFAULT_LIMITS.max_size + 1024
"""Default largest packet: the default largest body plus room for header and trailer."""

Message = CallMessage | ReplyMessage | FaultMessage

COUNTER_NAMES = (
    "accepted",
    "refused_malformed",
    "refused_wrong_cluster",
    "refused_unknown_key",
    "refused_unknown_sender",
    "refused_insecure",
    "refused_bad_authenticator",
    "refused_replay",
    "refused_too_old",
    "refused_stale_epoch",
)


class PacketCounters(Mapping[str, int]):
    """Named counts of accepted and refused packets, for admins (read-only mapping).

    Every name in ``COUNTER_NAMES`` is present from the start, at zero.
    """

    __slots__ = ("_counts",)

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        # The opener shares `counts` and bumps it directly on its hot path.
        self._counts = counts if counts is not None else {}
        for name in COUNTER_NAMES:
            self._counts.setdefault(name, 0)

    def increment(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def __repr__(self) -> str:
        busy = {name: count for name, count in self._counts.items() if count}
        return f"PacketCounters({busy})"


_new_tuple = tuple.__new__  # NamedTuple.__new__ is a Python function: one frame per packet


class ReceivedPacket(NamedTuple):
    """An authenticated packet: its header and its plaintext body (not yet decoded)."""

    header: Header
    body: bytes


def _message_flags(message: Message, *, oneway: bool, multicast: bool) -> Flags:
    if isinstance(message, CallMessage):
        flags = Flags.CALL
        if oneway:
            flags |= Flags.ONEWAY
        if multicast:
            flags |= Flags.MULTICAST
        return flags
    if oneway or multicast:
        raise EncodeError("only calls can be one-way or multicast")
    return Flags.REPLY if isinstance(message, ReplyMessage) else Flags.FAULT


class PacketSealer:
    """Seals the packets one node sends (sans-I/O).

    ``cluster`` and ``node`` name the sender; ``epoch`` identifies this run of it and must grow
    across restarts (use the start time in microseconds). Packets are signed with the keyring's
    signing key; with ``keyring=None`` you must pass ``insecure=True`` and packets go out
    unauthenticated (scheme ``none``) — for explicitly insecure set-ups only.

    Raises :class:`~clusterrpc.errors.ConfigurationError` for a missing keyring or signing key,
    and :class:`~clusterrpc.errors.EncodeError` from :meth:`seal` for bad fields or a packet over
    ``max_packet``. Not thread-safe: one sealer per sending task, or a lock around it.
    """

    __slots__ = ("_extra_flags", "_max_body", "_scheme", "_sealer", "_sequence", "_template",
                 "cluster", "epoch", "max_packet", "node", "schemes")  # fmt: skip

    def __init__(
        self,
        *,
        cluster: str,
        node: str,
        epoch: int,
        keyring: Keyring | None,
        insecure: bool = False,
        schemes: SchemeRegistry | None = None,
        max_packet: int = DEFAULT_MAX_PACKET,
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.epoch = epoch
        self.max_packet = max_packet
        self.schemes = schemes or default_schemes()
        self._sequence = 0
        if keyring is None and not insecure:
            raise ConfigurationError(
                "a keyring is required to sign packets; pass insecure=True only for set-ups "
                "where unauthenticated packets are acceptable"
            )
        self.use_keyring(keyring)

    def use_keyring(self, keyring: Keyring | None) -> None:
        """Sign from now on with ``keyring``'s signing key (a key rotation's switch step).

        Sequence numbers continue: the epoch is unchanged.
        """
        scheme: AuthScheme
        if keyring is None:
            scheme, key_id = self.schemes.get("none"), ""
            sealer = scheme.sealer(b"")
        else:
            key = keyring.signing_key()
            scheme = self.schemes.get(key.scheme)
            if scheme.public_key and keyring.node != self.node:
                # Receivers verify with the key they trust for the sender name: signing as
                # another name is refused there; refuse the misconfiguration here instead.
                raise ConfigurationError(
                    f"the keyring's {scheme.name} key belongs to node {keyring.node!r}, "
                    f"not to this node {self.node!r}"
                )
            key_id, sealer = key.key_id, scheme.sealer(key.secret)
        try:
            template = HeaderTemplate(
                key_id=key_id,
                cluster=self.cluster,
                sender=self.node,
                scheme_id=scheme.scheme_id,
                epoch=self.epoch,
            )
        except EncodeError as error:
            raise ConfigurationError(str(error)) from None
        self._scheme, self._sealer, self._template = scheme, sealer, template
        # Both constant per key: computed here rather than for every packet.
        self._extra_flags = ENCRYPTED if scheme.encrypts else 0
        self._max_body = self.max_packet - template.size - scheme.trailer_size

    @property
    def sequence(self) -> int:
        """The sequence number of the last packet sealed (0 before the first)."""
        return self._sequence

    def seal(self, *, flags: int, codec_id: int, call_id: int, body: bytes, now: float,
             timeout_code: int = 0) -> bytes:
        """Seal ``body`` (already encoded by codec ``codec_id``) into a packet.

        ``now`` is the sender's clock in seconds since the Unix epoch; it becomes the header
        timestamp. ``timeout_code`` is a call's timeout as
        :func:`~clusterrpc.packet.encode_timeout` codes it (0: none; calls only). Each call
        takes the next sequence number.
        """
        if len(body) > self._max_body:
            size = len(body) + self.max_packet - self._max_body
            raise EncodeError(f"packet of {size} bytes exceeds max_packet={self.max_packet}")
        sequence = self._sequence + 1
        header = self._template.pack(
            int(flags) | self._extra_flags,  # plain ints: IntFlag arithmetic costs microseconds
            codec_id, int(now * 1000), sequence, call_id, len(body), timeout_code,
        )  # fmt: skip
        packet = self._sealer.seal(header, body)
        self._sequence = sequence
        return packet

    def seal_message(
        self,
        message: Message,
        *,
        codec: Codec,
        call_id: int,
        now: float,
        oneway: bool = False,
        multicast: bool = False,
    ) -> bytes:
        """Encode ``message`` with ``codec`` and seal it (see :meth:`seal`)."""
        flags = _message_flags(message, oneway=oneway, multicast=multicast)
        if isinstance(message, CallMessage):
            body = codec.encode_call(message.method, message.params)
        elif isinstance(message, ReplyMessage):
            body = codec.encode_reply(message.value)
        else:
            body = codec.encode_fault(message.code, message.message)
        return self.seal(flags=flags, codec_id=codec.codec_id, call_id=call_id, body=body,
                         now=now)


class PacketOpener:
    """Checks the packets one node receives (sans-I/O). See the module docstring for the order
    of the checks; :attr:`counters` counts every outcome.

    ``cluster``: the only cluster accepted. ``keyring``: where verification keys come from
    (``None`` accepts nothing but ``none`` packets, and those only with ``allow_insecure``).
    ``codecs``: the codecs bodies may use (default: every installed codec, default limits);
    a packet naming another codec is refused before verification. ``replay_window``,
    ``freshness`` and ``max_senders`` configure the :class:`~clusterrpc.replay.ReplayGuard`.
    Not thread-safe.
    """

    __slots__ = ("_accept", "_codecs", "_counts", "_keyring", "_openers", "_replay",
                 "allow_insecure", "cluster", "counters", "max_packet", "schemes")  # fmt: skip

    _MAX_CACHED_OPENERS = 1024

    def __init__(
        self,
        *,
        cluster: str,
        keyring: Keyring | None,
        allow_insecure: bool = False,
        codecs: Iterable[Codec] | None = None,
        schemes: SchemeRegistry | None = None,
        replay_window: int = 1024,
        freshness: float = 30.0,
        max_senders: int = 4096,
        max_packet: int = DEFAULT_MAX_PACKET,
    ) -> None:
        self.cluster = cluster
        self.allow_insecure = allow_insecure
        self.max_packet = max_packet
        self.schemes = schemes or default_schemes()
        if codecs is None:
            registry = default_registry()
            codecs = [registry.create(name) for name in registry.names()]
        self._codecs: dict[int, Codec] = {codec.codec_id: codec for codec in codecs}
        self._replay = ReplayGuard(
            window=replay_window, freshness=freshness, max_senders=max_senders
        )
        self._accept = self._replay.accept  # bound once: called for every packet
        self._keyring = keyring
        self._openers: dict[tuple[int, str, str], tuple[Opener, int, int]] = {}
        self._counts: dict[str, int] = {}
        self.counters = PacketCounters(self._counts)

    def use_keyring(self, keyring: Keyring | None) -> None:
        """Verify with ``keyring`` from now on (after keys were added or removed)."""
        self._keyring = keyring
        self._openers.clear()

    def open(self, data: bytes, *, now: float) -> ReceivedPacket:
        """Authenticate ``data``; return its header and plaintext body.

        ``now`` is the receiver's clock in seconds since the Unix epoch. Raises only
        :class:`~clusterrpc.errors.AuthenticationError` subclasses; the caller must then drop the
        packet without acting on it or answering it.
        """
        if type(data) is not bytes:
            data = bytes(data)
        try:
            if len(data) > self.max_packet:
                raise PacketError(
                    f"packet of {len(data)} bytes exceeds max_packet={self.max_packet}"
                )
            header, end = parse_header(data)
            # Locals, not attribute reads: this runs for every packet received.
            (flags, codec_id, scheme_id, key_id, cluster, sender, epoch, timestamp, sequence,
             _, body_length, _) = header  # fmt: skip
            if cluster != self.cluster:
                raise WrongClusterError(f"packet for cluster {cluster!r}")
            if codec_id not in self._codecs:
                raise PacketError(f"unknown codec id {codec_id}")
            cached = self._openers.get((scheme_id, key_id, sender))
            opener, encrypted, trailer_size = cached or self._opener(header)
            if flags & ENCRYPTED != encrypted:
                raise PacketError("the ENCRYPTED flag does not match the scheme")
            body_end = end + body_length
            if len(data) - body_end != trailer_size:
                raise PacketError(
                    f"trailer of {len(data) - body_end} bytes; this scheme needs {trailer_size}"
                )
            body = opener.open(data, end, body_end)
            self._accept(sender, epoch, sequence, timestamp, now)
        except AuthenticationError as error:
            self.counters.increment(error.counter)
            raise
        self._counts["accepted"] += 1
        received: ReceivedPacket = _new_tuple(ReceivedPacket, (header, body))
        return received

    def _opener(self, header: Header) -> tuple[Opener, int, int]:
        """The opener for ``header``'s scheme and key, with the ENCRYPTED bit its packets carry
        and their trailer size; cached."""
        # The cache (looked up by open() itself) is keyed by sender too, although shared keys
        # verify every sender alike: one lookup on the hot path. Bounded below, so key holders
        # inventing names cannot grow it.
        cache_key = (header.scheme_id, header.key_id, header.sender)
        try:
            scheme = self.schemes.by_id(header.scheme_id)()
        except UnknownSchemeError:
            raise UnknownKeyError(
                f"unknown authentication scheme id {header.scheme_id}"
            ) from None
        if not scheme.authenticates:
            if not self.allow_insecure:
                raise InsecurePacketError(
                    f"unauthenticated ({scheme.name}) packet from {header.sender!r} refused"
                )
            opener = scheme.opener(b"")
        else:
            if self._keyring is None:
                raise UnknownKeyError(f"no keyring to verify {scheme.name} packets")
            key = self._keyring.verification_key(scheme.name, header.key_id, header.sender)
            try:
                opener = scheme.opener(key)
            except ConfigurationError as error:  # key material unusable for this scheme
                raise BadAuthenticatorError(str(error)) from None
        if len(self._openers) >= self._MAX_CACHED_OPENERS:
            self._openers.clear()
        entry = (opener, ENCRYPTED if scheme.encrypts else 0, scheme.trailer_size)
        self._openers[cache_key] = entry
        return entry

    def decode(self, packet: ReceivedPacket) -> Message:
        """Decode an authenticated packet's body with the codec its header names.

        Raises :class:`~clusterrpc.errors.DecodeError` if the body is not a valid message of the
        kind the header's flags announce; a server answers a call that fails so with a fault.
        """
        header = packet.header
        codec = self._codecs[header.codec_id]
        if header.flags & CALL:
            return codec.decode_call(packet.body)
        message = codec.decode_response(packet.body)
        expected = ReplyMessage if header.flags & REPLY else FaultMessage
        if not isinstance(message, expected):
            raise DecodeError(
                "the body's message kind differs from the header's flags",
                fault_code=FaultCode.INVALID_REQUEST,
            )
        return message

    def receive(self, data: bytes, *, now: float) -> tuple[Header, Message]:
        """:meth:`open` then :meth:`decode`: the header and the decoded message."""
        packet = self.open(data, now=now)
        return packet.header, self.decode(packet)

