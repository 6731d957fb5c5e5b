"""Tests of the ``compact`` codec: golden vectors, exact round trips, strict decoding, limits.

The format is specified in ``spec/codec-compact.md``; the byte-exact vectors are in
``spec/vectors/codecs/compact/``.
"""

from __future__ import annotations

import collections
import datetime as dt
import enum
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clusterrpc.codecs.base import CallMessage, FaultMessage, ReplyMessage
from clusterrpc.codecs.compact import CompactCodec
from clusterrpc.codecs.registry import get_codec
from clusterrpc.errors import DecodeError, EncodeError, FaultCode, LimitExceededError
from clusterrpc.values import INT64_MAX, INT64_MIN, Limits
from tests.strategies import method_names, same, texts, values
from tests.vectors import CODEC_VECTORS, CodecCase, codec_cases

CODEC = CompactCodec()
CASES = codec_cases("compact")
VALID = [case for case in CASES if not case.kind.startswith("invalid-")]
INVALID = [case for case in CASES if case.kind.startswith("invalid-")]
ENCODABLE = [case for case in VALID if case.direction == "both"]
ERRORS = {"DecodeError": DecodeError, "LimitExceededError": LimitExceededError}

PROPERTY = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def codec_for(case: CodecCase) -> CompactCodec:
    return CompactCodec(limits=case.limits) if case.limits else CODEC


def decode(codec: CompactCodec, kind: str, body: bytes) -> Any:
    if kind.endswith("call"):
        return codec.decode_call(body)
    return codec.decode_response(body)


def encode(codec: CompactCodec, message: CallMessage | ReplyMessage | FaultMessage) -> bytes:
    if isinstance(message, CallMessage):
        return codec.encode_call(message.method, list(message.params))
    if isinstance(message, ReplyMessage):
        return codec.encode_reply(message.value)
    return codec.encode_fault(message.code, message.message)


# -- identity ------------------------------------------------------------------------------


def test_identity_and_registration() -> None:
    assert (CompactCodec.name, CompactCodec.codec_id) == ("compact", 2)
    assert CompactCodec.media_type == "application/x-clusterrpc-compact+xml"
    assert type(get_codec("compact")) is CompactCodec
    assert type(get_codec(2)) is CompactCodec


def test_limits_are_configuration() -> None:
    limits = Limits(max_depth=3)
    assert CompactCodec(limits=limits).limits is limits
    assert repr(CODEC) == "<CompactCodec name='compact' id=2>"


# -- golden vectors ------------------------------------------------------------------------


def test_vector_inventory() -> None:
    """The vector set covers what spec/vectors/README.md promises, and no body is orphaned."""
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))
    assert {case.kind for case in VALID} == {"call", "reply", "fault"}
    assert {case.kind for case in INVALID} == {"invalid-call", "invalid-response"}
    assert len(ENCODABLE) >= 12
    assert len(INVALID) >= 8
    assert any(case.limits for case in INVALID)
    folder = CODEC_VECTORS / "compact"
    bodies = {path.name for path in folder.iterdir() if path.suffix == ".xml"}
    assert bodies == {f"{name}.xml" for name in names}


@pytest.mark.parametrize("case", VALID, ids=str)
def test_vector_decodes(case: CodecCase) -> None:
    codec = codec_for(case)
    if case.kind == "call":
        call = codec.decode_call(case.body)
        assert call.method == case.method
        assert case.params is not None
        assert same(list(call.params), case.params)
    elif case.kind == "reply":
        reply = codec.decode_response(case.body)
        assert isinstance(reply, ReplyMessage)
        assert same(reply.value, case.value)
    else:
        fault = codec.decode_response(case.body)
        assert fault == FaultMessage(case.code, case.message)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", ENCODABLE, ids=str)
def test_vector_encodes_exactly(case: CodecCase) -> None:
    codec = codec_for(case)
    if case.kind == "call":
        assert case.method is not None
        assert case.params is not None
        body = codec.encode_call(case.method, case.params)
    elif case.kind == "reply":
        body = codec.encode_reply(case.value)
    else:
        body = codec.encode_fault(case.code, case.message)  # type: ignore[arg-type]
    assert body == case.body


