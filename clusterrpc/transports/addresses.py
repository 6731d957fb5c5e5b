"""Endpoint addresses: the URLs that name where a node listens and whom it calls.

==========================================  ===============================================
URL                                         meaning
==========================================  ===============================================
``tcp://host:port``                         signed packets over TCP, length-prefixed
``unix:///absolute/path``                   the same over a Unix-domain stream socket
``udp://host:port``                         one signed packet per datagram
``udp://group:port?iface=addr[&ttl=N]``     a multicast group (``group`` in 224.0.0.0/4 or
                                            ff00::/8): the interface is required, the TTL
                                            defaults to 1, so nothing leaves the local link
                                            unless asked for
``http://host[:port][/path]``               standard XML-RPC over HTTP (port 80, path
                                            ``/RPC2`` by default); ``https://`` with TLS (443)
``fd://NAME[/path]``                        listen only: the socket(s) a service manager
                                            passed under the file-descriptor name ``NAME``
                                            (systemd socket activation, ``spec/systemd.md``):
                                            ``cluster[.LABEL]`` serves packets (TCP, Unix
                                            stream or UDP, by the socket's type),
                                            ``http[.LABEL]`` standard XML-RPC (``/path``:
                                            ``/RPC2`` by default)
==========================================  ===============================================

Hosts are names or IP literals (IPv6 in brackets: ``tcp://[::1]:7400``). Port 0 means "any
free port" and is only useful for listening. Parsing does no I/O: names are not resolved here.

File-descriptor names follow one rule (:func:`fd_name_kind`, ``spec/systemd.md``), so that the
name says what the socket is for: ``cluster`` or ``cluster.LABEL`` (packet listeners),
``http`` or ``http.LABEL`` (the standard XML-RPC endpoint) and ``local.SERVICE.DOMAIN`` (the
local-API socket of a service in a security domain, which the node's local server takes; it is
never a ``listen`` URL). A name is 1-255 characters of letters, digits, ``_``, ``-`` and
``.``: always a valid systemd ``FileDescriptorName=`` (printable ASCII without ``:``) and a
valid URL host part, so an ``fd://`` URL names it unchanged.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse

from clusterrpc.errors import ConfigurationError

__all__ = [
    "FD_CLUSTER",
    "FD_HTTP",
    "FD_LOCAL",
    "SCHEMES",
    "Address",
    "fd_name_kind",
    "local_fd_name",
    "parse_address",
    "parse_listen_address",
]

SCHEMES = ("tcp", "unix", "udp", "http", "https")

FD_CLUSTER = "cluster"
"""The kind of fd name (and its first component) of the cluster's packet listeners."""
FD_HTTP = "http"
"""The kind of fd name of the standard XML-RPC (HTTP or HTTPS) endpoint."""
FD_LOCAL = "local"
"""The kind of fd name of a local-API socket: ``local.SERVICE.DOMAIN``."""

_FD_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_FD_LOCAL = re.compile(r"local\.([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)"
                       r"\.([A-Z][A-Z0-9_]{0,31})")
_MAX_FD_NAME = 255  # systemd's limit for FileDescriptorName= (fdname_is_valid)
_DEFAULT_HTTP_PORT = {"http": 80, "https": 443}
_DEFAULT_TTL = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """A parsed endpoint URL (see the module docstring). Build it with :func:`parse_address`.

    ``host``/``port`` are set for every scheme but ``unix`` and ``fd``; ``path`` is the socket
    path for ``unix`` and the request path for ``http(s)`` (and ``fd://http…``); ``iface`` and
    ``ttl`` only for multicast groups; ``name`` only for ``fd``.
    """

    scheme: str
    host: str | None = None
    port: int | None = None
    path: str | None = None
    iface: str | None = None
    ttl: int | None = None
    name: str | None = None
    """For ``fd://`` only: the file-descriptor name (``path`` is then the HTTP path, if
    given)."""

    @property
    def multicast(self) -> bool:
        """Whether this is a UDP multicast group."""
        return self.iface is not None

    @property
    def stream(self) -> bool:
        """Whether packets travel length-prefixed on a stream (``tcp``, ``unix``)."""
        return self.scheme in ("tcp", "unix")

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        if self.scheme == "fd":
            return f"fd://{self.name}{self.path or ''}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        text = f"{self.scheme}://{host}:{self.port}"
        if self.scheme in ("http", "https"):
            return text + (self.path or "")
        if self.multicast:
            text += f"?iface={self.iface}&ttl={self.ttl}"
        return text


def _fail(url: str, reason: str) -> ConfigurationError:
    return ConfigurationError(f"invalid address {url!r}: {reason}")


