"""Unix-domain sockets of the local client-server API: binding with permissions, the kernel's
peer credentials, file-descriptor passing, and one stream driven on an event loop.

The local API (``clusterrpc.local``, ``spec/local.md``) needs what asyncio's transports do not
give: the socket's mode and owner set between ``bind()`` and ``listen()`` (so no process can
connect before the permissions hold), ``SO_PEERCRED``/``SO_PEERGROUPS`` of each accepted
connection, file descriptors received with ``recvmsg`` (``SCM_RIGHTS``) and sent with
``sendmsg``, and an exact count of the bytes waiting to be written (a client that stops reading
is evicted on it). :class:`LocalStream` is that stream: ``add_reader``/``add_writer`` on the
loop and the socket module, nothing else. OS errors are translated here (:mod:`.errors`).
"""

from __future__ import annotations

import array
import asyncio
import collections
import contextlib
import os
import socket
import stat
import struct
import typing
from collections.abc import Callable, Sequence

from clusterrpc.errors import (
    ClusterRPCError,
    ConfigurationError,
    ConnectionLostError,
    LocalAccessError,
)
from clusterrpc.transports.errors import (
    CONNECTION_LOST,
    LISTENING,
    LOCAL_CONNECTING,
    map_os_errors,
    translate,
)
from clusterrpc.transports.streams import STREAM_READ_SIZE, _remove_stale_socket

__all__ = [
    "MAX_FDS",
    "SO_PEERGROUPS",
    "Credentials",
    "LocalListener",
    "LocalStream",
    "bind_local_socket",
    "check_inherited_local_socket",
    "close_fds",
    "connect_local",
    "connect_local_async",
    "own_credentials",
    "peer_credentials",
    "receive_with_fds",
    "set_receive_timeout",
]

SO_PEERGROUPS: typing.Final[int] = getattr(socket, "SO_PEERGROUPS", 59)
"""Linux's ``SO_PEERGROUPS`` (numeric 59 where Python lacks the constant)."""

MAX_FDS: typing.Final = 4
"""File descriptors one read accepts; more arrive as ``MSG_CTRUNC``, a protocol error."""

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_FDS_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