@pytest.mark.parametrize("case", [c for c in VALID if c.direction == "decode"], ids=str)
def test_decode_only_vectors_reencode_canonically(case: CodecCase) -> None:
    """Hand-written spellings decode to values whose canonical form decodes the same."""
    codec = codec_for(case)
    message = decode(codec, case.kind, case.body)
    canonical = encode(codec, message)
    assert canonical != case.body
    again = decode(codec, case.kind, canonical)
    if isinstance(message, CallMessage):
        assert again.method == message.method
        assert same(list(again.params), list(message.params))
    else:
        assert same(again.value, message.value)


@pytest.mark.parametrize("case", INVALID, ids=str)
def test_invalid_vector_is_refused(case: CodecCase) -> None:
    assert case.error is not None
    with pytest.raises(DecodeError) as caught:
        decode(codec_for(case), case.kind, case.body)
    # Exactly the named class: a structural error must not pass as a limit, nor the reverse.
    assert type(caught.value) is ERRORS[case.error]


@pytest.mark.parametrize(
    ("name", "fault_code"),
    [
        ("invalid-not-well-formed", FaultCode.PARSE_ERROR),
        ("invalid-dtd-entity-expansion", FaultCode.PARSE_ERROR),
        ("invalid-undefined-entity", FaultCode.PARSE_ERROR),
        ("invalid-unknown-type", FaultCode.INVALID_REQUEST),
        ("invalid-int-underscore", FaultCode.INVALID_REQUEST),
        ("invalid-duplicate-key", FaultCode.INVALID_REQUEST),
        ("invalid-datetime-offset-24h", FaultCode.INVALID_REQUEST),
        ("invalid-method-name", FaultCode.INVALID_REQUEST),
        ("invalid-root-methodcall", FaultCode.INVALID_REQUEST),
    ],
)
def test_decode_errors_carry_the_right_fault_code(name: str, fault_code: int) -> None:
    (case,) = [case for case in INVALID if case.name == name]
    with pytest.raises(DecodeError) as caught:
        decode(codec_for(case), case.kind, case.body)
    assert caught.value.fault_code == fault_code


# -- exact round trips ---------------------------------------------------------------------


@PROPERTY
@given(method_names, st.lists(values(), max_size=5))
def test_call_round_trips_exactly(method: str, params: list[Any]) -> None:
    body = CODEC.encode_call(method, params)
    call = CODEC.decode_call(body)
    assert call.method == method
    assert same(list(call.params), params)
    assert CODEC.encode_call(call.method, call.params) == body  # one value, one spelling


@PROPERTY
@given(values())
@example(-0.0)
@example("")
@example(" \t\r\n \r\r\n ")
@example([[], {}, ""])
@example(dt.datetime(2024, 1, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(seconds=-30))))
def test_reply_round_trips_exactly(value: Any) -> None:
    body = CODEC.encode_reply(value)
    reply = CODEC.decode_response(body)
    assert isinstance(reply, ReplyMessage)
    assert same(reply.value, value)
    assert CODEC.encode_reply(reply.value) == body


@PROPERTY
@given(st.dictionaries(texts, values(), max_size=6))
@example({"": 1, '"': 2, "\t\n\r": 3, " x ": 4, "&<>'": 5})
def test_struct_keys_and_members_round_trip_exactly(struct: dict[str, Any]) -> None:
    reply = CODEC.decode_response(CODEC.encode_reply(struct))
    assert isinstance(reply, ReplyMessage)
    assert same(reply.value, struct)
    assert isinstance(reply.value, dict)
    assert list(reply.value) == list(struct)  # member order travels too
    call = CODEC.decode_call(CODEC.encode_call("m", [struct, [struct]]))
    assert same(list(call.params), [struct, [struct]])


@PROPERTY
@given(st.integers(min_value=-(2**31), max_value=2**31 - 1), texts)
def test_fault_round_trips_exactly(code: int, message: str) -> None:
    assert CODEC.decode_response(CODEC.encode_fault(code, message)) == FaultMessage(code, message)


