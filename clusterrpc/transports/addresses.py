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
==========================================  ===============================================

Hosts are names or IP literals (IPv6 in brackets: ``tcp://[::1]:7400``). Port 0 means "any
free port" and is only useful for listening. Parsing does no I/O: names are not resolved here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse

from clusterrpc.errors import ConfigurationError

__all__ = ["SCHEMES", "Address", "parse_address"]

SCHEMES = ("tcp", "unix", "udp", "http", "https")
_DEFAULT_HTTP_PORT = {"http": 80, "https": 443}
_DEFAULT_TTL = 1


@dataclasses.dataclass(frozen=True, slots=True)
class Address:
    """A parsed endpoint URL (see the module docstring). Build it with :func:`parse_address`.

    ``host``/``port`` are set for every scheme but ``unix``; ``path`` is the socket path for
    ``unix`` and the request path for ``http(s)``; ``iface`` and ``ttl`` only for multicast
    groups.
    """

    scheme: str
    host: str | None = None
    port: int | None = None
    path: str | None = None
    iface: str | None = None
    ttl: int | None = None

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
