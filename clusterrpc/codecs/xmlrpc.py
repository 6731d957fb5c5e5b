"""The ``xmlrpc`` codec (wire id 1): standard XML-RPC, the default.

Implements the whole XML-RPC specification plus the ``<nil/>`` and ``<i8>`` extensions, and reads
the Apache extension namespace's ``ex:nil``, ``ex:i1``, ``ex:i2``, ``ex:i8`` and ``ex:float``.
``ex:serializable`` and ``ex:dom`` (Java serialization, DOM fragments) are always refused.
``spec/codecs.md`` gives the exact mapping; ``spec/vectors/codecs/xmlrpc/`` has byte-exact
examples.

Encoding is a single recursive walk that dispatches on the exact type and appends string pieces
(a struct member or array element of a common scalar type is one piece, written inline);
anything unusual (subclasses, bad values, limits) falls to :func:`clusterrpc.values.check_value`,
which finds and names the offending place.

Decoding has two paths with one behaviour. After the pre-parse checks (size, ``<value`` count,
markup budget), the *fast path* reads the canonical documents that this encoder and
``xmlrpc.client`` write with precompiled regular expressions, one match per value, so that the
Python work is per value, not per tag (:func:`_make_fast_decoder`). Anything outside its strict
subset, and anything invalid, goes to the *tree path*: :mod:`clusterrpc.codecs._safexml` (expat
in C, DTDs refused) builds a tree that :class:`_Walker` turns into values. The tree path is the
reference: it alone decides errors and their messages, and the fast path only returns what it
would return (``spec/codecs.md``, "How the decoder is built"; checked differentially by
``tests/test_codec_xmlrpc_fastpath.py``). Why regular expressions rather than a faster parser:
the cost of a small message was building the tree (an ElementTree parser object alone is a third
of a small reply's decode) and the per-element Python walk; one anchored match per value moves
both into the C regular-expression engine, which also checks the structure.
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
    format_datetime,
    parse_datetime,
)

__all__ = ["XmlRpcCodec"]

APACHE_EXTENSIONS = "http://ws.apache.org/xmlrpc/namespaces/extensions"
_EX = "{" + APACHE_EXTENSIONS + "}"

_XML_HEADER = '<?xml version="1.0"?>'
_INTEGER = re.compile(r"[ \t\r\n]*[+-]?[0-9]+[ \t\r\n]*\Z")
_DOUBLE = re.compile(
    r"[ \t\r\n]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\r\n]*\Z"
)


class _Unusual(Exception):
    """Raised inside the fast encoder to hand the value to the precise slow path."""


_EncodeFn = Callable[[object, Callable[[str], None], int], None]


def _make_encoder(limits: Limits) -> _EncodeFn:
    """Build the fast encoder for ``limits``.

    ``encode(value, append, depth)`` appends the ``<value>`` element for ``value``. It raises
    :class:`_Unusual` for anything it does not handle directly (subclasses, out-of-model values,
    limits): the caller then asks :func:`~clusterrpc.values.check_value` for a precise error. It
    is a closure so that the hot loop reads limits from local cells, not attributes. Struct
    members and array elements of the common scalar types are written inline, one string per
    member, without a call; values are counted afterwards (one ``<value>`` tag each).
    """
    max_depth = limits.max_depth
    max_string = limits.max_string
    invalid_char = INVALID_XML_CHAR.search
    escape = escape_text
    isfinite = math.isfinite
    b2a_base64 = binascii.b2a_base64
    iso8601 = _format_datetime
    int_min = INT32_MIN
    int_max = INT32_MAX

    def text(value: str) -> str:
        if len(value) > max_string:
            raise _Unusual
        # isprintable() is a cheap first test (it is False for CR, which must be escaped); the
        # exact XML 1.0 test runs only when it fails (tabs, newlines, non-BMP characters and
        # the truly invalid ones).
        if value.isprintable():
            if "&" in value or "<" in value or ">" in value:
                return escape(value)
            return value
        if invalid_char(value) is not None:
            raise _Unusual
        return escape(value)

    def member_name(key: object) -> str:
        if not isinstance(key, str):
            raise _Unusual
        return text(str.__str__(key))  # a str subclass (StrEnum …) travels as its value

    def encode(value: object, append: Callable[[str], None], depth: int) -> None:
        kind = type(value)
        if kind is dict:
            if depth >= max_depth:
                raise _Unusual
            append("<value><struct>")
            depth += 1
            for key, element in value.items():  # type: ignore[attr-defined]
                # An identifier (letters, digits, "_") is valid XML text that needs no escaping.
                if type(key) is str and key.isidentifier() and len(key) <= max_string:
                    name = key
                else:
                    name = member_name(key)
                kind = type(element)
                if kind is str:
                    append(
                        f"<member><name>{name}</name><value><string>{text(element)}"
                        "</string></value></member>"
                    )
                elif kind is int and int_min <= element <= int_max:
                    append(
                        f"<member><name>{name}</name><value><int>{element}</int></value></member>"
                    )
                elif kind is bool:
                    append(
                        f"<member><name>{name}</name><value><boolean>1</boolean></value></member>"
                        if element
                        else f"<member><name>{name}</name><value><boolean>0</boolean></value>"
                        "</member>"
                    )
                elif kind is float and isfinite(element):
                    append(
                        f"<member><name>{name}</name><value><double>{element!r}</double></value>"
                        "</member>"
                    )
                elif element is None:
                    append(f"<member><name>{name}</name><value><nil/></value></member>")
                elif kind is _dt.datetime:
                    append(
                        f"<member><name>{name}</name><value><dateTime.iso8601>"
                        f"{iso8601(element)}</dateTime.iso8601></value></member>"
                    )
                elif kind is bytes and len(element) <= max_string:
                    append(
                        f"<member><name>{name}</name><value><base64>"
                        f"{b2a_base64(element, newline=False).decode('ascii')}"
                        "</base64></value></member>"
                    )
                else:
                    append(f"<member><name>{name}</name>")
                    encode(element, append, depth)
                    append("</member>")
            append("</struct></value>")
        elif kind is str:
            append(f"<value><string>{text(value)}</string></value>")  # type: ignore[arg-type]
        elif kind is int:
            if int_min <= value <= int_max:  # type: ignore[operator]
                append(f"<value><int>{value}</int></value>")
            elif INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
                append(f"<value><i8>{value}</i8></value>")
            else:
                raise _Unusual
        elif kind is list or kind is tuple:
            if depth >= max_depth:
                raise _Unusual
            append("<value><array><data>")
            depth += 1
            for element in value:  # type: ignore[attr-defined]
                kind = type(element)
                if kind is str:
                    append(f"<value><string>{text(element)}</string></value>")
                elif kind is int and int_min <= element <= int_max:
                    append(f"<value><int>{element}</int></value>")
                else:
                    encode(element, append, depth)
            append("</data></array></value>")
        elif kind is bool:
            append("<value><boolean>1</boolean></value>" if value else
                   "<value><boolean>0</boolean></value>")
        elif kind is float:
            if not math.isfinite(value):  # type: ignore[arg-type]
                raise _Unusual
            append(f"<value><double>{value!r}</double></value>")
        elif value is None:
            append("<value><nil/></value>")
        elif kind is bytes or kind is bytearray or kind is memoryview:
            if memoryview(value).nbytes > max_string:  # type: ignore[arg-type]
                raise _Unusual
            append(
                "<value><base64>"
                f"{binascii.b2a_base64(value, newline=False).decode('ascii')}"  # type: ignore[arg-type]
                "</base64></value>"
            )
        elif kind is _dt.datetime:
            append(
                f"<value><dateTime.iso8601>{_format_datetime(value)}"  # type: ignore[arg-type]
                "</dateTime.iso8601></value>"
            )
        else:
            base = as_base_type(value)
            if base is None:
                raise _Unusual
            encode(base, append, depth)

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


class XmlRpcCodec(Codec):
    """Standard XML-RPC (``text/xml``), wire id 1.

    Byte-compatible with Python's :mod:`xmlrpc.client` and other XML-RPC implementations for the
    values they support. Construct with ``XmlRpcCodec(limits=Limits(...))``.
    """

    name: ClassVar[str] = "xmlrpc"
    codec_id: ClassVar[int] = 1
    media_type: ClassVar[str] = "text/xml"

    __slots__ = ("_encode_value", "_fast_call", "_fast_response", "_prechecked_size", "_walker")

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits=limits)
        self._encode_value = _make_encoder(limits)
        self._fast_call, self._fast_response = _make_fast_decoder(limits)
        self._walker = _Walker(limits)
        # Bytes no longer than this pass every check of _prechecked without looking.
        self._prechecked_size = min(
            limits.max_size, 6 * limits.max_items, markup_budget(limits)
        )

    # -- encoding ----------------------------------------------------------------------------

    def _encode(self, head: str, values: Sequence[Value], root: str, tail: str) -> bytes:
        out = [head]
        append = out.append
        encode = self._encode_value
        try:
            for value in values:
                encode(value, append, 0)
        except (_Unusual, RecursionError):
            self.explain_encode_failure(values, root)
        append(tail)
        text = "".join(out)
        # Every value is one "<value>" tag (text escapes "<"), so the item count is a C-speed
        # count, needed only when the text is long enough to hold more than max_items.
        max_items = self.limits.max_items
        if len(text) > 7 * max_items and text.count("<value>") > max_items:
            self.explain_encode_failure(values, root)
        data = text.encode("utf-8")
        if len(data) > self.limits.max_size:
            self.check_encoded_size(data)
        return data

    def encode_call(self, method: str, params: Sequence[Value]) -> bytes:
        """Encode ``<methodCall>``; raises :class:`EncodeError` for bad names and values."""
        check_method_name(method)
        if not isinstance(params, list | tuple):
            raise EncodeError(f"params must be a list or tuple, not {type(params).__name__}")
        out = [f"{_XML_HEADER}<methodCall><methodName>{method}</methodName><params>"]
        append = out.append
        encode = self._encode_value
        try:
            for value in params:
                append("<param>")
                encode(value, append, 0)
                append("</param>")
        except (_Unusual, RecursionError):
            self.explain_encode_failure(params, "params[{}]")
        append("</params></methodCall>")
        text = "".join(out)
        max_items = self.limits.max_items
        if len(text) > 7 * max_items and text.count("<value>") > max_items:
            self.explain_encode_failure(params, "params[{}]")
        data = text.encode("utf-8")
        if len(data) > self.limits.max_size:
            self.check_encoded_size(data)
        return data

    def encode_reply(self, value: Value) -> bytes:
        """Encode a ``<methodResponse>`` with one parameter."""
        return self._encode(
            f"{_XML_HEADER}<methodResponse><params><param>",
            (value,),
            "value",
            "</param></params></methodResponse>",
        )

    def encode_fault(self, code: int, message: str) -> bytes:
        """Encode a ``<methodResponse>`` holding a ``<fault>``."""
        code, message = check_fault(code, message)
        return self._encode(
            f"{_XML_HEADER}<methodResponse><fault>",
            ({"faultCode": code, "faultString": message},),
            "fault",
            "</fault></methodResponse>",
        )

    # -- decoding ----------------------------------------------------------------------------

    def _prechecked(self, data: bytes) -> bytes:
        """The checks that run before any parsing, on either path, in this order."""
        self.check_size(data)
        data = bytes(data)
        # Every value is one <value> element and that tag must appear literally (no entities
        # exist), so this C-speed count refuses over-long messages before any parsing. (Data
        # too short to hold more than max_items of them cannot fail it: skipped.)
        max_items = self.limits.max_items
        if len(data) > 6 * max_items and data.count(b"<value") > max_items:
            raise LimitExceededError(f"more than max_items={max_items} values in one message")
        check_markup(data, self.limits)
        return data

    def _tree(self, data: bytes, root_tag: str) -> Element:
        """The safe path's parse of pre-checked ``data`` (see :mod:`._safexml`)."""
        root = parse_checked(data)
        if root.tag != root_tag:
            raise invalid_message(f"expected <{root_tag}>, got <{_tag(root)}>")
        return root

    def decode_call(self, data: bytes) -> CallMessage:
        """Decode a ``<methodCall>``.

        Raises :class:`DecodeError` (``PARSE_ERROR`` for XML that is not well-formed or not safe,
        ``INVALID_REQUEST`` for a well-formed document that is not a valid call) or
        :class:`LimitExceededError`. Character data between structural elements is ignored, as
        every XML-RPC implementation does.
        """
        if type(data) is not bytes or len(data) > self._prechecked_size:
            data = self._prechecked(data)
        message = self._fast_call(data)
        if message is not None:
            return message
        return self._call_from_tree(self._tree(data, "methodCall"))

    def decode_response(self, data: bytes) -> ReplyMessage | FaultMessage:
        """Decode a ``<methodResponse>``: a reply (exactly one parameter) or a fault.

        Raises :class:`DecodeError` or :class:`LimitExceededError`, as :meth:`decode_call`.
        """
        if type(data) is not bytes or len(data) > self._prechecked_size:
            data = self._prechecked(data)
        message = self._fast_response(data)
        if message is not None:
            return message
        return self._response_from_tree(self._tree(data, "methodResponse"))

    def _decode_call_safe(self, data: bytes) -> CallMessage:
        """:meth:`decode_call` by the reference path alone (for the differential tests)."""
        return self._call_from_tree(self._tree(self._prechecked(data), "methodCall"))

    def _decode_response_safe(self, data: bytes) -> ReplyMessage | FaultMessage:
        """:meth:`decode_response` by the reference path alone (for the differential tests)."""
        return self._response_from_tree(self._tree(self._prechecked(data), "methodResponse"))

    def _call_from_tree(self, root: Element) -> CallMessage:
        if not len(root) or root[0].tag != "methodName" or len(root[0]):
            raise invalid_message("<methodCall> must start with <methodName>")
        method = check_method_name((root[0].text or "").strip(), decoding=True)
        if len(root) == 1:
            return CallMessage(method, ())
        if len(root) > 2 or root[1].tag != "params":
            raise invalid_message("<methodCall> may hold only <methodName> and <params>")
        return CallMessage(method, tuple(self._walker.params(root[1])))

    def _response_from_tree(self, root: Element) -> ReplyMessage | FaultMessage:
        if len(root) != 1:
            raise invalid_message("<methodResponse> must hold exactly one <params> or <fault>")
        body = root[0]
        if body.tag == "params":
            params = self._walker.params(body)
            if len(params) != 1:
                raise invalid_message(
                    f"a response carries exactly one parameter, not {len(params)}"
                )
            return ReplyMessage(params[0])
        if body.tag == "fault":
            if len(body) != 1 or body[0].tag != "value":
                raise invalid_message("<fault> must hold exactly one <value>")
            fault = self._walker.fault(body[0])
            if (
                not isinstance(fault, dict)
                or set(fault) != {"faultCode", "faultString"}
                or type(fault["faultCode"]) is not int
                or not isinstance(fault["faultString"], str)
            ):
                raise invalid_message(
                    "<fault> must be a struct of int faultCode and string faultString"
                )
            return FaultMessage(fault["faultCode"], fault["faultString"])
        raise invalid_message(f"unexpected <{_tag(body)}> in <methodResponse>")


