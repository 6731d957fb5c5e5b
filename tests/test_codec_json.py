"""Tests of the ``json`` codec: golden vectors, exact round trips, error paths, limits, fuzzing."""

from __future__ import annotations

import array
import collections
import contextlib
import datetime as dt
import enum
import json
import re
import sys
import time
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterrpc.codecs.base import CallMessage, FaultMessage, ReplyMessage
from clusterrpc.codecs.json import JsonCodec
from clusterrpc.codecs.registry import default_registry
from clusterrpc.errors import DecodeError, EncodeError, FaultCode, LimitExceededError
from clusterrpc.values import INT32_MAX, INT32_MIN, Limits
from tests.strategies import method_names, same, texts, values
from tests.vectors import SPEC, CodecCase, codec_cases

CODEC = JsonCodec()
CASES = codec_cases("json")
VALID = [case for case in CASES if not case.kind.startswith("invalid-")]
INVALID = [case for case in CASES if case.kind.startswith("invalid-")]
ERRORS = {"DecodeError": DecodeError, "LimitExceededError": LimitExceededError}

PROPERTY = settings(max_examples=300, deadline=None)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def codec_for(case: CodecCase) -> JsonCodec:
    return JsonCodec(limits=case.limits) if case.limits else CODEC


def decode(codec: JsonCodec, data: bytes) -> CallMessage | ReplyMessage | FaultMessage:
    """Decode ``data`` as whatever it claims to be (a call has a "method")."""
    if b'"method"' in data:
        return codec.decode_call(data)
    return codec.decode_response(data)


# -- golden vectors ------------------------------------------------------------------------------


def test_vectors_cover_every_kind() -> None:
    kinds = {case.kind for case in CASES}
    assert kinds == {"call", "reply", "fault", "invalid-call", "invalid-response"}
    assert len(VALID) >= 12
    assert len(INVALID) >= 8
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [c for c in VALID if c.direction == "both"], ids=str)
def test_vector_encodes_to_exact_bytes(case: CodecCase) -> None:
    codec = codec_for(case)
    if case.kind == "call":
        assert case.method is not None
        assert case.params is not None
        body = codec.encode_call(case.method, case.params)
    elif case.kind == "reply":
        body = codec.encode_reply(case.value)
    else:
        assert case.code is not None
        assert case.message is not None
        body = codec.encode_fault(case.code, case.message)
    assert body == case.body


@pytest.mark.parametrize("case", VALID, ids=str)
def test_vector_decodes_to_value(case: CodecCase) -> None:
    codec = codec_for(case)
    if case.kind == "call":
        call = codec.decode_call(case.body)
        assert call.method == case.method
        assert isinstance(call.params, tuple)
        assert same(list(call.params), case.params)
    elif case.kind == "reply":
        reply = codec.decode_response(case.body)
        assert isinstance(reply, ReplyMessage)
        assert same(reply.value, case.value)
    else:
        assert codec.decode_response(case.body) == FaultMessage(case.code, case.message)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", INVALID, ids=str)
def test_vector_is_refused(case: CodecCase) -> None:
    assert case.error is not None
    codec = codec_for(case)
    method = codec.decode_call if case.kind == "invalid-call" else codec.decode_response
    with pytest.raises(ERRORS[case.error]):
        method(case.body)


@pytest.mark.parametrize("case", [c for c in VALID if c.direction == "both"], ids=str)
def test_vector_bodies_are_compact_standard_json(case: CodecCase) -> None:
    """Our bodies are exactly what the standard library writes for the parsed document."""
    document = json.loads(case.body.decode("utf-8"))
    assert json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode() == case.body


def spec_examples() -> list[bytes]:
    """The JSON code blocks of ``spec/codec-json.md``."""
    text = (SPEC / "codec-json.md").read_text(encoding="utf-8")
    return [block.encode() for block in re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)]


def test_spec_examples_are_what_the_codec_writes() -> None:
    examples = spec_examples()
    assert len(examples) >= 8
    for example in examples:
        message = decode(CODEC, example)
        if isinstance(message, CallMessage):
            again = CODEC.encode_call(message.method, message.params)
        elif isinstance(message, ReplyMessage):
            again = CODEC.encode_reply(message.value)
        else:
            again = CODEC.encode_fault(message.code, message.message)
        if b"\n" not in example:  # the one spelled with whitespace is decode-only
            assert again == example


