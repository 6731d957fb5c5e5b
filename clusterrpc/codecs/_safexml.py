"""Safe XML parsing, and the text escaping, shared by the XML codecs (``xmlrpc``, ``compact``).

Theory of operation
-------------------
Every XML attack that matters here (billion laughs, quadratic blowup, external entities and
external DTDs) needs a document type declaration, and XML's grammar allows one only in the
*prolog*, before the root element (XML 1.0, production [22]). So the fast path:

1. refuses input over the size limit (done by the codec) and input with more markup than the
   item limit could need (``<`` is counted by a single C-speed scan), before any parsing;
2. reads the prolog itself — an optional UTF-8 byte-order mark, the XML declaration, comments,
   processing instructions and whitespace — and refuses any ``<!DOCTYPE`` (or other ``<!``
   declaration) found there;
3. hands the bytes to the C ``xml.etree.ElementTree.XMLParser`` (expat underneath), which builds
   the tree without calling back into Python. With no DTD, expat knows only the five predefined
   entities and character references; any other ``&name;`` is a well-formedness error.

This only holds if the prolog scan reads the bytes the way expat will, so the fast path takes only
ASCII-compatible encodings that expat decodes natively (UTF-8, US-ASCII, ISO-8859-1). Any other
encoding (UTF-16, windows-1252 …) goes to the slow path: defusedxml's hardened expat parser with
DTDs, entity declarations and external references all forbidden, which works whatever the encoding.

Depth and item counts are enforced by the codec while it walks the tree; expat itself is not
recursive and the tree's memory is bounded by the size and markup limits.

The ``xmlrpc`` codec reads most documents without a tree (its own fast path, for a strict subset
of XML with no prolog beyond the XML declaration); it still runs :func:`check_markup` first, and
everything else comes here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Protocol
from xml.etree.ElementTree import Element, ParseError, XMLParser

import defusedxml.ElementTree
from defusedxml import DefusedXmlException

from clusterrpc.errors import DecodeError, FaultCode, LimitExceededError
from clusterrpc.values import INT64_MAX, INT64_MIN, INVALID_XML_CHAR, Limits, Value

__all__ = [
    "GiveUp",
    "Scanner",
    "check_markup",
    "escape_text",
    "finite_float",
    "long_int",
    "markup_budget",
    "maybe_escaped",
    "parse_checked",
    "parse_document",
    "scanner",
    "unescape_text",
    "unreachable",
]

# Encodings expat decodes natively and that are ASCII-compatible, so that our byte-level prolog
# scan sees what expat sees. Names as in XML 1.0 section 4.3.3 (case-insensitive).
_FAST_ENCODINGS = frozenset(
    {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"}
)

_XML_DECLARATION = re.compile(
    rb"<\?xml[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(?:\"1\.[0-9]+\"|'1\.[0-9]+')"
    rb"(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(?:\"(?P<enc1>[A-Za-z][A-Za-z0-9._-]*)\""
    rb"|'(?P<enc2>[A-Za-z][A-Za-z0-9._-]*)'))?"
    rb"(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(?:\"(?:yes|no)\"|'(?:yes|no)'))?"
    rb"[ \t\r\n]*\?>"
)
_WHITESPACE = b" \t\r\n"
_CANONICAL_DECLARATION = b'<?xml version="1.0"?>'
_UTF8_BOM = b"\xef\xbb\xbf"
# Every markup element of a valid message costs at most this many '<' per value (a struct
# member: <member><name></name><value><T></T></value></member>), plus a fixed envelope.
_MARKUP_PER_ITEM = 8
_MARKUP_ENVELOPE = 64


def escape_text(text: str) -> str:
    """``text`` as XML character data: ``&``, ``<``, ``>`` escaped, and carriage return as
    ``&#13;`` (an XML parser turns a literal CR into LF, so it would not round-trip). The
    caller has already refused characters XML 1.0 cannot carry."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text