def test_encoding_is_compact_utf8_without_declaration() -> None:
    body = CODEC.encode_call("election.vote", ["n\u00f6de", 7])
    assert body == '<CALL m="election.vote"><LI>n\u00f6de</LI><LI t="i">7</LI></CALL>'.encode()
    assert CODEC.encode_reply(None) == b'<REPLY><LI t="n"/></REPLY>'
    assert CODEC.encode_fault(FaultCode.METHOD_NOT_FOUND, "") == b'<FAULT code="-32601"/>'


def test_subclasses_travel_as_their_base_type() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    class Colour(str, enum.Enum):  # noqa: UP042 -- str() of this mixin is "Colour.RED"
        RED = "red"

    class Mode(enum.StrEnum):
        FAST = "fast"

    class Stamp(dt.datetime):
        pass

    class Ratio(float):
        pass

    class Buffer(bytearray):
        pass

    params: list[Any] = [
        Level.HIGH,
        Colour.RED,
        Mode.FAST,
        collections.OrderedDict([(Colour.RED, Level.HIGH)]),
        (1, (2,)),
        bytearray(b"ab"),
        Buffer(b"cd"),
        memoryview(b"abcdef")[::2],  # not contiguous
        Stamp(2024, 1, 2, 3, 4, 5),
        Ratio(0.5),
    ]
    call = CODEC.decode_call(CODEC.encode_call("m", params))
    expected = [
        3, "red", "fast", {"red": 3}, [1, [2]], b"ab", b"cd", b"ace",
        dt.datetime(2024, 1, 2, 3, 4, 5), 0.5,
    ]
    assert same(list(call.params), expected)


def test_decode_accepts_bytes_like_input() -> None:
    body = CODEC.encode_call("m", [1])
    assert CODEC.decode_call(bytearray(body)) == CODEC.decode_call(memoryview(body))  # type: ignore[arg-type]


# -- strictness ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        '<LI t="i">1.0</LI>',
        '<LI t="i">0x10</LI>',
        '<LI t="i">\uff11</LI>',  # fullwidth digit one
        '<LI t="i">1 </LI>',
        '<LI t="f">1.</LI>',
        '<LI t="f">+1.5</LI>',
        '<LI t="f">1_0.5</LI>',
        '<LI t="f">-inf</LI>',
        '<LI t="f">NaN</LI>',
        '<LI t="f"> 1.5</LI>',
        '<LI t="f">\u0661.5</LI>',
        '<LI t="b">yes</LI>',
        '<LI t="b"/>',
        '<LI t="n">0</LI>',
        '<LI t="x">3q2+7w=</LI>',
        '<LI t="x">3q2-7w==</LI>',
        '<LI t="x">\u00e93q2+7w==</LI>',
        '<LI t="x">3q2+7w==AAAA</LI>',
        '<LI t="d">20240131T23:59:59.25</LI>',
        '<LI t="d">20240131T23:59:59+0100</LI>',
        '<LI t="d">20240131T235959</LI>',
        '<LI t="d">20240131T24:00:00</LI>',
        '<LI t="d"> 20240131T23:59:59</LI>',
        '<LI t="s">text</LI>',
        '<LI t="i" t2="1">1</LI>',
        "<LI><L/> x</LI>",
        "<LI><AL key='k'/></LI>",
        "<LI><L><L/></L></LI>",
        "<LI><AL><AL/></AL></LI>",
        "<li>x</li>",
    ],
)
def test_strict_scalar_and_structure_rules(item: str) -> None:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode_call(f'<CALL m="m">{item}</CALL>'.encode())
    assert type(caught.value) is DecodeError
    assert caught.value.fault_code == FaultCode.INVALID_REQUEST


def test_layout_white_space_is_ignored_only_between_elements() -> None:
    body = (
        b'<CALL m="m">\n <LI> a </LI>\r\n\t<LI>\n  <L>\n    <LI t="i">1</LI>\n  </L>\n</LI>\n'
        b"</CALL>"
    )
    call = CODEC.decode_call(body)
    assert same(list(call.params), [" a ", [1]])
    with pytest.raises(DecodeError):
        CODEC.decode_call('<CALL m="m">\u00a0<LI/></CALL>'.encode())  # NBSP is not XML space


