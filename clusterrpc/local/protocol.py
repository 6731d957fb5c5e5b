"""The local API's rules, without I/O: who a domain admits, the recovery flag, the transition
gate, cookies, the bounded event queue, and the resources a client holds (``spec/local.md``).

The server (:mod:`clusterrpc.local.server`) and both client handles
(:mod:`clusterrpc.local.handle`, blocking and async) are thin drivers around these objects and
the packet :class:`~clusterrpc.rpc.protocol.Connection`; time comes in as ``now``.
"""

from __future__ import annotations

import collections
import itertools
import stat
import threading
import typing
from collections.abc import Callable, Hashable
from typing import Any, Final

from clusterrpc.errors import LocalAccessError
from clusterrpc.local.paths import SYSTEM

__all__ = [
    "EVENT",
    "EVICTED",
    "GRANTED",
    "HELLO",
    "KEYWORDS",
    "LIST_CLIENTS",
    "LIST_SERVICES",
    "PROTOCOL_VERSION",
    "REGISTER_CLIENT",
    "CookieTable",
    "DomainPolicy",
    "EventQueue",
    "Holds",
    "LocalEvent",
    "TransitionGate",
    "check_recovery",
    "check_server_uid",
]

PROTOCOL_VERSION: Final = 1
"""The local handshake's version (``local.hello``'s ``version``)."""

# Calls a client makes on every local socket.
HELLO: Final = "local.hello"
REGISTER_CLIENT: Final = "local.registerClient"
LIST_SERVICES: Final = "system.listServices"
LIST_CLIENTS: Final = "system.listClients"
# One-way calls the server makes back on the same connection.
EVENT: Final = "local.event"
EVICTED: Final = "local.evicted"
GRANTED: Final = "local.granted"

KEYWORDS: Final = "clusterrpc.keywords"
"""Keyword arguments of a local call travel as a last parameter ``{KEYWORDS: {name: value}}``
(XML-RPC has positional parameters only); the server binds them by name."""


class DomainPolicy(typing.NamedTuple):
    """Who a domain's socket admits: its file's ``mode``, owner ``uid`` and group ``gid``.

    :meth:`admits` is the server's own check, the kernel's rule for connecting to a socket file
    (write permission) applied to the peer's credentials: it holds even where the kernel's
    check does not (abstract sockets, a socket handed over by fd passing, an operator's
    ``chmod``). Never trust the file system alone.
    """

    name: str
    mode: int
    uid: int
    gid: int

    def admits(self, uid: int, gid: int, groups: tuple[int, ...]) -> bool:
        """Whether a process with these credentials may use the domain."""
        if uid == 0:
            return True
        if uid == self.uid:
            return bool(self.mode & stat.S_IWUSR)
        if gid == self.gid or self.gid in groups:
            return bool(self.mode & stat.S_IWGRP)
        return bool(self.mode & stat.S_IWOTH)


def check_recovery(domain: str, recovery_ok: bool) -> None:
    """Raise :class:`~clusterrpc.errors.LocalAccessError` for ``recovery_ok`` outside
    ``SYSTEM`` (the seed's rule; the client checks it and the server again)."""
    if recovery_ok and domain != SYSTEM:
        raise LocalAccessError(
            f"recovery_ok handles are allowed only in the SYSTEM domain, not {domain}")


def check_server_uid(uid: int, allowed: frozenset[int], *, path: str) -> None:
    """Raise :class:`~clusterrpc.errors.LocalAccessError` unless the server listening at
    ``path`` runs as one of the ``allowed`` uids (pacemaker CVE-2018-16877: a client must not
    talk to whoever managed to bind the socket first)."""
    if uid not in allowed:
        expected = ", ".join(str(each) for each in sorted(allowed))
        raise LocalAccessError(
            f"the server at {path} runs as uid {uid}, not as the daemon (uid {expected}); "
            "refusing to talk to it")


class TransitionGate:
    """Whether a cluster transition is open. Transitions may overlap: the gate opens with the
    first and closes with the last. While open, calls from ordinary handles stall; calls from
    recovery handles go on (``spec/local.md``)."""

    __slots__ = ("opened", "transitions")

    def __init__(self) -> None:
        self.transitions = 0
        """Transitions open now."""
        self.opened = 0
        """Transitions ever opened (for counters)."""

    @property
    def is_open(self) -> bool:
        """Whether ordinary calls stall now."""
        return self.transitions > 0

    def open(self) -> bool:
        """Begin a transition; return whether the gate just opened (the caller stalls the
        ordinary connections)."""
        self.transitions += 1
        self.opened += 1
        return self.transitions == 1

    def close(self) -> bool:
        """End a transition; return whether the gate just closed (the caller lets the stalled
        calls proceed). Raises ``RuntimeError`` without an open transition."""
        if not self.transitions:
            raise RuntimeError("no transition is open")
        self.transitions -= 1
        return self.transitions == 0


class LocalEvent(typing.NamedTuple):
    """An event the server delivered for a cookie: ``payload`` as the service sent it and
    ``sequence``, the server's event number (a snapshot taken at sequence *n* is followed by
    exactly the events numbered above *n*)."""

    cookie: int
    payload: Any
    sequence: int