# What may follow an "&" in character data or an attribute value: exactly what XML 1.0 allows
# without a DTD (the five predefined entities and character references).
_REFERENCE = re.compile(r"(?:(amp|lt|gt|quot|apos)|#([0-9]{1,7})|#x([0-9a-fA-F]{1,6}));").match
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def unescape_text(text: str) -> str:
    """``text`` (character data or an attribute value, as written) with its references
    replaced, as an XML parser replaces them.

    Raises :class:`ValueError` for an "&" that does not start one of the five predefined
    entities or a character reference, and for a reference to a character XML 1.0 does not
    allow (``&#0;``, ``&#xFFFE;``, a surrogate …): a parser refuses those documents. The fast
    decoders of the XML codecs use this on the text their patterns captured.
    """
    parts = text.split("&")
    out = [parts[0]]
    for part in parts[1:]:
        reference = _REFERENCE(part)
        if reference is None:
            raise ValueError("not a reference XML 1.0 allows")
        name, decimal, hexadecimal = reference.groups()
        if name is not None:
            out.append(_ENTITIES[name])
        else:
            code = int(decimal) if decimal is not None else int(hexadecimal, 16)
            if code > 0x10FFFF:
                raise ValueError("not a character")
            char = chr(code)
            if INVALID_XML_CHAR.match(char) is not None:
                raise ValueError("a character XML 1.0 does not allow")
            out.append(char)
        out.append(part[reference.end() :])
    return "".join(out)


# -- the fast paths' shared pieces (both XML codecs) --------------------------------------------


class GiveUp(Exception):
    """Raised inside a codec's fast decoder: the document is outside its subset, or not valid;
    the reference (tree) path then decodes it or says why not."""


def maybe_escaped(text: str) -> str:
    """Character data as it stands, or unescaped if it holds a reference."""
    return unescape_text(text) if "&" in text else text


def long_int(text: str) -> int:
    """A 64-bit integer's text (already matched as digits); :class:`GiveUp` beyond 64 bits."""
    number = int(text)
    if not INT64_MIN <= number <= INT64_MAX:
        raise GiveUp
    return number


def finite_float(text: str) -> float:
    """A float's text; :class:`GiveUp` for one that overflows (``1e999``)."""
    number = float(text)
    if not math.isfinite(number):
        raise GiveUp
    return number


def unreachable(text: str) -> Value:  # pragma: no cover - no scalar kind has this group
    """The converter of kinds that are not scalars: never called."""
    raise GiveUp


class Scanner(Protocol):
    """What ``re.Pattern.scanner(text, pos)`` returns: ``match()`` matches at ``pos``, then each
    time at the end of the previous match, or returns ``None``."""

    def match(self) -> re.Match[str] | None: ...


class _PositionScanner:
    """:class:`Scanner` from ``pattern.match``, for an interpreter without ``Pattern.scanner``."""

    __slots__ = ("_match", "_pos", "_text")

    def __init__(self, match: Callable[[str, int], re.Match[str] | None], text: str, pos: int):
        self._match = match
        self._text = text
        self._pos = pos

    def match(self) -> re.Match[str] | None:
        found = self._match(self._text, self._pos)
        if found is not None:
            self._pos = found.end()
        return found


def scanner(pattern: re.Pattern[str]) -> Callable[[str, int], Scanner]:
    """``pattern.scanner``: the C loop over consecutive matches that :class:`re.Scanner` is built
    on (present in every CPython 3, but undocumented), or an equivalent where it is missing. The
    fast decoders use it so that a loop over items does not pass positions around."""
    native: Callable[[str, int], Scanner] | None = getattr(pattern, "scanner", None)
    if native is not None:
        return native
    match = pattern.match
    return lambda text, pos: _PositionScanner(match, text, pos)


def markup_budget(limits: Limits) -> int:
    """The most ``<`` a valid message within ``limits`` can hold (see :func:`check_markup`)."""
    return limits.max_items * _MARKUP_PER_ITEM + _MARKUP_ENVELOPE


