"""The xmlrpc codec: golden vectors, exact round trips, standard-library interop, hostile input."""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import math
import os
import time
import tracemalloc
import xmlrpc.client
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterrpc.codecs import CallMessage, FaultMessage, ReplyMessage, get_codec
from clusterrpc.codecs.xmlrpc import XmlRpcCodec
from clusterrpc.errors import DecodeError, EncodeError, FaultCode, LimitExceededError
from clusterrpc.values import Limits
from tests.conftest import time_scale
from tests.strategies import method_names, same, texts, values
from tests.vectors import codec_cases

CODEC = XmlRpcCodec()
TIME_SCALE = time_scale()  # CLUSTERRPC_TEST_TIME_SCALE, checked
ERRORS = {"DecodeError": DecodeError, "LimitExceededError": LimitExceededError}


def _codec(limits: Limits | None) -> XmlRpcCodec:
    return XmlRpcCodec(limits=limits) if limits else CODEC


# -- golden vectors ----------------------------------------------------------------------------

CASES = codec_cases("xmlrpc")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_vector(case: Any) -> None:
    codec = _codec(case.limits)
    if case.kind == "call":
        decoded = codec.decode_call(case.body)
        assert decoded.method == case.method
        assert same(list(decoded.params), case.params)
        if case.direction == "both":
            assert codec.encode_call(case.method, case.params) == case.body
    elif case.kind == "reply":
        reply = codec.decode_response(case.body)
        assert isinstance(reply, ReplyMessage)
        assert same(reply.value, case.value)
        if case.direction == "both":
            assert codec.encode_reply(case.value) == case.body
    elif case.kind == "fault":
        fault = codec.decode_response(case.body)
        assert fault == FaultMessage(case.code, case.message)
        if case.direction == "both":
            assert codec.encode_fault(case.code, case.message) == case.body
    else:
        decode = codec.decode_call if case.kind == "invalid-call" else codec.decode_response
        with pytest.raises(ERRORS[case.error]):
            decode(case.body)


def test_vectors_cover_every_kind() -> None:
    kinds = {case.kind for case in CASES}
    assert {"call", "reply", "fault", "invalid-call", "invalid-response"} <= kinds


# -- exact round trips -------------------------------------------------------------------------

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(method=method_names, params=st.lists(values(), max_size=4))
def test_call_round_trip(method: str, params: list[Any]) -> None:
    decoded = CODEC.decode_call(CODEC.encode_call(method, params))
    assert decoded.method == method
    assert same(list(decoded.params), params)


@PROPERTY
@given(value=values())
def test_reply_round_trip(value: Any) -> None:
    reply = CODEC.decode_response(CODEC.encode_reply(value))
    assert isinstance(reply, ReplyMessage)
    assert same(reply.value, value)


@PROPERTY
@given(code=st.integers(-(2**31), 2**31 - 1), message=texts)
def test_fault_round_trip(code: int, message: str) -> None:
    assert CODEC.decode_response(CODEC.encode_fault(code, message)) == FaultMessage(code, message)


def test_subclasses_travel_as_base_types() -> None:
    class Color(enum.IntEnum):
        RED = 1

    class Name(str, enum.Enum):  # noqa: UP042 - the mixin whose str() is "Name.N1"
        N1 = "n1"

    class Moment(dt.datetime):
        pass

    params: list[Any] = [
        Color.RED, Name.N1, Moment(2024, 1, 2), (1, 2), bytearray(b"a"), {Name.N1: 1}
    ]
    expected = [1, "n1", dt.datetime(2024, 1, 2), [1, 2], b"a", {"n1": 1}]
    for name in ("xmlrpc", "compact", "json"):  # every built-in codec, not only this one
        codec = get_codec(name)
        assert same(list(codec.decode_call(codec.encode_call("t.x", params)).params), expected)


# -- interop with the standard library ---------------------------------------------------------

