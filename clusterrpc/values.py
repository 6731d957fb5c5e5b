"""The value model: which Python values travel, and the limits that bound them.

A *value* is one of

=============================  ===========================================================
Python type                    notes
=============================  ===========================================================
``None``                       XML-RPC ``<nil/>`` extension
``bool``                       checked before ``int`` (``bool`` is a subclass of ``int``)
``int``                        signed 64-bit: ``-2**63 <= n < 2**63``, otherwise
                               :class:`~clusterrpc.errors.EncodeError`
``float``                      finite IEEE 754 doubles; NaN and infinities are refused
                               (XML-RPC's ``double`` has no spelling for them)
``str``                        only characters that XML 1.0 can carry (``#x9 | #xA | #xD |
                               [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]``),
                               so that a value valid for one codec is valid for all
``bytes``                      also ``bytearray`` and ``memoryview``; decoded as ``bytes``
``datetime.datetime``          naive, or aware with any UTC offset (whole seconds); the
                               microseconds travel too; decoded aware datetimes carry a
                               fixed-offset :class:`datetime.timezone`
``list`` / ``tuple``           decoded as ``list``
``dict`` with ``str`` keys     keys obey the same character rule as strings
=============================  ===========================================================

Subclasses (``IntEnum``, ``StrEnum``, ``OrderedDict`` …) travel as their base type. Anything
else raises :class:`~clusterrpc.errors.EncodeError` naming the offending type and its path inside
the message, e.g. ``params[0]["peers"][3]: cannot encode a set``.

Every codec enforces the same :class:`Limits` on encode (a clear local error instead of a message
the peer will refuse) and on decode (hostile input is refused before it costs much).
This module does no I/O.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import re
from collections.abc import Iterator
from typing import TypeAlias

from clusterrpc.errors import ConfigurationError, DecodeError, EncodeError, FaultCode

__all__ = [
    "DEFAULT_LIMITS",
    "INT64_MAX",
    "INT64_MIN",
    "Limits",
    "Value",
    "as_base_type",
    "check_value",
    "format_datetime",
    "format_path",
    "parse_datetime",
    "same_value",
]

Value: TypeAlias = (
    bool
    | int
    | float
    | str
    | bytes
    | bytearray
    | memoryview
    | _dt.datetime
    | list["Value"]
    | tuple["Value", ...]
    | dict[str, "Value"]
    | None
)
"""Any value that clusterrpc can carry (see the module docstring for the exact rules)."""

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """Bounds on one encoded message, enforced while encoding and while decoding.

    The defaults suit cluster control traffic (they follow gRPC's 4 MiB default message size);
    raise them explicitly for bulk payloads. Every field must be a positive integer, otherwise
    :class:`~clusterrpc.errors.ConfigurationError` is raised.
    """

    max_size: int = 4 * MIB
    """Largest encoded message, in bytes."""
    max_depth: int = 32
    """Deepest nesting of arrays and structs; a scalar parameter is at depth 0."""
    max_items: int = 65_536
    """Most values in one message, counting every element of every container."""
    max_string: int = 4 * MIB
    """Longest ``str`` (in characters) or ``bytes`` (in bytes) value, struct keys included."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            number = getattr(self, field.name)
            if type(number) is not int or number <= 0:
                raise ConfigurationError(
                    f"Limits.{field.name} must be a positive integer, not {number!r}"
                )


DEFAULT_LIMITS = Limits()

# XML 1.0, production [2] Char, negated: what no XML 1.0 document can carry.
INVALID_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def format_path(root: str, segments: Iterator[str | int] | list[str | int]) -> str:
    """Render a location inside a message: ``format_path("params", [0, "peers", 3])`` gives
    ``params[0]["peers"][3]``."""
    parts = [root]
    for segment in segments:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        else:
            escaped = segment.replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'["{escaped}"]')
    return "".join(parts)


def _type_name(value: object) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _article(name: str) -> str:
    return "an" if name[:1].lower() in "aeiou" else "a"