def test_integer_range_boundaries() -> None:
    for number in (INT64_MIN, INT64_MAX):
        body = f'<REPLY><LI t="i">{number}</LI></REPLY>'.encode()
        assert CODEC.decode_response(body) == ReplyMessage(number)
    for number in (INT64_MIN - 1, INT64_MAX + 1, 10**4000):
        with pytest.raises(DecodeError, match="64 bits"):
            CODEC.decode_response(f'<REPLY><LI t="i">{number}</LI></REPLY>'.encode())


# -- fuzzing: nothing but DecodeError escapes a decoder ------------------------------------


def assert_decodes_or_refuses(codec: CompactCodec, body: bytes) -> None:
    """Decoding ``body`` either fails with DecodeError, or gives values that re-encode."""
    for decoder in (codec.decode_call, codec.decode_response):
        try:
            message = decoder(body)
        except DecodeError:
            continue
        encode(codec, message)  # whatever the decoder accepts lies within the value model


@PROPERTY
@given(st.binary(max_size=400))
@example(b"")
@example(b"\xef\xbb\xbf")
@example(b"\xff\xfe<\x00")
@example(b'<?xml version="1.0" encoding="x-unknown"?><CALL m="m"/>')
@example(b'<?xml version="1.0" encoding="UTF-16"?><CALL m="m"/>')
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    assert_decodes_or_refuses(CODEC, data)


@pytest.mark.parametrize("encoding", ["shift_jis", "utf-32", "utf-7"])
def test_declared_multibyte_encoding_is_refused(encoding: str) -> None:
    body = f'<?xml version="1.0" encoding="{encoding}"?><CALL m="m"/>'.encode()
    with pytest.raises(DecodeError):
        CODEC.decode_call(body)


# Well-formed documents built from the format's own vocabulary, right and wrong: random bytes
# rarely get past the XML parser, these exercise every rule of the tree walk.
_TAGS = st.sampled_from(["LI"] * 8 + ["L", "L", "AL", "AL", "CALL", "X"])
_ATTRIBUTES = st.dictionaries(
    st.sampled_from(["t", "t", "key", "key", "m", "code", "x"]),
    st.sampled_from(["i", "f", "b", "n", "x", "d", "q", "", "k", "m.n", "1", "-0", "&#10;"]),
    max_size=2,
)
_TEXTS = st.sampled_from(
    ["", "", "", "", "", "", "1", "-0", "0.5", "1e999", "QQ==", "QR==", "20240131T23:59:59",
     "x", " ", "\n", "&amp;", "&#13;", "<![CDATA[1]]>", "<!-- c -->"]
)


def _element(tag: str, attributes: dict[str, str], text: str, children: list[str]) -> str:
    head = tag + "".join(f' {name}="{value}"' for name, value in attributes.items())
    return f"<{head}>{text}{''.join(children)}</{tag}>"


_ELEMENTS = st.recursive(
    st.builds(_element, _TAGS, _ATTRIBUTES, _TEXTS, st.just([])),
    lambda children: st.builds(
        _element, _TAGS, _ATTRIBUTES, _TEXTS, st.lists(children, max_size=4)
    ),
    max_leaves=24,
)
_DOCUMENTS = st.one_of(
    st.builds(_element, st.just("CALL"), st.just({"m": "m.n"}), st.just(""),
              st.lists(_ELEMENTS, max_size=4)),
    st.builds(_element, st.just("REPLY"), st.just({}), st.just(""),
              st.lists(_ELEMENTS, min_size=1, max_size=2)),
    st.builds(_element, st.just("FAULT"), st.just({"code": "-1"}), _TEXTS, st.just([])),
    st.builds(_element, _TAGS, _ATTRIBUTES, _TEXTS, st.lists(_ELEMENTS, max_size=4)),
)


@PROPERTY
@given(_DOCUMENTS)
@example('<CALL m="m.n"><LI><L><LI t="i">1</LI></L></LI></CALL>')
def test_fuzz_element_soup(document: str) -> None:
    assert_decodes_or_refuses(CompactCodec(limits=Limits(max_depth=3, max_items=20)),
                              document.encode())