def _tag(element: Element) -> str:
    tag = element.tag
    if tag.startswith(_EX):
        return "ex:" + tag[len(_EX):]
    return tag[:64]


class _Walker:
    """Turns a parsed tree into values, enforcing depth, item and string limits.

    Stateless between messages (the item budget is a per-message cell), so one walker serves
    every decode of its codec, from any thread.
    """

    __slots__ = ("fault", "params")

    def __init__(self, limits: Limits) -> None:
        max_depth = limits.max_depth
        max_string = limits.max_string
        max_items = limits.max_items
        scalars = _SCALARS

        def spend(budget: list[int], count: int) -> None:
            budget[0] -= count
            if budget[0] < 0:
                raise LimitExceededError(
                    f"more than max_items={max_items} values in one message"
                )

        def value(element: Element, depth: int, budget: list[int]) -> Value:
            if not len(element):
                text = element.text or ""  # untyped <value>text</value> is a string
                if len(text) > max_string:
                    raise string_too_long(limits)
                return text
            if len(element) != 1:
                raise invalid_message("<value> must hold exactly one type element")
            typed = element[0]
            tag = typed.tag
            # The most frequent types are inlined; the rest go through the _SCALARS table.
            if tag == "string":
                text = typed.text or ""
                if len(text) > max_string or len(typed):
                    raise string_too_long(limits) if len(text) > max_string else _nested(typed)
                return text
            if tag in ("int", "i4"):
                if len(typed):
                    raise _nested(typed)
                return _int(typed)
            scalar = scalars.get(tag)
            if scalar is not None:
                if len(typed):
                    raise _nested(typed)
                result = scalar(typed)
                if tag == "base64" and len(result) > max_string:  # type: ignore[arg-type]
                    raise string_too_long(limits)
                return result
            if tag == "struct":
                if depth >= max_depth:
                    raise nesting_too_deep(limits)
                spend(budget, len(typed))
                struct: dict[str, Value] = {}
                for member in typed:
                    if member.tag != "member" or len(member) != 2:
                        raise invalid_message(
                            "<struct> must hold <member> elements of <name> and <value>"
                        )
                    name = member[0]  # indexing is twice as fast as unpacking an Element
                    item = member[1]
                    if name.tag != "name" or item.tag != "value" or len(name):
                        raise invalid_message("a <member> must hold <name> then <value>")
                    key = name.text or ""
                    if len(key) > max_string:
                        raise string_too_long(limits)
                    struct[key] = value(item, depth + 1, budget)
                return struct
            if tag == "array":
                if depth >= max_depth:
                    raise nesting_too_deep(limits)
                if len(typed) != 1 or typed[0].tag != "data":
                    raise invalid_message("<array> must hold exactly one <data>")
                data = typed[0]
                spend(budget, len(data))
                array = []
                for item in data:
                    if item.tag != "value":
                        raise invalid_message("<data> may hold only <value> elements")
                    array.append(value(item, depth + 1, budget))
                return array
            if tag in (_EX + "serializable", _EX + "dom"):
                raise invalid_message(f"<{_tag(typed)}> values are never accepted")
            raise invalid_message(f"unsupported XML-RPC type <{_tag(typed)}>")

        def params(element: Element) -> list[Value]:
            budget = [max_items]
            spend(budget, len(element))
            result = []
            for param in element:
                if param.tag != "param" or len(param) != 1 or param[0].tag != "value":
                    raise invalid_message("<params> must hold <param> elements of one <value> each")
                result.append(value(param[0], 0, budget))
            return result

        def fault(element: Element) -> Value:
            return value(element, 0, [max_items - 1])

        self.params = params
        self.fault = fault


