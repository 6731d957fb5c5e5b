"""Where one clusterrpc call's CPU time goes, stage by stage, in one process and without
sockets (``bench_rpc.py --profile`` prints it next to the profiles).

Each stage is timed on fresh packets (the replay window refuses a packet twice), best of a
few rounds, so the figures hold on a shared machine where wall-clock profiles of the two
processes mostly show who waited for whom. The same work done by the standard library's
``xmlrpc.client`` and Pyro5's serpent serializer is shown for comparison.
"""

from __future__ import annotations

import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any

from clusterrpc import Keyring, Node, remote
from clusterrpc.codecs import CallMessage
from clusterrpc.packet import FrameDecoder, frame
from clusterrpc.rpc.protocol import Connection
from clusterrpc.transports.engine import Messenger

ROUNDS = 5


def _best(prepare: Callable[[int], Any], run: Callable[[Any], object], count: int) -> float:
    """Best microseconds per item of ``run(items)`` over ``ROUNDS`` rounds of ``count`` items
    made fresh by ``prepare(count)`` (untimed)."""
    best = float("inf")
    for _ in range(ROUNDS):
        items = prepare(count)
        started = time.perf_counter()
        run(items)
        best = min(best, (time.perf_counter() - started) / count)
    return best * 1e6


def _server_node(keyring: Keyring, cluster: str, reply: dict[str, Any]) -> Node:
    """The benchmark's server node (not started): ``election.vote`` answers ``reply``."""

    class Election:
        @remote
        def vote(self, ballot: dict) -> dict:
            return reply

    node = Node("bench-server", cluster=cluster, keyring=keyring)
    node.serve(Election(), name="election")
    return node


