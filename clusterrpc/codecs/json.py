"""The ``json`` codec (wire id 3): the three messages as compact UTF-8 JSON (RFC 8259).

A call is ``{"method":"election.vote","params":[...]}``, a reply ``{"result":VALUE}`` and a fault
``{"fault":{"code":-32601,"message":"..."}}``. Values map onto JSON directly where JSON is exact
(null, booleans, numbers, strings, arrays, objects); what JSON cannot say exactly travels as a
*tagged object*, an object with exactly one key that starts with ``$``:
``{"$bytes":"<base64>"}``, ``{"$datetime":"<ISO 8601>"}``, and ``{"$struct":{...}}`` for a struct
whose only key starts with ``$`` (which would otherwise read as a tag). ``spec/codec-json.md``
is the normative description; ``spec/vectors/codecs/json/`` has byte-exact examples.

Encoding is one recursive walk that dispatches on the exact type, checks the limits inline and
builds the JSON-able tree that the standard library's C encoder then writes; anything unusual
(subclasses, bad values, limits) falls to :func:`clusterrpc.values.check_value`, which finds and
names the offending place. Decoding checks the bytes cheaply, parses with the standard library's
C scanner (duplicate keys and the non-standard ``NaN``/``Infinity`` refused) and then walks the
tree once, checking every rule of the value model and turning tags into values.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import json as _json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NoReturn

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
from clusterrpc.errors import DecodeError, EncodeError, FaultCode, LimitExceededError
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

__all__ = ["JsonCodec"]

BYTES_TAG = "$bytes"
DATETIME_TAG = "$datetime"
STRUCT_TAG = "$struct"

_SECOND = _dt.timedelta(seconds=1)
_BOM = b"\xef\xbb\xbf"
# A JSON string once its escaped backslashes and escaped quotes are gone (see _structural_commas).
# The closing quote is optional so that a match never fails: no rescans, linear time.
_BARE_STRING = re.compile(rb'"[^"]*"?')


class _Unusual(Exception):
    """Raised inside the fast encoder to hand the value to the precise slow path."""


# convert(value, depth, items) -> JSON-able tree; items[0] counts values towards max_items.
_Convert = Callable[[Any, int, list[int]], Any]
# walk(node, depth, budget) -> value; budget[0] is what is left of max_items.
_Walk = Callable[[Any, int, list[int]], Value]


def _make_converter(limits: Limits) -> _Convert:
    """Build the fast encoder for ``limits``.

    ``convert(value, depth, items)`` returns the tree of ``dict``/``list``/``str``/``int``/
    ``float``/``bool``/``None`` that :mod:`json` writes for ``value``, and adds to ``items[0]``
    the number of values inside every container it meets (the caller counts the top-level values
    and compares the total with ``limits.max_items``). It raises :class:`_Unusual` for anything
    outside the model or over ``max_depth``/``max_string``; the caller then asks
    :func:`~clusterrpc.values.check_value` for a precise error. It is a closure so that the hot
    loop reads limits from local cells, not attributes.
    """
    max_depth = limits.max_depth
    max_string = limits.max_string
    invalid_char = INVALID_XML_CHAR.search
    b2a_base64 = binascii.b2a_base64

    def text(value: str) -> str:
        # isprintable() is a cheap first test; the exact XML 1.0 test runs only when it fails
        # (tabs, newlines, non-BMP characters and the truly invalid ones).
        if len(value) > max_string or (
            not value.isprintable() and invalid_char(value) is not None
        ):
            raise _Unusual
        return value

    def binary(value: bytes | bytearray) -> dict[str, str]:
        if len(value) > max_string:
            raise _Unusual
        return {BYTES_TAG: b2a_base64(value, newline=False).decode("ascii")}

    def convert(value: Any, depth: int, items: list[int]) -> Any:
        kind = type(value)
        if kind is str:
            if len(value) <= max_string and value.isprintable():  # text(), inlined: most strings
                return value
            return text(value)
        if kind is int:
            if not INT64_MIN <= value <= INT64_MAX:
                raise _Unusual
            return value
        if kind is dict:
            if depth >= max_depth:
                raise _Unusual
            items[0] += len(value)
            struct = {}
            for raw_key, element in value.items():
                key = raw_key
                if type(key) is not str:
                    if not isinstance(key, str):
                        raise _Unusual
                    key = str.__str__(key)  # a str subclass (StrEnum …) travels as its value
                if len(key) > max_string or not key.isprintable():
                    text(key)
                struct[key] = convert(element, depth + 1, items)
            if len(struct) == 1 and next(iter(struct)).startswith("$"):
                return {STRUCT_TAG: struct}
            return struct
        if kind is list or kind is tuple:
            if depth >= max_depth:
                raise _Unusual
            items[0] += len(value)
            return [convert(element, depth + 1, items) for element in value]
        if kind is bool or value is None:
            return value
        if kind is float:
            if not math.isfinite(value):
                raise _Unusual
            return value
        if kind is bytes or kind is bytearray:
            return binary(value)
        if kind is memoryview:
            try:
                # tobytes() flattens any shape and format; a released view refuses.
                return binary(value.tobytes())
            except ValueError:
                raise _Unusual from None
        if kind is _dt.datetime:
            offset = value.utcoffset()
            if offset is not None and offset % _SECOND:
                raise _Unusual
            return {DATETIME_TAG: format_datetime(value)}
        base = as_base_type(value)
        if base is None:
            raise _Unusual
        return convert(base, depth, items)

    return convert


# -- decoding helpers: JSON parsing ----------------------------------------------------------


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: build the object, refusing duplicate member names.

    RFC 8259 leaves duplicates to the implementation; parsers disagree on which one wins, so a
    message with duplicates could mean different things to different peers.
    """
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise invalid_message(f"duplicate object member name {key[:40]!r}")
            seen.add(key)
    return result