# -- round trips ---------------------------------------------------------------------------------

# Struct keys that read as tags, or are otherwise awkward, much more often than texts() gives them.
awkward_keys = st.one_of(
    texts,
    texts.map(lambda text: "$" + text),
    st.sampled_from(["", "$", "$bytes", "$datetime", "$struct", "$float", "$$struct"]),
)
awkward_structs = st.recursive(
    st.dictionaries(awkward_keys, values(max_leaves=5), max_size=3),
    lambda children: st.dictionaries(awkward_keys, children, max_size=3)
    | st.lists(children, max_size=3),
    max_leaves=10,
)


@PROPERTY
@given(method=method_names, params=st.lists(values(), max_size=6))
def test_call_round_trips_exactly(method: str, params: list[Any]) -> None:
    body = CODEC.encode_call(method, params)
    call = CODEC.decode_call(body)
    assert call.method == method
    assert same(list(call.params), params)
    assert CODEC.encode_call(call.method, call.params) == body  # one value, one spelling


@PROPERTY
@given(value=values())
def test_reply_round_trips_exactly(value: Any) -> None:
    body = CODEC.encode_reply(value)
    reply = CODEC.decode_response(body)
    assert isinstance(reply, ReplyMessage)
    assert same(reply.value, value)


@PROPERTY
@given(value=awkward_structs)
def test_structs_with_tag_like_keys_round_trip(value: Any) -> None:
    reply = CODEC.decode_response(CODEC.encode_reply(value))
    assert isinstance(reply, ReplyMessage)
    assert same(reply.value, value)
    call = CODEC.decode_call(CODEC.encode_call("m", [value, {"k": value}]))
    assert same(list(call.params), [value, {"k": value}])


@PROPERTY
@given(code=st.integers(INT32_MIN, INT32_MAX), message=texts)
def test_fault_round_trips(code: int, message: str) -> None:
    assert CODEC.decode_response(CODEC.encode_fault(code, message)) == FaultMessage(code, message)


@PROPERTY
@given(value=values())
def test_encoding_is_standard_json(value: Any) -> None:
    """Every body is RFC 8259 JSON that a strict parser accepts (no NaN, valid UTF-8)."""
    body = CODEC.encode_reply(value)
    json.loads(body.decode("utf-8", errors="strict"), parse_constant=pytest.fail)


def test_tags_and_escape_on_the_wire() -> None:
    body = CODEC.encode_reply(
        [b"\x00\xff", dt.datetime(2024, 1, 31, 12, 0, tzinfo=dt.UTC), {"$bytes": "x"},
         {"$bytes": "x", "y": 1}]
    )
    assert body == (
        b'{"result":[{"$bytes":"AP8="},{"$datetime":"20240131T12:00:00Z"},'
        b'{"$struct":{"$bytes":"x"}},{"$bytes":"x","y":1}]}'
    )


def test_needless_struct_wrapper_is_accepted() -> None:
    reply = CODEC.decode_response(b'{"result":{"$struct":{}}}')
    assert reply == ReplyMessage({})


def test_int_and_float_stay_distinct() -> None:
    reply = CODEC.decode_response(CODEC.encode_reply([1, 1.0, -0.0, 0, 1e16, True]))
    assert isinstance(reply, ReplyMessage)
    assert same(reply.value, [1, 1.0, -0.0, 0, 1e16, True])


def test_datetime_offsets_round_trip() -> None:
    moments: list[Any] = [
        dt.datetime(2024, 1, 31, 23, 59, 59),
        dt.datetime(2024, 1, 31, 23, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(0))),
        dt.datetime(2024, 1, 31, 23, 59, 59, 1, tzinfo=dt.timezone(dt.timedelta(hours=-9))),
        dt.datetime(2024, 1, 31, tzinfo=dt.timezone(dt.timedelta(hours=5, seconds=7))),
    ]
    reply = CODEC.decode_response(CODEC.encode_reply(moments))
    assert isinstance(reply, ReplyMessage)
    assert same(reply.value, moments)