# What xmlrpc.client can carry: no aware or sub-second datetimes; ints within 32 bits for its
# encoder (its decoder reads <i8>); no '\r' in its output (it does not escape CR).
stdlib_texts = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\ufffe\uffff")
    .filter(lambda c: c in "\t\n" or c >= " "),
    max_size=20,
)
stdlib_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    stdlib_texts,
    st.binary(max_size=40),
    st.datetimes(min_value=dt.datetime(1000, 1, 1)).map(lambda d: d.replace(microsecond=0)),
)
stdlib_values = st.recursive(
    stdlib_scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(stdlib_texts, children, max_size=5),
    max_leaves=20,
)


def _from_stdlib(value: Any) -> Any:
    """xmlrpc.client.loads(use_builtin_types=True) already gives our types; lists stay lists."""
    return value


@PROPERTY
@given(method=method_names, params=st.lists(stdlib_values, max_size=3))
def test_stdlib_reads_our_calls(method: str, params: list[Any]) -> None:
    loaded, loaded_method = xmlrpc.client.loads(
        CODEC.encode_call(method, params), use_builtin_types=True
    )
    assert loaded_method == method
    assert same(list(loaded), params)


@PROPERTY
@given(method=method_names, params=st.lists(stdlib_values, max_size=3))
def test_we_read_stdlib_calls(method: str, params: list[Any]) -> None:
    body = xmlrpc.client.dumps(tuple(params), method, allow_none=True).encode("utf-8")
    decoded = CODEC.decode_call(body)
    assert decoded.method == method
    assert same(list(decoded.params), params)


@PROPERTY
@given(value=stdlib_values)
def test_replies_interoperate_both_ways(value: Any) -> None:
    ours = CODEC.encode_reply(value)
    assert same(xmlrpc.client.loads(ours, use_builtin_types=True)[0][0], value)
    theirs = xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True)
    reply = CODEC.decode_response(theirs.encode("utf-8"))
    assert isinstance(reply, ReplyMessage)
    assert same(reply.value, value)


def test_faults_interoperate_both_ways() -> None:
    ours = CODEC.encode_fault(-32601, "no such method <x>")
    with pytest.raises(xmlrpc.client.Fault) as caught:
        xmlrpc.client.loads(ours)
    assert (caught.value.faultCode, caught.value.faultString) == (-32601, "no such method <x>")
    theirs = xmlrpc.client.dumps(xmlrpc.client.Fault(-32500, "boom & bust"), methodresponse=True)
    assert CODEC.decode_response(theirs.encode()) == FaultMessage(-32500, "boom & bust")


# -- what cannot be encoded --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([{"peers": [1, 2, 3, {1, 2}]}], 'params[0]["peers"][3]: cannot encode a set'),
        ([1, 2**64], "params[1]: integer 18446744073709551616 does not fit in 64 bits"),
        ([[math.nan]], "params[0][0]: float nan is not finite"),
        ([{"a": "x\x00y"}], 'params[0]["a"]: string contains \'\\x00\' at index 1'),
        ([{1: "x"}], "params[0]: struct keys must be str, not int 1"),
        ([{"k\ufffe": 1}], "params[0][\"k\ufffe\"]: struct key contains"),
        ([dt.date(2024, 1, 1)], "params[0]: cannot encode a datetime.date"),
        ([object()], "params[0]: cannot encode an object"),
    ],
)
def test_encode_errors_name_type_and_path(params: list[Any], expected: str) -> None:
    with pytest.raises(EncodeError) as caught:
        CODEC.encode_call("t.x", params)
    assert str(caught.value).startswith(expected)


def test_invalid_method_name_is_refused() -> None:
    with pytest.raises(EncodeError, match="invalid method name"):
        CODEC.encode_call("not valid!", [])


def test_fault_code_must_fit_32_bits() -> None:
    with pytest.raises(EncodeError, match="32 bits"):
        CODEC.encode_fault(2**31, "x")


def test_encode_limits() -> None:
    small = XmlRpcCodec(limits=Limits(max_depth=2, max_items=10, max_string=5, max_size=400))
    with pytest.raises(EncodeError, match="max_depth"):
        small.encode_reply([[[1]]])
    with pytest.raises(EncodeError, match="max_items"):
        small.encode_reply(list(range(20)))
    with pytest.raises(EncodeError, match="max_string"):
        small.encode_reply("too long")
    with pytest.raises(EncodeError, match="max_size"):
        small.encode_reply(["abcde"] * 9)
    small.encode_reply([[1]])  # exactly at the limits is fine