def _fast_path_start(data: bytes) -> int | None:
    """Return where the root element starts if the fast path may parse ``data``.

    Returns ``None`` when the encoding is not one the fast path reads. Raises
    :class:`DecodeError` for a DTD or other declaration in the prolog.
    """
    if data.startswith(_CANONICAL_DECLARATION):
        position = len(_CANONICAL_DECLARATION)  # what our encoders write: skip the regex
        if data[position : position + 1] == b"<" and data[position + 1 : position + 2] not in (
            b"!",
            b"?",
        ):
            return position
    position = 3 if data.startswith(_UTF8_BOM) else 0
    if b"\x00" in data[:4]:
        return None  # UTF-16/UTF-32 without (or with) a byte-order mark
    if data.startswith(b"\xfe\xff") or data.startswith(b"\xff\xfe"):
        return None
    if data.startswith(b"<?xml", position) and data[position + 5 : position + 6] in (
        b" ",
        b"\t",
        b"\r",
        b"\n",
    ):
        declaration = _XML_DECLARATION.match(data, position)
        if declaration is None:
            raise DecodeError("malformed XML declaration")
        encoding = declaration["enc1"] or declaration["enc2"]
        if encoding is not None and encoding.decode("ascii").lower() not in _FAST_ENCODINGS:
            return None
        position = declaration.end()
    end = len(data)
    while position < end:
        byte = data[position]
        if byte in _WHITESPACE:
            position += 1
        elif data.startswith(b"<!--", position):
            close = data.find(b"-->", position + 4)
            if close < 0:
                raise DecodeError("unterminated comment in the XML prolog")
            position = close + 3
        elif data.startswith(b"<?", position):
            close = data.find(b"?>", position + 2)
            if close < 0:
                raise DecodeError("unterminated processing instruction in the XML prolog")
            position = close + 2
        elif data.startswith(b"<!", position):
            raise DecodeError(
                "document type declarations (DTDs) are forbidden: they enable entity "
                "expansion and external references"
            )
        else:
            return position
    raise DecodeError("empty XML document")


def check_markup(data: bytes, limits: Limits) -> None:
    """Raise :class:`LimitExceededError` if ``data`` has more markup (``<``) than
    ``limits.max_items`` values can need: a single C-speed scan, run before any parsing
    (skipped when ``data`` is too short to fail it)."""
    budget = markup_budget(limits)
    if len(data) > budget and data.count(b"<") > budget:
        raise LimitExceededError(
            f"more XML markup than max_items={limits.max_items} values can need"
        )


def parse_document(data: bytes, limits: Limits) -> Element:
    """Parse ``data`` into an element tree, safely.

    The caller has already checked ``len(data)`` against ``limits.max_size``. Raises
    :class:`DecodeError` for malformed or forbidden XML and :class:`LimitExceededError` for
    input with more markup than ``limits.max_items`` allows.
    """
    check_markup(data, limits)
    return parse_checked(data)


def parse_checked(data: bytes) -> Element:
    """:func:`parse_document` for ``data`` that has already passed :func:`check_markup`."""
    if _fast_path_start(data) is None:
        return _parse_hardened(data)
    parser = XMLParser()
    try:
        parser.feed(data)
        root: Element = parser.close()
    except ParseError as error:
        raise DecodeError(f"not well-formed XML: {error}") from None
    return root


def _parse_hardened(data: bytes) -> Element:
    try:
        root: Element = defusedxml.ElementTree.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as error:
        raise DecodeError(f"forbidden XML construct: {error}") from None
    except ParseError as error:
        raise DecodeError(f"not well-formed XML: {error}") from None
    except (LookupError, ValueError) as error:
        # An unknown or undecodable encoding; expat also refuses multi-byte encodings it cannot
        # map (shift_jis, utf-7 …) with a plain ValueError. (DefusedXmlException, a ValueError
        # too, is handled above.)
        raise DecodeError(
            f"unsupported XML encoding: {error}", fault_code=FaultCode.UNSUPPORTED_ENCODING
        ) from None
    return root