def _nested(element: Element) -> DecodeError:
    return invalid_message(f"<{_tag(element)}> must not contain elements")




def _int(element: Element) -> int:
    text = element.text or ""
    # int() alone would also take "1_000" and non-ASCII digits; the regex runs only then.
    try:
        number = int(text)
    except ValueError:
        raise invalid_message(f"invalid integer {text[:40]!r}") from None
    if ("_" in text or not text.isascii()) and not _INTEGER.match(text):
        raise invalid_message(f"invalid integer {text[:40]!r}")
    if not INT64_MIN <= number <= INT64_MAX:
        raise invalid_message(f"integer {text.strip()[:40]} does not fit in 64 bits")
    return number


def _boolean(element: Element) -> bool:
    text = (element.text or "").strip()
    if text == "1":
        return True
    if text == "0":
        return False
    lowered = text.lower()
    if lowered in ("true", "false"):  # sent by some implementations; the spec says 0 or 1
        return lowered == "true"
    raise invalid_message(f"invalid boolean {text[:40]!r}")


def _double(element: Element) -> float:
    text = element.text or ""
    if not _DOUBLE.match(text):
        raise invalid_message(f"invalid double {text[:40]!r}")
    number = float(text)
    if not math.isfinite(number):  # e.g. 1e999
        raise invalid_message(f"double {text.strip()[:40]} is out of range")
    return number


