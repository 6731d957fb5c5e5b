"""The call context: who is calling, inside a served method.

``clusterrpc.current_call()`` returns the :class:`CallContext` of the call being served. It is a
context variable, so it is right in ``async def`` methods running concurrently, and in the
methods that ``system.multicall`` runs on behalf of its caller.
"""

from __future__ import annotations

import contextvars
import dataclasses

__all__ = ["CallContext", "current_call"]


@dataclasses.dataclass(frozen=True, slots=True)
class CallContext:
    """What a served method may know about its call.

    ``node`` and ``key_id`` name the *authenticated* sender (``None`` where the transport does
    not authenticate, e.g. an insecure HTTP endpoint). ``transport`` is ``"tcp"``, ``"unix"``,
    ``"udp"``, ``"http"`` or ``"local"``; ``peer`` the peer's address as text. ``deadline`` is the
    caller's deadline on this node's clock (seconds since the Unix epoch) or ``None``.
    """

    method: str
    node: str | None = None
    key_id: str | None = None
    transport: str = "local"
    peer: str | None = None
    deadline: float | None = None
    oneway: bool = False
    multicast: bool = False


_CURRENT: contextvars.ContextVar[CallContext] = contextvars.ContextVar("clusterrpc_call")


def current_call() -> CallContext:
    """The :class:`CallContext` of the remote call being served.

    Raises :class:`RuntimeError` outside a served method (as ``asyncio.current_task`` does
    outside a task).
    """
    try:
        return _CURRENT.get()
    except LookupError:
        raise RuntimeError("current_call() used outside a method served by clusterrpc") from None


def enter_call(context: CallContext) -> contextvars.Token[CallContext]:
    """Make ``context`` current; the caller must pass the token to :func:`leave_call`."""
    return _CURRENT.set(context)


def leave_call(token: contextvars.Token[CallContext]) -> None:
    """Restore the context that was current before :func:`enter_call`."""
    _CURRENT.reset(token)