def test_decode_limits() -> None:
    body = CODEC.encode_reply({"a": list(range(50)), "b": "x" * 100})
    with pytest.raises(LimitExceededError, match="max_items"):
        XmlRpcCodec(limits=Limits(max_items=40)).decode_response(body)
    with pytest.raises(LimitExceededError, match="max_string"):
        XmlRpcCodec(limits=Limits(max_string=99)).decode_response(body)
    with pytest.raises(LimitExceededError, match="max_size"):
        XmlRpcCodec(limits=Limits(max_size=len(body) - 1)).decode_response(body)
    reply = XmlRpcCodec(limits=Limits(max_items=53, max_string=100)).decode_response(body)
    assert isinstance(reply, ReplyMessage)


# -- hostile input -----------------------------------------------------------------------------

HEAD = b'<?xml version="1.0"?>'
CALL_OPEN = b"<methodCall><methodName>a</methodName><params><param>"
CALL_CLOSE = b"</param></params></methodCall>"


def _billion_laughs() -> bytes:
    entities = [b'<!ENTITY lol0 "lol">']
    for level in range(1, 10):
        refs = f"&lol{level - 1};".encode() * 10
        entities.append(b"<!ENTITY lol%d \"%s\">" % (level, refs))
    return (HEAD + b"<!DOCTYPE lolz [" + b"".join(entities) + b"]>" + CALL_OPEN
            + b"<value>&lol9;</value>" + CALL_CLOSE)


def _quadratic_blowup() -> bytes:
    entity = b"A" * 100_000
    return (HEAD + b'<!DOCTYPE q [<!ENTITY a "' + entity + b'">]>' + CALL_OPEN
            + b"<value>" + b"&a;" * 10_000 + b"</value>" + CALL_CLOSE)


def _deep_nesting() -> bytes:
    depth = 65_000  # 2.8 MB and 65,000 values: under the default max_size and max_items
    return (HEAD + CALL_OPEN + b"<value><array><data>" * depth
            + b"</data></array></value>" * depth + CALL_CLOSE)


def _wide_markup() -> bytes:
    # A million empty elements, well-formed and under max_size: refused before parsing.
    return HEAD + CALL_OPEN + b"<value><array><data>" + b"<a/>" * 1_000_000 + CALL_CLOSE


def _widest_markup_within_budget() -> bytes:
    # The most elements the pre-parse markup budget lets through (8 per value allowed by
    # max_items): the worst case the tree builder can be made to build.
    budget = 8 * 65_536 + 64 - 12  # the envelope has 12 more "<"
    return HEAD + CALL_OPEN + b"<value><array><data>" + b"<a/>" * budget + CALL_CLOSE


def _too_many_values() -> bytes:
    return HEAD + CALL_OPEN + b"<value><array><data>" + b"<value/>" * 70_000 + CALL_CLOSE


