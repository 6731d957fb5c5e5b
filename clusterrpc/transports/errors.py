"""The one place where operating-system errors become clusterrpc errors.

Sockets raise ``OSError`` (and its subclasses: ``TimeoutError``, ``ConnectionRefusedError`` …);
callers of clusterrpc catch the tree of :mod:`clusterrpc.errors`. Every transport translates at
its boundary with :func:`map_os_errors` (a context manager, after httpcore's
``map_exceptions``) or, on a hot path where a context manager costs too much, with
:func:`translate` in an ``except OSError`` clause. The tables below say what each kind of
operation turns into; the message is ``"<what>: <the errno's text>"`` and the ``OSError`` is
kept as ``__cause__``::

    with map_os_errors(f"cannot connect to {url}", CONNECTING):
        sock = socket.create_connection(...)

Nothing else in the package catches ``OSError`` to re-raise it as another error.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator, Mapping

from clusterrpc.errors import (
    CallTimeoutError,
    ClusterRPCError,
    ConfigurationError,
    ConnectError,
    ConnectionLostError,
    LocalAccessError,
    TransportError,
)

__all__ = [
    "CONFIGURING",
    "CONNECTING",
    "CONNECTION_LOST",
    "EXCHANGING",
    "LISTENING",
    "LOCAL_CONNECTING",
    "NOTIFYING",
    "SENDING",
    "ErrorMap",
    "describe_os_error",
    "map_os_errors",
    "translate",
]

ErrorMap = Mapping[type[BaseException], type[ClusterRPCError]]
"""``OSError`` class → the error it becomes; the first entry that matches (``isinstance``) wins,
so the specific classes come before ``OSError``."""

LISTENING: ErrorMap = {OSError: TransportError}
"""Binding or listening: the address is taken, not ours, or invalid."""

CONNECTING: ErrorMap = {OSError: ConnectError}
"""Connecting, resolving a name, opening a socket: the call was never sent."""

LOCAL_CONNECTING: ErrorMap = {PermissionError: LocalAccessError, OSError: ConnectError}
"""Connecting to a local API socket: ``EACCES`` is the kernel refusing a security domain
(``spec/local.md``), so it is a :class:`~clusterrpc.errors.LocalAccessError`."""

SENDING: ErrorMap = {ConnectionRefusedError: ConnectError, OSError: TransportError}
"""Sending a datagram: an ICMP "port unreachable" from an earlier one says nobody listens."""

EXCHANGING: ErrorMap = {TimeoutError: CallTimeoutError, OSError: ConnectionLostError}
"""Writing a call and reading its answer on a connection: it broke (the call may have run)."""

CONNECTION_LOST: ErrorMap = {OSError: ConnectionLostError}
"""Reading or writing where the caller's deadline is kept elsewhere (an event loop's)."""

NOTIFYING: ErrorMap = {OSError: TransportError}
"""Sending a notification to the service manager (``$NOTIFY_SOCKET``): gone, or not reading."""

CONFIGURING: ErrorMap = {OSError: ConfigurationError}
"""Reading a file the configuration names (a TLS certificate)."""


def describe_os_error(error: BaseException) -> str:
    """A short text for an ``OSError`` (``[Errno 111] Connection refused`` →
    ``connection refused``; a timeout → ``timed out``; a TLS error by its own text, since its
    ``errno`` is OpenSSL's, not the system's)."""
    if isinstance(error, ssl.SSLError):
        return str(error)
    if isinstance(error, TimeoutError) and not error.errno:
        return "timed out"
    if isinstance(error, OSError):
        # asyncio puts its own text in strerror ("Connect call failed (…)"); the errno's
        # standard text is what a person recognises.
        text = os.strerror(error.errno) if error.errno else error.strerror
        if text:
            return text[0].lower() + text[1:]
    return str(error) or type(error).__name__


def translate(error: OSError, what: str, mapping: ErrorMap) -> ClusterRPCError:
    """The clusterrpc error for ``error`` under ``mapping``, with the message
    ``"<what>: <reason>"`` and ``error`` as its cause (raise it ``from error``). An ``OSError``
    that no entry matches becomes :class:`~clusterrpc.errors.TransportError`."""
    becomes = next((becomes for kind, becomes in mapping.items() if isinstance(error, kind)),
                   TransportError)
    translated = becomes(f"{what}: {describe_os_error(error)}")
    translated.__cause__ = error
    return translated


@contextlib.contextmanager
def map_os_errors(what: str, mapping: ErrorMap) -> Iterator[None]:
    """Translate an ``OSError`` raised inside the block (see :func:`translate`); every other
    exception — clusterrpc's own included, though some derive from ``OSError`` — passes
    unchanged."""
    try:
        yield
    except ClusterRPCError:
        raise  # some of ours are OSErrors too (ConnectionError, TimeoutError subclasses)
    except OSError as error:
        raise translate(error, what, mapping) from error