class Level(enum.IntEnum):
    HIGH = 3


class Colour(str, enum.Enum):  # noqa: UP042 - the mixin, whose str() is not its value
    RED = "red"


class Point(NamedTuple):
    x: int
    y: float


class Stamp(dt.datetime):
    pass


class Blob(bytes):
    pass


class Ratio(float):
    def __float__(self) -> float:
        return 0.0  # never called: the data travels, not a conversion


def test_subclasses_travel_as_their_base_type() -> None:
    params: list[Any] = [
        Level.HIGH,
        Colour.RED,  # the member's data, not str(member) == "Colour.RED"
        Point(1, 2.5),
        collections.OrderedDict(a=1),
        collections.defaultdict(list, b=[]),
        Stamp(2024, 1, 31),
        Blob(b"ab"),
        bytearray(b"cd"),
        memoryview(b"ef"),
        memoryview(array.array("H", [1])),
        (1, (2,)),
        Ratio(0.25),
    ]
    call = CODEC.decode_call(CODEC.encode_call("m", params))
    expected = [
        3, "red", [1, 2.5], {"a": 1}, {"b": []}, dt.datetime(2024, 1, 31), b"ab", b"cd", b"ef",
        array.array("H", [1]).tobytes(), [1, [2]], 0.25,
    ]
    assert same(list(call.params), expected)


def test_codec_is_registered() -> None:
    assert default_registry().by_name("json") is JsonCodec
    assert default_registry().by_id(3) is JsonCodec
    assert JsonCodec.media_type == "application/json"


# -- encode errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([{"peers": [1, 2, 3, {4}]}], 'params[0]["peers"][3]: cannot encode a set'),
        ([1, {2: "x"}], "params[1]: struct keys must be str, not int 2"),
        ([[2**63]], "params[0][0]: integer 9223372036854775808 does not fit in 64 bits"),
        ([{"x": float("nan")}], 'params[0]["x"]: float nan is not finite'),
        ([float("-inf")], "params[0]: float -inf is not finite"),
        (["ok", "bad\x00"], "params[1]: string contains '\\x00' at index 3"),
        ([{"bad\ud800": 1}], "params[0][\"bad\ud800\"]: struct key contains '\\ud800'"),
        ([object()], "params[0]: cannot encode an object"),
        (
            [dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(microseconds=1)))],
            "params[0]: datetime UTC offsets must be whole seconds",
        ),
    ],
)
def test_encode_error_names_the_path(params: list[Any], message: str) -> None:
    with pytest.raises(EncodeError) as caught:
        CODEC.encode_call("m", params)
    assert str(caught.value).startswith(message)


def test_reply_and_fault_encode_errors_have_paths() -> None:
    with pytest.raises(EncodeError, match=r"^value\[1\]: cannot encode a complex"):
        CODEC.encode_reply([1, 1j])  # type: ignore[list-item]
    with pytest.raises(EncodeError, match=r"^fault\.message: string contains"):
        CODEC.encode_fault(1, "\x1b[31m")
    with pytest.raises(EncodeError, match="32 bits"):
        CODEC.encode_fault(2**31, "x")
    with pytest.raises(EncodeError, match="must be an int"):
        CODEC.encode_fault(True, "x")


@pytest.mark.parametrize("method", ["", "a b", "é", "x" * 257, 7])
def test_encode_refuses_bad_method_names(method: Any) -> None:
    with pytest.raises(EncodeError, match="invalid method name"):
        CODEC.encode_call(method, [])


def test_encode_refuses_params_that_are_not_a_sequence() -> None:
    with pytest.raises(EncodeError, match="params must be a list or tuple"):
        CODEC.encode_call("m", {"a": 1})  # type: ignore[arg-type]


def test_encode_refuses_cycles_and_released_views() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(EncodeError, match="max_depth"):
        CODEC.encode_reply(cycle)
    view = memoryview(b"x")
    view.release()
    with pytest.raises(EncodeError):
        CODEC.encode_reply(view)