ATTACKS: dict[str, Callable[[], bytes]] = {
    "billion-laughs": _billion_laughs,
    "billion-laughs-utf16": lambda: _billion_laughs().replace(
        b'version="1.0"?>', b'version="1.0" encoding="UTF-16"?>'
    ).decode().encode("utf-16"),
    "quadratic-blowup": _quadratic_blowup,
    "external-entity": lambda: HEAD + b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    + CALL_OPEN + b"<value>&e;</value>" + CALL_CLOSE,
    "external-dtd": lambda: HEAD + b'<!DOCTYPE methodCall SYSTEM "http://127.0.0.1:9/x.dtd">'
    + CALL_OPEN + b"<value>x</value>" + CALL_CLOSE,
    "parameter-entity": lambda: HEAD
    + b'<!DOCTYPE x [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>'
    + CALL_OPEN + b"<value>x</value>" + CALL_CLOSE,
    "doctype-after-comment": lambda: HEAD + b"<!-- hi --><!DOCTYPE x []>" + CALL_OPEN
    + b"<value>x</value>" + CALL_CLOSE,
    "deep-nesting": _deep_nesting,
    "wide-markup": _wide_markup,
    "widest-markup-within-budget": _widest_markup_within_budget,
    "too-many-values": _too_many_values,
    "multi-megabyte-junk-over-limit": lambda: os.urandom(6 * 1024 * 1024),
    "multi-megabyte-junk-under-limit": lambda: b"<methodCall>" + os.urandom(3 * 1024 * 1024),
    "multi-megabyte-text-junk": lambda: b"<" * (3 * 1024 * 1024),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.timeout(30 * TIME_SCALE)
def test_attack_is_refused_quickly_with_bounded_memory(name: str) -> None:
    body = ATTACKS[name]()
    started = time.perf_counter()
    with pytest.raises(DecodeError):
        CODEC.decode_call(body)
    elapsed = time.perf_counter() - started
    # The bound is 1 s; refusals take microseconds to a few tens of milliseconds.
    assert elapsed < 1.0 * TIME_SCALE, f"{name} took {elapsed:.2f} s"
    # Memory is measured in a second run: tracemalloc slows allocation several-fold.
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError):
            CODEC.decode_call(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Bounded by the limits (4 MiB max_size, 65,536 max_items), never by the input.
    assert peak < 96 * 1024 * 1024, f"{name} peaked at {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<",
        b"<methodCall>",
        b"<methodCall><methodName>a</methodName><params><param></param></params></methodCall>",
        b"<methodCall><methodName>a</methodName><params><param><value><int>1</int><int>2</int>"
        b"</value></param></params></methodCall>",
        b"<methodCall><methodName>a</methodName><params><param><value><struct><member><value>1"
        b"</value><name>k</name></member></struct></value></param></params></methodCall>",
        b"<methodCall><methodName>a</methodName><params><param><value><base64>!!</base64>"
        b"</value></param></params></methodCall>",
        b"<methodCall><methodName>a</methodName><params><param><value><boolean>2</boolean>"
        b"</value></param></params></methodCall>",
        b"<methodCall><methodName>a</methodName><params><param><value><dateTime.iso8601>"
        b"20241301T00:00:00</dateTime.iso8601></value></param></params></methodCall>",
        b"<methodCall><methodName>a</methodName><params><param><value>\x00</value></param>"
        b"</params></methodCall>",
        b"<methodCall><methodName>a</methodName><params><param><value>&#0;</value></param>"
        b"</params></methodCall>",
        b"<methodCall><methodName>a</methodName><params><param><value><int>1_0</int></value>"
        b"</param></params></methodCall>",
        b'<?xml version="1.0" encoding="x-no-such-encoding"?><methodCall/>',
        b"\xff\xfe<\x00",
    ],
)
def test_malformed_calls_raise_decode_error(body: bytes) -> None:
    with pytest.raises(DecodeError):
        CODEC.decode_call(body)


def test_structural_errors_are_invalid_request_faults() -> None:
    with pytest.raises(DecodeError) as caught:
        CODEC.decode_call(b"<methodCall><methodName>a</methodName><oops/></methodCall>")
    assert caught.value.fault_code == FaultCode.INVALID_REQUEST
    with pytest.raises(DecodeError) as caught:
        CODEC.decode_call(b"<methodCall><methodName>a</methodName>")
    assert caught.value.fault_code == FaultCode.PARSE_ERROR


VALID_BODIES = [case.body for case in CASES if case.kind in ("call", "reply", "fault")]


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    for decode in (CODEC.decode_call, CODEC.decode_response):
        with contextlib.suppress(DecodeError):
            decode(data)


@settings(max_examples=500, deadline=None)
@given(
    body=st.sampled_from(VALID_BODIES),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=4)), max_size=4),
)
def test_fuzz_mutated_bodies(body: bytes, edits: list[tuple[int, bytes]]) -> None:
    mutated = bytearray(body)
    for offset, replacement in edits:
        position = offset % (len(mutated) + 1)
        mutated[position : position + len(replacement)] = replacement
    for decode in (CODEC.decode_call, CODEC.decode_response):
        try:
            result = decode(bytes(mutated))
        except DecodeError:
            continue
        assert isinstance(result, CallMessage | ReplyMessage | FaultMessage)