def breakdown(keyring: Keyring, cluster: str, ballot: dict[str, Any], reply: dict[str, Any],
              count: int = 2000) -> list[tuple[str, float]]:
    """``(stage, microseconds per call)`` rows; see the module docstring."""

    node = _server_node(keyring, cluster, reply)
    server = node.messenger
    serving = Connection(server, dispatcher=node.serving.dispatcher, transport="tcp",
                         peer="bench")
    client = Messenger(node="client.bench.1.000000", cluster=cluster, keyring=keyring)
    message = CallMessage("election.vote", (ballot,))
    codec = client.codec
    body = codec.encode_call(message.method, message.params)
    reply_body = codec.encode_reply(reply)
    ids = iter(range(1, 1 << 62))

    def calls(n: int) -> list[bytes]:
        return [client.seal_call(next(ids), message) for _ in range(n)]

    def answers(n: int) -> list[bytes]:
        return [server.seal_answer(next(ids), codec.codec_id, reply) for _ in range(n)]

    def each(function: Callable[[Any], object]) -> Callable[[list[Any]], None]:
        def run(items: list[Any]) -> None:
            for item in items:
                function(item)

        return run

    def repeat(function: Callable[[], object]) -> Callable[[int], None]:
        def run(n: int) -> None:
            for _ in range(n):
                function()

        return run

    def ints(n: int) -> int:
        return n

    def serve(packet: bytes) -> None:
        serving.receive_data(frame(packet), now=0.0)
        serving.data_to_send()

    def decode_call(packet: bytes) -> None:
        received = server.open(packet, peer="bench")
        assert received is not None
        server.opener.decode(received)

    def answer(packet: bytes) -> None:
        received = client.open(packet, peer="bench")
        assert received is not None
        client.decode_answer(received)

    def round_trip(_: int) -> None:
        # Both sides through the connection protocol, as the transports drive it.
        calling = Connection(client, dispatcher=None, transport="tcp", peer="bench",
                             max_in_flight=1)
        for _ in range(count):
            call_id = calling.send_call("election.vote", (ballot,), now=0.0, timeout=None)
            serving.receive_data(calling.data_to_send(), now=0.0)
            calling.receive_data(serving.data_to_send(), now=0.0)
            (answered,) = calling.events_received()
            assert answered.call_id == call_id

    rows: list[tuple[str, float]] = [
        ("client: codec encode_call (xmlrpc)",
         _best(ints, repeat(lambda: codec.encode_call(message.method, message.params)), count)),
        ("client: Messenger.seal_call (encode + header + HMAC)",
         _best(ints, repeat(lambda: client.seal_call(next(ids), message)), count)),
        ("server: frame() + FrameDecoder.feed",
         _best(ints, repeat(lambda: FrameDecoder(max_frame=1 << 20).feed(frame(body))), count)),
        ("server: Messenger.open (header, HMAC, replay window)",
         _best(calls, each(lambda p: server.open(p, peer="bench")), count)),
        ("server: open + codec decode_call", _best(calls, each(decode_call), count)),
        ("server: codec decode_call alone", _best(
            ints, repeat(lambda: codec.decode_call(body)), count)),
        ("server: Connection.receive_data (open, decode, dispatch, seal answer)",
         _best(calls, each(serve), count)),
        ("server: Messenger.seal_answer (encode reply + header + HMAC)",
         _best(ints, repeat(lambda: server.seal_answer(1, codec.codec_id, reply)), count)),
        ("server: codec encode_reply alone",
         _best(ints, repeat(lambda: codec.encode_reply(reply)), count)),
        ("client: Messenger.open + decode_answer of the reply",
         _best(answers, each(answer), count)),
        ("client: codec decode_response alone",
         _best(ints, repeat(lambda: codec.decode_response(reply_body)), count)),
        ("whole call in one process (both Connections, framing, no sockets)",
         _best(ints, round_trip, count)),
    ]

    # The same serialization work done by the other contenders (no authentication in either).
    args = (ballot,)
    std_call = xmlrpc.client.dumps(args, "election.vote", allow_none=True)
    std_reply = xmlrpc.client.dumps((reply,), methodresponse=True, allow_none=True)

    def stdlib_work() -> None:
        xmlrpc.client.dumps(args, "election.vote", allow_none=True)
        xmlrpc.client.loads(std_call, use_builtin_types=True)
        xmlrpc.client.dumps((reply,), methodresponse=True, allow_none=True)
        xmlrpc.client.loads(std_reply, use_builtin_types=True)

    rows.append(("stdlib xmlrpc.client dumps+loads of call and reply",
                 _best(ints, repeat(stdlib_work), count)))
    try:
        import serpent  # noqa: PLC0415 - Pyro5's default serializer, when installed
    except ImportError:
        return rows
    s_call = serpent.dumps(("election", "vote", args, {}))
    s_reply = serpent.dumps(reply)

    def serpent_work() -> None:
        serpent.dumps(("election", "vote", args, {}))
        serpent.loads(s_call)
        serpent.dumps(reply)
        serpent.loads(s_reply)

    rows.append(("Pyro5's serpent dumps+loads of call and reply",
                 _best(ints, repeat(serpent_work), count)))
    return rows


class _LoopbackSocket:
    """Stands in for the blocking client's socket: what the client sends is handed to the
    server's real ``StreamProtocol`` at once, and its answer is what the client reads. The
    server's share of the time is measured around that hand-over."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.pending = b""
        self.server_seconds = 0.0

    def sendall(self, data: bytes) -> None:
        started = time.perf_counter()
        server = self.server
        buffer = server.get_buffer(len(data))
        buffer[: len(data)] = data
        server.buffer_updated(len(data))
        self.server_seconds += time.perf_counter() - started

    def recv_into(self, buffer: bytearray, size: int = 0, flags: int = 0) -> int:
        if flags:  # the idle check: nothing is waiting
            raise BlockingIOError
        data, self.pending = self.pending, b""
        buffer[: len(data)] = data
        return len(data)

    def setsockopt(self, *args: object) -> None:
        """Timeouts are the kernel's business: nothing to do here."""

    def close(self) -> None:
        """Nothing to release."""


def _written() -> Any:
    import asyncio  # noqa: PLC0415

    class Written(asyncio.Transport):
        """The server transport's ``write``: the answer goes back to the client's socket."""

        def __init__(self) -> None:
            super().__init__()
            self.socket: _LoopbackSocket | None = None

        def write(self, data: bytes | bytearray | memoryview) -> None:
            assert self.socket is not None
            self.socket.pending += bytes(data)

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return ("127.0.0.1", 1) if name == "peername" else default

        def is_closing(self) -> bool:
            return False

    return Written()