# -- limits --------------------------------------------------------------------------------------


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def test_depth_limit_is_exact_both_ways() -> None:
    codec = JsonCodec(limits=Limits(max_depth=5))
    inside = codec.encode_reply(nested(5, b"leaf"))  # the tag object is no extra level
    assert same(codec.decode_response(inside).value, nested(5, b"leaf"))  # type: ignore[union-attr]
    with pytest.raises(EncodeError, match=r"max_depth=5"):
        codec.encode_reply(nested(6))
    with pytest.raises(LimitExceededError, match=r"max_depth=5"):
        codec.decode_response(CODEC.encode_reply(nested(6)))
    wrapped = nested(3, {"$x": [1]})  # a $struct wrapper is no extra level either
    assert same(codec.decode_response(codec.encode_reply(wrapped)).value, wrapped)  # type: ignore[union-attr]


def test_nesting_beyond_the_interpreter_is_refused_cleanly() -> None:
    """With max_depth raised past Python's recursion limit, errors stay Encode/DecodeError."""
    codec = JsonCodec(limits=Limits(max_depth=10**6))
    # Past the interpreter's limit whatever it is: 3.12 and later spend fewer frames per level.
    for depth in (sys.getrecursionlimit() + 500, 20_000):
        with pytest.raises(EncodeError, match="too deeply"):
            codec.encode_reply(nested(depth))
        with pytest.raises(LimitExceededError, match="too deeply"):
            codec.decode_response(b'{"result":' + b"[" * depth + b"]" * depth + b"}")


def test_items_limit_counts_every_value() -> None:
    codec = JsonCodec(limits=Limits(max_items=4))
    params: list[Any] = [1, [2, {"k": 3}]]  # 1, [..], 2, {..}, 3
    with pytest.raises(EncodeError, match="max_items=4"):
        codec.encode_call("m", params)
    with pytest.raises(LimitExceededError, match="max_items=4"):
        codec.decode_call(CODEC.encode_call("m", params))
    at_limit: list[Any] = [1, [{"k": b""}]]  # 1, [..], {..}, b"": a tag is one value
    assert same(list(codec.decode_call(codec.encode_call("m", at_limit)).params), at_limit)
    with pytest.raises(LimitExceededError):
        codec.decode_call(CODEC.encode_call("m", [0] * 5))


def test_string_limit_counts_characters_keys_and_bytes() -> None:
    codec = JsonCodec(limits=Limits(max_string=3))
    assert codec.decode_response(codec.encode_reply(["😀😀😀", b"abc"])) is not None
    too_long: Any
    for too_long in ("abcd", {"abcd": 1}, b"abcd"):
        with pytest.raises(EncodeError, match="max_string=3"):
            codec.encode_reply(too_long)
        with pytest.raises(LimitExceededError, match="max_string=3"):
            codec.decode_response(CODEC.encode_reply(too_long))
    with pytest.raises(LimitExceededError):
        codec.decode_response(CODEC.encode_fault(1, "abcd"))


def test_size_limit_both_ways() -> None:
    codec = JsonCodec(limits=Limits(max_size=32))
    body = CODEC.encode_reply("x" * 20)
    assert len(body) == 33
    with pytest.raises(EncodeError, match="over max_size=32"):
        codec.encode_reply("x" * 20)
    with pytest.raises(LimitExceededError, match="max_size=32"):
        codec.decode_response(body)
    assert codec.decode_response(CODEC.encode_reply("x" * 19)) == ReplyMessage("x" * 19)


@pytest.mark.parametrize(
    "body",
    [
        b'{"result":' + b"[" * (1 << 20),
        b'{"result":' + b'{"a":' * (1 << 18),
        b'{"method":"m","params":' + b"[" * 500 + b"]" * 500 + b"}",
    ],
    ids=["arrays", "objects", "balanced"],
)
def test_deep_nesting_fails_fast(body: bytes) -> None:
    start = time.perf_counter()
    with pytest.raises(DecodeError):
        decode(CODEC, body)
    assert time.perf_counter() - start < 0.5


