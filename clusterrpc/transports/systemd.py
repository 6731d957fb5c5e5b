"""systemd at the transport boundary: readiness notification, the watchdog, socket activation.

Theory of operation (``spec/systemd.md`` is the contract):

* **Notification** — a service of ``Type=notify`` (or ``notify-reload``) tells the service
  manager how it is doing by sending datagrams of newline-separated ``KEY=value`` assignments
  to the ``AF_UNIX``/``SOCK_DGRAM`` socket named by ``$NOTIFY_SOCKET`` (an absolute path, or
  ``@name`` in Linux's abstract namespace). :class:`Notifier` writes them with the socket
  module: ``READY=1``, ``STOPPING=1``, ``RELOADING=1`` with ``MONOTONIC_USEC=`` (which
  ``Type=notify-reload`` requires), ``STATUS=…`` and the watchdog's ``WATCHDOG=1``. Without
  ``$NOTIFY_SOCKET`` every method does nothing and returns ``False``.
* **Watchdog** — with ``WatchdogSec=``, systemd sets ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``,
  the process meant to ping); a service that does not send ``WATCHDOG=1`` within that interval
  is killed. :attr:`Notifier.watchdog_interval` reads it (only for this process), and
  :meth:`Notifier.keep_alive` pings at half of it, as ``sd_notify(3)`` recommends.
* **Socket activation** — the manager binds the sockets and passes them as descriptors 3, 4, …
  with ``$LISTEN_FDS`` (how many), ``$LISTEN_PID`` (for which process: a child that inherited
  the environment must not take them) and ``$LISTEN_FDNAMES`` (colon-separated
  ``FileDescriptorName=`` values). :func:`inherited_sockets` takes them as ``socket.socket``
  objects, the way ``sd_listen_fds_with_names(3)`` does, and a node serves on them through
  ``fd://NAME`` listen URLs (:mod:`clusterrpc.transports.addresses` states the naming rule).

Errors: malformed variables raise :class:`~clusterrpc.errors.ConfigurationError` when they are
read (a service manager never sets them so; a person did). A notification that cannot be
sent is, by default, logged and reported as ``False``: notification is best-effort in
systemd's own design (``sd_notify`` returns an error that daemons conventionally ignore, and a
manager that is gone cannot act on it anyway), and a node must not stop serving because its
manager restarted. ``Notifier(strict=True)`` raises
:class:`~clusterrpc.errors.TransportError` instead, with the ``OSError`` as its cause.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import stat
import time
from collections.abc import Mapping, MutableMapping

from clusterrpc.errors import ConfigurationError
from clusterrpc.transports.addresses import Address
from clusterrpc.transports.errors import NOTIFYING, translate

__all__ = [
    "LISTEN_FDS_START",
    "InheritedSocket",
    "Notifier",
    "bound_address",
    "inherited_sockets",
    "is_listening",
    "socket_scheme",
]

log = logging.getLogger("clusterrpc.systemd")

LISTEN_FDS_START = 3
"""The first inherited descriptor (``SD_LISTEN_FDS_START``)."""

UNKNOWN_NAME = "unknown"
"""The name of every inherited socket when ``$LISTEN_FDNAMES`` is not set (systemd's)."""

_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_MAX_LISTEN_FDS = 4096  # far beyond any unit; bounds the work a garbled value can cause
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes, with the terminating NUL for a file path


# -- socket activation -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class InheritedSocket:
    """A socket the service manager passed: its ``FileDescriptorName=`` (``name``), the
    descriptor number it arrived as (``fd``) and the ``socket.socket`` that owns it (family,
    type and protocol read from the descriptor). Whoever holds it owns the descriptor: a
    :class:`~clusterrpc.Node` given one serves on a duplicate and never closes it."""

    name: str
    fd: int
    socket: socket.socket

    @property
    def scheme(self) -> str | None:
        """What the socket can serve, by family and type: see :func:`socket_scheme`."""
        return socket_scheme(self.socket)

    def __repr__(self) -> str:
        return f"<InheritedSocket {self.name!r} fd={self.fd} {self.scheme or 'other'}>"


def _int_variable(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name)
    if text is None:
        return None
    # int() would also take " 3", "+3" and "3_0"; systemd's parser takes digits only.
    if not text.isascii() or not text.isdigit():
        raise ConfigurationError(f"${name} must be a decimal number, not {text!r}")
    return int(text)


def inherited_sockets(*, environ: MutableMapping[str, str] | None = None,
                      unset: bool = True) -> list[InheritedSocket]:
    """The sockets the service manager passed to this process, in descriptor order (3, 4, …),
    each with its name — ``sd_listen_fds_with_names(3)``.

    Nothing is inherited (``[]``) unless ``$LISTEN_PID`` is this process's pid and
    ``$LISTEN_FDS`` is set: the variables of a parent are not for its children. Names come
    from ``$LISTEN_FDNAMES`` (colon-separated, one per descriptor); without it every socket is
    named ``"unknown"``, as systemd does. Each descriptor gets ``FD_CLOEXEC``, so programs this
    process runs do not inherit it. ``unset``: remove the three variables from ``environ``
    (default ``os.environ``, and with it the process environment) whatever the outcome, so a
    child process never mistakes them for its own. ``environ``: where to read them.

    Raises :class:`~clusterrpc.errors.ConfigurationError` for a malformed value, a name count
    that differs from ``$LISTEN_FDS``, or a descriptor that is not open or not a socket
    (nothing is taken then). Call it once per process: the sockets then belong to the caller.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    try:
        pid = _int_variable(env, "LISTEN_PID")
        count = _int_variable(env, "LISTEN_FDS")
        names_text = env.get("LISTEN_FDNAMES")
    finally:
        if unset:
            for variable in _LISTEN_VARIABLES:
                env.pop(variable, None)
    if pid is None or count is None or pid != os.getpid() or count == 0:
        return []
    if count > _MAX_LISTEN_FDS:
        raise ConfigurationError(f"$LISTEN_FDS={count} is more descriptors than any service "
                                 f"is passed (at most {_MAX_LISTEN_FDS})")
    if names_text is None:
        names = [UNKNOWN_NAME] * count
    else:
        names = names_text.split(":")
        if len(names) != count:
            raise ConfigurationError(
                f"$LISTEN_FDNAMES names {len(names)} descriptor(s) but $LISTEN_FDS is {count}")
    fds = range(LISTEN_FDS_START, LISTEN_FDS_START + count)
    # Check every descriptor before taking any: a socket object closes its descriptor when it
    # is collected, so a half-taken set would close sockets the caller never saw.
    for fd, name in zip(fds, names, strict=True):
        try:
            mode = os.fstat(fd).st_mode
        except OSError as error:
            raise ConfigurationError(
                f"inherited descriptor {fd} ({name!r}) is not open ({error.strerror}): "
                f"$LISTEN_FDS={count} does not match what was passed") from None
        if not stat.S_ISSOCK(mode):
            raise ConfigurationError(f"inherited descriptor {fd} ({name!r}) is not a socket")
    taken = []
    for fd, name in zip(fds, names, strict=True):
        os.set_inheritable(fd, False)  # FD_CLOEXEC: ours, not our children's
        taken.append(InheritedSocket(name=name, fd=fd, socket=socket.socket(fileno=fd)))
    return taken


def socket_scheme(sock: socket.socket) -> str | None:
    """The listen scheme a socket can serve, told by its family and ``SO_TYPE``: ``"tcp"``
    (an IPv4/IPv6 stream), ``"udp"`` (an IPv4/IPv6 datagram socket), ``"unix"`` (a Unix
    stream), else ``None``."""
    family, kind = sock.family, sock.type
    if family in (socket.AF_INET, socket.AF_INET6):
        if kind == socket.SOCK_STREAM:
            return "tcp"
        if kind == socket.SOCK_DGRAM:
            return "udp"
    elif family == socket.AF_UNIX and kind == socket.SOCK_STREAM:
        return "unix"
    return None


def bound_address(sock: socket.socket, scheme: str, *, path: str | None = None) -> Address:
    """The :class:`~clusterrpc.transports.addresses.Address` ``sock`` is bound to, as a
    ``scheme`` URL (``path``: the HTTP request path). Raises
    :class:`~clusterrpc.errors.ConfigurationError` for a socket that is not bound, or a Unix
    socket in the abstract namespace (no ``unix://`` URL reaches it)."""
    where = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if not isinstance(where, str) or not where.startswith("/"):
            raise ConfigurationError(
                f"inherited Unix socket {where!r} has no file path (abstract or unbound): "
                "serve packets on a socket file, e.g. ListenStream=/run/clusterrpc/n1.sock")
        return Address("unix", path=where)
    host, port = where[0], where[1]
    if not port:
        raise ConfigurationError(f"inherited {scheme} socket is not bound to a port")
    return Address(scheme, host=host, port=port, path=path)


def is_listening(sock: socket.socket) -> bool:
    """Whether a stream socket listens (``SO_ACCEPTCONN``): systemd's ``Accept=no`` passes a
    listening socket, ``Accept=yes`` one connection, which a node cannot serve as a
    listener."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


# -- notification ------------------------------------------------------------------------------


def _notify_address(text: str | None) -> str | None:
    if text is None:
        return None
    if text.startswith("@") and 1 < len(text.encode()) <= _MAX_UNIX_PATH + 1:
        return "\0" + text[1:]  # the abstract namespace: a leading NUL, no file
    if text.startswith("/") and len(text.encode()) <= _MAX_UNIX_PATH:
        return text
    raise ConfigurationError(
        f"$NOTIFY_SOCKET must be an absolute socket path or @name (at most "
        f"{_MAX_UNIX_PATH} bytes), not {text!r}")


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    usec = _int_variable(environ, "WATCHDOG_USEC")
    pid = _int_variable(environ, "WATCHDOG_PID")
    if usec is None:
        return None
    if usec == 0:
        raise ConfigurationError("$WATCHDOG_USEC must be a positive number of microseconds")
    if pid is not None and pid != os.getpid():
        return None  # the watchdog is another process's to keep
    return usec / 1e6


def _status_text(text: str) -> str:
    # Each line of a notification is one assignment: a newline in a status text would let it
    # say READY=1 or MAINPID=… . Control characters become spaces.
    return "".join(char if char.isprintable() else " " for char in text)


class Notifier:
    """Notifications to the service manager (module docstring), from ``environ`` (default
    ``os.environ``, read once, here).

    Every method returns ``True`` once the datagram is sent and ``False`` when notification is
    off (no ``$NOTIFY_SOCKET``) or — unless ``strict`` — the send failed (logged as a warning
    on ``clusterrpc.systemd``). Sends never block: a manager whose queue is full would stall
    the event loop. Raises :class:`~clusterrpc.errors.ConfigurationError` for a malformed
    ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` or ``$WATCHDOG_PID``.
    """

    __slots__ = ("_address", "_watchdog", "strict", "where")

    def __init__(self, *, environ: Mapping[str, str] | None = None,
                 strict: bool = False) -> None:
        env = os.environ if environ is None else environ
        self.where = env.get("NOTIFY_SOCKET")
        """``$NOTIFY_SOCKET`` as given (``None``: notification is off)."""
        self._address = _notify_address(self.where)
        self._watchdog = _watchdog_interval(env)
        self.strict = strict
        """Raise :class:`~clusterrpc.errors.TransportError` when a send fails."""

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens (``$NOTIFY_SOCKET`` is set)."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """The watchdog's timeout in seconds (``$WATCHDOG_USEC``), or ``None`` when there is no
        watchdog, or it is another process's (``$WATCHDOG_PID`` set to another pid). Ping at
        least twice per interval (:meth:`keep_alive` does)."""
        return self._watchdog

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` ``assignments`` in one datagram (see the class docstring). Raises
        ``ValueError`` for an assignment without ``=`` or with a newline."""
        for assignment in assignments:
            if "=" not in assignment or "\n" in assignment:
                raise ValueError(f"a notification is KEY=value lines, not {assignment!r}")
        address = self._address
        if address is None:
            return False
        data = "".join(f"{assignment}\n" for assignment in assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(data, address)
        except OSError as error:
            failure = translate(error, f"cannot notify the service manager at {self.where}",
                                NOTIFYING)
            if self.strict:
                raise failure from error
            log.warning("%s", failure)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up (or a reload) is complete; the unit becomes active. Send it
        only once every listener serves."""
        return self.notify("READY=1", *self._status(status))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: the service is shutting down."""
        return self.notify("STOPPING=1", *self._status(status))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC=`` (``CLOCK_MONOTONIC`` now, in µs, which
        ``Type=notify-reload`` needs to match the reload); send :meth:`ready` when done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *self._status(status))

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line ``systemctl status`` shows (control characters become
        spaces: see :func:`_status_text`)."""
        return self.notify(f"STATUS={_status_text(text)}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping of ``WatchdogSec=``."""
        return self.notify("WATCHDOG=1")

    async def keep_alive(self) -> None:
        """Ping the watchdog every half :attr:`watchdog_interval` until cancelled; return at
        once when there is no watchdog for this process or notification is off. A failed ping
        is logged (unless ``strict``) and the next one is tried on time."""
        interval = self._watchdog
        if interval is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval / 2)

    @staticmethod
    def _status(status: str | None) -> tuple[str, ...]:
        return () if status is None else (f"STATUS={_status_text(status)}",)

    def __repr__(self) -> str:
        return f"<Notifier {self.where or 'off'}>"