def _string(element: Element) -> str:
    return element.text or ""


def _base64(element: Element) -> bytes:
    return _base64_text(element.text or "")


def _base64_text(text: str) -> bytes:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        pass
    # Line-wrapped base64 (the standard library writes 76-character lines) is valid too.
    compact = "".join(text.split())
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except ValueError as error:
        raise invalid_message(f"invalid base64: {error}") from None


def _datetime(element: Element) -> _dt.datetime:
    return parse_datetime(element.text or "")


def _nil(element: Element) -> None:
    if element.text and not element.text.isspace():
        raise invalid_message("<nil/> must be empty")


_SCALARS: dict[str, Callable[[Element], Value]] = {
    "string": _string,
    "int": _int,
    "i4": _int,
    "i8": _int,
    "boolean": _boolean,
    "double": _double,
    "base64": _base64,
    "dateTime.iso8601": _datetime,
    "nil": _nil,
    _EX + "nil": _nil,
    _EX + "i1": _int,
    _EX + "i2": _int,
    _EX + "i8": _int,
    _EX + "float": _double,
}






# -- the fast decoder ----------------------------------------------------------------------------
#
# The patterns below read a strict subset of XML: the shape that clusterrpc's encoder and
# xmlrpc.client.dumps write. White space (" ", TAB, LF) may appear between structural tags, but
# not inside a scalar's type element (<int> 5 </int>); tags have no attributes and no namespace
# prefixes; character data has no CR (an XML parser would turn it into LF), no ">" (so never the
# forbidden "]]>"), no character XML 1.0 forbids, no CDATA section, and "&" only as one of the
# five predefined entities or a character reference of a character XML allows (checked by
# unescape_text). Anything else makes the fast path give up, and the decoder hands the document to
# the tree parser, which is the reference: the fast path only ever returns what that path returns
# for the same bytes (tests/test_codec_xmlrpc_fastpath.py checks this differentially).
#
# Each match reads one whole item of a container: a struct member or array element holding a
# scalar, the start of a nested struct or array, or the container's end. Alternatives are
# factored after their common "<" so that the engine rejects a wrong one by its first letter.
# The patterns use only plain greedy quantifiers (possessive ones have had matching bugs in
# Python 3.11 releases); each text class excludes the delimiter that follows it, so
# backtracking stays linear.