def _refuse_constant(name: str) -> NoReturn:
    """``parse_constant``: ``NaN``, ``Infinity`` and ``-Infinity`` are not JSON."""
    raise DecodeError(f"{name} is not a JSON value")


# Shared by every codec and thread, as json.loads shares its default decoder: the C scanner keeps
# nothing between documents but a cache for interning member names, which it clears after each.
_DECODER = _json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_refuse_constant)


def _structural_commas(data: bytes) -> int:
    """Count the commas of ``data`` that are outside JSON strings, in linear time.

    Escaped backslashes are removed first, then escaped quotes (left to right, exactly as a
    JSON string's escapes pair up), so that every remaining ``"`` opens or closes a string.
    The result is only meaningful for well-formed JSON; for anything else it merely has to be
    cheap, since the parser refuses such input anyway.
    """
    bare = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    return _BARE_STRING.sub(b"", bare).count(b",")





def _json_type(node: object) -> str:
    """The JSON name of a parsed node, for error messages."""
    if isinstance(node, bool):
        return "a boolean"
    if isinstance(node, int | float):
        return "a number"
    if isinstance(node, str):
        return "a string"
    if isinstance(node, list):
        return "an array"
    if isinstance(node, dict):
        return "an object"
    return "null"


# -- decoding helpers: the value walk --------------------------------------------------------


