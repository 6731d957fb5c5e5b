"""Where the local API's sockets live, and the checks on those paths (``spec/local.md``).

A security domain is a socket path: ``<local_dir>/<cluster path>/sockets/<service>/<DOMAIN>``,
the cluster path being the hierarchical cluster name split on ``/`` (``ORG/UK/EDIN`` →
``ORG/UK/EDIN/``). Nothing here opens a socket; :func:`check_directory` and
:func:`make_directories` look at and create directories.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Final

from clusterrpc.errors import ConfigurationError, LocalAccessError

__all__ = [
    "SYSTEM",
    "USER",
    "check_cluster_name",
    "check_directory",
    "check_domain_name",
    "check_service_name",
    "default_local_dir",
    "make_directories",
    "socket_path",
]

USER: Final = "USER"
"""The default domain for applications' requests: any local user may connect (mode 0666)."""
SYSTEM: Final = "SYSTEM"
"""The domain of privileged cluster services: root and the ``clusterrpc`` group (mode 0660).
The only domain where ``recovery_ok`` handles are allowed."""

_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_DOMAIN = re.compile(r"[A-Z][A-Z0-9_]{0,31}")
_SERVICE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")


def check_cluster_name(cluster: object) -> str:
    """``cluster`` if it is a valid hierarchical cluster name: ``/``-separated components,
    each non-empty, of letters, digits, ``_``, ``.`` and ``-`` (not starting with ``.`` or
    ``-``, at most 64 characters), and no component twice in one name — the seed's rule that
    makes every level of a hierarchy a unique reference. Raises
    :class:`~clusterrpc.errors.ConfigurationError` saying which rule failed."""
    if not isinstance(cluster, str) or not cluster:
        raise ConfigurationError(f"a cluster name is a non-empty string, not {cluster!r}")
    components = cluster.split("/")
    seen: set[str] = set()
    for component in components:
        if not component:
            raise ConfigurationError(
                f"cluster name {cluster!r} has an empty component (no leading, trailing or "
                "doubled '/')")
        if not _COMPONENT.fullmatch(component):
            raise ConfigurationError(
                f"cluster name {cluster!r}: component {component!r} must be 1-64 letters, "
                "digits, '_', '.' or '-', not starting with '.' or '-'")
        if component in seen:
            raise ConfigurationError(
                f"cluster name {cluster!r} names {component!r} twice; a cluster name appears "
                "at most once in a hierarchical name")
        seen.add(component)
    return cluster


def check_domain_name(domain: object) -> str:
    """``domain`` if it is a valid security-domain name (upper-case letters, digits and
    ``_``, starting with a letter, like ``USER`` and ``SYSTEM``); else raise
    :class:`~clusterrpc.errors.ConfigurationError`."""
    if not isinstance(domain, str) or not _DOMAIN.fullmatch(domain):
        raise ConfigurationError(
            f"security domain {domain!r} must be 1-32 upper-case letters, digits or '_', "
            "starting with a letter (USER, SYSTEM, ...)")
    return domain


def check_service_name(service: object) -> str:
    """``service`` if it names a local service (dot-separated identifiers); else raise
    :class:`~clusterrpc.errors.ConfigurationError`."""
    if not isinstance(service, str) or not _SERVICE.fullmatch(service):
        raise ConfigurationError(f"local service name {service!r} must be dot-separated words")
    return service


def default_local_dir(*, uid: int, runtime_dir: str | None) -> str:
    """The default ``local_dir``: ``/run/clusterrpc`` for root, else
    ``$XDG_RUNTIME_DIR/clusterrpc``. Raises :class:`~clusterrpc.errors.ConfigurationError`
    for a non-root user without ``XDG_RUNTIME_DIR`` (pass ``local_dir=`` then): guessing a
    shared directory such as ``/tmp`` is exactly the mistake the symlink check guards
    against."""
    if uid == 0:
        return "/run/clusterrpc"
    if not runtime_dir:
        raise ConfigurationError(
            "XDG_RUNTIME_DIR is not set, so there is no default local_dir for a non-root "
            "user; pass local_dir= (a directory only you can write)")
    return os.path.join(runtime_dir, "clusterrpc")


def socket_path(local_dir: str, cluster: str, service: str, domain: str) -> str:
    """The socket of ``service`` in ``domain`` of ``cluster`` under ``local_dir``."""
    return os.path.join(local_dir, *cluster.split("/"), "sockets", service, domain)


def check_directory(path: str, *, owners: frozenset[int], below: str | None = None) -> None:
    """Refuse (:class:`~clusterrpc.errors.LocalAccessError`) a socket path whose directories
    could be redirected or replaced by another user — the libqb ``/dev/shm`` symlink lesson.

    Every component of ``path``, from ``/``, is looked at with ``lstat`` (a symlink is refused
    wherever it is). Above ``below`` (the local directory), a component writable by others is
    refused unless it is sticky (``/tmp``); from ``below`` down, every component must be owned
    by one of ``owners`` (root and the daemon's uid) and writable by nobody else, sticky or
    not. Components that do not exist yet end the check (they will be created by
    :func:`make_directories`, with safe modes).
    """
    path = os.path.abspath(path)
    top = os.path.abspath(below) if below is not None else None
    current = "/"
    parts = [part for part in path.split("/") if part]
    for index in range(len(parts) + 1):
        if index:
            current = os.path.join(current, parts[index - 1])
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return
        except OSError as error:
            raise LocalAccessError(f"cannot check {current}: {error.strerror}") from error
        if stat.S_ISLNK(info.st_mode):
            raise LocalAccessError(
                f"{current} is a symlink; refusing to put local sockets below it (another "
                "user could redirect them)")
        if not stat.S_ISDIR(info.st_mode):
            raise LocalAccessError(f"{current} is not a directory")
        inside = top is not None and (current == top or current.startswith(top + "/"))
        writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if inside:
            if info.st_uid not in owners:
                raise LocalAccessError(
                    f"{current} belongs to uid {info.st_uid}, not to root or the daemon; "
                    "refusing to put local sockets below it")
            if writable_by_others:
                raise LocalAccessError(
                    f"{current} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}); "
                    "refusing to put local sockets below it")
        elif info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            raise LocalAccessError(
                f"{current} is writable by everyone and not sticky "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); refusing to put local sockets below it")


def make_directories(path: str, *, below: str, owners: frozenset[int]) -> None:
    """Create ``path`` and its missing parents with mode 0755 (search for everyone: the socket
    files' own modes decide who may connect; directories that exist keep their mode), then
    :func:`check_directory` the result. Raises
    :class:`~clusterrpc.errors.LocalAccessError`."""
    check_directory(path, owners=owners, below=below)
    missing = []
    current = os.path.abspath(path)
    while not os.path.lexists(current):
        missing.append(current)
        current = os.path.dirname(current)
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
        # makedirs applies the umask; what it created gets exactly 0755 (others must reach the
        # sockets, and must never write here). Existing directories keep the operator's mode.
        for created in missing:
            os.chmod(created, 0o755)  # noqa: S103 - search only; the sockets decide
    except OSError as error:
        raise LocalAccessError(f"cannot create {path}: {error.strerror}") from error
    check_directory(path, owners=owners, below=below)