_S = r"[ \t\n]*"  # XML white space, less CR (line-end normalisation: left to the parser)
_TEXT = r"[^<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]*"  # UTF-8 text never holds surrogates
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"  # as _DOUBLE
# The inside of a <value> holding a scalar, and its end tag. Each alternative captures the
# element's text in a group of its own, so that a match's lastindex names the kind.
_SCALAR = (
    r"(?:" + _S + r"<(?:"
    r"string>(" + _TEXT + r")</string>"
    # Up to 18 digits always fit in 64 bits; 19 digits need a range check.
    r"|i(nt|4|8)>([+-]?[0-9]{1,18})</i\3>"
    r"|i(nt|4|8)>([+-]?[0-9]{19})</i\5>"
    r"|boolean>([01])</boolean>"
    r"|double>(" + _NUMBER + r")</double>"
    # The canonical dateTime, fields range-checked: datetime.fromisoformat reads it exactly as
    # parse_datetime does (tests/test_codec_xmlrpc_fastpath.py), and much faster.
    r"|dateTime\.iso8601>([0-9]{4}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{6})?Z?)</dateTime\.iso8601>"
    r"|dateTime\.iso8601>([0-9T:.,Z+-]{1,64})</dateTime\.iso8601>"
    r"|base64>([A-Za-z0-9+/= \t\n]*)</base64>"
    r"|nil/>()"
    r")" + _S + r"|(" + _TEXT + r"))</value>"
)
# Group numbers, shared by every item pattern (each has exactly one group before <value>).
_KEY = 1
_STRING = 2
_INT = 4  # group 3 is the tag, for the back-reference that checks the end tag
_LONG_INT = 6  # group 5 likewise
_BOOLEAN = 7
_DOUBLE_TEXT = 8
_ISO_DATETIME = 9
_DATETIME = 10
_BASE64 = 11
_NIL = 12
_UNTYPED = 13
_STRUCT = 14  # the kinds from here on are not scalars
_ARRAY = 15
# The end of a struct or array, and what ends with it: its <member> or <param>, or nothing
# (an array element, a fault). The end of <params> is group 16 of the params patterns.
_END_MEMBER = 16
_END_PARAM = 17
_END = 18
_END_PARAMS = 16