def _make_walker(limits: Limits) -> tuple[_Walk, Callable[[str], str]]:
    """Build the value walk for ``limits``: ``(walk, text)``.

    ``walk(node, depth, budget)`` turns one parsed JSON node into a value: it checks ints
    (64 bits), floats (finite), strings and struct keys (length, XML 1.0 characters), nesting
    depth, and spends ``budget[0]`` (what is left of ``max_items``) on the elements of every
    container; tags become bytes, datetimes and structs. ``text(string)`` is the string check.
    Both raise :class:`DecodeError` or :class:`LimitExceededError`. Stateless between messages
    (the budget is a per-message cell), so one walker serves every decode, from any thread.
    """
    max_depth = limits.max_depth
    max_string = limits.max_string
    max_items = limits.max_items
    invalid_char = INVALID_XML_CHAR.search
    a2b_base64 = binascii.a2b_base64

    def text(string: str) -> str:
        if len(string) > max_string:
            raise string_too_long(limits)
        if not string.isprintable():
            bad = invalid_char(string)
            if bad is not None:
                raise invalid_message(
                    f"string contains {bad.group()!r}, a character that XML 1.0 cannot carry"
                )
        return string

    def spend(budget: list[int], count: int) -> None:
        budget[0] -= count
        if budget[0] < 0:
            raise LimitExceededError(f"more than max_items={max_items} values in one message")

    def struct(node: dict[str, Any], depth: int, budget: list[int]) -> dict[str, Value]:
        if depth >= max_depth:
            raise nesting_too_deep(limits)
        spend(budget, len(node))
        result: dict[str, Value] = {}
        for key, item in node.items():
            if len(key) > max_string or not key.isprintable():  # the common case inlined
                text(key)
            result[key] = walk(item, depth + 1, budget)
        return result

    def tagged(tag: str, inner: Any, depth: int, budget: list[int]) -> Value:
        if tag == BYTES_TAG:
            if type(inner) is not str:
                raise invalid_message(f"{BYTES_TAG} holds {_json_type(inner)}, not a base64 string")
            try:
                data = a2b_base64(inner, strict_mode=True)
            except ValueError as error:  # binascii.Error, or a non-ASCII string
                raise invalid_message(f"invalid base64 in {BYTES_TAG}: {error}") from None
            if len(data) > max_string:
                raise LimitExceededError(f"bytes longer than max_string={max_string}")
            return data
        if tag == DATETIME_TAG:
            if type(inner) is not str:
                raise invalid_message(f"{DATETIME_TAG} holds {_json_type(inner)}, not a string")
            return parse_datetime(inner)
        if tag == STRUCT_TAG:
            if type(inner) is not dict:
                raise invalid_message(f"{STRUCT_TAG} holds {_json_type(inner)}, not an object")
            return struct(inner, depth, budget)
        raise invalid_message(f"unknown tag {tag[:40]!r}: an object whose only key starts with $")

    def walk(node: Any, depth: int, budget: list[int]) -> Value:
        kind = type(node)
        if kind is str:
            if len(node) <= max_string and node.isprintable():  # the common case inlined
                return node  # type: ignore[no-any-return]
            return text(node)
        if kind is int:
            if not INT64_MIN <= node <= INT64_MAX:
                raise invalid_message(f"integer {str(node)[:40]} does not fit in 64 bits")
            return node  # type: ignore[no-any-return]
        if kind is list:
            if depth >= max_depth:
                raise nesting_too_deep(limits)
            spend(budget, len(node))
            return [walk(item, depth + 1, budget) for item in node]
        if kind is dict:
            if len(node) == 1:
                ((key, inner),) = node.items()
                if key.startswith("$"):
                    return tagged(key, inner, depth, budget)
            return struct(node, depth, budget)
        if kind is float:
            if not math.isfinite(node):
                raise invalid_message("number out of the range of a double")
            return node  # type: ignore[no-any-return]
        return node  # type: ignore[no-any-return]  # true, false, null

    return walk, text