@PROPERTY
@given(
    values(max_leaves=10),
    st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "delete"]), st.integers(0, 10**6),
                  st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_fuzz_mutated_valid_bodies(value: Any, mutations: list[tuple[str, int, int]]) -> None:
    body = bytearray(CODEC.encode_call("m.n", [value]))
    for operation, position, byte in mutations:
        index = position % (len(body) + 1)
        if operation == "insert":
            body.insert(index, byte)
        elif index < len(body):
            if operation == "flip":
                body[index] ^= byte or 1
            else:
                del body[index]
    assert_decodes_or_refuses(CODEC, bytes(body))


# -- encode errors name the offending place ------------------------------------------------


@pytest.mark.parametrize(
    ("params", "path", "reason"),
    [
        ([{"peers": [1, 2, 3, {4}]}], 'params[0]["peers"][3]', "cannot encode a set"),
        ([1, float("nan")], "params[1]", "not finite"),
        ([1, [float("-inf")]], "params[1][0]", "not finite"),
        ([2**64], "params[0]", "does not fit in 64 bits"),
        ([INT64_MIN - 1], "params[0]", "does not fit in 64 bits"),
        (["ok", "a\x00b"], "params[1]", "'\\x00' at index 1"),
        (["\ud800"], "params[0]", "XML 1.0 cannot carry"),
        (["\ufffe"], "params[0]", "XML 1.0 cannot carry"),
        ([{"k\x01": 1}], 'params[0]["k\x01"]', "struct key contains"),
        ([{"a": {1: "x"}}], 'params[0]["a"]', "struct keys must be str, not int 1"),
        ([dt.date(2024, 1, 1)], "params[0]", "cannot encode a datetime.date"),
        ([object()], "params[0]", "cannot encode an object"),
        ([1j], "params[0]", "cannot encode a complex"),
        (
            [dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(microseconds=5)))],
            "params[0]",
            "whole seconds",
        ),
    ],
)
def test_encode_errors_name_the_path(params: list[Any], path: str, reason: str) -> None:
    with pytest.raises(EncodeError) as caught:
        CODEC.encode_call("m", params)
    assert caught.value.path == path
    assert reason in str(caught.value)
    assert str(caught.value).startswith(path + ": ")


def test_encode_errors_of_replies_and_faults() -> None:
    with pytest.raises(EncodeError, match=r"^value\[0\]: cannot encode a set"):
        CODEC.encode_reply([{1}])  # type: ignore[list-item]
    with pytest.raises(EncodeError, match=r"^fault\.message: string contains '\\x00'"):
        CODEC.encode_fault(1, "bad\x00")
    with pytest.raises(EncodeError, match="32 bits"):
        CODEC.encode_fault(2**31, "x")
    with pytest.raises(EncodeError, match="must be an int"):
        CODEC.encode_fault(True, "x")
    with pytest.raises(EncodeError, match="must be a str"):
        CODEC.encode_fault(1, b"x")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["", "bad name", 'a"b', "x" * 257, None])
def test_encode_refuses_bad_method_names(method: Any) -> None:
    with pytest.raises(EncodeError) as caught:
        CODEC.encode_call(method, [])
    assert caught.value.path == "method"


def test_encode_refuses_params_that_are_not_a_sequence() -> None:
    with pytest.raises(EncodeError, match="list or tuple"):
        CODEC.encode_call("m", "abc")  # a str is a Sequence too, so only a runtime check sees it


def test_cyclic_values_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError, match="max_depth"):
        CODEC.encode_call("m", [loop])


# -- limits --------------------------------------------------------------------------------


