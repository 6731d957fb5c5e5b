"""Shared pieces of the transport tests: a keyring, a test service, bounded event-loop runs,
and a node in its own process (for tests that kill the server)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from clusterrpc import Fault, Keyring, Node, current_call, oneway, remote

T = TypeVar("T")

CLUSTER = "TEST/LOOPBACK"


def make_keyring(key_id: str = "k1", scheme: str = "hmac-sha256") -> Keyring:
    return Keyring(cluster=CLUSTER, keys=[Keyring.generate(scheme, key_id=key_id)],
                   signing_key_id=key_id)


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run ``coroutine`` in a fresh event loop, bounded by ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


class Election:
    """A leader-election-shaped service used across the transport tests."""

    def __init__(self) -> None:
        self.votes: list[tuple[int, str]] = []

    @remote
    def status(self) -> dict[str, Any]:
        """Return this node's view of the election."""
        return {"term": 3, "leader": "n1", "votes": len(self.votes)}

    @remote
    def echo(self, value: Any) -> Any:
        """Return ``value`` unchanged."""
        return value

    @remote
    def who(self) -> dict[str, Any]:
        """Return what current_call() says about the caller."""
        call = current_call()
        return {"node": call.node, "key_id": call.key_id, "transport": call.transport,
                "peer": call.peer, "oneway": call.oneway, "method": call.method}

    @remote
    async def double(self, x: int) -> int:
        """Return 2x after yielding to the loop."""
        await asyncio.sleep(0)
        return 2 * x

    @remote
    async def sleep(self, seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return "slept"

    @remote
    def fail(self, message: str) -> None:
        """Raise an application error."""
        raise RuntimeError(message)

    @remote
    def refuse(self) -> None:
        """Raise a fault of our own."""
        raise Fault(4711, "refused on purpose")

    @remote
    def big(self, size: int) -> bytes:
        """Return ``size`` bytes."""
        return b"x" * size

    @oneway
    def vote(self, term: int, candidate: str) -> None:
        """Record a vote; one-way."""
        self.votes.append((term, candidate))

    @oneway
    def crash(self) -> None:
        """A one-way method that raises."""
        raise RuntimeError("one-way failure")

    @remote
    def now(self) -> dt.datetime:
        """The server's clock."""
        return dt.datetime.now(dt.UTC).replace(microsecond=0)


NODE_SCRIPT = r"""
import asyncio, sys
sys.path.insert(0, {tests!r})
from clusterrpc import Keyring, Node
from rpc_helpers import Election

async def main():
    keyring = Keyring.from_toml(open({keyring!r}).read())
    node = Node("server", cluster=keyring.cluster, keyring=keyring, listen={listen!r})
    node.serve(Election(), name="election")
    async with node:
        print(" ".join(node.addresses), flush=True)
        await asyncio.sleep(120)

asyncio.run(main())
"""


@contextlib.contextmanager
def node_process(tmp_path: Path, keyring: Keyring, listen: list[str]
                 ) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """A node serving ``Election`` as ``election`` in a child process; yields the process and
    its bound addresses. The process is killed on exit whatever happens."""
    keyring_file = tmp_path / "server.keys"
    keyring_file.write_text(keyring.to_toml())
    os.chmod(keyring_file, 0o600)
    script = NODE_SCRIPT.format(tests=str(Path(__file__).parent), keyring=str(keyring_file),
                                listen=listen)
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 15
        line = ""
        while not line and time.monotonic() < deadline:
            line = process.stdout.readline()
            if process.poll() is not None:
                break
        assert line, "the node process did not start"
        yield process, line.split()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


class LoopThread:
    """An asyncio event loop running on a thread of its own (for nodes beside blocking
    clients); ``wait`` bounds every :meth:`run` and the join in :meth:`stop`."""

    def __init__(self, *, name: str, wait: float) -> None:
        self.wait = wait
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(self.wait)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(self.wait)
        self.loop.close()


class NodeThread:
    """A node serving ``Election`` in an event loop of its own thread, for blocking clients.

    Use as a context manager; the node is stopped and the thread joined on exit.
    """

    def __init__(self, keyring: Keyring | None, listen: list[str], **options: Any) -> None:
        self.election = Election()
        self.node = Node("server", cluster=CLUSTER, keyring=keyring, listen=listen, **options)
        self.node.serve(self.election, name="election")
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> NodeThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.node.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.node.stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def url(self, scheme: str) -> str:
        return next(url for url in self.node.addresses if url.startswith(scheme + "://"))

    @property
    def counters(self) -> dict[str, int]:
        return asyncio.run_coroutine_threadsafe(self._counters(), self.loop).result(10)

    async def _counters(self) -> dict[str, int]:
        return self.node.counters
