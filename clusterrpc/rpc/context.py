"""The call context: who is calling, inside a served method.

``clusterrpc.current_call()`` returns the :class:`CallContext` of the call being served. It is a
context variable, so it is right in ``async def`` methods running concurrently, and in the
methods that ``system.multicall`` runs on behalf of its caller.
"""

from __future__ import annotations

import contextvars
import dataclasses
import typing

if typing.TYPE_CHECKING:
    from clusterrpc.local.server import LocalClient

__all__ = ["CallContext", "current_call"]


@dataclasses.dataclass(frozen=True, slots=True)
class CallContext:
    """What a served method may know about its call.

    ``node`` and ``key_id`` name the *authenticated* sender (``None`` where the transport does
    not authenticate, e.g. an insecure HTTP endpoint). ``transport`` is ``"tcp"``, ``"unix"``,
    ``"udp"``, ``"http"`` or ``"local"``; ``peer`` the peer's address as text. ``deadline`` is the
    caller's deadline on this node's clock (seconds since the Unix epoch) or ``None``.

    For a call from a local client (``transport == "local"``, ``spec/local.md``), ``client`` is
    its :class:`~clusterrpc.local.server.LocalClient` and ``uid``, ``gid``, ``groups``,
    ``pid`` and ``domain`` are the kernel-verified credentials of the connecting process and
    the security domain of the socket it connected to; elsewhere they are ``None``. The pid is
    advisory: it is the process that connected, which may have exited since (and its number
    been reused); never use it for access decisions — the uid and groups are what the kernel
    vouches for.
    """

    method: str
    node: str | None = None
    key_id: str | None = None
    transport: str = "local"
    peer: str | None = None
    deadline: float | None = None
    oneway: bool = False
    multicast: bool = False
    client: LocalClient | None = None
    epoch: int | None = None
    """The sender's epoch from the packet header (its restart identity, ``spec/packet.md``),
    or ``None`` where the transport has no packet header (HTTP)."""

    @property
    def uid(self) -> int | None:
        """The local client's user id (``SO_PEERCRED``), or ``None`` for a network call."""
        client = self.client
        return None if client is None else client.uid

    @property
    def gid(self) -> int | None:
        """The local client's primary group id, or ``None`` for a network call."""
        client = self.client
        return None if client is None else client.gid

    @property
    def groups(self) -> tuple[int, ...] | None:
        """The local client's supplementary group ids (``SO_PEERGROUPS``), or ``None``."""
        client = self.client
        return None if client is None else client.groups

    @property
    def pid(self) -> int | None:
        """The local client's process id when it connected (advisory: see the class
        docstring), or ``None`` for a network call."""
        client = self.client
        return None if client is None else client.pid

    @property
    def domain(self) -> str | None:
        """The security domain of the local socket the call came through, or ``None``."""
        client = self.client
        return None if client is None else client.domain


# The transports build one context per call served. The frozen dataclass's __init__ sets each
# field through object.__setattr__ (the frozen __setattr__ refuses plain assignment): over a
# microsecond per call. Setting the slots through their descriptors builds the same object in
# under half the time. The setters are looked up by name, and a field added to CallContext (one
# this function would leave unset) stops the import.
_new_object = object.__new__
_CONTEXT_FIELDS = ("method", "node", "key_id", "transport", "peer", "deadline", "oneway",
                   "multicast", "client", "epoch")
if {field.name for field in dataclasses.fields(CallContext)} != set(_CONTEXT_FIELDS):
    raise ImportError("new_call_context() does not set every field of CallContext")
(_set_method, _set_node, _set_key_id, _set_transport, _set_peer, _set_deadline, _set_oneway,
 _set_multicast, _set_client, _set_epoch) = (
    getattr(CallContext, name).__set__ for name in _CONTEXT_FIELDS)  # fmt: skip


def new_call_context(  # noqa: PLR0917 - one argument per field, positional for speed
    method: str, node: str | None, key_id: str | None, transport: str, peer: str | None,
    deadline: float | None, oneway: bool, multicast: bool, client: LocalClient | None = None,
    epoch: int | None = None,
) -> CallContext:  # fmt: skip
    """``CallContext(method=method, node=node, …, multicast=multicast)``, built faster (for
    the transports' hot path)."""
    context: CallContext = _new_object(CallContext)
    _set_method(context, method)
    _set_node(context, node)
    _set_key_id(context, key_id)
    _set_transport(context, transport)
    _set_peer(context, peer)
    _set_deadline(context, deadline)
    _set_oneway(context, oneway)
    _set_multicast(context, multicast)
    _set_client(context, client)
    _set_epoch(context, epoch)
    return context


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