_CODEC = {"client": ("encode_call", "decode_response"), "server": ("decode_call", "encode_reply")}


def warm_sides(keyring: Keyring, cluster: str, ballot: dict[str, Any], reply: dict[str, Any],
               count: int = 2000) -> dict[str, dict[str, float]]:
    """Microseconds of Python per sequential call on each side, warm: the real blocking client
    (``clusterrpc.connect``'s proxy, lock, protocol, codec, envelope) and the real server side
    of a stream connection (its ``StreamProtocol``, driver, dispatch), in one process, the
    socket replaced by a hand-over. What this leaves out is the kernel and the event loop (the
    bare echo's CPU) and the cost of running the same code cold, after each wake-up.

    ``{"client": {...}, "server": {...}}``, each with ``warm`` (the best unprofiled time) split
    into ``codec`` (the xmlrpc codec's encode and decode), ``envelope`` (sealing and opening:
    header, HMAC, replay window) and ``protocol`` (everything else: client API, call tracking,
    framing, dispatch, driver) by their shares of a profile of the same loop. Each side does one
    seal and one open, so the envelope's profile is split evenly between them."""
    import asyncio  # noqa: PLC0415 - the server side wants a running loop for its timers
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    from clusterrpc.client import Client  # noqa: PLC0415
    from clusterrpc.transports.addresses import parse_address  # noqa: PLC0415
    from clusterrpc.transports.streams import (  # noqa: PLC0415
        BlockingStreamChannel,
        StreamServer,
    )

    node = _server_node(keyring, cluster, reply)
    server = StreamServer(parse_address("tcp://127.0.0.1:1"), node.serving, max_frame=1 << 20)
    written = _written()
    loop = asyncio.new_event_loop()
    timings: dict[str, float] = {}
    profiler = cProfile.Profile()

    async def measure() -> None:
        protocol = server._accept()
        protocol.connection_made(written)
        channel = BlockingStreamChannel(
            parse_address("tcp://127.0.0.1:1"),
            Messenger(node="client.bench.1.000000", cluster=cluster, keyring=keyring),
        )
        fake = _LoopbackSocket(protocol)
        written.socket = fake
        # A diagnostic reaching into the channel: its socket is the hand-over.
        channel._socket = fake  # type: ignore[assignment]
        channel._connection = Connection(channel.messenger, dispatcher=None, transport="tcp",
                                         peer=channel.url, max_in_flight=1)
        client = Client(channel, timeout=30.0)
        best = float("inf")
        for _ in range(ROUNDS):
            fake.server_seconds = 0.0
            started = time.perf_counter()
            for _ in range(count):
                client.election.vote(ballot)
            total = (time.perf_counter() - started) / count * 1e6
            if total < best:
                best = total
                timings["server"] = fake.server_seconds / count * 1e6
                timings["client"] = total - timings["server"]
        fake.server_seconds = 0.0
        profiler.enable()
        for _ in range(count):
            client.election.vote(ballot)
        profiler.disable()

    try:
        loop.run_until_complete(measure())
    finally:
        loop.close()
    stats: Any = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}

    def cumulative(file_suffix: str, name: str) -> float:
        return sum(entry[3] for (file, _, function), entry in stats.items()
                   if function == name and file.endswith(file_suffix))

    profiled_server = cumulative("_breakdown.py", "sendall")
    profiled_total = cumulative("proxy.py", "__call__")
    envelope = cumulative("envelope.py", "seal") + cumulative("envelope.py", "open") + (
        cumulative("envelope.py", "decode") - cumulative("xmlrpc.py", "decode_call")
        - cumulative("xmlrpc.py", "decode_response"))
    result: dict[str, dict[str, float]] = {}
    for side, profiled in (("client", profiled_total - profiled_server),
                           ("server", profiled_server)):
        scale = timings[side] / profiled
        codec = sum(cumulative("xmlrpc.py", name) for name in _CODEC[side]) * scale
        sealing = envelope / 2 * scale
        result[side] = {"warm": timings[side], "codec": codec, "envelope": sealing,
                        "protocol": timings[side] - codec - sealing}
    return result