class CookieTable:
    """A client's cookies: what to call when an event for each arrives.

    :meth:`cancel` is final: once it returns, the cookie's callback never starts again, and an
    event for it already on its way is discarded silently (the seed's "delete the lock, then
    its callback arrives" case). Callbacks run under the table's re-entrant lock, so a
    callback may cancel cookies, and a cancel from another thread waits for a running callback
    to end. Thread-safe.
    """

    __slots__ = ("_callbacks", "_lock", "_numbers", "delivered", "discarded")

    def __init__(self) -> None:
        self._callbacks: dict[int, Callable[[LocalEvent], object]] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.RLock()
        self.delivered = 0
        """Events whose callback ran."""
        self.discarded = 0
        """Events for cancelled (or never registered) cookies, dropped."""

    def register(self, callback: Callable[[LocalEvent], object]) -> int:
        """A new cookie for ``callback``; pass it with a request (``notify=cookie``)."""
        if not callable(callback):
            raise TypeError(f"an event callback must be callable, not {callback!r}")
        with self._lock:
            cookie = next(self._numbers)
            self._callbacks[cookie] = callback
        return cookie

    def cancel(self, cookie: int) -> bool:
        """Forget ``cookie``; return whether it was registered."""
        with self._lock:
            return self._callbacks.pop(cookie, None) is not None

    def __contains__(self, cookie: object) -> bool:
        return cookie in self._callbacks

    def __len__(self) -> int:
        return len(self._callbacks)

    def deliver(self, event: LocalEvent) -> bool:
        """Run the callback of ``event.cookie`` if it is still registered; return whether it
        ran. An exception from the callback propagates (the driver logs it)."""
        with self._lock:
            callback = self._callbacks.get(event.cookie)
            if callback is None:
                self.discarded += 1
                return False
            self.delivered += 1
            callback(event)
            return True


class EventQueue:
    """The events waiting for one client that does not read fast enough, bounded in count and
    bytes, with the trend rule for eviction (``spec/local.md``, "Eviction").

    A client is evicted when its queue is over a bound and has not shrunk for ``grace``
    seconds (a slow reader that catches up is not), or at once when it reaches twice a bound
    (memory stays bounded whatever the trend). ``now``: the driver's monotonic clock.
    """

    __slots__ = ("_items", "_mark", "_over_since", "bytes", "grace", "max_bytes", "max_events")

    def __init__(self, *, max_events: int, max_bytes: int, grace: float) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.grace = grace
        self._items: collections.deque[bytes] = collections.deque()
        self.bytes = 0
        self._over_since: float | None = None
        self._mark = 0

    def __len__(self) -> int:
        return len(self._items)

    def _over(self) -> bool:
        return len(self._items) > self.max_events or self.bytes > self.max_bytes

    def push(self, packet: bytes, *, now: float) -> bool:
        """Queue ``packet``; return ``False`` when the client must be evicted (the packet is
        not queued then)."""
        if (len(self._items) + 1 >= 2 * self.max_events
                or self.bytes + len(packet) >= 2 * self.max_bytes):
            return False
        self._items.append(packet)
        self.bytes += len(packet)
        if not self._over():
            return True
        if self._over_since is None:
            self._over_since, self._mark = now, self.bytes
            return True
        return now - self._over_since < self.grace

    def pop(self, *, now: float) -> bytes | None:
        """The oldest queued packet (the client read some), or ``None`` if none waits."""
        if not self._items:
            return None
        packet = self._items.popleft()
        self.bytes -= len(packet)
        if not self._over():
            self._over_since = None
        elif self.bytes < self._mark:  # shrinking: the trend is good, the clock restarts
            self._over_since, self._mark = now, self.bytes
        return packet

    def clear(self) -> None:
        """Drop every queued packet (the client is gone)."""
        self._items.clear()
        self.bytes = 0
        self._over_since = None


class Holds:
    """The resources one client holds, each with the callback that releases it.

    :meth:`end` returns every release still registered, once: the driver runs them when the
    client's connection ends, whatever the reason. A resource held after the end is released
    at once (:meth:`hold` returns ``False``), so nothing leaks past a client's death.
    """

    __slots__ = ("_releases", "ended")

    def __init__(self) -> None:
        self._releases: dict[Hashable, Callable[[], object]] = {}
        self.ended = False

    def hold(self, resource: Hashable, release: Callable[[], object]) -> bool:
        """Register ``release`` for ``resource``; return ``False`` if the client has already
        ended (the caller must release now). Raises ``ValueError`` if ``resource`` is already
        held by this client."""
        if not callable(release):
            raise TypeError(f"release must be callable, not {release!r}")
        if self.ended:
            return False
        if resource in self._releases:
            raise ValueError(f"{resource!r} is already held by this client")
        self._releases[resource] = release
        return True

    def forget(self, resource: Hashable) -> bool:
        """Unregister ``resource`` without running its release (it was released normally);
        return whether it was held."""
        return self._releases.pop(resource, None) is not None

    def __contains__(self, resource: object) -> bool:
        return resource in self._releases

    def __len__(self) -> int:
        return len(self._releases)

    def end(self) -> list[tuple[Hashable, Callable[[], object]]]:
        """Mark the client ended; return the releases to run (in the order held). A second
        call returns nothing."""
        if self.ended:
            return []
        self.ended = True
        releases = list(self._releases.items())
        self._releases.clear()
        return releases
