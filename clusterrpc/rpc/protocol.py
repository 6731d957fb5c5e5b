"""The one connection protocol: packets in, calls served and answered, calls made, bytes out.

Every packet transport — TCP, Unix, UDP, IP multicast, asyncio and blocking — drives one
:class:`Connection` per conversation (a stream connection, or one UDP socket). It is sans-I/O,
modelled on the protocol objects of ``websockets`` and ``h11``: the driver feeds it what it read
and the time, and takes out what to write and what happened::

    connection = Connection(messenger, dispatcher=dispatcher, transport="tcp", peer=peer)
    connection.receive_data(data, now=loop.time())          # a stream's bytes (framed)
    connection.receive_datagram(data, source, peer=p, now=loop.time())      # or one datagram
    call_id = connection.send_call("svc.m", (1, 2), now=loop.time(), timeout=5.0)
    for event in connection.events_received(): ...        # answers, methods to await
    transport.write(connection.data_to_send())             # stream; datagrams_to_send() for UDP
    timer.at(connection.next_deadline()); connection.expire(now)

One connection both **serves** (when it has a :class:`Dispatcher`) and **calls**, in both
directions at once: a packet with the CALL flag is served, any other is an answer matched by its
call id to a call this side made (``spec/rpc.md``, "One connection, both ways"). Plain methods
are served inline, inside ``receive_*``, their answers queued at once; an ``async`` method gives
an :class:`Invocation` event, which the driver awaits (a task, or a thread) and hands back with
:meth:`Connection.finish`. Back-pressure: while ``max_running`` invocations run, further frames
of a stream wait in a backlog (served in order once calls finish) and :attr:`Connection.paused`
tells the driver to stop reading.

:class:`Dispatcher` holds the serving rules that every transport shares, HTTP included: a call
that cannot be decoded, an unknown method of a multicast call (ignored: only members that publish
it answer), the one-way rule (never an answer, failures logged and counted), and the counters,
whose names are documented in ``spec/rpc.md`` ("Counters").

This module reads no clock and touches no socket: time comes in as ``now`` (the driver's
monotonic clock, for deadlines); packet timestamps come from the :class:`Messenger`'s injected
wall clock.
"""

from __future__ import annotations

import collections
import copy
import inspect
import typing
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any, Final

from clusterrpc.codecs import CallMessage, Codec, FaultMessage, ReplyMessage, default_registry
from clusterrpc.envelope import DEFAULT_MAX_PACKET, PacketOpener, PacketSealer, ReceivedPacket
from clusterrpc.errors import (
    AuthenticationError,
    ClusterRPCError,
    ConnectionLostError,
    DecodeError,
    EncodeError,
    Fault,
    FaultCode,
    PacketError,
)
from clusterrpc.packet import (
    CALL,
    FAULT,
    MULTICAST,
    ONEWAY,
    REPLY,
    FrameDecoder,
    Header,
    decode_timeout,
    encode_timeout,
)
from clusterrpc.rpc.calls import CallFailed, CallOutcome, CallSucceeded, CallTracker
from clusterrpc.rpc.context import CallContext, new_call_context
from clusterrpc.rpc.gather import GatherTracker, GroupReplies
from clusterrpc.rpc.service import ServiceRegistry
from clusterrpc.values import DEFAULT_LIMITS, Limits, Value

if typing.TYPE_CHECKING:
    from clusterrpc.keyring import Keyring

__all__ = [
    "COUNTER_NAMES",
    "NO_ANSWER",
    "Connection",
    "ConnectionBroken",
    "Dispatcher",
    "Event",
    "GatherEnded",
    "Invocation",
    "Messenger",
    "NoAnswer",
]



class _Log:
    """The ``clusterrpc.transport`` logger, imported on first use: :mod:`logging` imports
    :mod:`threading`, which the sans-I/O core must not pull in (the import tests check)."""

    def __getattr__(self, level: str) -> Any:
        import logging  # noqa: PLC0415 - see the class docstring

        return getattr(logging.getLogger("clusterrpc.transport"), level)


log: Any = _Log()

_FLAGS_CALL = int(CALL)
_FLAGS_ONEWAY_CALL = int(CALL | ONEWAY)
_FLAGS_MULTICAST = int(MULTICAST)
_FLAGS_REPLY = int(REPLY)
_FLAGS_FAULT = int(FAULT)
_ONEWAY = int(ONEWAY)

ONEWAY_ID_BASE: Final = 1 << 63
"""One-way multicast calls take ids from the top half of the id space: no answer ever matches
them, and they never collide with the ids of calls waiting for answers."""


# -- sealing and opening -----------------------------------------------------------------------