class Credentials(typing.NamedTuple):
    """A process's credentials as the kernel reports them for a Unix socket's peer."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]


def peer_credentials(sock: socket.socket) -> Credentials:
    """The credentials of the process at the other end of the connected Unix socket ``sock``:
    ``SO_PEERCRED`` (taken by the kernel when the peer called ``connect()``, or
    ``socketpair()``) and the supplementary groups (``SO_PEERGROUPS``; empty where the kernel
    lacks it). Raises :class:`~clusterrpc.errors.ConnectionLostError` if the socket cannot
    report them."""
    with map_os_errors("cannot read the peer's credentials", CONNECTION_LOST):
        pid, uid, gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        groups: tuple[int, ...] = ()
        size = 64 * 4
        while size <= 65536 * 4:
            try:
                raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
            except OSError as error:
                if error.errno == 34:  # ERANGE: more groups than the buffer holds
                    size *= 4
                    continue
                if error.errno in (92, 95):  # ENOPROTOOPT, EOPNOTSUPP: an older kernel
                    break
                raise
            groups = tuple(array.array("I", raw[: len(raw) // 4 * 4]))
            break
    return Credentials(pid, uid, gid, groups)


def own_credentials() -> Credentials:
    """This process's credentials, in the form :func:`peer_credentials` gives a peer's."""
    return Credentials(os.getpid(), os.getuid(), os.getgid(), tuple(os.getgroups()))


def bind_local_socket(path: str, *, mode: int, uid: int, gid: int, abstract: bool = False,
                      backlog: int = 128) -> socket.socket:
    """A listening, non-blocking Unix stream socket at ``path`` whose file has ``mode`` and
    owner ``uid``:``gid`` *before* it listens: until ``listen()`` every ``connect()`` is refused,
    so no process connects under looser permissions. A stale socket file (nobody listening) is
    replaced; a live one is not. ``abstract``: bind in Linux's abstract namespace instead (no
    file, no permissions: the server's own credential check is the only gate).

    Raises :class:`~clusterrpc.errors.TransportError` if it cannot bind, and
    :class:`~clusterrpc.errors.LocalAccessError` if the owner or mode cannot be set.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with map_os_errors(f"cannot listen on local socket {path}", LISTENING):
            if abstract:
                sock.bind("\0" + path)
            else:
                _remove_stale_socket(path)
                sock.bind(path)
        if not abstract:
            try:
                if (uid, gid) != (os.geteuid(), os.getegid()):
                    os.chown(path, uid, gid)
                os.chmod(path, mode)
            except OSError as error:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                raise LocalAccessError(
                    f"cannot give local socket {path} owner {uid}:{gid} and mode {mode:04o}: "
                    f"{error.strerror}") from error
        with map_os_errors(f"cannot listen on local socket {path}", LISTENING):
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def check_inherited_local_socket(sock: socket.socket, path: str, *, mode: int, uid: int,
                                 gid: int, abstract: bool = False) -> None:
    """Check that ``sock``, a socket a service manager passed for a local-API endpoint
    (``spec/systemd.md``), gives what :func:`bind_local_socket` would have: a listening Unix
    stream socket bound at ``path`` (``abstract``: that name in the abstract namespace), so
    clients find it where ``spec/local.md`` puts it, whose file has exactly ``mode`` and the
    owner ``uid``:``gid`` — the domain's permissions, set by the manager before it listened
    (``SocketMode=``, ``SocketUser=``, ``SocketGroup=``). The server's own credential check of
    every peer applies on top, as on a socket it binds itself.

    Raises :class:`~clusterrpc.errors.ConfigurationError` for the wrong kind of socket or
    path, and :class:`~clusterrpc.errors.LocalAccessError` for other permissions."""
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ConfigurationError(f"the socket inherited for {path} is not a Unix stream socket")
    with map_os_errors(f"cannot inspect the socket inherited for {path}", LISTENING):
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        bound = sock.getsockname()
    if not listening:
        raise ConfigurationError(f"the socket inherited for {path} does not listen "
                                 "(Accept=yes?): use Accept=no")
    expected: str | bytes = ("\0" + path).encode() if abstract else path
    if isinstance(bound, str) and abstract:
        bound = bound.encode()
    if bound != expected:
        where = "@" + path if abstract else path
        raise ConfigurationError(
            f"the socket inherited for {where} is bound at {bound!r}: local clients look for "
            f"it at {where} (set ListenStream= to that)")
    if abstract:
        return  # no file: the credential check is the only gate, as for a bound one
    try:
        info = os.lstat(path)
    except OSError as error:
        raise LocalAccessError(f"cannot check the inherited socket {path}: "
                               f"{error.strerror}") from error
    actual = stat.S_IMODE(info.st_mode)
    if not stat.S_ISSOCK(info.st_mode) or (actual, info.st_uid, info.st_gid) != (mode, uid, gid):
        raise LocalAccessError(
            f"the inherited socket {path} has mode {actual:04o} and owner "
            f"{info.st_uid}:{info.st_gid}; its domain needs mode {mode:04o} and owner "
            f"{uid}:{gid} (set SocketMode=, SocketUser= and SocketGroup=)")


