"""Special types: meanings the project gives a basic type, each with a validator.

========== ========= ==========================================================================
name       basictype a valid value
========== ========= ==========================================================================
ipv4       string    a dotted-quad IPv4 address (``10.0.0.1``; no leading zeros)
ipv6       string    an IPv6 address (``fe80::1``; no zone, no brackets)
hostport   string    ``host:port``: a DNS name or IPv4 address, or ``[IPv6]``; port 1-65535
path       string    an absolute POSIX path without NUL (``/var/lib/clusterrpc``)
duration   double    seconds >= 0, a number; in TOML also a string: ``250ms``, ``1.5s``,
                     ``2m``, ``1h`` (normalised to seconds by ``apply_defaults``/``check``)
nodename   string    1-255 bytes of printable UTF-8 (the packet header's sender-name rule)
clustername string   ``/``-separated components (:func:`clusterrpc.local.paths.check_cluster_name`)
========== ========= ==========================================================================

A tool that does not know a special type falls back to the basictype with its length and
regex, as the framework paper says; so a model may name special types not listed here (they
are checked against their basictype only).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from clusterrpc.errors import ConfigurationError

__all__ = ["SPECIALTYPES", "SpecialType", "check_specialtype"]

_HOSTNAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


class SpecialType:
    """A special type: its ``name``, ``basictype``, a one-line ``description`` of a valid
    value, the JSON Schema keywords that say as much (``schema``), and ``parse`` — the value
    normalised, or :class:`ValueError` with the reason."""

    __slots__ = ("basictype", "description", "name", "parse", "schema")

    def __init__(self, name: str, basictype: str, description: str,
                 parse: Callable[[Any], Any], schema: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.basictype = basictype
        self.description = description
        self.parse = parse
        self.schema: Mapping[str, Any] = MappingProxyType(dict(schema or {}))

    def __repr__(self) -> str:
        return f"<SpecialType {self.name} ({self.basictype})>"


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def _ipv4(value: Any) -> str:
    text = _string(value)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError("not an IPv4 address") from None


def _ipv6(value: Any) -> str:
    text = _string(value)
    if "%" in text:
        raise ValueError("an IPv6 address without a zone")
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise ValueError("not an IPv6 address") from None
    return text


def _hostport(value: Any) -> str:
    text = _string(value)
    host, colon, port = text.rpartition(":")
    if not colon or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("not host:port with a port 1-65535")
    if host.startswith("[") and host.endswith("]"):
        _ipv6(host[1:-1])
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError("the host is not a DNS name, an IPv4 address or [IPv6]")
    return text


def _path(value: Any) -> str:
    text = _string(value)
    if not text.startswith("/") or "\x00" in text:
        raise ValueError("not an absolute path")
    return text


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        raise ValueError("not a duration (seconds, or 250ms, 1.5s, 2m, 1h)")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("not a duration >= 0")
    return seconds


def _nodename(value: Any) -> str:
    from clusterrpc.packet import MAX_NAME  # noqa: PLC0415

    text = _string(value)
    if not text or not text.isprintable() or len(text.encode("utf-8")) > MAX_NAME:
        raise ValueError(f"not a node name (1-{MAX_NAME} bytes of printable UTF-8)")
    return text


def _clustername(value: Any) -> str:
    from clusterrpc.local.paths import check_cluster_name  # noqa: PLC0415

    try:
        return check_cluster_name(_string(value))
    except ConfigurationError as error:
        raise ValueError(str(error)) from None


SPECIALTYPES: Final[Mapping[str, SpecialType]] = MappingProxyType({each.name: each for each in (
    SpecialType("ipv4", "string", "an IPv4 address", _ipv4, {"format": "ipv4"}),
    SpecialType("ipv6", "string", "an IPv6 address", _ipv6, {"format": "ipv6"}),
    SpecialType("hostport", "string", "host:port", _hostport),
    SpecialType("path", "string", "an absolute path", _path, {"pattern": "^/"}),
    SpecialType("duration", "double", "seconds >= 0, or 250ms, 1.5s, 2m, 1h", _duration),
    SpecialType("nodename", "string", "a node name", _nodename,
                {"minLength": 1, "maxLength": 255}),
    SpecialType("clustername", "string", "a cluster name", _clustername,
                {"minLength": 1}),
)})
"""The special types the project defines (module docstring), by name."""


def check_specialtype(name: object, basictype: str, where: str) -> None:
    """Raise :class:`~clusterrpc.errors.ConfigurationError` unless ``name`` can be the
    specialtype of a ``basictype`` field: a known one of that basictype, or an unknown name
    (``[a-z][a-z0-9_]*``, checked as its basictype only)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(f"{where}: specialtype {name!r} must be 1-32 characters of "
                                 "a-z 0-9 _, starting with a letter")
    known = SPECIALTYPES.get(name)
    if known is not None and known.basictype != basictype:
        raise ConfigurationError(f"{where}: specialtype {name} is a {known.basictype}, "
                                 f"not a {basictype}")