def check_value(value: object, limits: Limits, root: str) -> int:
    """Check that ``value`` is in the value model and within ``limits``.

    Returns the number of values it counts towards ``limits.max_items`` (the value itself and
    everything inside it). Raises :class:`EncodeError` with the path of the first offending
    place, rooted at ``root`` (``"params"``, ``"value"``…).

    The codecs' fast encoders check the same rules inline; this walk is their slow path, used to
    explain a failure precisely, and the whole check for codecs that have no faster way.
    """
    path: list[str | int] = []
    count = 0

    def fail(reason: str) -> EncodeError:
        return EncodeError(reason, format_path(root, path))

    def walk(item: object, depth: int) -> None:
        nonlocal count
        count += 1
        if count > limits.max_items:
            raise fail(f"more than max_items={limits.max_items} values in one message")
        if item is None or isinstance(item, bool):
            return
        if isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise fail(f"integer {item} does not fit in 64 bits")
            return
        if isinstance(item, float):
            if not math.isfinite(item):
                raise fail(f"float {item!r} is not finite; the wire formats cannot carry it")
            return
        if isinstance(item, str):
            check_text(item, "string")
            return
        if isinstance(item, bytes | bytearray | memoryview):
            if memoryview(item).nbytes > limits.max_string:
                raise fail(f"bytes longer than max_string={limits.max_string}")
            return
        if isinstance(item, _dt.datetime):
            check_datetime(item)
            return
        if isinstance(item, list | tuple):
            if depth >= limits.max_depth:
                raise fail(f"nesting deeper than max_depth={limits.max_depth}")
            for index, element in enumerate(item):
                path.append(index)
                walk(element, depth + 1)
                path.pop()
            return
        if isinstance(item, dict):
            if depth >= limits.max_depth:
                raise fail(f"nesting deeper than max_depth={limits.max_depth}")
            for key, element in item.items():
                if not isinstance(key, str):
                    raise fail(f"struct keys must be str, not {_type_name(key)} {key!r}")
                path.append(key)
                check_text(key, "struct key")
                walk(element, depth + 1)
                path.pop()
            return
        name = _type_name(item)
        raise fail(f"cannot encode {_article(name)} {name}")

    def check_text(text: str, what: str) -> None:
        if len(text) > limits.max_string:
            raise fail(f"{what} longer than max_string={limits.max_string}")
        bad = INVALID_XML_CHAR.search(text)
        if bad is not None:
            raise fail(
                f"{what} contains {bad.group()!r} at index {bad.start()}, a character that "
                "XML 1.0 cannot carry; send such data as bytes"
            )

    def check_datetime(moment: _dt.datetime) -> None:
        offset = moment.utcoffset()
        if offset is not None and offset % _dt.timedelta(seconds=1):
            raise fail("datetime UTC offsets must be whole seconds")

    walk(value, 0)
    return count


def as_base_type(value: object) -> object | None:
    """The value of a subclass of a model type as that base type, or ``None`` if ``value`` is not
    an instance of any model type.

    ``IntEnum`` members become ``int``, ``(str, Enum)`` members their ``str`` value (not
    ``"Name.MEMBER"``), ``OrderedDict`` a ``dict``, a ``datetime`` subclass a ``datetime``. Codecs
    call this only after their exact-type dispatch failed.
    """
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, _dt.datetime):
        return _dt.datetime(
            value.year,
            value.month,
            value.day,
            value.hour,
            value.minute,
            value.second,
            value.microsecond,
            value.tzinfo,
            fold=value.fold,
        )
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list | tuple):
        return list(value)
    return None


def format_datetime(moment: _dt.datetime) -> str:
    """Render a datetime in the ISO 8601 *basic* form that XML-RPC uses.

    ``YYYYMMDDTHH:MM:SS`` (what every XML-RPC implementation reads), then ``.ffffff`` only when
    there are microseconds, then ``Z`` or ``+HH:MM`` only for aware datetimes. Naive, whole-second
    datetimes are therefore byte-identical to the standard library's output.

    Built on the C ``datetime.isoformat()``, which writes the same fields in the extended form
    (``YYYY-MM-DD``, offsets ``+HH:MM[:SS]``): the date's two dashes go, and a zero offset is
    written ``Z``. Offsets with a fraction of a second (which no codec sends) are truncated to
    whole seconds.
    """
    tzinfo = moment.tzinfo
    if tzinfo is None:
        return _isoformat(moment).replace("-", "", 2)
    if tzinfo is _UTC:
        return _isoformat(moment)[:-6].replace("-", "", 2) + "Z"
    offset = _dt.datetime.utcoffset(moment)
    if offset is None:
        return _isoformat(moment).replace("-", "", 2)
    if offset.microseconds:
        return _format_datetime_fields(moment, offset)
    if not offset:
        return _isoformat(moment)[:-6].replace("-", "", 2) + "Z"
    return _isoformat(moment).replace("-", "", 2)


