"""The JSON value notation used on the command line and in ``spec/vectors/``.

Plain JSON for what JSON says exactly, and one-key tagged objects for the rest
(``spec/vectors/README.md``): ``{"$bytes": "<base64>"}``, ``{"$datetime": "<ISO 8601>"}``,
``{"$float": "<repr>"}`` and ``{"$struct": {...}}`` for a struct whose only key starts with ``$``.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from clusterrpc.values import format_datetime, parse_datetime

__all__ = ["from_notation", "to_notation"]


def from_notation(node: Any) -> Any:
    """The Python value that parsed JSON ``node`` stands for.

    Raises :class:`ValueError` for an unknown ``$`` tag or a malformed tagged value
    (:class:`~clusterrpc.errors.DecodeError` for a bad datetime is a ``ValueError`` too).
    """
    if isinstance(node, list):
        return [from_notation(item) for item in node]
    if isinstance(node, dict):
        if len(node) == 1:
            ((key, inner),) = node.items()
            if key.startswith("$"):
                return _tagged(key, inner)
        return {name: from_notation(item) for name, item in node.items()}
    return node


def _tagged(tag: str, inner: Any) -> Any:
    if tag == "$float" and isinstance(inner, str | int | float):
        return float(inner)
    if tag == "$bytes" and isinstance(inner, str):
        return base64.b64decode(inner, validate=True)
    if tag == "$datetime" and isinstance(inner, str):
        return parse_datetime(inner)
    if tag == "$struct" and isinstance(inner, dict):
        return {name: from_notation(item) for name, item in inner.items()}
    raise ValueError(f"unknown or malformed tag {tag!r} (known: $bytes $datetime $float $struct)")


def to_notation(value: Any) -> Any:
    """The JSON-serialisable notation of a decoded value (floats stay JSON numbers)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dt.datetime):
        return {"$datetime": format_datetime(value)}
    if isinstance(value, list | tuple):
        return [to_notation(item) for item in value]
    if isinstance(value, dict):
        converted = {name: to_notation(item) for name, item in value.items()}
        if len(value) == 1 and next(iter(value)).startswith("$"):
            return {"$struct": converted}
        return converted
    return value