def _is_multicast(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_multicast
    except ValueError:
        return False  # a name: never treated as a group (groups are given as addresses)


def fd_name_kind(name: str) -> str:
    """The kind of the file-descriptor name ``name`` (module docstring): :data:`FD_CLUSTER`,
    :data:`FD_HTTP` or :data:`FD_LOCAL`. Raises :class:`~clusterrpc.errors.ConfigurationError`
    for a name outside the rule, saying what the rule is."""
    if (not isinstance(name, str) or not 0 < len(name) <= _MAX_FD_NAME
            or not _FD_NAME.fullmatch(name)):
        raise ConfigurationError(
            f"invalid file-descriptor name {name!r}: 1-{_MAX_FD_NAME} letters, digits, '_', "
            "'-' and '.' (dot-separated words)")
    kind = name.split(".", 1)[0]
    if kind == FD_LOCAL:
        if not _FD_LOCAL.fullmatch(name):
            raise ConfigurationError(
                f"invalid file-descriptor name {name!r}: a local-API socket is named "
                "local.SERVICE.DOMAIN (e.g. local.locks.USER)")
        return FD_LOCAL
    if kind in (FD_CLUSTER, FD_HTTP):
        return kind
    raise ConfigurationError(
        f"file-descriptor name {name!r} does not say what the socket is for: name it "
        f"{FD_CLUSTER}[.LABEL] (packet listeners), {FD_HTTP}[.LABEL] (XML-RPC over HTTP) or "
        f"{FD_LOCAL}.SERVICE.DOMAIN (a local-API socket) — spec/systemd.md")


def local_fd_name(service: str, domain: str) -> str:
    """The file-descriptor name of the local-API socket of ``service`` in ``domain``."""
    return f"{FD_LOCAL}.{service}.{domain}"


def parse_listen_address(url: str) -> Address:
    """Parse a ``listen`` URL: what :func:`parse_address` accepts, and ``fd://NAME[/path]``
    (an inherited socket: only a node listens on one, nobody calls one). Raises
    :class:`~clusterrpc.errors.ConfigurationError`."""
    if isinstance(url, str) and url[:5].lower() == "fd://":
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError as error:
            raise _fail(url, str(error)) from None
        return _parse_fd(url, parts)
    return parse_address(url)


def _parse_fd(url: str, parts: urllib.parse.SplitResult) -> Address:
    # The netloc, not .hostname: that one is lower-cased, and fd names are case-sensitive.
    name = parts.netloc
    if parts.query or parts.fragment or "@" in name or ":" in name:
        raise _fail(url, "an fd:// URL is fd://NAME (and a /path for an HTTP endpoint)")
    try:
        kind = fd_name_kind(name)
    except ConfigurationError as error:
        raise _fail(url, str(error)) from None
    if kind == FD_LOCAL:
        raise _fail(url, "local-API sockets are taken by the node's local server "
                         "(serve_local), not listened on")
    path = parts.path or None
    if path is not None and kind != FD_HTTP:
        raise _fail(url, "only an HTTP endpoint (fd://http…) has a path")
    return Address("fd", path=path, name=name)


def parse_address(url: str) -> Address:
    """Parse an endpoint URL; raises :class:`~clusterrpc.errors.ConfigurationError` saying what
    is wrong (unknown scheme, missing port, relative socket path, a multicast group without
    ``iface`` …)."""
    if not isinstance(url, str):
        raise ConfigurationError(f"an address must be a URL string, not {type(url).__name__}")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _fail(url, str(error)) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise _fail(url, f"the scheme must be one of {', '.join(SCHEMES)}")
    if parts.fragment or parts.username or parts.password:
        raise _fail(url, "fragments and user names have no meaning here")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)

    if scheme == "unix":
        if parts.netloc or not parts.path.startswith("/") or parts.query:
            raise _fail(url, "a Unix socket is unix:///absolute/path, with no host or query")
        return Address(scheme, path=parts.path)

    host = parts.hostname
    if not host:
        raise _fail(url, "a host is required")
    if scheme in ("http", "https"):
        if parts.query:
            raise _fail(url, "an HTTP endpoint takes no query")
        return Address(
            scheme,
            host=host,
            port=_DEFAULT_HTTP_PORT[scheme] if port is None else port,
            path=parts.path or "/RPC2",
        )
    if port is None:
        raise _fail(url, "a port is required")
    if parts.path not in ("", "/"):
        raise _fail(url, f"{scheme} addresses have no path")
    if scheme == "tcp" or not _is_multicast(host):
        if parts.query:
            raise _fail(url, "only multicast groups take a query (?iface=…&ttl=…)")
        return Address(scheme, host=host, port=port)

    unknown = set(query) - {"iface", "ttl"}
    if unknown:
        raise _fail(url, f"unknown parameter(s) {', '.join(sorted(unknown))}")
    ifaces, ttls = query.get("iface", []), query.get("ttl", [str(_DEFAULT_TTL)])
    if len(ifaces) != 1 or not ifaces[0]:
        raise _fail(
            url, "a multicast group needs exactly one ?iface=ADDRESS (the interface to use), "
            "so that nothing is sent through the default route"
        )  # fmt: skip
    try:
        ipaddress.ip_address(ifaces[0])
    except ValueError:
        raise _fail(url, f"iface must be an interface's IP address, not {ifaces[0]!r}") from None
    if len(ttls) != 1 or not ttls[0].isdigit() or not 0 <= int(ttls[0]) <= 255:
        raise _fail(url, "ttl must be one integer in 0..255")
    return Address(scheme, host=host, port=port, iface=ifaces[0], ttl=int(ttls[0]))
