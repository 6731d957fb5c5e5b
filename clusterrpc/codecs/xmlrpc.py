"""The ``xmlrpc`` codec (wire id 1): standard XML-RPC, the default.

Implements the whole XML-RPC specification plus the ``<nil/>`` and ``<i8>`` extensions, and reads
the Apache extension namespace's ``ex:nil``, ``ex:i1``, ``ex:i2``, ``ex:i8`` and ``ex:float``.
``ex:serializable`` and ``ex:dom`` (Java serialization, DOM fragments) are always refused.
``spec/codecs.md`` gives the exact mapping; ``spec/vectors/codecs/xmlrpc/`` has byte-exact
examples.

Encoding is a single recursive walk that dispatches on the exact type and appends string pieces;
anything unusual (subclasses, bad values, limits) falls to :func:`clusterrpc.values.check_value`,
which finds and names the offending place. Decoding parses with
:mod:`clusterrpc.codecs._safexml` (expat in C, DTDs refused) and walks the tree.
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


_EncodeFn = Callable[[object, Callable[[str], None], int], int]


def _make_encoder(limits: Limits) -> _EncodeFn:
    """Build the fast encoder for ``limits``.

    ``encode(value, append, depth)`` appends the ``<value>`` element for ``value`` and returns
    how many values it held. It raises :class:`_Unusual` for anything it does not handle
    directly (subclasses, out-of-model values, limits): the caller then asks
    :func:`~clusterrpc.values.check_value` for a precise error. It is a closure so that the hot
    loop reads limits from local cells, not attributes.
    """
    max_depth = limits.max_depth
    max_string = limits.max_string
    invalid_char = INVALID_XML_CHAR.search

    def text(value: str) -> str:
        if len(value) > max_string:
            raise _Unusual
        # isprintable() is a cheap first test; the exact XML 1.0 test runs only when it fails
        # (tabs, newlines, non-BMP characters and the truly invalid ones).
        if not value.isprintable() and invalid_char(value) is not None:
            raise _Unusual
        return escape_text(value)

    def encode(value: object, append: Callable[[str], None], depth: int) -> int:
        kind = type(value)
        if kind is str:
            append(f"<value><string>{text(value)}</string></value>")  # type: ignore[arg-type]
            return 1
        if kind is int:
            if INT32_MIN <= value <= INT32_MAX:  # type: ignore[operator]
                append(f"<value><int>{value}</int></value>")
            elif INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
                append(f"<value><i8>{value}</i8></value>")
            else:
                raise _Unusual
            return 1
        if kind is dict:
            if depth >= max_depth:
                raise _Unusual
            count = 1
            append("<value><struct>")
            for raw_key, element in value.items():  # type: ignore[attr-defined]
                key = raw_key
                if type(key) is not str:
                    if not isinstance(key, str):
                        raise _Unusual
                    key = str.__str__(key)  # a str subclass (StrEnum …) travels as its value
                append(f"<member><name>{text(key)}</name>")
                count += encode(element, append, depth + 1)
                append("</member>")
            append("</struct></value>")
            return count
        if kind is bool:
            append("<value><boolean>1</boolean></value>" if value else
                   "<value><boolean>0</boolean></value>")
            return 1
        if kind is float:
            if not math.isfinite(value):  # type: ignore[arg-type]
                raise _Unusual
            append(f"<value><double>{value!r}</double></value>")
            return 1
        if kind is list or kind is tuple:
            if depth >= max_depth:
                raise _Unusual
            count = 1
            append("<value><array><data>")
            for element in value:  # type: ignore[attr-defined]
                count += encode(element, append, depth + 1)
            append("</data></array></value>")
            return count
        if value is None:
            append("<value><nil/></value>")
            return 1
        if kind is bytes or kind is bytearray or kind is memoryview:
            if memoryview(value).nbytes > max_string:  # type: ignore[arg-type]
                raise _Unusual
            append("<value><base64>")
            append(binascii.b2a_base64(value, newline=False).decode("ascii"))  # type: ignore[arg-type]
            append("</base64></value>")
            return 1
        if kind is _dt.datetime:
            offset = value.utcoffset()  # type: ignore[attr-defined]
            if offset is not None and offset % _SECOND:
                raise _Unusual
            append("<value><dateTime.iso8601>")
            append(format_datetime(value))  # type: ignore[arg-type]
            append("</dateTime.iso8601></value>")
            return 1
        base = as_base_type(value)
        if base is None:
            raise _Unusual
        return encode(base, append, depth)

    return encode


_SECOND = _dt.timedelta(seconds=1)


class XmlRpcCodec(Codec):
    """Standard XML-RPC (``text/xml``), wire id 1.

    Byte-compatible with Python's :mod:`xmlrpc.client` and other XML-RPC implementations for the
    values they support. Construct with ``XmlRpcCodec(limits=Limits(...))``.
    """

    name: ClassVar[str] = "xmlrpc"
    codec_id: ClassVar[int] = 1
    media_type: ClassVar[str] = "text/xml"

    __slots__ = ("_encode_value", "_walker")

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits=limits)
        self._encode_value = _make_encoder(limits)
        self._walker = _Walker(limits)

    # -- encoding ----------------------------------------------------------------------------

    def _encode(
        self,
        head: str,
        values: Sequence[Value],
        root: str,
        tail: str,
        wrap: tuple[str, str],
    ) -> bytes:
        out = [head]
        append = out.append
        encode = self._encode_value
        items = 0
        try:
            for value in values:
                append(wrap[0])
                items += encode(value, append, 0)
                append(wrap[1])
        except (_Unusual, RecursionError):
            self.explain_encode_failure(values, root)
        if items > self.limits.max_items:
            self.explain_encode_failure(values, root)
        append(tail)
        return self.check_encoded_size("".join(out).encode("utf-8"))

    def encode_call(self, method: str, params: Sequence[Value]) -> bytes:
        """Encode ``<methodCall>``; raises :class:`EncodeError` for bad names and values."""
        check_method_name(method)
        if not isinstance(params, list | tuple):
            raise EncodeError(f"params must be a list or tuple, not {type(params).__name__}")
        return self._encode(
            f"{_XML_HEADER}<methodCall><methodName>{method}</methodName><params>",
            params,
            "params[{}]",
            "</params></methodCall>",
            ("<param>", "</param>"),
        )

    def encode_reply(self, value: Value) -> bytes:
        """Encode a ``<methodResponse>`` with one parameter."""
        return self._encode(
            f"{_XML_HEADER}<methodResponse><params>",
            (value,),
            "value",
            "</params></methodResponse>",
            ("<param>", "</param>"),
        )

    def encode_fault(self, code: int, message: str) -> bytes:
        """Encode a ``<methodResponse>`` holding a ``<fault>``."""
        code, message = check_fault(code, message)
        return self._encode(
            f"{_XML_HEADER}<methodResponse><fault>",
            ({"faultCode": code, "faultString": message},),
            "fault",
            "</fault></methodResponse>",
            ("", ""),
        )

    # -- decoding ----------------------------------------------------------------------------

    def _document(self, data: bytes, root_tag: str) -> Element:
        self.check_size(data)
        data = bytes(data)
        # Every value is one <value> element and that tag must appear literally (no entities
        # exist), so this C-speed count refuses over-long messages before any parsing.
        if data.count(b"<value") > self.limits.max_items:
            raise LimitExceededError(
                f"more than max_items={self.limits.max_items} values in one message"
            )
        root = parse_document(data, self.limits)
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
        root = self._document(data, "methodCall")
        if not len(root) or root[0].tag != "methodName" or len(root[0]):
            raise invalid_message("<methodCall> must start with <methodName>")
        method = check_method_name((root[0].text or "").strip(), decoding=True)
        if len(root) == 1:
            return CallMessage(method, ())
        if len(root) > 2 or root[1].tag != "params":
            raise invalid_message("<methodCall> may hold only <methodName> and <params>")
        return CallMessage(method, tuple(self._walker.params(root[1])))

    def decode_response(self, data: bytes) -> ReplyMessage | FaultMessage:
        """Decode a ``<methodResponse>``: a reply (exactly one parameter) or a fault.

        Raises :class:`DecodeError` or :class:`LimitExceededError`, as :meth:`decode_call`.
        """
        root = self._document(data, "methodResponse")
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
    text = element.text or ""
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        pass
    # Line-wrapped base64 (the standard library writes 76-character lines) is valid too.
    compact = "".join(text.split())
    try:
        return binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error as error:
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
