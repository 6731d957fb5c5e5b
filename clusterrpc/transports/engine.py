"""The glue between packets and calls that every packet transport shares.

:class:`Messenger` seals the calls and answers one sender puts on the wire and opens the
packets it receives (counting and logging every refusal, so a transport only sees authentic
packets). :class:`CallServer` turns an authentic call packet into the call of a served method
and its answer: a reply, a fault, or — for a one-way call — nothing at all, ever.

Neither opens a socket: transports hand them bytes and a ``respond`` function. ``CallServer``
needs a running event loop only for ``async`` methods (it schedules a task for them); plain
methods run inline, which is what makes small calls cheap.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import typing
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from clusterrpc.codecs import CallMessage, Codec, FaultMessage, ReplyMessage, default_registry
from clusterrpc.envelope import DEFAULT_MAX_PACKET, PacketOpener, PacketSealer, ReceivedPacket
from clusterrpc.errors import (
    AuthenticationError,
    ClusterRPCError,
    DecodeError,
    EncodeError,
    Fault,
    FaultCode,
)
from clusterrpc.keyring import Keyring
from clusterrpc.packet import CALL, FAULT, MULTICAST, ONEWAY, REPLY, decode_timeout, encode_timeout
from clusterrpc.rpc.calls import CallOutcome, CallSucceeded, CallTracker, OutgoingCall
from clusterrpc.rpc.context import CallContext, new_call_context
from clusterrpc.rpc.service import ServiceRegistry
from clusterrpc.values import DEFAULT_LIMITS, Limits, Value

__all__ = ["CallServer", "DeadlineTimer", "Messenger", "PendingCalls", "new_epoch"]

log = logging.getLogger("clusterrpc.transport")

_FLAGS_CALL = int(CALL)
_FLAGS_ONEWAY_CALL = int(CALL | ONEWAY)
_FLAGS_REPLY = int(REPLY)
_FLAGS_FAULT = int(FAULT)


def new_epoch() -> int:
    """An epoch for a sender starting now: the wall clock in microseconds, so that it grows
    across restarts (``spec/packet.md``)."""
    return time.time_ns() // 1000


class Messenger:
    """Seals and opens the packets of one sending node (or client).

    ``node``/``cluster``/``keyring``/``insecure`` configure the
    :class:`~clusterrpc.envelope.PacketSealer` and :class:`~clusterrpc.envelope.PacketOpener`
    (``insecure=True`` sends unauthenticated packets when ``keyring`` is ``None`` and accepts
    them). ``codec`` encodes the calls this side sends; answers are encoded with the codec of the
    call they answer, so every installed codec (with ``limits``) is accepted on input. ``clock``
    is the wall clock for packet timestamps and the replay window's freshness check.

    Raises :class:`~clusterrpc.errors.ConfigurationError` for a bad configuration. Not
    thread-safe.
    """

    def __init__(
        self,
        *,
        node: str,
        cluster: str,
        keyring: Keyring | None,
        insecure: bool = False,
        codec: str | int = "xmlrpc",
        limits: Limits = DEFAULT_LIMITS,
        max_packet: int = DEFAULT_MAX_PACKET,
        replay_window: int = 1024,
        freshness: float = 30.0,
        epoch: int | None = None,
        clock: Callable[[], float] = time.time,
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
            cluster=cluster, node=node, epoch=new_epoch() if epoch is None else epoch,
            keyring=keyring, insecure=insecure, max_packet=max_packet,
        )  # fmt: skip
        self.opener = PacketOpener(
            cluster=cluster, keyring=keyring, allow_insecure=insecure,
            codecs=codecs.values(), replay_window=replay_window, freshness=freshness,
            max_packet=max_packet,
        )  # fmt: skip
        self.max_packet = max_packet
        self._open = self.opener.open
        self._seal = self.sealer.seal
        self._encode_call = self.codec.encode_call
        self._codec_id = self.codec.codec_id

    def use_keyring(self, keyring: Keyring | None) -> None:
        """Sign and verify with ``keyring`` from now on (a key rotation's step)."""
        self.sealer.use_keyring(keyring)
        self.opener.use_keyring(keyring)

    def seal_call(self, call_id: int, message: CallMessage, *, oneway: bool = False,
                  multicast: bool = False, timeout: float | None = None) -> bytes:
        """Encode and seal a call; ``timeout`` (seconds) travels in the header, so that the
        callee knows the caller's deadline. Raises :class:`~clusterrpc.errors.EncodeError` for
        a value the codec cannot carry or a packet over ``max_packet``; nothing is sent then."""
        flags = _FLAGS_ONEWAY_CALL if oneway else _FLAGS_CALL
        if multicast:
            flags |= int(MULTICAST)
        body = self._encode_call(message.method, message.params)
        return self._seal(flags=flags, codec_id=self._codec_id, call_id=call_id, body=body,
                          now=self.clock(), timeout_code=encode_timeout(timeout))

    def seal_answer(self, call_id: int, codec_id: int, answer: Value | Fault) -> bytes:
        """Encode and seal the reply (or, for a :class:`~clusterrpc.errors.Fault`, the fault)
        to call ``call_id`` with the codec ``codec_id`` the call used.

        A value that cannot be encoded, or a reply over ``max_packet``, becomes a fault
        ``-32603`` saying why: the caller always gets an answer.
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
            return self._open(data, now=self.clock())
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


Respond = Callable[[bytes], None]
"""How a transport sends an answer packet back to the caller of one call."""


class CallServer:
    """Serves the call packets a node's transports receive (see the module docstring).

    ``counters`` counts ``calls`` (normal calls served), ``oneway_calls``, ``faults`` (answers
    that were faults), ``oneway_errors`` (one-way calls that failed: logged, never answered),
    ``bad_calls`` (authentic packets whose body did not decode), ``unexpected`` (authentic
    answers nobody waits for on a serving socket) and ``multicast_ignored`` (multicast calls of
    a method this node does not publish: only members that have it answer).
    """

    def __init__(self, messenger: Messenger, registry: ServiceRegistry) -> None:
        self.messenger = messenger
        self.registry = registry
        self.counters: dict[str, int] = dict.fromkeys(
            ("calls", "oneway_calls", "faults", "oneway_errors", "bad_calls", "unexpected",
             "multicast_ignored"), 0
        )
        self.tasks: set[asyncio.Task[None]] = set()
        """Calls of ``async`` methods still running (``Node`` waits for them when it stops)."""

    def serve(
        self, packet: ReceivedPacket, *, transport: str, peer: str, respond: Respond
    ) -> asyncio.Task[None] | None:
        """Serve one authentic call packet; answer it through ``respond`` unless it is one-way.

        Returns the task still running an ``async`` method, or ``None`` if the call is already
        answered. Never raises for anything the caller sent: errors become faults (or, one-way,
        a log line and a count). ``respond`` must not raise.
        """
        header = packet.header
        oneway = bool(header.flags & ONEWAY)
        try:
            message = self.messenger.opener.decode(packet)
            if not isinstance(message, CallMessage):
                raise DecodeError("call flags on a body that is not a call")
        except DecodeError as error:
            self.counters["bad_calls"] += 1
            if oneway:
                self.counters["oneway_errors"] += 1
                log.warning("one-way call from %s (%s) did not decode: %s",
                            header.sender, peer, error)
            else:
                self._answer(header.call_id, header.codec_id,
                             Fault(error.fault_code, str(error)), respond)
            return None
        context = new_call_context(
            message.method,
            header.sender,
            header.key_id or None,
            transport,
            peer,
            # The caller's deadline on this node's clock: the timeout counted from arrival, an
            # upper bound that needs no synchronised clocks (spec/packet.md, "Timeout").
            None if not header.timeout_code
            else self.messenger.clock() + (decode_timeout(header.timeout_code) or 0.0),
            oneway,
            bool(header.flags & MULTICAST),
        )  # fmt: skip
        result: Value | Fault | Coroutine[Any, Any, Value]
        try:
            result = self.registry.run(message, context)
        except Fault as fault:
            if context.multicast and fault.code == FaultCode.METHOD_NOT_FOUND:
                # Only the members that publish the method answer a multicast call.
                self.counters["multicast_ignored"] += 1
                return None
            result = fault
        if not inspect.iscoroutine(result):
            self._settle(typing.cast("Value | Fault", result), call_id=header.call_id,
                         codec_id=header.codec_id, oneway=oneway, context=context,
                         respond=respond)
            return None
        task = asyncio.get_running_loop().create_task(self._finish(
            result, call_id=header.call_id, codec_id=header.codec_id, oneway=oneway,
            context=context, respond=respond,
        ))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _finish(self, coroutine: Coroutine[Any, Any, Value], *, call_id: int,
                      codec_id: int, oneway: bool, context: CallContext, respond: Respond
                      ) -> None:
        try:
            answer: Value | Fault = await coroutine
        except Fault as fault:
            answer = fault
        self._settle(answer, call_id=call_id, codec_id=codec_id, oneway=oneway, context=context,
                     respond=respond)

    def _settle(self, answer: Value | Fault, *, call_id: int, codec_id: int, oneway: bool,
                context: CallContext, respond: Respond) -> None:
        if oneway:
            self.counters["oneway_calls"] += 1
            if isinstance(answer, Fault):
                # Nobody will ever hear of this fault but the log and the counter.
                self.counters["oneway_errors"] += 1
                log.warning("one-way call %s from %s (%s) failed: %s",
                            context.method, context.node, context.peer, answer)
            return
        self.counters["calls"] += 1
        self._answer(call_id, codec_id, answer, respond)

    def _answer(self, call_id: int, codec_id: int, answer: Value | Fault,
                respond: Respond) -> None:
        if isinstance(answer, Fault):
            self.counters["faults"] += 1
        try:
            packet = self.messenger.seal_answer(call_id, codec_id, answer)
        except EncodeError as error:  # even the fault does not fit: a tiny max_packet
            log.error("cannot answer call %d: %s", call_id, error)
            return
        respond(packet)



class DeadlineTimer:
    """One event-loop timer at the earliest deadline of a tracker (a
    :class:`~clusterrpc.rpc.CallTracker` or a gathering): when it fires, ``expire(now)`` ends
    what is due, and the timer moves to the next deadline.

    The timer is never moved *later* when calls finish early: it fires, expires nothing and
    re-arms, which is cheaper than rescheduling a timer for every call. Call :meth:`arm` after
    anything that may have added an earlier deadline. One event loop.
    """

    __slots__ = ("_expire", "_handle", "_next_deadline", "_when")

    def __init__(self, next_deadline: Callable[[], float | None],
                 expire: Callable[[float], None]) -> None:
        self._next_deadline = next_deadline
        self._expire = expire
        self._handle: asyncio.TimerHandle | None = None
        self._when = float("inf")

    def arm(self) -> None:
        """Make sure the timer fires by the tracker's earliest deadline."""
        deadline = self._next_deadline()
        if deadline is None or deadline >= self._when:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._when = deadline
        self._handle = asyncio.get_running_loop().call_at(deadline, self._fire)

    def cancel(self) -> None:
        """Stop the timer (the tracker is being closed)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._when = float("inf")

    def _fire(self) -> None:
        self._handle = None
        self._when = float("inf")
        self._expire(asyncio.get_running_loop().time())
        self.arm()


class PendingCalls:
    """The calls one client endpoint waits for, with their futures and one deadline timer:
    the asyncio side of a :class:`~clusterrpc.rpc.CallTracker`, shared by the stream and
    datagram transports. Must be used from one event loop."""

    def __init__(self, *, max_in_flight: int = 256) -> None:
        self.tracker = CallTracker(max_in_flight=max_in_flight)
        self._waiters: dict[int, asyncio.Future[Value]] = {}
        self._slot_freed: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._timer = DeadlineTimer(self.tracker.next_deadline, self._expire)

    async def wait_for_slot(self) -> None:
        """Return once a normal call may start (``max_in_flight`` not reached). The caller
        bounds the wait with its timeout."""
        while not self.tracker.has_capacity:
            if self._slot_freed is None:
                self._slot_freed = asyncio.Event()
            self._slot_freed.clear()
            await self._slot_freed.wait()

    def start(self, method: str, params: Sequence[Value], *, timeout: float | None,
              oneway: bool) -> OutgoingCall:
        """Allocate the call (see :meth:`CallTracker.start`, which raises for a full tracker
        or a bad timeout); the caller seals and sends it, then awaits :meth:`wait` (or
        :meth:`cancel` if sending failed)."""
        return self.tracker.start(method, params, now=asyncio.get_running_loop().time(),
                                  timeout=timeout, oneway=oneway)

    async def wait(self, call_id: int) -> Value:
        """The answer to ``call_id``: its value, or the error that settled it. Cancelling the
        awaiting task cancels the call (a late answer is then dropped)."""
        waiter: asyncio.Future[Value] = asyncio.get_running_loop().create_future()
        self._waiters[call_id] = waiter
        self._timer.arm()
        try:
            return await waiter
        except asyncio.CancelledError:
            self._waiters.pop(call_id, None)
            self.tracker.cancel(call_id)
            raise

    def answer(self, call_id: int, message: ReplyMessage | FaultMessage) -> None:
        """An answer arrived (late and unknown ones are counted by the tracker, dropped)."""
        self._settle(self.tracker.receive(call_id, message))

    def fail(self, call_id: int, error: ClusterRPCError) -> None:
        """Fail the call ``call_id`` with ``error`` (e.g. its answer did not decode)."""
        self._settle(self.tracker.cancel(call_id), error)

    def cancel(self, call_id: int) -> None:
        """Forget the call ``call_id`` (it could not be sent)."""
        self.tracker.cancel(call_id)

    def fail_all(self, error: ClusterRPCError) -> None:
        """Fail every waiting call with ``error`` (connection lost or closed)."""
        for outcome in self.tracker.fail_all(error):
            self._settle(outcome)

    def close(self, error: ClusterRPCError) -> None:
        """:meth:`fail_all` and stop the timer."""
        self._timer.cancel()
        self.fail_all(error)

    def _settle(self, outcome: CallOutcome | None, error: ClusterRPCError | None = None
                ) -> None:
        if outcome is None:
            return
        waiter = self._waiters.pop(outcome.call_id, None)
        if waiter is not None and not waiter.done():
            if isinstance(outcome, CallSucceeded):
                waiter.set_result(outcome.value)
            else:
                waiter.set_exception(error or outcome.error)
        if self._slot_freed is not None:
            self._slot_freed.set()
        if self._idle is not None and not self.tracker.in_flight:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no call waits for an answer (the caller bounds the wait)."""
        while self.tracker.in_flight:
            if self._idle is None:
                self._idle = asyncio.Event()
            self._idle.clear()
            await self._idle.wait()

    def _expire(self, now: float) -> None:
        for outcome in self.tracker.expire(now):
            self._settle(outcome)