def nested(depth: int) -> Any:
    """A value with ``depth`` containers nested (lists and structs alternating)."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("max_depth", [1, 2, 5])
def test_max_depth_on_both_sides(max_depth: int) -> None:
    codec = CompactCodec(limits=Limits(max_depth=max_depth))
    body = codec.encode_reply(nested(max_depth))
    assert same(codec.decode_response(body).value, nested(max_depth))  # type: ignore[union-attr]
    with pytest.raises(EncodeError, match="max_depth"):
        codec.encode_reply(nested(max_depth + 1))
    with pytest.raises(LimitExceededError, match="max_depth"):
        codec.decode_response(CODEC.encode_reply(nested(max_depth + 1)))


def test_max_items_on_both_sides() -> None:
    codec = CompactCodec(limits=Limits(max_items=5))
    fits: list[Any] = [1, [2, {"k": 3}]]  # 1 + (1 + 1 + (1 + 1)) = 5 values
    assert same(list(codec.decode_call(codec.encode_call("m", fits)).params), fits)
    over: list[Any] = [1, [2, {"k": 3}], None]
    with pytest.raises(EncodeError, match="max_items=5"):
        codec.encode_call("m", over)
    with pytest.raises(LimitExceededError, match="max_items=5"):
        codec.decode_call(CODEC.encode_call("m", over))


def test_max_items_is_checked_before_parsing() -> None:
    codec = CompactCodec(limits=Limits(max_items=10))
    body = b'<CALL m="m">' + b"<LI/>" * 11 + b"<unclosed>"  # refused before the parse error
    with pytest.raises(LimitExceededError):
        codec.decode_call(body)


@pytest.mark.parametrize(
    ("fits", "over"),
    [
        ("abcd", "abcde"),
        ("\U0001d11e" * 4, "\U0001d11e" * 5),  # characters, not UTF-8 bytes
        ("&&&&", "&&&&&"),  # after unescaping
        (b"abcd", b"abcde"),
        ({"abcd": 1}, {"abcde": 1}),
    ],
)
def test_max_string_on_both_sides(fits: Any, over: Any) -> None:
    codec = CompactCodec(limits=Limits(max_string=4))
    assert same(codec.decode_response(codec.encode_reply(fits)).value, fits)  # type: ignore[union-attr]
    with pytest.raises(EncodeError, match="max_string=4"):
        codec.encode_reply(over)
    with pytest.raises(LimitExceededError, match="max_string=4"):
        codec.decode_response(CODEC.encode_reply(over))


def test_max_string_applies_to_fault_messages() -> None:
    codec = CompactCodec(limits=Limits(max_string=4))
    assert codec.decode_response(codec.encode_fault(1, "abcd")) == FaultMessage(1, "abcd")
    with pytest.raises(EncodeError, match="max_string=4"):
        codec.encode_fault(1, "abcde")
    with pytest.raises(LimitExceededError, match="max_string=4"):
        codec.decode_response(CODEC.encode_fault(1, "abcde"))


def test_max_size_on_both_sides() -> None:
    body = CODEC.encode_call("m", ["x" * 100])
    exact = CompactCodec(limits=Limits(max_size=len(body)))
    assert exact.encode_call("m", ["x" * 100]) == body
    assert exact.decode_call(body).params == ("x" * 100,)
    smaller = CompactCodec(limits=Limits(max_size=len(body) - 1))
    with pytest.raises(EncodeError, match="max_size"):
        smaller.encode_call("m", ["x" * 100])
    with pytest.raises(LimitExceededError, match="max_size"):
        smaller.decode_call(body)
    with pytest.raises(EncodeError, match="max_size"):
        CompactCodec(limits=Limits(max_size=10)).encode_call("a.long.method.name", [])
    with pytest.raises(EncodeError, match="max_size"):
        CompactCodec(limits=Limits(max_size=10)).encode_fault(1, "a long message")


def test_nesting_beyond_the_interpreter_stack_is_refused_cleanly() -> None:
    """A max_depth larger than Python can recurse must still give our errors, not RecursionError."""
    depth = sys.getrecursionlimit() + 100
    codec = CompactCodec(limits=Limits(max_depth=depth * 2))
    body = b'<CALL m="m">' + b"<LI><L>" * depth + b"</L></LI>" * depth + b"</CALL>"
    with pytest.raises(LimitExceededError, match="recursion"):
        codec.decode_call(body)
    value: Any = []
    for _ in range(depth):
        value = [value]
    with pytest.raises(EncodeError, match="recursion"):
        codec.encode_call("m", [value])
