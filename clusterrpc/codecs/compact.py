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

Encoding is a single recursive walk that dispatches on the exact type and appends string pieces
(a struct member or list item of a common scalar type is one piece, written inline); anything
unusual (subclasses, bad values, limits) falls to :func:`clusterrpc.values.check_value`, which
finds and names the offending place.

Decoding has two paths with one behaviour, as in the ``xmlrpc`` codec. After the pre-parse
checks, the *fast path* reads the canonical form (with layout white space) by precompiled
regular expressions, one match per item (:func:`_make_fast_decoder`). Anything else, and anything
invalid, goes to the *tree path*: :mod:`clusterrpc.codecs._safexml` (expat in C, DTDs refused)
builds a tree that :class:`_Walker` checks against the specification and turns into values. The
tree path is the reference: it alone decides errors and their messages, and the fast path only
returns what it would return (``spec/codecs.md``, "How the decoder is built";
``tests/test_codec_compact_fastpath.py``).
"""

from __future__ import annotations

import binascii
import datetime as _dt
import math
import re
from collections.abc import Callable, Sequence
from typing import ClassVar
from xml.etree.ElementTree import Element

from clusterrpc.codecs._safexml import (
    GiveUp,
    Scanner,
    check_markup,
    escape_text,
    finite_float,
    long_int,
    markup_budget,
    maybe_escaped,
    parse_checked,
    scanner,
    unescape_text,
    unreachable,
)
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


_EncodeFn = Callable[[object, Callable[[str], None], int, str], None]


def _make_encoder(limits: Limits) -> _EncodeFn:
    """Build the fast encoder for ``limits``.

    ``encode(value, append, depth, head)`` appends the ``<LI>`` element for ``value``. ``head``
    is the start of the item's start tag, ``<LI`` or ``<LI key="…"`` (already escaped), so the
    type attribute and content follow it. It raises :class:`_Unusual` for anything it does not
    handle directly (subclasses, out-of-model values, limits): the caller then asks
    :func:`~clusterrpc.values.check_value` for a precise error. It is a closure so that the hot
    loop reads limits from local cells, not attributes. Struct members and list items of the
    common scalar types are written inline, one string each, without a call; values are counted
    afterwards (one ``<LI`` each).
    """
    max_depth = limits.max_depth
    max_string = limits.max_string
    invalid_char = INVALID_XML_CHAR.search
    escape = escape_text
    isfinite = math.isfinite
    b2a_base64 = binascii.b2a_base64

    def checked(value: str) -> str:
        if len(value) > max_string:
            raise _Unusual
        # isprintable() is a cheap first test; the exact XML 1.0 test runs only when it fails
        # (tabs, newlines, non-BMP characters and the truly invalid ones).
        if not value.isprintable() and invalid_char(value) is not None:
            raise _Unusual
        return value

    def text(value: str) -> str:
        """``value`` checked and escaped as character data."""
        if len(value) > max_string:
            raise _Unusual
        if value.isprintable():  # False for CR, which must be escaped
            if "&" in value or "<" in value or ">" in value:
                return escape(value)
            return value
        if invalid_char(value) is not None:
            raise _Unusual
        return escape(value)

    def member_head(key: object) -> str:
        if type(key) is str:
            name = key
        elif isinstance(key, str):
            name = str.__str__(key)  # a StrEnum or other str subclass
        else:
            raise _Unusual
        return f'<LI key="{_escape_attribute(checked(name))}"'

    def encode(value: object, append: Callable[[str], None], depth: int, head: str) -> None:
        kind = type(value)
        if kind is dict:
            if depth >= max_depth:
                raise _Unusual
            if not value:
                append(f"{head}><AL/></LI>")
                return
            append(f"{head}><AL>")
            depth += 1
            for key, element in value.items():  # type: ignore[attr-defined]
                # An identifier (letters, digits, "_") is an attribute value as it stands.
                if type(key) is str and key.isidentifier() and len(key) <= max_string:
                    member = f'<LI key="{key}"'
                else:
                    member = member_head(key)
                kind = type(element)
                if kind is str:
                    if element:
                        append(f"{member}>{text(element)}</LI>")
                    else:
                        append(f"{member}/>")
                elif kind is int and INT64_MIN <= element <= INT64_MAX:
                    append(f'{member} t="i">{element}</LI>')
                elif kind is bool:
                    append(f'{member} t="b">1</LI>' if element else f'{member} t="b">0</LI>')
                elif kind is float and isfinite(element):
                    append(f'{member} t="f">{element!r}</LI>')
                elif element is None:
                    append(f'{member} t="n"/>')
                elif kind is _dt.datetime:
                    append(f'{member} t="d">{_format_datetime(element)}</LI>')
                elif kind is bytes and element and len(element) <= max_string:
                    append(
                        f'{member} t="x">{b2a_base64(element, newline=False).decode("ascii")}'
                        "</LI>"
                    )
                else:
                    encode(element, append, depth, member)
            append("</AL></LI>")
        elif kind is str:
            if value:
                append(f"{head}>{text(value)}</LI>")  # type: ignore[arg-type]
            else:
                append(f"{head}/>")
        elif kind is int:
            if not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
                raise _Unusual
            append(f'{head} t="i">{value}</LI>')
        elif kind is list or kind is tuple:
            if depth >= max_depth:
                raise _Unusual
            if not value:
                append(f"{head}><L/></LI>")
                return
            append(f"{head}><L>")
            depth += 1
            for element in value:  # type: ignore[attr-defined]
                kind = type(element)
                if kind is str and element:
                    append(f"<LI>{text(element)}</LI>")
                elif kind is int and INT64_MIN <= element <= INT64_MAX:
                    append(f'<LI t="i">{element}</LI>')
                else:
                    encode(element, append, depth, "<LI")
            append("</L></LI>")
        elif kind is bool:
            append(f'{head} t="b">1</LI>' if value else f'{head} t="b">0</LI>')
        elif kind is float:
            if not isfinite(value):  # type: ignore[arg-type]
                raise _Unusual
            append(f'{head} t="f">{value!r}</LI>')
        elif value is None:
            append(f'{head} t="n"/>')
        elif kind is bytes or kind is bytearray or kind is memoryview:
            view = memoryview(value)  # type: ignore[arg-type]
            if view.nbytes > max_string:
                raise _Unusual
            if view.nbytes:
                # binascii reads only C-contiguous buffers; a sliced memoryview may not be one.
                data = view if view.c_contiguous else view.tobytes()
                append(f'{head} t="x">{b2a_base64(data, newline=False).decode("ascii")}</LI>')
            else:
                append(f'{head} t="x"/>')
        elif kind is _dt.datetime:
            append(f'{head} t="d">{_format_datetime(value)}</LI>')  # type: ignore[arg-type]
        else:
            base = as_base_type(value)  # IntEnum as int, OrderedDict as dict, …
            if base is None:
                raise _Unusual
            encode(base, append, depth, head)

    return encode


def _format_datetime(moment: _dt.datetime) -> str:
    """:func:`~clusterrpc.values.format_datetime`, or :class:`_Unusual` for an offset with a
    fraction of a second, which the value model does not carry."""
    tzinfo = moment.tzinfo
    if tzinfo is not None and tzinfo is not _UTC:
        offset = moment.utcoffset()
        if offset is not None and offset.microseconds:
            raise _Unusual
    return format_datetime(moment)


_UTC = _dt.UTC


class CompactCodec(Codec):
    """The compact XML subset (``application/x-clusterrpc-compact+xml``), wire id 2.

    Carries every value of :mod:`clusterrpc.values` exactly, in about a third of the bytes of
    XML-RPC; only clusterrpc peers speak it. Construct with ``CompactCodec(limits=Limits(...))``.
    """

    name: ClassVar[str] = "compact"
    codec_id: ClassVar[int] = 2
    media_type: ClassVar[str] = "application/x-clusterrpc-compact+xml"

    __slots__ = ("_encode_value", "_fast_call", "_fast_response", "_prechecked_size", "_walker")

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits=limits)
        self._encode_value = _make_encoder(limits)
        self._fast_call, self._fast_response = _make_fast_decoder(limits)
        self._walker = _Walker(limits)
        # Bytes no longer than this pass every check of _prechecked without looking.
        self._prechecked_size = min(
            limits.max_size, 3 * limits.max_items, markup_budget(limits)
        )

    # -- encoding ----------------------------------------------------------------------------

    def _encode(self, head: str, values: Sequence[Value], root: str, tail: str) -> bytes:
        out = [head]
        append = out.append
        encode = self._encode_value
        try:
            for value in values:
                encode(value, append, 0, "<LI")
        except (_Unusual, RecursionError):
            self.explain_encode_failure(values, root)
        append(tail)
        text = "".join(out)
        # Every value is one "<LI" (text and keys escape "<"), so the item count is a C-speed
        # count, needed only when the text is long enough to hold more than max_items.
        max_items = self.limits.max_items
        if len(text) > 3 * max_items and text.count("<LI") > max_items:
            self.explain_encode_failure(values, root)
        data = text.encode("utf-8")
        if len(data) > self.limits.max_size:
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

    def _prechecked(self, data: bytes) -> bytes:
        """The checks that run before any parsing, on either path, in this order."""
        self.check_size(data)
        data = bytes(data)
        # Every value is one <LI> element and its tag must appear literally (with no DTD there
        # are no entities to hide it in), so this C-speed count refuses over-long messages
        # before any parsing. It may over-count only "<LI" inside comments or CDATA sections.
        # (Data too short to hold more than max_items of them cannot fail it: skipped.)
        max_items = self.limits.max_items
        if len(data) > 3 * max_items and data.count(b"<LI") > max_items:
            raise LimitExceededError(f"more than max_items={max_items} values in one message")
        check_markup(data, self.limits)
        return data

    def decode_call(self, data: bytes) -> CallMessage:
        """Decode a ``<CALL>``.

        Raises :class:`DecodeError` (``PARSE_ERROR`` for XML that is not well-formed or not safe,
        ``INVALID_REQUEST`` for a well-formed document that is not a valid call) or
        :class:`LimitExceededError`. Only white space may appear between elements; anything else
        the specification does not allow is refused.
        """
        if type(data) is not bytes or len(data) > self._prechecked_size:
            data = self._prechecked(data)
        message = self._fast_call(data)
        if message is not None:
            return message
        return self._call_from_tree(parse_checked(data))

    def decode_response(self, data: bytes) -> ReplyMessage | FaultMessage:
        """Decode a ``<REPLY>`` (exactly one value) or a ``<FAULT>``.

        Raises :class:`DecodeError` or :class:`LimitExceededError`, as :meth:`decode_call`.
        """
        if type(data) is not bytes or len(data) > self._prechecked_size:
            data = self._prechecked(data)
        message = self._fast_response(data)
        if message is not None:
            return message
        return self._response_from_tree(parse_checked(data))

    def _decode_call_safe(self, data: bytes) -> CallMessage:
        """:meth:`decode_call` by the reference path alone (for the differential tests)."""
        return self._call_from_tree(parse_checked(self._prechecked(data)))

    def _decode_response_safe(self, data: bytes) -> ReplyMessage | FaultMessage:
        """:meth:`decode_response` by the reference path alone (for the differential tests)."""
        return self._response_from_tree(parse_checked(self._prechecked(data)))

    def _call_from_tree(self, root: Element) -> CallMessage:
        if root.tag != "CALL":
            raise invalid_message(f"expected <CALL>, got <{_tag(root)}>")
        attributes = root.attrib
        method = attributes.get("m")
        if method is None or len(attributes) != 1:
            raise invalid_message('<CALL> must have exactly one attribute, m="method.name"')
        check_method_name(method, decoding=True)
        return CallMessage(method, tuple(self._walker.items(root)))

    def _response_from_tree(self, root: Element) -> ReplyMessage | FaultMessage:
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


# -- the fast decoder ----------------------------------------------------------------------------
#
# The patterns below read the canonical form (section 4 of spec/codec-compact.md), with layout
# white space (" ", TAB, LF) between elements: no XML declaration or byte-order mark, attributes
# in the canonical order with double quotes and no white space inside tags, no CR, no ">" and no
# character XML 1.0 forbids in character data or keys (nor TAB or LF in keys, which attribute
# normalisation would change), "&" only in references XML allows (checked by unescape_text),
# and the canonical spelling of every scalar. Anything else makes the fast path give up, and the
# decoder hands the document to the tree path, which is the reference: the fast path only ever
# returns what that path returns for the same bytes (tests/test_codec_compact_fastpath.py checks
# this differentially). Each match reads one whole <LI> item, the start of a nested list or
# struct, or a container's end; as in the xmlrpc codec, a match's lastindex names the kind, and
# only plain greedy quantifiers are used.

_S = r"[ \t\n]*"
_TEXT = r"[^<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]*"
_ATTRIBUTE = r"[^<>\"\t\n\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]*"
_ITEM = (
    r"(?:"
    r">(" + _TEXT + r")</LI>"
    r"|/>()"
    # Up to 18 digits always fit in 64 bits; 19 digits need a range check.
    r'| t="i">(0|-?[1-9][0-9]{0,17})</LI>'
    r'| t="i">(-?[1-9][0-9]{18})</LI>'
    r'| t="f">(-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)</LI>'
    r'| t="b">([01])</LI>'
    r'| t="n"/>()'
    r'| t="x">([A-Za-z0-9+/=]*)</LI>'
    r'| t="x"/>()'
    # The canonical naive or UTC datetime, fields range-checked, no ".000000": what
    # datetime.fromisoformat reads exactly as _datetime does. Other offsets go to _datetime.
    r'| t="d">([0-9]{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])'
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.(?!000000)[0-9]{6})?Z?)</LI>"
    r'| t="d">([0-9T:.Z+-]{1,40})</LI>'
    r"|>" + _S + r"<L>" + _S + r"()"
    r"|>" + _S + r"<AL>" + _S + r"()"
    r"|>" + _S + r"<L/>" + _S + r"</LI>()"
    r"|>" + _S + r"<AL/>" + _S + r"</LI>()"
    r")" + _S
)
_KEY = 1
_STRING = 2
_EMPTY_STRING = 3
_INT = 4
_LONG_INT = 5
_FLOAT_TEXT = 6
_BOOLEAN = 7
_NULL = 8
_BYTES = 9
_EMPTY_BYTES = 10
_ISO_DATETIME = 11
_DATETIME = 12
_LIST = 13  # the kinds from here on are containers, subject to max_depth
_STRUCT = 14
_EMPTY_LIST = 15
_EMPTY_STRUCT = 16
_END = 17


_Scan = Callable[[str, int], Scanner]


def _item_scanner(head: str, end: str) -> _Scan:
    """Items ``<LI`` + ``head`` (one group) + the rest of an item, or the container's ``end``.

    Returns the pattern's :func:`~clusterrpc.codecs._safexml.scanner`.
    """
    pattern = re.compile(r"(?:<LI" + head + _ITEM + r"|" + end + r"())")
    if pattern.groups != _END:  # pragma: no cover - a broken edit of the patterns above
        raise AssertionError("fast decoder patterns are numbered wrongly")
    return scanner(pattern)


_STRUCT_ITEMS = _item_scanner(r' key="(' + _ATTRIBUTE + r')"', r"</AL>" + _S + r"</LI>" + _S)
_LIST_ITEMS = _item_scanner(r"()", r"</L>" + _S + r"</LI>" + _S)
_CALL_ITEMS = _item_scanner(r"()", r"</CALL>" + _S + r"\Z")
_REPLY_ITEMS = _item_scanner(r"()", r"</REPLY>" + _S + r"\Z")
_CALL_HEAD = re.compile(
    _S + r'<CALL m="([A-Za-z0-9_.:/]{1,256})"(?:/>' + _S + r"\Z()|>" + _S + r")"
).match
_RESPONSE_HEAD = re.compile(
    _S + r"(?:<REPLY>" + _S + r'()|<FAULT code="(0|-?[1-9][0-9]{0,9})"'
    r"(?:/>" + _S + r"\Z()|>(" + _TEXT + r")</FAULT>" + _S + r"\Z))"
).match
_RESPONSE_REPLY = 1
_RESPONSE_CODE = 2
_RESPONSE_MESSAGE = 4


# How each scalar kind's text becomes its value, indexed by kind: the tree path's conversions
# (_base64, _datetime) or their equivalents on text the pattern already checked. A ValueError
# (DecodeError and binascii.Error included) means "not valid": the tree path then says why.
_CONVERT: list[Callable[[str], Value]] = [unreachable] * _LIST
_CONVERT[_STRING] = maybe_escaped  # (the readers inline it)
_CONVERT[_EMPTY_STRING] = str
_CONVERT[_INT] = int
_CONVERT[_LONG_INT] = long_int
_CONVERT[_FLOAT_TEXT] = finite_float
_CONVERT[_BOOLEAN] = "1".__eq__
_CONVERT[_NULL] = {}.get  # type: ignore[assignment]  # a C call that returns None
_CONVERT[_BYTES] = _base64
_CONVERT[_EMPTY_BYTES] = str.encode
_CONVERT[_ISO_DATETIME] = _dt.datetime.fromisoformat
_CONVERT[_DATETIME] = _datetime

_FastCall = Callable[[bytes], CallMessage | None]
_FastResponse = Callable[[bytes], ReplyMessage | FaultMessage | None]
_Reader = Callable[[str, int, int], tuple[Value, int]]
_ItemsReader = Callable[[str, int, _Scan], list[Value]]


def _make_fast_decoder(limits: Limits) -> tuple[_FastCall, _FastResponse]:
    """Build the fast decoders for ``limits``: ``call(data)`` and ``response(data)``.

    Each returns the decoded message, or ``None`` when ``data`` is outside the canonical subset
    the patterns read *or is not a valid message* (the tree path then raises the precise error):
    the fast path never raises. ``data`` has passed the pre-parse checks; since every value the
    fast path reads is a literal ``<LI``, ``max_items`` already holds. Depth and duplicate keys
    are checked here, and so is ``max_string``, but only in documents longer than ``max_string``
    characters (no shorter one can hold a longer string).
    """
    max_depth = limits.max_depth
    max_string = limits.max_string

    def sized(convert: Callable[[str], Value]) -> Callable[[str], Value]:
        def checked(text: str) -> Value:
            value = convert(text)
            if len(value) > max_string:  # type: ignore[arg-type]
                raise GiveUp
            return value

        return checked

    def empty(kind: int, depth: int) -> Value:
        """An empty list or struct (``<L/>``, ``<AL/>``) at ``depth``: a container all the same."""
        if depth >= max_depth:
            raise GiveUp
        return [] if kind == _EMPTY_LIST else {}

    def readers(check: bool) -> tuple[_Reader, _ItemsReader]:
        """The struct and root-items readers, checking string lengths or not."""
        convert = list(_CONVERT)
        if check:
            for kind in (_STRING, _BYTES):
                convert[kind] = sized(convert[kind])
        struct_items = _STRUCT_ITEMS
        list_items = _LIST_ITEMS
        unescape = unescape_text

        def struct(text: str, pos: int, depth: int) -> tuple[Value, int]:
            """The struct whose items start at ``pos``, at ``depth``, and where it ends."""
            if depth >= max_depth:
                raise GiveUp
            result: dict[str, Value] = {}
            item: Value
            next_item = struct_items(text, pos).match
            while True:
                match = next_item()
                if match is None:
                    raise GiveUp
                key = match[_KEY]
                if key is None:  # the end of the struct
                    return result, match.end()
                if "&" in key:
                    key = unescape(key)
                if key in result or (check and len(key) > max_string):
                    raise GiveUp  # a duplicate key: the tree path refuses it
                kind: int = match.lastindex  # type: ignore[assignment]
                if kind == _STRING and not check:
                    item = match[_STRING]
                    if "&" in item:
                        item = unescape(item)
                elif kind < _LIST:
                    item = convert[kind](match[kind])
                elif kind < _EMPTY_LIST:
                    item, pos = (lists if kind == _LIST else struct)(
                        text, match.end(), depth + 1
                    )
                    next_item = struct_items(text, pos).match
                else:
                    item = empty(kind, depth + 1)
                result[key] = item

        def lists(text: str, pos: int, depth: int) -> tuple[Value, int]:
            """The list whose items start at ``pos``, at ``depth``, and where it ends."""
            if depth >= max_depth:
                raise GiveUp
            result: list[Value] = []
            append = result.append
            item: Value
            next_item = list_items(text, pos).match
            while True:
                match = next_item()
                if match is None:
                    raise GiveUp
                kind: int = match.lastindex  # type: ignore[assignment]
                if kind == _STRING and not check:
                    item = match[_STRING]
                    if "&" in item:
                        item = unescape(item)
                elif kind < _LIST:
                    item = convert[kind](match[kind])
                elif kind == _END:
                    return result, match.end()
                elif kind < _EMPTY_LIST:
                    item, pos = (lists if kind == _LIST else struct)(
                        text, match.end(), depth + 1
                    )
                    next_item = list_items(text, pos).match
                else:
                    item = empty(kind, depth + 1)
                append(item)

        def items(text: str, pos: int, scan: _Scan) -> list[Value]:
            """The items of ``<CALL>`` or ``<REPLY>`` from ``pos`` to the end of the document."""
            result: list[Value] = []
            item: Value
            next_item = scan(text, pos).match
            while True:
                match = next_item()
                if match is None:
                    raise GiveUp
                kind: int = match.lastindex  # type: ignore[assignment]
                if kind < _LIST:
                    item = convert[kind](match[kind])
                elif kind == _END:
                    return result
                elif kind < _EMPTY_LIST:
                    item, pos = (lists if kind == _LIST else struct)(text, match.end(), 0)
                    next_item = scan(text, pos).match
                else:
                    item = empty(kind, 0)
                result.append(item)

        return struct, items

    _, short_items = readers(False)
    _, long_items = readers(True)

    def call(data: bytes) -> CallMessage | None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        head = _CALL_HEAD(text)
        if head is None:
            return None
        if head.lastindex == 2:  # <CALL m="…"/>
            return CallMessage(head[1], ())
        try:
            values = (long_items if len(text) > max_string else short_items)(
                text, head.end(), _CALL_ITEMS
            )
        except (GiveUp, ValueError, RecursionError):
            return None
        return CallMessage(head[1], tuple(values))

    def response(data: bytes) -> ReplyMessage | FaultMessage | None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        head = _RESPONSE_HEAD(text)
        if head is None:
            return None
        if head.lastindex == _RESPONSE_REPLY:
            try:
                values = (long_items if len(text) > max_string else short_items)(
                    text, head.end(), _REPLY_ITEMS
                )
            except (GiveUp, ValueError, RecursionError):
                return None
            return ReplyMessage(values[0]) if len(values) == 1 else None
        code = int(head[_RESPONSE_CODE])
        if not INT32_MIN <= code <= INT32_MAX:
            return None
        message = head[_RESPONSE_MESSAGE] or ""
        if "&" in message:
            try:
                message = unescape_text(message)
            except ValueError:
                return None
        if len(message) > max_string:
            return None
        return FaultMessage(code, message)

    return call, response
