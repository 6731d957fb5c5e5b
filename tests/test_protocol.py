"""The connection protocol (``clusterrpc.rpc.protocol``) without sockets: bytes in, events and
bytes out, time passed in. Two ``Connection`` objects are wired back to back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clusterrpc import Fault, FaultCode, Keyring, current_call, oneway, remote
from clusterrpc.errors import (
    CallTimeoutError,
    ConnectionLostError,
    EncodeError,
    TooManyCallsError,
)
from clusterrpc.packet import frame
from clusterrpc.rpc.calls import CallFailed, CallSucceeded
from clusterrpc.rpc.protocol import (
    COUNTER_NAMES,
    NO_ANSWER,
    Connection,
    ConnectionBroken,
    Dispatcher,
    GatherEnded,
    Invocation,
    Messenger,
)
from clusterrpc.rpc.service import ServiceRegistry

from .rpc_helpers import CLUSTER, make_keyring

KEYRING = make_keyring()
WALL = 1_800_000_000.0  # the messengers' injected wall clock: fixed, packets stay fresh


class Pair:
    """Services and a messenger for one side."""

    def __init__(self, name: str, keyring: Keyring = KEYRING, epoch: int = 1) -> None:
        self.registry = ServiceRegistry()
        self.dispatcher = Dispatcher(self.registry)
        self.messenger = Messenger(node=name, cluster=CLUSTER, keyring=keyring, epoch=epoch,
                                   clock=lambda: WALL)

    def connection(self, *, serves: bool = True, **options: Any) -> Connection:
        return Connection(self.messenger, dispatcher=self.dispatcher if serves else None,
                          transport="tcp", peer=f"{self.messenger.node}-peer", **options)


class Service:
    def __init__(self) -> None:
        self.seen: list[object] = []

    @remote
    def add(self, a: int, b: int) -> int:
        return a + b

    @remote
    def who(self) -> dict[str, Any]:
        call = current_call()
        return {"node": call.node, "transport": call.transport, "peer": call.peer}

    @remote
    def grow(self, size: int) -> str:
        return "x" * size

    @remote
    def fail(self) -> None:
        raise RuntimeError("broken")

    @oneway
    def note(self, value: int) -> None:
        self.seen.append(value)

    @oneway
    def crash(self) -> None:
        raise RuntimeError("one-way failure")

    @remote
    async def slow(self, value: int) -> int:
        await asyncio.sleep(0)
        return value * 2


def shuttle(a: Connection, b: Connection) -> None:
    """Move bytes both ways until both sides are quiet."""
    for _ in range(10):
        ab, ba = a.data_to_send(), b.data_to_send()
        if not ab and not ba:
            return
        if ab:
            b.receive_data(ab, now=0.0)
        if ba:
            a.receive_data(ba, now=0.0)


def answers(connection: Connection) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for event in connection.events_received():
        assert isinstance(event, CallSucceeded | CallFailed)
        out[event.call_id] = event.value if isinstance(event, CallSucceeded) else event.error
    return out


@pytest.fixture
def sides() -> tuple[Pair, Pair]:
    left, right = Pair("left"), Pair("right")
    left.registry.serve(Service(), name="svc")
    right.registry.serve(Service(), name="svc")
    return left, right


def test_a_call_and_its_answer(sides: tuple[Pair, Pair]) -> None:
    left, right = sides
    a, b = left.connection(serves=False), right.connection()
    call_id = a.send_call("svc.add", (2, 3), now=0.0, timeout=5.0)
    shuttle(a, b)
    assert answers(a) == {call_id: 5}
    assert b.events_received() == []
    assert right.dispatcher.counters["calls"] == 1


def test_calls_in_both_directions_on_one_connection(sides: tuple[Pair, Pair]) -> None:
    left, right = sides
    a, b = left.connection(), right.connection()
    from_a = [a.send_call("svc.add", (i, 1), now=0.0, timeout=5.0) for i in range(3)]
    from_b = [b.send_call("svc.who", (), now=0.0, timeout=5.0) for _ in range(2)]
    shuttle(a, b)
    assert answers(a) == {call_id: i + 1 for i, call_id in enumerate(from_a)}
    got = answers(b)
    assert set(got) == set(from_b)
    for value in got.values():
        assert value == {"node": "right", "transport": "tcp", "peer": "left-peer"}
    assert left.dispatcher.counters["calls"] == 2
    assert right.dispatcher.counters["calls"] == 3


def test_oneway_calls_get_no_answer_even_when_they_fail(sides: tuple[Pair, Pair]) -> None:
    left, right = sides
    a, b = left.connection(serves=False), right.connection()
    a.send_call("svc.note", (7,), now=0.0, timeout=None, oneway=True)
    a.send_call("svc.crash", (), now=0.0, timeout=None, oneway=True)
    a.send_call("svc.nothing", (), now=0.0, timeout=None, oneway=True)
    b.receive_data(a.data_to_send(), now=0.0)
    assert b.data_to_send() == b""  # nothing at all goes back
    counters = right.dispatcher.counters
    assert (counters["oneway_calls"], counters["oneway_errors"]) == (3, 2)
    assert a.in_flight == 0


def test_faults_are_answers(sides: tuple[Pair, Pair]) -> None:
    left, right = sides
    a, b = left.connection(serves=False), right.connection()
    failed = a.send_call("svc.fail", (), now=0.0, timeout=5.0)
    unknown = a.send_call("svc.nothing", (), now=0.0, timeout=5.0)
    shuttle(a, b)
    got = answers(a)
    assert isinstance(got[failed], Fault)
    assert got[failed].code == FaultCode.APPLICATION_ERROR
    assert got[unknown].code == FaultCode.METHOD_NOT_FOUND
    assert right.dispatcher.counters["faults"] == 2


def test_a_client_only_side_drops_calls(sides: tuple[Pair, Pair]) -> None:
    left, right = sides
    a, b = left.connection(), right.connection(serves=False)
    a.send_call("svc.add", (1, 1), now=0.0, timeout=5.0)
    b.receive_data(a.data_to_send(), now=0.0)
    assert b.data_to_send() == b""
    assert b.counters["unexpected"] == 1


def test_deadlines_run_on_the_time_passed_in(sides: tuple[Pair, Pair]) -> None:
    left, _ = sides
    a = left.connection(serves=False)
    early = a.send_call("svc.add", (1, 1), now=100.0, timeout=0.5)
    late = a.send_call("svc.add", (1, 1), now=100.0, timeout=2.0)
    assert a.next_deadline() == 100.5
    a.expire(100.49)
    assert a.events_received() == []
    a.expire(100.5)
    (event,) = a.events_received()
    assert isinstance(event, CallFailed)
    assert event.call_id == early
    assert isinstance(event.error, CallTimeoutError)
    assert a.next_deadline() == 102.0
    a.cancel(late)
    assert a.next_deadline() is None


def test_capacity_is_enforced(sides: tuple[Pair, Pair]) -> None:
    left, _ = sides
    a = left.connection(serves=False, max_in_flight=1)
    a.send_call("svc.add", (1, 1), now=0.0, timeout=5.0)
    assert not a.has_capacity
    with pytest.raises(TooManyCallsError):
        a.send_call("svc.add", (1, 1), now=0.0, timeout=5.0)
    a.send_call("svc.note", (1,), now=0.0, timeout=None, oneway=True)  # takes no slot


def test_async_methods_become_invocations_and_back_pressure_holds_frames(
        sides: tuple[Pair, Pair]) -> None:
    left, right = sides
    a, b = left.connection(serves=False), right.connection(max_running=1)
    first = a.send_call("svc.slow", (1,), now=0.0, timeout=5.0)
    second = a.send_call("svc.add", (2, 2), now=0.0, timeout=5.0)
    b.receive_data(a.data_to_send(), now=0.0)
    (invocation,) = b.events_received()
    assert isinstance(invocation, Invocation)
    assert b.paused  # the plain call waits behind the running one: order is kept
    assert b.data_to_send() == b""

    asyncio.run(invocation.run())
    assert not b.paused
    a.receive_data(b.data_to_send(), now=0.0)
    assert answers(a) == {first: 2, second: 4}


def test_a_frame_over_the_limit_breaks_the_stream(sides: tuple[Pair, Pair]) -> None:
    left, right = sides
    a, b = left.connection(serves=False), right.connection(max_frame=64)
    waiting = b.send_call("svc.add", (1, 1), now=0.0, timeout=5.0)
    b.receive_data(frame(b"x" * 65), now=0.0)
    events = b.events_received()
    assert isinstance(events[0], CallFailed)
    assert events[0].call_id == waiting
    assert isinstance(events[0].error, ConnectionLostError)
    assert isinstance(events[1], ConnectionBroken)
    assert right.messenger.counters["refused_malformed"] == 1
    assert a.in_flight == 0


def test_a_refused_packet_is_dropped_and_the_stream_goes_on(sides: tuple[Pair, Pair]) -> None:
    left, right = sides
    stranger = Pair("stranger", keyring=make_keyring("other"))
    a, b = left.connection(serves=False), right.connection()
    intruder = stranger.connection(serves=False)
    intruder.send_call("svc.add", (1, 1), now=0.0, timeout=5.0)
    call_id = a.send_call("svc.add", (1, 2), now=0.0, timeout=5.0)
    b.receive_data(intruder.data_to_send() + a.data_to_send(), now=0.0)
    a.receive_data(b.data_to_send(), now=0.0)
    assert answers(a) == {call_id: 3}
    assert right.messenger.counters["refused_unknown_key"] == 1


def test_datagram_mode_answers_to_the_source_and_limits_sizes(sides: tuple[Pair, Pair]) -> None:
    left, right = sides
    a = left.connection(serves=False, stream=False, max_datagram=1500)
    b = right.connection(stream=False, max_datagram=1500)
    call_id = a.send_call("svc.add", (1, 2), now=0.0, timeout=5.0, destinations=[("b", 1)])
    ((packet, destination),) = a.datagrams_to_send()
    assert destination == ("b", 1)
    b.receive_datagram(packet, ("a", 9), peer="a:9", now=0.0)
    ((answer, back),) = b.datagrams_to_send()
    assert back == ("a", 9)
    a.receive_datagram(answer, ("b", 1), peer="b:1", now=0.0)
    assert answers(a) == {call_id: 3}
    with pytest.raises(EncodeError, match="does not fit in one UDP datagram"):
        a.send_call("svc.add", ("x" * 1500, ""), now=0.0, timeout=5.0)
    assert a.in_flight == 0  # the refused call holds no slot

    # A reply too large for a datagram becomes a fault saying so.
    big = a.send_call("svc.grow", (2000,), now=0.0, timeout=5.0)
    ((packet, _),) = a.datagrams_to_send()
    b.receive_datagram(packet, ("a", 9), peer="a:9", now=0.0)
    ((answer, _),) = b.datagrams_to_send()
    a.receive_datagram(answer, ("b", 1), peer="b:1", now=0.0)
    fault = answers(a)[big]
    assert isinstance(fault, Fault)
    assert fault.code == FaultCode.TRANSPORT_ERROR


def test_multicast_gathers_by_sender_and_unpublished_methods_stay_silent() -> None:
    caller = Pair("caller")
    members = [Pair(f"m{i}") for i in range(3)]
    for member in members[:2]:
        member.registry.serve(Service(), name="svc")
    out = caller.connection(serves=False, stream=False)
    inbound = [member.connection(stream=False) for member in members]
    call_id = out.send_group_call("svc.add", (1, 1), now=0.0, timeout=1.0,
                                  destinations=["group"], expected={"m0", "m1", "m2"})
    ((packet, _),) = out.datagrams_to_send()
    for connection in inbound:
        connection.receive_datagram(packet, "caller", peer="caller", now=0.0)
        for answer, _ in connection.datagrams_to_send():
            out.receive_datagram(answer, "member", peer="member", now=0.0)
    assert out.events_received() == []  # m2 publishes no svc.add: still waiting for it
    assert members[2].dispatcher.counters["multicast_ignored"] == 1
    out.expire(1.0)
    (ended,) = out.events_received()
    assert isinstance(ended, GatherEnded)
    assert ended.call_id == call_id
    assert dict(ended.replies) == {"m0": 2, "m1": 2}
    assert ended.replies.missing == ("m2",)

    oneway_id = out.send_group_oneway("svc.note", (5,), destinations=["group"])
    assert oneway_id >= 1 << 63
    ((packet, _),) = out.datagrams_to_send()
    inbound[0].receive_datagram(packet, "caller", peer="caller", now=0.0)
    assert inbound[0].datagrams_to_send() == []


def test_http_rules_answer_oneway_refusals() -> None:
    registry = ServiceRegistry()
    registry.serve(Service(), name="svc")
    dispatcher = Dispatcher(registry)
    from clusterrpc.codecs import CallMessage  # noqa: PLC0415
    from clusterrpc.rpc.context import CallContext  # noqa: PLC0415

    context = CallContext(method="svc.note", transport="http", oneway=True)
    refused = dispatcher.start(CallMessage("svc.note", ("not", "one")), context,
                               answer_refusals=True)
    assert isinstance(refused, Fault)
    assert refused.code == FaultCode.INVALID_PARAMS
    assert dispatcher.start(CallMessage("svc.note", (1,)), context,
                            answer_refusals=True) is NO_ANSWER
    assert set(dispatcher.counters) == set(COUNTER_NAMES)


def test_a_stream_connection_carries_calls_both_ways_over_tcp() -> None:
    """The server calls back the client on the connection the client made (what the local
    API's events need), over a real loopback socket."""
    from clusterrpc.transports.addresses import parse_address  # noqa: PLC0415
    from clusterrpc.transports.engine import Messenger as RealMessenger  # noqa: PLC0415
    from clusterrpc.transports.engine import Serving  # noqa: PLC0415
    from clusterrpc.transports.streams import StreamChannel, StreamServer  # noqa: PLC0415

    async def scenario() -> None:
        server_registry, client_registry = ServiceRegistry(), ServiceRegistry()
        server_registry.serve(Service(), name="svc")
        client_service = Service()
        client_registry.serve(client_service, name="client")
        server_messenger = RealMessenger(node="server", cluster=CLUSTER, keyring=KEYRING)
        client_messenger = RealMessenger(node="client", cluster=CLUSTER, keyring=KEYRING)
        server = StreamServer(parse_address("tcp://127.0.0.1:0"),
                              Serving(server_messenger, server_registry), max_frame=1 << 20)
        await server.start()
        channel = StreamChannel(parse_address(server.url), client_messenger,
                                serving=Serving(client_messenger, client_registry))
        try:
            assert await channel.call("svc.add", (1, 2), timeout=5.0) == 3
            (accepted,) = server.connections
            back = [accepted.driver.call("client.add", (i, i), timeout=5.0) for i in range(5)]
            there = [channel.call("svc.add", (i, 1), timeout=5.0) for i in range(5)]
            assert await asyncio.gather(*back) == [0, 2, 4, 6, 8]
            assert await asyncio.gather(*there) == [1, 2, 3, 4, 5]
            who: Any = await accepted.driver.call("client.who", (), timeout=5.0)
            assert who["node"] == "server"
            assert who["transport"] == "tcp"
            await accepted.driver.call("client.note", (9,), timeout=None, oneway=True)
            assert await channel.call("svc.add", (0, 0), timeout=5.0) == 0
            assert client_service.seen == [9]
        finally:
            await channel.aclose()
            await server.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))
