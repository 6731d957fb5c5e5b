"""Fencing tokens: a service that refuses a leader's calls once a newer leader has called.

A leader can be paused (a GC pause, SIGSTOP, a VM migration) for longer than its lease, wake
up, and act on a belief that is no longer true: meanwhile another node was elected. No timer
on the old leader can prevent that. What does prevent it is the *resource* checking a token
that only grows: the election term. The leader passes ``election.term`` with every call that
acts; the service remembers the newest term it has seen and refuses older ones::

    class Storage:
        @remote
        @fenced
        def write(self, term: int, key: str, value: str) -> None:
            ...          # runs only for the newest leader's term (or a newer one)

    # on the leader
    await node.peer(storage_url).call("storage.write", election.term, "k", "v")

A call with an older term raises :class:`~clusterrpc.errors.StaleTermError` in the service;
the caller gets a :class:`~clusterrpc.errors.Fault` with code ``FaultCode.STALE_TERM`` and
must stop acting as leader. The check happens when the call arrives; an ``async`` method that
awaits before its side effect must check again just before it (``fence_of(self).check(term)``).

The newest term lives in memory, one :class:`Fence` per service object (shared by all its
``@fenced`` methods): a restarted service accepts the first term it sees. Where that matters,
store :attr:`Fence.newest` with the resource's data and restore it with
:meth:`Fence.raise_to` at start.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from clusterrpc.errors import ConfigurationError, Fault, FaultCode, StaleTermError

__all__ = ["Fence", "fence_of", "fenced"]

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "_clusterrpc_fence"


class Fence:
    """The newest fencing token (election term) a resource has seen."""

    def __init__(self, newest: int = 0) -> None:
        self.newest = newest
        self._lock = threading.Lock()  # a service may run in several threads

    def admit(self, term: object) -> int:
        """Accept ``term`` if it is at least :attr:`newest` (and remember it); raise
        :class:`~clusterrpc.errors.StaleTermError` if it is older, and ``StaleTermError``'s
        parent :class:`~clusterrpc.errors.Fault` (invalid params) for a non-integer."""
        if isinstance(term, bool) or not isinstance(term, int) or term < 0:
            raise Fault(FaultCode.INVALID_PARAMS,
                        f"a fenced call's first parameter is the caller's term, not {term!r}")
        with self._lock:
            if term < self.newest:
                raise StaleTermError(term, self.newest)
            self.newest = term
        return term

    def check(self, term: int) -> None:
        """Raise :class:`~clusterrpc.errors.StaleTermError` if a newer term than ``term`` has
        been admitted since (for a check just before a side effect)."""
        if term < self.newest:
            raise StaleTermError(term, self.newest)

    def raise_to(self, term: int) -> None:
        """Restore a stored newest term (never lowers it)."""
        with self._lock:
            self.newest = max(self.newest, term)


def fence_of(service: object) -> Fence:
    """The :class:`Fence` of a service object (created on first use)."""
    fence = service.__dict__.get(_ATTRIBUTE)
    if fence is None:
        fence = service.__dict__.setdefault(_ATTRIBUTE, Fence())
    assert isinstance(fence, Fence)
    return fence


def fenced(method: F) -> F:
    """Make ``method`` (a method whose first parameter after ``self`` is the caller's term)
    refuse calls whose term is older than the newest its service object has admitted (module
    docstring). Works on plain and ``async def`` methods, above or below ``@remote``.
    Raises :class:`~clusterrpc.errors.ConfigurationError` for a function without that
    parameter."""
    parameters = list(inspect.signature(method).parameters)
    if len(parameters) < 2 or parameters[0] != "self":
        raise ConfigurationError(f"@fenced: {method.__name__} must be a method whose first "
                                 "parameter after self is the caller's term")
    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def async_wrapper(self: object, term: int, /, *args: Any, **kwargs: Any) -> Any:
            fence_of(self).admit(term)
            return await method(self, term, *args, **kwargs)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: object, term: int, /, *args: Any, **kwargs: Any) -> Any:
        fence_of(self).admit(term)
        return method(self, term, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
