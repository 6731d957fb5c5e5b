"""What every client-side transport offers: a channel that carries calls to one endpoint.

A *channel* is the client half of one transport to one remote endpoint (a TCP or Unix stream
connection, a UDP peer, an HTTP server). :class:`AsyncChannel` is driven by an event loop
(``Node.peer``); :class:`BlockingChannel` by a thread that waits (``clusterrpc.connect``). Both
share the sans-I/O core (codecs, packets, :class:`~clusterrpc.rpc.CallTracker`); only the way
they wait differs.

Contract of ``call`` on both kinds:

* returns the method's value; raises :class:`~clusterrpc.errors.Fault` when the method answered
  with a fault;
* ``timeout`` (seconds, or ``None`` for none) bounds the whole call, connecting included;
  expiry raises :class:`~clusterrpc.errors.CallTimeoutError` (the call may have run);
* ``oneway=True`` returns ``None`` as soon as the packet is handed to the operating system; no
  reply exists, so a failure at the receiver is never reported to the caller;
* a value the wire cannot carry raises :class:`~clusterrpc.errors.EncodeError` before anything
  is sent;
* network failures raise :class:`~clusterrpc.errors.TransportError` subclasses (``OSError`` is
  translated here, at the transport boundary); replies that fail authentication are dropped and
  counted, so a forged reply surfaces as a timeout, never as a value;
* after ``close``/``aclose``, calls raise :class:`~clusterrpc.errors.ConnectionClosedError`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from clusterrpc.values import Value

__all__ = ["AsyncChannel", "BlockingChannel"]


class AsyncChannel(abc.ABC):
    """The client half of one transport to one endpoint, for asyncio code."""

    url: str
    """The endpoint's URL, as given."""

    @abc.abstractmethod
    async def call(
        self, method: str, params: Sequence[Value], *, timeout: float | None,
        oneway: bool = False,
    ) -> Value:
        """Call ``method`` with ``params`` at the endpoint (see the module docstring)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the channel. Calls still waiting fail with
        :class:`~clusterrpc.errors.ConnectionClosedError`. Idempotent."""

    async def wait_idle(self) -> None:  # noqa: B027 - a default, not an abstract method
        """Return once no call made through this channel waits for its answer (a node's
        ``stop`` drains with it; the caller bounds the wait). The default returns at once:
        a channel whose calls are awaited by their callers alone has nothing to drain."""


class BlockingChannel(abc.ABC):
    """The client half of one transport to one endpoint, for threads that block.

    Thread-safe: calls from several threads are serialised on the channel.
    """

    url: str
    """The endpoint's URL, as given."""

    @abc.abstractmethod
    def call(
        self, method: str, params: Sequence[Value], *, timeout: float | None,
        oneway: bool = False,
    ) -> Value:
        """Call ``method`` with ``params`` at the endpoint (see the module docstring)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the channel. Idempotent."""