class Messenger:
    """Seals and opens the packets of one sending node (or client).

    ``node``/``cluster``/``keyring``/``insecure`` configure the
    :class:`~clusterrpc.envelope.PacketSealer` and :class:`~clusterrpc.envelope.PacketOpener`
    (``insecure=True`` sends unauthenticated packets when ``keyring`` is ``None`` and accepts
    them). ``codec`` encodes the calls this side sends; answers are encoded with the codec of the
    call they answer, so every installed codec (with ``limits``) is accepted on input.
    ``epoch``: the sender's restart identity (``spec/packet.md``). ``clock``: the wall clock
    (seconds since the Unix epoch) for packet timestamps, the replay window's freshness check and
    callers' deadlines — injected, so this object reads no clock of its own.

    Raises :class:`~clusterrpc.errors.ConfigurationError` for a bad configuration. Not
    thread-safe.
    """

    def __init__(
        self,
        *,
        node: str,
        cluster: str,
        keyring: Keyring | None,
        epoch: int,
        clock: Callable[[], float],
        insecure: bool = False,
        codec: str | int = "xmlrpc",
        limits: Limits = DEFAULT_LIMITS,
        max_packet: int = DEFAULT_MAX_PACKET,
        replay_window: int = 1024,
        freshness: float = 30.0,
    ) -> None:
        registry = default_registry()
        self.codec: Codec = registry.create(codec, limits=limits)
        codecs = {self.codec.codec_id: self.codec}
        for name in registry.names():
            candidate = registry.create(name, limits=limits)
            codecs.setdefault(candidate.codec_id, candidate)
        self.codecs = codecs
        self.node = node
        self.cluster = cluster
        self.clock = clock
        self.sealer = PacketSealer(
            cluster=cluster, node=node, epoch=epoch, keyring=keyring, insecure=insecure,
            max_packet=max_packet,
        )  # fmt: skip
        self.opener = PacketOpener(
            cluster=cluster, keyring=keyring, allow_insecure=insecure,
            codecs=codecs.values(), replay_window=replay_window, freshness=freshness,
            max_packet=max_packet,
        )  # fmt: skip
        self.max_packet = max_packet
        self._keyring = keyring
        self._insecure = insecure
        self._replay_window = replay_window
        self._freshness = freshness
        self.authenticate = self.opener.open
        """``opener.open``: authenticate a packet at a wall-clock time, raising
        :class:`~clusterrpc.errors.AuthenticationError` for a refusal (counted). The hot path's
        form of :meth:`open`."""
        self._seal = self.sealer.seal
        self._encode_call = self.codec.encode_call
        self._codec_id = self.codec.codec_id

    @property
    def epoch(self) -> int:
        """This sender's epoch (the same in every packet it seals)."""
        return self.sealer.epoch

    def sibling(self, node: str) -> typing.Self:
        """A messenger like this one (cluster, keys, codecs, epoch, clock) for sender ``node``,
        with a sequence and a replay window of its own. It reuses this one's codecs and
        schemes, loading nothing: safe after the process dropped its privileges."""
        twin = copy.copy(self)
        twin.node = node
        twin.sealer = PacketSealer(
            cluster=self.cluster, node=node, epoch=self.epoch, keyring=self._keyring,
            insecure=self._insecure, schemes=self.sealer.schemes, max_packet=self.max_packet,
        )  # fmt: skip
        twin.opener = PacketOpener(
            cluster=self.cluster, keyring=self._keyring, allow_insecure=self._insecure,
            codecs=self.codecs.values(), schemes=self.opener.schemes,
            replay_window=self._replay_window, freshness=self._freshness,
            max_packet=self.max_packet,
        )  # fmt: skip
        twin.authenticate = twin.opener.open
        twin._seal = twin.sealer.seal
        return twin

    def use_keyring(self, keyring: Keyring | None) -> None:
        """Sign and verify with ``keyring`` from now on (a key rotation's step); siblings made
        later (:meth:`sibling`) use it too. Raises what the sealer's ``use_keyring`` raises, and
        then nothing has changed."""
        self.sealer.use_keyring(keyring)
        self.opener.use_keyring(keyring)
        self._keyring = keyring

    def seal_call(self, call_id: int, message: CallMessage, *, oneway: bool = False,
                  multicast: bool = False, timeout: float | None = None) -> bytes:
        """Encode and seal a call; ``timeout`` (seconds) travels in the header, so that the
        callee knows the caller's deadline. Raises :class:`~clusterrpc.errors.EncodeError` for
        a value the codec cannot carry or a packet over ``max_packet``; nothing is sent then."""
        flags = _FLAGS_ONEWAY_CALL if oneway else _FLAGS_CALL
        if multicast:
            flags |= _FLAGS_MULTICAST
        body = self._encode_call(message.method, message.params)
        return self._seal(flags=flags, codec_id=self._codec_id, call_id=call_id, body=body,
                          now=self.clock(), timeout_code=encode_timeout(timeout))

    def seal_answer(self, call_id: int, codec_id: int, answer: Value | Fault) -> bytes:
        """Encode and seal the reply (or, for a :class:`~clusterrpc.errors.Fault`, the fault)
        to call ``call_id`` with the codec ``codec_id`` the call used.

        A value that cannot be encoded, or a reply over ``max_packet``, becomes a fault
        ``-32603`` saying why: the caller always gets an answer. Raises
        :class:`~clusterrpc.errors.EncodeError` only when even that fault does not fit.
        """
        codec = self.codecs[codec_id]
        now = self.clock()
        if not isinstance(answer, Fault):
            try:
                body = codec.encode_reply(answer)
                return self._seal(flags=_FLAGS_REPLY, codec_id=codec_id, call_id=call_id,
                                  body=body, now=now)
            except EncodeError as error:
                answer = Fault(FaultCode.INTERNAL_ERROR, f"the result cannot be sent: {error}")
        body = codec.encode_fault(answer.code, answer.message[:4096])
        return self._seal(flags=_FLAGS_FAULT, codec_id=codec_id, call_id=call_id, body=body,
                          now=now)

    def open(self, data: bytes, *, peer: str) -> ReceivedPacket | None:
        """Authenticate ``data``; return the packet, or ``None`` when it was refused (the
        refusal is counted in :attr:`counters` and logged at debug level, naming ``peer``).
        The caller must drop a refused packet without answering it."""
        try:
            return self.authenticate(data, now=self.clock())
        except AuthenticationError as error:
            log.debug("refused a packet from %s: %s", peer, error)
            return None

    def decode_answer(self, packet: ReceivedPacket) -> ReplyMessage | FaultMessage:
        """The reply or fault in an authentic answer packet. Raises
        :class:`~clusterrpc.errors.DecodeError` if its body is not one."""
        message = self.opener.decode(packet)
        if isinstance(message, CallMessage):  # the caller checked the flags; be safe anyway
            raise DecodeError("a call where an answer was expected")
        return message

    @property
    def counters(self) -> dict[str, int]:
        """The packet layer's counters (accepted, and every ``refused_*`` reason)."""
        return dict(self.opener.counters)