_Scan = Callable[[str, int], Scanner]


def _item_scanner(head: str, suffix: str, end: str, groups: int) -> _Scan:
    """The items of a container: ``head`` (one group; it and ``end`` come after a "<") then
    ``value>`` then ``suffix``, the start of a nested struct or array, or the container's
    ``end``.

    Returns the pattern's :func:`~clusterrpc.codecs._safexml.scanner`.
    """
    pattern = re.compile(
        r"<(?:" + head + r"value>(?:" + _SCALAR + suffix
        + r"|" + _S + r"<struct>" + _S + r"()"
        + r"|" + _S + r"<array>" + _S + r"<data>" + _S + r"())"
        + r"|" + end + r")"
    )
    if pattern.groups != groups:  # pragma: no cover - a broken edit of the patterns above
        raise AssertionError("fast decoder patterns are numbered wrongly")
    return scanner(pattern)


# What may follow the end of a nested container, in group order _END_MEMBER, _END_PARAM, _END.
_CONTAINER_END = r"(?:</member>" + _S + r"()|</param>" + _S + r"()|())"
_STRUCT_ITEMS = _item_scanner(
    r"member>" + _S + r"<name>(" + _TEXT + r")</name>" + _S + r"<",
    _S + r"</member>" + _S,
    r"/struct>" + _S + r"</value>" + _S + _CONTAINER_END,
    _END,
)
_ARRAY_ITEMS = _item_scanner(
    r"()", _S, r"/data>" + _S + r"</array>" + _S + r"</value>" + _S + _CONTAINER_END, _END
)
_CALL_PARAMS = _item_scanner(
    r"param>" + _S + r"()<",
    _S + r"</param>" + _S,
    r"/params>" + _S + r"</methodCall>" + _S + r"\Z()",
    _END_PARAMS,
)
_RESPONSE_PARAMS = _item_scanner(
    r"param>" + _S + r"()<",
    _S + r"</param>" + _S,
    r"/params>" + _S + r"</methodResponse>" + _S + r"\Z()",
    _END_PARAMS,
)

