"""``@remote`` and ``@oneway``: marking the methods a service publishes.

::

    class Election:
        @remote
        async def status(self) -> dict: ...

        @oneway
        def vote(self, term: int, candidate: str) -> None: ...

Only marked methods are published, and never one whose name starts with ``_``: decorating such a
function is refused at once. Both decorators
work on plain and ``async def`` functions, bare or with arguments (``@remote(name="stat")``), and
return the function unchanged apart from a marker attribute, so the method stays callable locally.

A **one-way** method gets no reply packet at all — not even for errors, which the server logs and
counts. It is how leader election sends votes: the sender must not wait for, or depend on, an
answer. Its return value is discarded.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, TypeVar, overload

from clusterrpc.errors import ConfigurationError

__all__ = ["MARKER", "RemoteSpec", "oneway", "remote"]

MARKER = "__clusterrpc_remote__"
"""The attribute the decorators set on a function (a :class:`RemoteSpec`)."""

F = TypeVar("F", bound=Callable[..., Any])

# A published name's last component: what the XML-RPC method-name rules allow, minus the
# separators, and never starting with "_".
_METHOD_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,63}\Z")


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteSpec:
    """How a decorated function is published: under ``name`` (``None``: the function's own
    name), as a one-way method or not."""

    oneway: bool
    name: str | None = None


def _mark(function: Any, spec: RemoteSpec, decorator: str) -> Any:
    if isinstance(function, staticmethod | classmethod):
        raise ConfigurationError(
            f"@{decorator} goes on plain methods; put it below @staticmethod/@classmethod"
        )
    if not callable(function):
        raise ConfigurationError(f"@{decorator} applies to functions, not {function!r}")
    own_name = getattr(function, "__name__", "")
    name = spec.name or own_name
    if not isinstance(name, str) or not _METHOD_COMPONENT.match(name):
        raise ConfigurationError(
            f"@{decorator}: {name!r} cannot be published: a method name is 1-64 characters of "
            "A-Z a-z 0-9 _ and does not start with _"
        )
    if isinstance(own_name, str) and own_name.startswith("_") and own_name != "<lambda>":
        # serve() never exposes attributes starting with "_": refuse now rather than let the
        # method silently go unpublished.
        raise ConfigurationError(
            f"@{decorator}: {own_name!r} is private; give the method a public name"
        )
    setattr(function, MARKER, spec)
    return function


@overload
def remote(function: F, /) -> F: ...
@overload
def remote(*, name: str | None = None) -> Callable[[F], F]: ...
def remote(function: Any = None, /, *, name: str | None = None) -> Any:
    """Publish a method that answers with one reply (or a fault).

    Use bare (``@remote``) or with a published name (``@remote(name="status")``). Raises
    :class:`~clusterrpc.errors.ConfigurationError` for a name that cannot be published.
    """
    spec = RemoteSpec(oneway=False, name=name)
    if function is None:
        return lambda inner: _mark(inner, spec, "remote")
    return _mark(function, spec, "remote")


@overload
def oneway(function: F, /) -> F: ...
@overload
def oneway(*, name: str | None = None) -> Callable[[F], F]: ...
def oneway(function: Any = None, /, *, name: str | None = None) -> Any:
    """Publish a one-way method: callers get no reply packet, ever (see the module docstring).

    Use bare (``@oneway``) or with a published name. Raises
    :class:`~clusterrpc.errors.ConfigurationError` for a name that cannot be published.
    """
    spec = RemoteSpec(oneway=True, name=name)
    if function is None:
        return lambda inner: _mark(inner, spec, "oneway")
    return _mark(function, spec, "oneway")