# -- the serving rules -------------------------------------------------------------------------


class NoAnswer:
    """The type of :data:`NO_ANSWER`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_ANSWER"


NO_ANSWER: Final = NoAnswer()
"""What :class:`Dispatcher` returns for a call that gets no answer: a one-way call, or a
multicast call of a method this node does not publish."""

COUNTER_NAMES: Final = (
    "calls", "oneway_calls", "faults", "oneway_errors", "bad_calls", "unexpected",
    "multicast_ignored", "expired",
)  # fmt: skip
"""The serving counters, the same on every transport (``spec/rpc.md``, "Counters")."""

Answer = Value | Fault | NoAnswer
Destination = Any
"""Where a datagram goes: a socket address, as the driver's socket takes it (``None`` on a
stream or a connected socket)."""
Started = Value | Fault | NoAnswer | Coroutine[Any, Any, Value]


class Dispatcher:
    """The serving rules of every transport (module docstring), around one
    :class:`~clusterrpc.rpc.ServiceRegistry`.

    ``counters`` (names in :data:`COUNTER_NAMES`): ``calls`` — normal calls dispatched (counted
    when the method starts); ``oneway_calls`` — one-way calls dispatched; ``faults`` — answers
    that were faults; ``oneway_errors`` — one-way calls that failed (logged, never answered);
    ``bad_calls`` — authentic calls whose body did not decode; ``unexpected`` — packets nobody on
    that side handles (a call on a client-only socket); ``multicast_ignored`` — multicast calls
    of a method not published here; ``expired`` — calls held back (a stream's backlog, a local
    transition's stall) whose caller's deadline passed before they could start: never run,
    never answered (the caller has already timed out).
    """

    __slots__ = ("counters", "registry")

    def __init__(self, registry: ServiceRegistry) -> None:
        self.registry = registry
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)

    def undecodable(self, error: DecodeError, *, oneway: bool, sender: str, peer: str
                    ) -> Fault | NoAnswer:
        """A call whose body did not decode: the fault to answer, or :data:`NO_ANSWER` for a
        one-way call (logged and counted)."""
        self.counters["bad_calls"] += 1
        if oneway:
            self.counters["oneway_errors"] += 1
            log.warning("one-way call from %s (%s) did not decode: %s", sender, peer, error)
            return NO_ANSWER
        self.counters["faults"] += 1
        return Fault(error.fault_code, str(error))

    def start(self, message: CallMessage, context: CallContext, *,
              answer_refusals: bool = False) -> Started:
        """Start serving ``message`` (counted in ``calls`` or ``oneway_calls`` now, before the
        method runs): a plain method runs to its end here.

        Returns the answer to send now (a value or a :class:`~clusterrpc.errors.Fault`),
        :data:`NO_ANSWER` (one-way, or an ignored multicast call), or a coroutine for an
        ``async`` method: the caller awaits :meth:`complete` with it, then sends what that
        returns. Never raises for anything the caller sent.

        ``answer_refusals``: answer a one-way call that cannot be made at all (unknown method,
        bad arguments) with its fault — HTTP's rule, where the client waits for a response
        anyway (``spec/http.md``); packets never do.
        """
        counters = self.counters
        oneway = context.oneway
        try:
            if answer_refusals and oneway:
                registry = self.registry
                registry.check_arguments(registry.lookup(message.method), message.params)
            result = self.registry.run(message, context)
        except Fault as fault:
            if context.multicast and fault.code == FaultCode.METHOD_NOT_FOUND:
                # Only the members that publish the method answer a multicast call.
                counters["multicast_ignored"] += 1
                return NO_ANSWER
            counters["oneway_calls" if oneway else "calls"] += 1
            if answer_refusals and oneway and fault.code in _NEVER_RAN:
                counters["faults"] += 1
                return fault
            return self.finished(fault, context)
        counters["oneway_calls" if oneway else "calls"] += 1
        if inspect.iscoroutine(result):
            return result
        return self.finished(result, context)  # type: ignore[arg-type]  # not a coroutine

    async def complete(self, coroutine: Coroutine[Any, Any, Value], context: CallContext
                       ) -> Answer:
        """Await the coroutine :meth:`start` returned; return what to send (as
        :meth:`finished`). Never raises a :class:`~clusterrpc.errors.Fault` (it becomes the
        answer); cancellation propagates."""
        try:
            answer: Value | Fault = await coroutine
        except Fault as fault:
            answer = fault
        return self.finished(answer, context)

    def finished(self, answer: Value | Fault, context: CallContext) -> Answer:
        """Count how a started call ended; return ``answer``, or :data:`NO_ANSWER` for a
        one-way call (whose failure is logged: nobody else will ever hear of it)."""
        if context.oneway:
            if isinstance(answer, Fault):
                self.counters["oneway_errors"] += 1
                log.warning("one-way call %s from %s (%s) failed: %s",
                            context.method, context.node, context.peer, answer)
            return NO_ANSWER
        if isinstance(answer, Fault):
            self.counters["faults"] += 1
        return answer


_NEVER_RAN: Final = frozenset((FaultCode.METHOD_NOT_FOUND, FaultCode.INVALID_PARAMS))
"""The faults that mean the call was never made (raised before the method ran)."""


# -- events ------------------------------------------------------------------------------------


class GatherEnded(typing.NamedTuple):
    """A multicast call this side made has gathered its answers (all expected members or the
    quorum answered, or its deadline passed, or it was cancelled)."""

    call_id: int
    replies: GroupReplies


class ConnectionBroken(typing.NamedTuple):
    """The stream broke framing: the driver must close the connection (every call in flight
    has already been failed with ``error``)."""

    error: ClusterRPCError


class Invocation:
    """A served call of an ``async`` method: the driver awaits :meth:`run` (in a task, or a
    thread's event loop), then flushes :meth:`Connection.data_to_send`. ``context`` is the
    call's :class:`~clusterrpc.rpc.CallContext`."""

    __slots__ = ("_connection", "_coroutine", "call_id", "codec_id", "context", "destination")

    def __init__(self, connection: Connection, coroutine: Coroutine[Any, Any, Value],
                 context: CallContext, *, call_id: int, codec_id: int, destination: object
                 ) -> None:
        self._connection = connection
        self._coroutine = coroutine
        self.context = context
        self.call_id = call_id
        self.codec_id = codec_id
        """The codec of the call (its answer uses the same)."""
        self.destination = destination
        """Where the answer goes (a datagram's source; ``None`` on a stream)."""

    async def run(self) -> None:
        """Run the method to its end and queue its answer on the connection. If the awaiting
        task is cancelled, the call is given up (no answer) and the cancellation propagates."""
        connection = self._connection
        try:
            answer = await connection.dispatcher_for_invocations.complete(
                self._coroutine, self.context)
        except BaseException:
            connection.finished(self, NO_ANSWER)
            raise
        connection.finished(self, answer)

    def close(self) -> None:
        """Discard the invocation without running it (the driver is shutting down)."""
        self._coroutine.close()
        self._connection.finished(self, NO_ANSWER)

    def __repr__(self) -> str:
        return f"<Invocation {self.context.method} #{self.call_id}>"


Event = CallSucceeded | CallFailed | GatherEnded | Invocation | ConnectionBroken
"""What :meth:`Connection.events_received` returns. A call this side made is settled by its
:data:`~clusterrpc.rpc.calls.CallOutcome` itself (:class:`~clusterrpc.rpc.calls.CallSucceeded`
or :class:`~clusterrpc.rpc.calls.CallFailed`, which carry the call id): one object per answer."""


# -- the connection ----------------------------------------------------------------------------


class Connection:
    """One conversation of packets: serves calls and makes calls (module docstring).

    ``messenger`` seals and opens packets. ``dispatcher``: serves incoming calls; ``None`` for a
    side that only calls (it drops calls, counting them as ``unexpected``). ``transport`` and
    ``peer`` go into the served calls' contexts (``peer`` of a datagram comes with it).
    ``stream``: length-prefixed frames (``receive_data``/``data_to_send``) or datagrams
    (``receive_datagram``/``datagrams_to_send``). ``max_in_flight``: calls this side waits for
    at once; ``max_running``: served ``async`` calls at once before a stream's backlog holds
    further frames. ``max_datagram``: the largest datagram; a bigger call is refused with
    :class:`~clusterrpc.errors.EncodeError` and a bigger answer replaced by a fault telling the
    caller to use a stream. ``accept_call(header)``: whether to serve an authentic call (a
    multicast member skips its own node's calls that asked to be excluded). ``first_call_id``
    and ``gather_in_flight``: this side's call ids, and multicast calls gathering at once.
    ``client``: the local client whose connection this is (``spec/local.md``), put in the
    served calls' contexts.

    :attr:`held`: while true, a stream's complete frames wait in the backlog unserved (answers
    to this side's calls wait too) and :attr:`paused` is true; setting it false serves them,
    in order (the local API's transition stall). A frame that waited is served with the
    caller's deadline counted from its arrival, and dropped (``expired``) if that has passed.

    Not thread-safe: one driver at a time.
    """

    def __init__(
        self,
        messenger: Messenger,
        *,
        dispatcher: Dispatcher | None,
        transport: str,
        peer: str = "?",
        stream: bool = True,
        max_in_flight: int = 256,
        max_running: int = 256,
        max_frame: int | None = None,
        max_datagram: int | None = None,
        accept_call: Callable[[Header], bool] | None = None,
        first_call_id: int = 1,
        gather_in_flight: int = 64,
        client: Any = None,
    ) -> None:
        self.messenger = messenger
        self.dispatcher = dispatcher
        self.counters: dict[str, int] = (dispatcher.counters if dispatcher is not None
                                         else dict.fromkeys(COUNTER_NAMES, 0))
        self.transport = transport
        self.peer = peer
        self.stream = stream
        self.calls = CallTracker(max_in_flight=max_in_flight, first_call_id=first_call_id)
        self.gathers = GatherTracker(max_in_flight=gather_in_flight,
                                     first_call_id=first_call_id)
        self.max_running = max_running
        self.max_datagram = max_datagram
        self.accept_call = accept_call
        self.client = client
        self._held = False
        self.running = 0
        """Served ``async`` calls not finished yet."""
        self.broken: ClusterRPCError | None = None
        """Why the stream broke (framing), or ``None``."""
        self.replies_dropped = 0
        """Answers to multicast calls that did not decode: dropped (the member is missing)."""
        self._decoder = FrameDecoder(max_frame=max_frame or messenger.max_packet)
        # Frames waiting, with their arrival on the wall clock (for the caller's deadline).
        self._backlog: collections.deque[tuple[bytes, float]] = collections.deque()
        self._out: list[bytes] = []
        self._datagrams: list[tuple[bytes, Destination]] = []
        self._events: list[Event] = []
        self._oneway_ids = 0

    # -- input ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview, *, now: float) -> None:
        """Feed bytes read from the stream. Frames are served (or matched to their calls) in
        order, as far as back-pressure allows. A frame over the limit breaks the stream: every
        call in flight fails and a :class:`ConnectionBroken` event says to close. ``now`` is the
        driver's clock (the one deadlines are in); what arrives never depends on it today —
        deadlines pass only in :meth:`expire` — but every input carries it, so that protocols
        built on this one (membership, election) get the time with their packets."""
        if self.broken is not None:
            return
        try:
            frames = self._decoder.feed(data)
        except PacketError as error:
            self.messenger.opener.counters.increment(error.counter)
            self._break(ConnectionLostError(f"{self.peer} broke framing: {error}"))
            return
        if not frames:
            return
        backlog = self._backlog
        if backlog or self.running >= self.max_running or self._held:
            arrival = self.messenger.clock()
            backlog.extend((data_frame, arrival) for data_frame in frames)
            self._serve_backlog()
            return
        receive = self._receive
        peer = self.peer
        for index, data_frame in enumerate(frames):
            receive(data_frame, None, peer)
            if index + 1 < len(frames) and (self.running >= self.max_running or self._held):
                arrival = self.messenger.clock()
                backlog.extend((rest, arrival) for rest in frames[index + 1:])
                return

    def receive_datagram(self, data: bytes, source: object, *, peer: str, now: float) -> None:
        """Handle one datagram from ``source`` (its socket address; answers go back there),
        whose text form is ``peer``."""
        self._receive(data, source, peer)

    def _serve_backlog(self) -> None:
        backlog = self._backlog
        while (backlog and self.running < self.max_running and self.broken is None
               and not self._held):
            data_frame, arrival = backlog.popleft()
            self._receive(data_frame, None, self.peer, arrival)

    @property
    def held(self) -> bool:
        """Whether frames are held back unserved (class docstring)."""
        return self._held

    @held.setter
    def held(self, value: bool) -> None:
        self._held = value
        if not value and self._backlog:
            self._serve_backlog()

    @property
    def paused(self) -> bool:
        """Whether the driver should stop reading: frames wait in the backlog, ``max_running``
        served calls still run, or the connection is :attr:`held`."""
        return bool(self._backlog) or self.running >= self.max_running or self._held

    @property
    def waiting(self) -> int:
        """Complete frames waiting in the backlog (back-pressure, or :attr:`held`)."""
        return len(self._backlog)

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held by the stream's decoder."""
        return self._decoder.buffered

    def _receive(self, data: bytes, source: object, peer: str, arrival: float | None = None
                 ) -> None:
        messenger = self.messenger
        try:
            packet = messenger.authenticate(data, now=messenger.clock())
        except AuthenticationError as error:
            # Refused and counted by the opener; the conversation goes on.
            log.debug("refused a packet from %s: %s", peer, error)
            return
        header = packet.header
        if header.flags & _FLAGS_CALL:
            if self.dispatcher is None:
                self.counters["unexpected"] += 1
            elif self.accept_call is None or self.accept_call(header):
                self._serve(packet, source, peer, arrival)
            return
        self._answer_received(packet)

    def _serve(self, packet: ReceivedPacket, source: object, peer: str,
               arrival: float | None) -> None:
        dispatcher = self.dispatcher
        assert dispatcher is not None
        header = packet.header
        oneway = bool(header.flags & _ONEWAY)
        try:
            message = self.messenger.opener.decode(packet)
            if not isinstance(message, CallMessage):
                raise DecodeError("call flags on a body that is not a call")
        except DecodeError as error:
            refusal = dispatcher.undecodable(error, oneway=oneway, sender=header.sender,
                                             peer=peer)
            self._send_answer(header.call_id, header.codec_id, refusal, source)
            return
        deadline = None
        if header.timeout_code:
            # The caller's deadline on this node's clock: the timeout counted from arrival, an
            # upper bound that needs no synchronised clocks (spec/packet.md, "Timeout").
            now = self.messenger.clock()
            deadline = (now if arrival is None else arrival) + (
                decode_timeout(header.timeout_code) or 0.0)
            if arrival is not None and deadline <= now:
                dispatcher.counters["expired"] += 1  # the caller gave up while it waited
                return
        context = new_call_context(
            message.method,
            header.sender,
            header.key_id or None,
            self.transport,
            peer,
            deadline,
            oneway,
            bool(header.flags & _FLAGS_MULTICAST),
            self.client,
            header.epoch,
        )  # fmt: skip
        result = dispatcher.start(message, context)
        if inspect.iscoroutine(result):
            self.running += 1
            self._events.append(Invocation(self, result, context, call_id=header.call_id,
                                           codec_id=header.codec_id, destination=source))
            return
        self._send_answer(header.call_id, header.codec_id, result, source)  # type: ignore[arg-type]

    @property
    def dispatcher_for_invocations(self) -> Dispatcher:
        """The dispatcher that completes this connection's invocations."""
        assert self.dispatcher is not None
        return self.dispatcher

    def finished(self, invocation: Invocation, answer: Answer) -> None:
        """An :class:`Invocation` ended (its :meth:`Invocation.run` calls this): queue the
        answer and serve frames that waited for a free slot. The driver then flushes."""
        self.running -= 1
        self._send_answer(invocation.call_id, invocation.codec_id, answer,
                          invocation.destination)
        if self._backlog:
            self._serve_backlog()

    def _send_answer(self, call_id: int, codec_id: int, answer: Answer, destination: object
                     ) -> None:
        if answer is NO_ANSWER or self.broken is not None:
            return
        messenger = self.messenger
        try:
            packet = messenger.seal_answer(call_id, codec_id, answer)  # type: ignore[arg-type]
            if not self.stream and self.max_datagram and len(packet) > self.max_datagram:
                packet = messenger.seal_answer(call_id, codec_id, Fault(
                    FaultCode.TRANSPORT_ERROR,
                    f"the reply of {len(packet)} bytes does not fit in a UDP datagram; "
                    "call this method over tcp:// or unix://",
                ))  # fmt: skip
        except EncodeError as error:  # even the fault does not fit: a tiny max_packet
            log.error("cannot answer call %d: %s", call_id, error)
            return
        if self.stream:
            self._out.append(len(packet).to_bytes(4, "big") + packet)
        else:
            self._datagrams.append((packet, destination))

    def _answer_received(self, packet: ReceivedPacket) -> None:
        header = packet.header
        call_id = header.call_id
        if self.gathers.in_flight and call_id in self.gathers:
            try:
                message = self.messenger.decode_answer(packet)
            except DecodeError:
                self.replies_dropped += 1
                return
            replies = self.gathers.receive(call_id, header.sender, message)
            if replies is not None:
                self._events.append(GatherEnded(call_id, replies))
            return
        calls = self.calls
        try:
            message = self.messenger.decode_answer(packet)
        except DecodeError as error:
            outcome = calls.cancel(call_id)
            if outcome is not None:
                self._events.append(CallFailed(call_id, error))
            return
        settled = calls.receive(call_id, message)
        if settled is not None:  # None: a late answer, counted by the tracker and dropped
            self._events.append(settled)

    # -- output: calls -------------------------------------------------------------------------

    @property
    def has_capacity(self) -> bool:
        """Whether a normal call may start (``max_in_flight`` not reached)."""
        return self.calls.has_capacity

    @property
    def late_replies(self) -> int:
        """Answers that matched no call waiting (late, duplicated, or for a one-way call):
        counted, dropped."""
        return self.calls.late_replies + self.gathers.late_replies

    @property
    def in_flight(self) -> int:
        """Normal and multicast calls waiting for their answers."""
        return self.calls.in_flight + self.gathers.in_flight

    def send_call(self, method: str, params: Sequence[Value], *, now: float,
                  timeout: float | None, oneway: bool = False,
                  destinations: Sequence[Destination] = (None,)) -> int:
        """Queue a call of ``method``; return its call id (its answer comes as a
        :data:`~clusterrpc.rpc.calls.CallOutcome` event, unless ``oneway``). ``destinations``:
        the socket addresses of a datagram connection (the same packet to each).

        Raises :class:`~clusterrpc.errors.ConfigurationError` for a bad ``timeout``,
        :class:`~clusterrpc.rpc.calls.TooManyCallsError` without capacity (wait for
        :attr:`has_capacity`), :class:`~clusterrpc.errors.EncodeError` for a value the codec
        cannot carry or a packet too large; nothing is queued then.
        """
        outgoing = self.calls.start(method, params, now=now, timeout=timeout, oneway=oneway)
        try:
            packet = self.messenger.seal_call(outgoing.call_id, outgoing.message, oneway=oneway,
                                              timeout=None if oneway else timeout)
            if self.stream:  # the common case, inline
                self._out.append(len(packet).to_bytes(4, "big") + packet)
            else:
                self._queue_call(packet, f"call to {method!r}", destinations,
                                 "UDP datagram", "use a tcp:// or unix:// address for it")
        except BaseException:
            self.calls.cancel(outgoing.call_id)
            raise
        return outgoing.call_id

    def send_group_call(self, method: str, params: Sequence[Value], *, now: float,
                        timeout: float, destinations: Sequence[Destination],
                        expected: Collection[str] | None = None, quorum: int | None = None,
                        before_send: Callable[[int], None] | None = None) -> int:
        """Queue one multicast call to ``destinations`` (a group address, or every fan-out
        member) and gather the answers by sender name; return its call id. The result comes as
        a :class:`GatherEnded` event. ``before_send(call_id)`` runs before the packet is queued
        (a node excludes its own call from serving). Raises as :meth:`send_call`."""
        call_id = self.gathers.start(method, now=now, timeout=timeout, expected=expected,
                                     quorum=quorum)
        try:
            self._send_multicast(call_id, method, params, oneway=False, timeout=timeout,
                                 destinations=destinations, before_send=before_send)
        except BaseException:
            self.gathers.cancel(call_id)
            raise
        return call_id

    def send_group_oneway(self, method: str, params: Sequence[Value], *,
                          destinations: Sequence[Destination],
                          before_send: Callable[[int], None] | None = None) -> int:
        """Queue a one-way multicast call to ``destinations``: nothing comes back. Returns its
        call id (from :data:`ONEWAY_ID_BASE` up). Raises
        :class:`~clusterrpc.errors.EncodeError` for a packet too large."""
        self._oneway_ids = self._oneway_ids % ONEWAY_ID_BASE + 1
        call_id = ONEWAY_ID_BASE + self._oneway_ids
        self._send_multicast(call_id, method, params, oneway=True, timeout=None,
                             destinations=destinations, before_send=before_send)
        return call_id

    def _send_multicast(self, call_id: int, method: str, params: Sequence[Value], *,
                        oneway: bool, timeout: float | None,
                        destinations: Sequence[Destination],
                        before_send: Callable[[int], None] | None) -> None:
        packet = self.messenger.seal_call(call_id, CallMessage(method, tuple(params)),
                                          oneway=oneway, multicast=True, timeout=timeout)
        if before_send is not None:
            before_send(call_id)
        self._queue_call(packet, f"multicast call to {method!r}", destinations, "datagram",
                         "multicast payloads must be small")

    def _queue_call(self, packet: bytes, what: str, destinations: Sequence[Destination],
                    unit: str, advice: str) -> None:
        if self.stream:
            self._out.append(len(packet).to_bytes(4, "big") + packet)
            return
        limit = self.max_datagram
        if limit and len(packet) > limit:
            raise EncodeError(
                f"{what} of {len(packet)} bytes does not fit in one {unit} ({limit} bytes at "
                f"most); {advice}"
            )
        self._datagrams.extend((packet, destination) for destination in destinations)

    def cancel(self, call_id: int) -> None:
        """Give up on the call ``call_id`` (its caller went away): a later answer is late."""
        self.calls.cancel(call_id)
        self.gathers.cancel(call_id)

    def fail(self, call_id: int, error: ClusterRPCError) -> None:
        """Settle the call ``call_id`` with ``error`` (a :class:`~clusterrpc.rpc.calls.CallFailed`
        event)."""
        if self.calls.cancel(call_id) is not None:
            self._events.append(CallFailed(call_id, error))

    def fail_all(self, error: ClusterRPCError) -> None:
        """Fail every call waiting for an answer with ``error`` (the connection was lost or
        closed): a :class:`~clusterrpc.rpc.calls.CallFailed` event each. Multicast calls still
        gathering are dropped without an event; the driver fails their callers with ``error``
        too."""
        self._events.extend(self.calls.fail_all(error))
        self.gathers.cancel_all()

    def _break(self, error: ClusterRPCError) -> None:
        self.broken = error
        self._backlog.clear()
        self.fail_all(error)
        self._events.append(ConnectionBroken(error))

    # -- timers --------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest deadline of a call waiting for answers (``now``'s clock), or ``None``.
        The driver calls :meth:`expire` when it passes."""
        calls = self.calls.next_deadline()
        gathers = self.gathers.next_deadline()
        if calls is None:
            return gathers
        return calls if gathers is None or calls <= gathers else gathers

    def expire(self, now: float) -> None:
        """End the calls whose deadline is ``<= now`` (timeouts; multicast calls return what
        they gathered)."""
        events = self._events
        for outcome in self.calls.expire(now):
            events.append(outcome)
        for call_id, replies in self.gathers.expire(now):
            events.append(GatherEnded(call_id, replies))

    # -- output --------------------------------------------------------------------------------

    def answer_of(self, call_id: int) -> CallOutcome | None:
        """For a driver that waits for one call at a time (a blocking client): take the events
        so far and return the outcome of ``call_id`` if it came, else ``None`` (keep reading).
        Raises the error that broke the stream. Other events are dropped: such a driver serves
        nothing, and late answers were already counted."""
        for event in self.events_received():
            if isinstance(event, CallSucceeded | CallFailed) and event.call_id == call_id:
                return event
            if type(event) is ConnectionBroken:
                raise event.error
        return None

    def events_received(self) -> list[Event]:
        """What happened since the last call, in order; the driver handles every event."""
        events = self._events
        if events:
            self._events = []
        return events

    def data_to_send(self) -> bytes:
        """The bytes to write to the stream now (``b""`` when none)."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    def datagrams_to_send(self) -> list[tuple[bytes, Destination]]:
        """The ``(datagram, destination)`` pairs to send now."""
        datagrams = self._datagrams
        if datagrams:
            self._datagrams = []
        return datagrams
