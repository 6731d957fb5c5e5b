"""The ``compact`` codec (wire id 2): a small, strict XML subset for datagrams.

The format follows the cluster framework paper's "wrapped structures": every value is an ``<LI>``
element whose ``t`` attribute names its type (no ``t`` is a string), lists are ``<L>`` and
structs ("associative lists") are ``<AL>`` with a ``key`` attribute on each item::

    <CALL m="election.vote"><LI>node3</LI><LI t="i">7</LI></CALL>
    <REPLY><LI><AL><LI key="granted" t="b">1</LI></AL></LI></REPLY>
    <FAULT code="-32601">no such method</FAULT>

There is no XML declaration, and every value has exactly one encoding, so a message is a fraction
of its XML-RPC size and byte-exact vectors are possible. ``spec/codec-compact.md`` is the full
specification; ``spec/vectors/codecs/compact/`` has byte-exact examples.

Encoding is a single recursive walk that dispatches on the exact type and appends string pieces;
anything unusual (subclasses, bad values, limits) falls to :func:`clusterrpc.values.check_value`,
which finds and names the offending place. Decoding parses with
:mod:`clusterrpc.codecs._safexml` (expat in C, DTDs refused) and walks the tree, refusing
anything the specification does not allow.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import math
import re
from collections.abc import Callable, Sequence
from typing import ClassVar
from xml.etree.ElementTree import Element

from clusterrpc.codecs._safexml import escape_text, parse_document
from clusterrpc.codecs.base import (
    CallMessage,
    Codec,
    FaultMessage,
    ReplyMessage,
    check_fault,
    check_method_name,
    invalid_message,
    nesting_too_deep,
    string_too_long,
)
from clusterrpc.errors import DecodeError, EncodeError, LimitExceededError
from clusterrpc.values import (
    DEFAULT_LIMITS,
    INT32_MAX,
    INT32_MIN,
    INT64_MAX,
    INT64_MIN,
    INVALID_XML_CHAR,
    Limits,
    Value,
    as_base_type,
    check_value,
    format_datetime,
    parse_datetime,
)

__all__ = ["CompactCodec"]

# Canonical decimal integers only: no sign but '-', no leading zeros, no "-0", ASCII digits.
_INTEGER = re.compile(r"(?:0|-?[1-9][0-9]*)\Z")
# Longest canonical 64-bit integer ("-9223372036854775808"); longer text is out of range.
_INTEGER_MAX_LEN = 20
# Floats: any decimal a shortest-round-trip printer of any language may produce. Not canonical on
# purpose (Python writes 1e+16 where JavaScript writes 10000000000000000), but no '+', no '.5',
# no '1.', no "inf"/"nan" and no whitespace.
_FLOAT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")
# XML's white space (production [3] S): the only character data allowed between elements.
_LAYOUT = " \t\r\n"


def _escape_attribute(text: str) -> str:
    # Attribute-value normalisation (XML 1.0 section 3.3.3) turns a literal TAB, LF or CR into a
    # space, so those three must travel as character references to survive.
    text = escape_text(text)
    if '"' in text:
        text = text.replace('"', "&quot;")
    if "\t" in text:
        text = text.replace("\t", "&#9;")
    if "\n" in text:
        text = text.replace("\n", "&#10;")
    return text


class _Unusual(Exception):
    """Raised inside the fast encoder to hand the value to the precise slow path."""


_EncodeFn = Callable[[object, Callable[[str], None], int, str], int]


def _make_encoder(limits: Limits) -> _EncodeFn:
    """Build the fast encoder for ``limits``.

    ``encode(value, append, depth, head)`` appends the ``<LI>`` element for ``value`` and returns
    how many values it held. ``head`` is the start of the item's start tag, ``<LI`` or
    ``<LI key="…"`` (already escaped), so the type attribute and content follow it. It raises
    :class:`_Unusual` for anything it does not handle directly (subclasses, out-of-model values,
    limits): the caller then asks :func:`~clusterrpc.values.check_value` for a precise error. It
    is a closure so that the hot loop reads limits from local cells, not attributes.
    """
    max_depth = limits.max_depth
    max_string = limits.max_string
    invalid_char = INVALID_XML_CHAR.search

    def checked(value: str) -> str:
        if len(value) > max_string:
            raise _Unusual
        # isprintable() is a cheap first test; the exact XML 1.0 test runs only when it fails
        # (tabs, newlines, non-BMP characters and the truly invalid ones).
        if not value.isprintable() and invalid_char(value) is not None:
            raise _Unusual
        return value

    def encode(value: object, append: Callable[[str], None], depth: int, head: str) -> int:
        kind = type(value)
        if kind is str:
            if value:
                append(head)
                append(">")
                append(escape_text(checked(value)))  # type: ignore[arg-type]
                append("</LI>")
            else:
                append(head)
                append("/>")
            return 1
        if kind is int:
            if not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
                raise _Unusual
            append(f'{head} t="i">{value}</LI>')
            return 1
        if kind is dict:
            if depth >= max_depth:
                raise _Unusual
            if not value:
                append(head)
                append("><AL/></LI>")
                return 1
            count = 1
            append(head)
            append("><AL>")
            for key, element in value.items():  # type: ignore[attr-defined]
                if type(key) is str:
                    name = key
                elif isinstance(key, str):
                    name = str.__str__(key)  # a StrEnum or other str subclass
                else:
                    raise _Unusual
                member = f'<LI key="{_escape_attribute(checked(name))}"'
                count += encode(element, append, depth + 1, member)
            append("</AL></LI>")
            return count
        if kind is bool:
            append(f'{head} t="b">1</LI>' if value else f'{head} t="b">0</LI>')
            return 1
        if kind is float:
            if not math.isfinite(value):  # type: ignore[arg-type]
                raise _Unusual
            append(f'{head} t="f">{value!r}</LI>')
            return 1
        if kind is list or kind is tuple:
            if depth >= max_depth:
                raise _Unusual
            if not value:
                append(head)
                append("><L/></LI>")
                return 1
            count = 1
            append(head)
            append("><L>")
            for element in value:  # type: ignore[attr-defined]
                count += encode(element, append, depth + 1, "<LI")
            append("</L></LI>")
            return count
        if value is None:
            append(head)
            append(' t="n"/>')
            return 1
        if kind is bytes or kind is bytearray or kind is memoryview:
            view = memoryview(value)  # type: ignore[arg-type]
            if view.nbytes > max_string:
                raise _Unusual
            append(head)
            if view.nbytes:
                # binascii reads only C-contiguous buffers; a sliced memoryview may not be one.
                data = view if view.c_contiguous else view.tobytes()
                append(' t="x">')
                append(binascii.b2a_base64(data, newline=False).decode("ascii"))
                append("</LI>")
            else:
                append(' t="x"/>')
            return 1
        if kind is _dt.datetime:
            offset = value.utcoffset()  # type: ignore[attr-defined]
            if offset is not None and offset % _SECOND:
                raise _Unusual
            append(f'{head} t="d">{format_datetime(value)}</LI>')  # type: ignore[arg-type]
            return 1
        base = as_base_type(value)  # IntEnum as int, OrderedDict as dict, …
        if base is None:
            raise _Unusual
        return encode(base, append, depth, head)

    return encode


_SECOND = _dt.timedelta(seconds=1)


class CompactCodec(Codec):
    """The compact XML subset (``application/x-clusterrpc-compact+xml``), wire id 2.

    Carries every value of :mod:`clusterrpc.values` exactly, in about a third of the bytes of
    XML-RPC; only clusterrpc peers speak it. Construct with ``CompactCodec(limits=Limits(...))``.
    """

    name: ClassVar[str] = "compact"
    codec_id: ClassVar[int] = 2
    media_type: ClassVar[str] = "application/x-clusterrpc-compact+xml"

    __slots__ = ("_encode_value", "_walker")

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits=limits)
        self._encode_value = _make_encoder(limits)
        self._walker = _Walker(limits)

    # -- encoding ----------------------------------------------------------------------------

    def _encode(self, head: str, values: Sequence[Value], root: str, tail: str) -> bytes:
        out = [head]
        append = out.append
        encode = self._encode_value
        items = 0
        try:
            for value in values:
                items += encode(value, append, 0, "<LI")
        except (_Unusual, RecursionError):
            self.explain_encode_failure(values, root)
        if items > self.limits.max_items:
            self.explain_encode_failure(values, root)
        append(tail)
        data = "".join(out).encode("utf-8")
        self.check_encoded_size(data)
        return data

    def encode_call(self, method: str, params: Sequence[Value]) -> bytes:
        """Encode ``<CALL m="method">`` with one ``<LI>`` per parameter.

        Raises :class:`EncodeError` for a bad method name, a ``params`` that is not a list or
        tuple, a value outside the model or over the limits.
        """
        # A valid method name has only [A-Za-z0-9_.:/], none of which needs escaping.
        check_method_name(method)
        if not isinstance(params, list | tuple):
            raise EncodeError(f"params must be a list or tuple, not {type(params).__name__}")
        if not params:
            data = f'<CALL m="{method}"/>'.encode("ascii")
            self.check_encoded_size(data)
            return data
        return self._encode(f'<CALL m="{method}">', params, "params[{}]", "</CALL>")

    def encode_reply(self, value: Value) -> bytes:
        """Encode ``<REPLY>`` holding exactly one ``<LI>``; raises :class:`EncodeError`."""
        return self._encode("<REPLY>", (value,), "value", "</REPLY>")

    def encode_fault(self, code: int, message: str) -> bytes:
        """Encode ``<FAULT code="code">message</FAULT>``.

        Raises :class:`EncodeError` for a code that is not a 32-bit int, and for a message that is
        not a str, is over ``limits.max_string`` or has characters XML 1.0 cannot carry.
        """
        code, message = check_fault(code, message)
        check_value(message, self.limits, "fault.message")
        if message:
            text = f'<FAULT code="{code}">{escape_text(message)}</FAULT>'
        else:
            text = f'<FAULT code="{code}"/>'
        data = text.encode("utf-8")
        self.check_encoded_size(data)
        return data

    # -- decoding ----------------------------------------------------------------------------

    def _document(self, data: bytes) -> Element:
        self.check_size(data)
        data = bytes(data)
        # Every value is one <LI> element and its tag must appear literally (with no DTD there
        # are no entities to hide it in), so this C-speed count refuses over-long messages
        # before any parsing. It may over-count only "<LI" inside comments or CDATA sections.
        if data.count(b"<LI") > self.limits.max_items:
            raise LimitExceededError(
                f"more than max_items={self.limits.max_items} values in one message"
            )
        return parse_document(data, self.limits)

    def decode_call(self, data: bytes) -> CallMessage:
        """Decode a ``<CALL>``.

        Raises :class:`DecodeError` (``PARSE_ERROR`` for XML that is not well-formed or not safe,
        ``INVALID_REQUEST`` for a well-formed document that is not a valid call) or
        :class:`LimitExceededError`. Only white space may appear between elements; anything else
        the specification does not allow is refused.
        """
        root = self._document(data)
        if root.tag != "CALL":
            raise invalid_message(f"expected <CALL>, got <{_tag(root)}>")
        attributes = root.attrib
        method = attributes.get("m")
        if method is None or len(attributes) != 1:
            raise invalid_message('<CALL> must have exactly one attribute, m="method.name"')
        check_method_name(method, decoding=True)
        return CallMessage(method, tuple(self._walker.items(root)))

    def decode_response(self, data: bytes) -> ReplyMessage | FaultMessage:
        """Decode a ``<REPLY>`` (exactly one value) or a ``<FAULT>``.

        Raises :class:`DecodeError` or :class:`LimitExceededError`, as :meth:`decode_call`.
        """
        root = self._document(data)
        if root.tag == "REPLY":
            if root.attrib:
                raise invalid_message("<REPLY> takes no attributes")
            values = self._walker.items(root)
            if len(values) != 1:
                raise invalid_message(f"<REPLY> holds exactly one <LI>, not {len(values)}")
            return ReplyMessage(values[0])
        if root.tag == "FAULT":
            attributes = root.attrib
            code = attributes.get("code")
            if code is None or len(attributes) != 1:
                raise invalid_message('<FAULT> must have exactly one attribute, code="integer"')
            number = _integer(code)
            if not INT32_MIN <= number <= INT32_MAX:
                raise invalid_message(f"fault code {number} does not fit in 32 bits")
            if len(root):
                raise invalid_message("<FAULT> holds only the message text, no elements")
            message = root.text or ""
            if len(message) > self.limits.max_string:
                raise string_too_long(self.limits)
            return FaultMessage(number, message)
        raise invalid_message(f"expected <REPLY> or <FAULT>, got <{_tag(root)}>")



def _tag(element: Element) -> str:
    return element.tag[:64]




def _is_layout(text: str | None) -> bool:
    """True for character data that may sit between elements: none, or only XML white space."""
    return not text or not text.strip(_LAYOUT)


class _Walker:
    """Turns a parsed tree into values, enforcing the grammar and the limits.

    Stateless between messages (the item budget is a per-message cell), so one walker serves
    every decode of its codec, from any thread.
    """

    __slots__ = ("items",)

    def __init__(self, limits: Limits) -> None:
        max_depth = limits.max_depth
        max_string = limits.max_string
        max_items = limits.max_items
        # Longest base64 text that can decode to at most max_string bytes; checked before
        # decoding so that an oversized blob costs nothing.
        max_base64 = 4 * -(-max_string // 3)

        def spend(budget: list[int], count: int) -> None:
            budget[0] -= count
            if budget[0] < 0:
                raise LimitExceededError(f"more than max_items={max_items} values in one message")

        def scalar(kind: str, text: str) -> Value:
            if kind == "i":
                return _integer(text)
            if kind == "f":
                return _float(text)
            if kind == "b":
                if text == "1":
                    return True
                if text == "0":
                    return False
                raise invalid_message(f'invalid boolean {text[:40]!r}: "1" or "0" required')
            if kind == "n":
                if text:
                    raise invalid_message('a t="n" item must be empty')
                return None
            if kind == "x":
                if len(text) > max_base64:
                    raise LimitExceededError(f"bytes longer than max_string={max_string}")
                data = _base64(text)
                if len(data) > max_string:
                    raise LimitExceededError(f"bytes longer than max_string={max_string}")
                return data
            if kind == "d":
                return _datetime(text)
            raise invalid_message(f"unknown item type t={kind[:16]!r}")

        def value(item: Element, depth: int, budget: list[int]) -> Value:
            """The value of one ``<LI>`` whose tag and attribute names the caller checked."""
            kind = item.get("t")
            if kind is not None:
                if len(item):
                    raise invalid_message(f'a t="{kind[:16]}" item must not contain elements')
                return scalar(kind, item.text or "")
            if not len(item):
                text = item.text or ""
                if len(text) > max_string:
                    raise string_too_long(limits)
                return text
            if len(item) != 1 or not _is_layout(item.text) or not _is_layout(item[0].tail):
                raise invalid_message("an untyped <LI> holds text, or exactly one <L> or <AL>")
            container = item[0]
            tag = container.tag
            if tag not in ("L", "AL"):
                raise invalid_message(f"unexpected <{_tag(container)}> in an <LI>")
            if container.attrib:
                raise invalid_message(f"<{tag}> takes no attributes")
            if not _is_layout(container.text):
                raise invalid_message(f"<{tag}> holds only <LI> elements")
            if depth >= max_depth:
                raise nesting_too_deep(limits)
            spend(budget, len(container))
            if tag == "L":
                array: list[Value] = []
                for element in container:
                    check_item(element)
                    if "key" in element.attrib:
                        raise invalid_message("items of an <L> take no key attribute")
                    array.append(value(element, depth + 1, budget))
                return array
            struct: dict[str, Value] = {}
            for element in container:
                check_item(element)
                key = element.get("key")
                if key is None:
                    raise invalid_message('every item of an <AL> needs a key="…" attribute')
                if len(key) > max_string:
                    raise string_too_long(limits)
                if key in struct:
                    raise invalid_message(f"duplicate key {key[:40]!r} in an <AL>")
                struct[key] = value(element, depth + 1, budget)
            return struct

        def check_item(element: Element) -> None:
            """Refuse anything but an ``<LI>`` with attributes from {t, key}, and text beside it."""
            if element.tag != "LI":
                raise invalid_message(f"expected <LI>, got <{_tag(element)}>")
            if not _is_layout(element.tail):
                raise invalid_message("only white space may appear between <LI> elements")
            attributes = element.attrib
            if len(attributes) > ("t" in attributes) + ("key" in attributes):
                unknown = sorted(set(attributes) - {"t", "key"})
                raise invalid_message(f"unknown attribute {unknown[0][:40]!r} on <LI>")

        def items(root: Element) -> list[Value]:
            """The values of the ``<LI>`` children of ``<CALL>`` or ``<REPLY>``."""
            if not _is_layout(root.text):
                raise invalid_message(f"<{root.tag}> holds only <LI> elements")
            budget = [max_items]
            spend(budget, len(root))
            result = []
            for element in root:
                check_item(element)
                if "key" in element.attrib:
                    raise invalid_message(f"items of <{root.tag}> take no key attribute")
                result.append(value(element, 0, budget))
            return result

        def guarded_items(root: Element) -> list[Value]:
            try:
                return items(root)
            except RecursionError:
                # Only reachable when limits.max_depth exceeds what the interpreter can recurse.
                raise LimitExceededError(
                    "nesting too deep for this interpreter's recursion limit"
                ) from None

        self.items = guarded_items


def _integer(text: str) -> int:
    if not _INTEGER.match(text):
        raise invalid_message(f"invalid integer {text[:40]!r}")
    # The length test keeps int() away from huge digit strings (and its digit-count limit).
    if len(text) > _INTEGER_MAX_LEN or not INT64_MIN <= int(text) <= INT64_MAX:
        raise invalid_message(f"integer {text[:40]} does not fit in 64 bits")
    return int(text)


def _float(text: str) -> float:
    if not _FLOAT.match(text):
        raise invalid_message(f"invalid float {text[:40]!r}")
    number = float(text)
    if not math.isfinite(number):
        raise invalid_message(f"float {text[:40]} is out of range")
    return number


def _base64(text: str) -> bytes:
    try:
        data = binascii.a2b_base64(text, strict_mode=True)
    except ValueError as error:  # binascii.Error, or non-ASCII text
        raise invalid_message(f"invalid base64: {error}") from None
    # strict_mode still accepts non-zero padding bits ("QR==" for b"A"); re-encoding refuses
    # them, so that every byte string has exactly one spelling.
    if binascii.b2a_base64(data, newline=False) != text.encode("ascii"):
        raise invalid_message(f"non-canonical base64 {text[:40]!r}")
    return data


def _datetime(text: str) -> _dt.datetime:
    try:
        moment = parse_datetime(text)
    except DecodeError as error:
        raise invalid_message(error.reason) from None
    # parse_datetime also reads XML-RPC's other spellings; the compact form has one.
    if format_datetime(moment) != text:
        raise invalid_message(f"non-canonical datetime {text[:40]!r}")
    return moment