_isoformat = _dt.datetime.isoformat  # never a subclass's override
_UTC = _dt.UTC


def _format_datetime_fields(moment: _dt.datetime, offset: _dt.timedelta) -> str:
    """:func:`format_datetime` field by field, for an offset with a fraction of a second."""
    text = (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    total = int(offset.total_seconds())
    if total == 0:
        return text + "Z"
    sign = "+" if total > 0 else "-"
    hours, rest = divmod(abs(total), 3600)
    minutes, seconds = divmod(rest, 60)
    text += f"{sign}{hours:02d}:{minutes:02d}"
    if seconds:
        text += f":{seconds:02d}"
    return text


_DATETIME = re.compile(
    r"""\s*
    (?P<year>\d{4})-?(?P<month>\d{2})-?(?P<day>\d{2})
    T(?P<hour>\d{2}):?(?P<minute>\d{2}):?(?P<second>\d{2})
    (?:[.,](?P<fraction>\d{1,9}))?
    (?P<zone>Z|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)?
    \s*\Z""",
    re.VERBOSE | re.ASCII,
)


def parse_datetime(text: str) -> _dt.datetime:
    """Parse the ISO 8601 forms XML-RPC peers send: basic (``20240131T23:59:59``) or extended
    (``2024-01-31T23:59:59``), with optional fraction (truncated to microseconds) and zone.

    Raises :class:`~clusterrpc.errors.DecodeError` for anything else, including dates that do
    not exist.
    """
    match = _DATETIME.match(text)
    if match is None:
        raise DecodeError(
            f"invalid dateTime.iso8601 value {text[:40]!r}", fault_code=FaultCode.INVALID_REQUEST
        )
    fraction = match["fraction"]
    microsecond = int((fraction + "000000")[:6]) if fraction else 0
    tzinfo: _dt.tzinfo | None = None
    zone = match["zone"]
    if zone:
        if zone == "Z":
            tzinfo = _dt.UTC
        else:
            digits = zone[1:].replace(":", "")
            seconds = int(digits[0:2]) * 3600 + int(digits[2:4] or 0) * 60 + int(digits[4:6] or 0)
            if seconds >= 86400:
                raise DecodeError(
                    f"invalid UTC offset in {text[:40]!r}", fault_code=FaultCode.INVALID_REQUEST
                )
            delta = _dt.timedelta(seconds=-seconds if zone[0] == "-" else seconds)
            tzinfo = _dt.UTC if not seconds else _dt.timezone(delta)
    try:
        return _dt.datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            microsecond,
            tzinfo=tzinfo,
        )
    except ValueError as error:
        raise DecodeError(
            f"invalid dateTime.iso8601 value {text[:40]!r}: {error}",
            fault_code=FaultCode.INVALID_REQUEST,
        ) from None


def same_value(left: object, right: object) -> bool:
    """Whether two *decoded* values are exactly the same value of the model.

    Stricter than ``==``: types must match (``1``, ``1.0`` and ``True`` differ), ``-0.0`` is not
    ``0.0``, and aware datetimes must have the same UTC offset, not only the same instant (a
    naive datetime never equals an aware one). Used to check exact round trips.
    """
    if type(left) is not type(right):
        return False
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same_value, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_value(left[k], right[k]) for k in left)
    if isinstance(left, float) and isinstance(right, float):
        return left == right and math.copysign(1.0, left) == math.copysign(1.0, right)
    if isinstance(left, _dt.datetime) and isinstance(right, _dt.datetime):
        naive = left.tzinfo is None
        return naive == (right.tzinfo is None) and left == right and (
            naive or left.utcoffset() == right.utcoffset()
        )
    return bool(left == right)
