"""Fixtures and helpers shared by the whole test suite.

**Virtual time.** ``virtual_clock`` is a fresh :class:`~clusterrpc.testing.VirtualClock` with
``autojump_threshold=0`` (time stands still while anything is ready to run and jumps to the next
timer whenever nothing is); ``run_virtual(coroutine)`` runs a coroutine on a new event loop of
that clock, so protocol tests assert exact deadlines and delays without sleeping::

    def test_deadline(run_virtual: RunVirtual) -> None:
        async def scenario() -> None:
            ...

        run_virtual(scenario())

:func:`run_on_virtual_clock` is the same as a plain function (a fresh clock per call unless one
is given), for tests that run several scenarios on clocks of their own.

**Real time.** Tests that must wait on the kernel, threads or other processes keep real time;
they multiply what they wait for by :func:`time_scale`, read from the environment variable
``CLUSTERRPC_TEST_TIME_SCALE`` (a number > 0, default 1; e.g. 3 on a slow or loaded machine),
through :func:`scaled`. A value that is not such a number stops the run with a usage error.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

import pytest

from clusterrpc.testing import VirtualClock
from clusterrpc.testing import run as run_on_loop

T = TypeVar("T")

TIME_SCALE_VARIABLE = "CLUSTERRPC_TEST_TIME_SCALE"

VIRTUAL_TIMEOUT = 86400.0
"""How long (virtual seconds: a day) :func:`run_on_virtual_clock` lets a scenario run by
default: far beyond any test's simulated time, so a scenario whose timers keep it busy forever
fails in a moment instead of spinning until the test's real-time limit."""


def time_scale() -> float:
    """The factor real-time waits are multiplied by: ``CLUSTERRPC_TEST_TIME_SCALE`` (default
    1.0). Raises ``ValueError`` naming the variable for anything but a finite number > 0."""
    text = os.environ.get(TIME_SCALE_VARIABLE, "").strip()
    if not text:
        return 1.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"{TIME_SCALE_VARIABLE} must be a finite number > 0 (how much longer than usual "
            f"tests may wait for real time, e.g. 2.5), not {text!r}"
        )
    return value


def scaled(seconds: float) -> float:
    """``seconds`` of real time, multiplied by :func:`time_scale`."""
    return seconds * time_scale()


def run_on_virtual_clock(coroutine: Coroutine[Any, Any, T], *, clock: VirtualClock | None = None,
                         timeout: float = VIRTUAL_TIMEOUT) -> T:
    """Run ``coroutine`` on a new event loop of ``clock`` (a fresh autojumping clock by default),
    bounded by ``timeout`` seconds of virtual time (``TimeoutError`` past it); return its
    result."""
    return run_on_loop(asyncio.wait_for(coroutine, timeout), clock=clock)


class RunVirtual(Protocol):
    """The type of the ``run_virtual`` fixture."""

    def __call__(self, coroutine: Coroutine[Any, Any, T], *,
                 timeout: float = VIRTUAL_TIMEOUT) -> T: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--slow``: run the long variants of the seeded simulations (e.g. 20,000 seeded runs of
    the election nemesis in ``tests/test_election_sim.py`` instead of 2,000)."""
    parser.addoption("--slow", action="store_true", default=False,
                     help="run the long variants of the seeded simulations")


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run with a time scale that is not a number > 0."""
    try:
        time_scale()
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A fresh virtual clock at time 0, rate 0, ``autojump_threshold=0``."""
    return VirtualClock(autojump_threshold=0.0)


@pytest.fixture
def run_virtual(virtual_clock: VirtualClock) -> RunVirtual:
    """``run_virtual(coroutine, timeout=VIRTUAL_TIMEOUT)``: run ``coroutine`` on a new event
    loop of the ``virtual_clock`` fixture's clock (see :func:`run_on_virtual_clock`). Change the
    clock (``virtual_clock.autojump_threshold = …``) before the call to run otherwise."""

    def run_virtual(coroutine: Coroutine[Any, Any, T], *,
                    timeout: float = VIRTUAL_TIMEOUT) -> T:
        return run_on_virtual_clock(coroutine, clock=virtual_clock, timeout=timeout)

    return run_virtual
