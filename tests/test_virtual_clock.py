"""``clusterrpc.testing.VirtualClock``: virtual time for asyncio, its event loop and ``run``.

Real sockets here are on loopback only.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time

import pytest

from clusterrpc import testing
from clusterrpc.testing import VirtualClock, VirtualEventLoop
from tests.conftest import RunVirtual, run_on_virtual_clock, scaled, time_scale


def test_reading_jumping_and_validation() -> None:
    clock = VirtualClock()
    assert clock.current_time() == 0.0
    assert clock.rate == 0.0
    assert clock.autojump_threshold == math.inf
    time.sleep(0.01)
    assert clock.current_time() == 0.0  # rate 0: it stands still
    clock.jump(2.5)
    clock.jump(0)
    assert clock.current_time() == 2.5
    for bad in (-1, -0.001, math.inf, math.nan):
        with pytest.raises(ValueError):
            clock.jump(bad)
    with pytest.raises(TypeError):
        clock.jump("1")  # type: ignore[arg-type]
    assert clock.current_time() == 2.5

    assert VirtualClock(start=-100.0).current_time() == -100.0
    with pytest.raises(ValueError):
        VirtualClock(start=math.inf)
    with pytest.raises(TypeError):
        VirtualClock(start=True)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError):
            VirtualClock(rate=bad)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError):
            VirtualClock(autojump_threshold=bad)
    clock.autojump_threshold = 0
    assert clock.autojump_threshold == 0.0
    with pytest.raises(ValueError):
        clock.autojump_threshold = -1
    with pytest.raises(ValueError):
        clock.rate = -2
    assert "VirtualClock" in repr(clock)


def test_rate_runs_the_clock_and_changing_it_keeps_the_reading() -> None:
    clock = VirtualClock(start=10.0, rate=1000.0)
    first = clock.current_time()
    time.sleep(0.02)
    second = clock.current_time()
    assert second - first >= 20.0 - 1e-6  # 1000 virtual seconds per real second
    clock.rate = 0
    frozen = clock.current_time()
    assert frozen >= second
    time.sleep(0.01)
    assert clock.current_time() == frozen
    clock.rate = 1.0
    assert clock.current_time() >= frozen  # never backwards


def test_clocks_are_independent() -> None:
    a, b = VirtualClock(), VirtualClock(start=5.0)
    a.jump(1.0)
    assert (a.current_time(), b.current_time()) == (1.0, 5.0)


def test_autojump_sleeps_instantly_and_fires_timers_in_order(run_virtual: RunVirtual) -> None:
    async def scenario() -> list[tuple[float, str]]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        fired: list[tuple[float, str]] = []

        def fire(name: str) -> None:
            fired.append((loop.time(), name))

        for delay, name in ((30.0, "c"), (0.5, "a"), (7.25, "b"), (30.0, "d")):
            loop.call_later(delay, fire, name)
        assert loop.time() == 0.0
        await asyncio.sleep(3600)
        assert loop.time() == 3600.0
        return fired

    began = time.perf_counter()
    fired = run_virtual(scenario())
    assert time.perf_counter() - began < 1.0
    assert fired == [(0.5, "a"), (7.25, "b"), (30.0, "c"), (30.0, "d")]


def test_timeouts_and_wait_for_use_virtual_time(virtual_clock: VirtualClock,
                                                run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        never = asyncio.Event()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(90):
                await never.wait()
        assert loop.time() == 90.0
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(never.wait(), 0.25)
        assert loop.time() == 90.25
        assert virtual_clock.current_time() == 90.25

    run_virtual(scenario())


def test_time_stands_still_while_anything_is_ready(run_virtual: RunVirtual) -> None:
    async def spin() -> int:
        count = 0
        for _ in range(1000):
            await asyncio.sleep(0)
            count += 1
        return count

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, lambda: None)
        assert await spin() == 1000
        assert loop.time() == 0.0  # the timer never came due: the loop was never idle

    run_virtual(scenario())


def test_run_on_a_new_clock_by_default_and_scenario_bound() -> None:
    async def now() -> float:
        await asyncio.sleep(12.0)
        return asyncio.get_running_loop().time()

    assert testing.run(now()) == 12.0
    assert testing.run(now()) == 12.0  # a fresh clock each time
    clock = VirtualClock(start=100.0, autojump_threshold=0)
    assert testing.run(now(), clock=clock) == 112.0
    assert testing.run(now(), clock=clock) == 124.0  # the same clock goes on
    with pytest.raises(TimeoutError):  # run_on_virtual_clock's bound is virtual time too
        run_on_virtual_clock(asyncio.sleep(10), timeout=5)


def test_without_autojump_timers_wait_for_a_jump() -> None:
    clock = VirtualClock()  # rate 0, no autojump: only jump() moves it

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.call_later(60.0, done.set_result, None)
        # Another thread jumps the clock: the loop wakes up and runs the timer now due.
        threading.Timer(0.05, clock.jump, args=(60.0,)).start()
        await asyncio.wait_for(done, 120.0)
        return loop.time()

    began = time.perf_counter()
    assert testing.run(scenario(), clock=clock) == 60.0
    assert time.perf_counter() - began < scaled(5)


def test_rate_without_autojump_is_a_faster_real_clock() -> None:
    clock = VirtualClock(rate=100.0)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.sleep(5.0)  # 0.05 real seconds
        return loop.time() - began

    began = time.perf_counter()
    assert testing.run(scenario(), clock=clock) >= 5.0
    elapsed = time.perf_counter() - began
    assert 0.04 <= elapsed < scaled(2)


def test_executor_work_keeps_the_clock_from_jumping(run_virtual: RunVirtual) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(asyncio.to_thread(time.sleep, 0.05), 1.0)
        await asyncio.wait_for(loop.run_in_executor(None, time.sleep, 0.05), 1.0)
        info = await asyncio.wait_for(loop.getaddrinfo("127.0.0.1", 7400), 1.0)
        assert info
        assert loop.time() == 0.0  # no deadline was jumped to while threads worked

    run_virtual(scenario())


@pytest.mark.parametrize(("rate", "threshold"), [(1.0, math.inf), (0.0, 0.0)])
def test_real_sockets_work_on_the_loop(rate: float, threshold: float) -> None:
    clock = VirtualClock(rate=rate, autojump_threshold=threshold)

    async def scenario() -> list[bytes]:
        loop = asyncio.get_running_loop()
        received: list[bytes] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello\n")
            received.append(await asyncio.wait_for(reader.readline(), scaled(10)))
            writer.close()
            await writer.wait_closed()

        class Echo(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                received.append(data)
                answered.set()

        answered = asyncio.Event()
        transport, _ = await loop.create_datagram_endpoint(
            Echo, local_addr=("127.0.0.1", 0), family=socket.AF_INET)
        try:
            transport.sendto(b"datagram", transport.get_extra_info("sockname"))
            await asyncio.wait_for(answered.wait(), scaled(10))
        finally:
            transport.close()
        return received

    assert testing.run(scenario(), clock=clock) == [b"HELLO\n", b"datagram"]


def test_time_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLUSTERRPC_TEST_TIME_SCALE", raising=False)
    assert time_scale() == 1.0
    monkeypatch.setenv("CLUSTERRPC_TEST_TIME_SCALE", "2.5")
    assert time_scale() == 2.5
    assert scaled(4) == 10.0
    for bad in ("0", "-1", "fast", "inf", "nan"):
        monkeypatch.setenv("CLUSTERRPC_TEST_TIME_SCALE", bad)
        with pytest.raises(ValueError, match="CLUSTERRPC_TEST_TIME_SCALE"):
            time_scale()
