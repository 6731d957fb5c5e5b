"""Services that ``tests/test_cli_rpc.py`` serves with ``clusterrpc serve`` by import path
(``cli_service:Election``: the tests put this directory on ``PYTHONPATH``)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from clusterrpc import Fault, oneway, remote


class Election:
    """Leader election endpoint, as small as a test needs."""

    def __init__(self) -> None:
        self.term = 0
        self.leader: str | None = None

    @remote
    def status(self) -> dict[str, Any]:
        """Return the current term and leader.

        The leader is the empty string while none is known.
        """
        return {"term": self.term, "leader": self.leader or ""}

    @oneway
    def vote(self, term: int, candidate: str) -> None:
        """Vote for candidate in term (one-way: no answer)."""
        self.term, self.leader = term, candidate

    @remote
    def echo(self, value: Any) -> Any:
        """Return value unchanged."""
        return value

    @remote
    def greet(self, name: str) -> str:
        """Return a greeting for name."""
        return f"hello, {name}"

    @remote
    def fail(self, code: int, message: str) -> None:
        """Answer with the fault code and message."""
        raise Fault(code, message)

    @remote
    async def sleep(self, seconds: float) -> bool:
        """Wait that many seconds (at most 5), then return true."""
        import asyncio  # noqa: PLC0415

        await asyncio.sleep(min(seconds, 5.0))
        return True

    @remote
    def when(self) -> dt.datetime:
        """Return a fixed datetime."""
        return dt.datetime(2026, 11, 22, 18, 51, 39, tzinfo=dt.UTC)

    @remote
    def blob(self) -> bytes:
        """Return four bytes."""
        return b"\x00\x01\xfe\xff"

    @oneway
    def touch(self, name: str) -> None:
        """Create the file name in $CLI_SERVICE_DIR (so a test sees a one-way call arrive)."""
        Path(os.environ["CLI_SERVICE_DIR"], name).write_text("called\n")


def make_counter() -> Counter:
    """A factory: what a [services] entry may name instead of a class."""
    return Counter(start=10)


class Counter:
    def __init__(self, start: int) -> None:
        self.value = start

    @remote
    def next(self) -> int:
        self.value += 1
        return self.value


COUNTER = Counter(start=100)
"""An object: served as it is."""


class Broken:
    def __init__(self) -> None:
        raise RuntimeError("no database")

    @remote
    def status(self) -> str:
        return "unreachable"