def test_many_tiny_values_are_refused_before_parsing() -> None:
    body = b'{"result":[' + b",".join([b"[]"] * ((4 << 20) // 3 - 10)) + b"]}"
    start = time.perf_counter()
    with pytest.raises(LimitExceededError, match="max_items"):
        CODEC.decode_response(body)
    assert time.perf_counter() - start < 0.5


def test_commas_inside_strings_do_not_count_as_values() -> None:
    codec = JsonCodec(limits=Limits(max_items=4))
    tricky = [",,,\\", '",",', "\\\\\",,\\", "," * 50]
    body = CODEC.encode_call("m", tricky)
    assert body.count(b",") > 4 + 1  # so the exact count of structural commas runs
    assert same(list(codec.decode_call(body).params), tricky)


def test_huge_integer_literal_is_refused() -> None:
    with pytest.raises(DecodeError):
        CODEC.decode_response(b'{"result":' + b"9" * 5000 + b"}")


def test_decode_fault_codes() -> None:
    cases = [
        (b"\xff", FaultCode.INVALID_CHARACTER),
        (b"{", FaultCode.PARSE_ERROR),
        (b'{"result":NaN}', FaultCode.PARSE_ERROR),
        (b'{"result":1,"result":1}', FaultCode.INVALID_REQUEST),
        (b'{"result":"\\u0001"}', FaultCode.INVALID_REQUEST),
        (b'{"result":{"$nope":1}}', FaultCode.INVALID_REQUEST),
        (b'{"method":"m","params":[]}', FaultCode.INVALID_REQUEST),
    ]
    for body, code in cases:
        with pytest.raises(DecodeError) as caught:
            CODEC.decode_response(body)
        assert caught.value.fault_code == code, body
    with pytest.raises(DecodeError) as caught:
        CODEC.decode_call(b'{"result":1}')
    assert caught.value.fault_code == FaultCode.INVALID_REQUEST


def test_decode_accepts_bytes_like_input() -> None:
    body = CODEC.encode_call("m", [1])
    for data in (bytearray(body), memoryview(body)):
        assert CODEC.decode_call(data) == CallMessage("m", (1,))  # type: ignore[arg-type]


# -- fuzzing: nothing but DecodeError escapes a decoder ------------------------------------------


def decodes_or_refuses(data: bytes) -> None:
    for method in (CODEC.decode_call, CODEC.decode_response):
        with contextlib.suppress(DecodeError):
            method(data)


@FUZZ
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    decodes_or_refuses(data)


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities too: the standard library writes them as NaN/Infinity
    st.text(max_size=10),  # any code point, lone surrogates included
)
json_trees = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(awkward_keys | st.text(max_size=5), children, max_size=3),
    max_leaves=20,
)


@FUZZ
@given(tree=json_trees, envelope=st.sampled_from(["result", "params", "fault", "method"]))
def test_arbitrary_json_only_raises_decode_error(tree: Any, envelope: str) -> None:
    if envelope == "params":
        document: Any = {"method": "m", "params": tree}
    elif envelope == "method":
        document = {"method": tree, "params": []}
    else:
        document = {envelope: tree}
    decodes_or_refuses(json.dumps(document).encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(
    value=values(max_leaves=10),
    edits=st.lists(
        st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                  st.integers(0, 10**6), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_bodies_only_raise_decode_error(
    value: Any, edits: list[tuple[str, int, int]]
) -> None:
    body = bytearray(CODEC.encode_call("m", [value]))
    for action, offset, byte in edits:
        where = offset % (len(body) + 1)
        if action == "flip" and where < len(body):
            body[where] ^= byte or 1
        elif action == "insert":
            body.insert(where, byte)
        elif action == "delete" and where < len(body):
            del body[where]
        elif action == "truncate":
            del body[where:]
    decodes_or_refuses(bytes(body))


TINY = JsonCodec(limits=Limits(max_depth=2, max_items=5, max_string=4, max_size=64))


@FUZZ
@given(value=values(max_leaves=8))
def test_encoder_and_decoder_agree_on_limits(value: Any) -> None:
    """A value within the limits encodes and decodes; one over them is refused both ways."""
    body = CODEC.encode_reply(value)
    try:
        reply = TINY.decode_response(body)
    except LimitExceededError:
        with pytest.raises(EncodeError):
            TINY.encode_reply(value)
    else:
        assert isinstance(reply, ReplyMessage)
        assert TINY.encode_reply(reply.value) == body
