"""Example local services, used by the tests and the README.

:class:`Locks` is a lock manager in a few lines: FIFO waiters, a lock held by a client that
dies goes to the next waiter (``client.hold``), and a holder may ask to be told when someone
waits for its lock (an event for the cookie it passed, ``notify=``)::

    node.serve_local(Locks(), name="locks")
    # client: handle.locks.acquire("disk1", notify=cookie) -> {"granted": True, "sequence": n}
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from clusterrpc.errors import Fault
from clusterrpc.local.server import LocalClient
from clusterrpc.rpc import current_call, remote

__all__ = ["Locks"]


class _Lock:
    __slots__ = ("cookie", "holder", "waiters")

    def __init__(self) -> None:
        self.holder: LocalClient | None = None
        self.cookie = 0
        self.waiters: collections.deque[tuple[LocalClient, asyncio.Future[None], int]] = (
            collections.deque())


class Locks:
    """Named exclusive locks for local clients (module docstring). ``acquire`` waits (FIFO)
    within the call's timeout; a client holds at most one claim per lock."""

    def __init__(self) -> None:
        self._locks: dict[str, _Lock] = collections.defaultdict(_Lock)

    def _caller(self) -> LocalClient:
        client = current_call().client
        if client is None:
            raise Fault(1, "locks are for local clients")
        return client

    @remote
    async def acquire(self, name: str, notify: int = 0) -> dict[str, Any]:
        """Take lock ``name``, waiting behind earlier waiters. ``notify``: a cookie; while
        this client holds the lock, each new waiter sends it an event ``{"lock": name,
        "waiter": pid}``. Returns ``{"granted": True, "sequence": n}`` (the server's event
        sequence when it was granted)."""
        client = self._caller()
        lock = self._locks[name]
        if lock.holder is client or any(waiter is client for waiter, _, _ in lock.waiters):
            raise Fault(2, f"this client already holds or waits for {name!r}")
        if lock.holder is None:
            self._grant(name, lock, client, notify)
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            lock.waiters.append((client, granted, notify))
            if lock.cookie:
                lock.holder.notify(lock.cookie, {"lock": name, "waiter": client.pid})
            try:
                await granted
            except BaseException:
                self._drop_waiter(lock, client)
                raise
        return {"granted": True, "sequence": client.server.sequence}

    def _grant(self, name: str, lock: _Lock, client: LocalClient, cookie: int) -> None:
        lock.holder, lock.cookie = client, cookie
        client.hold(("lock", name), lambda: self._release(name, client))

    def _drop_waiter(self, lock: _Lock, client: LocalClient) -> None:
        lock.waiters = collections.deque(entry for entry in lock.waiters if entry[0] is not client)

    def _release(self, name: str, client: LocalClient) -> None:
        lock = self._locks.get(name)
        if lock is None or lock.holder is not client:
            return
        lock.holder, lock.cookie = None, 0
        while lock.waiters:
            waiter, granted, cookie = lock.waiters.popleft()
            if waiter.is_closed or granted.done():
                continue  # died (or gave up) while waiting
            self._grant(name, lock, waiter, cookie)
            granted.set_result(None)
            return
        del self._locks[name]

    @remote
    def release(self, name: str) -> bool:
        """Release lock ``name``; returns whether this client held it."""
        client = self._caller()
        lock = self._locks.get(name)
        if lock is None or lock.holder is not client:
            return False
        client.forget(("lock", name))
        self._release(name, client)
        return True

    @remote
    def holder(self, name: str) -> int:
        """The pid of the client holding ``name`` (0: free)."""
        lock = self._locks.get(name)
        return lock.holder.pid if lock is not None and lock.holder is not None else 0

    @remote
    def waiting(self, name: str) -> int:
        """How many clients wait for ``name``."""
        lock = self._locks.get(name)
        return 0 if lock is None else len(lock.waiters)