# No declaration, or version 1.0 with, at most, encoding UTF-8 (the text is decoded as UTF-8).
_PROLOG = (
    r"(?:<\?xml[ \t\n]+version[ \t\n]*=[ \t\n]*(?:\"1\.0\"|'1\.0')"
    r"(?:[ \t\n]+encoding[ \t\n]*=[ \t\n]*(?:\"(?i:utf-8)\"|'(?i:utf-8)'))?"
    r"[ \t\n]*\?>)?" + _S
)
# The envelopes. A first parameter that is a struct (the usual call, and the usual reply) is
# opened by the head pattern itself, which saves a match; so is a call without parameters (an
# empty <params>, as this encoder writes it, or none at all) read whole, which saves the params
# reader. Its alternative comes first: the generic one would take an empty <params> too.
_FIRST_STRUCT = r"<param>" + _S + r"<value>" + _S + r"<struct>" + _S + r"()"
_CALL_HEAD = re.compile(
    _PROLOG + r"<methodCall>" + _S + r"<methodName>" + _S + r"([A-Za-z0-9_.:/]{1,256})" + _S
    + r"</methodName>" + _S
    + r"(?:(?:<params>" + _S + r"</params>" + _S + r")?</methodCall>" + _S + r"\Z()"
    + r"|<params>" + _S + r"(?:" + _FIRST_STRUCT + r"|()))"
).match
_CALL_HEAD_NO_PARAMS = 2  # then a first struct (3) and the generic <params> (4)
_CALL_HEAD_STRUCT = 3
_CALL_END = re.compile(r"</params>" + _S + r"</methodCall>" + _S + r"\Z").match
_RESPONSE_HEAD = re.compile(
    _PROLOG + r"<methodResponse>" + _S + r"(?:<params>" + _S + r"(?:" + _FIRST_STRUCT + r"|())"
    + r"|<fault>" + _S + r"<value>" + _S + r"<struct>" + _S + r"())"
).match
_RESPONSE_HEAD_STRUCT = 1  # then the generic <params> (2) and <fault> (3)
_RESPONSE_HEAD_FAULT = 3
# The head of a struct reply exactly as this encoder writes it. Where it is followed by "<", the
# head pattern would match exactly it, opening the struct: a prefix test is a fifth of the cost.
_CANONICAL_STRUCT_REPLY = f"{_XML_HEADER}<methodResponse><params><param><value><struct>"
_CANONICAL_STRUCT_REPLY_END = len(_CANONICAL_STRUCT_REPLY)
_RESPONSE_END = re.compile(r"</params>" + _S + r"</methodResponse>" + _S + r"\Z").match
_FAULT_END = re.compile(r"</fault>" + _S + r"</methodResponse>" + _S + r"\Z").match

# How each scalar kind's text becomes its value, indexed by kind. A ValueError (DecodeError
# and binascii.Error included) means "not valid": the tree path then says why.
_CONVERT: list[Callable[[str], Value]] = [unreachable] * _STRUCT
_CONVERT[_STRING] = maybe_escaped  # (the readers inline it)
_CONVERT[_INT] = int
_CONVERT[_LONG_INT] = long_int
_CONVERT[_BOOLEAN] = "1".__eq__
_CONVERT[_DOUBLE_TEXT] = finite_float
_CONVERT[_ISO_DATETIME] = _dt.datetime.fromisoformat
_CONVERT[_DATETIME] = parse_datetime
_CONVERT[_BASE64] = _base64_text
_CONVERT[_NIL] = {}.get  # type: ignore[assignment]  # a C call that returns None
_CONVERT[_UNTYPED] = maybe_escaped

_FastCall = Callable[[bytes], CallMessage | None]
_FastResponse = Callable[[bytes], ReplyMessage | FaultMessage | None]
_Reader = Callable[[str, int, int], tuple[Value, int, int]]
_ParamsReader = Callable[[str, int, _Scan], list[Value]]