class JsonCodec(Codec):
    """JSON (``application/json``), wire id 3.

    Readable by any JSON library, with tagged objects for bytes, datetimes and the rare struct
    that would read as a tag (``spec/codec-json.md``). Construct with
    ``JsonCodec(limits=Limits(...))``.
    """

    name: ClassVar[str] = "json"
    codec_id: ClassVar[int] = 3
    media_type: ClassVar[str] = "application/json"

    __slots__ = ("_convert", "_encoder", "_text", "_walk")

    def __init__(self, *, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(limits=limits)
        self._convert = _make_converter(limits)
        self._walk, self._text = _make_walker(limits)
        # The converted tree is acyclic and holds only exact JSON types, so the circular-
        # reference check would only cost time.
        self._encoder = _json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, check_circular=False, separators=(",", ":")
        )

    # -- encoding ----------------------------------------------------------------------------

    def _convert_all(self, values: Sequence[Value], root: str) -> list[Any]:
        """Convert ``values`` (the top-level values of one message) or raise EncodeError."""
        items = [len(values)]
        convert = self._convert
        try:
            converted = [convert(value, 0, items) for value in values]
        except _Unusual:
            self.explain_encode_failure(values, root)
        except RecursionError:  # only when max_depth is near the interpreter's limit
            raise EncodeError("value nested too deeply to encode") from None
        if items[0] > self.limits.max_items:
            self.explain_encode_failure(values, root)
        return converted

    def _dump(self, message: dict[str, Any]) -> bytes:
        try:
            text = self._encoder.encode(message)
        except RecursionError:  # only when max_depth is near the interpreter's limit
            raise EncodeError("value nested too deeply to encode") from None
        return self.check_encoded_size(text.encode("utf-8"))

    def encode_call(self, method: str, params: Sequence[Value]) -> bytes:
        """Encode ``{"method":…,"params":[…]}``; raises :class:`EncodeError` for bad names and
        values."""
        check_method_name(method)
        if not isinstance(params, list | tuple):
            raise EncodeError(f"params must be a list or tuple, not {type(params).__name__}")
        return self._dump({"method": method, "params": self._convert_all(params, "params[{}]")})

    def encode_reply(self, value: Value) -> bytes:
        """Encode ``{"result":…}``; raises :class:`EncodeError` for values it cannot carry."""
        (result,) = self._convert_all((value,), "value")
        return self._dump({"result": result})

    def encode_fault(self, code: int, message: str) -> bytes:
        """Encode ``{"fault":{"code":…,"message":…}}``.

        The message obeys the rules of any string (``max_string``, XML 1.0 characters).
        """
        code, message = check_fault(code, message)
        (text,) = self._convert_all((message,), "fault.message")
        return self._dump({"fault": {"code": code, "message": text}})

    # -- decoding ----------------------------------------------------------------------------

    def _load(self, data: bytes) -> dict[str, Any]:
        """Check and parse ``data`` into the top-level JSON object of a message."""
        self.check_size(data)
        raw = bytes(data)
        if raw.startswith(_BOM):
            raise DecodeError("a JSON message must not start with a byte order mark")
        # Every value takes at least one byte, and a well-formed message has at most one comma
        # more than it has values; so only bodies over max_items + 1 bytes can hold too many,
        # and only those with that many commas anywhere need the exact (linear) count. Refusing
        # them here spares the parser's allocations (~20 bytes of objects per input byte).
        budget = self.limits.max_items + 1
        if len(raw) > budget and raw.count(b",") > budget and _structural_commas(raw) > budget:
            raise LimitExceededError(
                f"more than max_items={self.limits.max_items} values in one message"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DecodeError(
                f"message is not UTF-8: {error}", fault_code=FaultCode.INVALID_CHARACTER
            ) from None
        try:
            document = _DECODER.decode(text)
        except DecodeError:
            raise
        except RecursionError:
            # The C scanner stops at the interpreter's recursion limit (about 1000 levels),
            # long before a deep input costs much; max_depth is checked by the walk below.
            raise LimitExceededError("JSON nested too deeply to parse") from None
        except ValueError as error:  # JSONDecodeError, or an integer with too many digits
            raise DecodeError(f"not well-formed JSON: {error}") from None
        if type(document) is not dict:
            raise invalid_message(f"a message must be a JSON object, not {_json_type(document)}")
        return document

    def _values(self, nodes: list[Any]) -> list[Value]:
        """Walk the top-level values of one message (each counts towards max_items)."""
        budget = [self.limits.max_items - len(nodes)]
        if budget[0] < 0:
            raise LimitExceededError(
                f"more than max_items={self.limits.max_items} values in one message"
            )
        walk = self._walk
        try:
            return [walk(node, 0, budget) for node in nodes]
        except RecursionError:  # only when max_depth is near the interpreter's limit
            raise LimitExceededError("JSON nested too deeply to decode") from None

    def decode_call(self, data: bytes) -> CallMessage:
        """Decode ``{"method":…,"params":[…]}`` (members in any order, no others).

        Raises :class:`DecodeError` (``PARSE_ERROR`` for bytes that are not well-formed JSON,
        ``INVALID_CHARACTER`` for bytes that are not UTF-8, ``INVALID_REQUEST`` for JSON that is
        not a valid call) or :class:`LimitExceededError`.
        """
        document = self._load(data)
        if document.keys() != {"method", "params"}:
            raise invalid_message(
                'a call must be an object with exactly the members "method" and "params"'
            )
        method = check_method_name(document["method"], decoding=True)
        params = document["params"]
        if type(params) is not list:
            raise invalid_message(f'"params" must be an array, not {_json_type(params)}')
        return CallMessage(method, tuple(self._values(params)))

    def decode_response(self, data: bytes) -> ReplyMessage | FaultMessage:
        """Decode ``{"result":…}`` or ``{"fault":{"code":…,"message":…}}``.

        Raises :class:`DecodeError` or :class:`LimitExceededError`, as :meth:`decode_call`.
        The fault code must be an integer of 32 bits, as :meth:`encode_fault` requires.
        """
        document = self._load(data)
        if len(document) == 1 and "result" in document:
            return ReplyMessage(self._values([document["result"]])[0])
        if len(document) == 1 and "fault" in document:
            fault = document["fault"]
            if type(fault) is not dict or fault.keys() != {"code", "message"}:
                raise invalid_message(
                    '"fault" must be an object with exactly the members "code" and "message"'
                )
            code = fault["code"]
            message = fault["message"]
            if type(code) is not int or not INT32_MIN <= code <= INT32_MAX:
                raise invalid_message("fault code must be an integer of 32 bits")
            if type(message) is not str:
                raise invalid_message(f"fault message must be a string, not {_json_type(message)}")
            return FaultMessage(code, self._text(message))
        raise invalid_message(
            'a response must be an object with exactly one member, "result" or "fault"'
        )
