"""Attribute-style method names for clients: ``peer.election.status()`` calls
``"election.status"``.

A :class:`MethodProxy` collects attribute names into a dotted method name and, when called,
hands the name, the positional arguments and the per-call options to the function its client
gave it. Shared by the async ``Node.peer`` and the blocking ``connect()`` client; it does no
I/O itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clusterrpc.errors import ConfigurationError

__all__ = ["DEFAULT", "Invoke", "MethodProxy", "ProxyRoot"]


class _Default:
    """The "not given" marker for ``timeout=`` (``None`` means "no timeout")."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""Passed as ``timeout`` when the caller gave none: the client's default timeout applies."""

Invoke = Callable[..., Any]
"""``invoke(method, params, timeout, oneway, **options)``: what a proxy calls (returns a value
or an awaitable, depending on the client)."""


class MethodProxy:
    """A method name being built: attribute access appends ``.name``; calling calls it.

    Arguments are positional (XML-RPC has no keyword arguments); keywords are options of this
    call alone: ``timeout`` (seconds, or ``None`` for none) everywhere, and those the client
    adds (a group's ``quorum`` and ``include_self``). Names
    starting with ``_`` are refused, as servers never publish them.
    """

    __slots__ = ("_invoke", "_name", "_oneway")

    def __init__(self, invoke: Invoke, name: str, *, oneway: bool) -> None:
        self._invoke = invoke
        self._name = name
        self._oneway = oneway

    def __getattr__(self, attribute: str) -> MethodProxy:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        name = f"{self._name}.{attribute}" if self._name else attribute
        return MethodProxy(self._invoke, name, oneway=self._oneway)

    def __call__(self, *params: Any, timeout: Any = DEFAULT, **options: Any) -> Any:
        if not self._name:
            raise ConfigurationError("name a method to call, e.g. peer.election.status()")
        # Other keywords are the client's own per-call options (a group's ``quorum=`` …);
        # a client that has none refuses them with a TypeError naming the keyword.
        return self._invoke(self._name, params, timeout, self._oneway, **options)

    def __repr__(self) -> str:
        kind = "one-way " if self._oneway else ""
        return f"<{kind}remote method {self._name or '(none yet)'}>"


class ProxyRoot:
    """Base of the client objects whose attributes name remote methods (``Peer``, ``Client``
    and their group forms): ``root.svc.method(…)`` and ``root.oneway.svc.method(…)`` build a
    :class:`MethodProxy` over the ``invoke`` function the subclass passes in."""

    __slots__ = ("_invoker", "oneway")

    def __init__(self, invoke: Invoke) -> None:
        self._invoker = invoke
        self.oneway = MethodProxy(invoke, "", oneway=True)
        """The one-way proxy: ``root.oneway.svc.method(…)``."""

    def __getattr__(self, attribute: str) -> MethodProxy:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return MethodProxy(self._invoker, attribute, oneway=False)