def _make_fast_decoder(limits: Limits) -> tuple[_FastCall, _FastResponse]:
    """Build the fast decoders for ``limits``: ``call(data)`` and ``response(data)``.

    Each returns the decoded message, or ``None`` when ``data`` is outside the strict subset
    the patterns read *or is not a valid message* (the tree path then raises the precise error):
    the fast path never raises for any input. ``data`` has passed the pre-parse checks (size,
    ``<value`` and markup counts); since every value the fast path reads is a literal
    ``<value>``, ``max_items`` already holds. Depth is checked here, and so is ``max_string``,
    but only in documents longer than ``max_string`` characters (no shorter one can hold a
    longer string). Values come from the same conversions as the tree path's (``int()``,
    ``float()``, the same base64 and :func:`~clusterrpc.values.parse_datetime`) applied to the
    same text, except the canonical dateTime, which :meth:`datetime.datetime.fromisoformat`
    reads alike.
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

    def readers(check: bool) -> tuple[_Reader, _ParamsReader]:
        """The struct and params readers, checking string lengths or not."""
        convert = list(_CONVERT)
        if check:
            for kind in (_STRING, _BASE64, _UNTYPED):
                convert[kind] = sized(convert[kind])
        struct_items = _STRUCT_ITEMS
        array_items = _ARRAY_ITEMS
        unescape = unescape_text

        def struct(text: str, pos: int, depth: int) -> tuple[Value, int, int]:
            """The struct whose members start at ``pos``, at ``depth``: the struct, where it
            ends, and what ended with it (_END_MEMBER, _END_PARAM or _END)."""
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
                    return result, match.end(), match.lastindex  # type: ignore[return-value]
                if "&" in key:
                    key = unescape(key)
                if check and len(key) > max_string:
                    raise GiveUp
                kind: int = match.lastindex  # type: ignore[assignment]
                if kind == _STRING and not check:
                    item = match[_STRING]
                    if "&" in item:
                        item = unescape(item)
                elif kind < _STRUCT:
                    item = convert[kind](match[kind])
                else:
                    item, pos, ended = (struct if kind == _STRUCT else array)(
                        text, match.end(), depth + 1
                    )
                    if ended != _END_MEMBER:
                        raise GiveUp
                    next_item = struct_items(text, pos).match
                result[key] = item

        def array(text: str, pos: int, depth: int) -> tuple[Value, int, int]:
            """The array whose elements start at ``pos``, at ``depth``: as :func:`struct`."""
            if depth >= max_depth:
                raise GiveUp
            result: list[Value] = []
            append = result.append
            item: Value
            next_item = array_items(text, pos).match
            while True:
                match = next_item()
                if match is None:
                    raise GiveUp
                kind: int = match.lastindex  # type: ignore[assignment]
                if kind == _STRING and not check:
                    item = match[_STRING]
                    if "&" in item:
                        item = unescape(item)
                elif kind < _STRUCT:
                    item = convert[kind](match[kind])
                elif kind > _ARRAY:  # the end of the array
                    return result, match.end(), kind
                else:
                    item, pos, ended = (struct if kind == _STRUCT else array)(
                        text, match.end(), depth + 1
                    )
                    if ended != _END:
                        raise GiveUp
                    next_item = array_items(text, pos).match
                append(item)

        def params(text: str, pos: int, items: _Scan) -> list[Value]:
            """The ``<param>`` values that start at ``pos``, to the end of the document."""
            result: list[Value] = []
            item: Value
            next_item = items(text, pos).match
            while True:
                match = next_item()
                if match is None:
                    raise GiveUp
                kind: int = match.lastindex  # type: ignore[assignment]
                if kind < _STRUCT:
                    item = convert[kind](match[kind])
                elif kind == _END_PARAMS:
                    return result
                else:
                    item, pos, ended = (struct if kind == _STRUCT else array)(
                        text, match.end(), 0
                    )
                    if ended != _END_PARAM:
                        raise GiveUp
                    next_item = items(text, pos).match
                result.append(item)

        return struct, params

    short_struct, short_params = readers(False)
    long_struct, long_params = readers(True)

    def call(data: bytes) -> CallMessage | None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        head = _CALL_HEAD(text)
        if head is None:
            return None
        method = head[1]
        opened = head.lastindex
        if opened == _CALL_HEAD_NO_PARAMS:
            return CallMessage(method, ())
        long = len(text) > max_string
        try:
            if opened == _CALL_HEAD_STRUCT:
                first, pos, ended = (long_struct if long else short_struct)(text, head.end(), 0)
                if ended != _END_PARAM:
                    return None
                if _CALL_END(text, pos) is not None:
                    return CallMessage(method, (first,))
                values = [first]
                values += (long_params if long else short_params)(text, pos, _CALL_PARAMS)
            else:
                values = (long_params if long else short_params)(text, head.end(), _CALL_PARAMS)
        except (GiveUp, ValueError, RecursionError):
            return None
        return CallMessage(method, tuple(values))

    def response(data: bytes) -> ReplyMessage | FaultMessage | None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        opened: int | None
        if (text.startswith(_CANONICAL_STRUCT_REPLY)
                and text[_CANONICAL_STRUCT_REPLY_END:_CANONICAL_STRUCT_REPLY_END + 1] == "<"):
            opened, start = _RESPONSE_HEAD_STRUCT, _CANONICAL_STRUCT_REPLY_END
        else:
            head = _RESPONSE_HEAD(text)
            if head is None:
                return None
            opened, start = head.lastindex, head.end()
        long = len(text) > max_string
        try:
            if opened == _RESPONSE_HEAD_STRUCT:
                value, pos, ended = (long_struct if long else short_struct)(text, start, 0)
                if ended != _END_PARAM or _RESPONSE_END(text, pos) is None:
                    return None
                return ReplyMessage(value)
            if opened != _RESPONSE_HEAD_FAULT:
                values = (long_params if long else short_params)(text, start, _RESPONSE_PARAMS)
                return ReplyMessage(values[0]) if len(values) == 1 else None
            fault, pos, ended = (long_struct if long else short_struct)(text, start, 0)
        except (GiveUp, ValueError, RecursionError):
            return None
        if ended != _END or _FAULT_END(text, pos) is None:
            return None
        code = fault.get("faultCode")  # type: ignore[union-attr]
        message = fault.get("faultString")  # type: ignore[union-attr]
        if len(fault) != 2 or type(code) is not int or type(message) is not str:  # type: ignore[arg-type]
            return None
        return FaultMessage(code, message)

    return call, response