def connect_local(path: str, *, timeout: float | None, abstract: bool = False
                  ) -> socket.socket:
    """A blocking Unix stream socket connected to ``path``. Raises
    :class:`~clusterrpc.errors.LocalAccessError` when the kernel refuses (``EACCES``: the
    socket's permissions do not admit this process) and
    :class:`~clusterrpc.errors.ConnectError` for anything else (no such socket, nobody
    listening)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with map_os_errors(f"cannot connect to local socket {path}", LOCAL_CONNECTING):
            sock.settimeout(timeout)
            sock.connect("\0" + path if abstract else path)
            sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    return sock


def close_fds(fds: Sequence[int]) -> None:
    """Close every descriptor in ``fds`` (received ones nobody will use)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _fds_of(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(data[: len(data) - len(data) % received.itemsize])
            fds.extend(received)
    return fds


def receive_with_fds(sock: socket.socket, view: memoryview) -> tuple[int, list[int]]:
    """One ``recvmsg`` into ``view``: the byte count (0 at EOF) and the descriptors that came
    with the bytes (the caller owns them). A truncated control message (``MSG_CTRUNC``: more
    descriptors than :data:`MAX_FDS`, or a peer's trick) is a protocol error: every descriptor
    received is closed and :class:`~clusterrpc.errors.ConnectionLostError` raised. ``OSError``
    (``BlockingIOError`` included) passes to the caller's boundary."""
    count, ancillary, flags, _ = sock.recvmsg_into([view], _FDS_SPACE)
    fds = _fds_of(ancillary) if ancillary else []
    if flags & socket.MSG_CTRUNC:
        close_fds(fds)
        raise ConnectionLostError(
            "the peer sent more file descriptors than one message may carry (MSG_CTRUNC)")
    return count, fds


class LocalStream:
    """One connected Unix stream socket on the running event loop (module docstring).

    ``receive(data, fds)`` gets every read (``fds``: descriptors that came with it, only with
    ``accept_fds``; the receiver owns them). ``lost(error)`` is called once when the stream
    ends: ``None`` for the peer's orderly close (EOF), else the translated error. ``drained()``
    (optional) is called when the write buffer falls below ``low_water`` after it passed
    ``high_water`` (:attr:`write_paused`). Not thread-safe: one loop.
    """

    __slots__ = ("_ancillary", "_buffer", "_closing", "_drained", "_fd", "_linger", "_loop",
                 "_lost", "_out", "_reading", "_receive", "_view", "buffered", "closed",
                 "high_water", "low_water", "sock", "write_paused")

    def __init__(self, sock: socket.socket, *, receive: Callable[[memoryview, list[int]], None],
                 lost: Callable[[ClusterRPCError | None], None],
                 drained: Callable[[], None] | None = None, accept_fds: bool = False,
                 high_water: int = 256 * 1024, low_water: int = 64 * 1024) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._receive = receive
        self._lost: Callable[[ClusterRPCError | None], None] | None = lost
        self._drained = drained
        self._ancillary = accept_fds
        self._buffer = bytearray(STREAM_READ_SIZE)
        self._view = memoryview(self._buffer)
        self._out: collections.deque[tuple[memoryview, Sequence[int]]] = collections.deque()
        self.buffered = 0
        """Bytes written but not yet taken by the kernel."""
        self.high_water = high_water
        self.low_water = low_water
        self.write_paused = False
        """Whether :attr:`buffered` passed ``high_water`` (and has not fallen below
        ``low_water`` since): the peer is not reading."""
        self.closed = False
        self._closing = False
        self._linger: asyncio.TimerHandle | None = None
        self._reading = True
        self._loop.add_reader(self._fd, self._readable)

    # -- reading -------------------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            if self._ancillary:
                count, fds = receive_with_fds(self.sock, self._view)
            else:
                count, fds = self.sock.recv_into(self._buffer), []
        except (BlockingIOError, InterruptedError):
            return
        except ClusterRPCError as error:
            self._end(error)
            return
        except OSError as error:
            self._end(translate(error, "local connection lost", CONNECTION_LOST))
            return
        if not count:
            close_fds(fds)
            self._end(None)
            return
        self._receive(self._view[:count], fds)

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading` (back-pressure, or a stall)."""
        if self._reading and not self.closed:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""
        if not self._reading and not self.closed:
            self._reading = True
            self._loop.add_reader(self._fd, self._readable)

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send ``data`` (with the descriptors ``fds``, which travel with its first byte: the
        stream owns them and closes them once sent or discarded); what the kernel does not take
        now is buffered and sent as the socket drains. Ignored once the stream is closing."""
        if self.closed or self._closing or not data:
            close_fds(fds)
            return
        view = memoryview(data)
        if not self._out:
            try:
                sent = (self.sock.sendmsg([view], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                    array.array("i", fds).tobytes())])
                        if fds else self.sock.send(view))
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                close_fds(fds)
                self._end(translate(error, "local connection lost", CONNECTION_LOST))
                return
            if sent:
                close_fds(fds)  # the kernel holds its own references now
                if sent == len(view):
                    return
                view, fds = view[sent:], ()
            self._loop.add_writer(self._fd, self._writable)
        self._out.append((view, fds))
        self.buffered += len(view)
        if self.buffered > self.high_water:
            self.write_paused = True

    def _writable(self) -> None:
        out = self._out
        while out:
            view, fds = out[0]
            try:
                sent = (self.sock.sendmsg([view], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                    array.array("i", fds).tobytes())])
                        if fds else self.sock.send(view))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self._end(translate(error, "local connection lost", CONNECTION_LOST))
                return
            self.buffered -= sent
            if fds:
                close_fds(fds)
            if sent == len(view):
                out.popleft()
            else:
                out[0] = (view[sent:], ())
                break
        if not out:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._end(None)
                return
        if self.write_paused and self.buffered <= self.low_water:
            self.write_paused = False
            if self._drained is not None:
                self._drained()

    # -- ending --------------------------------------------------------------------------------

    def close(self, *, linger: float | None = None) -> None:
        """Close once what is buffered is sent. ``linger``: give up (discard it) after that
        many seconds, for a peer that does not read. ``lost(None)`` follows."""
        if self.closed:
            return
        self.pause_reading()
        if not self._out:
            self._end(None)
            return
        self._closing = True
        if linger is not None:
            self._linger = self._loop.call_later(linger, self.abort)

    def abort(self) -> None:
        """Close now, discarding what is buffered."""
        self._end(None)

    def _end(self, error: ClusterRPCError | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self._reading:
            self._loop.remove_reader(self._fd)
        if self._out:
            self._loop.remove_writer(self._fd)
            for _, fds in self._out:
                close_fds(fds)
            self._out.clear()
        self.buffered = 0
        if self._linger is not None:
            self._linger.cancel()
        self.sock.close()
        lost, self._lost = self._lost, None
        if lost is not None:
            lost(error)


class LocalListener:
    """Accepts connections on a socket from :func:`bind_local_socket`; ``accepted(sock)`` gets
    each one (non-blocking, the caller's to close). Not thread-safe: one loop."""

    __slots__ = ("_accepted", "_loop", "abstract", "path", "sock")

    def __init__(self, sock: socket.socket, path: str,
                 accepted: Callable[[socket.socket], object], *, abstract: bool = False
                 ) -> None:
        self.sock = sock
        self.path = path
        self.abstract = abstract
        self._accepted = accepted
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        for _ in range(64):  # bounded: other connections' reads get their turn
            try:
                client, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # EMFILE and friends: logged by the caller's loop
                self._loop.call_exception_handler({
                    "message": f"accept() on local socket {self.path} failed",
                    "exception": error,
                })  # fmt: skip
                return
            client.setblocking(False)
            self._accepted(client)

    def close(self, *, unlink: bool = True) -> None:
        """Stop accepting and close the socket; remove its file (``unlink``)."""
        if self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
        if unlink and not self.abstract:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


async def connect_local_async(path: str, *, abstract: bool = False) -> socket.socket:
    """:func:`connect_local` for the running event loop: a non-blocking socket, connected
    (the caller bounds the wait). Raises as :func:`connect_local`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        with map_os_errors(f"cannot connect to local socket {path}", LOCAL_CONNECTING):
            await asyncio.get_running_loop().sock_connect(sock, "\0" + path if abstract
                                                          else path)
    except BaseException:
        sock.close()
        raise
    return sock


_TIMEVAL = struct.Struct("@ll")


def set_receive_timeout(sock: socket.socket, seconds: float | None) -> None:
    """Bound a blocking socket's reads and writes by the kernel (``SO_RCVTIMEO``,
    ``SO_SNDTIMEO``; ``None``: none), so a read that times out raises ``BlockingIOError``
    without a ``poll`` before every read."""
    if seconds is None:
        value = _TIMEVAL.pack(0, 0)
    else:
        micros = max(int(seconds * 1e6), 1)  # never 0, which would mean "for ever"
        value = _TIMEVAL.pack(micros // 1_000_000, micros % 1_000_000)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
